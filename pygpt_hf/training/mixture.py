"""Data stage 1: the run's sources -> their documents, held-out records split off, mixed into one stream.

`Mixture` is built once per run from the `SourceSpec`s that `--dataset` names (settings.py parses the
grammar: `dolly.jsonl@dolly:0.7,notes.txt@text:0.3`, or one plain source) and reads them as follows:
- every source is opened streamed and rendered to the same columns ({"text": [documents], "response_start",
  "source"}; `documents.open_source` and `documents.render_source`), dropping all other columns (such as
  synthetic math's `meta`);
- `interleave_datasets(probabilities=weights, seed=--seed, stopping_strategy=--mix-stopping)` draws each
  next record from a source chosen at random with those probabilities. The default `all_exhausted` ends a
  pass when every source has been read to its end at least once: the weights hold for the whole pass, and
  a small source is repeated (oversampled) to keep them. `first_exhausted` ends the pass when the first
  source runs out (the rest of the others is never read); `all_exhausted_without_replacement` reads every
  record exactly once (the weights then drift as sources run out).
- several data shards (`--data-shards`, one per process by default): each source's training records are dealt
  out like cards, record i to shard i % N (`deal`, before rendering: a process renders and tokenizes only its
  share), and each shard interleaves its shares with the same weights.
- held-out eval set: the first `--eval-docs` records the mixture draws (evaluated grouped by source).
  Training reads each source *after* the records it gave to the eval set, so no held-out record ever
  enters training, even when a source is repeated. Both are fixed by the seed, so a resumed run sees
  exactly the same split.
Exact resume works through `interleave_datasets`' `state_dict()` (the source-choosing generator's state is
part of it). One source is the same with nothing interleaved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from ..documents import INSTRUCTION_FORMATS, NoUsableData, RowStats, describe_source, open_source, render_source
from .settings import STOPPING_STRATEGIES, SourceSpec


def deal(dataset, shard: int, num_shards: int):
    """Records shard, shard + N, shard + 2N, ... of `dataset` (N = `num_shards`): one shard's share.

    A filter on the record index, which datasets restores with the rest of the stream position on resume.
    (Not `split_dataset_by_node`: on one file it steps over the records after the whole pipeline has run, so every
    process would still render and tokenize everything.)
    """
    if num_shards == 1:
        return dataset
    return dataset.filter(lambda batch, indices: [i % num_shards == shard for i in indices], with_indices=True,
                          batched=True)


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
        if stopping not in STOPPING_STRATEGIES:  # (settings.validate says so first, naming the flag)
            raise ValueError(f"--mix-stopping must be one of {', '.join(STOPPING_STRATEGIES)}; got {stopping!r}")
        self.sources = list(sources)
        self.raw = [open_source(s.path, split, txt_sample_by) for s in self.sources]
        self.strip_labels = strip_labels
        self.seed, self.stopping, self.eval_records = seed, stopping, eval_records
        self.probabilities = probabilities(self.sources)
        self._held_out: list[int] | None = None

    @classmethod
    def from_settings(cls, settings) -> Mixture:
        """The mixture a run's data settings (`DataSettings`) describe."""
        return cls(settings.sources, split=settings.split, txt_sample_by=settings.txt_sample_by,
                   strip_labels=settings.labels, seed=settings.seed, stopping=settings.mix_stopping,
                   eval_records=settings.eval_docs)

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

    def train_dataset(self, stats: Sequence[RowStats], shard: int = 0, num_shards: int = 1):
        """Every record not held out (of data shard `shard` of `num_shards`: its share, see `deal`): each source
        from just after its held-out records, interleaved."""
        raws = [deal(raw.skip(n) if n else raw, shard, num_shards) for raw, n in zip(self.raw, self.held_out_counts())]
        return self._interleave(self._rendered(raws, stats))

    def training_documents(self, stats: Sequence[RowStats], limit: int) -> Iterator[str]:
        """The first `limit` training documents, in order (what a new tokenizer is trained on); NoUsableData
        when there is not one."""
        n = 0
        for row in self.train_dataset(stats):
            for document in row["text"][: limit - n]:
                n += 1
                yield document
            if n >= limit:
                return
        if n == 0:
            raise NoUsableData(self.no_data_message(stats))

    def no_data_message(self, stats: Sequence[RowStats], eval_stats: Sequence[RowStats] | None = None) -> str:
        """What was read and skipped, per source, when training found no usable text."""
        parts = []
        for i, (spec, st) in enumerate(zip(self.sources, stats)):
            seen = st.columns_seen | (eval_stats[i].columns_seen if eval_stats else set())
            held = f" ({eval_stats[i].summary()} held out)" if eval_stats else ""
            name = "" if len(self.sources) == 1 else f"source {spec.describe()}: "
            parts.append(f"{name}{st.summary()}{held}; columns seen: {', '.join(sorted(seen)) or 'none'}")
        spec = self.sources[0]
        where = describe_source(spec.path) if len(self.sources) == 1 else "the mixture"
        how = f" (--format {spec.format}, --text-column {spec.text_column!r})" if len(self.sources) == 1 else ""
        return (f"no usable text for training in {where}{how}: " + " | ".join(parts)
                + f"; the first {self.eval_records} records are held out for eval. Nothing was compiled.")

    def warnings(self, stats: Sequence[RowStats]) -> list[str]:
        """Sources of a mixture that gave nothing to training (in what was read so far)."""
        if len(self.sources) == 1:
            return []
        warnings = []
        for label, st, held in zip(self.labels, stats, self.held_out_counts()):
            if not st.rows:
                warnings.append(f"warning: source {label} gave no records for training: does it hold more "
                                f"than the {held} records it gave to the held-out set?")
            elif not st.used:
                warnings.append(f"warning: source {label} gave no usable record in its first {st.rows} "
                                f"rows ({st.summary()}); check its format and column")
        return warnings

    def held_out_summary(self, eval_stats: Sequence[RowStats]) -> str:
        if len(self.sources) == 1:
            return "; ".join(s.summary() for s in eval_stats)
        return ", ".join(f"{n} from {label}" for n, label in zip(self.held_out_counts(), self.labels))

    @property
    def labels(self) -> list[str]:
        """One name per source, for the log."""
        return [s.describe() for s in self.sources]

    @property
    def is_instruction(self) -> bool:
        """Any source renders instruction records (so the run stores the chat template)."""
        return any(s.format in INSTRUCTION_FORMATS for s in self.sources)

    def describe(self) -> str:
        if len(self.sources) == 1:
            return describe_source(self.sources[0].path)
        return " + ".join(f"{s.describe()} ({p:.0%})" for s, p in zip(self.sources, self.probabilities))
