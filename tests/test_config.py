"""PyGPTConfig: HF round trips and clear errors for impossible architectures."""

import pytest
from transformers import AutoConfig

import pygpt_hf  # noqa: F401  (registers model_type "pygpt")
from pygpt_hf import PyGPTConfig


def test_defaults_and_derived_sizes():
    cfg = PyGPTConfig(n_embd=64, n_head=4)
    assert cfg.model_type == "pygpt"
    assert cfg.head_dim == 16 and cfg.mlp_width == 256
    assert cfg.position_embedding_type == "sinusoidal"
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (256, 256, 257)
    assert cfg.hidden_size == 64 and cfg.num_hidden_layers == cfg.n_layer  # HF attribute aliases


def test_auto_config_round_trip(tmp_path):
    cfg = PyGPTConfig(vocab_size=1000, n_layer=3, n_head=2, n_embd=32, n_inner=100, position_embedding_type="rope")
    cfg.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, PyGPTConfig)
    without_path = lambda c: {k: v for k, v in c.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert without_path(loaded) == without_path(cfg)
    assert loaded.auto_map["AutoModelForCausalLM"] == "modeling_pygpt.PyGPTForCausalLM"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_embd": 30, "n_head": 4}, "n_embd (30) must be divisible by n_head (4)"),
        ({"position_embedding_type": "alibi"}, "position_embedding_type must be one of"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
        ({"n_layer": -1}, "n_layer must be a positive integer"),
        ({"n_positions": 2.5}, "n_positions must be a positive integer"),
        ({"n_inner": 0}, "n_inner must be a positive integer or None"),
        ({"attn_pdrop": 1.5}, "attn_pdrop must be in [0, 1)"),
        ({"layer_norm_epsilon": 0.0}, "layer_norm_epsilon must be > 0"),
        ({"n_embd": 12, "n_head": 4, "position_embedding_type": "rope"}, "rope needs an even"),
    ],
)
def test_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        PyGPTConfig(**kwargs)


def test_invalid_config_json_is_rejected_on_load(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "pygpt", "n_embd": 10, "n_head": 3}')
    with pytest.raises(ValueError, match="divisible by n_head"):
        AutoConfig.from_pretrained(tmp_path)
