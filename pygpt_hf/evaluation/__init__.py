"""Judging a pygpt model: bits per byte on any text, synthetic-math accuracy, and lm-evaluation-harness.

Beside the training harness, never importing it. `import pygpt_hf` calls `register_with_lm_eval()`, which
costs nothing when lm-eval is absent and, when it is installed, only registers the *name* `pygpt` with the
harness's model registry (a lazy "module:Class" placeholder): neither jax nor the model class is imported
until the harness asks for the model.
"""

from __future__ import annotations

import importlib.util

LM_EVAL_MODEL = "pygpt_hf.evaluation.lm_eval_model:FlaxPyGPTLM"


def register_with_lm_eval() -> bool:
    """Make `pygpt` a model type of lm-evaluation-harness (0.4.x); False when lm-eval is not installed."""
    if importlib.util.find_spec("lm_eval") is None:
        return False
    import lm_eval.models  # noqa: F401  the harness's own names first: its registry loads them only when empty
    from lm_eval.api.registry import model_registry

    if "pygpt" not in model_registry:
        model_registry.register("pygpt", target=LM_EVAL_MODEL)
    return True
