"""Register PyGPT with transformers' Auto classes the moment transformers loads them, and not before.

`import pygpt_hf` must stay cheap: `import transformers` alone imports torch whenever torch is installed
(transformers/utils/generic.py), and the Flax classes import jax and flax. So the package imports none of
them. Instead it asks Python to run a small registration right after each of transformers' Auto modules
has been imported (a post-import hook on `sys.meta_path`), or at once for those already imported:

    transformers.models.auto.configuration_auto  -> AutoConfig: "pygpt" -> PyGPTConfig
    transformers.models.auto.tokenization_auto   -> AutoTokenizer: PyGPTTokenizer / PyGPTTokenizerFast
    pygpt_hf.tokenization_pygpt_fast             -> the same, when importing it is what loaded AutoTokenizer
    transformers.models.auto.modeling_flax_auto  -> FlaxAutoModel, FlaxAutoModelForCausalLM
    transformers.models.auto.modeling_auto       -> AutoModel, AutoModelForCausalLM (when torch is installed)
    pygpt_hf.modeling_flax_pygpt                 -> `push_to_hub` writes our model card (model_card.py)
    lm_eval.api.registry                         -> lm-evaluation-harness: model type `pygpt` (evaluation/)

The model classes are registered lazily too, the way transformers resolves its own models (by name, imported
on first lookup): their entry in the Auto mapping is a `(module, class name)` that the mapping imports when a
caller first asks for it. So `AutoTokenizer.from_pretrained` never pays for jax, and
`FlaxAutoModelForCausalLM.from_pretrained` imports `modeling_flax_pygpt` exactly when it needs it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable

_PACKAGE = __name__.rpartition(".")[0]  # "pygpt_hf"


class _Deferred:
    """A model class named, not yet imported: `module` relative to this package."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def load(self) -> type:
        return getattr(importlib.import_module(f".{self.module}", _PACKAGE), self.name)

    def __repr__(self) -> str:
        return f"<{_PACKAGE}.{self.module}.{self.name}, imported on first use>"


