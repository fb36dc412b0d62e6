"""A pushed pygpt model works for people on transformers 5.x, without pygpt_hf (issue 9).

The 4.57 side (this process, with pygpt_hf) writes checkpoints the way training does (the Flax model's and
the tokenizer's save_pretrained) for all three position encodings, pushes one of them to the loopback Hub,
and records reference ids, logits and greedy tokens. A subprocess in a second venv with transformers 5.x
and torch, but neither pygpt_hf nor jax (tests/tf5_env.py builds it once and caches it), loads them with
`trust_remote_code=True` (tests/tf5_check.py); the tests here compare. If that venv cannot be built the
tests fail with pip's error.
"""

import contextlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import jax.numpy as jnp
from huggingface_hub import HfApi
from safetensors.numpy import load_file
from transformers import pipeline

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.model_card import build_model_card

sys.path.insert(0, str(Path(__file__).parent))
from tf5_env import TF5_REQUIREMENTS, TF5EnvError, ensure_tf5_python

HERE = Path(__file__).parent
POSITIONS = ["sinusoidal", "learned", "rope"]
TEXTS = [
    "To be, or not to be, that is the question.",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "typed control text <|endoftext|> stays? ids 256 <|pad|>",
    "unicode: é, 日本語, emoji 🙂, combining é",
]
PROMPT = "To be, or"
NEW_TOKENS = 8
PAD = 257


def pytorch_snippet(card: str) -> str:
    """The model card's PyTorch code block (the one with AutoModelForCausalLM, not FlaxAutoModelForCausalLM)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", card, re.DOTALL) if re.search(r"\bAutoModelForCausalLM", b)]
    assert len(blocks) == 1, f"expected one PyTorch snippet in the model card, found {len(blocks)}"
    assert "pygpt_hf" not in blocks[0], "the PyTorch snippet must work without pygpt_hf"
    return blocks[0]


def padded_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.random.RandomState(0).randint(0, 300, (2, 10))
    ids[1, :3] = PAD
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask, np.maximum(mask.cumsum(-1) - 1, 0)


@pytest.fixture(scope="module")
def tf5_python() -> Path:
    try:
        return ensure_tf5_python()
    except TF5EnvError as err:  # a broken environment is a failure to fix, never a skip
        pytest.fail(f"could not build the transformers 5.x venv ({', '.join(TF5_REQUIREMENTS)}):\n{err}")


@pytest.fixture(scope="module")
def written(tmp_path_factory, hub_server) -> dict:
    """Checkpoints as pygpt_hf writes them, one pushed to the loopback Hub, plus 4.57's reference outputs."""
    root = tmp_path_factory.mktemp("tf5")
    tokenizer = train_tokenizer([" ".join(TEXTS) * 5 + (HERE.parent / "pygpt_hf/data/tinyshakespeare.txt").read_text()[:4000]],
                                vocab_size=300, show_progress=False)
    ids, mask, positions = padded_batch()
    cases, references = [], {}
    for i, position_embedding_type in enumerate(POSITIONS):
        config = PyGPTConfig(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                             position_embedding_type=position_embedding_type,
                             tie_word_embeddings=position_embedding_type != "learned")
        model = FlaxPyGPTForCausalLM(config, seed=10 + i)
        folder = root / position_embedding_type
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        logits = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                                  position_ids=jnp.asarray(positions)).logits)
        greedy = np.asarray(model.generate(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                                           max_new_tokens=NEW_TOKENS, do_sample=False).sequences)
        generator = pipeline("text-generation", model=str(folder))  # the PyTorch twin, on 4.57
        text = generator(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False)[0]["generated_text"]
        references[position_embedding_type] = {"logits": logits, "greedy": greedy, "pipeline_text": text}
        cases.append({"name": position_embedding_type, "source": str(folder)})

    # the Hub case: the files a push uploads (model card included), loaded back by repo id on 5.x
    api = HfApi(endpoint=hub_server.url, token=os.environ["HF_TOKEN"])
    repo_id = api.create_repo(f"{hub_server.user}/tf5-{secrets.token_hex(4)}").repo_id
    build_model_card(root / "sinusoidal", repo_id).save(root / "sinusoidal" / "README.md")
    api.upload_folder(repo_id=repo_id, folder_path=str(root / "sinusoidal"))
    snippet = pytorch_snippet((root / "sinusoidal" / "README.md").read_text())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the same snippet on 4.57, for reference
        exec(snippet, {"__name__": "__snippet__"})  # noqa: S102 - running the documented code is the test
    references["hub"] = dict(references["sinusoidal"], snippet_output=printed.getvalue())
    cases.append({"name": "hub", "source": repo_id, "snippet": snippet})

    for case in cases:
        case.update(texts=TEXTS, ids=ids.tolist(), mask=mask.tolist(), position_ids=positions.tolist(),
                    prompt=PROMPT, new_tokens=NEW_TOKENS)
    (root / "spec.json").write_text(json.dumps({"cases": cases}))
    return {"root": root, "references": references, "tokenizer": tokenizer, "hub_url": hub_server.url}


