"""The optimizer and the jitted train step, on a tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pygpt_hf import PyGPTConfig
from pygpt_hf.training.state import build_model, create_train_state, decay_mask, make_optimizer, make_schedule
from pygpt_hf.training.step import make_eval_step, make_train_step

TINY = {"vocab_size": 300, "n_positions": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}


@pytest.fixture(scope="module")
def tiny():
    """(model, params, a batch of (accum 2, 4, T+1) tokens, optimizer, one train step shared by the tests).

    Plain SGD (lr 1): new params = params - gradient, so comparing params compares gradients exactly
    (Adam's first step is ~lr * sign(g), which turns rounding noise in tiny gradients into big jumps).
    """
    model, params = build_model(PyGPTConfig(**TINY), seed=0)
    batch = np.random.default_rng(0).integers(0, 300, size=(2, 4, 17)).astype(np.int32)
    optimizer = optax.sgd(1.0)
    return model, params, batch, optimizer, make_train_step(model, optimizer, dropout_seed=1)


def fresh_state(params, optimizer):
    return create_train_state(jax.tree_util.tree_map(jnp.copy, params), optimizer)  # the step donates its input


def test_schedule_warms_up_then_decays_along_a_cosine():
    schedule = make_schedule(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(60)) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down the cosine
    assert float(schedule(110)) == pytest.approx(0.1)


def test_weight_decay_touches_matrices_only(tiny):
    _, params, _, _, _ = tiny
    mask = decay_mask(params)
    block = mask["transformer"]["h"]["0"]
    assert block["attn"]["qkv_proj"]["kernel"] and mask["transformer"]["wte"]["embedding"]
    assert not block["attn"]["qkv_proj"]["bias"] and not block["ln_1"]["scale"]
    assert not mask["transformer"]["ln_f"]["bias"]
    # with a zero gradient, AdamW moves only the decayed leaves
    optimizer, _ = make_optimizer(lr=0.1, warmup_steps=0, max_steps=10, weight_decay=0.5)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = jax.jit(optimizer.update)(zeros, optimizer.init(params), params)
    moved = jax.tree_util.tree_map(lambda u: bool(jnp.any(u != 0)), updates)
    mlp = moved["transformer"]["h"]["1"]["mlp"]["c_fc"]
    assert mlp["kernel"] and not mlp["bias"] and not moved["transformer"]["ln_f"]["scale"]


def test_gradient_accumulation_equals_one_big_batch(tiny):
    _, params, batch, optimizer, step = tiny
    accumulated, m1 = step(fresh_state(params, optimizer), jnp.asarray(batch))  # 2 micro-batches of 4
    whole, m2 = step(fresh_state(params, optimizer), jnp.asarray(batch.reshape(1, 8, 17)))  # 1 of 8
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5)
    assert float(m1["grad_norm"]) == pytest.approx(float(m2["grad_norm"]), rel=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(accumulated.params), jax.tree_util.tree_leaves(whole.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert int(accumulated.step) == 1


def test_the_step_learns_donates_its_state_and_agrees_with_eval(tiny):
    model, params, batch, optimizer, step = tiny
    state = fresh_state(params, optimizer)
    kernel = state.params["transformer"]["h"]["0"]["attn"]["qkv_proj"]["kernel"]
    state, first = step(state, jnp.asarray(batch))
    assert kernel.is_deleted()  # donated: XLA reused the old buffers for the new state
    losses = [float(first["loss"])]
    for _ in range(30):
        state, metrics = step(state, jnp.asarray(batch))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.5  # it starts memorising the batch
    # the eval step's mean over all targets is the train loss of the same tokens (no dropout here)
    nats, count = make_eval_step(model)(state.params, jnp.asarray(batch.reshape(8, 17)), jnp.ones((8, 16)))
    _, again = step(state, jnp.asarray(batch.reshape(1, 8, 17)))
    assert float(nats) / float(count) == pytest.approx(float(again["loss"]), rel=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_trains(tiny):
    _, _, batch, _, _ = tiny
    model, params = build_model(PyGPTConfig(**TINY), seed=0, dtype="bfloat16")
    optimizer, _ = make_optimizer(lr=1e-2, warmup_steps=0, max_steps=10)
    state, metrics = make_train_step(model, optimizer)(create_train_state(params, optimizer), jnp.asarray(batch))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(state.params))
    assert np.isfinite(float(metrics["loss"])) and abs(float(metrics["loss"]) - np.log(300)) < 0.5
