"""One contract for bad input (issue 14): the Flax model and its PyTorch twin refuse the same inputs with the same
ValueError, naming the argument and its limit, and nothing already saved is lost.

Tiny configs; the pair shares one set of weights (Flax params converted to the twin's state dict).
"""

import logging
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax
import jax.numpy as jnp

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.modeling_flax_pygpt import flax_params_to_pytorch_layout
from pygpt_hf.modeling_pygpt import PyGPTForCausalLM
from pygpt_hf.tokenization_pygpt import PyGPTTokenizer

VOCAB, N_POS = 300, 32


def twin_of(flax_model: FlaxPyGPTForCausalLM) -> PyGPTForCausalLM:
    """The PyTorch twin holding the Flax model's weights (as loading its checkpoint would give)."""
    model = PyGPTForCausalLM(flax_model.config).eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in flax_params_to_pytorch_layout(flax_model.params).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    return model


@pytest.fixture(scope="module")
def pair():
    config = PyGPTConfig(vocab_size=VOCAB, n_positions=N_POS, n_embd=32, n_layer=2, n_head=4,
                         position_embedding_type="learned")  # learned: where a clamped lookup was silent
    flax_model = FlaxPyGPTForCausalLM(config, seed=0)
    return flax_model, twin_of(flax_model)


def ids(batch=2, length=8, seed=0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (batch, length))


def error_of(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


# Each case: (what it is, the name its message must carry, the limit it must state, the input for Flax, for torch).
def _t(a):
    return torch.as_tensor(np.asarray(a))


FORWARD_CASES = [
    ("too many tokens", "input_ids", "n_positions=32", {"input_ids": ids(1, 33)}),
    ("id = vocab_size", "input_ids", "vocab_size=300", {"input_ids": np.array([[1, 300]])}),
    ("huge id", "input_ids", "vocab_size=300", {"input_ids": np.array([[2**31 - 1]])}),
    ("negative id", "input_ids", "vocab_size=300", {"input_ids": np.array([[5, -1]])}),
    ("float ids", "input_ids", "integer", {"input_ids": np.array([[1.0, 2.0]], np.float32)}),
    ("empty sequence", "input_ids", "(1, 0)", {"input_ids": np.zeros((1, 0), np.int64)}),
    ("empty batch", "input_ids", "(0, 4)", {"input_ids": np.zeros((0, 4), np.int64)}),
    ("1-D ids", "input_ids", "(batch, sequence)", {"input_ids": np.arange(4)}),
    ("short mask", "attention_mask", "(2, 8)", {"input_ids": ids(), "attention_mask": np.ones((2, 7), np.int64)}),
    ("mask of another batch", "attention_mask", "(2, 8)", {"input_ids": ids(), "attention_mask": np.ones((3, 8), np.int64)}),
    ("short position_ids", "position_ids", "(2, 8)", {"input_ids": ids(), "position_ids": np.zeros((2, 7), np.int64)}),
    ("position past the context", "position_ids", "n_positions=32",
     {"input_ids": ids(), "position_ids": np.full((2, 8), 32, np.int64)}),
    ("negative position", "position_ids", "n_positions=32", {"input_ids": ids(), "position_ids": -np.ones((2, 8), np.int64)}),
    ("float position_ids", "position_ids", "integer",
     {"input_ids": ids(), "position_ids": np.zeros((2, 8), np.float32)}),
]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_bad_forward_inputs_raise_the_same_error_in_both(pair, case):
    _, name, limit, inputs = case
    flax_model, torch_model = pair
    flax_message = error_of(lambda: flax_model(**{k: jnp.asarray(v) if k != "input_ids" else v for k, v in inputs.items()}))
    with torch.no_grad():
        torch_message = error_of(lambda: torch_model(**{k: _t(v) for k, v in inputs.items()}))
    assert flax_message == torch_message
    assert name in flax_message and limit in flax_message


def test_too_many_tokens_with_a_cache(pair):
    """20 cached + 20 new > 32: refused before the cache is touched (Flax used to clamp the cache write)."""
    flax_model, torch_model = pair
    x = ids(2, 20)
    cache = flax_model(x, past_key_values=flax_model.init_cache(2, N_POS)).past_key_values
    flax_message = error_of(lambda: flax_model(x, past_key_values=cache))
    with torch.no_grad():
        torch_cache = torch_model(_t(x)).past_key_values
        torch_message = error_of(lambda: torch_model(_t(x), past_key_values=torch_cache))
    assert flax_message == torch_message == "input_ids: 40 tokens (past 20 + new 20) exceed the context length n_positions=32"
    assert torch_cache.get_seq_length() == 20  # the refused call left the cache as it was
    # a Flax cache allocated shorter than the context has its own limit
    short = flax_model(x, past_key_values=flax_model.init_cache(2, 24)).past_key_values
    assert "max_length=24" in error_of(lambda: flax_model(ids(2, 5), past_key_values=short))


def test_cache_mask_may_cover_the_tokens_so_far_or_the_whole_cache(pair):
    """With a Flax cache, attention_mask is (batch, past + new) as in PyTorch, or (batch, max_length) as
    FlaxGPT2's generate passes it; both give the logits of one full pass."""
    flax_model, _ = pair
    x = ids(2, 10)
    full = np.asarray(flax_model(x).logits)
    for width in ("so far", "whole cache"):
        cache, pieces = flax_model.init_cache(2, N_POS), []
        for start, stop in ((0, 4), (4, 10)):
            mask = np.ones((2, stop if width == "so far" else N_POS), np.int64)
            out = flax_model(x[:, start:stop], attention_mask=mask, past_key_values=cache)
            cache = out.past_key_values
            pieces.append(np.asarray(out.logits))
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)
    message = error_of(lambda: flax_model(x[:, :4], attention_mask=np.ones((2, 5)), past_key_values=flax_model.init_cache(2, N_POS)))
    assert "(batch, past + new) = (2, 4) or (batch, max_length) = (2, 32)" in message


