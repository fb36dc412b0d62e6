"""The jitted train step (one optimizer update) and eval step, over (tokens, loss mask) batches.

`make_train_step(model, optimizer)` returns `train_step(state, batch) -> (state, metrics)`:
- `batch` is (tokens, mask), both (grad_accum, batch_size, seq_len + 1); inputs are tokens[..., :-1], targets
  tokens[..., 1:] (next-token prediction), and a target counts only where mask[..., 1:] is 1. A bare tokens
  array is the all-ones mask (every target counts).
- the loss is the mean over the counted targets of the whole optimizer step (all micro-batches together),
  not a mean of per-micro-batch means, so a micro-batch with few response tokens does not weigh as much as
  one with many;
- the micro-batches run in a `lax.scan` whose carry is the summed gradient, so gradient accumulation
  costs one set of gradients in memory, and the whole update is a single compiled program;
- the state is donated (`donate_argnums=0`): XLA writes the new params and optimizer state into the old
  buffers instead of holding two copies;
- dropout keys are derived from (seed key, step, micro-batch index), so the step needs no RNG state and a
  resumed run draws exactly the same masks;
- the metrics stay on the device: the loop fetches them only every `--log-every` steps, so the host never
  waits on the device at every step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from .state import TrainState


def token_nats(model, params, tokens: jax.Array, dropout_rng: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    """Cross-entropy (nats) of predicting each of tokens[:, 1:] from tokens[:, :-1]: (B, T + 1) -> (B, T)."""
    logits = model(tokens[:, :-1], params=params, dropout_rng=dropout_rng, train=train).logits  # (B, T, V)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tokens[:, 1:])


def _with_mask(batch, masked: bool | None) -> tuple[jax.Array, jax.Array]:
    """(tokens, mask) from a batch given as that pair or as bare tokens (all-ones mask); checked at trace time."""
    if isinstance(batch, (tuple, list)):
        if masked is False:
            raise TypeError("this train step was made with masked=False: pass bare tokens, not (tokens, mask)")
        tokens, mask = batch
        return tokens, mask
    if masked:
        raise TypeError("this train step was made with masked=True: pass (tokens, mask), not bare tokens")
    return batch, jnp.ones(batch.shape, jnp.uint8)


def make_train_step(
    model,
    optimizer: optax.GradientTransformation,
    *,
    dropout_seed: int = 0,
    state_sharding=None,
    batch_sharding=None,
    inject_nan_at_step: int | None = None,
    masked: bool | None = None,
) -> Callable[[TrainState, object], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted `train_step(state, batch) -> (new_state, {"loss", "grad_norm"})` with the state donated.

    Works with any Flax causal LM called like transformers' `FlaxGPT2LMHeadModel`
    (`model(input_ids, params=..., dropout_rng=..., train=...) -> .logits`).
    `state_sharding` / `batch_sharding` (from sharding.py) pin where the state and the batch live; None
    leaves placement to jax (one device). `inject_nan_at_step` is a test hook (hooks.py): that update's loss
    (and so its gradients) becomes NaN. `masked` insists on one form of batch: True (tokens, mask) pairs,
    False bare tokens; None takes either.
    """
    dropout_key = jax.random.PRNGKey(dropout_seed)

    def micro_loss(params, tokens, weights, n_counted, rng, step):
        """This micro-batch's share of the step's mean: its summed nats over all counted targets of the step."""
        loss = (token_nats(model, params, tokens, rng, train=True) * weights).sum() / n_counted
        if inject_nan_at_step is not None:
            loss = loss * jnp.where(step + 1 == inject_nan_at_step, jnp.nan, 1.0)
        return loss

    grad_fn = jax.value_and_grad(micro_loss)

    def train_step(state: TrainState, batch):
        tokens, mask = _with_mask(batch, masked)  # (A, B, T + 1) each
        weights = mask[:, :, 1:].astype(jnp.float32)  # (A, B, T): which targets count
        n_counted = jnp.maximum(weights.sum(), 1.0)  # targets counted in the whole step
        step_key = jax.random.fold_in(dropout_key, state.step)
        if tokens.shape[0] == 1:  # no accumulation: no scan, and the step's own dropout key
            loss, grads = grad_fn(state.params, tokens[0], weights[0], n_counted, step_key, state.step)
        else:
            def micro_step(carry, xs):
                grad_sum, loss_sum = carry
                micro_tokens, micro_weights, i = xs
                loss, grads = grad_fn(state.params, micro_tokens, micro_weights, n_counted,
                                      jax.random.fold_in(step_key, i), state.step)
                return (jax.tree_util.tree_map(jnp.add, grad_sum, grads), loss_sum + loss), None

            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            (grads, loss), _ = jax.lax.scan(micro_step, (zeros, jnp.zeros((), jnp.float32)),
                                            (tokens, weights, jnp.arange(tokens.shape[0])))
        # global L2 norm, before clipping: what the gradients really were
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss, "grad_norm": grad_norm}

    if state_sharding is None:
        return jax.jit(train_step, donate_argnums=0)
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, batch_sharding),  # for (tokens, mask) the one sharding covers both
        out_shardings=(state_sharding, {"loss": replicated, "grad_norm": replicated}),
        donate_argnums=0,
    )


def make_eval_step(model, params_sharding=None, batch_sharding=None) -> Callable:
    """A jitted `eval_step(params, blocks, weights) -> (sum of nats, number of targets)`.

    blocks: (N, T + 1) tokens; weights: (N, T), 0 where the target is padding or outside the loss mask.
    """

    def eval_step(params, blocks, weights):
        return (token_nats(model, params, blocks) * weights).sum(), weights.sum()

    if params_sharding is None:
        return jax.jit(eval_step)
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(eval_step, in_shardings=(params_sharding, batch_sharding, batch_sharding),
                   out_shardings=(replicated, replicated))
