"""Nothing ignored (issue 14): every keyword that `__call__`/`forward`, `generate`, `save_pretrained`,
`from_pretrained` and the tokenizers' constructors accept either works or raises.

Each test walks a signature (ours, and transformers' where ours forwards `**kwargs` to it) against a table
that says, for every name, what it does, and runs that table entry's check: a keyword the table does not
know fails the walk, so a new keyword needs a decision here. Tiny models; the Hub is the loopback server.
"""

import inspect
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax
import jax.numpy as jnp
from transformers import FlaxPreTrainedModel, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.generation.flax_utils import FlaxGenerationMixin

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.modeling_flax_pygpt import flax_params_to_pytorch_layout
from pygpt_hf.modeling_pygpt import PyGPTForCausalLM
from pygpt_hf.tokenization_pygpt import PyGPTTokenizer
from pygpt_hf.tokenization_pygpt_fast import PyGPTTokenizerFast

VOCAB, EOS = 300, 307
IDS = np.random.RandomState(0).randint(0, 256, (2, 6))


@pytest.fixture(scope="module")
def flax_model():
    config = PyGPTConfig(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2, embd_pdrop=0.1)
    return FlaxPyGPTForCausalLM(config, seed=0)


@pytest.fixture(scope="module")
def torch_model(flax_model):
    model = PyGPTForCausalLM(flax_model.config).eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in flax_params_to_pytorch_layout(flax_model.params).items()}
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model


