"""Greedy generation for many prompts at once, with few compiled shapes.

Prompts are sorted longest first, cut into batches of `batch_size`, left-padded to a bucket length
(scoring.bucket_length) and padded to exactly `batch_size` rows, and run through `jax.jit(model.generate)`
once per (bucket, max_new_tokens). The model counts positions over real tokens only, so left padding does not
change a prompt's continuation. Each continuation is cut at the first eos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .scoring import bucket_length


class GreedyGenerator:
    """`generate(prompts, max_new_tokens)` -> the new tokens of each prompt (eos and after removed)."""

    def __init__(self, model, eos_token_id: int, pad_token_id: int | None, batch_size: int):
        self.model, self.eos, self.batch_size = model, eos_token_id, batch_size
        self.pad = eos_token_id if pad_token_id is None else pad_token_id
        self._compiled: dict[tuple[int, int], Callable] = {}

    def _program(self, context_len: int, max_new: int) -> Callable:
        if (context_len, max_new) not in self._compiled:
            import jax

            model, eos, pad = self.model, self.eos, self.pad

            def run(params, ids, mask):
                return model.generate(ids, attention_mask=mask, params=params, max_length=context_len + max_new,
                                      do_sample=False, eos_token_id=eos, pad_token_id=pad).sequences

            self._compiled[(context_len, max_new)] = jax.jit(run)
        return self._compiled[(context_len, max_new)]

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, max_context: int,
                 progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """New tokens for every prompt; prompts longer than `max_context` keep their last tokens."""
        prompts = [list(p[-max_context:]) for p in prompts]
        if any(not p for p in prompts):
            raise ValueError("a generation prompt is empty; every prompt needs at least one token")
        results: list[list[int] | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            length = bucket_length(len(prompts[chunk[0]]), max_context)
            ids = np.full((self.batch_size, length), self.pad, np.int32)
            mask = np.zeros((self.batch_size, length), np.int32)
            mask[:, -1] = 1  # filler rows hold one real token, so no row attends to nothing
            for row, i in enumerate(chunk):  # left padding: every prompt ends where generation starts
                ids[row, length - len(prompts[i]):] = prompts[i]
                mask[row] = 0
                mask[row, length - len(prompts[i]):] = 1
            sequences = np.asarray(self._program(length, max_new_tokens)(self.model.params, ids, mask))
            for row, i in enumerate(chunk):
                new = sequences[row, length:].tolist()
                results[i] = new[:new.index(self.eos)] if self.eos in new else new
            if progress is not None:
                progress(len(chunk))
        return results  # type: ignore[return-value]
