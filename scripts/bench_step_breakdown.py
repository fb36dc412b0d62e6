"""Where a train step's time goes, by op class: each piece jitted alone, forward + backward, timed in interleaved
rounds beside the whole step (medians, ms). Pieces are per layer where marked; "x n" is how often a step runs them.

    python scripts/benchmark.py train --breakdown [--rows 1]

The attention rows compare the layout the model used before (einsums over [B, T, H, D]) with today's
([B, H, T, D] batched matmuls) and with `jax.nn.dot_product_attention`.
"""

from __future__ import annotations

import numpy as np
from bench_train import ROWS
from benchmark import SHAPES, VOCAB, interleaved_medians


def _grad_of(fn):
    """jit(grad of sum(fn(*args))) over every argument: a forward + backward of one piece."""
    import jax

    return jax.jit(jax.grad(lambda *args: fn(*args).sum(), argnums=tuple(range(fn.__code__.co_argcount))))


def attention_einsum_bthd(q, k, v):  # q, k, v: (B, T, H, D), the model's layout before
    import jax
    import jax.numpy as jnp

    T = q.shape[1]
    scores = jnp.einsum("bthd,bshd->bhts", q / np.sqrt(q.shape[-1]), k)
    scores = scores + jnp.where(jnp.tril(jnp.ones((T, T), bool)), 0.0, jnp.finfo(jnp.float32).min)
    return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, axis=-1), v)


def attention_matmul_bhtd(q, k, v):  # q, k, v: (B, H, T, D), today's layout
    import jax
    import jax.numpy as jnp

    T = q.shape[2]
    scores = (q / np.sqrt(q.shape[-1])) @ k.swapaxes(-1, -2)
    scores = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1) @ v


def attention_dot_product(q, k, v):  # q, k, v: (B, T, H, D), jax's own op
    import jax

    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


def breakdown(row: int, repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import optax
    from bench_train import flax_steps

    from pygpt_hf.training import make_optimizer

    shape_name, T, B = ROWS[row]
    shape = SHAPES[shape_name]
    L, C, H = shape["n_layer"], shape["n_embd"], shape["n_head"]
    D, F = C // H, 4 * C
    key = iter(jax.random.split(jax.random.PRNGKey(0), 32))
    normal = lambda *s: jax.random.normal(next(key), s, jnp.float32) * 0.02
    x, gamma, beta = normal(B, T, C), jnp.ones(C), jnp.zeros(C)
    q_bthd, k_bthd, v_bthd = normal(B, T, H, D), normal(B, T, H, D), normal(B, T, H, D)
    q_bhtd, k_bhtd, v_bhtd = (a.transpose(0, 2, 1, 3) for a in (q_bthd, k_bthd, v_bthd))
    w_qkv, w_o, w_fc, w_proj, wte = normal(C, 3 * C), normal(C, C), normal(C, F), normal(F, C), normal(VOCAB, C)
    targets = jax.random.randint(next(key), (B, T), 0, VOCAB)

    def layer_norm(x, gamma, beta):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * gamma + beta

    def mlp(x, w_fc, w_proj):
        return jax.nn.gelu(x @ w_fc, approximate=True) @ w_proj

    def projections(x, w_qkv, w_o):
        return (x @ w_qkv)[..., :C] @ w_o

    def lm_loss(x, wte):  # tied head and cross-entropy over the vocabulary
        return optax.softmax_cross_entropy_with_integer_labels(x @ wte.T, targets)

    steps = flax_steps(shape, T, B, names=("pygpt",))
    params = jax.tree_util.tree_map(jnp.copy, build_params(shape, T))
    optimizer, _ = make_optimizer(lr=3e-4, warmup_steps=10, max_steps=1000)
    opt_state = optimizer.init(params)
    update = jax.jit(lambda g, s, p: optax.apply_updates(p, optimizer.update(g, s, p)[0]))

    pieces = {  # name -> (times per step, thunk)
        "whole train step (pygpt)": (1, steps["pygpt"][0]),
        "attention, einsum [B,T,H,D] (the model)": (L, _bound(_grad_of(attention_einsum_bthd), q_bthd, k_bthd, v_bthd)),
        "attention, matmul [B,H,T,D] (alternative)": (L, _bound(_grad_of(attention_matmul_bhtd), q_bhtd, k_bhtd, v_bhtd)),
        "attention, jax.nn.dot_product_attention": (L, _bound(_grad_of(attention_dot_product), q_bthd, k_bthd,
                                                               v_bthd)),
        "QKV + output projections": (L, _bound(_grad_of(projections), x, w_qkv, w_o)),
        "MLP (fc, GELU, proj)": (L, _bound(_grad_of(mlp), x, w_fc, w_proj)),
        "LayerNorm": (2 * L + 1, _bound(_grad_of(layer_norm), x, gamma, beta)),
        "tied LM head + cross-entropy": (1, _bound(_grad_of(lm_loss), x, wte)),
        "AdamW update (optax, all params)": (1, lambda: jax.block_until_ready(update(params, opt_state, params))),
    }
    seconds = interleaved_medians({name: thunk for name, (_, thunk) in pieces.items()}, repeats)
    total = seconds["whole train step (pygpt)"]
    print(f"step breakdown, {L}x{C} seq {T} batch {B}, forward + backward per piece, medians of {repeats}")
    print(f"{'piece':<42}{'ms':>9}{'x n':>5}{'ms/step':>9}{'share':>7}")
    for name, (times, _) in pieces.items():
        per_step = seconds[name] * times
        print(f"{name:<42}{seconds[name] * 1e3:>9.2f}{times:>5}{per_step * 1e3:>9.1f}{per_step / total:>7.0%}")
    print("(the three attention rows are alternatives: count one; the shares of the others add up to about the step)")


def build_params(shape: dict, seq: int):
    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig

    return FlaxPyGPTForCausalLM(PyGPTConfig(vocab_size=VOCAB, n_positions=seq, **shape), seed=0).params


def _bound(fn, *args):
    import jax

    return lambda: jax.block_until_ready(fn(*args))
