"""PyGPT in Flax: a GPT-style decoder as a Hugging Face `FlaxPreTrainedModel`.

Layout follows transformers' FlaxGPT2: linen modules first (attention, MLP, block, the stack of blocks,
the base model, the LM), then the `FlaxPreTrainedModel` wrappers that own parameters, caching and
generation. Notation in shape comments: B batch, T query length, S key length, C = n_embd,
H = n_head, D = C // H, V = vocab_size.

This file travels with saved checkpoints (remote code), so it imports only its sibling
`configuration_pygpt` and installed packages.
"""

import copy
import numbers
import os
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core.frozen_dict import FrozenDict, freeze, unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict
from transformers import GenerationConfig
from transformers.modeling_flax_outputs import FlaxBaseModelOutputWithPast, FlaxCausalLMOutputWithCrossAttentions
from transformers.modeling_flax_utils import ACT2FN, FlaxPreTrainedModel

from .configuration_pygpt import (
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    PyGPTConfig,
    check_attention_mask,
    check_generation_config_file,
    check_generation_length,
    check_position_ids,
    check_position_values,
    check_token_ids,
    check_token_values,
    parse_max_shard_size,
    plan_shards,
    push_folder,
    replaced_folder,
    save_remote_code,
    write_index,
)

# ----------------------------------------------------------------------------------------------------------
# Position encodings


def sinusoidal_positions(position_ids: jnp.ndarray, dim: int) -> jnp.ndarray:
    """Vaswani et al.'s fixed encoding: pe[p, 2i] = sin(p / 10000^(2i/C)), pe[p, 2i+1] = cos(same). (B,T)->(B,T,C)"""
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))  # (C/2,)
    angles = position_ids[..., None].astype(jnp.float32) * inv_freq  # (B, T, C/2)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], dim)


def rotary_cos_sin(position_ids: jnp.ndarray, head_dim: int, theta: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin of the rotary angles, shaped (B, T, 1, D) to broadcast over heads."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))  # (D/2,)
    freqs = position_ids[..., None].astype(jnp.float32) * inv_freq  # (B, T, D/2)
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # (B, T, 1, D)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate each (x_i, x_{i+D/2}) pair by its angle (the GPT-NeoX / Llama "rotate half" convention)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated_half = jnp.concatenate([-x2, x1], axis=-1)
    return (x.astype(jnp.float32) * cos + rotated_half.astype(jnp.float32) * sin).astype(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Modules


def _dense(features: int, config: PyGPTConfig, dtype, param_dtype, std: float | None = None, **kwargs) -> nn.Dense:
    std = config.initializer_range if std is None else std
    return nn.Dense(
        features, dtype=dtype, param_dtype=param_dtype, kernel_init=jax.nn.initializers.normal(std), **kwargs
    )


class FlaxPyGPTAttention(nn.Module):
    """Causal multi-head self-attention with separate Q, K, V and output projections, and a KV cache."""

    config: PyGPTConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        residual_std = cfg.initializer_range / np.sqrt(2 * cfg.n_layer)  # GPT-2's scaled init of residual outputs
        # Q, K and V projections fused into one (C, 3C) matmul, output laid out [q | k | v]: the same math as
        # three projections, with fewer, larger ops and no strided copies (measurably faster on CPU).
        self.qkv_proj = _dense(3 * cfg.n_embd, cfg, self.dtype, self.param_dtype)
        self.o_proj = _dense(cfg.n_embd, cfg, self.dtype, self.param_dtype, std=residual_std)
        self.attn_dropout = nn.Dropout(rate=cfg.attn_pdrop)
        self.resid_dropout = nn.Dropout(rate=cfg.resid_pdrop)

    @nn.compact
    def _update_cache(self, key: jnp.ndarray, value: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """Write this step's keys/values (B, T, H, D) into the cache; return the full cache's keys and values
        (B, H, max_length, D) and where this step started.

        The cache holds (B, H, max_length, D) per layer: batch first so beam search can reorder it, and heads
        before time so that attention reads it as it lies. In the (B, max_length, H, D) layout of the
        projections, XLA copied the whole cache into this layout for every decode step's batched matmuls:
        at 16 rows and 136 columns of the 4 x 128 model, half the step's time (profiled, docs/performance.md).
        Only the step's own T new columns are transposed now.
        """
        key, value = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)  # (B, H, T, D)
        is_initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
        start = cache_index.value
        if is_initialized:  # at init the variables are only being created
            cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, 0, start, 0))
            cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, 0, start, 0))
            cache_index.value = start + key.shape[2]
            key, value = cached_key.value, cached_value.value
        return key, value, start

    def __call__(self, hidden, attention_mask, position_ids, deterministic=True, init_cache=False, output_attentions=False):
        cfg = self.config
        B, T, _ = hidden.shape
        # q, k, v stay in the projection's (B, T, H, D) layout and the two einsums below contract over it.
        # A (B, H, T, D) layout with plain batched matmuls was tried (issue 16): measured in one process on a
        # 2-core AMD EPYC, its train step was 1.18x slower at 4x128 seq 128 and 0.98x at 6x384 seq 256
        # (docs/performance.md), so the einsum form stays.
        q, k, v = (  # each (B, T, H, D)
            x.reshape(B, T, cfg.n_head, cfg.head_dim) for x in jnp.split(self.qkv_proj(hidden), 3, axis=-1)
        )
        if cfg.position_embedding_type == "rope":
            cos, sin = rotary_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        offset = 0  # position of the first query among the keys
        kv = "bshd"  # the layout of k and v: (B, S, H, D) as projected, or (B, H, S, D) as the cache keeps them
        if init_cache or self.has_variable("cache", "cached_key"):
            (k, v, offset), kv = self._update_cache(k, v), "bhsd"  # k, v: (B, H, S=max_length, D)
        S = k.shape[kv.index("s")]

        # Query t may see key s only if s <= t (causal) and s is not padding.
        query_pos = offset + jnp.arange(T)[:, None]  # (T, 1)
        allowed = (jnp.arange(S)[None, :] <= query_pos)[None, None]  # (1, 1, T, S)
        if attention_mask is not None:
            allowed = allowed & (attention_mask[:, None, None, :S] > 0)  # (B, 1, T, S)

        q = q.astype(jnp.float32) / np.sqrt(cfg.head_dim)  # scale the (T, D) queries, not the (T, S) scores
        scores = jnp.einsum(f"bthd,{kv}->bhts", q, k.astype(jnp.float32))  # (B, H, T, S)
        scores = scores + jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)  # not -inf: padded rows stay finite
        probs = jax.nn.softmax(scores, axis=-1)  # (B, H, T, S), float32
        probs = self.attn_dropout(probs, deterministic=deterministic).astype(self.dtype)
        out = jnp.einsum(f"bhts,{kv}->bthd", probs, v.astype(self.dtype)).reshape(B, T, cfg.n_embd)
        out = self.resid_dropout(self.o_proj(out), deterministic=deterministic)
        return (out, probs) if output_attentions else (out, None)


