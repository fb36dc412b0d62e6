"""Data stage 3: token ids -> packed blocks -> a seeded shuffle buffer -> batches, with state we can checkpoint.

Packing: documents are concatenated (each ends with <|endoftext|>) and cut into blocks of `seq_len + 1`
tokens that overlap by one token (block k = stream[k*T : k*T + T + 1]). A block gives inputs block[:-1]
and targets block[1:], so every token of the stream except the very first is a target exactly once, and no
position is padding. The loss mask travels with the tokens as a parallel array (block k of the mask covers
the same positions as block k of the tokens), so a block's targets block[1:] are weighted by mask[1:].

Two users of the same cut:
- `TokenStream`, the training stream: endless, epoch after epoch, through a shuffle buffer. Shuffling
  happens here because `IterableDataset.shuffle(buffer_size=...)` drops its buffer on resume (hf-stack trap
  8): a fixed array of blocks plus a numpy PCG64 generator, both saved in the checkpoint. Resume = same
  upstream position + same leftover tokens + same buffer + same generator state.
- `build_eval_set`, the held-out documents: in order, once, the last block padded (padding never counts).

Data shards (`ShardedStream`): with `--data-shards N` the training documents are dealt to N shards (mixture.deal),
each its own `TokenStream` with its own buffer and generator, and shard j fills rows [j*B/N, (j+1)*B/N) of every
global batch of B rows. A process reads only the shards whose rows its devices hold, so a run with the same N
draws the same batches on 1 process or on N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..documents import NoUsableData
from .tokenizer import PAD_ID


@dataclass
class EvalSet:
    blocks: np.ndarray  # (N, T + 1) int32, the last block padded with PAD_ID
    weights: np.ndarray  # (N, T) float32: 1 where the target counts (a real token, in the loss mask), else 0
    num_bytes: int  # UTF-8 bytes of the held-out text that was evaluated (the masked-in text with a mask)
    num_docs: int

    @property
    def num_tokens(self) -> int:
        return int(self.weights.sum())


def build_eval_set(eval_dataset, seq_len: int, max_tokens: int, use_mask: bool = True) -> EvalSet:
    """Concatenate the held-out documents (up to `max_tokens`) and cut them like the training stream.

    Where rows carry a `loss_mask` (and `use_mask`), it weights the targets as in training and `num_bytes`
    counts the masked-in text only (`loss_bytes`), so nats/byte stay comparable between runs; rows without
    one count every target and all their bytes.
    """
    stream: list[int] = []
    mask: list[int] = []
    num_bytes = num_docs = 0
    for row in eval_dataset:
        ids = row["input_ids"]
        if not ids:
            continue
        if stream and len(stream) + len(ids) > max_tokens:
            break
        masked = use_mask and row.get("loss_mask") is not None
        stream += ids[:max_tokens]  # a first document longer than max_tokens is cut
        mask += (row["loss_mask"] if masked else [1] * len(ids))[:max_tokens]
        num_bytes += row["loss_bytes"] if masked else row["num_bytes"]
        num_docs += 1
    if len(stream) < 2:
        return EvalSet(np.zeros((0, seq_len + 1), np.int32), np.zeros((0, seq_len), np.float32), 0, 0)
    n_blocks = -(-(len(stream) - 1) // seq_len)  # ceil(targets / seq_len)
    padded = np.full(n_blocks * seq_len + 1, PAD_ID, np.int32)
    padded[: len(stream)] = stream
    padded_mask = np.zeros(len(padded), np.float32)  # padding: weight 0
    padded_mask[: len(mask)] = mask
    index = np.arange(n_blocks)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]  # (N, T+1) overlapping by 1
    return EvalSet(padded[index], padded_mask[index[:, 1:]], num_bytes, num_docs)


# ---------------------------------------------------------------------------------------------------------
# Training stream: pack + shuffle, resumable


class TokenStream:
    """Endless batches of packed blocks from a dataset, epoch after epoch, with exact resume.

    `make_dataset()` returns the (tokenized) training `IterableDataset`, built anew for each epoch; its
    `state_dict()` is the stream position inside the current epoch. Rows with a `loss_mask` column give
    each token its mask bit; rows without one count every token (mask 1). Batches are always (tokens, mask).
    """

    def __init__(self, make_dataset: Callable[[], object], seq_len: int, buffer_size: int, seed: int, shard: int = 0):
        self.make_dataset = make_dataset
        self.seq_len = seq_len
        self.block_len = seq_len + 1
        self.buffer = np.zeros((buffer_size, self.block_len), np.int32)
        self.buffer_mask = np.zeros((buffer_size, self.block_len), np.uint8)  # the loss mask of each block
        self.buffer_fill = 0
        bits = np.random.PCG64(seed)
        self.rng = np.random.Generator(bits.jumped(shard) if shard else bits)  # data shard j: its own 2^127-step stretch
        self.carry = np.zeros(0, np.int32)  # tokens read but not yet emitted as a whole block
        self.carry_mask = np.zeros(0, np.uint8)
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

    def _next_block(self) -> tuple[np.ndarray, np.ndarray]:
        """The next packed block and its mask: the first T+1 leftover tokens; the last stays for the next."""
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
                ids = np.asarray(row["input_ids"], np.int32)
                mask = np.asarray(row["loss_mask"], np.uint8) if row.get("loss_mask") is not None else np.ones(len(ids), np.uint8)
                self.carry = np.concatenate([self.carry, ids])
                self.carry_mask = np.concatenate([self.carry_mask, mask])
        block, mask = self.carry[: self.block_len].copy(), self.carry_mask[: self.block_len].copy()
        self.carry = self.carry[self.seq_len :]  # overlap by one: the last target is the next first input
        self.carry_mask = self.carry_mask[self.seq_len :]
        return block, mask

    # --- the shuffle buffer --------------------------------------------------------------------------
    def next_block_and_mask(self) -> tuple[np.ndarray, np.ndarray]:
        """A block (and its mask) drawn uniformly from the buffer, which is then refilled from upstream."""
        while self.buffer_fill < len(self.buffer):  # fill once at the start (and after a resume, if needed)
            self.buffer[self.buffer_fill], self.buffer_mask[self.buffer_fill] = self._next_block()
            self.buffer_fill += 1
        i = int(self.rng.integers(len(self.buffer)))
        out = self.buffer[i].copy(), self.buffer_mask[i].copy()
        self.buffer[i], self.buffer_mask[i] = self._next_block()
        self.blocks_emitted += 1
        return out

    def next_block(self) -> np.ndarray:
        """The tokens of the next block (its mask dropped): for looking at the stream."""
        return self.next_block_and_mask()[0]

    def next_batch(self, grad_accum: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, mask) for one optimizer step, each (grad_accum, batch_size, seq_len + 1): int32 tokens and
        the uint8 loss mask."""
        pairs = [self.next_block_and_mask() for _ in range(grad_accum * batch_size)]
        shape = (grad_accum, batch_size, self.block_len)
        return np.stack([b for b, _ in pairs]).reshape(shape), np.stack([m for _, m in pairs]).reshape(shape)

    next_masked_batch = next_batch  # the name it had while an unmasked twin existed

    # --- checkpointing -------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays for safetensors, JSON-able metadata): everything needed to continue exactly."""
        arrays = {"buffer": self.buffer[: self.buffer_fill].copy(), "carry": self.carry.copy(),
                  "buffer_mask": self.buffer_mask[: self.buffer_fill].copy(), "carry_mask": self.carry_mask.copy()}
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
        self.buffer_mask[: len(buffer)] = arrays.get("buffer_mask", np.ones_like(buffer, np.uint8))
        self.buffer_fill = len(buffer)
        self.carry = arrays["carry"].astype(np.int32)
        self.carry_mask = arrays.get("carry_mask", np.ones(len(self.carry), np.uint8)).astype(np.uint8)
        self.rng.bit_generator.state = meta["rng"]
        self.epoch = meta["epoch"]
        self.blocks_emitted = meta["blocks_emitted"]
        self._resume_state = meta["dataset"]
        self._rows = None


