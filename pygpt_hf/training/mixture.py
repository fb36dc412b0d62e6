"""Several sources in one run: `--dataset` names them with weights, `datasets.interleave_datasets` mixes them.

Syntax (one source is the old, plain form: `--dataset data.jsonl`):

    --dataset "dolly.jsonl@dolly:0.7,notes.txt@text:0.3"
    --dataset "databricks/databricks-dolly-15k@dolly:3,math.jsonl@dolly:1,wiki.parquet@text=body:1"

    SPEC   = SOURCE ("," SOURCE)*
    SOURCE = PATH_OR_HUB_ID ["@" FORMAT] [":" WEIGHT]
    FORMAT = text | text=COLUMN | dolly | alpaca      (default: --format, and --text-column for text)
    WEIGHT = a positive number; weights are normalised to probabilities (7,3 == 0.7,0.3); give a weight
             to every source or to none (none = equal weights)

A path that exists as typed is always one source, so a file name with ',', '@' or ':' still works alone.

How the mixture is read (`Mixture`):
- every source is streamed and rendered to the same columns ({"text": [documents], "response_start",
  "source"}, see `sources.render_source`), dropping all other columns (such as synthetic math's `meta`);
- `interleave_datasets(probabilities=weights, seed=--seed, stopping_strategy=--mix-stopping)` draws each
  next record from a source chosen at random with those probabilities. The default `all_exhausted` ends a
  pass when every source has been read to its end at least once: the weights hold for the whole pass, and
  a small source is repeated (oversampled) to keep them. `first_exhausted` ends the pass when the first
  source runs out (the rest of the others is never read); `all_exhausted_without_replacement` reads every
  record exactly once (the weights then drift as sources run out).
- held-out eval set: the first `--eval-docs` records the mixture draws (evaluated grouped by source).
  Training reads each source *after* the records it gave to the eval set, so no held-out record ever
  enters training, even when a source is repeated. Both are fixed by the seed, so a resumed run sees
  exactly the same split.
Exact resume works through `interleave_datasets`' `state_dict()` (the source-choosing generator's state is
part of it).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .sources import RowStats, describe_source, open_source, render_source

FORMATS = ("text", "dolly", "alpaca")
STOPPING_STRATEGIES = ("all_exhausted", "first_exhausted", "all_exhausted_without_replacement")


@dataclass(frozen=True)
class SourceSpec:
    """One source of a run: where, in which record format, with what weight (None = not given)."""

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
    """The sources named by `--dataset` (see the module docstring), checked; errors name the bad part."""
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


def probabilities(sources: Sequence[SourceSpec]) -> list[float]:
    """The weights normalised to sum to 1 (equal when none were given)."""
    weights = [s.weight if s.weight is not None else 1.0 for s in sources]
    return [w / sum(weights) for w in weights]


class Mixture:
    """The run's sources, rendered, held-out records split off, and (for several sources) interleaved.

    `eval_dataset(stats)` is the first `eval_records` records; `train_dataset(stats)` all the others, in a
    fixed order. Each call builds a new `IterableDataset` (cheap: nothing is read until it is iterated), and
    `stats` holds one `RowStats` per source, which the rendering fills as rows are read.
    """

    def __init__(self, sources: Sequence[SourceSpec], *, split: str = "train", txt_sample_by: str = "paragraph",
                 strip_labels: Sequence[str] | None = None, seed: int = 0, stopping: str = "all_exhausted",
                 eval_records: int = 0):
        if stopping not in STOPPING_STRATEGIES:
            raise ValueError(f"--mix-stopping must be one of {', '.join(STOPPING_STRATEGIES)}; got {stopping!r}")
        self.sources = list(sources)
        self.raw = [open_source(s.path, split, txt_sample_by) for s in self.sources]
        self.strip_labels = strip_labels
        self.seed, self.stopping, self.eval_records = seed, stopping, eval_records
        self.probabilities = probabilities(self.sources)
        self._held_out: list[int] | None = None

    def new_stats(self) -> list[RowStats]:
        return [RowStats() for _ in self.sources]

    def _rendered(self, raws, stats: Sequence[RowStats]):
        return [render_source(raw, s.format, s.text_column, st, i, self.strip_labels)
                for i, (raw, s, st) in enumerate(zip(raws, self.sources, stats))]

    def _interleave(self, datasets):
        from datasets import interleave_datasets

        if len(datasets) == 1:
            return datasets[0]
        return interleave_datasets(datasets, probabilities=self.probabilities, seed=self.seed,
                                   stopping_strategy=self.stopping)

    def held_out_counts(self) -> list[int]:
        """How many of the first `eval_records` records came from each source (one light pass, computed once):
        which records the order picks depends only on the seed and on where sources end, not on their text."""
        if self._held_out is None:
            if len(self.sources) == 1:
                self._held_out = [self.eval_records]
            else:
                def tag(i):
                    return lambda batch: {"source": [i] * len(next(iter(batch.values())))}

                tagged = [raw.map(tag(i), batched=True).select_columns(["source"]) for i, raw in enumerate(self.raw)]
                drawn = Counter(row["source"] for row in self._interleave(tagged).take(self.eval_records))
                self._held_out = [drawn[i] for i in range(len(self.sources))]
        return self._held_out

    def eval_dataset(self, stats: Sequence[RowStats]):
        """The held-out records: the first `eval_records` the mixture draws, grouped by source (each source's
        first records, in source order; `take` before rendering, so `stats` count exactly these rows)."""
        from datasets import concatenate_datasets

        parts = [render_source(raw.take(n), s.format, s.text_column, st, i, self.strip_labels)
                 for i, (raw, s, st, n) in enumerate(zip(self.raw, self.sources, stats, self.held_out_counts())) if n]
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)

    def train_dataset(self, stats: Sequence[RowStats]):
        """Every record not held out: each source from just after its held-out records, interleaved."""
        raws = [raw.skip(n) if n else raw for raw, n in zip(self.raw, self.held_out_counts())]
        return self._interleave(self._rendered(raws, stats))

    def describe(self) -> str:
        if len(self.sources) == 1:
            return describe_source(self.sources[0].path)
        return " + ".join(f"{s.describe()} ({p:.0%})" for s, p in zip(self.sources, self.probabilities))