class FlaxPyGPTMLP(nn.Module):
    config: PyGPTConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        if cfg.activation_function not in ACT2FN:
            raise ValueError(
                f"PyGPTConfig.activation_function {cfg.activation_function!r} is not one of {sorted(ACT2FN)}"
            )
        self.c_fc = _dense(cfg.mlp_width, cfg, self.dtype, self.param_dtype)
        self.c_proj = _dense(cfg.n_embd, cfg, self.dtype, self.param_dtype, std=cfg.initializer_range / np.sqrt(2 * cfg.n_layer))
        self.act = ACT2FN[cfg.activation_function]
        self.dropout = nn.Dropout(rate=cfg.resid_pdrop)

    def __call__(self, hidden, deterministic=True):
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden))), deterministic=deterministic)


class FlaxPyGPTBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    config: PyGPTConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        eps, dt, pdt = self.config.layer_norm_epsilon, self.dtype, self.param_dtype
        self.ln_1 = nn.LayerNorm(epsilon=eps, dtype=dt, param_dtype=pdt)
        self.attn = FlaxPyGPTAttention(self.config, dtype=dt, param_dtype=pdt)
        self.ln_2 = nn.LayerNorm(epsilon=eps, dtype=dt, param_dtype=pdt)
        self.mlp = FlaxPyGPTMLP(self.config, dtype=dt, param_dtype=pdt)

    def __call__(self, x, attention_mask, position_ids, deterministic=True, init_cache=False, output_attentions=False):
        attn_out, attn_probs = self.attn(
            self.ln_1(x), attention_mask, position_ids, deterministic, init_cache, output_attentions
        )
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x), deterministic=deterministic)
        return x, attn_probs


class FlaxPyGPTBlockCollection(nn.Module):
    """The stack of blocks, named h/0, h/1, ... like GPT-2 (and the PyTorch twin's `h.0`, `h.1`, ...)."""

    config: PyGPTConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.blocks = [
            FlaxPyGPTBlock(self.config, dtype=self.dtype, param_dtype=self.param_dtype, name=str(i))
            for i in range(self.config.n_layer)
        ]

    def __call__(self, x, attention_mask, position_ids, deterministic=True, init_cache=False,
                 output_attentions=False, output_hidden_states=False):
        all_hidden, all_attn = [], []
        for block in self.blocks:
            if output_hidden_states:
                all_hidden.append(x)
            x, attn = block(x, attention_mask, position_ids, deterministic, init_cache, output_attentions)
            if output_attentions:
                all_attn.append(attn)
        return x, all_hidden, all_attn


