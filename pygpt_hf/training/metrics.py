"""What a person sees: a progress bar, `metrics.jsonl` (one JSON record a line) and a loss-curve PNG."""

from __future__ import annotations

import json
import math
import os

from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss_curve.png"


def eval_summary(nats: float, targets: float, num_bytes: int) -> dict[str, float]:
    """Loss (nats/token), perplexity, and nats/byte: the last compares runs with different tokenizers."""
    loss = nats / max(targets, 1.0)
    return {
        "eval_loss": loss,
        "eval_perplexity": math.exp(min(loss, 700.0)),
        "eval_nats_per_byte": nats / max(num_bytes, 1),
    }


class MetricsLog:
    """Appends records to `metrics.jsonl` (flushed, so a crash loses nothing already written)."""

    def __init__(self, output_dir: str, resume_step: int | None = None):
        self.path = os.path.join(output_dir, METRICS_FILE)
        if resume_step is not None and os.path.isfile(self.path):
            self._truncate_after(resume_step)
        elif resume_step is None and os.path.exists(self.path):
            os.remove(self.path)  # a fresh run starts a fresh log

    def _truncate_after(self, step: int) -> None:
        """Drop records a crashed run wrote after the checkpoint we resume from (they will be redone)."""
        with open(self.path, encoding="utf-8") as f:
            kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(self.path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(self.path + ".tmp", self.path)

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return read_metrics(self.path)


def read_metrics(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
    fig.savefig(path + ".tmp.png")
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


class ProgressBar:
    """A tqdm bar over optimizer steps showing loss, tokens/s and learning rate."""

    def __init__(self, total: int, initial: int, disable: bool = False):
        self.bar = tqdm(total=total, initial=initial, desc="training", unit="step", dynamic_ncols=True,
                        disable=disable, mininterval=0.5)

    def update(self, n: int, loss: float, tokens_per_s: float, lr: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
        self.bar.update(n)

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