GENERATE_CASES = [
    ("prompt + max_new_tokens past the context", "max_new_tokens", "n_positions=32",
     {"input_ids": ids(1, 8), "max_new_tokens": 25}),
    ("max_length past the context", "max_length", "n_positions=32", {"input_ids": ids(1, 8), "max_length": 33}),
    ("max_length inside the prompt", "max_length", "prompt of 8 tokens", {"input_ids": ids(1, 8), "max_length": 8}),
    ("prompt fills the context", "prompt", "n_positions=32", {"input_ids": ids(1, 32)}),
    ("max_new_tokens = 0", "max_new_tokens", "positive", {"input_ids": ids(1, 4), "max_new_tokens": 0}),
    ("max_new_tokens < 0", "max_new_tokens", "positive", {"input_ids": ids(1, 4), "max_new_tokens": -3}),
    ("prompt id outside the vocabulary", "input_ids", "vocab_size=300",
     {"input_ids": np.array([[3, 301]]), "max_new_tokens": 2}),
    ("negative prompt id", "input_ids", "vocab_size=300", {"input_ids": np.array([[-3, 1]]), "max_new_tokens": 2}),
    ("float prompt", "input_ids", "integer", {"input_ids": np.ones((1, 3), np.float32), "max_new_tokens": 2}),
    ("empty prompt", "input_ids", "(1, 0)", {"input_ids": np.zeros((1, 0), np.int64), "max_new_tokens": 2}),
    ("mask of another length", "attention_mask", "(1, 4)",
     {"input_ids": ids(1, 4), "attention_mask": np.ones((1, 5), np.int64), "max_new_tokens": 2}),
]


