"""pygpt_hf: a small GPT in JAX/Flax that is a real Hugging Face model package.

Importing the package registers PyGPT with transformers' Auto classes, so `AutoConfig`, `AutoTokenizer`,
`FlaxAutoModelForCausalLM` (and, with torch installed, `AutoModel` / `AutoModelForCausalLM`) load a
pygpt checkpoint by name.
"""

import importlib.util as _importlib_util

from transformers import AutoConfig, AutoTokenizer, FlaxAutoModel, FlaxAutoModelForCausalLM

from .bpe import train_tokenizer
from .configuration_pygpt import PyGPTConfig
from .modeling_flax_pygpt import FlaxPyGPTForCausalLM, FlaxPyGPTModel, FlaxPyGPTPreTrainedModel
from .tokenization_pygpt import PyGPTTokenizer
from .tokenization_pygpt_fast import PyGPTTokenizerFast

AutoConfig.register("pygpt", PyGPTConfig)
FlaxAutoModel.register(PyGPTConfig, FlaxPyGPTModel)
FlaxAutoModelForCausalLM.register(PyGPTConfig, FlaxPyGPTForCausalLM)
AutoTokenizer.register(PyGPTConfig, slow_tokenizer_class=PyGPTTokenizer, fast_tokenizer_class=PyGPTTokenizerFast)

__all__ = [
    "PyGPTConfig",
    "FlaxPyGPTModel",
    "FlaxPyGPTForCausalLM",
    "FlaxPyGPTPreTrainedModel",
    "PyGPTTokenizer",
    "PyGPTTokenizerFast",
    "train_tokenizer",
]

# torch is an optional extra: without it, `import pygpt_hf` still works and only the Flax side is registered.
if _importlib_util.find_spec("torch") is not None:
    from transformers import AutoModel, AutoModelForCausalLM

    from .modeling_pygpt import PyGPTForCausalLM, PyGPTModel, PyGPTPreTrainedModel

    AutoModel.register(PyGPTConfig, PyGPTModel)
    AutoModelForCausalLM.register(PyGPTConfig, PyGPTForCausalLM)
    __all__ += ["PyGPTModel", "PyGPTForCausalLM", "PyGPTPreTrainedModel"]

# lm-evaluation-harness (the `eval` extra): registers the model type name `pygpt` (a lazy placeholder: no model code).
from .evaluation import register_with_lm_eval as _register_with_lm_eval

_register_with_lm_eval()