class FlaxPyGPTModule(nn.Module):
    """Token embedding (+ positions) -> blocks -> final LayerNorm. Returns the last hidden states (B, T, C)."""

    config: PyGPTConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        init = jax.nn.initializers.normal(cfg.initializer_range)
        self.wte = nn.Embed(cfg.vocab_size, cfg.n_embd, embedding_init=init, dtype=self.dtype, param_dtype=self.param_dtype)
        if cfg.position_embedding_type == "learned":
            self.wpe = nn.Embed(cfg.n_positions, cfg.n_embd, embedding_init=init, dtype=self.dtype, param_dtype=self.param_dtype)
        self.dropout = nn.Dropout(rate=cfg.embd_pdrop)
        self.h = FlaxPyGPTBlockCollection(cfg, dtype=self.dtype, param_dtype=self.param_dtype)
        self.ln_f = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=self.dtype, param_dtype=self.param_dtype)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic=True, init_cache=False,
                 output_attentions=False, output_hidden_states=False, return_dict=True):
        x = self.wte(input_ids.astype("i4"))  # (B, T, C)
        if self.config.position_embedding_type == "sinusoidal":
            # Scaled to the token embeddings' init scale: at amplitude 1 the fixed waves drown the N(0, 0.02)
            # token signal and a small model stalls at the unigram loss (5.37 vs 4.21 eval loss after 150
            # steps on tinyshakespeare, 2x64; learned positions: 4.28).
            pe = sinusoidal_positions(position_ids, self.config.n_embd) * self.config.initializer_range
            x = x + pe.astype(self.dtype)
        elif self.config.position_embedding_type == "learned":
            x = x + self.wpe(position_ids.astype("i4"))
        x = self.dropout(x, deterministic=deterministic)
        x, all_hidden, all_attn = self.h(
            x, attention_mask, position_ids, deterministic, init_cache, output_attentions, output_hidden_states
        )
        x = self.ln_f(x)
        hidden_states = tuple(all_hidden) + (x,) if output_hidden_states else None
        attentions = tuple(all_attn) if output_attentions else None
        if not return_dict:
            return tuple(v for v in (x, hidden_states, attentions) if v is not None)
        return FlaxBaseModelOutputWithPast(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions)


class FlaxPyGPTForCausalLMModule(nn.Module):
    """The base model plus the LM head: hidden states (B, T, C) -> next-token logits (B, T, V)."""

    config: PyGPTConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.transformer = FlaxPyGPTModule(self.config, dtype=self.dtype, param_dtype=self.param_dtype)
        if not self.config.tie_word_embeddings:
            self.lm_head = _dense(self.config.vocab_size, self.config, self.dtype, self.param_dtype, use_bias=False)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic=True, init_cache=False,
                 output_attentions=False, output_hidden_states=False, return_dict=True):
        outputs = self.transformer(
            input_ids, attention_mask, position_ids, deterministic, init_cache,
            output_attentions, output_hidden_states, return_dict,
        )
        hidden = outputs[0]
        if self.config.tie_word_embeddings:  # the embedding matrix doubles as the output layer: (B,T,C) @ (C,V)
            embedding = self.transformer.variables["params"]["wte"]["embedding"]
            logits = jnp.einsum("btc,vc->btv", hidden, embedding.astype(self.dtype))
        else:
            logits = self.lm_head(hidden)
        if not return_dict:
            return (logits,) + tuple(outputs[1:])
        return FlaxCausalLMOutputWithCrossAttentions(
            logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# ----------------------------------------------------------------------------------------------------------
# Hugging Face wrappers


def flax_params_to_pytorch_layout(params) -> dict[str, np.ndarray]:
    """Name and lay out Flax params as the PyTorch twin's state dict (what `load_state_dict` expects).

    Dense kernels are (in, out) in Flax and nn.Linear weights are (out, in); LayerNorm `scale` and
    Embed `embedding` are both called `weight` in PyTorch.
    """
    state = {}
    for path, value in flatten_dict(unfreeze(params)).items():
        *prefix, leaf = path
        value = np.asarray(value)
        if leaf == "kernel":
            leaf, value = "weight", value.T
        elif leaf in ("scale", "embedding"):
            leaf = "weight"
        state[".".join((*prefix, leaf))] = np.ascontiguousarray(value)
    return state


def _cache_length(cache: dict) -> jnp.ndarray:
    """How many positions a KV cache already holds (every layer's `cache_index` agrees)."""
    return next(value for path, value in flatten_dict(unfreeze(cache)).items() if path[-1] == "cache_index")


def _cache_shape(cache: dict) -> tuple[int, int]:
    """(batch, max_length) a KV cache was allocated for (its keys are (B, H, max_length, D))."""
    key = next(value for path, value in flatten_dict(unfreeze(cache)).items() if path[-1] == "cached_key")
    return int(key.shape[0]), int(key.shape[2])


def _is_concrete(x) -> bool:
    """True outside a jax transformation: the values can be read (inside `jax.jit` they are tracers)."""
    return not isinstance(x, jax.core.Tracer)


def _as_array(x):
    """Lists, tuples and numpy arrays as numpy; jax arrays and tracers as they are (no copy, no device sync)."""
    return x if isinstance(x, (jax.Array, jax.core.Tracer)) else np.asarray(x)


def _dtype_of(x) -> tuple[str, bool]:
    dtype = np.dtype(x.dtype)
    return str(dtype), dtype.kind in "iu"


def _min_max(x) -> tuple[int, int]:
    x = np.asarray(x)
    return int(x.min()), int(x.max())


# Generation settings transformers 4.57's Flax `generate` reads (min_new_tokens and max_length we translate,
# use_cache changes nothing: Flax always decodes with the cache). Any other setting is refused rather than
# silently ignored; the PyTorch twin's `generate` honours them all.
FLAX_GENERATION_FIELDS = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "max_length", "max_new_tokens",
    "min_length", "min_new_tokens", "do_sample", "num_beams", "temperature", "top_k", "top_p",
    "no_repeat_ngram_size", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
    "forced_eos_token_id", "forced_decoder_ids", "length_penalty", "early_stopping", "num_return_sequences",
    "use_cache", "transformers_version", "_from_model_config",
})


