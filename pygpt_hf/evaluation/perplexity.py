"""Language modelling on held-out text: nats per token, perplexity and bits per byte.

Every document is tokenized as in training (`split_special_tokens=True`, so typed control strings stay text)
and prefixed with <|endoftext|>; its tokens are scored in sliding windows (windows.py), each exactly once.
Bits per byte is the figure that compares models with different tokenizers:

    bits per byte = (summed nats over the scored tokens) / ln 2 / (UTF-8 bytes of the scored documents)

nats per token and perplexity = exp(nats per token) depend on the tokenizer; bits per byte does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .scoring import score_rows
from .windows import Row, check_stride, sliding_windows


@dataclass
class TextScores:
    documents: int = 0
    tokens: int = 0  # scored tokens (the document's own, not the <|endoftext|> prefix)
    bytes: int = 0  # UTF-8 bytes of the scored documents
    nats: float = 0.0  # summed negative log-likelihood

    @property
    def nats_per_token(self) -> float:
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    @property
    def bits_per_byte(self) -> float:
        return self.nats / math.log(2) / self.bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "nats_per_token": self.nats_per_token, "perplexity": self.perplexity,
                "bits_per_byte": self.bits_per_byte}


def document_ids(tokenizer, text: str) -> list[int]:
    """[<|endoftext|>] + the document's ids, as in training."""
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
    return [tokenizer.eos_token_id] + ids


def score_text(documents: Iterable[str], tokenizer, forward, n_positions: int, stride: int | None = None,
               batch_size: int = 8, progress=None) -> TextScores:
    """Score `documents` with `forward` (scoring.py contract) in windows of `n_positions` tokens.

    Documents are read lazily and scored a few batches at a time, so a streamed corpus never sits in memory.
    `progress` (e.g. a tqdm bar) gets `.update(tokens)` after every batch.
    """
    stride = n_positions // 2 if stride is None else stride
    check_stride(stride, n_positions)
    totals = TextScores()
    pending: list[Row] = []
    flush_at = batch_size * 8

    def flush() -> None:
        scores = score_rows(pending, forward, batch_size, n_positions,
                            progress=progress.update if progress is not None else None)
        totals.nats -= sum(s.logprob for s in scores)
        pending.clear()

    for text in documents:
        ids = document_ids(tokenizer, text)
        if len(ids) < 2:
            continue
        totals.documents += 1
        totals.tokens += len(ids) - 1
        totals.bytes += len(text.encode("utf-8"))
        pending.extend(sliding_windows(ids, n_positions, stride))
        if len(pending) >= flush_at:
            flush()
    if pending:
        flush()
    if totals.tokens == 0:
        raise ValueError("no document had any text to score")
    return totals
