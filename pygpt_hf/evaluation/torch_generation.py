"""Greedy generation with the PyTorch twin for many prompts (left-padded batches), like generation.py."""

from __future__ import annotations

import torch


@torch.inference_mode()
def torch_greedy_generate(model, prompts, max_new_tokens: int, max_context: int, batch_size: int, eos: int,
                          pad: int | None, progress=None) -> list[list[int]]:
    pad = eos if pad is None else pad
    prompts = [list(p[-max_context:]) for p in prompts]
    results: list[list[int] | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        length = len(prompts[chunk[0]])
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, length - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, length - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos, pad_token_id=pad)
        for row, i in enumerate(chunk):
            new = out[row, length:].tolist()
            results[i] = new[:new.index(eos)] if eos in new else new
        if progress is not None:
            progress(len(chunk))
    return results  # type: ignore[return-value]
