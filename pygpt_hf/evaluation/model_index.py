"""`--update-card`: evaluation results as `model-index` entries in a model folder's README.md (its model card).

Built with huggingface_hub's `ModelCard` / `EvalResult`, offline (never `ModelCard.validate()` or
`push_to_hub()`, which POST to huggingface.co). Entries for the same task, dataset, split and metric are
replaced; all others are kept, so evaluating on several datasets accumulates. The same entries are also kept
in `eval_results.json` beside the card, so a card re-rendered from its template (model_card.py) can carry them.
Both files are written to a temp file and renamed: a crash leaves the old card whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

CARD_FILE = "README.md"
RESULTS_FILE = "eval_results.json"


def eval_results(results: dict) -> list[EvalResult]:
    """`EvalResult`s for one evaluate.py result (language modelling or synthetic math)."""
    dataset = results["dataset"]
    common = {"dataset_type": dataset["name"], "dataset_name": dataset["name"], "dataset_split": dataset.get("split"),
                  "dataset_revision": dataset.get("revision")}
    if results["task"] == "synthetic-math":
        return [EvalResult(task_type="text-generation", task_name="Synthetic math (exact match)",
                           metric_type="exact_match", metric_name="Exact-match accuracy",
                           metric_value=results["accuracy"], **common)]
    lm = dict(task_type="text-generation", task_name="Language modelling", **common)
    return [
        EvalResult(metric_type="bits_per_byte", metric_name="Bits per byte", metric_value=results["bits_per_byte"],
                   **lm),
        EvalResult(metric_type="perplexity", metric_name="Perplexity", metric_value=results["perplexity"], **lm),
        EvalResult(metric_type="loss", metric_name="Nats per token", metric_value=results["nats_per_token"], **lm),
    ]


def _key(result: EvalResult) -> tuple:
    return (result.task_type, result.task_name, result.dataset_name, result.dataset_split, result.metric_type)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def update_card(folder: str | os.PathLike, results: dict) -> Path:
    """Merge `results` into `folder`/README.md's model-index (creating a minimal card if there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--update-card needs a local model folder, and {folder} is not one (a Hub repo's card "
                         "is updated by evaluating its local copy and pushing it)")
    path = folder / CARD_FILE
    card = ModelCard(path.read_text(encoding="utf-8")) if path.is_file() else ModelCard(
        f"---\nlibrary_name: transformers\ntags:\n- pygpt\n---\n# {folder.resolve().name}\n\nA pygpt model.\n")
    new = eval_results(results)
    replaced = {_key(r) for r in new}
    kept = [r for r in (card.data.eval_results or []) if _key(r) not in replaced]
    card.data.eval_results = kept + new
    if not card.data.model_name:
        card.data.model_name = folder.resolve().name
    _write_atomic(path, str(card))

    record_path = folder / RESULTS_FILE
    records = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else []
    records = [r for r in records if tuple(r.get(k) for k in ("task_type", "task_name", "dataset_name",
                                                                "dataset_split", "metric_type")) not in replaced]
    records += [{k: v for k, v in vars(r).items() if v is not None} for r in new]
    _write_atomic(record_path, json.dumps(records, indent=2) + "\n")
    return path
