"""What a training run leaves in its output folder, named once, with readers that need no harness.

    training_settings.json                the run's settings (scripts/train.py writes them; --resume reads them)
    metrics.jsonl                         one JSON record a line: train loss per logged step, eval figures
    loss_curve.png                        train and eval loss against steps
    train_results.json                    where the last session's wall time went, tokens/s (training/clock.py)
    checkpoint-NNNNNNN/                   a complete checkpoint: the model folder + training_state/state.json

The training harness writes these files; the model card (model_card.py) and anyone else read them through
this module, without importing the harness.
"""

from __future__ import annotations

import json
import os
import re

from .atomic import atomic_file

SETTINGS_FILE = "training_settings.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss_curve.png"
RESULTS_FILE = "train_results.json"  # (the name transformers' Trainer.save_metrics("train") uses)
STATE_DIR = "training_state"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, str]]:
    """[(step, path)] of the complete checkpoints in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, STATE_DIR, "state.json")):
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of metrics.jsonl ([] when there is none), naming a line that does not parse."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {number} is not valid JSON: {err}") from err
    return records


def plot_loss_curve(records: list[dict], path: str, title: str = "") -> None:
    """Train loss (per logged step) and eval loss against steps, saved as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss (held-out)", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "PyGPT training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:  # a reader (the Hub push) sees the old picture or the new one
        fig.savefig(tmp)
    plt.close(fig)