@pytest.fixture(scope="module")
def tf5(tf5_python, written) -> dict:
    """Run tests/tf5_check.py once in the 5.x venv; return its environment and per-case results."""
    root = written["root"]
    out = root / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_ENDPOINT=written["hub_url"], HF_HOME=str(root / "hf-home"), HF_HUB_CACHE=str(root / "hf-home/hub"),
               HF_MODULES_CACHE=str(root / "hf-modules"), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
    command = [str(tf5_python), "-I", str(HERE / "tf5_check.py"), str(root / "spec.json"), str(out)]
    try:
        result = subprocess.run(command, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                                text=True, timeout=300)
    except subprocess.TimeoutExpired as err:
        progress = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr
        pytest.fail(f"tf5_check.py did not finish in {err.timeout} s; its progress:\n{progress}")
    assert result.returncode == 0, f"tf5_check.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    cases = {}
    for name in [*POSITIONS, "hub"]:
        cases[name] = json.loads((out / f"{name}.json").read_text())
        cases[name]["arrays"] = load_file(out / f"{name}.safetensors")
    return {"environment": json.loads((out / "environment.json").read_text()), "cases": cases}


def no_errors(case: dict, *names: str) -> None:
    for name in names:
        assert name not in case["errors"], f"{name} failed on transformers 5.x:\n{case['errors'][name]}"


def test_environment_is_a_clean_transformers5_machine(tf5):
    environment = tf5["environment"]
    pinned = next(r.split("==")[1] for r in TF5_REQUIREMENTS if r.startswith("transformers=="))
    assert environment["transformers"] == pinned and pinned.startswith("5.")
    assert environment["torch"].startswith("2.13.0")
    assert not environment["pygpt_hf_importable"] and not environment["jax_importable"]


@pytest.mark.parametrize("name", ["sinusoidal", "hub"])
def test_tokenizer_same_ids_and_round_trip(tf5, written, name):
    """AutoTokenizer(trust_remote_code=True) on 5.x: pygpt's own fast class, 4.57's ids, lossless decode."""
    case = tf5["cases"][name]
    no_errors(case, "tokenizer")
    assert case["tokenizer_class"].endswith(".PyGPTTokenizerFast")
    assert case["tokenizer_class"].startswith("transformers_modules.")  # from the checkpoint's files
    assert case["tokenizer_ids"] == [written["tokenizer"](t)["input_ids"] for t in TEXTS]
    assert case["tokenizer_decoded"] == TEXTS
    assert case["tokenizer_special_ids"] == [256, PAD]


def test_slow_tokenizer_class_still_loads_on_5x(tf5, written):
    case = tf5["cases"]["sinusoidal"]
    no_errors(case, "slow_tokenizer")
    assert case["slow_ids"] == [written["tokenizer"](t)["input_ids"] for t in TEXTS]


def test_tokenizer_json_without_remote_code(tf5, written):
    """No remote code at all: transformers' own fast tokenizer reads tokenizer.json and gives the same ids."""
    case = tf5["cases"]["hub"]
    no_errors(case, "plain_tokenizer")
    assert case["plain_ids"] == [written["tokenizer"](t)["input_ids"] for t in TEXTS]
    assert case["plain_decoded"] == TEXTS


@pytest.mark.parametrize("name", [*POSITIONS, "hub"])
def test_model_logits_and_greedy_tokens_match_flax(tf5, written, name):
    """AutoModelForCausalLM(trust_remote_code=True) on 5.x: Flax's logits to 1e-4, Flax's greedy tokens."""
    case, reference = tf5["cases"][name], written["references"][name]
    no_errors(case, "model", "logits", "greedy")
    assert case["model_class"].startswith("transformers_modules.") and case["model_class"].endswith(".PyGPTForCausalLM")
    np.testing.assert_allclose(case["arrays"]["logits"], reference["logits"], atol=1e-4, rtol=0)
    greedy = np.full_like(reference["greedy"], PAD)  # 5.x stops once every row is done; Flax pads to the end
    greedy[:, : case["arrays"]["greedy"].shape[1]] = case["arrays"]["greedy"]
    np.testing.assert_array_equal(greedy, reference["greedy"])


@pytest.mark.parametrize("name", ["sinusoidal", "hub"])
def test_pipeline_text_generation_on_5x(tf5, written, name):
    case = tf5["cases"][name]
    no_errors(case, "pipeline")
    assert case["pipeline_text"] == written["references"][name]["pipeline_text"]
    assert case["pipeline_text"].startswith(PROMPT) and len(case["pipeline_text"]) > len(PROMPT)


def test_model_card_snippet_runs_on_5x(tf5, written):
    """The model card's PyTorch snippet, pasted as is on 5.x, prints what it prints on 4.57 (seeded sampling)."""
    case = tf5["cases"]["hub"]
    no_errors(case, "snippet")
    expected = written["references"]["hub"]["snippet_output"]
    assert case["snippet_output"] == expected and expected.startswith(PROMPT)
