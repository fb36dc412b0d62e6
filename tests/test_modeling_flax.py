"""FlaxPyGPT: the behaviours a user relies on, on tiny configs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from transformers import FlaxAutoModel, FlaxAutoModelForCausalLM

from pygpt_hf import FlaxPyGPTForCausalLM, FlaxPyGPTModel, PyGPTConfig

VOCAB = 300  # bytes + specials + a few merges


def tiny_config(**overrides) -> PyGPTConfig:
    kwargs = dict(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    kwargs.update(overrides)
    return PyGPTConfig(**kwargs)


def random_ids(batch: int, length: int, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.RandomState(seed).randint(0, 256, (batch, length)), dtype=jnp.int32)


POSITIONS = ["sinusoidal", "learned", "rope"]


@pytest.fixture(scope="module", params=POSITIONS)
def model(request) -> FlaxPyGPTForCausalLM:
    return FlaxPyGPTForCausalLM(tiny_config(position_embedding_type=request.param), seed=1)


def test_causality(model):
    """Changing token t never changes the logits at positions < t."""
    ids = random_ids(1, 12)
    changed = ids.at[0, 7].set((ids[0, 7] + 1) % VOCAB)
    before, after = model(ids).logits, model(changed).logits
    np.testing.assert_array_equal(before[:, :7], after[:, :7])
    assert not np.allclose(before[:, 7:], after[:, 7:])


def test_left_padding_matches_unpadded(model):
    """A left-padded batch gives the same logits on real tokens as each sequence run alone."""
    long, short = random_ids(1, 10, seed=1)[0], random_ids(1, 6, seed=2)[0]
    pad = model.config.pad_token_id
    ids = jnp.stack([long, jnp.concatenate([jnp.full((4,), pad), short])])
    mask = jnp.array([[1] * 10, [0] * 4 + [1] * 6])
    positions = jnp.maximum(mask.cumsum(-1) - 1, 0)  # real tokens count from 0, as generate() does
    batched = model(ids, attention_mask=mask, position_ids=positions).logits
    np.testing.assert_allclose(batched[0], model(long[None]).logits[0], atol=1e-5)
    np.testing.assert_allclose(batched[1, 4:], model(short[None]).logits[0], atol=1e-5)


def test_kv_cache_decoding_equals_full_forward(model):
    """Prefill 4 tokens, then decode one at a time with the cache: logits equal one full pass (atol 1e-5)."""
    ids = random_ids(2, 10)
    full = model(ids).logits
    out = model(ids[:, :4], past_key_values=model.init_cache(2, 10))
    pieces = [out.logits]
    for t in range(4, 10):
        out = model(ids[:, t : t + 1], past_key_values=out.past_key_values)
        pieces.append(out.logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)


def greedy_without_cache(model, ids, new_tokens):
    for _ in range(new_tokens):
        next_token = model(ids).logits[:, -1].argmax(-1)
        ids = jnp.concatenate([ids, next_token[:, None].astype(ids.dtype)], axis=1)
    return ids


def test_greedy_generate_with_cache_equals_uncached_loop(model):
    prompt = random_ids(2, 5, seed=3)
    cached = model.generate(prompt, max_new_tokens=5, do_sample=False, eos_token_id=VOCAB + 1).sequences
    np.testing.assert_array_equal(cached, greedy_without_cache(model, prompt, 5))


def test_generate_left_padded_batch_matches_single(model):
    short = random_ids(1, 3, seed=4)
    padded = jnp.concatenate([jnp.full((1, 2), model.config.pad_token_id), short], axis=1)
    batch = jnp.concatenate([random_ids(1, 5, seed=5), padded])
    mask = jnp.array([[1] * 5, [0, 0, 1, 1, 1]])
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=VOCAB + 1, pad_token_id=model.config.pad_token_id)
    together = model.generate(batch, attention_mask=mask, **kw).sequences
    alone = model.generate(short, **kw).sequences
    np.testing.assert_array_equal(together[1, 2:], alone[0])


def test_sampling_and_beam_search():
    model = FlaxPyGPTForCausalLM(tiny_config(position_embedding_type="rope"), seed=1)  # decoding is shared code
    prompt = random_ids(2, 4, seed=6)
    common = dict(max_new_tokens=4, eos_token_id=VOCAB + 1)
    sampled = model.generate(
        prompt, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, prng_key=jax.random.PRNGKey(0), **common
    ).sequences
    again = model.generate(
        prompt, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, prng_key=jax.random.PRNGKey(0), **common
    ).sequences
    beams = model.generate(prompt, num_beams=3, do_sample=False, **common).sequences
    assert sampled.shape == beams.shape == (2, 8)
    np.testing.assert_array_equal(sampled, again)  # same key, same sample
    assert int(sampled.max()) < VOCAB and int(beams.max()) < VOCAB
    np.testing.assert_array_equal(beams[:, :4], prompt)


def test_generate_past_context_is_a_clear_error():
    model = FlaxPyGPTForCausalLM(tiny_config(), seed=1)
    with pytest.raises(ValueError, match=r"44 tokens exceed the context length n_positions=32"):
        model.generate(random_ids(1, 4), max_new_tokens=40, eos_token_id=VOCAB + 1)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_heads_and_compute_dtypes(tie, dtype):
    model = FlaxPyGPTForCausalLM(tiny_config(tie_word_embeddings=tie, position_embedding_type="rope"), dtype=dtype)
    assert ("lm_head" in model.params) is (not tie)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(model.params))  # params stay f32
    logits = model(random_ids(2, 8)).logits
    assert logits.shape == (2, 8, VOCAB) and logits.dtype == dtype
    assert bool(jnp.isfinite(logits.astype(jnp.float32)).all())


def test_outputs_hidden_states_and_attentions(model):
    out = model(random_ids(2, 6), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == model.config.n_layer + 1
    assert len(out.attentions) == model.config.n_layer
    assert out.attentions[0].shape == (2, model.config.n_head, 6, 6)
    np.testing.assert_allclose(out.attentions[0].sum(-1), 1.0, atol=1e-5)
    assert "past_key_values" not in out  # only when a cache was passed


def test_save_load_round_trip_through_auto_class(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = FlaxAutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is FlaxPyGPTForCausalLM
    ids = random_ids(2, 9)
    np.testing.assert_array_equal(loaded(ids).logits, model(ids).logits)
    # The base model loads from the LM checkpoint and computes the same hidden states.
    base = FlaxAutoModel.from_pretrained(tmp_path)
    assert type(base) is FlaxPyGPTModel
    hidden = model(ids, output_hidden_states=True).hidden_states[-1]
    np.testing.assert_allclose(base(ids).last_hidden_state, hidden, atol=1e-6)


def test_load_without_init_returns_model_and_params(model, tmp_path):
    model.save_pretrained(tmp_path)
    empty, params = FlaxAutoModelForCausalLM.from_pretrained(tmp_path, _do_init=False)
    assert type(empty) is FlaxPyGPTForCausalLM and not empty._is_initialized
    ids = random_ids(2, 9)
    np.testing.assert_array_equal(empty(ids, params=params).logits, model(ids).logits)


def test_checkpoint_is_pytorch_layout_safetensors(model, tmp_path):
    from safetensors import safe_open

    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        names = set(f.keys())
        q = f.get_tensor("transformer.h.0.attn.qkv_proj.weight")
    assert "transformer.wte.weight" in names and "transformer.ln_f.weight" in names
    np.testing.assert_array_equal(q, np.asarray(model.params["transformer"]["h"]["0"]["attn"]["qkv_proj"]["kernel"]).T)
    assert {"config.json", "generation_config.json", "modeling_flax_pygpt.py", "configuration_pygpt.py"} <= {
        p.name for p in tmp_path.iterdir()
    }


def test_truncated_or_corrupted_weights_give_a_clear_error(tmp_path):
    model = FlaxPyGPTForCausalLM(tiny_config())
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="model.safetensors.*corrupted or truncated"):
        FlaxAutoModelForCausalLM.from_pretrained(tmp_path)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(OSError, match="corrupted or truncated"):
        FlaxAutoModelForCausalLM.from_pretrained(tmp_path)


def test_tiny_model_overfits_one_batch():
    """Loss on one fixed batch falls from ~ln(300) = 5.7 to below 0.5 within 150 Adam steps."""
    model = FlaxPyGPTForCausalLM(tiny_config(), seed=0)
    batch = random_ids(4, 17, seed=7)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    optimizer = optax.adam(3e-3)

    def loss_fn(params):
        logits = model(inputs, params=params).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = model.params, optimizer.init(model.params)
    first = None
    for _ in range(150):
        params, opt_state, loss = step(params, opt_state)
        first = float(loss) if first is None else first
    assert first > 5.0
    assert float(loss) < 0.5
