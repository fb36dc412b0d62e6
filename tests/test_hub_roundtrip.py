"""Checkpoints go to the Hub and come back, through the real clients, against the loopback Hub (conftest `hub`).

One small training run (module fixture) does what a user does: `scripts/train.py --dataset <Hub dataset>
--push-to-hub <repo> --hub-private` streams its text from a dataset repo and pushes every checkpoint, then
`scripts/push_to_hub.py` renders the model card and pushes it. The tests read everything back from a fresh
cache and compare with the local output folder. The inherited `push_to_hub` mixins are tested on their own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest
from helpers import load_script, usage_snippets
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import RepositoryNotFoundError
from transformers import AutoConfig, AutoTokenizer, FlaxAutoModelForCausalLM

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.configuration_pygpt import TRAVELLING_FILES
from pygpt_hf.model_card import DEFAULT_PROMPT

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_DOCS = 10
TEXTS = ["To be, or not to be, that is the question.", "typed <|endoftext|> stays text, <|pad|> too",
         "unicode é 日本語 🙂\n\ttabs  and  spaces "]
IDS = np.array([[256, 84, 111, 32, 98, 101, 44, 299], [72, 105, 33, 10, 258, 290, 257, 257]])
MASK = np.array([[1] * 8, [1] * 6 + [0, 0]])


def logits(model) -> np.ndarray:
    return np.asarray(model(IDS, attention_mask=MASK).logits)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def documents() -> list[str]:
    """The dataset repo's records: paragraphs of the Shakespeare slice."""
    text = (REPO_ROOT / "tests" / "data" / "train_shakespeare.txt").read_text()
    return [p.strip() for p in text.split("\n\n") if p.strip()]


class LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.targets.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.targets.append(attrs["src"])


def relative_targets(markdown_text: str) -> list[str]:
    """Every relative link and image of the rendered page (what the Hub resolves inside the repo)."""
    import markdown

    collector = LinkCollector()
    collector.feed(markdown.markdown(markdown_text, extensions=["tables", "fenced_code"]))
    relative = []
    for target in collector.targets:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path and not target.startswith("#"):
            relative.append(parts.path)
    return relative


@pytest.fixture(scope="module")
def run(hub_server, tmp_path_factory):
    """Train from a Hub dataset with --push-to-hub, then push the card with scripts/push_to_hub.py."""
    api = HfApi(endpoint=hub_server.url, token=os.environ["HF_TOKEN"])
    tag = secrets.token_hex(4)
    data_repo, model_repo = f"{hub_server.user}/lines-{tag}", f"{hub_server.user}/tiny-pygpt-{tag}"
    docs = documents()
    api.create_repo(data_repo, repo_type="dataset")
    api.upload_file(path_or_fileobj="".join(json.dumps({"text": d}) + "\n" for d in docs).encode(),
                    path_in_repo="data/train.jsonl", repo_id=data_repo, repo_type="dataset")

    def validations() -> list[tuple[str, str, int]]:
        return [r for r in list(hub_server.log) if r[0] == "POST" and r[1].startswith("/api/validate-yaml")]

    before = len(validations())
    out = tmp_path_factory.mktemp("run") / "out"
    train_log = io.StringIO()
    with redirect_stdout(train_log):
        code = load_script("train").main([
            "--dataset", data_repo, "--output-dir", str(out), "--push-to-hub", model_repo, "--hub-private",
            "--vocab-size", "300", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--seq-len", "32",
            "--n-positions", "64", "--batch-size", "4", "--max-steps", "6", "--warmup-steps", "1",
            "--eval-every", "3", "--save-every", "3", "--log-every", "1", "--eval-docs", str(EVAL_DOCS),
            "--sample-tokens", "0"])
    assert code == 0, train_log.getvalue()
    commits_after_training = [c.title for c in api.list_repo_commits(model_repo)]
    card_validations = validations()[before:]  # every training push carried the rendered card
    push_out, push_err = io.StringIO(), io.StringIO()
    with redirect_stdout(push_out), redirect_stderr(push_err):
        push_code = load_script("push_to_hub").main([str(out), model_repo])
    assert push_code == 0, push_err.getvalue()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return SimpleNamespace(
        out=out, data_repo=data_repo, model_repo=model_repo, docs=docs, train_log=train_log.getvalue(),
        commits_after_training=commits_after_training, push_output=push_out.getvalue() + push_err.getvalue(),
        card_validations=card_validations, evals={r["step"]: r["eval_loss"] for r in metrics if "eval_loss" in r},
    )


# --- scripts/train.py --push-to-hub and --dataset <Hub dataset> ------------------------------------------------


def test_training_pushes_one_commit_per_checkpoint_to_a_private_repo(run, hub):
    evals = run.evals
    assert sorted(evals) == [3, 6]
    assert run.commits_after_training == [f"step 6: eval loss {evals[6]:.4f}", f"step 3: eval loss {evals[3]:.4f}",
                                          "initial commit"]
    api = hub.api()
    assert api.repo_info(run.model_repo).private is True  # --hub-private
    files = api.list_repo_files(run.model_repo)
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_settings.json", "metrics.jsonl"} <= set(files)
    assert not [f for f in files if f.startswith(("checkpoint-", ".tmp")) or "training_state" in f]  # no optimizer state


