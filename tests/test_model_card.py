"""The model card (model_card.md rendered by pygpt_hf.model_card) shows the run it describes, and its YAML
metadata parses back through huggingface_hub's own code, offline.

The folders here are written with the harness's own writers (Flax save_pretrained, TrainSettings.save,
MetricsLog), so a change in what training writes shows up here. Pushing the card and running its snippets
against a Hub are in test_hub_roundtrip.py.
"""

import json
import math
import os
import re

import jax
import numpy as np
import pytest
from helpers import usage_snippets
from huggingface_hub import ModelCard, ModelCardData, metadata_load
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.model_card import EMBEDDED_DATASET_ID, TAGS, build_model_card, write_model_card
from pygpt_hf.training.metrics import MetricsLog
from pygpt_hf.training.settings import TrainSettings

REPO_ID = "tester/pygpt-card"


def metrics_records(evals: dict[int, float], last_step: int) -> list[dict]:
    """What the training loop logs: a train record per step, eval records at some steps."""
    records = []
    for step in range(1, last_step + 1):
        records.append({"step": step, "loss": 6.0 - 0.1 * step, "grad_norm": 0.5, "lr": 1e-3,
                        "tokens": step * 4 * 32, "tokens_per_s": 1000.0, "elapsed_s": 0.1 * step})
        if step in evals:
            loss = evals[step]
            records.append({"step": step, "eval_loss": loss, "eval_perplexity": math.exp(loss),
                            "eval_nats_per_byte": loss / 3.7})
    return records


def save_run(folder, *, settings: TrainSettings | None, records: list[dict], config: PyGPTConfig | None = None,
             checkpoint_step: int | None = None, seed: int = 0) -> FlaxPyGPTForCausalLM:
    """An output folder as scripts/train.py leaves it (model at the top, settings, metrics, checkpoint dirs)."""
    config = config or PyGPTConfig(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                   position_embedding_type="learned", tie_word_embeddings=False)
    model = FlaxPyGPTForCausalLM(config, seed=seed)
    model.save_pretrained(folder)
    if settings is not None:
        settings.save(str(folder))
    if records:
        log = MetricsLog(str(folder))
        for record in records:
            log.write(record)
    if checkpoint_step is not None:
        state = folder / f"checkpoint-{checkpoint_step:07d}" / "training_state"
        state.mkdir(parents=True)
        (state / "state.json").write_text(json.dumps({"step": checkpoint_step}))
    return model


def tiny_settings(folder, **overrides) -> TrainSettings:
    values = {"output_dir": str(folder), "dataset": "tester/shakespeare-lines", "n_layer": 2, "n_head": 4,
              "n_embd": 32, "seq_len": 32, "n_positions": 64, "batch_size": 4, "max_steps": 12, "lr": 2e-3,
              "warmup_steps": 2, "vocab_size": 300, "eval_docs": 7, "sample_prompt": "ROMEO:"}
    values.update(overrides)
    return TrainSettings(**values).validate()


def md_table(text: str, first_row: str) -> dict[str, str]:
    """The two-column markdown table whose first body row starts with `first_row`, as {label: value}."""
    blocks = re.findall(r"((?:^\|.*\|\n)+)", text, flags=re.MULTILINE)
    for block in blocks:
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block.strip().splitlines()]
        body = rows[2:]
        if body and body[0][0] == first_row:
            return {row[0]: row[1] for row in body}
    raise AssertionError(f"no table starting with {first_row!r}")


@pytest.fixture
def run_folder(tmp_path):
    folder = tmp_path / "run"
    settings = tiny_settings(folder)
    records = metrics_records({5: 5.2, 10: 4.81234567}, last_step=12)
    model = save_run(folder, settings=settings, records=records, checkpoint_step=12)
    return folder, settings, records, model


def test_metadata_parses_back_through_huggingface_hub(run_folder):
    folder, *_ = run_folder
    path = write_model_card(folder, REPO_ID)

    metadata = metadata_load(path)
    assert metadata["license"] == "mit" and metadata["language"] == "en"
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "text-generation"
    assert set(TAGS) <= set(metadata["tags"]) and {"pygpt", "jax", "flax", "text-generation"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["tester/shakespeare-lines"]

    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "pygpt-card"
    by_metric = {r.metric_type: r for r in results}
    assert by_metric["loss"].metric_value == round(4.81234567, 4)  # the last eval, not the first
    assert by_metric["perplexity"].metric_value == round(math.exp(4.81234567), 2)
    for result in results:
        assert (result.task_type, result.dataset_type, result.dataset_split) == (
            "text-generation", "tester/shakespeare-lines", "train")
    assert eval_results_to_model_index(name, results) == metadata["model-index"]  # lossless round trip

    # The Hub's client reads it back the same way (ModelCard parses the YAML into ModelCardData on load).
    card = ModelCard.load(path)
    assert isinstance(card.data, ModelCardData) and card.data.eval_results == results
    assert ModelCardData(**metadata).to_dict() == card.data.to_dict()


def test_page_shows_the_architecture_hyperparameters_and_eval(run_folder):
    folder, *_, model = run_folder
    text = build_model_card(folder, REPO_ID).text

    architecture = md_table(text, "Parameters")
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(model.params))
    assert architecture["Parameters"] == f"{n_params:,}"
    assert architecture["Layers"] == "2" and architecture["Width (`n_embd`)"] == "32"
    assert architecture["Attention heads"] == "4 (head size 8)" and architecture["MLP width"] == "128"
    assert architecture["Context length"] == "64 tokens" and architecture["Position encoding"] == "learned"
    assert architecture["Vocabulary"] == "300 tokens: the 256 bytes, 2 special tokens (ids 256 and 257), then merges"
    assert architecture["Tied input/output embeddings"] == "no"

    hyper = md_table(text, "Steps")
    assert hyper["Steps"] == "12"
    assert hyper["Tokens per step"].startswith("128 (4 sequences x 32 tokens x 1 accumulation)")
    assert hyper["Tokens seen"] == f"{12 * 128:,}"
    assert hyper["Learning rate"].startswith("0.002 peak, 2 warmup steps, cosine decay to 0.0002")
    assert "the first 7 records are held out" in text

    evaluation = md_table(text, "eval loss (nats/token)")
    assert evaluation["eval loss (nats/token)"] == "4.8123"
    assert evaluation["perplexity"] == f"{round(math.exp(4.81234567), 2)}"
    assert "at step 10 (the weights are from step 12)" in text  # the eval is older than the weights

    assert "![Training and held-out loss against steps](loss_curve.png)" in text
    assert "not smart" in text and "tiny" in text.lower()  # what the model is not, said plainly