@pytest.fixture(scope="module")
def folder(flax_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    flax_model.save_pretrained(path)
    return path


def walk(signature_of, table: dict, *args) -> None:
    """Every parameter of every signature has an entry; every entry's check passes."""
    names = set()
    for function in signature_of:
        names |= set(inspect.signature(function).parameters) - {"self", "cls"}
    unknown = sorted(names - set(table))
    assert not unknown, f"keywords without a decision in the table: {unknown}"
    for name in sorted(names):
        table[name](*args)


def raises(exc, call, match=None):
    with pytest.raises(exc, match=match):
        call()


def ok(condition) -> None:
    assert condition


def logits(out):
    return np.asarray(out.logits if hasattr(out, "logits") else out[0])


# ---- forward -----------------------------------------------------------------------------------------------


def test_flax_call_keywords(flax_model):
    m, base = flax_model, np.asarray(flax_model(IDS).logits)
    table = {
        "input_ids": lambda: None,  # every other check passes it
        "attention_mask": lambda: ok(not np.allclose(logits(m(IDS, attention_mask=np.array([[0] + [1] * 5] * 2))), base)),
        "position_ids": lambda: ok(not np.allclose(logits(m(IDS, position_ids=np.flip(np.arange(6))[None])), base)),
        "params": lambda: ok(np.all(logits(m(IDS, params=jax.tree_util.tree_map(jnp.zeros_like, m.params))) == 0)),
        "past_key_values": lambda: ok(m(IDS, past_key_values=m.init_cache(2, 16)).past_key_values is not None),
        "dropout_rng": lambda: ok(not np.allclose(logits(m(IDS, train=True, dropout_rng=jax.random.PRNGKey(1))), base)),
        "train": lambda: raises(ValueError, lambda: m(IDS, train=True), "dropout_rng"),
        "output_attentions": lambda: ok(len(m(IDS, output_attentions=True).attentions) == 1),
        "output_hidden_states": lambda: ok(len(m(IDS, output_hidden_states=True).hidden_states) == 2),
        "return_dict": lambda: ok(isinstance(m(IDS, return_dict=False), tuple)),
    }
    walk([type(m).__call__], table)


def test_torch_forward_keywords(torch_model):
    m, t = torch_model, torch.as_tensor(IDS)
    with torch.no_grad():
        base = m(t).logits
        table = {
            "input_ids": lambda: None,
            "attention_mask": lambda: ok(not torch.allclose(m(t, attention_mask=torch.tensor([[0] + [1] * 5] * 2)).logits, base)),
            "position_ids": lambda: ok(not torch.allclose(m(t, position_ids=torch.arange(5, -1, -1)[None]).logits, base)),
            "past_key_values": lambda: ok(m(t[:, 3:], past_key_values=m(t[:, :3]).past_key_values).logits.shape == (2, 3, VOCAB)),
            "cache": lambda: ok(m(t[:, 3:], cache=m(t[:, :3]).past_key_values).logits.shape == (2, 3, VOCAB)),
            "inputs_embeds": lambda: ok(torch.allclose(m(inputs_embeds=m.transformer.wte(t)).logits, base)),
            "labels": lambda: ok(m(t, labels=t).loss.item() > 0),
            "use_cache": lambda: ok(m(t, use_cache=False).past_key_values is None),
            "output_attentions": lambda: ok(len(m(t, output_attentions=True).attentions) == 1),
            "output_hidden_states": lambda: ok(len(m(t, output_hidden_states=True).hidden_states) == 2),
            "return_dict": lambda: ok(isinstance(m(t, return_dict=False), tuple)),
            "kwargs": lambda: raises(TypeError, lambda: m(t, attn_mask=t), "attn_mask"),  # a typo is an error
        }
        walk([type(m).forward], table)


# ---- generate ----------------------------------------------------------------------------------------------


def test_flax_generate_keywords(flax_model):
    m, prompt = flax_model, jnp.asarray(IDS[:1, :4])
    gen = lambda **kw: np.asarray(m.generate(prompt, max_new_tokens=3, eos_token_id=EOS, **kw).sequences)
    greedy = gen()
    table = {
        "input_ids": lambda: ok(greedy.shape == (1, 7)),
        "generation_config": lambda: ok(gen(generation_config=GenerationConfig(do_sample=True, top_k=2)).shape == (1, 7)),
        "prng_key": lambda: ok(any(not np.array_equal(gen(do_sample=True, prng_key=jax.random.PRNGKey(s)), greedy)
                                   for s in range(4))),
        "trace": lambda: np.testing.assert_array_equal(gen(trace=False), greedy),
        "params": lambda: ok(list(gen(params=jax.tree_util.tree_map(jnp.zeros_like, m.params))[0, 4:]) == [0, 0, 0]),
        "logits_processor": lambda: _forced_token(gen),
        # kwargs: generation settings Flax reads work, settings it would ignore and typos raise
        "kwargs": lambda: (raises(ValueError, lambda: gen(repetition_penalty=1.2), "repetition_penalty"),
                           raises(ValueError, lambda: gen(output_scores=True), "output_scores"),
                           raises((ValueError, TypeError), lambda: gen(atention_mask=None), "atention_mask")),
    }
    walk([FlaxPyGPTForCausalLM.generate, FlaxGenerationMixin.generate], table)


def _forced_token(gen):
    from transformers.generation.flax_logits_process import FlaxLogitsProcessor, FlaxLogitsProcessorList

    class Force5(FlaxLogitsProcessor):
        def __call__(self, input_ids, scores, cur_len):
            return jnp.full_like(scores, -1e9).at[:, 5].set(0.0)

    assert list(gen(logits_processor=FlaxLogitsProcessorList([Force5()]))[0, 4:]) == [5, 5, 5]


def test_torch_generate_keywords(torch_model):
    """Ours names inputs, generation_config and **kwargs and hands all of them to transformers' generate,
    which implements every one of its named parameters; ours adds the length and input checks."""
    m, prompt = torch_model, torch.as_tensor(IDS[:1, :4])
    handled_by_transformers = set(inspect.signature(GenerationMixin.generate).parameters) - {"self", "kwargs"}
    table = {name: (lambda: None) for name in handled_by_transformers}
    table.update({
        "inputs": lambda: ok(m.generate(prompt, max_new_tokens=2, eos_token_id=EOS).shape == (1, 6)),
        "generation_config": lambda: ok(m.generate(prompt, generation_config=GenerationConfig(
            max_new_tokens=3, eos_token_id=EOS, pad_token_id=257)).shape == (1, 7)),
        "kwargs": lambda: (raises(ValueError, lambda: m.generate(prompt, max_new_tokens=0), "max_new_tokens"),
                           raises(ValueError, lambda: m.generate(prompt, max_new_tokens=2, atention_mask=prompt), "atention_mask")),
    })
    walk([type(m).generate, GenerationMixin.generate], table)
    assert m.generate(prompt, max_new_tokens=2, eos_token_id=EOS, stopping_criteria=[lambda ids, scores, **kw: torch.ones(
        1, dtype=torch.bool)]).shape == (1, 5)  # one transformers-handled keyword, seen working through our override


# ---- save_pretrained / from_pretrained ----------------------------------------------------------------------


def test_flax_save_pretrained_keywords(flax_model, tmp_path, hub):
    m = flax_model
    table = {
        "save_directory": lambda: ok(m.save_pretrained(tmp_path / "a") or (tmp_path / "a" / "model.safetensors").is_file()),
        "params": lambda: _saved_params_differ(m, tmp_path / "b"),
        "max_shard_size": lambda: _sharded(m, tmp_path / "c"),
        "safe_serialization": lambda: raises(ValueError, lambda: m.save_pretrained(tmp_path / "d", safe_serialization=False),
                                             "safe_serialization"),
        "push_to_hub": lambda: _pushed(hub, lambda repo, **kw: m.save_pretrained(tmp_path / "e", push_to_hub=True, repo_id=repo, **kw)),
        "token": lambda: None,  # checked by push_to_hub (with the loopback token)
        "kwargs": lambda: (raises(TypeError, lambda: m.save_pretrained(tmp_path / "f", max_shard=1), "max_shard"),
                           raises(ValueError, lambda: m.save_pretrained(tmp_path / "g", commit_message="x"), "push_to_hub")),
    }
    walk([type(m).save_pretrained], table)


def _sharded(m, path):
    """A size below the weights writes shards and transformers' index; a size that is no size is refused."""
    raises(ValueError, lambda: m.save_pretrained(path, max_shard_size="lots"), "lots")
    m.save_pretrained(path, max_shard_size="4kB")
    assert (path / "model.safetensors.index.json").is_file() and not (path / "model.safetensors").exists()
    assert len(list(path.glob("model-*-of-*.safetensors"))) >= 2


def _saved_params_differ(m, path):
    m.save_pretrained(path, params=jax.tree_util.tree_map(lambda p: p * 0 + 1, m.params))
    assert np.all(np.asarray(FlaxPyGPTForCausalLM.from_pretrained(path).params["transformer"]["ln_f"]["bias"]) == 1)


def _pushed(hub, save):
    repo = hub.repo_id("kw")
    save(repo, commit_message="from the keyword walk", token=hub.token)
    commits = hub.api().list_repo_commits(repo)
    assert any(c.title == "from the keyword walk" for c in commits)
    assert "model.safetensors" in hub.api().list_repo_files(repo)


def test_torch_save_pretrained_keywords(torch_model, tmp_path, hub):
    m = torch_model
    table = {
        "save_directory": lambda: ok(m.save_pretrained(tmp_path / "a") or (tmp_path / "a" / "model.safetensors").is_file()),
        "push_to_hub": lambda: _pushed(hub, lambda repo, **kw: m.save_pretrained(tmp_path / "e", push_to_hub=True, repo_id=repo, **kw)),
        "max_shard_size": lambda: _sharded(m, tmp_path / "c"),
        "safe_serialization": lambda: raises(ValueError, lambda: m.save_pretrained(tmp_path / "d", safe_serialization=False),
                                             "safe_serialization"),
        "is_main_process": lambda: ok(m.save_pretrained(tmp_path / "h", is_main_process=False) or
                                      not (tmp_path / "h" / "config.json").exists()),
        "state_dict": lambda: _torch_state_dict_saved(m, tmp_path / "i"),
        "save_function": lambda: None,  # transformers' (used only for non-safetensors files, which we refuse)
        "variant": lambda: ok(m.save_pretrained(tmp_path / "j", variant="v2") or (tmp_path / "j" / "model.v2.safetensors").is_file()),
        "token": lambda: None,  # checked by push_to_hub
        "save_peft_format": lambda: None,  # transformers' (PEFT adapters only)
        "args": lambda: raises(TypeError, lambda: m.save_pretrained(tmp_path / "k", True), "keyword"),
        "kwargs": lambda: raises(TypeError, lambda: m.save_pretrained(tmp_path / "l", max_shard=1), "max_shard"),
    }
    walk([type(m).save_pretrained, PreTrainedModel.save_pretrained], table)


def _torch_state_dict_saved(m, path):
    state = {k: v * 0 + 1 if k.endswith("ln_f.bias") else v for k, v in m.state_dict().items()}
    m.save_pretrained(path, state_dict=state)
    assert torch.all(PyGPTForCausalLM.from_pretrained(path).transformer.ln_f.bias == 1)


@pytest.fixture
def pushed(folder, hub):
    """A repo on the loopback Hub holding the checkpoint, and its commit id."""
    repo = hub.repo_id("load")
    hub.api().create_repo(repo)
    hub.api().upload_folder(repo_id=repo, folder_path=str(folder))
    return repo, hub.api().list_repo_commits(repo)[0].commit_id


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_from_pretrained_keywords(framework, folder, pushed, hub, tmp_path):
    """The named parameters of transformers' from_pretrained (ours forwards everything to it)."""
    cls = FlaxPyGPTForCausalLM if framework == "flax" else PyGPTForCausalLM
    base = FlaxPreTrainedModel.from_pretrained if framework == "flax" else PreTrainedModel.from_pretrained
    (repo, sha), cache = pushed, tmp_path / "cache"
    table = {
        "pretrained_model_name_or_path": lambda: cls.from_pretrained(folder),
        "model_args": lambda: raises(TypeError, lambda: cls.from_pretrained(folder, 1, 2, 3)),
        "config": lambda: ok(cls.from_pretrained(folder, config=PyGPTConfig.from_pretrained(
            folder, output_hidden_states=True)).config.output_hidden_states),
        "dtype": lambda: ok(cls.from_pretrained(folder, dtype=jnp.bfloat16).dtype == jnp.bfloat16),
        "cache_dir": lambda: ok(cls.from_pretrained(repo, cache_dir=cache) and any(cache.rglob("model.safetensors"))),
        "force_download": lambda: cls.from_pretrained(repo, cache_dir=cache, force_download=True),
        "local_files_only": lambda: raises(OSError, lambda: cls.from_pretrained(hub.repo_id("absent"), local_files_only=True)),
        "token": lambda: cls.from_pretrained(repo, token=hub.token, cache_dir=cache),
        "revision": lambda: (raises(OSError, lambda: cls.from_pretrained(repo, revision="no-such-branch", cache_dir=cache)),
                             cls.from_pretrained(repo, revision=sha, cache_dir=cache)),
        "ignore_mismatched_sizes": lambda: raises((ValueError, RuntimeError, OSError),
                                                  lambda: cls.from_pretrained(folder, vocab_size=VOCAB + 4)),
        "use_safetensors": lambda: cls.from_pretrained(folder, use_safetensors=True),
        "weights_only": lambda: cls.from_pretrained(folder, weights_only=True),
        "kwargs": lambda: raises(TypeError, lambda: cls.from_pretrained(folder, no_such_option=1)),
    }
    walk([base], table)


# ---- tokenizers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PyGPTTokenizer, PyGPTTokenizerFast])
def test_tokenizer_constructor_keywords(cls, tmp_path):
    train_tokenizer(["abc abd abe " * 30], vocab_size=270, show_progress=False).save_pretrained(tmp_path)
    size = len(json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8")))
    files = {"vocab_file": str(tmp_path / "vocab.json"), "merges_file": str(tmp_path / "merges.txt")}
    make = lambda **kw: cls(**files, **kw)
    table = {
        "vocab_file": lambda: ok(make().vocab_size == size),
        "merges_file": lambda: ok(make()("abc")["input_ids"] != [97, 98, 99]),  # merged
        "tokenizer_file": lambda: ok(cls(tokenizer_file=str(tmp_path / "tokenizer.json")).vocab_size == size),
        "errors": lambda: (ok(make(errors="replace").decode([0xC3]) == "\ufffd"),
                           raises(UnicodeDecodeError, lambda: make(errors="strict").decode([0xC3]))),
        "unk_token": lambda: ok(make(unk_token="a").unk_token == "a"),
        "bos_token": lambda: ok(make(bos_token="<|pad|>").bos_token_id == 257),
        "eos_token": lambda: ok(make(eos_token="<|pad|>").eos_token_id == 257),
        "pad_token": lambda: ok(make(pad_token="<|endoftext|>").pad_token_id == 256),
        "add_prefix_space": lambda: ok(make(add_prefix_space=True)("abc")["input_ids"] != make()("abc")["input_ids"]),
        "model_max_length": lambda: ok(len(make(model_max_length=3)("abc abd abe", truncation=True)["input_ids"]) == 3),
        "clean_up_tokenization_spaces": lambda: ok(make(clean_up_tokenization_spaces=True).decode(make()("a ,")["input_ids"]) == "a,"),
        "kwargs": lambda: ok(make(padding_side="left").padding_side == "left"),  # transformers' own options
    }
    walk([cls.__init__], table)