class _ImportOnRead(dict):
    """The `_extra_content` table of a transformers `_LazyAutoMapping` (registered config -> model class),
    where a value may be a `_Deferred` that is imported, and replaced by its class, when first read."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if isinstance(value, _Deferred):
            value = value.load()
            super().__setitem__(key, value)
        return value

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def values(self):
        return [self[key] for key in self]

    def items(self):
        return [(key, self[key]) for key in self]


def _register_models(auto_classes: list, module: str, names: list[str]) -> None:
    from .configuration_pygpt import PyGPTConfig

    for auto_class, name in zip(auto_classes, names, strict=True):
        mapping = auto_class._model_mapping
        if not isinstance(mapping._extra_content, _ImportOnRead):
            mapping._extra_content = _ImportOnRead(mapping._extra_content)
        mapping.register(PyGPTConfig, _Deferred(module, name), exist_ok=True)


def _register_config(auto) -> None:
    from .configuration_pygpt import PyGPTConfig

    auto.AutoConfig.register("pygpt", PyGPTConfig, exist_ok=True)


def _register_tokenizers(auto) -> None:
    fast = sys.modules.get(f"{_PACKAGE}.tokenization_pygpt_fast")
    if fast is not None and not hasattr(fast, "PyGPTTokenizerFast"):
        # That module is being imported and is what loaded the Auto classes (through tokenization_pygpt's
        # register_for_auto_class): its class does not exist yet. `_register_tokenizers_after_fast` registers.
        return
    from .configuration_pygpt import PyGPTConfig
    from .tokenization_pygpt import PyGPTTokenizer
    from .tokenization_pygpt_fast import PyGPTTokenizerFast

    auto.AutoTokenizer.register(
        PyGPTConfig, slow_tokenizer_class=PyGPTTokenizer, fast_tokenizer_class=PyGPTTokenizerFast, exist_ok=True
    )
    _name_a_damaged_tokenizer_config(auto)


def _register_tokenizers_after_fast(fast) -> None:
    auto = sys.modules.get("transformers.models.auto.tokenization_auto")
    if auto is not None:
        _register_tokenizers(auto)


def _name_a_damaged_tokenizer_config(auto) -> None:
    """`AutoTokenizer` reads tokenizer_config.json itself (`get_tokenizer_config`) before any tokenizer class
    runs, and a truncated file gives a bare JSONDecodeError. Wrapped here, once, so the error names the file,
    as every other damaged file of a pygpt folder does; the result for a good file is unchanged."""
    import functools
    import json

    read = auto.get_tokenizer_config
    if getattr(read, "_names_the_file", False):
        return

    @functools.wraps(read)
    def get_tokenizer_config(pretrained_model_name_or_path, *args, **kwargs):
        try:
            return read(pretrained_model_name_or_path, *args, **kwargs)
        except json.JSONDecodeError as err:
            raise OSError(f"tokenizer_config.json of {pretrained_model_name_or_path} is not valid JSON "
                          f"(truncated or corrupted?): {err}") from err

    get_tokenizer_config._names_the_file = True
    auto.get_tokenizer_config = get_tokenizer_config


def _register_flax_models(auto) -> None:
    _register_models([auto.FlaxAutoModel, auto.FlaxAutoModelForCausalLM], "modeling_flax_pygpt",
                     ["FlaxPyGPTModel", "FlaxPyGPTForCausalLM"])


def _register_torch_models(auto) -> None:
    # torch is an optional extra: without it only the Flax side is registered
    if importlib.util.find_spec("torch") is not None:
        _register_models([auto.AutoModel, auto.AutoModelForCausalLM], "modeling_pygpt",
                         ["PyGPTModel", "PyGPTForCausalLM"])


def _install_card_writer(modeling_flax) -> None:
    # `model.push_to_hub` pushes the card training pushes; the travelling file alone (remote code) keeps None
    from .model_card import write_push_card

    modeling_flax.FlaxPyGPTPreTrainedModel.push_card_writer = staticmethod(write_push_card)


def _register_lm_eval(lm_eval_registry) -> None:
    # lm-evaluation-harness (the `eval` extra): when its registry loads, the model type name `pygpt` is added
    # after the harness's own models (its registry fills itself only while empty); the class loads on first use
    from .evaluation import register_with_lm_eval

    register_with_lm_eval()


REGISTRATIONS: dict[str, Callable] = {
    "transformers.models.auto.configuration_auto": _register_config,
    "transformers.models.auto.tokenization_auto": _register_tokenizers,
    f"{_PACKAGE}.tokenization_pygpt_fast": _register_tokenizers_after_fast,
    "transformers.models.auto.modeling_flax_auto": _register_flax_models,
    "transformers.models.auto.modeling_auto": _register_torch_models,
    f"{_PACKAGE}.modeling_flax_pygpt": _install_card_writer,
    "lm_eval.api.registry": _register_lm_eval,
}


class _RunAfterExec(importlib.abc.Loader):
    """Wraps a module's loader: executes the module as usual, then calls `callback(module)`."""

    def __init__(self, loader, callback: Callable):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.callback(module)

    def __getattr__(self, name):  # everything else (get_source, resource readers, ...) from the real loader
        return getattr(self.loader, name)


class _PostImportHook(importlib.abc.MetaPathFinder):
    """On `sys.meta_path`: for each module in `pending`, find it with the other finders, then wrap its loader."""

    def __init__(self, pending: dict[str, Callable]):
        self.pending = pending

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RunAfterExec(spec.loader, self.pending.pop(fullname))
                return spec
        return None


def install() -> None:
    """Register now with the Auto modules already imported; hook the others to register when they load."""
    pending = {}
    for name, register in REGISTRATIONS.items():
        if name in sys.modules:
            register(sys.modules[name])
        else:
            pending[name] = register
    if pending and not any(isinstance(finder, _PostImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PostImportHook(pending))