def validate_flax_inputs(config: PyGPTConfig, input_ids, attention_mask=None, position_ids=None,
                         past_key_values=None):
    """Check a forward pass's inputs against the shared contract (configuration_pygpt); return the mask to use.

    Shapes and dtypes are checked always, at trace time, so jitted code pays nothing. Values (ids in the
    vocabulary, positions in the context, how full the cache is) are checked only where they are concrete:
    inside your own `jax.jit` an out-of-range id is clamped by the embedding lookup, so check ids before.
    """
    past, capacity = 0, None
    if past_key_values is not None:
        cache_batch, capacity = _cache_shape(past_key_values)
        index = _cache_length(past_key_values)
        past = int(index) if _is_concrete(index) else None  # traced inside generate's decoding loop
    check_token_ids(input_ids.shape, *_dtype_of(input_ids), config.n_positions, past or 0, capacity)
    B, T = input_ids.shape
    if past_key_values is not None and cache_batch != B:
        raise ValueError(f"past_key_values holds a batch of {cache_batch} (init_cache), input_ids a batch of {B}")
    if _is_concrete(input_ids):
        check_token_values(*_min_max(input_ids), config.vocab_size)
    if position_ids is not None:
        check_position_ids(position_ids.shape, *_dtype_of(position_ids), B, T)
        if _is_concrete(position_ids):
            check_position_values(*_min_max(position_ids), config.n_positions)
    if attention_mask is None:
        return None
    if past is None:  # the cache's fill is traced: only the full-cache mask (as generate passes it) can be checked
        if tuple(attention_mask.shape) != (B, capacity):
            raise ValueError(f"attention_mask must have shape (batch, max_length) = {(B, capacity)} with a traced "
                             f"cache, got {tuple(attention_mask.shape)}")
        return attention_mask
    check_attention_mask(attention_mask.shape, B, past, T, capacity)
    if capacity is not None and attention_mask.shape[1] < capacity:  # (B, past + T): the future slots stay masked
        attention_mask = jnp.pad(attention_mask, ((0, 0), (0, capacity - attention_mask.shape[1])))
    return attention_mask


# What push_to_hub=True passes on to the Hub (transformers' `_upload_modified_files`, plus the repo's name).
HUB_KWARGS = ("repo_id", "private", "commit_message", "create_pr", "revision", "commit_description")


