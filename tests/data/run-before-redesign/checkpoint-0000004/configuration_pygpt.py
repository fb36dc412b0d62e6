"""PyGPTConfig: the architecture of a PyGPT model, and nothing else.

This file travels with every saved checkpoint (remote code), so it imports only `transformers` and runs
unchanged on transformers 4.57 and 5.x.
"""

from transformers import PretrainedConfig

POSITION_EMBEDDING_TYPES = ("sinusoidal", "learned", "rope")


class PyGPTConfig(PretrainedConfig):
    """Configuration of a GPT-style decoder.

    Args:
        vocab_size: number of token ids (bytes + special tokens + merges).
        n_positions: longest sequence the model accepts (context length).
        n_embd: width of the residual stream.
        n_layer: number of transformer blocks.
        n_head: attention heads per block; `n_embd` must be divisible by it.
        n_inner: width of the MLP hidden layer; `None` means `4 * n_embd`.
        activation_function: MLP non-linearity, a key of transformers' `ACT2FN` (e.g. "gelu_new").
        resid_pdrop, embd_pdrop, attn_pdrop: dropout rates on the residual branches, the embeddings and
            the attention probabilities (used only when training).
        layer_norm_epsilon: epsilon of every LayerNorm.
        initializer_range: standard deviation of the normal weight init.
        position_embedding_type: "sinusoidal" (fixed sin/cos added to the token embeddings, scaled by
            `initializer_range` to match them; the original PyGPT design), "learned" (a trained table, as in
            GPT-2) or "rope" (rotary, applied to Q and K).
        rope_theta: base of the rotary frequencies (only for "rope").
        tie_word_embeddings: share the LM head with the token embedding.
        bos_token_id, eos_token_id, pad_token_id: special ids; with the PyGPT tokenizer these are fixed at
            256 (`<|endoftext|>`, both bos and eos) and 257 (`<|pad|>`).
        use_cache: return key/value caches for fast decoding.
    """

    model_type = "pygpt"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    def __init__(
        self,
        vocab_size: int = 8192,
        n_positions: int = 512,
        n_embd: int = 256,
        n_layer: int = 4,
        n_head: int = 4,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        resid_pdrop: float = 0.0,
        embd_pdrop: float = 0.0,
        attn_pdrop: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        position_embedding_type: str = "sinusoidal",
        rope_theta: float = 10000.0,
        tie_word_embeddings: bool = True,
        bos_token_id: int = 256,
        eos_token_id: int = 256,
        pad_token_id: int = 257,
        use_cache: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.activation_function = activation_function
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.use_cache = use_cache
        self._validate()
        kwargs.setdefault("auto_map", dict(AUTO_MAP))  # so every saved config.json points at the remote code
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def _validate(self) -> None:
        """Reject impossible architectures here, with the field's name, not later inside a matmul."""
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"PyGPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ValueError(f"PyGPTConfig.n_inner must be a positive integer or None, got {self.n_inner!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"PyGPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"PyGPTConfig.position_embedding_type must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}"
            )
        if self.position_embedding_type == "rope" and self.head_dim % 2:
            raise ValueError(f"PyGPTConfig: rope needs an even n_embd / n_head, got head size {self.head_dim}")
        if self.position_embedding_type == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"PyGPTConfig.n_embd must be even for sinusoidal positions, got {self.n_embd}")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"PyGPTConfig.{name} must be in [0, 1), got {value!r}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"PyGPTConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        if self.initializer_range <= 0:
            raise ValueError(f"PyGPTConfig.initializer_range must be > 0, got {self.initializer_range!r}")
        if self.rope_theta <= 0:
            raise ValueError(f"PyGPTConfig.rope_theta must be > 0, got {self.rope_theta!r}")


# Remote code: every saved folder carries these files and this `auto_map`, so a machine without pygpt_hf
# loads it with `trust_remote_code=True` (PyTorch on transformers 4.57 and 5.x; Flax on 4.57).
TRAVELLING_FILES = (
    "configuration_pygpt.py",
    "modeling_pygpt.py",
    "modeling_flax_pygpt.py",
    "tokenization_pygpt.py",
    "tokenization_pygpt_fast.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_pygpt.PyGPTConfig",
    "AutoModel": "modeling_pygpt.PyGPTModel",
    "AutoModelForCausalLM": "modeling_pygpt.PyGPTForCausalLM",
    "FlaxAutoModel": "modeling_flax_pygpt.FlaxPyGPTModel",
    "FlaxAutoModelForCausalLM": "modeling_flax_pygpt.FlaxPyGPTForCausalLM",
    "AutoTokenizer": ["tokenization_pygpt.PyGPTTokenizer", "tokenization_pygpt_fast.PyGPTTokenizerFast"],
}


def save_remote_code(save_directory: str) -> None:
    """Copy the travelling source files next to a checkpoint (those that exist beside this file)."""
    import os
    import shutil

    here = os.path.dirname(os.path.abspath(__file__))
    for name in TRAVELLING_FILES:
        source, target = os.path.join(here, name), os.path.join(save_directory, name)
        if os.path.isfile(source) and os.path.abspath(source) != os.path.abspath(target):
            shutil.copyfile(source, target)
