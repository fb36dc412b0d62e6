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
        return target_logprobs, hits.all(axis=-1)

    def run(inputs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        token_logprobs, greedy = forward(params, inputs, targets, weights)
        # Summed on the host in float64: a row's total never depends on how XLA orders a float32 reduction.
        return (np.asarray(token_logprobs, np.float64) * weights).sum(axis=-1), np.asarray(greedy)

    return run