class FlaxPyGPTPreTrainedModel(FlaxPreTrainedModel):
    """Owns parameters, the KV cache and (de)serialization; subclasses pick the linen module."""

    config_class = PyGPTConfig
    base_model_prefix = "transformer"
    module_class: nn.Module = None
    # pygpt_hf installs its model-card writer here, so `push_to_hub` uploads the card training pushes too;
    # where this file travels alone (remote code) it stays None and transformers' card is pushed.
    push_card_writer = None

    def __init__(self, config: PyGPTConfig, input_shape: tuple = (1, 1), seed: int = 0,
                 dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32, _do_init: bool = True, **kwargs):
        module = self.module_class(config=config, dtype=dtype, param_dtype=param_dtype, **kwargs)
        super().__init__(config, module, input_shape=input_shape, seed=seed, dtype=dtype, _do_init=_do_init)

    def init_weights(self, rng: jax.Array, input_shape: tuple, params: FrozenDict | None = None) -> FrozenDict:
        input_ids = jnp.zeros(input_shape, dtype="i4")
        position_ids = jnp.broadcast_to(jnp.arange(input_shape[-1]), input_shape)
        params_rng, dropout_rng = jax.random.split(rng)
        init = jax.jit(partial(self.module.init, return_dict=False))  # one compiled program, not ~100 small ones
        random_params = init({"params": params_rng, "dropout": dropout_rng}, input_ids, jnp.ones_like(input_ids),
                             position_ids)["params"]
        if params is None:
            return random_params
        # Loading a checkpoint that lacks some weights (e.g. a base model into the LM): fill those from init.
        random_params, params = flatten_dict(unfreeze(random_params)), flatten_dict(unfreeze(params))
        for missing_key in self._missing_keys:
            params[missing_key] = random_params[missing_key]
        self._missing_keys = set()
        return freeze(unflatten_dict(params))

    def init_cache(self, batch_size: int, max_length: int) -> dict:
        """An empty KV cache for decoding up to `max_length` tokens (zeros of shape (B, H, max_length, D)).

        `max_length` may exceed `n_positions` (a server's rolling cache, with explicit `position_ids`); a forward
        pass still refuses more than `n_positions` tokens of context (see `validate_flax_inputs`).
        """
        if not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
            raise ValueError(f"init_cache: batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(max_length, numbers.Integral) or max_length <= 0:
            raise ValueError(f"init_cache: max_length must be a positive integer, got {max_length!r}")
        input_ids = jnp.ones((batch_size, max_length), dtype="i4")
        position_ids = jnp.broadcast_to(jnp.arange(max_length), input_ids.shape)
        init = partial(self.module.init, return_dict=False, init_cache=True)
        cache_shapes = jax.eval_shape(init, jax.random.PRNGKey(0), input_ids, None, position_ids)["cache"]
        return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), unfreeze(cache_shapes))  # no compute

    def __call__(self, input_ids, attention_mask=None, position_ids=None, params: dict | None = None,
                 past_key_values: dict | None = None, dropout_rng: jax.Array | None = None, train: bool = False,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None):
        cfg = self.config
        output_attentions = output_attentions if output_attentions is not None else cfg.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else cfg.output_hidden_states
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        input_ids = _as_array(input_ids)
        attention_mask = None if attention_mask is None else _as_array(attention_mask)
        position_ids = None if position_ids is None else _as_array(position_ids)
        attention_mask = validate_flax_inputs(cfg, input_ids, attention_mask, position_ids, past_key_values)
        if train and dropout_rng is None and max(cfg.embd_pdrop, cfg.attn_pdrop, cfg.resid_pdrop) > 0:
            raise ValueError("train=True applies dropout (PyGPTConfig.*_pdrop > 0) and needs dropout_rng, a PRNG key")
        input_ids = jnp.asarray(input_ids, dtype="i4")
        B, T = input_ids.shape
        if position_ids is None:  # 0, 1, 2, ... continuing after what the cache already holds
            start = _cache_length(past_key_values) if past_key_values is not None else 0
            position_ids = jnp.broadcast_to(start + jnp.arange(T), (B, T))
        position_ids = jnp.broadcast_to(jnp.asarray(position_ids), (B, T))
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask, dtype="i4")

        variables = {"params": params or self.params}
        if past_key_values is not None:  # the cache is a mutable collection; apply returns its new value
            variables["cache"] = past_key_values
        outputs = self.module.apply(
            variables, input_ids, attention_mask, jnp.asarray(position_ids, dtype="i4"), not train, False,
            output_attentions, output_hidden_states, return_dict,
            rngs={"dropout": dropout_rng} if dropout_rng is not None else {},
            mutable=["cache"] if past_key_values is not None else False,
        )
        if past_key_values is None:
            return outputs
        outputs, new_cache = outputs
        if return_dict:
            outputs["past_key_values"] = unfreeze(new_cache["cache"])
            return outputs
        return outputs[:1] + (unfreeze(new_cache["cache"]),) + outputs[1:]

    def save_pretrained(self, save_directory, params=None, push_to_hub: bool = False, max_shard_size="10GB",
                        token=None, safe_serialization: bool = True, **kwargs):
        """Save config, generation config and weights, with the weights in the PyTorch layout.

        One `model.safetensors` (metadata format "pt") serves both frameworks: the PyTorch twin loads it
        natively (transformers 4.57 and 5.x) and Flax loads it through transformers' PT->Flax path. Weights
        above `max_shard_size` are split into `model-00001-of-0000N.safetensors` shards with transformers'
        `model.safetensors.index.json`, which the twin loads natively and `from_pretrained` here shard by
        shard. The folder is replaced as a whole (`replaced_folder`): other files in it are kept, old weights
        files are not. The travelling source files are copied beside the weights, so the folder also loads as
        remote code. `push_to_hub` takes repo_id, commit_message, private, create_pr, revision and
        commit_description; any other keyword is an error.
        """
        from safetensors.numpy import save_file

        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        if kwargs:
            raise TypeError(f"save_pretrained got unexpected keyword arguments {sorted(kwargs)}")
        if hub_kwargs and not push_to_hub:
            raise ValueError(f"save_pretrained: {sorted(hub_kwargs)} only apply with push_to_hub=True")
        if not safe_serialization:
            raise ValueError("save_pretrained: PyGPT checkpoints are always model.safetensors; "
                             "safe_serialization=False (flax_model.msgpack) is not supported")
        limit = parse_max_shard_size(max_shard_size)
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained: {save_directory!s} is a file, not a folder")
        state = flax_params_to_pytorch_layout(params if params is not None else self.params)
        shards, index = plan_shards({name: value.nbytes for name, value in state.items()}, limit)

        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            repo_id = self._create_repo(repo_id, private=hub_kwargs.pop("private", None), token=token)
            files_timestamps = self._get_files_timestamps(save_directory) if os.path.isdir(save_directory) else {}

        self.config.architectures = [self.__class__.__name__[4:]]  # the PyTorch twin's class name
        with replaced_folder(save_directory) as staging:
            self.config.save_pretrained(staging)
            if self.can_generate():
                self.generation_config.save_pretrained(staging)
            for filename, names in shards.items():
                save_file({name: state[name] for name in names}, os.path.join(staging, filename),
                          metadata={"format": "pt"})
            if index is not None:
                index["metadata"]["total_parameters"] = sum(int(state[name].size) for name in state)
                write_index(os.path.join(staging, WEIGHTS_INDEX_NAME), index)
            save_remote_code(staging)

        if push_to_hub:
            self._upload_modified_files(save_directory, repo_id, files_timestamps, token=token, **hub_kwargs)

    def _upload_modified_files(self, working_dir, repo_id, files_timestamps, commit_message=None, token=None,
                               create_pr=False, revision=None, commit_description=None):
        """transformers' upload of the new or modified files, in a commit that also deletes stale weights."""
        if self.push_card_writer is not None:
            self.push_card_writer(working_dir, repo_id)  # README.md into the folder about to be uploaded
        return push_folder(working_dir, repo_id, files_timestamps, commit_message=commit_message or "Upload model",
                           token=token, create_pr=create_pr, revision=revision, commit_description=commit_description)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As transformers' `from_pretrained`, plus sharded safetensors and a clear error for damaged weights.

        transformers 4.57's Flax loader raises NotImplementedError for `model.safetensors.index.json`; such a
        checkpoint (a local folder or a Hub repo) is read here, shard by shard (`load_sharded_params`).
        With `_do_init=False` it returns `(model, params)` as transformers does. Its PT->Flax loader reads
        `model.params` for the tree's names and shapes, which a model without params cannot give, so the
        checkpoint is loaded normally and its params handed out beside a model that holds none.
        """
        from safetensors import SafetensorError

        do_init = kwargs.pop("_do_init", True)
        index_file = _sharded_index_file(pretrained_model_name_or_path, kwargs)
        if index_file is not None:
            model, params = _from_sharded(cls, pretrained_model_name_or_path, index_file, args, kwargs)
            if do_init:
                model._is_initialized = True  # what __init__ sets with _do_init=True; params are the loaded ones
                model.params = params
                return model
            return model, params
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as err:
            raise OSError(
                f"The weights file (model.safetensors) of {pretrained_model_name_or_path!s} is corrupted or "
                f"truncated and cannot be read: {err}. Re-download or re-save the checkpoint."
            ) from err
        check_generation_config_file(pretrained_model_name_or_path, kwargs)
        if do_init:
            return model
        empty = cls(model.config, input_shape=model.input_shape, dtype=model.dtype,
                    param_dtype=model.module.param_dtype, _do_init=False)
        empty.generation_config = model.generation_config
        return empty, model.params


# ----------------------------------------------------------------------------------------------------------
# Sharded safetensors for Flax: transformers 4.57 reads them only in PyTorch, so the index is handled here,
# without torch, one tensor at a time (peak host memory: the model plus one tensor, never a second copy).

# transformers' cached_file keywords that from_pretrained passes on (the rest configure the config or model)
HUB_FILE_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def _hub_file(name_or_path, filename: str, kwargs: dict, required: bool) -> str | None:
    """The local path of `filename` in a folder or a Hub repo (downloaded, `revision` respected), or None."""
    from transformers.utils.hub import cached_file

    hub = {k: kwargs[k] for k in HUB_FILE_KWARGS if kwargs.get(k) is not None}
    return cached_file(str(name_or_path), filename, _commit_hash=kwargs.get("_commit_hash"),
                       _raise_exceptions_for_missing_entries=required,
                       _raise_exceptions_for_gated_repo=required, **hub)


def _sharded_index_file(name_or_path, kwargs: dict) -> str | None:
    """The index of a sharded checkpoint, or None where transformers' loader applies (or raises its error).

    A single `model.safetensors` (or `flax_model.msgpack`) wins over an index, as in transformers.
    """
    if name_or_path is None or kwargs.get("from_pt"):
        return None
    folder = os.path.join(str(name_or_path), kwargs.get("subfolder") or "")
    if os.path.isdir(str(name_or_path)):
        if any(os.path.isfile(os.path.join(folder, n)) for n in (WEIGHTS_NAME, "flax_model.msgpack")):
            return None
        index = os.path.join(folder, WEIGHTS_INDEX_NAME)
        return index if os.path.isfile(index) else None
    if os.path.isfile(str(name_or_path)):
        return None
    try:
        if _hub_file(name_or_path, WEIGHTS_NAME, kwargs, required=False) is not None:
            return None
        return _hub_file(name_or_path, WEIGHTS_INDEX_NAME, kwargs, required=False)
    except OSError:
        return None  # transformers' loader tries again and words the error


def read_shard_index(index_file: str) -> dict[str, str]:
    """{tensor name: shard file} from a `model.safetensors.index.json`, or an error naming the file."""
    import json

    try:
        with open(index_file, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map or \
                not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError("weight_map must map tensor names to shard file names")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise OSError(f"The checkpoint index {index_file} is corrupted and cannot be read ({err!r}); "
                      f"re-download or re-save the checkpoint") from err
    return weight_map


def _pytorch_names(shape_tree) -> dict[str, tuple[tuple, bool]]:
    """{PyTorch name: (Flax path, transposed)}: `flax_params_to_pytorch_layout`'s naming, inverted."""
    names = {}
    for path in flatten_dict(unfreeze(shape_tree)):
        *prefix, leaf = path
        torch_leaf = "weight" if leaf in ("kernel", "scale", "embedding") else leaf
        names[".".join((*prefix, torch_leaf))] = (path, leaf == "kernel")
    return names


