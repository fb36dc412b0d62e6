"""Serving: an OpenAI-compatible HTTP server in front of a saved pygpt model (`scripts/serve.py`).

- `prompts`: chat messages / prompts -> token ids, exactly as training and `scripts/generate.py` make them.
- `engine`: the background thread that runs the model: continuous batching over a per-slot KV cache (Flax),
  one request at a time through `generate` (PyTorch).
- `schemas`: the request bodies (OpenAI's fields, checked), `app`: the FastAPI app, `loading`: model folder in.

Serving reads a model folder or Hub repo; it never imports the training harness.
"""
