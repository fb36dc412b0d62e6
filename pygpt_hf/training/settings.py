"""The run's settings: one dataclass that the command line, a `--config FILE` (JSON or YAML) and a resumed run fill
(cli.py parses them with transformers' `HfArgumentParser`).

`DataSettings` is the recipe of the data (sources, formats, held-out records, sequence length, tokenizer):
scripts/pretokenize.py parses it alone, so its flags mean what they mean for scripts/train.py, with the same
defaults. `TrainSettings` adds the model, the optimisation and the run's bookkeeping. `validate()` is the one
place that rejects impossible values, naming the flag. The `--dataset` grammar (weighted mixtures) is parsed
here too, into `SourceSpec`s.

The defaults are the README's main command (`python scripts/train.py`): a 4-layer, 128-wide model with
rotary positions on the embedded tinyshakespeare and a freshly trained 1024-token BPE, 2000 steps of
16 x 128 tokens, with a 9-minute cap on the training loop so it ends in about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..atomic import write_json
from ..documents import FORMATS, TXT_SAMPLE_BY, describe_source
from ..labels import DEFAULT_LABELS_FLAG, parse_labels
from ..run_folder import SETTINGS_FILE
from .launch import LAUNCH_ENV, resolve_launch

LOSS_ON = ("all", "response")
POSITION_EMBEDDINGS = ("sinusoidal", "learned", "rope")
DTYPES = ("float32", "bfloat16")
STOPPING_STRATEGIES = ("all_exhausted", "first_exhausted", "all_exhausted_without_replacement")
# Settings that earlier versions saved and this one no longer has (the test hooks moved to the environment):
# ignored when a run saved by them is resumed.
RETIRED_SETTINGS = frozenset({"inject_nan_at_step", "kill_at_step"})
LAUNCH_SETTINGS = frozenset(LAUNCH_ENV)  # coordinator_address, num_processes, process_id


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field that carries its own --help text (and any other argparse keyword)."""
    return field(default=default, metadata={"help": f"{help} (default: {default!r})", **extra})


