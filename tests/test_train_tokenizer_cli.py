"""scripts/train_tokenizer.py: trains from local files or a Hub dataset, saves a loadable folder atomically."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bpe import DATA, slice_texts
from transformers import AutoTokenizer

from pygpt_hf import PyGPTTokenizer, PyGPTTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train_tokenizer.py"
SLICE = DATA / "tok_gutenberg_slice.jsonl"
EXPECTED_FILES = {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def script():
    """The script as a module, to call `main(argv)` in-process (fast) for the cases beyond the subprocess ones."""
    spec = importlib.util.spec_from_file_location("train_tokenizer_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_loads(folder: Path, vocab_size: int) -> None:
    assert EXPECTED_FILES <= set(os.listdir(folder))
    # the tokenizer's code travels with it, so the folder also loads without pygpt_hf (trust_remote_code=True)
    assert {"tokenization_pygpt.py", "tokenization_pygpt_fast.py"} <= set(os.listdir(folder))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["auto_map"]["AutoTokenizer"] == [
        "tokenization_pygpt.PyGPTTokenizer", "tokenization_pygpt_fast.PyGPTTokenizerFast"]
    fast = AutoTokenizer.from_pretrained(folder)
    slow = AutoTokenizer.from_pretrained(folder, use_fast=False)
    assert type(fast) is PyGPTTokenizerFast and type(slow) is PyGPTTokenizer
    assert len(fast) == len(slow) == vocab_size
    assert (fast.eos_token_id, fast.pad_token_id) == (256, 257)
    text = "To be, or not to be: that is the question. <|endoftext|>"
    assert fast(text)["input_ids"] == slow(text)["input_ids"]


def assert_no_debris(parent: Path, name: str) -> None:
    assert not [p for p in os.listdir(parent) if p.startswith(f".{name}.tmp-")], "temporary folder left behind"


def test_trains_a_loadable_folder_and_pushes_it(tmp_path, hub):
    repo_id = hub.repo_id("tokenizer")
    out = tmp_path / "tok"
    result = run_script("--dataset", str(SLICE), "--vocab-size", "700", "--output-dir", str(out),
                        "--model-max-length", "128", "--push-to-hub", repo_id)
    assert result.returncode == 0, result.stderr
    assert_loads(out, 700)
    assert AutoTokenizer.from_pretrained(out).model_max_length == 128
    assert_no_debris(tmp_path, "tok")
    pushed = AutoTokenizer.from_pretrained(repo_id)
    assert type(pushed) is PyGPTTokenizerFast and pushed.get_vocab() == AutoTokenizer.from_pretrained(out).get_vocab()


def test_missing_column_fails_clearly_and_writes_nothing(tmp_path):
    out = tmp_path / "tok"
    result = run_script("--dataset", str(SLICE), "--text-column", "body", "--vocab-size", "300",
                        "--output-dir", str(out))
    assert result.returncode != 0
    assert "no column 'body'" in result.stderr and "title, text" in result.stderr
    assert not out.exists()
    assert_no_debris(tmp_path, "tok")


@pytest.mark.parametrize("kind", ["txt", "parquet", "folder"])
def test_reads_other_local_formats(tmp_path, script, kind):
    texts = slice_texts()
    if kind == "txt":
        source = tmp_path / "corpus.txt"
        source.write_text("\n\n".join(texts), encoding="utf-8")
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = tmp_path / "corpus.parquet"
        pq.write_table(pa.table({"content": texts}), source)
    else:
        source = tmp_path / "corpus"
        source.mkdir()
        for i, text in enumerate(texts[:4]):
            (source / f"part-{i}.jsonl").write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    column = ["--text-column", "content"] if kind == "parquet" else []
    out = tmp_path / "tok"
    assert script.main(["--dataset", str(source), *column, "--vocab-size", "400", "--output-dir", str(out)]) == 0
    assert_loads(out, 400)


def test_reads_a_hub_dataset(tmp_path, script, hub):
    repo_id = hub.repo_id("corpus")
    api = hub.api()
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=str(SLICE), path_in_repo="data/train.jsonl", repo_id=repo_id, repo_type="dataset")
    out = tmp_path / "tok"
    assert script.main(["--dataset", repo_id, "--split", "train", "--vocab-size", "400", "--output-dir", str(out)]) == 0
    assert_loads(out, 400)


def test_bad_inputs_fail_clearly_and_write_nothing(tmp_path, script, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"text": "   "}) + "\n", encoding="utf-8")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"text": "fine"}) + "\n{not json\n", encoding="utf-8")
    out = tmp_path / "tok"
    cases = [
        (["--dataset", str(tmp_path / "missing.jsonl"), "--vocab-size", "300"], "missing.jsonl: no such file"),
        (["--dataset", str(broken), "--vocab-size", "300"], "broken.jsonl, line 2: not valid JSON"),
        (["--dataset", str(SLICE), "--vocab-size", "257"], "--vocab-size must be at least 258"),
        (["--dataset", str(empty), "--vocab-size", "300"], "is empty"),
        (["--dataset", str(blank), "--vocab-size", "300"], "empty corpus"),
    ]
    for args, message in cases:
        assert script.main([*args, "--output-dir", str(out)]) == 1
        assert message in capsys.readouterr().err
        assert not out.exists()
    assert_no_debris(tmp_path, "tok")


def test_existing_output_is_kept_unless_overwrite(tmp_path, script, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = ["--dataset", str(SLICE), "--vocab-size", "300", "--output-dir", str(out)]
    assert script.main(args) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "precious.txt").read_text() == "keep me"
    assert script.main([*args, "--overwrite"]) == 0
    assert not (out / "precious.txt").exists()
    assert_loads(out, 300)
    assert_no_debris(tmp_path, "tok")


def test_a_crash_while_learning_is_reported_and_writes_nothing(tmp_path):
    # in a fresh interpreter (no jax), so that the merges are learned in the forked child, which inherits the patch
    out = tmp_path / "tok"
    code = f"""
import runpy, sys
import pygpt_hf.bpe

def crash(*args, **kwargs):
    raise RuntimeError("simulated crash")

pygpt_hf.bpe.train_bpe = crash
sys.argv = ["train_tokenizer.py", "--dataset", {str(SLICE)!r}, "--vocab-size", "300", "--output-dir", {str(out)!r}]
runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "simulated crash" in done.stderr  # the child's traceback
    assert "learning the merges failed" in done.stderr.splitlines()[-1]
    assert not out.exists()
    assert_no_debris(tmp_path, "tok")
