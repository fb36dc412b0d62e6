"""The PyTorch twin: behaviours a user relies on, and one checkpoint shared with the Flax model.

Tiny configs throughout. Flax and PyTorch must agree to 1e-4 in float32 (they agree to ~1e-7 in practice).
"""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the twin is the optional `torch` extra

import jax
import jax.numpy as jnp
import optax
from safetensors import safe_open
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    FlaxAutoModelForCausalLM,
    pipeline,
)

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.configuration_pygpt import TRAVELLING_FILES
from pygpt_hf.modeling_pygpt import PyGPTForCausalLM, PyGPTModel

VOCAB = 300
POSITIONS = ["sinusoidal", "learned", "rope"]
PAD = 257


def tiny_config(**overrides) -> PyGPTConfig:
    kwargs = {"vocab_size": VOCAB, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}
    kwargs.update(overrides)
    return PyGPTConfig(**kwargs)


def random_ids(batch: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (batch, length))


def left_padded_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two prompts, the second left-padded by 4; positions count real tokens only (as generate does)."""
    ids = random_ids(2, 12, seed=5)
    ids[1, :4] = PAD
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    return ids, mask, np.maximum(mask.cumsum(-1) - 1, 0)


def torch_logits(model, ids, mask=None, positions=None) -> np.ndarray:
    as_tensor = lambda a: None if a is None else torch.as_tensor(a)
    with torch.no_grad():
        return model(as_tensor(ids), attention_mask=as_tensor(mask), position_ids=as_tensor(positions)).logits.numpy()


def flax_logits(model, ids, mask=None, positions=None) -> np.ndarray:
    as_array = lambda a: None if a is None else jnp.asarray(a)
    return np.asarray(model(as_array(ids), attention_mask=as_array(mask), position_ids=as_array(positions)).logits)


def greedy_both(flax_model, torch_model, ids, mask, new_tokens: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Greedy continuations from both frameworks, padded alike (torch stops once every row hit eos)."""
    flax_out = np.asarray(
        flax_model.generate(jnp.asarray(ids), attention_mask=jnp.asarray(mask), max_new_tokens=new_tokens,
                            do_sample=False).sequences
    )
    torch_out = torch_model.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                                     max_new_tokens=new_tokens, do_sample=False).numpy()
    padded = np.full_like(flax_out, PAD)
    padded[:, : torch_out.shape[1]] = torch_out
    return flax_out, padded


@pytest.fixture(scope="module", params=POSITIONS)
def model(request) -> PyGPTForCausalLM:
    torch.manual_seed(0)
    return PyGPTForCausalLM(tiny_config(position_embedding_type=request.param)).eval()


# ---- the twin on its own ------------------------------------------------------------------------------


def test_output_shapes(model):
    ids = torch.as_tensor(random_ids(2, 7))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (2, 7, VOCAB)
    assert len(out.hidden_states) == model.config.n_layer + 1
    assert all(h.shape == (2, 7, 32) for h in out.hidden_states)
    assert [a.shape for a in out.attentions] == [(2, 4, 7, 7)] * model.config.n_layer
    assert isinstance(out.past_key_values, DynamicCache) and out.past_key_values.get_seq_length() == 7
    with torch.no_grad():
        as_tuple = model(ids, use_cache=False, return_dict=False)
    # output_attentions spells the softmax out; without it the fused SDPA kernel runs: equal to f32 rounding
    assert len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], out.logits, rtol=1e-5, atol=1e-6)


def test_causality(model):
    """Changing token t never changes the logits at positions < t."""
    ids = random_ids(1, 12)
    changed = ids.copy()
    changed[0, 7] = (changed[0, 7] + 1) % VOCAB
    before, after = torch_logits(model, ids), torch_logits(model, changed)
    np.testing.assert_array_equal(before[:, :7], after[:, :7])
    assert not np.allclose(before[:, 7:], after[:, 7:])


def test_kv_cache_decoding_equals_full_forward(model):
    """Prefill 4 tokens, then feed one token at a time with the returned cache: same logits as one pass."""
    ids = torch.as_tensor(random_ids(2, 10))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :4])
        pieces = [out.logits]
        for t in range(4, 10):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values)
            pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert out.past_key_values.get_seq_length() == 10


def test_left_padding_matches_unpadded(model):
    """A left-padded batch gives, on its real tokens, the logits of each sequence run alone."""
    ids, mask, positions = left_padded_batch()
    batched = torch_logits(model, ids, mask, positions)
    np.testing.assert_allclose(batched[0], torch_logits(model, ids[:1])[0], atol=1e-5)
    np.testing.assert_allclose(batched[1, 4:], torch_logits(model, ids[1:, 4:])[0], atol=1e-5)


