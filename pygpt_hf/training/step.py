"""The jitted train step (one optimizer update) and eval step.

`make_train_step(model, optimizer)` returns `train_step(state, batch) -> (state, metrics)`:
- `batch` is (grad_accum, batch_size, seq_len + 1) int32 tokens; inputs are tokens[:, :-1] and targets
  tokens[:, 1:] (next-token prediction).
- the micro-batches run in a `lax.scan` whose carry is the summed gradient, so gradient accumulation
  costs one set of gradients in memory, and the whole update is a single compiled program;
- the state is donated (`donate_argnums=0`): XLA writes the new params and optimizer state into the old
  buffers instead of holding two copies;
- dropout keys are derived from (seed key, step, micro-batch index), so the step needs no RNG state and a
  resumed run draws exactly the same masks;
- the metrics stay on the device: the loop fetches them only every `--log-every` steps, so the host never
  waits on the device at every step.

With `masked=True` (`--loss-on response`) the batch is a pair (tokens, mask), both (grad_accum, batch_size,
seq_len + 1); a target tokens[..., t] counts only where mask[..., t] is 1. The loss is the mean over the
counted targets of the whole optimizer step (all micro-batches together), not a mean of per-micro-batch
means, so a micro-batch with few response tokens does not weigh as much as one with many.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from .state import TrainState


def next_token_loss(model, params, tokens: jax.Array, dropout_rng: jax.Array | None, train: bool) -> jax.Array:
    """Mean cross-entropy (nats) of predicting tokens[:, 1:] from tokens[:, :-1]. tokens: (B, T + 1)."""
    logits = model(tokens[:, :-1], params=params, dropout_rng=dropout_rng, train=train).logits  # (B, T, V)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tokens[:, 1:]).mean()


def masked_nats(model, params, tokens: jax.Array, mask: jax.Array, dropout_rng: jax.Array | None,
                train: bool) -> jax.Array:
    """Summed cross-entropy (nats) of the targets tokens[:, 1:] whose mask[:, 1:] is 1. tokens, mask: (B, T + 1)."""
    logits = model(tokens[:, :-1], params=params, dropout_rng=dropout_rng, train=train).logits  # (B, T, V)
    nats = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tokens[:, 1:])  # (B, T)
    return (nats * mask[:, 1:].astype(jnp.float32)).sum()


def make_train_step(
    model,
    optimizer: optax.GradientTransformation,
    *,
    dropout_seed: int = 0,
    state_sharding=None,
    batch_sharding=None,
    inject_nan_at_step: int | None = None,
    masked: bool = False,
) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted `train_step(state, batch) -> (new_state, {"loss", "grad_norm"})` with the state donated.

    Works with any Flax causal LM called like transformers' `FlaxGPT2LMHeadModel`
    (`model(input_ids, params=..., dropout_rng=..., train=...) -> .logits`).
    `state_sharding` / `batch_sharding` (from sharding.py) pin where the state and the batch live; None
    leaves placement to jax (one device). `inject_nan_at_step` is a test hook: that update's loss (and so
    its gradients) becomes NaN. `masked`: the batch is (tokens, mask) and only masked-in targets count.
    """
    dropout_key = jax.random.PRNGKey(dropout_seed)

    def poisoned(loss, step):
        if inject_nan_at_step is not None:
            loss = loss * jnp.where(step + 1 == inject_nan_at_step, jnp.nan, 1.0)
        return loss

    def loss_fn(params, tokens, rng, step):
        return poisoned(next_token_loss(model, params, tokens, rng, train=True), step)

    def masked_loss_fn(params, tokens, mask, n_counted, rng, step):
        # this micro-batch's share of the step's mean: its summed nats over all counted targets of the step
        return poisoned(masked_nats(model, params, tokens, mask, rng, train=True) / n_counted, step)

    grad_fn = jax.value_and_grad(loss_fn)
    masked_grad_fn = jax.value_and_grad(masked_loss_fn)

    def apply_update(state: TrainState, grads, loss):
        # global L2 norm, before clipping: what the gradients really were
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": grad_norm}

    def train_step(state: TrainState, batch: jax.Array):
        n_micro = batch.shape[0]  # (A, B, T + 1)
        step_key = jax.random.fold_in(dropout_key, state.step)
        if n_micro == 1:
            loss, grads = grad_fn(state.params, batch[0], step_key, state.step)
        else:
            def micro_step(carry, xs):
                grad_sum, loss_sum = carry
                tokens, i = xs
                loss, grads = grad_fn(state.params, tokens, jax.random.fold_in(step_key, i), state.step)
                return (jax.tree_util.tree_map(jnp.add, grad_sum, grads), loss_sum + loss), None

            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            (grad_sum, loss_sum), _ = jax.lax.scan(micro_step, (zeros, jnp.zeros((), jnp.float32)),
                                                   (batch, jnp.arange(n_micro)))
            grads = jax.tree_util.tree_map(lambda g: g / n_micro, grad_sum)
            loss = loss_sum / n_micro
        return apply_update(state, grads, loss)

    def masked_train_step(state: TrainState, batch: tuple[jax.Array, jax.Array]):
        tokens, mask = batch  # (A, B, T + 1) each
        step_key = jax.random.fold_in(dropout_key, state.step)
        n_counted = jnp.maximum(mask[:, :, 1:].astype(jnp.float32).sum(), 1.0)  # targets counted in the whole step

        def micro_step(carry, xs):
            grad_sum, loss_sum = carry
            micro_tokens, micro_mask, i = xs
            loss, grads = masked_grad_fn(state.params, micro_tokens, micro_mask, n_counted,
                                         jax.random.fold_in(step_key, i), state.step)
            return (jax.tree_util.tree_map(jnp.add, grad_sum, grads), loss_sum + loss), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        (grads, loss), _ = jax.lax.scan(micro_step, (zeros, jnp.zeros((), jnp.float32)),
                                        (tokens, mask, jnp.arange(tokens.shape[0])))
        return apply_update(state, grads, loss)

    step_fn = masked_train_step if masked else train_step
    if state_sharding is None:
        return jax.jit(step_fn, donate_argnums=0)
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        step_fn,
        in_shardings=(state_sharding, batch_sharding),  # for (tokens, mask) the one sharding covers both
        out_shardings=(state_sharding, {"loss": replicated, "grad_norm": replicated}),
        donate_argnums=0,
    )


def make_eval_step(model, params_sharding=None, batch_sharding=None) -> Callable:
    """A jitted `eval_step(params, blocks, weights) -> (sum of nats, number of targets)`.

    blocks: (N, T + 1) tokens; weights: (N, T), 0 where the target is padding.
    """

    def eval_step(params, blocks, weights):
        logits = model(blocks[:, :-1], params=params, train=False).logits  # (N, T, V)
        nats = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), blocks[:, 1:])
        return (nats * weights).sum(), weights.sum()

    if params_sharding is None:
        return jax.jit(eval_step)
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(eval_step, in_shardings=(params_sharding, batch_sharding, batch_sharding),
                   out_shardings=(replicated, replicated))
