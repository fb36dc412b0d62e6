"""Rows of tokens -> log-likelihoods, batched, with a few fixed shapes (the framework-free half).

A row is `(tokens, n_scored)` (windows.py): inputs tokens[:-1], targets tokens[1:], and the last `n_scored`
targets count. Rows are sorted longest first, cut into batches of `batch_size`, and each batch is padded on
the right to a *bucket* length (powers of two from 16, capped at the longest input the model takes) and to
exactly `batch_size` rows, so a jitted forward compiles once per bucket, not once per shape. Right padding
never changes a real token's logits (attention is causal) and padded targets have weight 0, so a row's score
never depends on what it was batched with. The forward itself is the backend's (flax_backend.py,
torch_backend.py): `forward(inputs (B, T) int32, targets (B, T) int32, weights (B, T) f32)` ->
`(summed log-probs (B,), all-greedy (B,))`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .windows import Row

MIN_BUCKET = 16


def bucket_length(n: int, max_length: int) -> int:
    """The padded input length for `n` inputs: the next power of two >= 16, at most `max_length`."""
    if n > max_length:
        raise ValueError(f"a row has {n} inputs, more than the model takes ({max_length})")
    size = MIN_BUCKET
    while size < n:
        size *= 2
    return min(size, max_length)


@dataclass
class RowScore:
    logprob: float  # summed log-probability of the scored targets (nats, <= 0)
    is_greedy: bool  # every scored target was the arg-max prediction
    n_scored: int


def pack_batch(rows: Sequence[Row], batch_size: int, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows -> (inputs, targets, weights), each (batch_size, bucket); weight 1 marks a scored target."""
    length = bucket_length(max(len(tokens) - 1 for tokens, _ in rows), max_length)
    inputs = np.zeros((batch_size, length), np.int32)
    targets = np.zeros((batch_size, length), np.int32)
    weights = np.zeros((batch_size, length), np.float32)
    for i, (tokens, n_scored) in enumerate(rows):
        n = len(tokens) - 1
        if not 1 <= n_scored <= n:
            raise ValueError(f"a row of {len(tokens)} tokens cannot score {n_scored} targets")
        inputs[i, :n] = tokens[:-1]
        targets[i, :n] = tokens[1:]
        weights[i, n - n_scored:n] = 1.0
    return inputs, targets, weights


Forward = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def score_rows(rows: Sequence[Row], forward: Forward, batch_size: int, max_length: int,
               progress: Callable[[int], None] | None = None) -> list[RowScore]:
    """Score every row (in the given order); `progress(n)` is told how many targets each batch scored."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # longest first: few, full buckets
    results: list[RowScore | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = [rows[i] for i in chunk]
        logprobs, greedy = forward(*pack_batch(batch, batch_size, max_length))
        for j, i in enumerate(chunk):
            results[i] = RowScore(float(logprobs[j]), bool(greedy[j]), rows[i][1])
        if progress is not None:
            progress(sum(n for _, n in batch))
    return results  # type: ignore[return-value]