def load_sharded_params(model, shard_files: dict[str, str], weight_map: dict[str, str],
                        ignore_mismatched_sizes: bool = False) -> tuple[dict, set]:
    """The Flax params of `model` (built with `_do_init=False`) read from PyTorch-layout shards.

    `shard_files` maps each shard's name in the index to its local path. Returns (flat params by Flax path,
    missing Flax paths). A base-model checkpoint loads into the LM and the other way round, as in transformers.
    """
    from safetensors import SafetensorError, safe_open

    prefix = model.base_model_prefix + "."
    names = _pytorch_names(model.params_shape_tree)
    shapes = flatten_dict(unfreeze(model.params_shape_tree))
    params, unexpected = {}, []
    for shard, path in shard_files.items():
        expected = [name for name, file in weight_map.items() if file == shard]
        try:
            with safe_open(path, framework="numpy") as f:
                if (f.metadata() or {}).get("format") != "pt":
                    raise OSError(f"The shard {path} has no metadata format 'pt' (save it with save_pretrained)")
                present = set(f.keys())
                absent = [name for name in expected if name not in present]
                if absent:
                    raise OSError(f"The shard {path} lacks {absent[:3]} that the index places in it; "
                                  f"re-download or re-save the checkpoint")
                for name in expected:
                    target = names.get(name) or names.get(prefix + name) or \
                        (names.get(name[len(prefix):]) if name.startswith(prefix) else None)
                    if target is None:
                        unexpected.append(name)
                        continue
                    flax_path, transposed = target
                    value = f.get_tensor(name)
                    value = value.T if transposed else value
                    if value.shape != tuple(shapes[flax_path].shape):
                        if ignore_mismatched_sizes:
                            continue
                        raise ValueError(f"Trying to load {name} from {path}: the checkpoint has shape {value.shape}, "
                                         f"the model {tuple(shapes[flax_path].shape)}; pass "
                                         f"ignore_mismatched_sizes=True to initialise it randomly instead")
                    params[flax_path] = jnp.asarray(value)
        except SafetensorError as err:
            raise OSError(f"The shard {path} is corrupted or truncated and cannot be read: {err}. "
                          f"Re-download or re-save the checkpoint.") from err
    if unexpected:
        from transformers.utils import logging

        logging.get_logger(__name__).warning(
            f"Some weights of the checkpoint were not used by {type(model).__name__}: {sorted(unexpected)}")
    return params, set(shapes) - set(params)


