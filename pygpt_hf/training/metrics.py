"""What a person sees: a progress bar, eval figures, `metrics.jsonl` and a loss-curve PNG (run_folder.py draws it)."""

from __future__ import annotations

import json
import math
import os

from tqdm.auto import tqdm

from ..atomic import write_text
from ..run_folder import METRICS_FILE, read_metrics


def eval_summary(nats: float, targets: float, num_bytes: int) -> dict[str, float]:
    """Loss (nats/token), perplexity, and per UTF-8 byte of the evaluated text: nats/byte and bits/byte (the
    same divided by ln 2, what lm-evaluation-harness reports); the per-byte figures compare runs with
    different tokenizers."""
    loss = nats / max(targets, 1.0)
    nats_per_byte = nats / max(num_bytes, 1)
    return {
        "eval_loss": loss,
        "eval_perplexity": math.exp(min(loss, 700.0)),
        "eval_nats_per_byte": nats_per_byte,
        "eval_bits_per_byte": nats_per_byte / math.log(2),
    }


def eval_line(step: int, record: dict) -> str:
    """The progress line of an evaluation."""
    return (f"step {step}: eval loss {record['eval_loss']:.4f}, perplexity {record['eval_perplexity']:.2f}, "
            f"{record['eval_nats_per_byte']:.4f} nats/byte, {record['eval_bits_per_byte']:.4f} bits/byte")


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
        write_text(self.path, "".join(kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return read_metrics(self.path)


class ProgressBar:
    """A tqdm bar over optimizer steps showing loss, tokens/s and learning rate."""

    def __init__(self, total: int, initial: int, disable: bool = False):
        self.bar = tqdm(total=total, initial=initial, desc="training", unit="step", dynamic_ncols=True,
                        disable=disable, mininterval=0.5)

    def update(self, n: int, loss: float, tokens_per_s: float, lr: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
        self.bar.update(n)

    def write(self, text: str) -> None:
        if not self.bar.disable:  # (tqdm.write prints even for a disabled bar: the other processes stay quiet)
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