def test_private_repo_cannot_be_read_without_the_token(run, hub, monkeypatch):
    with pytest.raises(RepositoryNotFoundError):
        hub.api(token=False).repo_info(run.model_repo)
    monkeypatch.delenv("HF_TOKEN")
    hub.fresh_cache()
    with pytest.raises(OSError, match=re.escape(run.model_repo)):
        AutoConfig.from_pretrained(run.model_repo)
    with pytest.raises(OSError):
        FlaxAutoModelForCausalLM.from_pretrained(run.model_repo)


def test_training_streamed_its_text_from_the_hub_dataset(run, hub):
    assert f"data: {run.data_repo}; held-out eval: {EVAL_DOCS} documents" in run.train_log
    reads = hub.requests("GET", f"/datasets/{run.data_repo}/resolve/")
    assert reads and all(status in (200, 206) for _, _, status in reads)
    # The run's tokenizer was trained on exactly the dataset's training records (all but the held-out ones).
    expected = train_tokenizer(run.docs[EVAL_DOCS:], vocab_size=300, show_progress=False)
    assert AutoTokenizer.from_pretrained(run.out).get_vocab() == expected.get_vocab()


# --- what comes back from the Hub -----------------------------------------------------------------------------


def test_pushed_model_and_tokenizer_load_back_identical(run, hub):
    hub.fresh_cache()
    config = AutoConfig.from_pretrained(run.model_repo)
    local_config = AutoConfig.from_pretrained(run.out)
    assert type(config) is PyGPTConfig and config.to_diff_dict() == local_config.to_diff_dict()

    tokenizer, local_tokenizer = AutoTokenizer.from_pretrained(run.model_repo), AutoTokenizer.from_pretrained(run.out)
    assert type(tokenizer).__name__ == "PyGPTTokenizerFast"
    assert tokenizer(TEXTS)["input_ids"] == local_tokenizer(TEXTS)["input_ids"]
    assert [tokenizer.decode(ids) for ids in tokenizer(TEXTS)["input_ids"]] == TEXTS

    model = FlaxAutoModelForCausalLM.from_pretrained(run.model_repo)
    assert type(model) is FlaxPyGPTForCausalLM
    np.testing.assert_array_equal(logits(model), logits(FlaxPyGPTForCausalLM.from_pretrained(run.out)))

    # The weights travelled through LFS, byte for byte.
    weights = next(e for e in hub.api().list_repo_tree(run.model_repo) if e.path == "model.safetensors")
    assert weights.lfs is not None and weights.lfs.sha256 == sha256(run.out / "model.safetensors")
    assert weights.lfs.sha256 in hub.lfs_uploads


def test_revision_pins_the_first_checkpoint(run, hub):
    commits = {c.title: c.commit_id for c in hub.api().list_repo_commits(run.model_repo)}
    first = commits[f"step 3: eval loss {run.evals[3]:.4f}"]
    hub.fresh_cache()
    pinned = FlaxAutoModelForCausalLM.from_pretrained(run.model_repo, revision=first)
    latest = FlaxAutoModelForCausalLM.from_pretrained(run.model_repo)
    at_step_3 = logits(FlaxPyGPTForCausalLM.from_pretrained(run.out / "checkpoint-0000003"))
    np.testing.assert_array_equal(logits(pinned), at_step_3)
    np.testing.assert_array_equal(logits(latest), logits(FlaxPyGPTForCausalLM.from_pretrained(run.out)))
    assert not np.allclose(at_step_3, logits(latest))  # six steps apart: the pin really chose older weights


# --- the model card on the Hub ----------------------------------------------------------------------------------


def test_pushed_card_parses_validates_and_links_only_files_in_the_repo(run, hub):
    api = hub.api()
    files = set(api.list_repo_files(run.model_repo))
    assert {"README.md", "loss_curve.png"} <= files
    newest = api.list_repo_commits(run.model_repo)[0].title
    # Training already pushed the final card with the final checkpoint: push_to_hub.py had nothing new to add.
    assert newest == f"step 6: eval loss {run.evals[6]:.4f}"
    # The pushes that carried README.md had the server validate its YAML, as the Hub does, and it passed.
    assert run.card_validations and {status for _, _, status in run.card_validations} == {200}
    assert hub.token not in run.push_output  # the token is never printed

    hub.fresh_cache()
    card = ModelCard.load(hf_hub_download(run.model_repo, "README.md"))
    metadata = card.data.to_dict()
    assert metadata["datasets"] == [run.data_repo] and metadata["pipeline_tag"] == "text-generation"
    _, results = model_index_to_eval_results(metadata["model-index"])
    assert {r.metric_type: r.metric_value for r in results} == {
        "loss": round(run.evals[6], 4), "perplexity": round(float(np.exp(run.evals[6])), 2)}

    targets = relative_targets(card.text)
    assert "loss_curve.png" in targets and "config.json" in targets and "training_settings.json" in targets
    assert set(targets) <= files, f"links to files not in the repo: {sorted(set(targets) - files)}"


