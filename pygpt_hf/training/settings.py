"""The run's settings: one dataclass that command-line flags and a `--config FILE` (JSON or YAML) both fill.

Precedence, lowest to highest: the defaults below < the config file < flags typed on the command line.
With `--resume`, the settings saved in the output folder replace the defaults and the config file, so a
run continues with exactly what it started with; only the fields in `CHANGEABLE_ON_RESUME` may be
changed then (anything else would silently make the resumed run a different run).

The defaults are the README's main command (`python scripts/train.py`): a 4-layer, 128-wide model with
rotary positions on the embedded tinyshakespeare and a freshly trained 1024-token BPE, 2000 steps of
16 x 128 tokens, with a 9-minute cap on the training loop so it ends in about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .mixture import STOPPING_STRATEGIES, parse_dataset_spec
from .sources import parse_labels

FORMATS = ("text", "dolly", "alpaca")
LOSS_ON = ("all", "response")
DEFAULT_STRIP_LABELS = "Instruction,Input,Output,Response,Context"  # pygpt_hf.labels.DEFAULT_LABELS
POSITION_EMBEDDINGS = ("sinusoidal", "learned", "rope")
DTYPES = ("float32", "bfloat16")
TXT_SAMPLE_BY = ("line", "paragraph", "document")
SETTINGS_FILE = "training_settings.json"


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field that carries its own --help text."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainSettings:
    # --- where things go ---
    output_dir: str = _opt("runs/pygpt", "folder for checkpoints, the final model, metrics and plots")
    resume: bool = _opt(False, "continue from the latest checkpoint in --output-dir, exactly")
    # --- data ---
    dataset: str | None = _opt(
        None, "Hub dataset id, a local .txt/.json/.jsonl/.parquet file or folder, a folder written by "
        "scripts/pretokenize.py, or a weighted mixture SOURCE[@FORMAT][:WEIGHT],... (e.g. "
        "dolly.jsonl@dolly:0.7,notes.txt@text:0.3); default: the tinyshakespeare text shipped with the package")
    text_column: str = _opt("text", "column holding the text (for --format text)")
    split: str = _opt("train", "dataset split to read (Hub datasets; local files have only 'train')")
    format: str = _opt("text", "record format: text (one column), dolly or alpaca (instruction records)",
                       choices=FORMATS)
    txt_sample_by: str = _opt("paragraph", "what one document is in a .txt file", choices=TXT_SAMPLE_BY)
    strip_labels: str | None = _opt(
        None, "strip these record labels (comma-separated; the flag alone: "
        f"{DEFAULT_STRIP_LABELS}) from the start of lines of --format text documents", nargs="?",
        const=DEFAULT_STRIP_LABELS, metavar="LABELS")
    mix_stopping: str = _opt("all_exhausted", "when a pass over a mixture of sources ends (datasets' "
                             "interleave_datasets stopping_strategy)", choices=STOPPING_STRATEGIES)
    loss_on: str = _opt("all", "which targets the loss counts: all tokens, or only the response tokens "
                        "(+ <|endoftext|>) of instruction records", choices=LOSS_ON)
    eval_docs: int = _opt(200, "the first N records are the held-out eval set and never enter training "
                          "(of a mixture: the first N it draws)")
    eval_max_tokens: int = _opt(32768, "evaluate at most this many tokens of the held-out documents")
    shuffle_buffer: int = _opt(1024, "packed blocks held in the seeded shuffle buffer")
    # --- tokenizer ---
    tokenizer: str | None = _opt(None, "tokenizer folder or Hub repo; default: train one on the data")
    vocab_size: int = _opt(1024, "vocabulary size when a tokenizer is trained")
    tokenizer_train_docs: int = _opt(100_000, "train the tokenizer on at most this many training documents")
    # --- model ---
    n_layer: int = _opt(4, "transformer blocks")
    n_head: int = _opt(4, "attention heads")
    n_embd: int = _opt(128, "width of the residual stream")
    # rope by default: with the fixed sinusoid (amplitude 1) added to N(0, 0.02) token embeddings, a small
    # model stalls near the unigram loss on tinyshakespeare (5.4 vs 4.1 nats/token for rope after 150 steps).
    position_embedding: str = _opt("rope", "position encoding", choices=POSITION_EMBEDDINGS)
    n_positions: int | None = _opt(None, "context length of the model; default: --seq-len")
    dropout: float = _opt(0.0, "dropout on embeddings, attention and residual branches")
    dtype: str = _opt("float32", "compute dtype (params stay float32); bfloat16 pays on GPU/TPU", choices=DTYPES)
    # --- optimisation ---
    max_steps: int = _opt(2000, "optimizer updates; also the length of the cosine decay")
    max_minutes: float | None = _opt(9.0, "stop (and save) after this much training time; 'none' = no limit")
    batch_size: int = _opt(16, "sequences per micro-batch (global, across all devices)")
    grad_accum: int = _opt(1, "micro-batches summed into one optimizer update")
    seq_len: int = _opt(128, "tokens per training sequence")
    lr: float = _opt(3e-3, "peak learning rate")
    min_lr_ratio: float = _opt(0.1, "final learning rate as a fraction of --lr")
    warmup_steps: int = _opt(100, "linear warmup steps")
    weight_decay: float = _opt(0.1, "AdamW weight decay (matrices only)")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.95, "AdamW beta2")
    grad_clip: float = _opt(1.0, "clip gradients to this global norm")
    seed: int = _opt(1337, "seeds the model init, dropout and the data shuffle")
    fsdp: bool = _opt(False, "shard parameters and optimizer state over the devices (FSDP-style)")
    # --- what happens along the way ---
    log_every: int = _opt(10, "fetch the loss from the device and log it every N steps")
    eval_every: int = _opt(200, "evaluate on the held-out set every N steps (and at the end)")
    save_every: int = _opt(400, "write a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _opt(2, "keep the last K checkpoints")
    sample_prompt: str = _opt("", "prompt for the sample printed at the end ('' = start of a document)")
    sample_tokens: int = _opt(120, "tokens to sample at the end (0 = no sample)")
    # --- the Hub ---
    push_to_hub: str | None = _opt(None, "push the output folder to this Hub repo at every checkpoint and at the end")
    hub_private: bool = _opt(False, "create the Hub repo as private")
    # --- fault injection, for tests of the failure paths (leave unset) ---
    inject_nan_at_step: int | None = _opt(None, "test hook: make the loss of this step NaN")
    kill_at_step: int | None = _opt(None, "test hook: SIGKILL the process halfway through this step's checkpoint")

    # ------------------------------------------------------------------
    def validate(self) -> TrainSettings:
        """Reject impossible settings up front, naming the flag."""
        for name in ("eval_docs", "eval_max_tokens", "shuffle_buffer", "vocab_size", "tokenizer_train_docs",
                     "n_layer", "n_head", "n_embd", "max_steps", "batch_size", "grad_accum", "seq_len",
                     "log_every", "eval_every", "save_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"--{_flag(name)} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "sample_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)!r}")
        for name, value in (("lr", self.lr), ("grad_clip", self.grad_clip)):
            if not value > 0:
                raise ValueError(f"--{_flag(name)} must be > 0, got {value!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"--max-minutes must be > 0 or none, got {self.max_minutes!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("format", "position_embedding", "dtype", "txt_sample_by", "loss_on", "mix_stopping"):
            choices = _FIELDS[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise ValueError(f"--{_flag(name)} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})")
        if self.vocab_size < 258 and self.tokenizer is None:
            raise ValueError(f"--vocab-size must be at least 258 (256 bytes + 2 special tokens), got {self.vocab_size}")
        if self.n_positions is not None and self.n_positions < self.seq_len:
            raise ValueError(f"--n-positions ({self.n_positions}) must be >= --seq-len ({self.seq_len})")
        sources = parse_dataset_spec(self.dataset, self.format, self.text_column)  # names a bad part
        if parse_labels(self.strip_labels) and not any(source.format == "text" for source in sources):
            raise ValueError("--strip-labels cleans --format text documents, and no source here is text "
                             "(instruction records get their labels from the template)")
        return self

    @property
    def context_length(self) -> int:
        return self.n_positions or self.seq_len

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, folder: str) -> str:
        """Write the settings as JSON (atomically) so the run can be repeated from its folder alone."""
        path = os.path.join(folder, SETTINGS_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(path + ".tmp", path)
        return path

    def describe(self) -> str:
        """The effective settings, one `name = value` a line, for the log."""
        width = max(len(name) for name in _FIELDS)
        return "\n".join(f"  {name:<{width}} = {value!r}" for name, value in self.to_dict().items())


_FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}
_TYPES = typing.get_type_hints(TrainSettings)

# Fields a resumed run may change: they steer bookkeeping, not the numbers the run computes. (max_steps also
# moves the end of the cosine schedule; allowed so a finished run can be extended, with a warning.)
CHANGEABLE_ON_RESUME = frozenset({
    "output_dir", "resume", "max_steps", "max_minutes", "log_every", "eval_every", "save_every",
    "keep_checkpoints", "sample_prompt", "sample_tokens", "push_to_hub", "hub_private",
    "inject_nan_at_step", "kill_at_step",
})


# Fault-injection hooks act on the run that was given them, never on a resumed one.
TEST_HOOKS = frozenset({"inject_nan_at_step", "kill_at_step"})


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _base_type(name: str) -> tuple[type, bool]:
    """(the field's type without Optional, whether None is allowed)."""
    hint = _TYPES[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return hint, False


def coerce(name: str, value: Any, source: str) -> Any:
    """Convert `value` (a string from the command line, or any JSON/YAML value) to the field's type."""
    if name not in _FIELDS:
        raise ValueError(f"unknown setting {name!r} in {source}; known: {', '.join(_FIELDS)}")
    kind, optional = _base_type(name)
    if name == "strip_labels" and isinstance(value, (list, tuple, bool)):  # YAML/JSON: a list, or true/false
        value = (",".join(map(str, value)) if not isinstance(value, bool)
                 else DEFAULT_STRIP_LABELS if value else None)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if not optional:
            raise ValueError(f"setting {name!r} in {source} cannot be empty")
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name!r} in {source} must be a {kind.__name__}, got {value!r}") from None


def read_config_file(path: str) -> dict[str, Any]:
    """Settings from a JSON or YAML file (keys with '-' or '_'), checked and converted."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: no such file: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        kind = "YAML" if path.endswith((".yaml", ".yml")) else "JSON"
        raise ValueError(f"--config {path} is not valid {kind}: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ValueError(f"--config {path} must hold a mapping of setting -> value, got {kind}")  # noqa: TRY004
    return {key.replace("-", "_"): coerce(key.replace("-", "_"), value, path) for key, value in data.items()}


def build_parser() -> argparse.ArgumentParser:
    """One flag per field. Defaults are SUPPRESSed, so we can tell what was typed from what was not."""
    parser = argparse.ArgumentParser(
        description="Train a PyGPT model (JAX/Flax) and save it as a Hugging Face model folder.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of settings (flags override it)")
    for name, f in _FIELDS.items():
        kind, _ = _base_type(name)
        help_text = f.metadata["help"] + f" (default: {f.default!r})"
        if kind is bool:
            parser.add_argument(f"--{_flag(name)}", dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            choices = f.metadata.get("choices")
            extra = {k: f.metadata[k] for k in ("nargs", "const") if k in f.metadata}
            metavar = None if choices else f.metadata.get("metavar", kind.__name__.upper())
            parser.add_argument(f"--{_flag(name)}", dest=name, metavar=metavar, choices=choices, help=help_text,
                                **extra)
    return parser


def parse_settings(argv: list[str] | None = None) -> tuple[TrainSettings, list[str]]:
    """Settings from the command line (and --config / a resumed run's saved settings).

    Returns the settings and a list of notes for the log (e.g. what a resume changed).
    """
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config", None)
    typed = {name: coerce(name, value, "the command line") for name, value in args.items()}
    from_file = read_config_file(config_path) if config_path else {}
    chosen = {**from_file, **typed}
    notes: list[str] = []

    if chosen.get("resume"):
        output_dir = chosen.get("output_dir", _FIELDS["output_dir"].default)
        saved_path = os.path.join(output_dir, SETTINGS_FILE)
        if not os.path.isfile(saved_path):
            raise FileNotFoundError(f"--resume: {saved_path} not found; is {output_dir!r} the folder of a run?")
        with open(saved_path, encoding="utf-8") as f:
            saved = {k: coerce(k, v, saved_path) for k, v in json.load(f).items() if k not in TEST_HOOKS}
        changed = {k: v for k, v in chosen.items() if k in saved and saved[k] != v and k != "resume"}
        locked = sorted(k for k in changed if k not in CHANGEABLE_ON_RESUME)
        if locked:
            raise ValueError(
                "--resume continues a run exactly, so these settings cannot change: "
                + ", ".join(f"--{_flag(k)} (saved {saved[k]!r}, given {changed[k]!r})" for k in locked)
            )
        notes += [f"resume changes --{_flag(k)}: {saved[k]!r} -> {v!r}" for k, v in changed.items()]
        if "max_steps" in changed:
            notes.append("note: a new --max-steps also moves the end of the cosine learning-rate decay")
        chosen = {**saved, **chosen, "resume": True}
    return TrainSettings(**chosen).validate(), notes
