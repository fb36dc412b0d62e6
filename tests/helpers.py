"""Helpers the tests share (kept out of the package: no user calls them)."""

import importlib.util
import re
from pathlib import Path

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.documents import RowStats, render_source
from pygpt_hf.training.encoding import tokenize_documents

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """scripts/<name>.py as a module, so its main(argv) runs in this process (no second jax start-up)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_model(folder, texts, n_positions: int, chat_template: str | None = None, seed: int = 0):
    """(model, tokenizer): a tiny random model (2 layers x 32) and a 300-token BPE trained on `texts`, saved
    together as one model folder, with `chat_template` on the tokenizer when given."""
    tokenizer = train_tokenizer(texts, vocab_size=300, model_max_length=n_positions, show_progress=False)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    config = PyGPTConfig(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2)
    model = FlaxPyGPTForCausalLM(config, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def tokenized(dataset, tokenizer, fmt: str, text_column: str, stats: RowStats, batch_size: int = 256,
              strip_labels=None, with_mask: bool = False):
    """`dataset`'s raw records, rendered per `fmt` and tokenized (lazily, in batched `map`), as one source of a
    run is."""
    rendered = render_source(dataset, fmt, text_column, stats, strip_labels=strip_labels, batch_size=batch_size)
    return tokenize_documents(rendered, tokenizer, with_mask, batch_size)


def usage_snippets(card_text: str) -> dict[str, str]:
    """The card's Python usage snippets by framework ("flax", "pytorch"), so tests can run them as written."""
    snippets = {}
    for heading, code in re.findall(r"^### (Flax|PyTorch)\b.*?^```python\n(.*?)^```", card_text, re.MULTILINE | re.DOTALL):
        snippets[heading.lower()] = code
    return snippets
