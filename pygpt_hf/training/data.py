"""From the settings to the first batch: the data pipeline of a run, top to bottom in `prepare_data`.

    1. sources -> documents -> held out -> mixed    mixture.py (documents.py opens and renders each source)
       the tokenizer, chosen once: the checkpoint's, --tokenizer, or trained on the documents (tokenizer.py)
    2. documents -> token ids + loss masks          encoding.py (split_special_tokens=True; --loss-on)
       ... a pre-tokenized folder enters here instead, with its rows of tokens (pretokenized.py)
    3. ids -> blocks -> shuffle buffer -> batches   packing.py (the training stream; the held-out eval set)

Batches are always (tokens, loss mask) pairs; with `--loss-on all` the mask is all ones. Everything here runs
before the model is built, so bad data stops a run before anything compiles.

Several processes: the training documents are dealt to `--data-shards` shards (one per process by default;
mixture.deal, record i to shard i % N) and each process reads, tokenizes and packs only the shards whose rows
of the global batch its devices hold (packing.ShardedStream); sharding.put_local makes one global array of
every process's rows. The shards, not the processes, fix the data order: a 1-process run with
`--data-shards 2` draws exactly the batches of a 2-process run, and each process saves and restores the
position of its own shards. The held-out set is small: every process reads all of it (eval is global).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..documents import NoUsableData, RowStats
from .encoding import tokenize
from .mixture import Mixture, deal
from .packing import EvalSet, ShardedStream, build_eval_set
from .pretokenized import open_folder
from .tokenizer import tokenizer_for_run


@dataclass
class RunData:
    tokenizer: object
    eval_set: EvalSet
    stream: ShardedStream
    source: str  # what the data is, for the log and the loss-curve title
    first_batch: tuple[np.ndarray, np.ndarray]  # (tokens, loss mask), each (grad_accum, rows, seq_len + 1)
    is_instruction: bool = False  # instruction records: the end-of-run sample goes through the chat template
    train_stats: list[RowStats] = field(default_factory=list)  # per source ([] for a pre-tokenized folder)
    labels: list[str] = field(default_factory=list)  # one name per source, for the stats

    def next_batch(self, grad_accum: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.stream.next_batch(grad_accum, batch_size)

    def train_summary(self) -> str:
        if not self.train_stats:
            return "pre-tokenized"
        if len(self.train_stats) == 1:
            return self.train_stats[0].summary()
        return "; ".join(f"{label}: {stats.summary()}" for label, stats in zip(self.labels, self.train_stats))


def prepare_data(settings, resume_from: str | None, batch_size: int, log: Callable[[str], None],
                 show_progress: bool = True, shards: range | None = None) -> RunData:
    """The tokenizer, eval set and training stream of a run (restored to the checkpoint's position), and the
    first batch (this process's rows of it), fetched so that a dataset with nothing usable stops the run here.

    `shards`: the data shards this process reads (default: all `settings.data_shards`, one process)."""
    with_mask = settings.loss_on == "response"
    num_shards = settings.data_shards or 1
    shards = range(num_shards) if shards is None else shards
    folder = open_folder(settings.dataset)  # a pre-tokenized folder, or None: sources

    # --- 1. the documents, mixed and held out (built once), and the tokenizer (chosen once) ----------------------
    if folder is None:
        mixture = Mixture.from_settings(settings)
        eval_stats, train_stats, tokenizer_stats = mixture.new_stats(), mixture.new_stats(), mixture.new_stats()
        texts = mixture.training_documents(tokenizer_stats, settings.tokenizer_train_docs)  # read if one is trained
        train_documents = partial(mixture.train_dataset, train_stats, num_shards=num_shards)  # (shard) -> a fresh dataset
        eval_documents = mixture.eval_dataset(eval_stats)  # (lazy datasets: nothing is read yet)
        source, labels, is_instruction = mixture.describe(), mixture.labels, mixture.is_instruction
    else:
        texts, source, labels, is_instruction, train_stats = (), folder.describe(), [], folder.is_instruction, []
    tokenizer = tokenizer_for_run(settings, resume_from, log, texts=texts, folder=folder, instruction=is_instruction,
                                  show_progress=show_progress)

    # --- 2. token ids + loss masks: tokenized on the fly, or the folder's rows -------------------------------------
    if folder is None:
        eval_rows, train_rows = tokenize(eval_documents, train_documents, tokenizer, with_mask)
    else:
        eval_rows = folder.eval_rows()
        train_rows = lambda shard: deal(folder.train_rows(with_mask), shard, num_shards)

    # --- 3. blocks: the held-out set cut in order; the training stream packed, shuffled and batched -------------
    eval_set = build_eval_set(eval_rows, settings.seq_len, settings.eval_max_tokens, use_mask=with_mask)
    stream = ShardedStream(train_rows, shards, num_shards, settings.seq_len, settings.shuffle_buffer, settings.seed)
    if resume_from:
        from .checkpoint import load_data_state  # (imports jax: kept out of scripts/pretokenize.py's way)

        stream.load_state_dict(load_data_state(resume_from, shards, num_shards))
    try:
        first_batch = stream.next_batch(settings.grad_accum, batch_size)
    except NoUsableData:
        raise NoUsableData(f"the pre-tokenized folder {folder.path} holds no training tokens. Nothing was compiled."
                           if folder else mixture.no_data_message(train_stats, eval_stats)) from None
    masked_in = " in the loss mask" if with_mask else ""
    if eval_set.num_tokens == 0 and folder:
        raise NoUsableData(f"the pre-tokenized folder {folder.path} holds no held-out tokens{masked_in}, so the run "
                           f"could not be evaluated")
    if eval_set.num_tokens == 0:
        raise NoUsableData(f"the held-out eval set (the first {settings.eval_docs} records of {source}) has no "
                           f"usable text{masked_in}: {'; '.join(s.summary() for s in eval_stats)}")
    for warning in [] if folder else mixture.warnings(train_stats):
        log(warning)
    held = (f"{folder.manifest['train_tokens']:,} training tokens" if folder
            else mixture.held_out_summary(eval_stats))
    log(f"data: {source}; held-out eval: {eval_set.num_docs} documents, {eval_set.num_tokens:,} "
        f"{'response ' if with_mask else ''}tokens, {eval_set.num_bytes:,} bytes ({held})")
    return RunData(tokenizer, eval_set, stream, source, first_batch, is_instruction, train_stats, labels)