def test_generate_with_cache_equals_without(model):
    ids = torch.as_tensor(random_ids(2, 5))
    cached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_too_long_input_is_a_clear_error(model):
    with pytest.raises(ValueError, match="n_positions=32"):
        model(torch.zeros((1, 33), dtype=torch.long))


def test_loss_is_next_token_cross_entropy(model):
    ids = torch.as_tensor(random_ids(2, 9))
    labels = ids.clone()
    labels[0, 5] = -100  # ignored target
    with torch.no_grad():
        out = model(ids, labels=labels)
    logits, targets = out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1)
    keep = targets != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)


def test_init_follows_gpt2():
    """normal(initializer_range), residual projections scaled by 1/sqrt(2 n_layer), LayerNorm 1/0, biases 0."""
    torch.manual_seed(0)
    config = tiny_config(n_embd=128, n_layer=8, n_head=4, initializer_range=0.05)
    model = PyGPTForCausalLM(config)
    block = model.transformer.h[3]
    scaled = 0.05 / np.sqrt(2 * 8)
    for weight, std in [
        (model.transformer.wte.weight, 0.05),
        (block.attn.qkv_proj.weight, 0.05),
        (block.mlp.c_fc.weight, 0.05),
        (block.attn.o_proj.weight, scaled),
        (block.mlp.c_proj.weight, scaled),
    ]:
        assert abs(weight.std().item() - std) < 0.1 * std
    assert torch.all(block.attn.o_proj.bias == 0) and torch.all(block.ln_1.weight == 1)


def test_tied_and_untied_heads_survive_save_and_load(tmp_path):
    for tie in (True, False):
        folder = tmp_path / f"tie-{tie}"
        PyGPTForCausalLM(tiny_config(tie_word_embeddings=tie)).save_pretrained(folder)
        with safe_open(folder / "model.safetensors", "pt") as f:
            saved_names = set(f.keys())  # safe_open is not a dict
        assert ("lm_head.weight" in saved_names) is not tie
        loaded = AutoModelForCausalLM.from_pretrained(folder)
        shares = loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
        assert shares is tie


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = PyGPTForCausalLM(tiny_config(position_embedding_type="learned")).eval()
    model.save_pretrained(tmp_path)
    # the folder is a complete remote-code checkpoint: weights, config with auto_map, the travelling files
    assert {"model.safetensors", "config.json", *TRAVELLING_FILES} <= {p.name for p in tmp_path.iterdir()}
    assert model.config.auto_map["AutoModelForCausalLM"] == "modeling_pygpt.PyGPTForCausalLM"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is PyGPTForCausalLM
    ids = random_ids(2, 6)
    np.testing.assert_array_equal(torch_logits(loaded, ids), torch_logits(model, ids))
    base = AutoModel.from_pretrained(tmp_path)  # the LM's checkpoint also loads as the bare decoder
    assert type(base) is PyGPTModel
    with torch.no_grad():
        torch.testing.assert_close(
            base(torch.as_tensor(ids)).last_hidden_state, model.transformer(torch.as_tensor(ids)).last_hidden_state
        )