def _from_sharded(cls, name_or_path, index_file: str, model_args: tuple, kwargs: dict):
    """(model built with `_do_init=False`, params) from a sharded checkpoint; `from_pretrained`'s keywords."""
    kwargs = dict(kwargs)
    dtype = model_args[0] if model_args else kwargs.pop("dtype", jnp.float32)
    model_args = model_args[1:]
    config = kwargs.pop("config", None)
    ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
    hub = {k: kwargs.pop(k) for k in (*HUB_FILE_KWARGS, "_commit_hash") if k in kwargs}
    for name in ("trust_remote_code", "resume_download", "adapter_kwargs", "_from_auto", "_from_pipeline"):
        kwargs.pop(name, None)  # as transformers: meaningful for Auto classes and pipelines only
    if not isinstance(config, PyGPTConfig):
        config, model_kwargs = cls.config_class.from_pretrained(
            config if config is not None else name_or_path, return_unused_kwargs=True, **hub, **kwargs)
    else:
        model_kwargs = kwargs
    model = cls(config, *model_args, dtype=dtype, _do_init=False, **model_kwargs)

    weight_map = read_shard_index(index_file)
    shard_files = {}
    for shard in sorted(set(weight_map.values())):
        local = os.path.join(os.path.dirname(index_file), shard)
        if os.path.isdir(str(name_or_path)):
            if not os.path.isfile(local):
                raise OSError(f"The shard {local} is missing: {index_file} lists it; re-download or re-save "
                              f"the checkpoint")
        else:
            local = _hub_file(name_or_path, shard, hub, required=True)
        shard_files[shard] = local
    params, missing = load_sharded_params(model, shard_files, weight_map, ignore_mismatched_sizes)
    if missing:  # e.g. an LM head the checkpoint lacks: random, as transformers does (and says)
        from transformers.utils import logging

        logging.get_logger(__name__).warning(
            f"Some weights of {cls.__name__} were not in the checkpoint {name_or_path} and are newly "
            f"initialized: {sorted('.'.join(p) for p in missing)}")
        random = flatten_dict(unfreeze(model.init_weights(model.key, model.input_shape)))
        params.update({path: random[path] for path in missing})
    if model.can_generate():
        try:
            model.generation_config = GenerationConfig.from_pretrained(name_or_path, **hub)
        except OSError:
            model.generation_config = GenerationConfig.from_model_config(config)
    check_generation_config_file(name_or_path, hub)
    return model, freeze(unflatten_dict(params))