@dataclass
class DataSettings:
    """Where the documents come from and how they become token blocks."""

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
        f"{DEFAULT_LABELS_FLAG}) from the start of lines of --format text documents", nargs="?",
        const=DEFAULT_LABELS_FLAG, metavar="LABELS")
    mix_stopping: str = _opt("all_exhausted", "when a pass over a mixture of sources ends (datasets' "
                             "interleave_datasets stopping_strategy)", choices=STOPPING_STRATEGIES)
    eval_docs: int = _opt(200, "the first N records are the held-out eval set and never enter training "
                          "(of a mixture: the first N it draws)")
    seed: int = _opt(1337, "seeds the order of a mixture, the data shuffle, the model init and dropout")
    seq_len: int = _opt(128, "tokens per training sequence")
    tokenizer: str | None = _opt(None, "tokenizer folder or Hub repo; default: train one on the data")

    def validate(self) -> DataSettings:
        """Reject impossible settings up front, naming the flag."""
        _check_positive(self, ("eval_docs", "seq_len"))
        _check_choices(self, ("format", "txt_sample_by", "mix_stopping"))
        if self.labels and not any(source.format == "text" for source in self.sources):
            raise ValueError("--strip-labels cleans --format text documents, and no source here is text "
                             "(instruction records get their labels from the template)")
        return self

    @property
    def sources(self) -> list[SourceSpec]:
        """The sources `--dataset` names (checked; a bad part is named)."""
        return parse_dataset_spec(self.dataset, self.format, self.text_column)

    @property
    def labels(self) -> tuple[str, ...] | None:
        """`--strip-labels` as a tuple of labels, or None."""
        return parse_labels(self.strip_labels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The effective settings, one `name = value` a line, for the log."""
        values = self.to_dict()
        width = max(map(len, values))
        return "\n".join(f"  {name:<{width}} = {value!r}" for name, value in values.items())


@dataclass
class TrainSettings(DataSettings):
    """Everything a training run is: the data recipe, the model, the optimisation, what happens along the way."""

    # --- where things go ---
    output_dir: str = _opt("runs/pygpt", "folder for checkpoints, the final model, metrics and plots")
    resume: bool = _opt(False, "continue from the latest checkpoint in --output-dir, exactly")
    # --- data, as training reads it ---
    loss_on: str = _opt("all", "which targets the loss counts: all tokens, or only the response tokens "
                        "(+ <|endoftext|>) of instruction records", choices=LOSS_ON)
    eval_max_tokens: int = _opt(32768, "evaluate at most this many tokens of the held-out documents")
    shuffle_buffer: int = _opt(1024, "packed blocks held in the seeded shuffle buffer")
    data_shards: int | None = _opt(
        None, "deal the training documents to N shards, each read by one process and filling its rows of every "
        "batch (must divide --batch-size; a multiple of the process count). The same N draws the same batches "
        "on any number of processes; default: one shard per process")
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
    lr: float = _opt(3e-3, "peak learning rate")
    min_lr_ratio: float = _opt(0.1, "final learning rate as a fraction of --lr")
    warmup_steps: int = _opt(100, "linear warmup steps")
    weight_decay: float = _opt(0.1, "AdamW weight decay (matrices only)")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.95, "AdamW beta2")
    grad_clip: float = _opt(1.0, "clip gradients to this global norm")
    fsdp: bool = _opt(False, "shard parameters and optimizer state over the devices (FSDP-style)")
    # --- what happens along the way ---
    log_every: int = _opt(10, "fetch the loss from the device and log it every N steps")
    eval_every: int = _opt(200, "evaluate on the held-out set every N steps (and at the end)")
    save_every: int = _opt(400, "write a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _opt(2, "keep the last K checkpoints")
    sample_prompt: str = _opt("", "prompt for the sample printed at the end ('' = start of a document; for an "
                              "instruction run, the instruction, through the chat template)")
    sample_tokens: int = _opt(120, "tokens to sample at the end (0 = no sample)")
    # --- the Hub ---
    push_to_hub: str | None = _opt(None, "push the output folder to this Hub repo at every checkpoint and at the end")
    hub_private: bool = _opt(False, "create the Hub repo as private")
    # --- the launch (several processes; see launch.py). Not saved with the run: a resume may launch differently ---
    coordinator_address: str | None = _opt(
        None, "HOST:PORT of process 0 in a multi-process run (env PYGPT_COORDINATOR_ADDRESS); unset, with no "
        "cluster manager (Slurm, Open MPI, Kubernetes, Cloud TPU) detected: one process")
    num_processes: int | None = _opt(None, "processes in a multi-process run (env PYGPT_NUM_PROCESSES)")
    process_id: int | None = _opt(None, "this process's index, 0 .. --num-processes - 1 (env PYGPT_PROCESS_ID)")

    def validate(self) -> TrainSettings:
        """Reject impossible settings up front, naming the flag."""
        super().validate()
        _check_positive(self, ("eval_max_tokens", "shuffle_buffer", "vocab_size", "tokenizer_train_docs", "n_layer",
                               "n_head", "n_embd", "max_steps", "batch_size", "grad_accum", "log_every", "eval_every",
                               "save_every", "keep_checkpoints"))
        _check_choices(self, ("position_embedding", "dtype", "loss_on"))
        for name in ("warmup_steps", "sample_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{_flag(name)} must be > 0, got {getattr(self, name)!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"--max-minutes must be > 0 or none, got {self.max_minutes!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})")
        if self.vocab_size < 258 and self.tokenizer is None:
            raise ValueError(f"--vocab-size must be at least 258 (256 bytes + 2 special tokens), got {self.vocab_size}")
        if self.data_shards is not None:
            _check_positive(self, ("data_shards",))
            if self.batch_size % self.data_shards:
                raise ValueError(f"--batch-size ({self.batch_size}) must be divisible by --data-shards "
                                 f"({self.data_shards}): each shard fills batch-size / data-shards rows of a batch")
        if self.n_positions is not None and self.n_positions < self.seq_len:
            raise ValueError(f"--n-positions ({self.n_positions}) must be >= --seq-len ({self.seq_len})")
        resolve_launch(self)  # the flags and PYGPT_* / JAX_* variables of a multi-process launch
        return self

    @property
    def context_length(self) -> int:
        return self.n_positions or self.seq_len

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def save(self, folder: str) -> str:
        """Write the settings as JSON (atomically) so the run can be repeated from its folder alone (the launch
        settings stay out: they say how these processes were started, not what the run computes)."""
        return write_json(os.path.join(folder, SETTINGS_FILE),
                          {k: v for k, v in self.to_dict().items() if k not in LAUNCH_SETTINGS})


@dataclass
class PretokenizeSettings(DataSettings):
    """The data recipe, tokenized once into a folder that scripts/train.py reads (scripts/pretokenize.py)."""

    output_dir: str | None = _opt(None, "folder to write (must not exist, or --overwrite)")
    overwrite: bool = _opt(False, "replace an existing --output-dir")
    shard_tokens: int = _opt(1 << 24, "training tokens per parquet shard")

    def validate(self) -> PretokenizeSettings:
        super().validate()
        _check_positive(self, ("shard_tokens",))
        if self.shard_tokens < self.seq_len:
            raise ValueError(f"--shard-tokens ({self.shard_tokens}) must be at least --seq-len ({self.seq_len})")
        return self


# Fields a resumed run may change: they steer bookkeeping, not the numbers the run computes. (max_steps also
# moves the end of the cosine schedule; allowed so a finished run can be extended, with a warning.)
CHANGEABLE_ON_RESUME = frozenset({
    "output_dir", "resume", "max_steps", "max_minutes", "log_every", "eval_every", "save_every",
    "keep_checkpoints", "sample_prompt", "sample_tokens", "push_to_hub", "hub_private", *LAUNCH_SETTINGS,
})


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _check_positive(settings, names) -> None:
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"--{_flag(name)} must be a positive integer, got {value!r}")


def _check_choices(settings, names) -> None:
    for name in names:
        choices = _fields(type(settings))[name].metadata["choices"]
        if getattr(settings, name) not in choices:
            raise ValueError(f"--{_flag(name)} must be one of {', '.join(choices)}; got {getattr(settings, name)!r}")


# --- the --dataset grammar --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """One source of a run: where, in which record format, with what weight (None = not given).

    `--dataset` names one or several, `SOURCE[@FORMAT][:WEIGHT]` separated by commas, where FORMAT is
    text | text=COLUMN | dolly | alpaca (default: --format, and --text-column for text) and the weights (all
    or none; none = equal) are normalised to probabilities. A path that exists as typed is always one
    source, so a file name with ',', '@' or ':' still works alone.
    """

    path: str | None  # None: the embedded tinyshakespeare corpus
    format: str = "text"
    text_column: str = "text"
    weight: float | None = None

    def describe(self) -> str:
        fmt = f"text={self.text_column}" if self.format == "text" and self.text_column != "text" else self.format
        return f"{describe_source(self.path)}@{fmt}"


def _part_error(index: int, part: str, problem: str) -> ValueError:
    return ValueError(f"--dataset part {index} ({part!r}): {problem}. Expected PATH_OR_HUB_ID[@FORMAT][:WEIGHT] "
                      f"parts separated by commas, e.g. dolly.jsonl@dolly:0.7,notes.txt@text:0.3")


def _parse_part(index: int, part: str, default_format: str, default_text_column: str) -> SourceSpec:
    text = part.strip()
    if not text:
        raise _part_error(index, part, "is empty")
    weight = None
    if not os.path.exists(os.path.expanduser(text)) and ":" in text:
        text, weight_text = text.rsplit(":", 1)
        try:
            weight = float(weight_text)
        except ValueError:
            raise _part_error(index, part, f"the weight {weight_text!r} is not a number") from None
        if not (math.isfinite(weight) and weight > 0):
            raise _part_error(index, part, f"the weight must be a positive number, got {weight_text!r}")
    fmt, text_column = default_format, default_text_column
    if not os.path.exists(os.path.expanduser(text)) and "@" in text:
        text, fmt_text = text.rsplit("@", 1)
        fmt, _, column = fmt_text.partition("=")
        if fmt not in FORMATS:
            raise _part_error(index, part, f"unknown format {fmt_text!r}; use one of text, text=COLUMN, dolly, alpaca")
        if column or "=" in fmt_text:
            if fmt != "text" or not column.strip():
                raise _part_error(index, part, f"{fmt_text!r}: only text takes a column (text=COLUMN)")
            text_column = column.strip()
    if not text.strip():
        raise _part_error(index, part, "names no file, folder or Hub dataset")
    return SourceSpec(text.strip(), fmt, text_column, weight)


def parse_dataset_spec(spec: str | None, default_format: str = "text",
                       default_text_column: str = "text") -> list[SourceSpec]:
    """The sources named by `--dataset` (see `SourceSpec`), checked; errors name the bad part."""
    if spec is None:
        return [SourceSpec(None, default_format, default_text_column)]
    if os.path.exists(os.path.expanduser(spec)):
        return [SourceSpec(spec, default_format, default_text_column)]
    parts = spec.split(",")
    sources = [_parse_part(i, part, default_format, default_text_column) for i, part in enumerate(parts, 1)]
    weighted = [s.weight is not None for s in sources]
    if len(sources) > 1 and any(weighted) and not all(weighted):
        missing = ", ".join(f"part {i} ({p.strip()!r})" for i, (p, w) in enumerate(zip(parts, weighted), 1) if not w)
        raise ValueError(f"--dataset: give every source a weight or none; no weight on {missing}")
    return sources
