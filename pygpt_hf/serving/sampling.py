"""Next-token sampling with settings that differ per row: one jitted decode step serves requests that asked
for different temperatures, top-k, top-p and seeds.

`pygpt_hf.streaming.sample_token` takes one setting for the whole batch (transformers' Flax warpers, whose
top-k is a static int); here each row carries its own, so the same filters are written over a sorted copy of
the logits: temperature, then top-k (keep the k best), then top-p (the smallest set of best tokens whose
probability reaches p), then a categorical draw with the row's own key. Temperature 0 is argmax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_rows(logits: jnp.ndarray, keys: jax.Array, temperature: jnp.ndarray, top_k: jnp.ndarray,
                top_p: jnp.ndarray) -> jnp.ndarray:
    """Token ids (B,) from logits (B, V); temperature (B,) 0 = greedy, top_k (B,) 0 = off, top_p (B,) 1 = off;
    keys (B, 2): one PRNG key per row, so a row's draw does not depend on the other rows."""
    logits = logits.astype(jnp.float32)
    V = logits.shape[-1]
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scores = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    ranked = jnp.sort(scores, axis=-1)[:, ::-1]  # (B, V), best first
    k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
    kth_best = jnp.take_along_axis(ranked, (k - 1)[:, None], axis=-1)  # (B, 1)
    ranked = jnp.where(ranked >= kth_best, ranked, -jnp.inf)
    probs = jax.nn.softmax(ranked, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability mass of the better tokens
    keep = (before < top_p[:, None]).at[:, 0].set(True)  # the best token always stays
    threshold = jnp.min(jnp.where(keep, ranked, jnp.inf), axis=-1, keepdims=True)
    scores = jnp.where(scores >= jnp.maximum(threshold, kth_best), scores, -jnp.inf)
    drawn = jax.vmap(jax.random.categorical)(keys, scores).astype(jnp.int32)
    return jnp.where(temperature > 0, drawn, greedy)


def top_logprobs(logits: jnp.ndarray, tokens: jnp.ndarray, n: int) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The model's log-probability of `tokens` (B,) under logits (B, V), and its n best (ids, logprobs) per row:
    the raw distribution, before temperature or filters, as OpenAI reports it."""
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    chosen = jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
    best_logprobs, best_ids = jax.lax.top_k(logprobs, n)
    return chosen, best_ids.astype(jnp.int32), best_logprobs


def pick_tokens(logits: jnp.ndarray, keys: jax.Array, temperature: jnp.ndarray, top_k: jnp.ndarray,
                top_p: jnp.ndarray, want_logprobs: jnp.ndarray, n: int):
    """(tokens, chosen logprobs, best ids, best logprobs) for logits (B, V). The sort that sampling needs and the
    log-softmax that logprobs need run only when some row asks for them (`lax.cond`: a greedy batch that wants
    no logprobs costs one argmax); rows that did not ask get zeros."""
    B = logits.shape[0]
    tokens = jax.lax.cond(jnp.any(temperature > 0), sample_rows,
                          lambda lg, *_: jnp.argmax(lg, axis=-1).astype(jnp.int32),
                          logits, keys, temperature, top_k, top_p)
    empty = (jnp.zeros((B,), jnp.float32), jnp.zeros((B, n), jnp.int32), jnp.zeros((B, n), jnp.float32))
    chosen, best_ids, best_logprobs = jax.lax.cond(jnp.any(want_logprobs), lambda: top_logprobs(logits, tokens, n),
                                                   lambda: empty)
    return tokens, chosen, best_ids, best_logprobs