def test_pipeline_text_generation(tmp_path):
    """pipeline("text-generation", model=DIR) on a folder with model + tokenizer gives the greedy text."""
    text = "To be, or not to be, that is the question. " * 20
    tokenizer = train_tokenizer([text], vocab_size=VOCAB, show_progress=False)
    torch.manual_seed(2)
    model = PyGPTForCausalLM(tiny_config())
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path))
    result = generator("To be, or", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    ids = AutoTokenizer.from_pretrained(tmp_path)("To be, or", return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert result == tokenizer.decode(expected[0])
    assert result.startswith("To be, or") and len(result) > len("To be, or")


# ---- one checkpoint, two frameworks -------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("position_embedding_type", POSITIONS)
def test_flax_checkpoint_loads_in_pytorch(tmp_path, position_embedding_type, tie):
    """A folder saved by the Flax model loads with plain AutoModelForCausalLM.from_pretrained (no from_flax),
    with the same logits to 1e-4 on a left-padded batch; the twin's save loads back into Flax."""
    config = tiny_config(position_embedding_type=position_embedding_type, tie_word_embeddings=tie)
    flax_model = FlaxPyGPTForCausalLM(config, seed=3)
    flax_model.save_pretrained(tmp_path / "flax")
    torch_model = AutoModelForCausalLM.from_pretrained(tmp_path / "flax")
    assert type(torch_model) is PyGPTForCausalLM
    assert (torch_model.lm_head.weight.data_ptr() == torch_model.transformer.wte.weight.data_ptr()) is tie

    ids, mask, positions = left_padded_batch()
    expected = flax_logits(flax_model, ids, mask, positions)
    np.testing.assert_allclose(torch_logits(torch_model, ids, mask, positions), expected, atol=1e-4, rtol=0)

    torch_model.save_pretrained(tmp_path / "torch")
    again = FlaxAutoModelForCausalLM.from_pretrained(tmp_path / "torch")
    np.testing.assert_allclose(flax_logits(again, ids, mask, positions), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "position_embedding_type, tie", [("sinusoidal", True), ("learned", False), ("rope", True)]
)
def test_greedy_generate_matches_flax(tmp_path, position_embedding_type, tie):
    """Left-padded greedy generation: the twin (DynamicCache) emits the Flax model's tokens."""
    config = tiny_config(position_embedding_type=position_embedding_type, tie_word_embeddings=tie)
    flax_model = FlaxPyGPTForCausalLM(config, seed=6)
    flax_model.save_pretrained(tmp_path)
    torch_model = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids, mask, _ = left_padded_batch()
    flax_tokens, torch_tokens = greedy_both(flax_model, torch_model, ids, mask)
    np.testing.assert_array_equal(torch_tokens, flax_tokens)


def test_trained_flax_checkpoint_matches_in_pytorch(tmp_path):
    """After real optimizer steps (weights far from init) the twin still matches Flax: logits and greedy text."""
    config = tiny_config(position_embedding_type="rope")
    flax_model = FlaxPyGPTForCausalLM(config, seed=4)
    batch = jnp.asarray(np.tile(np.arange(40, 56), (4, 1)) + np.arange(4)[:, None])  # (4, 16) rising runs

    def loss_fn(params):
        logits = flax_model(batch[:, :-1], params=params).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    optimizer = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = flax_model.params, optimizer.init(flax_model.params)
    first = None
    for _ in range(30):
        params, opt_state, loss = step(params, opt_state)
        first = loss if first is None else first
    assert float(loss) < 0.5 * float(first)  # it did learn something
    flax_model.params = params
    flax_model.save_pretrained(tmp_path)

    torch_model = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids, mask, positions = left_padded_batch()
    ids[:, 4:] = np.asarray(batch[:2, :8])
    np.testing.assert_allclose(
        torch_logits(torch_model, ids, mask, positions), flax_logits(flax_model, ids, mask, positions), atol=1e-4, rtol=0
    )
    flax_tokens, torch_tokens = greedy_both(flax_model, torch_model, ids, mask)
    np.testing.assert_array_equal(torch_tokens, flax_tokens)
    assert list(torch_tokens[0, 12:15]) == [48, 49, 50]  # continues the run it learned


def test_local_folder_named_pygpt_loads_by_name(tmp_path, monkeypatch):
    """`AutoModel.from_pretrained("pygpt")` with a folder of that name in the working directory."""
    monkeypatch.chdir(tmp_path)
    FlaxPyGPTForCausalLM(tiny_config(), seed=0).save_pretrained("pygpt")
    assert type(AutoModel.from_pretrained("pygpt")) is PyGPTModel
    assert type(AutoModelForCausalLM.from_pretrained("pygpt")) is PyGPTForCausalLM


def test_import_without_torch_registers_flax_only():
    """torch is an optional extra: without it `import pygpt_hf` works and the Flax side is still registered."""
    code = (
        "import sys; sys.modules['torch'] = None  # what `import torch` sees on a machine without it\n"
        "import pygpt_hf\n"
        "from transformers import FlaxAutoModelForCausalLM\n"
        "assert 'pygpt_hf.modeling_pygpt' not in sys.modules and not hasattr(pygpt_hf, 'PyGPTModel')\n"
        "assert FlaxAutoModelForCausalLM.from_config(pygpt_hf.PyGPTConfig(vocab_size=300, n_embd=32, n_layer=1,"
        " n_head=4)).__class__.__name__ == 'FlaxPyGPTForCausalLM'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_pushed_twin_carries_its_code(hub, tmp_path):
    """Both ways of pushing the twin upload the travelling files with the weights, and the repo loads back."""
    torch.manual_seed(3)
    model = PyGPTForCausalLM(tiny_config(position_embedding_type="rope")).eval()
    via_save, via_push = hub.repo_id("twin-save"), hub.repo_id("twin-push")
    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id=via_save)
    model.push_to_hub(via_push)
    ids = random_ids(1, 6)
    for repo_id in (via_save, via_push):
        files = set(hub.api().list_repo_files(repo_id))
        assert {"config.json", "model.safetensors", *TRAVELLING_FILES} <= files, (repo_id, files)
        hub.fresh_cache()
        np.testing.assert_array_equal(torch_logits(AutoModelForCausalLM.from_pretrained(repo_id), ids),
                                      torch_logits(model, ids))
