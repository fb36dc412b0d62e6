"""The Flax model and its PyTorch twin agree on drawn inputs, edge cases included (issue 14), by property.

Hypothesis draws a config (3 position encodings, tied or untied head; one 16-wide layer) and an input: a batch of
rows of any length up to `n_positions`, left- or right-padded with an attention mask, with or without
explicit position ids, fed whole and through a KV cache in several chunks. Flax and PyTorch logits agree to
1e-4 on every real token, greedy continuations are equal, and a padded row continues as the row alone.
Bad inputs drawn from the contract's list raise the same ValueError in both.

Kept cheap: tiny models built once per config and reused, fixed shapes (only contents are drawn, so jax
compiles each op once), 20 examples per property, a few greedy tokens decoded eagerly (trace=False).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")

import itertools

import jax.numpy as jnp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.modeling_flax_pygpt import flax_params_to_pytorch_layout
from pygpt_hf.modeling_pygpt import PyGPTForCausalLM

VOCAB, N_POS, PAD, NEW = 280, 16, 257, 3
EOS = VOCAB + 7  # outside the vocabulary: every row decodes all NEW tokens in both frameworks
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_MODELS: dict = {}


def models(position_embedding_type: str, tie: bool, n_layer: int):
    """A (Flax, PyTorch) pair with the same weights, built once per config."""
    key = (position_embedding_type, tie, n_layer)
    if key not in _MODELS:
        config = PyGPTConfig(vocab_size=VOCAB, n_positions=N_POS, n_embd=16, n_layer=n_layer, n_head=2,
                             position_embedding_type=position_embedding_type, tie_word_embeddings=tie)
        flax_model = FlaxPyGPTForCausalLM(config, seed=len(_MODELS))
        torch_model = PyGPTForCausalLM(config).eval()
        state = {k: torch.from_numpy(np.array(v)) for k, v in flax_params_to_pytorch_layout(flax_model.params).items()}
        torch_model.load_state_dict(state, strict=False)
        torch_model.tie_weights()
        _MODELS[key] = flax_model, torch_model
    return _MODELS[key]


configs = st.tuples(st.sampled_from(["sinusoidal", "learned", "rope"]), st.booleans(), st.just(1))


@st.composite
def padded_batches(draw, width: int = N_POS):
    """(ids, mask, side): two rows of 1..width real tokens each, padded on one side to `width`.

    The shapes are fixed and only the contents drawn, so jax compiles each op once for all examples.
    """
    lengths = draw(st.lists(st.integers(1, width), min_size=2, max_size=2))
    side, seed = draw(st.sampled_from(["left", "right"])), draw(st.integers(0, 2**16))
    ids = np.random.RandomState(seed).randint(0, VOCAB, (2, width))
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, slice(width - n, width) if side == "left" else slice(0, n)] = 1
    ids[mask == 0] = PAD
    return ids, mask, side


def flax_logits(model, ids, mask, positions, cache=None):
    out = model(ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
    return np.asarray(out.logits), getattr(out, "past_key_values", None)


def torch_logits(model, ids, mask, positions, cache=None):
    t = lambda a: None if a is None else torch.as_tensor(a)
    with torch.no_grad():
        out = model(t(ids), attention_mask=t(mask), position_ids=t(positions), past_key_values=cache, use_cache=True)
    return out.logits.numpy(), out.past_key_values


@PROPERTY
@given(config=configs, batch=padded_batches(), explicit_positions=st.booleans(),
       cuts=st.lists(st.sampled_from([4, 8, 12]), max_size=2, unique=True))
def test_logits_agree_whole_and_through_a_chunked_cache(config, batch, explicit_positions, cuts):
    flax_model, torch_model = models(*config)
    ids, mask, _ = batch
    # positions that count real tokens only (what generate uses), or the default 0, 1, 2, ...
    positions = np.maximum(mask.cumsum(-1) - 1, 0) if explicit_positions else None
    flax_full, _ = flax_logits(flax_model, ids, mask, positions)
    torch_full, _ = torch_logits(torch_model, ids, mask, positions)
    real = mask.astype(bool)
    np.testing.assert_allclose(flax_full[real], torch_full[real], atol=1e-4, rtol=0)

    # the same sequence fed in chunks through the KV cache, each chunk with the mask of everything so far
    bounds = [0, *sorted(cuts), ids.shape[1]]
    flax_cache, torch_cache, flax_parts, torch_parts = flax_model.init_cache(len(ids), N_POS), None, [], []
    for start, stop in itertools.pairwise(bounds):
        chunk_positions = None if positions is None else positions[:, start:stop]
        logits, flax_cache = flax_logits(flax_model, ids[:, start:stop], mask[:, :stop], chunk_positions, flax_cache)
        flax_parts.append(logits)
        logits, torch_cache = torch_logits(torch_model, ids[:, start:stop], mask[:, :stop], chunk_positions, torch_cache)
        torch_parts.append(logits)
    np.testing.assert_allclose(np.concatenate(flax_parts, 1)[real], flax_full[real], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.concatenate(torch_parts, 1)[real], torch_full[real], atol=1e-4, rtol=0)


def _padded_row_equals_alone(ids, mask, continuation, generate_alone):
    for row in range(len(ids)):
        alone = generate_alone(ids[row : row + 1, mask[row] == 1])
        np.testing.assert_array_equal(continuation[row], alone[0], err_msg=f"row {row} padded vs alone")


@PROPERTY
@given(config=configs, batch=padded_batches(width=N_POS - NEW))
def test_greedy_continuations_agree_and_padding_changes_nothing(config, batch):
    flax_model, torch_model = models(*config)
    ids, mask, side = batch
    if side == "right":  # generation continues after the last column: prompts are left-padded, as in transformers
        ids, mask = _to_left_padding(ids, mask)
    settings = {"max_new_tokens": NEW, "do_sample": False, "eos_token_id": EOS, "pad_token_id": PAD}
    flax_new = np.asarray(flax_model.generate(jnp.asarray(ids), attention_mask=jnp.asarray(mask), trace=False,
                                              **settings).sequences)[:, ids.shape[1]:]
    torch_new = torch_model.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                                     **settings).numpy()[:, ids.shape[1]:]
    np.testing.assert_array_equal(flax_new, torch_new)

    def torch_alone(row):
        return torch_model.generate(torch.as_tensor(row), **settings).numpy()[:, row.shape[1]:]

    _padded_row_equals_alone(ids, mask, torch_new, torch_alone)


def _to_left_padding(ids, mask):
    order = np.argsort(mask, axis=1, kind="stable")  # zeros (padding) first, real tokens keep their order
    return np.take_along_axis(ids, order, 1), np.take_along_axis(mask, order, 1)


# Bad inputs: each builds the same broken call for both frameworks.
BAD = {
    "too many tokens": lambda ids: {"input_ids": np.zeros((1, N_POS + 1 + ids.shape[1] % 3), np.int64)},
    "id outside the vocabulary": lambda ids: {"input_ids": np.where(ids == ids.max(), VOCAB + ids.max() % 5, ids)},
    "negative id": lambda ids: {"input_ids": np.where(ids == ids.min(), -1 - ids.min() % 5, ids)},
    "float ids": lambda ids: {"input_ids": ids.astype(np.float32)},
    "empty input": lambda ids: {"input_ids": ids[:, :0]},
    "attention_mask of another length": lambda ids: {"input_ids": ids, "attention_mask": np.ones((len(ids), ids.shape[1] + 1))},
    "position_ids of another length": lambda ids: {"input_ids": ids, "position_ids": np.zeros((len(ids), ids.shape[1] + 1), np.int64)},
}


@PROPERTY
@given(config=configs, batch=padded_batches(), bad=st.sampled_from(sorted(BAD)), via_generate=st.booleans())
def test_bad_inputs_raise_the_same_error_in_both(config, batch, bad, via_generate):
    flax_model, torch_model = models(*config)
    inputs = BAD[bad](batch[0])
    if via_generate and "position_ids" in inputs:  # generate makes its own positions
        via_generate = False
    if via_generate:
        extra = {"max_new_tokens": 2, "eos_token_id": EOS, "pad_token_id": PAD}
        flax_call = lambda: flax_model.generate(jnp.asarray(inputs["input_ids"]), **_flax(inputs, skip="input_ids"), **extra)
        torch_call = lambda: torch_model.generate(**_torch(inputs), **extra)
    else:
        flax_call = lambda: flax_model(**_flax(inputs))
        torch_call = lambda: torch_model(**_torch(inputs))
    with pytest.raises(ValueError) as flax_error:
        flax_call()
    with pytest.raises(ValueError) as torch_error, torch.no_grad():
        torch_call()
    assert str(flax_error.value) == str(torch_error.value)


def _flax(inputs, skip=None):
    return {k: jnp.asarray(v) for k, v in inputs.items() if k != skip}


def _torch(inputs):
    return {k: torch.as_tensor(v) for k, v in inputs.items()}