class FlaxPyGPTModel(FlaxPyGPTPreTrainedModel):
    """The bare decoder: returns hidden states (B, T, C)."""

    module_class = FlaxPyGPTModule


class FlaxPyGPTForCausalLM(FlaxPyGPTPreTrainedModel):
    """The decoder with its LM head: returns next-token logits (B, T, V); supports `generate()`."""

    module_class = FlaxPyGPTForCausalLMModule

    def generate(self, input_ids, generation_config: GenerationConfig | None = None, prng_key=None,
                 trace: bool = True, params=None, logits_processor=None, **kwargs):
        """transformers' Flax `generate`, with the inputs and lengths checked first (the twin's messages).

        `max_length` means the total length, as in PyTorch (Flax alone reads an explicit 20 as 20 new
        tokens); `min_new_tokens` works (Flax alone ignores it); settings the Flax generator would ignore
        (e.g. repetition_penalty) are refused. Under your own `jax.jit` the ids are tracers and only their
        shape is checked: an id outside the vocabulary is then clamped by the embedding lookup.
        """
        input_ids = _as_array(input_ids)
        dtype, is_integer = _dtype_of(input_ids)
        check_token_ids(input_ids.shape, dtype, is_integer, self.config.n_positions)
        if _is_concrete(input_ids):
            check_token_values(*_min_max(input_ids), self.config.vocab_size)
        B, T = input_ids.shape
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = _as_array(kwargs["attention_mask"])
            check_attention_mask(kwargs["attention_mask"].shape, B, 0, T)

        if kwargs.get("max_new_tokens") is not None:  # before GenerationConfig.update, which words it otherwise
            check_generation_length(T, self.config.n_positions, kwargs["max_new_tokens"])
        settings = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        settings.update(**{k: v for k, v in kwargs.items() if hasattr(settings, k)})
        defaults = GenerationConfig().to_dict()
        ignored = {k: v for k, v in settings.to_dict().items()
                   if k not in FLAX_GENERATION_FIELDS and k in defaults and v != defaults[k]}
        if settings.num_beams == 1 and settings.num_return_sequences != 1:
            ignored["num_return_sequences"] = settings.num_return_sequences
        if ignored:
            raise ValueError(f"generate: {ignored} would be ignored by transformers' Flax generate; drop them "
                             f"(or use the PyTorch twin, AutoModelForCausalLM, which honours them)")
        max_length = settings.max_length if "max_length" in kwargs or settings.max_length != 20 else None
        total = check_generation_length(T, self.config.n_positions, settings.max_new_tokens, max_length)
        kwargs.pop("max_length", None)
        kwargs["max_new_tokens"] = total - T  # one meaning for both frameworks
        min_new_tokens = kwargs.pop("min_new_tokens", settings.min_new_tokens)
        if min_new_tokens:
            kwargs["min_length"] = T + min_new_tokens
        return super().generate(input_ids, generation_config, prng_key=prng_key, trace=trace, params=params,
                                logits_processor=logits_processor, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, max_length: int, attention_mask=None):
        """Allocate the KV cache for `max_length` tokens and the positions of the prompt.

        With a (left-)padded prompt, positions count real tokens only, so padding does not shift them.
        """
        if max_length > self.config.n_positions:
            raise ValueError(
                f"generation max_length ({max_length}) exceeds the model's context, PyGPTConfig.n_positions "
                f"({self.config.n_positions}); ask for fewer new tokens or a shorter prompt"
            )
        B, T = input_ids.shape
        past_key_values = self.init_cache(B, max_length)
        extended_mask = jnp.ones((B, max_length), dtype="i4")  # future slots: real tokens to come
        if attention_mask is not None:
            position_ids = jnp.maximum(attention_mask.cumsum(axis=-1) - 1, 0)
            extended_mask = jax.lax.dynamic_update_slice(extended_mask, attention_mask.astype("i4"), (0, 0))
        else:
            position_ids = jnp.broadcast_to(jnp.arange(T, dtype="i4")[None, :], (B, T))
        return {"past_key_values": past_key_values, "attention_mask": extended_mask, "position_ids": position_ids}

    def update_inputs_for_generation(self, model_outputs, model_kwargs):
        model_kwargs["past_key_values"] = model_outputs.past_key_values
        model_kwargs["position_ids"] = model_kwargs["position_ids"][:, -1:] + 1
        return model_kwargs
