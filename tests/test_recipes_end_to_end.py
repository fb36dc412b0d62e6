"""The data recipes end to end, as a user runs them, on a tiny config (2 layers x 32, 32-token sequences,
a 128-token context so an instruction prompt leaves room to answer):

    synthetic math (scripts/generate_synthetic_math.py, with its `meta` column)
      + tests/data/recipes_dolly.jsonl, mixed 70/30          -> scripts/train.py --loss-on response  (run "mixed")
      -> the same mixture through scripts/pretokenize.py     -> scripts/train.py on that folder      (run "pretok")
      -> scripts/generate.py --instruction on the trained model, through its chat template

The two training runs share one tokenizer (trained here, saved without a chat template) and must log the
same losses step by step: the pre-tokenized folder holds exactly the stream the on-the-fly pipeline makes.
The subprocesses share a persistent XLA compilation cache; "mixed" and the pre-tokenizing run together.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.documents import CHAT_TEMPLATE, instruction_messages, render_instruction

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DOLLY = ROOT / "tests" / "data" / "recipes_dolly.jsonl"
TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--seq-len", "32", "--n-positions", "128", "--batch-size", "8",
        "--eval-docs", "10", "--shuffle-buffer", "16", "--max-steps", "6", "--eval-every", "3", "--save-every", "3",
        "--warmup-steps", "1", "--lr", "1e-2", "--max-minutes", "none", "--log-every", "1", "--sample-tokens", "0",
        "--loss-on", "response"]


def start(script: str, args: list[str], folder: Path, name: str, env: dict) -> subprocess.Popen:
    out, err = open(folder / f"{name}.out", "w"), open(folder / f"{name}.err", "w")  # noqa: SIM115 (the child keeps them)
    return subprocess.Popen([sys.executable, str(SCRIPTS / script), *args], cwd=ROOT, env=env, stdout=out, stderr=err)


def finish(process: subprocess.Popen, folder: Path, name: str) -> tuple[str, str]:
    code = process.wait(timeout=600)
    out, err = (folder / f"{name}.out").read_text(), (folder / f"{name}.err").read_text()
    assert code == 0, f"{name} exited {code}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    return out, err


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipes")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(folder / "xla-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    env.pop("XLA_FLAGS", None)
    math = folder / "math.jsonl"
    done = subprocess.run([sys.executable, str(SCRIPTS / "generate_synthetic_math.py"), "--n", "120", "--seed", "0",
                           "--output", str(math)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "meta" in json.loads(math.read_text().splitlines()[0])  # the extra nested column is there

    texts = [json.loads(line) for line in DOLLY.read_text().splitlines()]
    texts = [render_instruction(r["instruction"], r["response"], r["context"]) for r in texts]
    texts += [json.loads(line)["response"] for line in math.read_text().splitlines()]
    tokenizer = train_tokenizer(texts, vocab_size=350, model_max_length=32, show_progress=False)
    tokenizer.save_pretrained(folder / "tokenizer")
    assert not (folder / "tokenizer" / "chat_template.jinja").exists()

    mixture = f"{DOLLY}@dolly:0.7,{math}@dolly:0.3"
    mixed = start("train.py", ["--dataset", mixture, "--tokenizer", str(folder / "tokenizer"), *TINY,
                               "--output-dir", str(folder / "mixed")], folder, "mixed", env)
    pretokenizing = start("pretokenize.py", ["--dataset", mixture, "--tokenizer", str(folder / "tokenizer"),
                                             "--seq-len", "32", "--eval-docs", "10", "--output-dir",
                                             str(folder / "pretok")], folder, "pretokenize", env)
    logs = {"pretokenize": finish(pretokenizing, folder, "pretokenize")}
    pretok_run = start("train.py", ["--dataset", str(folder / "pretok"), *TINY, "--output-dir",
                                    str(folder / "pretok-run")], folder, "pretok-run", env)
    logs["mixed"] = finish(mixed, folder, "mixed")
    logs["pretok-run"] = finish(pretok_run, folder, "pretok-run")
    return folder, logs


def test_a_mixture_trains_with_the_response_only_loss_and_saves_the_chat_template(runs):
    folder, logs = runs
    out, _ = logs["mixed"]
    assert "loss on response tokens only" in out and "recipes_dolly.jsonl@dolly (70%) + " in out
    assert "held-out eval: 10 documents" in out and "response tokens" in out
    records = metrics(folder / "mixed")
    assert [r["step"] for r in records if "eval_loss" in r] == [3, 6]
    assert len([r for r in records if "loss" in r]) == 6
    assert (folder / "mixed" / "chat_template.jinja").read_text() == CHAT_TEMPLATE  # set by the run
    assert json.loads((folder / "mixed" / "training_settings.json").read_text())["loss_on"] == "response"


def test_the_pretokenized_folder_trains_exactly_like_the_mixture(runs):
    folder, logs = runs
    manifest = json.loads((folder / "pretok" / "manifest.json").read_text())
    tokenizer_json = (folder / "pretok" / "tokenizer" / "tokenizer.json").read_bytes()
    assert manifest["tokenizer_sha256"] == hashlib.sha256(tokenizer_json).hexdigest()
    assert tokenizer_json == (folder / "tokenizer" / "tokenizer.json").read_bytes()
    assert manifest["seq_len"] == 32 and manifest["eval_documents"] == 10 and manifest["train_tokens"] > 0
    assert "sha256" in logs["pretokenize"][0] and "train with:" in logs["pretokenize"][0]
    out, _ = logs["pretok-run"]
    assert "pre-tokenized" in out and manifest["tokenizer_sha256"][:12] in out
    strip = lambda records: [(r["step"], r.get("loss"), r.get("eval_loss")) for r in records]
    assert strip(metrics(folder / "pretok-run")) == strip(metrics(folder / "mixed"))


def test_train_refuses_the_folder_with_another_tokenizer(runs, tmp_path, capsys):
    folder, _ = runs
    other = train_tokenizer(["an unrelated corpus"] * 4, vocab_size=262, show_progress=False)
    other.save_pretrained(tmp_path / "other")
    script = load_script("train")
    code = script.main(["--dataset", str(folder / "pretok"), "--tokenizer", str(tmp_path / "other"), *TINY,
                        "--output-dir", str(tmp_path / "refused")])
    err = capsys.readouterr().err
    manifest = json.loads((folder / "pretok" / "manifest.json").read_text())
    assert code == 2 and manifest["tokenizer_sha256"] in err and "is not the one" in err
    assert not list((tmp_path / "refused").glob("checkpoint-*"))


def test_generate_answers_an_instruction_through_the_chat_template(runs, capsys):
    from transformers import AutoTokenizer, FlaxAutoModelForCausalLM

    import pygpt_hf  # noqa: F401
    from pygpt_hf.streaming import FlaxTokenStreamer, encode_prompt

    folder, _ = runs
    model_dir = folder / "mixed"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    script = load_script("generate")
    for instruction, context in [("How do I make porridge?", None),
                                 ("How much milk goes into the batter?", "Pancakes: 200 g flour, 300 ml milk.")]:
        ids = script.prompt_ids(tokenizer, instruction=instruction, context=context)
        template_ids = tokenizer.apply_chat_template(instruction_messages(instruction, None, context),
                                                     add_generation_prompt=True, tokenize=True)
        assert ids == [tokenizer.bos_token_id] + template_ids  # the prompt is the chat template's
        assert ids == encode_prompt(tokenizer, render_instruction(instruction, "", context))  # = training's prompt

    # the script streams the model's greedy answer to that prompt (the model is tiny: the mechanics are checked)
    model = FlaxAutoModelForCausalLM.from_pretrained(model_dir)
    expected = list(FlaxTokenStreamer(model, temperature=0).stream(ids, 8, eos_token_id=tokenizer.eos_token_id))
    assert 1 <= len(expected) <= 8 and all(0 <= token < len(tokenizer) for token in expected)
    assert script.main(["--model", str(model_dir), "--instruction", instruction, "--context", context,
                        "--max-new-tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == tokenizer.decode(expected, skip_special_tokens=True) + "\n"