class ShardedStream:
    """The training stream of one process: the data shards it reads, each a `TokenStream`, side by side.

    `make_dataset(j)` gives shard j's documents (tokenized) anew for each epoch. `next_batch` returns this
    process's rows of the global batch: each shard's B/N rows, in shard order, (grad_accum, rows, T+1).
    """

    def __init__(self, make_dataset: Callable[[int], object], shards: range, num_shards: int, seq_len: int,
                 buffer_size: int, seed: int):
        self.num_shards = num_shards
        per_shard = max(1, -(-buffer_size // num_shards))  # the same blocks in all buffers together
        self.streams = {j: TokenStream(partial(make_dataset, j), seq_len, per_shard, seed, shard=j) for j in shards}

    def next_batch(self, grad_accum: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, mask) of this process's rows for one optimizer step: (grad_accum, rows, seq_len + 1) each,
        where `batch_size` is the global batch and rows = batch_size * len(shards) / num_shards."""
        if batch_size % self.num_shards:
            raise ValueError(f"--batch-size ({batch_size}) must be divisible by --data-shards ({self.num_shards})")
        parts = [stream.next_batch(grad_accum, batch_size // self.num_shards) for stream in self.streams.values()]
        return np.concatenate([t for t, _ in parts], axis=1), np.concatenate([m for _, m in parts], axis=1)

    def state_dict(self) -> dict[int, tuple[dict[str, np.ndarray], dict]]:
        """{shard: (arrays, metadata)} of every shard this process reads."""
        return {j: stream.state_dict() for j, stream in self.streams.items()}

    def load_state_dict(self, states: dict[int, tuple[dict[str, np.ndarray], dict]]) -> None:
        for j, stream in self.streams.items():
            stream.load_state_dict(*states[j])
