"""From `--dataset` to what the loop consumes: the tokenizer, the held-out eval set and the training stream.

Two kinds of input, one result (`RunData`):
- sources (one, or a weighted mixture; mixture.py): rendered (sources.py), tokenized on the fly (data.py).
  The tokenizer is the resumed checkpoint's, `--tokenizer`, or one trained on the training documents.
- a pre-tokenized folder (pretokenized.py, written by scripts/pretokenize.py): the tokens are read as
  they are. The tokenizer is the folder's own copy unless `--tokenizer` is given, and must hash the same
  as the one the folder was made with (a resumed run's tokenizer too). The folder fixes the recipe
  (sources, formats, labels, held-out records); `--seq-len` may differ (the stream is re-cut exactly).

With `--loss-on response` the tokens carry their loss mask (data.py) and batches are (tokens, mask) pairs.
Everything here runs before the model is built, so bad data stops a run before anything compiles.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from . import pretokenized
from .data import EvalSet, NoUsableData, TokenStream, build_eval_set, tokenize_documents
from .mixture import Mixture, parse_dataset_spec
from .sources import INSTRUCTION_FORMATS, RowStats, describe_source, parse_labels
from .tokenizer import limited, load_tokenizer, set_instruction_chat_template, train_new_tokenizer


@dataclass
class RunData:
    tokenizer: object
    eval_set: EvalSet
    stream: TokenStream
    source: str  # what the data is, for the log and the loss-curve title
    masked: bool  # batches are (tokens, loss mask) pairs
    first_batch: np.ndarray | tuple[np.ndarray, np.ndarray]
    train_stats: list[RowStats] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # one name per source, for the stats

    def next_batch(self, grad_accum: int, batch_size: int):
        if self.masked:
            return self.stream.next_masked_batch(grad_accum, batch_size)
        return self.stream.next_batch(grad_accum, batch_size)

    def train_summary(self) -> str:
        if not self.train_stats:
            return "pre-tokenized"
        if len(self.train_stats) == 1:
            return self.train_stats[0].summary()
        return "; ".join(f"{label}: {stats.summary()}" for label, stats in zip(self.labels, self.train_stats))


def prepare_data(settings, resume_from: str | None, local_batch: int, log: Callable[[str], None],
                 process_index: int = 0, process_count: int = 1) -> RunData:
    """The tokenizer, eval set and training stream of a run (restored to the checkpoint's position)."""
    if pretokenized.is_pretokenized(settings.dataset):
        return _from_pretokenized(settings, resume_from, local_batch, log, process_index, process_count)
    return _from_sources(settings, resume_from, local_batch, log, process_index, process_count)


def _split_for_process(dataset, process_index: int, process_count: int):
    if process_count == 1:
        return dataset
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(dataset, rank=process_index, world_size=process_count)


def _first_batch(stream: TokenStream, settings, local_batch: int, masked: bool, no_data: Callable[[], str]):
    try:
        if masked:
            return stream.next_masked_batch(settings.grad_accum, local_batch)
        return stream.next_batch(settings.grad_accum, local_batch)
    except NoUsableData:
        raise NoUsableData(no_data()) from None


# --- sources, tokenized on the fly ----------------------------------------------------------------------------


def _documents(dataset) -> Iterator[str]:
    for row in dataset:
        yield from row["text"]


def _from_sources(settings, resume_from, local_batch, log, process_index, process_count) -> RunData:
    sources = parse_dataset_spec(settings.dataset, settings.format, settings.text_column)
    mixture = Mixture(sources, split=settings.split, txt_sample_by=settings.txt_sample_by,
                      strip_labels=parse_labels(settings.strip_labels), seed=settings.seed,
                      stopping=settings.mix_stopping, eval_records=settings.eval_docs)
    source = mixture.describe()
    labels = [s.describe() for s in sources]

    if resume_from:
        tokenizer = load_tokenizer(resume_from)
        log(f"tokenizer: from {resume_from} ({len(tokenizer)} tokens)")
    elif settings.tokenizer:
        tokenizer = load_tokenizer(settings.tokenizer)
        log(f"tokenizer: {settings.tokenizer} ({len(tokenizer)} tokens)")
    else:
        texts_stats = mixture.new_stats()
        texts = _documents(mixture.train_dataset(texts_stats))  # not split by process: one tokenizer for all
        first = next(texts, None)
        if first is None:
            raise NoUsableData(_no_data_message(sources, texts_stats, None, settings))
        t0 = time.time()
        tokenizer = train_new_tokenizer(limited(_chain(first, texts), settings.tokenizer_train_docs),
                                        settings.vocab_size, settings.context_length, show_progress=process_index == 0)
        log(f"tokenizer: trained a {len(tokenizer)}-token BPE on {sum(s.used for s in texts_stats):,} records "
            f"of {source} in {time.time() - t0:.1f}s")
    if any(s.format in INSTRUCTION_FORMATS for s in sources):
        note = set_instruction_chat_template(tokenizer)
        log(note or "tokenizer: the instruction template is its chat template (apply_chat_template renders it)")

    masked = settings.loss_on == "response"
    eval_stats, train_stats = mixture.new_stats(), mixture.new_stats()
    eval_set = build_eval_set(tokenize_documents(mixture.eval_dataset(eval_stats), tokenizer, masked),
                              settings.seq_len, settings.eval_max_tokens, use_mask=masked)

    def make_train():
        train = _split_for_process(mixture.train_dataset(train_stats), process_index, process_count)
        return tokenize_documents(train, tokenizer, masked)

    stream = TokenStream(make_train, settings.seq_len, settings.shuffle_buffer, settings.seed + process_index)
    if resume_from:
        from .checkpoint import load_data_state  # (imports jax: kept out of scripts/pretokenize.py's way)

        stream.load_state_dict(*load_data_state(resume_from))
    first_batch = _first_batch(stream, settings, local_batch, masked,
                               lambda: _no_data_message(sources, train_stats, eval_stats, settings))
    if eval_set.num_tokens == 0:
        summary = "; ".join(s.summary() for s in eval_stats)
        raise NoUsableData(f"the held-out eval set (the first {settings.eval_docs} records of {source}) has no "
                           f"usable text{' in the loss mask' if masked else ''}: {summary}")
    if len(sources) > 1:
        for label, stats, held in zip(labels, train_stats, mixture.held_out_counts()):
            if not stats.rows:
                log(f"warning: source {label} gave no records for training: does it hold more than the {held} "
                    f"records it gave to the held-out set?")
            elif not stats.used:
                log(f"warning: source {label} gave no usable record in its first {stats.rows} rows "
                    f"({stats.summary()}); check its format and column")
    held = "; ".join(s.summary() for s in eval_stats) if len(sources) == 1 else ", ".join(
        f"{n} from {label}" for n, label in zip(mixture.held_out_counts(), labels))
    log(f"data: {source}; held-out eval: {eval_set.num_docs} documents, {eval_set.num_tokens:,} "
        f"{'response ' if masked else ''}tokens, {eval_set.num_bytes:,} bytes ({held})")
    return RunData(tokenizer, eval_set, stream, source, masked, first_batch, train_stats, labels)


def _chain(first, rest):
    yield first
    yield from rest


def _no_data_message(sources, stats: list[RowStats], eval_stats: list[RowStats] | None, settings) -> str:
    parts = []
    for i, (spec, st) in enumerate(zip(sources, stats)):
        seen = st.columns_seen | (eval_stats[i].columns_seen if eval_stats else set())
        columns = ", ".join(sorted(seen)) or "none"
        held = f" ({eval_stats[i].summary()} held out)" if eval_stats else ""
        name = "" if len(sources) == 1 else f"source {spec.describe()}: "
        parts.append(f"{name}{st.summary()}{held}; columns seen: {columns}")
    spec = sources[0]
    where = describe_source(spec.path) if len(sources) == 1 else "the mixture"
    how = f" (--format {spec.format}, --text-column {spec.text_column!r})" if len(sources) == 1 else ""
    return (f"no usable text for training in {where}{how}: " + " | ".join(parts)
            + f"; the first {settings.eval_docs} records are held out for eval. Nothing was compiled.")


# --- a pre-tokenized folder ------------------------------------------------------------------------------------


def _from_pretokenized(settings, resume_from, local_batch, log, process_index, process_count) -> RunData:
    folder = os.path.expanduser(settings.dataset)
    manifest = pretokenized.read_manifest(folder)
    if resume_from:
        tokenizer, where = load_tokenizer(resume_from), f"of the checkpoint {resume_from}"
    elif settings.tokenizer:
        tokenizer, where = load_tokenizer(settings.tokenizer), f"--tokenizer {settings.tokenizer}"
    else:
        tokenizer_dir = os.path.join(folder, pretokenized.TOKENIZER_DIR)
        tokenizer, where = load_tokenizer(tokenizer_dir), f"in {tokenizer_dir}"
    pretokenized.check_tokenizer(manifest, folder, tokenizer, where)
    recipe = manifest["recipe"]
    if recipe.get("instruction") and tokenizer.chat_template is None:
        set_instruction_chat_template(tokenizer)
    log(f"tokenizer: {where} ({len(tokenizer)} tokens, tokenizer.json sha256 {manifest['tokenizer_sha256'][:12]}..., "
        f"as the pre-tokenized folder expects)")
    if manifest["seq_len"] != settings.seq_len:
        log(f"note: {folder} was cut for --seq-len {manifest['seq_len']}; this run re-cuts the same token stream "
            f"into {settings.seq_len}-token sequences (exactly: the folder holds the stream itself)")
    if recipe.get("eval_docs") != settings.eval_docs:
        log(f"note: the held-out set is the folder's ({recipe.get('eval_docs')} records), not --eval-docs "
            f"{settings.eval_docs}: it was split off when the folder was made")

    masked = settings.loss_on == "response"
    eval_set = build_eval_set(pretokenized.eval_dataset(folder, manifest), settings.seq_len,
                              settings.eval_max_tokens, use_mask=masked)

    def make_train():
        return _split_for_process(pretokenized.train_dataset(folder, manifest), process_index, process_count)

    stream = TokenStream(make_train, settings.seq_len, settings.shuffle_buffer, settings.seed + process_index)
    if resume_from:
        from .checkpoint import load_data_state  # (imports jax: kept out of scripts/pretokenize.py's way)

        stream.load_state_dict(*load_data_state(resume_from))
    first_batch = _first_batch(stream, settings, local_batch, masked,
                               lambda: f"the pre-tokenized folder {folder} holds no training tokens. Nothing was compiled.")
    if eval_set.num_tokens == 0:
        raise NoUsableData(f"the pre-tokenized folder {folder} holds no held-out tokens"
                           f"{' in the loss mask' if masked else ''}, so the run could not be evaluated")
    source = f"{folder} (pre-tokenized: {recipe.get('source', '?')})"
    log(f"data: {source}; {manifest['train_tokens']:,} training tokens; held-out eval: {eval_set.num_docs} "
        f"documents, {eval_set.num_tokens:,} {'response ' if masked else ''}tokens, {eval_set.num_bytes:,} bytes")
    return RunData(tokenizer, eval_set, stream, source, masked, first_batch)


# --- writing a pre-tokenized folder (scripts/pretokenize.py) ---------------------------------------------------


def pretokenize(settings, tokenizer, output_dir: str, *, overwrite: bool = False,
                shard_tokens: int = pretokenized.DEFAULT_SHARD_TOKENS, log: Callable[[str], None] = print) -> dict:
    """Tokenize the held-out and training records of `settings` (dataset, formats, labels, mixture, eval_docs,
    seed) exactly as a training run would, and write them to a pre-tokenized folder. Returns its manifest."""
    sources = parse_dataset_spec(settings.dataset, settings.format, settings.text_column)
    if pretokenized.is_pretokenized(settings.dataset):
        raise ValueError(f"--dataset {settings.dataset} is already pre-tokenized")
    mixture = Mixture(sources, split=settings.split, txt_sample_by=settings.txt_sample_by,
                      strip_labels=parse_labels(settings.strip_labels), seed=settings.seed,
                      stopping=settings.mix_stopping, eval_records=settings.eval_docs)
    instruction = any(s.format in INSTRUCTION_FORMATS for s in sources)
    if instruction:
        set_instruction_chat_template(tokenizer)
    eval_stats, train_stats = mixture.new_stats(), mixture.new_stats()
    eval_rows = tokenize_documents(mixture.eval_dataset(eval_stats), tokenizer, with_mask=True)
    train_rows = tokenize_documents(mixture.train_dataset(train_stats), tokenizer, with_mask=True)
    labels = [s.describe() for s in sources]
    recipe = {
        "dataset": settings.dataset, "source": mixture.describe(), "split": settings.split,
        "sources": [{"source": label, "format": s.format, "text_column": s.text_column, "probability": p}
                    for label, s, p in zip(labels, sources, mixture.probabilities)],
        "txt_sample_by": settings.txt_sample_by, "strip_labels": settings.strip_labels,
        "mix_stopping": settings.mix_stopping, "seed": settings.seed, "eval_docs": settings.eval_docs,
        "held_out": dict(zip(labels, mixture.held_out_counts())), "instruction": instruction,
    }
    manifest = pretokenized.write_pretokenized(output_dir, tokenizer=tokenizer, eval_rows=eval_rows,
                                               train_rows=train_rows, seq_len=settings.seq_len, recipe=recipe,
                                               shard_tokens=shard_tokens, overwrite=overwrite)
    for label, held, used in zip(labels, eval_stats, train_stats):
        log(f"  {label}: held out {held.summary()}; training {used.summary()}")
    if manifest["train_tokens"] == 0:
        log("warning: no training tokens were written: the sources held nothing usable beyond the held-out records")
    return manifest
