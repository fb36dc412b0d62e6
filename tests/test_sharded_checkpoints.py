"""Big checkpoints: `save_pretrained(max_shard_size=...)` writes sharded safetensors both frameworks load.

A tiny model saved with a small `max_shard_size` is split into 3+ `model-0000i-of-0000N.safetensors` files
and transformers' `model.safetensors.index.json`. The PyTorch twin loads it through transformers' own
sharded loader (4.57 here, 5.x in its venv, remote code in a process without pygpt_hf), the Flax model
through our `from_pretrained` (4.57's Flax loader refuses sharded safetensors); the logits equal the
unsharded model's. A save replaces the weights as a set, a damaged shard or index is named, and a sharded
repo goes to the loopback Hub and back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax.numpy as jnp
from safetensors import safe_open
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, FlaxAutoModelForCausalLM

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig, PyGPTForCausalLM
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.modeling_flax_pygpt import FlaxPyGPTModel

HERE = Path(__file__).parent
SHARD = "20kB"  # the tiny model's weights are ~140 kB: 7 shards, the biggest tensor (wte, 38 kB) alone in one
IDS = np.array([[256, 84, 111, 32, 98, 101, 44, 299], [72, 105, 33, 10, 258, 290, 257, 257]])
MASK = np.array([[1] * 8, [1] * 6 + [0, 0]])
SHARD_NAME = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")


def tiny(tied: bool = True) -> FlaxPyGPTForCausalLM:
    config = PyGPTConfig(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                         position_embedding_type="rope", tie_word_embeddings=tied)
    return FlaxPyGPTForCausalLM(config, seed=3)


def flax_logits(model) -> np.ndarray:
    return np.asarray(model(jnp.asarray(IDS), attention_mask=jnp.asarray(MASK)).logits)


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(IDS), attention_mask=torch.as_tensor(MASK)).logits.numpy()


def shards_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if SHARD_NAME.fullmatch(p.name))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The Flax model (untied: the LM head is a tensor of its own) and its PyTorch twin, same weights."""
    flax_model = tiny(tied=False)
    folder = tmp_path_factory.mktemp("unsharded")
    flax_model.save_pretrained(folder)
    return flax_model, PyGPTForCausalLM.from_pretrained(folder).eval()


def save(models, framework: str, folder: Path, **kwargs) -> Path:
    (models[0] if framework == "flax" else models[1]).save_pretrained(folder, **kwargs)
    return folder


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_sharded_save_writes_transformers_index_and_the_same_tensors(models, tmp_path, framework):
    whole = load_file(save(models, framework, tmp_path / "one") / "model.safetensors")
    folder = save(models, framework, tmp_path / "sharded", max_shard_size=SHARD)
    names = shards_of(folder)
    assert len(names) >= 3 and not (folder / "model.safetensors").exists()
    assert [SHARD_NAME.fullmatch(n).groups() for n in names] == \
        [(f"{i:05d}", f"{len(names):05d}") for i in range(1, len(names) + 1)]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index) == {"metadata", "weight_map"}
    assert set(index["weight_map"]) == set(whole) and set(index["weight_map"].values()) == set(names)
    total = 0
    for name in names:
        with safe_open(folder / name, framework="numpy") as f:
            assert f.metadata() == {"format": "pt"}
            assert {k for k, v in index["weight_map"].items() if v == name} == set(f.keys())
            sizes = [f.get_tensor(k).nbytes for k in f.keys()]  # noqa: SIM118 - safe_open is no dict
            for key in f.keys():  # noqa: SIM118
                np.testing.assert_array_equal(f.get_tensor(key), whole[key])  # same names, same layout
        total += sum(sizes)
        assert sum(sizes) <= 20_000 or len(sizes) == 1  # only a tensor bigger than the limit stands alone
    assert index["metadata"]["total_size"] == total == sum(v.nbytes for v in whole.values())
    assert index["metadata"]["total_parameters"] == sum(v.size for v in whole.values())


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_a_sharded_folder_loads_in_flax_and_pytorch_with_the_unsharded_logits(models, tmp_path, framework):
    expected = flax_logits(models[0])
    folder = save(models, framework, tmp_path / "sharded", max_shard_size=SHARD)
    for flax_model in (FlaxPyGPTForCausalLM.from_pretrained(folder), FlaxAutoModelForCausalLM.from_pretrained(folder)):
        assert type(flax_model).__name__ == "FlaxPyGPTForCausalLM"
        np.testing.assert_array_equal(flax_logits(flax_model), expected)
    for twin in (PyGPTForCausalLM.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)):
        np.testing.assert_allclose(torch_logits(twin), expected, atol=1e-5, rtol=0)
    model, params = FlaxPyGPTForCausalLM.from_pretrained(folder, _do_init=False)  # transformers' (model, params)
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(IDS), attention_mask=jnp.asarray(MASK),
                                                   params=params).logits), expected)
    saved = json.loads((folder / "generation_config.json").read_text())
    loaded = FlaxPyGPTForCausalLM.from_pretrained(folder).generation_config.to_dict()
    assert {k: loaded[k] for k in saved} == saved  # the generation config came along


