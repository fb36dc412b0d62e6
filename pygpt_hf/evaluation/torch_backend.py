"""The PyTorch twin's forward that scores a padded batch (same contract as flax_backend.py)."""

from __future__ import annotations

import numpy as np
import torch


def make_torch_forward(model):
    """`forward(inputs, targets, weights) -> (summed log-probs (B,), all-greedy (B,))` for a torch causal LM."""
    model.eval()

    @torch.inference_mode()
    def run(inputs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs_t, targets_t = torch.from_numpy(inputs).long(), torch.from_numpy(targets).long()
        weights_t = torch.from_numpy(weights)
        logits = model(input_ids=inputs_t).logits.float()  # (B, T, V)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets_t[..., None])[..., 0]  # (B, T)
        hits = (logits.argmax(dim=-1) == targets_t) | (weights_t == 0)
        return (logprobs.double().numpy() * weights).sum(-1), hits.all(-1).numpy()  # summed in float64

    return run
