"""Text records -> token ids -> packed blocks -> a seeded shuffle -> batches, with state we can checkpoint.

The pipeline, per document:
    record --render (sources.py)--> text --tokenize (batched `map`)--> ids + [<|endoftext|>]
and then across documents:
    ids ... ids ... --pack--> blocks of seq_len + 1 tokens --shuffle buffer--> (accum, batch, seq_len + 1)

Packing: documents are concatenated (each ends with <|endoftext|>) and cut into blocks of `seq_len + 1`
tokens that overlap by one token (block k = stream[k*T : k*T + T + 1]). A block gives inputs
block[:-1] and targets block[1:], so every token of the stream except the very first is a target exactly
once, and no position is padding.

Shuffling: `IterableDataset.shuffle(buffer_size=...)` drops its buffer on resume (hf-stack trap 8), so
the buffer lives here instead: a fixed array of blocks plus a numpy PCG64 generator, both saved in the
checkpoint. Resume = same upstream position + same leftover tokens + same buffer + same generator state.

Held-out data: the first `eval_docs` records are the eval set (`take`); training reads the rest (`skip`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .sources import RowStats, render_record

EOS_ID = 256
PAD_ID = 257


class NoUsableData(ValueError):
    """The dataset yielded no document we can train on (raised before anything is compiled)."""


def make_tokenize_fn(tokenizer, fmt: str, text_column: str, stats: RowStats) -> Callable[[dict], dict]:
    """The batched `map` function: a batch of records -> {"input_ids", "num_bytes"} per record.

    It returns one output row per input row (a skipped record gets no ids), because a streaming dataset
    may not know its columns up front, and `map` can only change the row count when it drops them all.
    `split_special_tokens=True`: "<|endoftext|>" typed inside a document stays text (its bytes), it never
    becomes the control token; only the id appended here (EOS_ID) ends a document.
    """
    eos = tokenizer.eos_token_id
    if eos != EOS_ID:
        raise ValueError(f"the tokenizer's eos id is {eos}, expected {EOS_ID} (<|endoftext|>)")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        n_rows = len(next(iter(batch.values()))) if batch else 0
        records = [{k: batch[k][i] for k in batch} for i in range(n_rows)]
        docs_per_record = [render_record(r, fmt, text_column, stats) for r in records]
        flat = [doc for docs in docs_per_record for doc in docs]
        flat_ids = []
        if flat:
            flat_ids = tokenizer(flat, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
        input_ids, num_bytes, k = [], [], 0
        for docs in docs_per_record:
            ids: list[int] = []
            for _ in docs:
                ids += flat_ids[k] + [eos]
                k += 1
            input_ids.append(ids)
            num_bytes.append(sum(len(d.encode("utf-8")) for d in docs))
        return {"input_ids": input_ids, "num_bytes": num_bytes}

    return tokenize


def tokenized(dataset, tokenizer, fmt: str, text_column: str, stats: RowStats, batch_size: int = 256):
    """`dataset` with rendered, tokenized documents in `input_ids` (lazily, in batched `map`)."""
    return dataset.map(make_tokenize_fn(tokenizer, fmt, text_column, stats), batched=True, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------------
# Held-out eval set


@dataclass
class EvalSet:
    blocks: np.ndarray  # (N, T + 1) int32, the last block padded with PAD_ID
    weights: np.ndarray  # (N, T) float32: 1 where the target is a real token, 0 on padding
    num_bytes: int  # UTF-8 bytes of the held-out documents that were evaluated
    num_docs: int

    @property
    def num_tokens(self) -> int:
        return int(self.weights.sum())


def build_eval_set(eval_dataset, seq_len: int, max_tokens: int) -> EvalSet:
    """Concatenate the held-out documents (up to `max_tokens`) and cut them like the training stream."""
    stream: list[int] = []
    num_bytes = num_docs = 0
    for row in eval_dataset:
        if not row["input_ids"]:
            continue
        if stream and len(stream) + len(row["input_ids"]) > max_tokens:
            break
        stream += row["input_ids"][:max_tokens]  # a first document longer than max_tokens is cut
        num_bytes += row["num_bytes"]
        num_docs += 1
    if len(stream) < 2:
        return EvalSet(np.zeros((0, seq_len + 1), np.int32), np.zeros((0, seq_len), np.float32), 0, 0)
    n_targets = len(stream) - 1
    n_blocks = -(-n_targets // seq_len)  # ceil
    padded = np.full(n_blocks * seq_len + 1, PAD_ID, np.int32)
    padded[: len(stream)] = stream
    index = np.arange(n_blocks)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]  # (N, T+1) overlapping by 1
    weights = (index[:, 1:] < len(stream)).astype(np.float32)
    return EvalSet(padded[index], weights, num_bytes, num_docs)


# ---------------------------------------------------------------------------------------------------------
# Training stream: pack + shuffle, resumable


class TokenStream:
    """Endless batches of packed blocks from a dataset, epoch after epoch, with exact resume.

    `make_dataset()` returns the (tokenized) training `IterableDataset`, built anew for each epoch; its
    `state_dict()` is the stream position inside the current epoch.
    """

    def __init__(self, make_dataset: Callable[[], object], seq_len: int, buffer_size: int, seed: int):
        self.make_dataset = make_dataset
        self.seq_len = seq_len
        self.block_len = seq_len + 1
        self.buffer = np.zeros((buffer_size, self.block_len), np.int32)
        self.buffer_fill = 0
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.carry = np.zeros(0, np.int32)  # tokens read but not yet emitted as a whole block
        self.epoch = 0
        self.blocks_emitted = 0
        self._dataset = None
        self._rows: Iterator | None = None
        self._resume_state: dict | None = None
        self._docs_this_epoch = 0
        self._fresh_epoch = True

    # --- upstream: documents -> blocks ---------------------------------------------------------------
    def _start_epoch(self) -> None:
        # A fresh dataset object per epoch, read in file order. (Not `set_epoch`: from epoch 1 on it
        # reshuffles the source files, and refuses to after `skip`.)
        self._dataset = self.make_dataset()
        self._fresh_epoch = self._resume_state is None  # resumed midway, an epoch may have nothing left
        if self._resume_state is not None:
            self._dataset.load_state_dict(self._resume_state)
            self._resume_state = None
        self._rows = iter(self._dataset)
        self._docs_this_epoch = 0

    def _next_block(self) -> np.ndarray:
        """The next packed block: the first T+1 leftover tokens; the block's last token stays for the next."""
        while len(self.carry) < self.block_len:
            if self._rows is None:
                self._start_epoch()
            row = next(self._rows, None)
            if row is None:  # end of epoch
                if self._docs_this_epoch == 0 and self._fresh_epoch:
                    raise NoUsableData("the training data yielded no usable document in a whole pass")
                self.epoch += 1
                self._rows = None
                continue
            if row["input_ids"]:
                self._docs_this_epoch += 1
                self.carry = np.concatenate([self.carry, np.asarray(row["input_ids"], np.int32)])
        block = self.carry[: self.block_len].copy()
        self.carry = self.carry[self.seq_len :]  # overlap by one: the last target is the next first input
        return block

    # --- the shuffle buffer --------------------------------------------------------------------------
    def next_block(self) -> np.ndarray:
        """A block drawn uniformly from the buffer, which is then refilled from upstream."""
        while self.buffer_fill < len(self.buffer):  # fill once at the start (and after a resume, if needed)
            self.buffer[self.buffer_fill] = self._next_block()
            self.buffer_fill += 1
        i = int(self.rng.integers(len(self.buffer)))
        out = self.buffer[i].copy()
        self.buffer[i] = self._next_block()
        self.blocks_emitted += 1
        return out

    def next_batch(self, grad_accum: int, batch_size: int) -> np.ndarray:
        """(grad_accum, batch_size, seq_len + 1) int32 tokens for one optimizer step."""
        blocks = [self.next_block() for _ in range(grad_accum * batch_size)]
        return np.stack(blocks).reshape(grad_accum, batch_size, self.block_len)

    # --- checkpointing -------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays for safetensors, JSON-able metadata): everything needed to continue exactly."""
        arrays = {"buffer": self.buffer[: self.buffer_fill].copy(), "carry": self.carry.copy()}
        meta = {
            "epoch": self.epoch,
            "dataset": self._dataset.state_dict() if self._rows is not None else self._resume_state,
            "rng": self.rng.bit_generator.state,
            "blocks_emitted": self.blocks_emitted,
            "seq_len": self.seq_len,
        }
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if meta["seq_len"] != self.seq_len:
            raise ValueError(f"data state was saved with seq_len {meta['seq_len']}, this run uses {self.seq_len}")
        buffer = arrays["buffer"]
        if len(buffer) > len(self.buffer):
            raise ValueError(f"data state holds {len(buffer)} shuffle-buffer blocks, "
                             f"more than --shuffle-buffer {len(self.buffer)}")
        self.buffer[: len(buffer)] = buffer
        self.buffer_fill = len(buffer)
        self.carry = arrays["carry"].astype(np.int32)
        self.rng.bit_generator.state = meta["rng"]
        self.epoch = meta["epoch"]
        self.blocks_emitted = meta["blocks_emitted"]
        self._resume_state = meta["dataset"]
        self._rows = None