@pytest.mark.parametrize("case", GENERATE_CASES, ids=[c[0] for c in GENERATE_CASES])
def test_bad_generate_inputs_raise_the_same_error_in_both(pair, case):
    _, name, limit, inputs = case
    flax_model, torch_model = pair
    common = {"do_sample": False, "eos_token_id": VOCAB + 7, "pad_token_id": 257}
    flax_inputs = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    flax_message = error_of(lambda: flax_model.generate(flax_inputs.pop("input_ids"), **flax_inputs, **common))
    torch_inputs = {k: (_t(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    torch_message = error_of(lambda: torch_model.generate(torch_inputs.pop("input_ids"), **torch_inputs, **common))
    assert flax_message == torch_message
    assert name in flax_message and limit in flax_message


def test_shape_checks_run_at_trace_time_under_jit(pair):
    """Inside jax.jit only shapes are known: too many tokens is still refused; generate still checks its lengths."""
    flax_model, _ = pair
    forward = jax.jit(lambda x: flax_model(x).logits)
    assert forward(jnp.asarray(ids(1, 32))).shape == (1, 32, VOCAB)
    assert "n_positions=32" in error_of(lambda: forward(jnp.zeros((1, 33), jnp.int32)))
    generate = jax.jit(lambda x: flax_model.generate(x, max_new_tokens=30, eos_token_id=VOCAB + 7).sequences)
    assert "n_positions=32" in error_of(lambda: generate(jnp.asarray(ids(1, 4))))


def test_length_settings_mean_the_same_in_both(pair):
    """max_length is the total length and min_new_tokens works, in Flax as in PyTorch (Flax read an explicit
    max_length=20 as 20 new tokens and ignored min_new_tokens); settings Flax would ignore are refused."""
    flax_model, torch_model = pair
    prompt, eos = ids(1, 5), int(np.argmax(np.asarray(flax_model(ids(1, 5)).logits)[0, -1]))  # the first greedy token
    for kwargs in ({"max_length": 20}, {"max_new_tokens": 6, "min_new_tokens": 6}, {}):
        settings = dict(do_sample=False, eos_token_id=eos, pad_token_id=257, **kwargs)
        flax_out = np.asarray(flax_model.generate(jnp.asarray(prompt), **settings).sequences)
        torch_out = torch_model.generate(_t(prompt), **settings).numpy()
        if "min_new_tokens" in kwargs:  # eos is the first greedy token: only min_new_tokens keeps it going
            assert flax_out.shape == torch_out.shape == (1, 11)
            np.testing.assert_array_equal(flax_out, torch_out)
        else:
            assert flax_out.shape[1] == (20 if kwargs else 25)  # no kwargs: 20 new tokens (capped at 32)
            assert torch_out[0, 5] == flax_out[0, 5] == eos  # torch stops at eos, Flax pads after it
    message = error_of(lambda: flax_model.generate(jnp.asarray(prompt), max_new_tokens=2, repetition_penalty=1.3))
    assert "repetition_penalty" in message and "ignored" in message


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_a_shard_size_that_is_not_a_size_is_refused_and_nothing_is_lost(pair, tmp_path, framework):
    """A size below the weights now shards (tests/test_sharded_checkpoints.py); a size that is no size, or
    is not positive, is refused by name before anything is written."""
    model = pair[0] if framework == "flax" else pair[1]
    weights = sum(v.nbytes for v in flax_params_to_pytorch_layout(pair[0].params).values())
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for bad in ("lots", 0, -1, "-5MB", True):
        message = error_of(lambda bad=bad: model.save_pretrained(folder, max_shard_size=bad))
        assert f"max_shard_size={bad!r}" in message
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # refused before anything was written
    error_of(lambda: model.save_pretrained(tmp_path / "fresh", max_shard_size="lots"))
    assert not (tmp_path / "fresh").exists()
    model.save_pretrained(tmp_path / "exact", max_shard_size=weights)  # a size the one file honours
    files = sorted(os.listdir(tmp_path / "exact"))
    assert "model.safetensors" in files and not any(f.endswith(".index.json") for f in files)


# ---- tokenizers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    train_tokenizer(["To be, or not to be, that is the question. " * 20], vocab_size=300, model_max_length=N_POS,
                    show_progress=False).save_pretrained(folder)
    return folder


@pytest.fixture
def transformers_log():
    """Records of transformers' loggers (their handler writes to the stderr of import time, past capsys)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize("cls", ["fast", "slow"])
def test_long_documents_encode_without_a_warning_and_truncation_still_cuts(tokenizer_folder, transformers_log, cls):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_folder) if cls == "fast" else PyGPTTokenizer.from_pretrained(tokenizer_folder)
    assert tok.model_max_length == N_POS  # the model's context, as saved
    document = "Whether 'tis nobler in the mind to suffer the slings and arrows. " * 10
    full = tok(document)["input_ids"]
    assert len(full) > N_POS
    assert not [r for r in transformers_log if "sequence length is longer" in r.getMessage()]
    assert tok(document, truncation=True)["input_ids"] == full[:N_POS]
    assert tok(document, truncation=True, max_length=5)["input_ids"] == full[:5]


@pytest.mark.parametrize("cls", ["fast", "slow"])
def test_unknown_tokenizer_keywords_raise(tokenizer_folder, cls):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_folder) if cls == "fast" else PyGPTTokenizer.from_pretrained(tokenizer_folder)
    with pytest.raises(TypeError, match="truncate"):
        tok("some text", truncate=True)  # a typo of truncation=True
