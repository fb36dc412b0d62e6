"""The jitted Flax forward that scores a padded batch: one compile per (batch size, bucket length)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def make_flax_forward(model, params=None):
    """`forward(inputs, targets, weights) -> (summed log-probs (B,), all-greedy (B,))` for a Flax causal LM."""
    params = model.params if params is None else params

    @jax.jit
    def forward(params, inputs, targets, weights):  # (B, T) int32, (B, T) int32, (B, T) f32
        logits = model(inputs, params=params).logits.astype(jnp.float32)  # (B, T, V)
        logprobs = jax.nn.log_softmax(logits, axis=-1)
        target_logprobs = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]  # (B, T)
        hits = (jnp.argmax(logits, axis=-1) == targets) | (weights == 0)
        return (target_logprobs * weights).sum(axis=-1), hits.all(axis=-1)

    def run(inputs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logprob, greedy = forward(params, inputs, targets, weights)
        return np.asarray(logprob, np.float64), np.asarray(greedy)

    return run
