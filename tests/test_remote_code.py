"""Remote code: a saved folder carries its code, so a machine without pygpt_hf loads it.

The folder is written here (Flax model + tokenizer, as training writes it) and then loaded in a subprocess
in which pygpt_hf cannot be imported (it is blocked even though this venv has it installed, editable), with
`trust_remote_code=True`: AutoConfig, AutoTokenizer, AutoModelForCausalLM (PyTorch) and
FlaxAutoModelForCausalLM. The subprocess writes what it got; the comparisons happen here.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")

import jax.numpy as jnp
from safetensors.numpy import load_file

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.configuration_pygpt import TRAVELLING_FILES

TEXTS = ["Hello world!", "  To be, or not to be <|endoftext|> é 日本\n\tend", "tab\tand  spaces  "]

# Runs with no pygpt_hf: a finder at the front of sys.meta_path refuses it (an editable install would
# otherwise find it through its own finder), and the repo is not on sys.path (cwd is a temp dir, -I mode).
LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoPygpt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pygpt_hf" or name.startswith("pygpt_hf."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process plays a clean machine)")
            return None

    sys.meta_path.insert(0, NoPygpt())
    try:
        import pygpt_hf  # noqa: F401
        raise SystemExit("pygpt_hf is importable in the remote-code subprocess; the test would prove nothing")
    except ModuleNotFoundError:
        pass

    import numpy as np, torch
    from safetensors.numpy import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, FlaxAutoModelForCausalLM

    folder, out = sys.argv[1], sys.argv[2]
    spec = json.load(open(folder + "/../spec.json"))
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    flax_model = FlaxAutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    ids, mask, pos = (np.array(spec[k]) for k in ("ids", "mask", "position_ids"))
    with torch.no_grad():
        torch_logits = model(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits
    greedy = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8, do_sample=False)
    flax_logits = flax_model(ids, attention_mask=mask, position_ids=pos).logits
    save_file({"torch_logits": torch_logits.numpy(), "flax_logits": np.asarray(flax_logits),
               "greedy": greedy.numpy()}, out + ".safetensors")
    encoded = [tokenizer(t)["input_ids"] for t in spec["texts"]]
    json.dump({
        "modules": {name: type(obj).__module__ for name, obj in
                    [("config", config), ("tokenizer", tokenizer), ("model", model), ("flax_model", flax_model)]},
        "classes": {name: type(obj).__name__ for name, obj in
                    [("config", config), ("tokenizer", tokenizer), ("model", model), ("flax_model", flax_model)]},
        "ids": encoded,
        "decoded": [tokenizer.decode(e) for e in encoded],
        "sys_path": sys.path,
    }, open(out + ".json", "w"))
    """
)


def run_without_pygpt(folder, work_dir) -> tuple[dict, dict]:
    """Load `folder` in a fresh interpreter that cannot import pygpt_hf; return (json results, arrays)."""
    script = work_dir / "load_remote.py"
    script.write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(work_dir / "hf_modules")  # no remote code cached by an earlier run
    # -I: isolated mode, neither PYTHONPATH nor the script's folder nor the cwd lands on sys.path
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(folder), str(work_dir / "out")],
        cwd=work_dir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"remote-code loading failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    return json.loads((work_dir / "out.json").read_text()), load_file(work_dir / "out.safetensors")


def test_saved_folder_loads_as_remote_code_without_pygpt_hf(tmp_path):
    config = PyGPTConfig(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                         position_embedding_type="rope", tie_word_embeddings=False)
    model = FlaxPyGPTForCausalLM(config, seed=7)
    tokenizer = train_tokenizer(["To be, or not to be, that is the question. " * 10], vocab_size=300,
                                show_progress=False)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert set(TRAVELLING_FILES) <= {p.name for p in folder.iterdir()}  # Flax save keeps the code (trap 1)

    ids = np.random.RandomState(0).randint(0, 256, (2, 10))
    ids[1, :3] = config.pad_token_id
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    positions = np.maximum(mask.cumsum(-1) - 1, 0)
    spec = {"ids": ids.tolist(), "mask": mask.tolist(), "position_ids": positions.tolist(), "texts": TEXTS}
    (tmp_path / "spec.json").write_text(json.dumps(spec))

    got, arrays = run_without_pygpt(folder, tmp_path)

    assert not any(os.path.isdir(os.path.join(p, "pygpt_hf")) for p in got["sys_path"] if p)
    assert got["classes"] == {"config": "PyGPTConfig", "tokenizer": "PyGPTTokenizerFast",
                              "model": "PyGPTForCausalLM", "flax_model": "FlaxPyGPTForCausalLM"}
    # every class came from the folder's own code, through transformers' dynamic modules
    assert all(module.startswith("transformers_modules.") for module in got["modules"].values()), got["modules"]

    assert got["ids"] == [tokenizer(t)["input_ids"] for t in TEXTS]
    assert got["decoded"] == TEXTS

    expected = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                                position_ids=jnp.asarray(positions)).logits)
    np.testing.assert_allclose(arrays["torch_logits"], expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(arrays["flax_logits"], expected, atol=1e-6, rtol=0)
    flax_greedy = np.asarray(model.generate(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                                            max_new_tokens=8, do_sample=False).sequences)
    torch_greedy = np.full_like(flax_greedy, config.pad_token_id)
    torch_greedy[:, : arrays["greedy"].shape[1]] = arrays["greedy"]
    np.testing.assert_array_equal(torch_greedy, flax_greedy)
