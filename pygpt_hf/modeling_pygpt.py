"""PyGPT in PyTorch: the twin of the Flax model, for `AutoModelForCausalLM` and `pipeline("text-generation")`.

Same architecture and parameter names as `modeling_flax_pygpt.py`, so one `model.safetensors` serves both
frameworks and the logits agree to float32 rounding. This file travels with every checkpoint (remote code)
and runs unchanged on transformers 4.57 and 5.x; the one place where they differ is marked below.

Shapes: B batch, T new tokens, S = past + T key positions, C = n_embd, H = n_head, D = C // H.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_pygpt import (
    PyGPTConfig,
    check_attention_mask,
    check_generation_config_file,
    check_generation_length,
    check_length,
    check_position_ids,
    check_position_values,
    check_token_ids,
    check_token_values,
    damaged_weights_error,
    parse_max_shard_size,
    push_folder,
    replaced_folder,
    save_remote_code,
)

# Compatibility, transformers 4.57 vs 5.x (the only branch): 5.x renamed the KV-cache argument of `forward`
# and the field of the output classes from `past_key_values` to `cache`, and its `generate` passes `cache=`.
# `forward` accepts both names; outputs are built with the field name the installed version declares.
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def sinusoidal_positions(position_ids: torch.Tensor, n_embd: int) -> torch.Tensor:
    """Vaswani's fixed encoding, interleaved: pe[p, 2i] = sin(p / 10000^(2i/C)), pe[p, 2i+1] = cos(...)."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, n_embd, 2, dtype=torch.float32, device=position_ids.device) / n_embd))
    angles = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, T, C/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, T, C): sin, cos, sin, cos, ...


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (B, 1, T, D), for the half-split (GPT-NeoX / Llama) convention."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim))
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, D), broadcast over heads
    return emb.cos(), emb.sin()


def _dtype_of(x: torch.Tensor) -> tuple[str, bool]:
    """The dtype's name as numpy spells it ("float32", not "torch.float32"), so messages match the Flax model's."""
    is_integer = not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
    return str(x.dtype).removeprefix("torch."), is_integer


def _values_readable() -> bool:
    """Reading values (min/max) breaks a `torch.compile` graph: skip value checks while compiling."""
    return not torch.compiler.is_compiling()


def _min_max(x: torch.Tensor) -> tuple[int, int]:
    return int(x.min()), int(x.max())


def validate_torch_inputs(config: PyGPTConfig, input_ids, inputs_embeds, attention_mask, position_ids,
                          past: int) -> tuple[int, int]:
    """The shared input contract (configuration_pygpt), as the Flax model applies it; returns (B, T)."""
    if input_ids is not None:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        check_token_ids(input_ids.shape, *_dtype_of(input_ids), config.n_positions, past)
        if _values_readable():
            check_token_values(*_min_max(input_ids), config.vocab_size)
        B, T = input_ids.shape
    else:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.n_embd or 0 in inputs_embeds.shape:
            raise ValueError(f"inputs_embeds must have shape (batch, sequence, n_embd={config.n_embd}) with at least "
                             f"one token, got {tuple(inputs_embeds.shape)}")
        B, T, _ = inputs_embeds.shape
        check_length(T, config.n_positions, past, name="inputs_embeds")
    if position_ids is not None:
        check_position_ids(position_ids.shape, *_dtype_of(position_ids), B, T)
        if _values_readable():
            check_position_values(*_min_max(position_ids), config.n_positions)
    if attention_mask is not None:
        check_attention_mask(attention_mask.shape, B, past, T)
    return B, T


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class PyGPTAttention(nn.Module):
    """Causal multi-head self-attention with a key/value cache."""

    def __init__(self, config: PyGPTConfig, layer_idx: int):
        super().__init__()
        self.n_head, self.head_dim, self.layer_idx = config.n_head, config.head_dim, layer_idx
        self.qkv_proj = nn.Linear(config.n_embd, 3 * config.n_embd)  # Q, K, V fused, output laid out [q | k | v]
        self.o_proj = nn.Linear(config.n_embd, config.n_embd)
        self.o_proj.is_residual_projection = True  # GPT-2's scaled init, see _init_weights
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        mask: torch.Tensor | None,  # (B, 1, T, S) bool, True where a query may look; None: causal, no past
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        cache: Cache | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        # (B, T, C) -> (B, H, T, D)
        q, k, v = (
            t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in self.qkv_proj(x).split(C, dim=-1)
        )
        if rotary is not None:
            cos, sin = rotary
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # append, then (B, H, S, D) with the past in front

        # masked scores get the most negative float, not -inf, so a row with nothing to see (a left-padding
        # query) stays finite
        if output_attentions:  # the probabilities are wanted: scores and softmax in float32, spelled out
            if mask is None:
                mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
            scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
            scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
            probs = F.softmax(scores, dim=-1)
            y = self.attn_dropout(probs).to(v.dtype) @ v  # (B, H, T, D)
        else:  # one fused kernel; with no mask, the causal kernel that skips the masked half
            bias = None if mask is None else torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~mask, torch.finfo(q.dtype).min)
            dropout = self.attn_dropout.p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, is_causal=mask is None)
            probs = None
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.o_proj(y)), probs


