"""A model folder or Hub repo -> what evaluation needs: tokenizer, config, a scoring forward, the revision.

Config and tokenizer load first (light), so bad requests are refused before the weights load or anything
compiles. The weights load in the chosen framework; both frameworks score through the same contract
(scoring.py), so every figure is computed the same way for Flax and the PyTorch twin.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any


class EvaluationError(ValueError):
    """Bad input to an evaluation: printed as one clear line by the scripts."""


def model_location(name: str) -> str:
    """A local folder path (checked to hold a config.json) or a Hub repo id; a clear error otherwise."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise EvaluationError(f"--model {name}: the folder has no config.json, so it is not a saved model")
        return path
    if os.path.exists(path):
        raise EvaluationError(f"--model {name}: is a file; give the model's folder")
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise EvaluationError(f"--model {name}: no such model folder (and not a Hub repo id of the form user/name)")
    return name


def context_length(config) -> int:
    for name in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise EvaluationError(f"the {config.model_type!r} config names no context length (n_positions)")


@dataclass
class EvalModel:
    """A loaded model, ready to score rows (scoring.py) and, for Flax, to generate."""

    name: str
    revision: str | None  # the Hub commit, or "sha256:..." of a local folder's weights
    framework: str
    config: Any
    tokenizer: Any
    model: Any = field(repr=False, default=None)

    @property
    def n_positions(self) -> int:
        return context_length(self.config)

    def forward(self):
        if self.framework == "torch":
            from .torch_backend import make_torch_forward

            return make_torch_forward(self.model)
        from .flax_backend import make_flax_forward

        return make_flax_forward(self.model)


def _local_revision(path: str) -> str | None:
    for name in ("model.safetensors", "flax_model.msgpack", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(path, name)):
            digest = hashlib.sha256()
            with open(os.path.join(path, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return "sha256:" + digest.hexdigest()[:16]
    return None


def load_config_and_tokenizer(name: str, revision: str | None = None, **tokenizer_kwargs):
    """(location, config, tokenizer): light, so a bad request is refused before the weights load."""
    from transformers import AutoConfig, AutoTokenizer

    import pygpt_hf  # noqa: F401  registers PyGPT with the Auto classes

    location = model_location(name)
    try:
        config = AutoConfig.from_pretrained(location, revision=revision)
    except (OSError, ValueError) as err:
        raise EvaluationError(f"--model {name}: cannot read the model's config: {err}") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, **tokenizer_kwargs)
    except (OSError, ValueError, TypeError) as err:
        raise EvaluationError(f"--model {name}: cannot load its tokenizer: {err}") from err
    return location, config, tokenizer


def load_eval_model(name: str, revision: str | None = None, framework: str = "flax") -> EvalModel:
    """Config, tokenizer and weights of `name` in `framework` ("flax" or "torch"), with its revision."""
    if framework not in ("flax", "torch"):
        raise EvaluationError(f"--framework must be flax or torch, got {framework!r}")
    location, config, tokenizer = load_config_and_tokenizer(name, revision)
    if os.path.isdir(location):
        resolved = _local_revision(location)
    else:
        from huggingface_hub import HfApi

        resolved = HfApi().model_info(location, revision=revision).sha
    return EvalModel(name, resolved, framework, config, tokenizer, load_weights(location, revision, framework))


def load_weights(location: str, revision: str | None, framework: str):
    try:
        if framework == "torch":
            try:
                import torch  # noqa: F401
            except ImportError as err:
                raise EvaluationError("--framework torch needs PyTorch: pip install 'pygpt-hf[torch]'") from err
            from transformers import AutoModelForCausalLM

            return AutoModelForCausalLM.from_pretrained(location, revision=revision).eval()
        from transformers import FlaxAutoModelForCausalLM

        return FlaxAutoModelForCausalLM.from_pretrained(location, revision=revision)
    except (OSError, ValueError) as err:
        raise EvaluationError(f"--model {location}: cannot load the model's weights: {err}") from err
