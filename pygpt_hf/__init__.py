"""pygpt_hf: a small GPT in JAX/Flax that is a real Hugging Face model package.

Importing the package registers PyGPT with transformers' Auto classes, so `AutoConfig`, `AutoTokenizer`,
`FlaxAutoModelForCausalLM` (and, with torch installed, `AutoModel` / `AutoModelForCausalLM`) load a
pygpt checkpoint by name.
"""

from transformers import AutoConfig, FlaxAutoModel, FlaxAutoModelForCausalLM

from .configuration_pygpt import PyGPTConfig
from .modeling_flax_pygpt import FlaxPyGPTForCausalLM, FlaxPyGPTModel, FlaxPyGPTPreTrainedModel

AutoConfig.register("pygpt", PyGPTConfig)
FlaxAutoModel.register(PyGPTConfig, FlaxPyGPTModel)
FlaxAutoModelForCausalLM.register(PyGPTConfig, FlaxPyGPTForCausalLM)

# --- tokenizers (owned by the tokenizer work) ---
from transformers import AutoTokenizer

from .bpe import train_tokenizer
from .tokenization_pygpt import PyGPTTokenizer
from .tokenization_pygpt_fast import PyGPTTokenizerFast

AutoTokenizer.register(PyGPTConfig, slow_tokenizer_class=PyGPTTokenizer, fast_tokenizer_class=PyGPTTokenizerFast)
# --- end tokenizers ---

# --- PyTorch twin (owned by the PyTorch work) ---
# torch is an optional extra: without it, `import pygpt_hf` still works and only the Flax side is registered
import importlib.util as _importlib_util

if _importlib_util.find_spec("torch") is not None:
    from transformers import AutoModel, AutoModelForCausalLM

    from .modeling_pygpt import PyGPTForCausalLM, PyGPTModel, PyGPTPreTrainedModel

    AutoModel.register(PyGPTConfig, PyGPTModel)
    AutoModelForCausalLM.register(PyGPTConfig, PyGPTForCausalLM)
# --- end PyTorch twin ---

__all__ = [
    "PyGPTConfig",
    "FlaxPyGPTModel",
    "FlaxPyGPTForCausalLM",
    "FlaxPyGPTPreTrainedModel",
]
__all__ += ["PyGPTTokenizer", "PyGPTTokenizerFast", "train_tokenizer"]
if _importlib_util.find_spec("torch") is not None:
    __all__ += ["PyGPTModel", "PyGPTForCausalLM", "PyGPTPreTrainedModel"]
