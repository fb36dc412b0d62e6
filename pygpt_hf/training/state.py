"""The model, the optimizer and the training state (step, params, optimizer state) they evolve.

Optimizer (`make_optimizer`): AdamW, its learning rate warmed up linearly from 0 to `lr` over
`warmup_steps` and then decayed along a cosine to `lr * min_lr_ratio` at `max_steps`; gradients clipped to
a global norm first; weight decay applied only to matrices (ndim >= 2: kernels and the embedding), never
to biases and LayerNorm scales, which decay would merely pull towards zero.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from ..configuration_pygpt import PyGPTConfig
from ..modeling_flax_pygpt import FlaxPyGPTForCausalLM


@flax.struct.dataclass
class TrainState:
    """Everything the jitted step updates. A pytree, so it can be donated, sharded and saved leaf by leaf."""

    step: jax.Array  # int32 scalar: optimizer updates done so far
    params: Any
    opt_state: Any


def model_config(settings, vocab_size: int) -> PyGPTConfig:
    """The architecture from the run's settings (PyGPTConfig holds the architecture and nothing else)."""
    return PyGPTConfig(
        vocab_size=vocab_size,
        n_positions=settings.context_length,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        n_embd=settings.n_embd,
        position_embedding_type=settings.position_embedding,
        resid_pdrop=settings.dropout,
        embd_pdrop=settings.dropout,
        attn_pdrop=settings.dropout,
    )


def build_model(config: PyGPTConfig, seed: int, dtype: str = "float32") -> tuple[FlaxPyGPTForCausalLM, dict]:
    """(model, freshly initialised params). The model object holds no parameters (`_do_init=False`): the
    train state owns the only copy. `dtype` is the compute dtype; the parameters stay float32."""
    from transformers import GenerationConfig

    model = FlaxPyGPTForCausalLM(config, dtype=getattr(jnp, dtype), _do_init=False)
    init = jax.jit(model.init_weights, static_argnums=1)  # one compiled program instead of op by op
    params = init(jax.random.PRNGKey(seed), (1, 1))
    # Saved as generation_config.json. eos must be set (jax 0.10 trap), and max_length fit the context.
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.n_positions, do_sample=True, temperature=0.8, top_k=50)
    return model, params


def decay_mask(params) -> Any:
    """True for the leaves weight decay applies to: matrices only."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_schedule(lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1) -> optax.Schedule:
    """0 -> lr linearly over `warmup_steps`, then cosine down to lr * min_lr_ratio at `max_steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=min(warmup_steps, max_steps),
        decay_steps=max(max_steps, warmup_steps + 1),  # optax counts the warmup inside decay_steps
        end_value=lr * min_lr_ratio,
    )


def make_optimizer(
    lr: float = 3e-3,
    warmup_steps: int = 100,
    max_steps: int = 1000,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.95,
    grad_clip: float = 1.0,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, learning-rate schedule): clip by global norm, then AdamW with decay on matrices only."""
    schedule = make_schedule(lr, warmup_steps, max_steps, min_lr_ratio)
    optimizer = optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.adamw(schedule, b1=beta1, b2=beta2, weight_decay=weight_decay, mask=decay_mask),
    )
    return optimizer, schedule


def optimizer_from_settings(settings) -> tuple[optax.GradientTransformation, optax.Schedule]:
    return make_optimizer(
        lr=settings.lr, warmup_steps=settings.warmup_steps, max_steps=settings.max_steps,
        min_lr_ratio=settings.min_lr_ratio, weight_decay=settings.weight_decay, beta1=settings.beta1,
        beta2=settings.beta2, grad_clip=settings.grad_clip,
    )


def create_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """Step 0. The state takes ownership of `params`: the train step donates them (copy them to keep them)."""
    params = flax.core.unfreeze(params)  # plain dicts: the same tree type everywhere (init, restore, save)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