class PyGPTMLP(nn.Module):
    def __init__(self, config: PyGPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width)
        self.act = ACT2FN[config.activation_function]
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class PyGPTBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: PyGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = PyGPTAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = PyGPTMLP(config)

    def forward(self, x, mask, rotary, cache, output_attentions=False):
        attn_out, probs = self.attn(self.ln_1(x), mask, rotary, cache, output_attentions)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, probs


# What push_to_hub=True passes on to the Hub, beside the folder.
HUB_KWARGS = ("repo_id", "commit_message", "private", "token", "create_pr", "revision", "commit_description")


class PyGPTPreTrainedModel(PreTrainedModel):
    """Weight init and the Hugging Face plumbing shared by the base model and the LM."""

    config_class = PyGPTConfig
    base_model_prefix = "transformer"
    _no_split_modules: ClassVar[list[str]] = ["PyGPTBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        # `nn.init.*` is looked up at call time on purpose: transformers 5.x patches it so that weights already
        # loaded from a checkpoint are not overwritten
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                # GPT-2: the projections that write into the residual stream start smaller, by 1/sqrt(2 * n_layer),
                # because each block adds two of them and the stream's variance grows with depth
                std = std / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """Save weights and config as transformers does, then copy the travelling source files beside them.

        Weights above `max_shard_size` (default 5GB) are sharded by transformers itself
        (`model-00001-of-0000N.safetensors` + `model.safetensors.index.json`). The folder is replaced as a
        whole (`replaced_folder`): other files in it are kept, the weights files of an earlier save are not
        (transformers alone would leave an old `model.safetensors` beside new shards, and loaders prefer it).
        With `is_main_process=False` transformers' own behaviour is kept (it writes the weights in place).
        With `push_to_hub=True` the finished folder is uploaded afterwards, stale weights deleted in the same
        commit; it takes repo_id, commit_message, private, token, create_pr, revision and commit_description.
        `safe_serialization=False` (a pickle) is refused. Keywords transformers' `save_pretrained` does not
        name are an error, not ignored.
        """
        if args:
            raise TypeError("save_pretrained takes save_directory positionally and everything else by keyword")
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        if hub_kwargs.keys() - {"token"} and not push_to_hub:
            raise ValueError(f"save_pretrained: {sorted(hub_kwargs.keys() - {'token'})} only apply with push_to_hub=True")
        known = set(inspect.signature(PreTrainedModel.save_pretrained).parameters) - {"self", "kwargs"}
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"save_pretrained got unexpected keyword arguments {sorted(unknown)}")
        if kwargs.get("safe_serialization", True) is False:
            raise ValueError("save_pretrained: PyGPT checkpoints are always model.safetensors; "
                             "safe_serialization=False (a pickled pytorch_model.bin) is not supported")
        if "max_shard_size" in kwargs:
            kwargs["max_shard_size"] = parse_max_shard_size(kwargs["max_shard_size"])
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained: {os.fspath(save_directory)} is a file, not a folder")
        if not kwargs.get("is_main_process", True):
            super().save_pretrained(save_directory, **kwargs)
            save_remote_code(str(save_directory))
        else:
            with replaced_folder(save_directory, kwargs.get("variant")) as staging:
                super().save_pretrained(staging, **kwargs)
                save_remote_code(staging)
        if push_to_hub:
            from huggingface_hub import create_repo

            repo_id = hub_kwargs.get("repo_id") or os.path.basename(os.path.abspath(save_directory))
            token = hub_kwargs.get("token")
            repo_id = create_repo(repo_id, private=hub_kwargs.get("private"), token=token, exist_ok=True).repo_id
            push_folder(str(save_directory), repo_id, commit_message=hub_kwargs.get("commit_message") or
                        "Upload PyGPT model", commit_description=hub_kwargs.get("commit_description"),
                        create_pr=hub_kwargs.get("create_pr") or False, revision=hub_kwargs.get("revision"),
                        token=token, variant=kwargs.get("variant"))

    def _upload_modified_files(self, working_dir, repo_id, files_timestamps, commit_message=None, token=None,
                               create_pr=False, revision=None, commit_description=None):
        """`push_to_hub`'s upload (transformers'), in a commit that also deletes stale weights files."""
        return push_folder(working_dir, repo_id, files_timestamps, commit_message=commit_message or "Upload model",
                           token=token, create_pr=create_pr, revision=revision, commit_description=commit_description)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, except that a damaged generation_config.json, weights index or
        weights file (one or a shard) is an error naming it."""
        import json

        from safetensors import SafetensorError

        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (SafetensorError, json.JSONDecodeError) as err:  # transformers passes these on, naming no file
            raise damaged_weights_error(pretrained_model_name_or_path, kwargs, err) from err
        check_generation_config_file(pretrained_model_name_or_path, kwargs)
        return model


class PyGPTModel(PyGPTPreTrainedModel):
    """The decoder stack: embeddings, `n_layer` blocks, final LayerNorm. Returns hidden states (B, T, C)."""

    def __init__(self, config: PyGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.position_embedding_type == "learned":
            self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(PyGPTBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, S): 1 for tokens, 0 for padding (past included)
        position_ids: torch.LongTensor | None = None,  # (B, T); default past + arange(T)
        past_key_values: Cache | None = None,  # transformers 4.57's name for the cache
        cache: Cache | None = None,  # transformers 5.x's name for the cache
        inputs_embeds: torch.Tensor | None = None,  # (B, T, C), instead of input_ids
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,  # only what transformers 4.57's generate adds: cache_position (not named: 5.x warns if it is)
    ):
        config = self.config
        use_cache = use_cache if use_cache is not None else config.use_cache
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.return_dict
        cache_position = kwargs.pop("cache_position", None)  # past + arange(T): what we compute below
        if kwargs:
            raise TypeError(f"PyGPTModel.forward got unexpected keyword arguments {sorted(kwargs)}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("PyGPTModel.forward needs exactly one of input_ids or inputs_embeds")

        cache = cache if cache is not None else past_key_values
        past = cache.get_seq_length() if cache is not None else 0
        B, T = validate_torch_inputs(config, input_ids, inputs_embeds, attention_mask, position_ids, past)
        if cache_position is not None and cache_position.shape[-1] != T:
            raise ValueError(f"cache_position must have {T} entries (one per new token), got {cache_position.shape[-1]}")
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        if use_cache and cache is None:
            cache = DynamicCache(config=config)
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=x.device)[None].expand(B, T)

        rotary = None
        if config.position_embedding_type == "sinusoidal":
            # Scaled to the token embeddings' init scale (see modeling_flax_pygpt.py for why and the figures).
            x = x + (sinusoidal_positions(position_ids, config.n_embd) * config.initializer_range).to(x.dtype)
        elif config.position_embedding_type == "learned":
            x = x + self.wpe(position_ids)
        else:  # rope: nothing added here; q and k are rotated in every attention layer
            rotary = tuple(t.to(x.dtype) for t in rotary_cos_sin(position_ids, config.head_dim, config.rope_theta))
        x = self.drop(x)

        # query t (absolute position past + t) may look at key s when s <= past + t, and s is not padding
        S = past + T
        mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=past)[None, None]  # (1, 1, T, S)
        if attention_mask is None and past == 0:
            mask = None  # plainly causal: the attention takes its fused causal kernel
        if attention_mask is not None:  # shape checked above: (B, S)
            mask = mask & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)

        all_hidden, all_attn = [], []
        for block in self.h:
            if output_hidden_states:
                all_hidden.append(x)
            x, probs = block(x, mask, rotary, cache, output_attentions)
            if output_attentions:
                all_attn.append(probs)
        x = self.ln_f(x)
        if output_hidden_states:
            all_hidden.append(x)

        outputs = {
            "last_hidden_state": x,
            CACHE_FIELD: cache if use_cache else None,
            "hidden_states": tuple(all_hidden) if output_hidden_states else None,
            "attentions": tuple(all_attn) if output_attentions else None,
        }
        if not return_dict:
            return tuple(v for v in outputs.values() if v is not None)
        return BaseModelOutputWithPast(**outputs)


class PyGPTForCausalLM(PyGPTPreTrainedModel, GenerationMixin):
    """PyGPTModel plus the LM head; `generate` and `pipeline("text-generation")` work through GenerationMixin."""

    # 5.x reads a {target: source} dict; 4.57 iterates it and sees the target name: one form serves both
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: PyGPTConfig):
        super().__init__(config)
        self.transformer = PyGPTModel(config)
        # with tie_word_embeddings (the default) transformers makes lm_head.weight the same tensor as wte.weight
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """transformers' `generate`, with the prompt and the length checked first (the Flax model's messages):
        a prompt plus `max_new_tokens` beyond `n_positions` is refused before any decoding, not midway."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if input_ids is not None and kwargs.get("inputs_embeds") is None:
            if not isinstance(input_ids, torch.Tensor):
                raise TypeError(f"generate: input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
            check_token_ids(input_ids.shape, *_dtype_of(input_ids), self.config.n_positions)
            if _values_readable():
                check_token_values(*_min_max(input_ids), self.config.vocab_size)
            B, T = input_ids.shape
            if kwargs.get("attention_mask") is not None:
                check_attention_mask(kwargs["attention_mask"].shape, B, 0, T)
            settings = generation_config if generation_config is not None else self.generation_config
            max_new_tokens = kwargs.get("max_new_tokens", settings.max_new_tokens)
            max_length = kwargs.get("max_length", settings.max_length)
            if "max_length" not in kwargs and max_length == 20:  # transformers' default, not a choice
                max_length = None
            check_generation_length(T, self.config.n_positions, max_new_tokens, max_length)
        return super().generate(inputs, generation_config=generation_config, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,  # (B, T); the loss predicts labels[:, t+1] from position t
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None:
            shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape[:2])
            if tuple(labels.shape) != shape:
                raise ValueError(f"labels must have the shape of the input, (batch, sequence) = {shape}, "
                                 f"got {tuple(labels.shape)}")
            if _values_readable():
                targets = labels[labels != -100]
                if targets.numel():
                    check_token_values(*_min_max(targets), self.config.vocab_size, name="labels (other than -100)")
        out = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(out.last_hidden_state)  # (B, T, vocab)

        loss = None
        if labels is not None:  # shift: position t predicts token t+1; -100 marks ignored targets
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device), ignore_index=-100
            )

        outputs = {
            "loss": loss,
            "logits": logits,
            CACHE_FIELD: out.get(CACHE_FIELD),
            "hidden_states": out.hidden_states,
            "attentions": out.attentions,
        }
        if not return_dict:
            return tuple(v for v in outputs.values() if v is not None)
        return CausalLMOutputWithPast(**outputs)
