"""pygpt_hf: a small GPT in JAX/Flax that is a real Hugging Face model package.

Importing the package registers PyGPT with transformers' Auto classes, so `AutoConfig`, `AutoTokenizer`,
`FlaxAutoModelForCausalLM` (and, with torch installed, `AutoModel` / `AutoModelForCausalLM`) load a
pygpt checkpoint by name.

The import itself is cheap: it loads neither transformers, jax, flax nor torch. The names below are imported
on first use (as transformers' own `_LazyModule` does), and the registration runs when transformers loads its
Auto classes (see `auto_registration.py`).
"""

import importlib as _importlib
import importlib.util as _importlib_util

from . import auto_registration as _auto_registration

_EXPORTS = {  # public name -> the module that defines it
    "PyGPTConfig": "configuration_pygpt",
    "FlaxPyGPTModel": "modeling_flax_pygpt",
    "FlaxPyGPTForCausalLM": "modeling_flax_pygpt",
    "FlaxPyGPTPreTrainedModel": "modeling_flax_pygpt",
    "PyGPTTokenizer": "tokenization_pygpt",
    "PyGPTTokenizerFast": "tokenization_pygpt_fast",
    "train_tokenizer": "bpe",
}
# torch is an optional extra: without it the PyTorch twin's names are not offered
if _importlib_util.find_spec("torch") is not None:
    _EXPORTS.update(dict.fromkeys(["PyGPTModel", "PyGPTForCausalLM", "PyGPTPreTrainedModel"], "modeling_pygpt"))

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_auto_registration.install()