def test_card_flax_snippet_runs_against_the_hub(run, hub, capsys):
    snippet = usage_snippets(ModelCard.load(run.out / "README.md").text)["flax"]
    assert run.model_repo in snippet
    hub.fresh_cache()
    exec(compile(snippet, "README.md (Flax snippet)", "exec"), {"__name__": "__card__"})
    printed = capsys.readouterr().out
    assert printed.startswith(DEFAULT_PROMPT) and len(printed.strip()) > len(DEFAULT_PROMPT)


# Like a user without pygpt_hf: a finder refuses the package (this venv has it installed, editable).
NO_PYGPT = textwrap.dedent("""
    import importlib.abc, sys
    class NoPygpt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pygpt_hf" or name.startswith("pygpt_hf."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
    sys.meta_path.insert(0, NoPygpt())
""")


def test_card_pytorch_snippet_runs_without_pygpt_hf(run, hub, tmp_path):
    pytest.importorskip("torch")
    snippet = usage_snippets(ModelCard.load(run.out / "README.md").text)["pytorch"]
    assert "trust_remote_code=True" in snippet and "pygpt_hf" not in snippet
    hub.fresh_cache()  # the subprocess inherits HF_ENDPOINT, HF_TOKEN and this cache through the environment
    done = subprocess.run([sys.executable, "-c", NO_PYGPT + snippet], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(DEFAULT_PROMPT) and len(done.stdout.strip()) > len(DEFAULT_PROMPT)


def test_push_script_to_a_branch_of_a_new_private_repo(run, hub, tmp_path, capsys):
    folder = tmp_path / "step3"  # a checkpoint's model files: settings but no metrics, so no eval on the card
    folder.mkdir()
    for path in (run.out / "checkpoint-0000003").iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    repo_id = hub.repo_id("branch")
    code = load_script("push_to_hub").main([str(folder), repo_id, "--private", "--revision", "experiment",
                                            "--commit-message", "try the step-3 weights"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert hub.token not in printed.out + printed.err

    api = hub.api()
    assert api.repo_info(repo_id).private is True
    assert "model.safetensors" not in api.list_repo_files(repo_id)  # main untouched
    files = set(api.list_repo_files(repo_id, revision="experiment"))
    assert api.list_repo_commits(repo_id, revision="experiment")[0].title == "try the step-3 weights"
    hub.fresh_cache()
    card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision="experiment"))
    assert card.data.eval_results is None and "No evaluation was recorded" in card.text
    assert "| Steps | not recorded |" in card.text  # no metrics, no checkpoint folder: the step is unknown
    assert set(relative_targets(card.text)) <= files and "training_settings.json" in relative_targets(card.text)
    model = FlaxAutoModelForCausalLM.from_pretrained(repo_id, revision="experiment")
    np.testing.assert_array_equal(logits(model), logits(FlaxPyGPTForCausalLM.from_pretrained(folder)))


def test_push_script_refuses_a_folder_that_is_not_a_model_or_no_token(run, hub, tmp_path, capsys, monkeypatch):
    push = load_script("push_to_hub")
    repo_id = hub.repo_id("never")
    assert push.main([str(tmp_path), repo_id]) == 2
    assert "no config.json" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    assert push.main([str(run.out), repo_id]) == 2
    assert "set HF_TOKEN or run `huggingface-cli login`" in capsys.readouterr().err
    assert not hub.api().repo_exists(repo_id)  # nothing was created


# --- the inherited push_to_hub mixins -------------------------------------------------------------------------


def test_push_to_hub_mixins_and_revision_pin(hub):
    config = PyGPTConfig(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, position_embedding_type="rope")
    first, second = FlaxPyGPTForCausalLM(config, seed=1), FlaxPyGPTForCausalLM(config, seed=2)
    tokenizer = train_tokenizer(documents(), vocab_size=300, model_max_length=64, show_progress=False)
    repo_id = hub.repo_id("mixins")
    lfs_before = len(hub.lfs_uploads)

    config.push_to_hub(repo_id)
    tokenizer.push_to_hub(repo_id)
    first_commit = first.push_to_hub(repo_id)
    second.push_to_hub(repo_id, commit_message="second weights")

    files = set(hub.api().list_repo_files(repo_id))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert set(TRAVELLING_FILES) <= files  # the remote code travels with a mixin push too
    assert len(hub.lfs_uploads) == lfs_before + 2  # each model's weights, through LFS; nothing else

    hub.fresh_cache()
    assert AutoConfig.from_pretrained(repo_id).to_diff_dict() == first.config.to_diff_dict()
    loaded_tokenizer = AutoTokenizer.from_pretrained(repo_id)
    assert loaded_tokenizer(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    np.testing.assert_array_equal(logits(FlaxAutoModelForCausalLM.from_pretrained(repo_id)), logits(second))
    pinned = FlaxAutoModelForCausalLM.from_pretrained(repo_id, revision=first_commit.oid)
    np.testing.assert_array_equal(logits(pinned), logits(first))
    assert sha256(hf_hub_download(repo_id, "model.safetensors", revision=first_commit.oid)) == hub.lfs_uploads[lfs_before]