def test_snippets_name_the_repo_and_fit_the_context(run_folder):
    folder, *_ = run_folder
    snippets = usage_snippets(build_model_card(folder, REPO_ID).text)
    assert set(snippets) == {"flax", "pytorch"}
    assert f'FlaxAutoModelForCausalLM.from_pretrained("{REPO_ID}")' in snippets["flax"]
    assert f'AutoModelForCausalLM.from_pretrained("{REPO_ID}", trust_remote_code=True)' in snippets["pytorch"]
    for code in snippets.values():
        compile(code, "snippet", "exec")  # valid Python as rendered
        assert "'ROMEO:'" in code  # the run's sample prompt
        new_tokens = int(re.search(r"max_new_tokens=(\d+)", code).group(1))
        assert 0 < new_tokens <= 64 // 2  # leaves half the 64-token context for the prompt


def test_write_draws_a_missing_loss_curve_and_replaces_the_card_atomically(run_folder):
    folder, *_ = run_folder
    (folder / "README.md").write_text("old card\n")
    assert not (folder / "loss_curve.png").exists()
    write_model_card(folder, REPO_ID)
    assert (folder / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "README.md").read_text().startswith("---\n")
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]


@pytest.mark.parametrize(
    "dataset, listed, dataset_type",
    [(None, [EMBEDDED_DATASET_ID], EMBEDDED_DATASET_ID),  # the corpus shipped in the package
     ("tester/dolly-mini", ["tester/dolly-mini"], "tester/dolly-mini"),
     ("/home/someone/corpora/notes.jsonl", None, "notes.jsonl")],  # local: no Hub id, no path leaked
)
def test_datasets_metadata_names_hub_datasets_only(tmp_path, dataset, listed, dataset_type):
    folder = tmp_path / "run"
    fmt = "dolly" if dataset == "tester/dolly-mini" else "text"
    save_run(folder, settings=tiny_settings(folder, dataset=dataset, format=fmt),
             records=metrics_records({4: 5.0}, last_step=4))
    card = build_model_card(folder, REPO_ID)
    metadata = card.data.to_dict()
    assert metadata.get("datasets") == listed
    assert {r.dataset_type for r in card.data.eval_results} == {dataset_type}
    assert "/home/someone" not in str(card)
    if fmt == "dolly":
        assert "instruction-formatted records" in card.text and "dolly-style instruction records" in card.text
    if dataset is None:
        assert "public domain" in card.text


def test_a_model_saved_without_training_still_gets_an_honest_card(tmp_path):
    folder = tmp_path / "bare"
    config = PyGPTConfig(vocab_size=260, n_positions=16, n_embd=16, n_layer=1, n_head=2, position_embedding_type="rope")
    save_run(folder, settings=None, records=[], config=config)
    path = write_model_card(folder, REPO_ID)
    card = ModelCard.load(path)
    metadata = metadata_load(path)
    assert "model-index" not in metadata and "datasets" not in metadata  # nothing measured, nothing claimed
    assert metadata["pipeline_tag"] == "text-generation" and card.data.eval_results is None
    assert "No evaluation was recorded" in card.text and "without a training record" in card.text
    assert "](loss_curve.png)" not in card.text and "](training_settings.json)" not in card.text
    assert not (folder / "loss_curve.png").exists()
    assert md_table(card.text, "Parameters")["Position encoding"] == "rope"
    assert md_table(card.text, "Parameters")["Tied input/output embeddings"] == "yes"
    assert "max_new_tokens=8" in usage_snippets(card.text)["flax"]  # half of the 16-token context


def test_bad_folders_are_named_and_the_old_card_survives(tmp_path, run_folder):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        write_model_card(tmp_path, REPO_ID)

    folder, *_ = run_folder
    (folder / "README.md").write_text("the card that was there\n")
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "loss": \n')  # a line cut short
    with pytest.raises(ValueError, match=r"metrics.jsonl line 15 is not valid JSON"):
        write_model_card(folder, REPO_ID)
    assert (folder / "README.md").read_text() == "the card that was there\n"

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="not a PyGPT configuration"):
        write_model_card(folder, REPO_ID)
    (folder / "config.json").write_text(json.dumps({**config, "n_head": 5}))
    with pytest.raises(ValueError, match=r"n_embd \(32\) must be divisible by n_head \(5\)"):
        write_model_card(folder, REPO_ID)