def test_flax_reads_the_shards_one_at_a_time(models, tmp_path, monkeypatch):
    """Peak host memory stays near one shard plus the model: never two shards open, each tensor read once."""
    import safetensors

    folder = save(models, "flax", tmp_path / "sharded", max_shard_size=SHARD)
    opened, open_now, reads = [], [0], []
    real_safe_open = safetensors.safe_open

    class Recording:
        def __init__(self, path, framework):
            self.inner = real_safe_open(path, framework=framework)
            opened.append(os.path.basename(path))

        def __enter__(self):
            open_now[0] += 1
            assert open_now[0] == 1, "two shards open at once"
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            open_now[0] -= 1
            return self.inner.__exit__(*exc)

        def get_tensor(self, name):
            reads.append(name)
            return self.f.get_tensor(name)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(safetensors, "safe_open", Recording)
    loaded = FlaxPyGPTForCausalLM.from_pretrained(folder)
    monkeypatch.undo()
    assert sorted(opened) == shards_of(folder)
    assert sorted(reads) == sorted(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])
    np.testing.assert_array_equal(flax_logits(loaded), flax_logits(models[0]))


def test_base_model_and_lm_load_each_other_from_shards(tmp_path):
    lm = tiny(tied=True)
    lm.save_pretrained(tmp_path / "lm", max_shard_size=SHARD)
    base = FlaxPyGPTModel.from_pretrained(tmp_path / "lm")
    np.testing.assert_array_equal(np.asarray(base(jnp.asarray(IDS)).last_hidden_state),
                                  np.asarray(FlaxPyGPTModel(lm.config, _do_init=False)(
                                      jnp.asarray(IDS), params=lm.params["transformer"]).last_hidden_state))
    base.save_pretrained(tmp_path / "base", max_shard_size=SHARD)
    assert len(shards_of(tmp_path / "base")) >= 3
    again = FlaxPyGPTForCausalLM.from_pretrained(tmp_path / "base")  # tied: nothing is missing
    np.testing.assert_array_equal(flax_logits(again), flax_logits(lm))


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_a_save_replaces_the_weights_as_a_set_and_keeps_other_files(models, tmp_path, framework):
    folder = save(models, framework, tmp_path / "ckpt")
    (folder / "README.md").write_text("my notes")
    (folder / "extra").mkdir()
    (folder / "extra" / "state.json").write_text("{}")
    save(models, framework, folder, max_shard_size=SHARD)
    many = shards_of(folder)
    assert len(many) >= 3 and not (folder / "model.safetensors").exists()  # no stale single file for loaders to prefer
    save(models, framework, folder, max_shard_size="60kB")
    fewer = shards_of(folder)
    assert 2 <= len(fewer) < len(many)  # the extra old shards are gone, not just overwritten
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(fewer)
    save(models, framework, folder)
    assert shards_of(folder) == [] and not (folder / "model.safetensors.index.json").exists()
    assert (folder / "model.safetensors").is_file()
    assert (folder / "README.md").read_text() == "my notes" and (folder / "extra" / "state.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging folder left behind
    np.testing.assert_allclose(torch_logits(PyGPTForCausalLM.from_pretrained(folder)), flax_logits(models[0]),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_a_save_that_fails_midway_leaves_the_old_folder_untouched(models, tmp_path, framework, monkeypatch):
    folder = save(models, framework, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    written = []

    def fail_on_the_third_shard(tensors, path, metadata=None):
        written.append(path)
        if len(written) == 3:
            raise OSError("disk full (simulated)")
        return real(tensors, path, metadata=metadata)

    if framework == "flax":
        import safetensors.numpy

        real = safetensors.numpy.save_file
        monkeypatch.setattr(safetensors.numpy, "save_file", fail_on_the_third_shard)
    else:
        import transformers.modeling_utils

        real = transformers.modeling_utils.safe_save_file
        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fail_on_the_third_shard)
    with pytest.raises(OSError, match="disk full"):
        save(models, framework, folder, max_shard_size=SHARD)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("loader", [FlaxPyGPTForCausalLM, PyGPTForCausalLM], ids=["flax", "torch"])
@pytest.mark.parametrize("damage", ["truncated shard", "missing shard", "corrupt index"])
def test_a_damaged_shard_or_index_is_an_error_naming_the_file(models, tmp_path, loader, damage):
    folder = save(models, "flax", tmp_path / "ckpt", max_shard_size=SHARD)
    shard = folder / shards_of(folder)[1]
    index = folder / "model.safetensors.index.json"
    if damage == "truncated shard":
        truncate(shard)
        named = shard
    elif damage == "missing shard":
        shard.unlink()
        named = shard
    else:
        index.write_text('{"weight_map": ')
        named = index
    with pytest.raises(OSError, match=re.escape(str(named))):
        loader.from_pretrained(folder)


def test_a_size_that_is_no_size_is_refused(models, tmp_path):
    for model in models:
        for bad in ("lots", 0, -3):
            with pytest.raises(ValueError, match=re.escape(f"max_shard_size={bad!r}")):
                model.save_pretrained(tmp_path / "x", max_shard_size=bad)
    assert not (tmp_path / "x").exists()


# ---- the Hub ------------------------------------------------------------------------------------------------


def test_sharded_push_and_pull_through_the_hub(models, hub, tmp_path):
    """A sharded push over an unsharded one leaves no stale model.safetensors in the repo; both frameworks
    pull it from a fresh cache, a revision included; the twin's push_to_hub() shards too."""
    flax_model, twin = models
    repo = hub.repo_id("sharded")
    flax_model.save_pretrained(tmp_path / "first", push_to_hub=True, repo_id=repo)
    assert "model.safetensors" in hub.api().list_repo_files(repo)
    flax_model.save_pretrained(tmp_path / "second", push_to_hub=True, repo_id=repo, max_shard_size=SHARD,
                               commit_message="sharded")
    files = hub.api().list_repo_files(repo)
    assert "model.safetensors" not in files and "model.safetensors.index.json" in files
    assert sorted(f for f in files if SHARD_NAME.fullmatch(f)) == shards_of(tmp_path / "second")
    assert hub.api().list_repo_commits(repo)[0].title == "sharded"

    other = tiny(tied=False)  # different weights on a branch
    other.save_pretrained(tmp_path / "branch", push_to_hub=True, repo_id=repo, max_shard_size="50kB", revision="v2")

    hub.fresh_cache()
    expected = flax_logits(flax_model)
    np.testing.assert_array_equal(flax_logits(FlaxPyGPTForCausalLM.from_pretrained(repo)), expected)
    np.testing.assert_allclose(torch_logits(AutoModelForCausalLM.from_pretrained(repo)), expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(flax_logits(FlaxPyGPTForCausalLM.from_pretrained(repo, revision="v2")),
                                  flax_logits(other))
    np.testing.assert_allclose(torch_logits(PyGPTForCausalLM.from_pretrained(repo, revision="v2")), flax_logits(other),
                               atol=1e-5, rtol=0)

    twin_repo = hub.repo_id("twin-sharded")
    twin.push_to_hub(twin_repo, max_shard_size=SHARD)
    twin_files = hub.api().list_repo_files(twin_repo)
    assert "model.safetensors.index.json" in twin_files and len([f for f in twin_files if SHARD_NAME.fullmatch(f)]) >= 3
    twin.save_pretrained(tmp_path / "twin", push_to_hub=True, repo_id=twin_repo)  # back to one file
    twin_files = hub.api().list_repo_files(twin_repo)
    assert "model.safetensors" in twin_files and not any(SHARD_NAME.fullmatch(f) for f in twin_files)
    assert "model.safetensors.index.json" not in twin_files
    hub.fresh_cache()
    np.testing.assert_array_equal(flax_logits(FlaxPyGPTForCausalLM.from_pretrained(twin_repo)),
                                  flax_logits(FlaxPyGPTForCausalLM.from_pretrained(tmp_path / "twin")))


# ---- remote code: 4.57 without pygpt_hf, and transformers 5.x ----------------------------------------------


def checkpoint_with_tokenizer(models, folder: Path) -> Path:
    save(models, "flax", folder, max_shard_size=SHARD)
    train_tokenizer(["To be, or not to be, that is the question. " * 10], vocab_size=300,
                    show_progress=False).save_pretrained(folder)
    return folder


def test_a_sharded_folder_loads_as_remote_code_without_pygpt_hf(models, tmp_path):
    from test_remote_code import run_without_pygpt

    folder = checkpoint_with_tokenizer(models, tmp_path / "checkpoint")
    positions = np.maximum(MASK.cumsum(-1) - 1, 0)
    (tmp_path / "spec.json").write_text(json.dumps({"ids": IDS.tolist(), "mask": MASK.tolist(),
                                                    "position_ids": positions.tolist(), "texts": ["To be"]}))
    got, arrays = run_without_pygpt(folder, tmp_path)
    assert all(module.startswith("transformers_modules.") for module in got["modules"].values()), got["modules"]
    expected = np.asarray(models[0](jnp.asarray(IDS), attention_mask=jnp.asarray(MASK),
                                    position_ids=jnp.asarray(positions)).logits)
    np.testing.assert_allclose(arrays["torch_logits"], expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(arrays["flax_logits"], expected)


TF5_LOADER = """
import sys, numpy as np, torch, transformers
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM
folder, ids, mask, out = sys.argv[1], *map(np.load, sys.argv[2:4]), sys.argv[4]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    logits = model(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits
save_file({"logits": logits.numpy()}, out, metadata={"version": transformers.__version__,
                                                      "module": type(model).__module__})
"""


def test_transformers5_loads_the_sharded_folder(models, tmp_path):
    from tf5_env import TF5_REQUIREMENTS, TF5EnvError, ensure_tf5_python

    try:
        python = ensure_tf5_python()
    except TF5EnvError as err:  # a broken environment is a failure to fix, never a skip
        pytest.fail(f"could not build the transformers 5.x venv ({', '.join(TF5_REQUIREMENTS)}):\n{err}")
    folder = checkpoint_with_tokenizer(models, tmp_path / "checkpoint")
    np.save(tmp_path / "ids.npy", IDS)
    np.save(tmp_path / "mask.npy", MASK)
    (tmp_path / "load.py").write_text(TF5_LOADER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_MODULES_CACHE=str(tmp_path / "hf-modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([str(python), "-I", str(tmp_path / "load.py"), str(folder), str(tmp_path / "ids.npy"),
                             str(tmp_path / "mask.npy"), str(tmp_path / "out.safetensors")], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"transformers 5.x could not load the shards:\n{result.stderr[-5000:]}"
    with safe_open(tmp_path / "out.safetensors", framework="numpy") as f:
        meta, logits = f.metadata(), f.get_tensor("logits")
    assert meta["version"].startswith("5.") and meta["module"].startswith("transformers_modules.")
    np.testing.assert_allclose(logits, flax_logits(models[0]), atol=1e-5, rtol=0)


def test_the_harness_shards_its_checkpoints_above_the_threshold(models, tmp_path, monkeypatch):
    """save_checkpoint passes MAX_SHARD_SIZE to save_pretrained; publish leaves only the newest layout on top."""
    from pygpt_hf.training import checkpoint
    from pygpt_hf.training.settings import TrainSettings

    flax_model = models[0]
    tokenizer = train_tokenizer(["To be, or not to be. " * 10], vocab_size=300, show_progress=False)
    settings = TrainSettings(output_dir=str(tmp_path))
    common = {"model": flax_model, "params": flax_model.params, "opt_state": {"mu": np.zeros(3, np.float32)},
              "tokenizer": tokenizer, "settings": settings,
              "data_states": {0: ({"buffer": np.zeros(2, np.int32)}, {"epoch": 0})}}
    first = checkpoint.save_checkpoint(str(tmp_path), 1, **common)
    checkpoint.publish(first, str(tmp_path))
    assert (tmp_path / "model.safetensors").is_file() and shards_of(tmp_path) == []
    monkeypatch.setattr(checkpoint, "MAX_SHARD_SIZE", SHARD)
    second = checkpoint.save_checkpoint(str(tmp_path), 2, **common)
    assert len(shards_of(Path(second))) >= 3
    assert (Path(second) / "training_state" / "data-0.json").is_file()  # the data shard's position survived the save
    checkpoint.publish(second, str(tmp_path))
    assert shards_of(tmp_path) == shards_of(Path(second)) and not (tmp_path / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging debris
    np.testing.assert_array_equal(flax_logits(FlaxPyGPTForCausalLM.from_pretrained(tmp_path)), flax_logits(flax_model))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
