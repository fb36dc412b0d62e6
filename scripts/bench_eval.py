"""Evaluation speed: tokens scored per second by evaluate.py's Flax path vs lm-eval's `hf` backend (PyTorch twin).

    python scripts/benchmark.py eval [--shapes tiny small] [--docs 64] [--repeats 3] [--batch-size 8]

The same fixed text (the first --docs paragraphs of the embedded tinyshakespeare, one document each, long ones
included) is scored at each model shape by
  - evaluate.py's language-modelling path (pygpt_hf.evaluation.perplexity.score_text) on the Flax model, with
    --stride n_positions-1, and the same on the PyTorch twin (--framework torch) for reference;
  - lm-eval's own `hf` backend on the PyTorch twin (`trust_remote_code=True`), `loglikelihood_rolling` with
    max_length = n_positions-1: the very same windows (pygpt_hf/evaluation/windows.py), so the same tokens.
Each path runs once to warm up (compiles), then the paths take turns, --repeats times; medians and ratios are
printed, and the bits per byte of the paths must agree (they score the same windows).
"""

from __future__ import annotations

import argparse
import math
import tempfile

SHAPES = {"tiny": {"n_layer": 4, "n_embd": 128, "n_head": 4}, "small": {"n_layer": 6, "n_embd": 384, "n_head": 6}}
N_POSITIONS = 256
VOCAB = 512


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=list(SHAPES))
    parser.add_argument("--docs", type=int, default=64, help="paragraphs of tinyshakespeare to score (default 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)


def fixed_text(n_docs: int) -> list[str]:
    from importlib import resources

    text = (resources.files("pygpt_hf") / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    # Every 7th paragraph joined with its next six: a few long documents that need several windows.
    docs = ["\n\n".join(paragraphs[i:i + 7]) if i % 7 == 0 else paragraphs[i] for i in range(0, 2 * n_docs, 2)]
    return docs[:n_docs]


def bench_shape(shape_name: str, docs: list[str], tokenizer, args: argparse.Namespace) -> None:
    """One model shape: the three paths side by side, then the ratio."""
    from benchmark import interleaved_medians
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
    from pygpt_hf.evaluation.loading import load_eval_model
    from pygpt_hf.evaluation.perplexity import score_text

    shape = SHAPES[shape_name]
    n_bytes = sum(len(d.encode()) for d in docs)
    n_tokens = sum(len(tokenizer.encode(d)) for d in docs)
    requests = [Instance("loglikelihood_rolling", {}, (d,), i) for i, d in enumerate(docs)]
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        FlaxPyGPTForCausalLM(PyGPTConfig(vocab_size=VOCAB, n_positions=N_POSITIONS, **shape),
                             seed=0).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        forwards = {"flax": load_eval_model(folder, framework="flax").forward(),
                    "torch": load_eval_model(folder, framework="torch").forward()}
        harness = HFLM(pretrained=folder, trust_remote_code=True, batch_size=args.batch_size,
                       max_length=N_POSITIONS - 1, device="cpu")

        def ours(name: str):
            def run() -> None:
                scores = score_text(docs, tokenizer, forwards[name], N_POSITIONS, N_POSITIONS - 1, args.batch_size)
                figures[name] = scores.bits_per_byte
            return run

        def hf() -> None:
            figures["hf"] = -sum(harness.loglikelihood_rolling(requests, disable_tqdm=True)) / math.log(2) / n_bytes

        paths = {"flax": ("evaluate.py, Flax (pygpt)", ours("flax")),
                 "torch": ("evaluate.py --framework torch", ours("torch")),
                 "hf": ("lm-eval hf backend (twin)", hf)}
        seconds = interleaved_medians({key: fn for key, (_, fn) in paths.items()}, args.repeats)
    label = f"{shape_name} {shape['n_layer']}x{shape['n_embd']}"
    for key, (name, _) in paths.items():
        print(f"{label:<14}{name:<34}{n_tokens / seconds[key]:>10,.0f}{figures[key]:>11.5f}")
    print(f"{'':<14}Flax tokens/s over the hf backend's: {seconds['hf'] / seconds['flax']:.2f}x (target >= 1)")
    if abs(figures["flax"] - figures["hf"]) > 1e-4 * figures["hf"]:
        raise SystemExit(f"the paths disagree on bits per byte: {figures}")


def main(args: argparse.Namespace) -> None:
    import warnings

    warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")
    from pygpt_hf.bpe import train_tokenizer

    docs = fixed_text(args.docs)
    tokenizer = train_tokenizer(docs, vocab_size=VOCAB, model_max_length=N_POSITIONS, show_progress=False)
    print(f"scoring {len(docs)} documents, {sum(len(tokenizer.encode(d)) for d in docs):,} tokens, "
          f"{sum(len(d.encode()) for d in docs):,} bytes; n_positions {N_POSITIONS}, windows of {N_POSITIONS} "
          f"advancing by {N_POSITIONS - 1}, batch {args.batch_size}, f32, median of {args.repeats}")
    print(f"{'shape':<14}{'path':<34}{'tokens/s':>10}{'bits/byte':>11}")
    for shape_name in args.shapes:
        bench_shape(shape_name, docs, tokenizer, args)
