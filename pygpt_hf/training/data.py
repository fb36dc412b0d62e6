"""From the settings to the first batch: the data pipeline of a run, top to bottom.

    1. sources -> documents -> held out -> mixed    mixture.py (documents.py opens and renders each source)
       the tokenizer: the checkpoint's, --tokenizer, or trained on the training documents, once (tokenizer.py)
    2. documents -> token ids + loss masks          encoding.py (split_special_tokens=True; --loss-on)
       ... or a pre-tokenized folder enters here, at the tokenized stage (pretokenized.py)
    3. ids -> blocks -> shuffle buffer -> batches   packing.py (the training stream; the held-out eval set)

`prepare_data` runs stage 1 and 2 through one of two entries with the same face (`SourceTokens` for the
sources, `FolderTokens` for a folder written by scripts/pretokenize.py), then stage 3 for both alike.
Batches are always (tokens, loss mask) pairs; with `--loss-on all` the mask is all ones. Everything here
runs before the model is built, so bad data stops a run before anything compiles.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..documents import RowStats, describe_source
from . import pretokenized
from .encoding import tokenize_documents
from .mixture import Mixture
from .packing import EvalSet, NoUsableData, TokenStream, build_eval_set
from .tokenizer import limited, load_tokenizer, set_instruction_chat_template, train_new_tokenizer


@dataclass
class RunData:
    tokenizer: object
    eval_set: EvalSet
    stream: TokenStream
    source: str  # what the data is, for the log and the loss-curve title
    first_batch: tuple[np.ndarray, np.ndarray]  # (tokens, loss mask), each (grad_accum, batch, seq_len + 1)
    is_instruction: bool = False  # instruction records: the end-of-run sample goes through the chat template
    train_stats: list[RowStats] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # one name per source, for the stats

    def next_batch(self, grad_accum: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.stream.next_batch(grad_accum, batch_size)

    def train_summary(self) -> str:
        if not self.train_stats:
            return "pre-tokenized"
        if len(self.train_stats) == 1:
            return self.train_stats[0].summary()
        return "; ".join(f"{label}: {stats.summary()}" for label, stats in zip(self.labels, self.train_stats))


def prepare_data(settings, resume_from: str | None, local_batch: int, log: Callable[[str], None],
                 process_index: int = 0, process_count: int = 1) -> RunData:
    """The tokenizer, eval set and training stream of a run (restored to the checkpoint's position), and the
    first batch, fetched so that a dataset with nothing usable stops the run here."""
    # --- stages 1 and 2: tokenized rows, from the sources or from a pre-tokenized folder ----------------------
    entry = FolderTokens if pretokenized.is_pretokenized(settings.dataset) else SourceTokens
    tokens = entry(settings, resume_from, log, show_progress=process_index == 0)
    # --- stage 3: the held-out set cut into blocks; the training stream packed, shuffled, batched ------------
    masked = settings.loss_on == "response"
    eval_set = build_eval_set(tokens.eval_rows(), settings.seq_len, settings.eval_max_tokens, use_mask=masked)
    stream = TokenStream(lambda: _split_for_process(tokens.train_rows(), process_index, process_count),
                         settings.seq_len, settings.shuffle_buffer, settings.seed + process_index)
    if resume_from:
        from .checkpoint import load_data_state  # (imports jax: kept out of scripts/pretokenize.py's way)

        stream.load_state_dict(*load_data_state(resume_from))
    try:
        first_batch = stream.next_batch(settings.grad_accum, local_batch)
    except NoUsableData:
        raise NoUsableData(tokens.no_training_data()) from None
    if eval_set.num_tokens == 0:
        raise NoUsableData(tokens.no_eval_data())
    for warning in tokens.warnings():
        log(warning)
    log(f"data: {tokens.describe()}; held-out eval: {eval_set.num_docs} documents, {eval_set.num_tokens:,} "
        f"{'response ' if masked else ''}tokens, {eval_set.num_bytes:,} bytes ({tokens.held_out()})")
    return RunData(tokens.tokenizer, eval_set, stream, tokens.source, first_batch, tokens.is_instruction,
                   tokens.train_stats, tokens.labels)


def _split_for_process(dataset, process_index: int, process_count: int):
    if process_count == 1:
        return dataset
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(dataset, rank=process_index, world_size=process_count)


# --- the sources, tokenized on the fly ----------------------------------------------------------------------------


class SourceTokens:
    """Stage 1 (the mixture, built once; the tokenizer, chosen or trained once) and stage 2 (tokenizing)."""

    def __init__(self, settings, resume_from: str | None, log: Callable[[str], None], show_progress: bool = True):
        self.settings, self.with_mask = settings, settings.loss_on == "response"
        self.mixture = Mixture.from_settings(settings)
        self.source, self.labels = self.mixture.describe(), self.mixture.labels
        self.is_instruction = self.mixture.is_instruction
        self.eval_stats, self.train_stats = self.mixture.new_stats(), self.mixture.new_stats()
        if resume_from:
            self.tokenizer = load_tokenizer(resume_from)
            log(f"tokenizer: from {resume_from} ({len(self.tokenizer)} tokens)")
        elif settings.tokenizer:
            self.tokenizer = load_tokenizer(settings.tokenizer)
            log(f"tokenizer: {settings.tokenizer} ({len(self.tokenizer)} tokens)")
        else:
            self.tokenizer = self._train_tokenizer(log, show_progress)
        if self.is_instruction:
            note = set_instruction_chat_template(self.tokenizer)
            log(note or "tokenizer: the instruction template is its chat template (apply_chat_template renders it)")

    def _train_tokenizer(self, log: Callable[[str], None], show_progress: bool):
        """Our BPE on the first --tokenizer-train-docs training documents (never the held-out ones)."""
        stats = self.mixture.new_stats()
        texts = _documents(self.mixture.train_dataset(stats))  # not split by process: one tokenizer for all
        first = next(texts, None)
        if first is None:
            raise NoUsableData(self._no_data_message(stats, None))
        t0 = time.time()
        s = self.settings
        tokenizer = train_new_tokenizer(limited(_chain(first, texts), s.tokenizer_train_docs), s.vocab_size,
                                        s.context_length, show_progress=show_progress)
        log(f"tokenizer: trained a {len(tokenizer)}-token BPE on {sum(st.used for st in stats):,} records "
            f"of {self.source} in {time.time() - t0:.1f}s")
        return tokenizer

    def eval_rows(self):
        return tokenize_documents(self.mixture.eval_dataset(self.eval_stats), self.tokenizer, self.with_mask)

    def train_rows(self):
        return tokenize_documents(self.mixture.train_dataset(self.train_stats), self.tokenizer, self.with_mask)

    def describe(self) -> str:
        return self.source

    def warnings(self) -> list[str]:
        """Sources of a mixture that gave nothing to training (read so far: the first batch's worth)."""
        if len(self.labels) == 1:
            return []
        warnings = []
        for label, stats, held in zip(self.labels, self.train_stats, self.mixture.held_out_counts()):
            if not stats.rows:
                warnings.append(f"warning: source {label} gave no records for training: does it hold more "
                                f"than the {held} records it gave to the held-out set?")
            elif not stats.used:
                warnings.append(f"warning: source {label} gave no usable record in its first {stats.rows} "
                                f"rows ({stats.summary()}); check its format and column")
        return warnings

    def held_out(self) -> str:
        if len(self.labels) == 1:
            return "; ".join(s.summary() for s in self.eval_stats)
        return ", ".join(f"{n} from {label}" for n, label in zip(self.mixture.held_out_counts(), self.labels))

    def no_training_data(self) -> str:
        return self._no_data_message(self.train_stats, self.eval_stats)

    def no_eval_data(self) -> str:
        summary = "; ".join(s.summary() for s in self.eval_stats)
        return (f"the held-out eval set (the first {self.settings.eval_docs} records of {self.source}) has no "
                f"usable text{' in the loss mask' if self.with_mask else ''}: {summary}")

    def _no_data_message(self, stats: list[RowStats], eval_stats: list[RowStats] | None) -> str:
        sources, parts = self.mixture.sources, []
        for i, (spec, st) in enumerate(zip(sources, stats)):
            seen = st.columns_seen | (eval_stats[i].columns_seen if eval_stats else set())
            held = f" ({eval_stats[i].summary()} held out)" if eval_stats else ""
            name = "" if len(sources) == 1 else f"source {spec.describe()}: "
            parts.append(f"{name}{st.summary()}{held}; columns seen: {', '.join(sorted(seen)) or 'none'}")
        spec = sources[0]
        where = describe_source(spec.path) if len(sources) == 1 else "the mixture"
        how = f" (--format {spec.format}, --text-column {spec.text_column!r})" if len(sources) == 1 else ""
        return (f"no usable text for training in {where}{how}: " + " | ".join(parts)
                + f"; the first {self.settings.eval_docs} records are held out for eval. Nothing was compiled.")


def _documents(dataset) -> Iterator[str]:
    for row in dataset:
        yield from row["text"]


def _chain(first, rest):
    yield first
    yield from rest


# --- a pre-tokenized folder: it enters at stage 2's output ----------------------------------------------------------


class FolderTokens:
    """The tokenized rows of a folder written by scripts/pretokenize.py, with the tokenizer they were made with.

    The tokenizer is the folder's own copy unless `--tokenizer` is given (or the run resumes), and must hash the
    same as the one the folder was made with. The folder fixes the recipe (sources, formats, labels, held-out
    records); `--seq-len` may differ (packing re-cuts the same stream exactly).
    """

    def __init__(self, settings, resume_from: str | None, log: Callable[[str], None], show_progress: bool = True):
        self.train_stats: list[RowStats] = []  # the folder's rows are tokens: no records are read
        self.labels: list[str] = []
        self.folder = os.path.expanduser(settings.dataset)
        self.manifest = pretokenized.read_manifest(self.folder)
        self.with_mask = settings.loss_on == "response"
        if resume_from:
            self.tokenizer, where = load_tokenizer(resume_from), f"of the checkpoint {resume_from}"
        elif settings.tokenizer:
            self.tokenizer, where = load_tokenizer(settings.tokenizer), f"--tokenizer {settings.tokenizer}"
        else:
            tokenizer_dir = os.path.join(self.folder, pretokenized.TOKENIZER_DIR)
            self.tokenizer, where = load_tokenizer(tokenizer_dir), f"in {tokenizer_dir}"
        pretokenized.check_tokenizer(self.manifest, self.folder, self.tokenizer, where)
        recipe = self.manifest["recipe"]
        self.is_instruction = bool(recipe.get("instruction"))
        if self.is_instruction and self.tokenizer.chat_template is None:
            set_instruction_chat_template(self.tokenizer)
        self.source = f"{self.folder} (pre-tokenized: {recipe.get('source', '?')})"
        log(f"tokenizer: {where} ({len(self.tokenizer)} tokens, tokenizer.json sha256 "
            f"{self.manifest['tokenizer_sha256'][:12]}..., as the pre-tokenized folder expects)")
        if self.manifest["seq_len"] != settings.seq_len:
            log(f"note: {self.folder} was cut for --seq-len {self.manifest['seq_len']}; this run re-cuts the same "
                f"token stream into {settings.seq_len}-token sequences (exactly: the folder holds the stream itself)")
        if recipe.get("eval_docs") != settings.eval_docs:
            log(f"note: the held-out set is the folder's ({recipe.get('eval_docs')} records), not --eval-docs "
                f"{settings.eval_docs}: it was split off when the folder was made")

    def eval_rows(self):
        return pretokenized.eval_dataset(self.folder, self.manifest)

    def train_rows(self):
        return pretokenized.train_dataset(self.folder, self.manifest, with_mask=self.with_mask)

    def describe(self) -> str:
        return f"{self.source}; {self.manifest['train_tokens']:,} training tokens"

    def warnings(self) -> list[str]:
        return []

    def held_out(self) -> str:
        return f"{self.manifest['eval_documents']} documents held out when the folder was made"

    def no_training_data(self) -> str:
        return f"the pre-tokenized folder {self.folder} holds no training tokens. Nothing was compiled."

    def no_eval_data(self) -> str:
        return (f"the pre-tokenized folder {self.folder} holds no held-out tokens"
                f"{' in the loss mask' if self.with_mask else ''}, so the run could not be evaluated")
