"""Train step side by side, in one process: pygpt and transformers' FlaxGPT2 through the harness's jitted optax
step, and pygpt's PyTorch twin through `torch.optim.AdamW`, all f32, vocab 512, timed in interleaved rounds.

    python scripts/benchmark.py train [--repeats 5] [--no-rss] [--rows 0 2] [--breakdown]
    python scripts/benchmark.py train --end-to-end [--max-steps 400]   # the README's main command, whole

Per row: ms/step and tokens/s (medians), MFU against the matmul peak of the model's own framework measured in
the same run (f32 1536^2; model FLOPs = 6 x params x tokens + 12 x layers x width x seq per token), and the
peak resident memory of that one peer training that one shape alone in a fresh subprocess (VmHWM on Linux).
The last line of each row is pygpt's speed over the faster peer (above 1.00x: pygpt is faster).
With --end-to-end: the README's main command (`scripts/train.py` with its defaults, into a temp folder) in a
subprocess, and where its wall time went, as the run itself measured it (training/clock.py).

The twin uses the same optimizer settings as the harness (AdamW b2 0.95, decay 0.1 on matrices, clip 1.0), at
a constant learning rate: the schedule is a scalar and costs nothing measurable.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import SHAPES, VOCAB, build_pair, count_params, interleaved_medians, median_seconds

# (shape, seq, batch): the two shapes, then the README's default recipe's shape
ROWS = (("tiny", 64, 12), ("small", 256, 8), ("tiny", 128, 16))
TORCH_THREADS = 2
PEERS = ("pygpt", "FlaxGPT2", "torch twin")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians reported)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(range(len(ROWS))),
                        help=f"which rows to run, by index into {ROWS}")
    parser.add_argument("--no-rss", dest="rss", action="store_false", help="skip the per-peer peak-memory runs")
    parser.add_argument("--breakdown", action="store_true",
                        help="instead: where pygpt's step time goes, by op class (scripts/bench_step_breakdown.py)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="instead: the README's main command, whole, and the share of its time in train steps")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="with --end-to-end: pass --max-steps to scripts/train.py (default: its own default)")


def model_flops(n_params: int, shape: dict, seq: int, batch: int) -> float:
    tokens = batch * seq
    return 6 * n_params * tokens + 12 * shape["n_layer"] * shape["n_embd"] * seq * tokens


def jax_matmul_peak(size: int = 1536, repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    return 2 * size**3 / median_seconds(lambda: matmul(a).block_until_ready(), repeats) / 1e9


def torch_matmul_peak(size: int = 1536, repeats: int = 5) -> float:
    import torch

    a = torch.randn(size, size)
    return 2 * size**3 / median_seconds(lambda: a @ a, repeats) / 1e9


def flax_steps(shape: dict, seq: int, batch: int, names=("pygpt", "FlaxGPT2")) -> dict:
    """name -> (one train step, params count) for the Flax models, through the harness's step."""
    import jax
    import jax.numpy as jnp

    from pygpt_hf.training import create_train_state, make_optimizer, make_train_step

    models = build_pair(shape, n_positions=seq)
    data = jax.random.randint(jax.random.PRNGKey(0), (1, batch, seq + 1), 0, VOCAB)  # (grad_accum, B, T+1)
    steps = {}
    for name in names:
        model = models[name]
        optimizer, _ = make_optimizer(lr=3e-4, warmup_steps=10, max_steps=1000)
        step = make_train_step(model, optimizer)
        holder = [create_train_state(jax.tree_util.tree_map(jnp.copy, model.params), optimizer)]

        def run(holder=holder, step=step):
            holder[0], metrics = step(holder[0], data)
            metrics["loss"].block_until_ready()

        steps[name] = (run, count_params(model.params))
    return steps


def torch_step(shape: dict, seq: int, batch: int) -> tuple:
    """(one train step, params count) for the PyTorch twin: forward, cross-entropy, backward, clip, AdamW."""
    import torch
    import torch.nn.functional as F

    from pygpt_hf import PyGPTConfig
    from pygpt_hf.modeling_pygpt import PyGPTForCausalLM

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    model = PyGPTForCausalLM(PyGPTConfig(vocab_size=VOCAB, n_positions=seq, **shape)).train()
    params = list(model.parameters())  # tied embedding listed once
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95))
    tokens = torch.randint(0, VOCAB, (batch, seq + 1))

    def run():
        logits = model(input_ids=tokens[:, :-1], use_cache=False).logits  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return run, sum(p.numel() for p in params)


def peer_step(peer: str, shape: dict, seq: int, batch: int) -> tuple:
    return torch_step(shape, seq, batch) if peer == "torch twin" else flax_steps(shape, seq, batch, [peer])[peer]


def peak_rss_mb(peer: str, row: int) -> float:
    """Peak resident memory of a fresh process that builds `peer` and trains ROWS[row] for 3 steps."""
    done = subprocess.run([sys.executable, __file__, "--rss-of", peer, str(row)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"peak-memory run of {peer} on row {row} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def bench_train(args: argparse.Namespace) -> None:
    if args.end_to_end:
        end_to_end(args.max_steps)
        return
    if args.breakdown:
        from bench_step_breakdown import breakdown

        for row in args.rows:
            breakdown(row, args.repeats)
        return
    peaks = {"jax": jax_matmul_peak(), "torch": torch_matmul_peak()}
    print(f"f32 matmul peak, 1536^2, median: JAX {peaks['jax']:.0f} GFLOP/s, torch {peaks['torch']:.0f} GFLOP/s "
          f"({TORCH_THREADS} threads); train step: medians of {args.repeats} interleaved rounds")
    print(f"{'shape':<28}{'model':>11}{'ms/step':>10}{'tok/s':>10}{'MFU':>7}{'peak RSS':>11}")
    for row in args.rows:
        shape_name, seq, batch = ROWS[row]
        shape = SHAPES[shape_name]
        steps = flax_steps(shape, seq, batch)
        steps["torch twin"] = torch_step(shape, seq, batch)
        seconds = interleaved_medians({name: run for name, (run, _) in steps.items()}, args.repeats)
        label = f"{shape['n_layer']}x{shape['n_embd']} seq {seq} batch {batch}"
        for name, (_, n_params) in steps.items():
            peak = peaks["torch" if name == "torch twin" else "jax"]
            mfu = model_flops(n_params, shape, seq, batch) / seconds[name] / 1e9 / peak
            rss = f"{peak_rss_mb(name, row):,.0f} MB" if args.rss else "-"
            print(f"{label:<28}{name:>11}{seconds[name] * 1e3:>10.1f}{batch * seq / seconds[name]:>10,.0f}"
                  f"{mfu:>7.0%}{rss:>11}")
        faster = min(("FlaxGPT2", "torch twin"), key=seconds.get)
        print(f"{'':<28}pygpt / faster peer ({faster}): {seconds[faster] / seconds['pygpt']:.2f}x")


def end_to_end(max_steps: int | None) -> None:
    """Run the README's main command in a subprocess and print where its wall time went."""
    train_py = Path(__file__).resolve().parent / "train.py"
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, str(train_py), "--output-dir", out]
        if max_steps is not None:
            command += ["--max-steps", str(max_steps)]
        shown = " ".join(["python scripts/train.py", *command[2:]]).replace(out, "TMP")
        print(f"end to end: {shown}  (the README's main command; its own progress bar follows)", flush=True)
        start = time.time()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)  # stderr: the progress bar
        wall = time.time() - start
        if done.returncode != 0:
            raise RuntimeError(f"scripts/train.py exited with {done.returncode}")
        t = json.loads((Path(out) / "train_results.json").read_text())["timings"]
    startup = ", ".join(f"{part} {seconds:.1f}" for part, seconds in t["startup_s"].items())
    outside = ", ".join(f"{part} {seconds / t['training_s']:.1%}" for part, seconds in t["host_s"].items())
    hidden = sum(t.get("hidden_s", {}).values()) / t["training_s"]
    print(f"  wall {wall:.1f} s: first step after {t['first_step_after_s']:.1f} s ({startup}), "
          f"training {t['training_s']:.1f} s, then the sample")
    print(f"  train steps {t['train_step_share']:.1%} of the training time (target >= 95%); outside them: {outside} "
          f"(and {hidden:.1%} of host work ran while a step computed)")
    print(f"  tokens/s: {t['step_tokens_per_s']:,.0f} in train steps, {t['training_tokens_per_s']:,.0f} over the "
          f"training time, {t['end_to_end_tokens_per_s']:,.0f} end to end; "
          f"compiles after the first step: {t['compiles_after_first_step']}")


def _report_peak_rss(peer: str, row: int) -> None:
    shape_name, seq, batch = ROWS[row]
    run, _ = peer_step(peer, SHAPES[shape_name], seq, batch)
    for _ in range(3):
        run()
    print(json.dumps({"peak_rss_mb": _peak_rss_kib() / 1024}))


def _peak_rss_kib() -> float:
    """This process's peak resident memory. On Linux VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child
    started from the (large) benchmark process would report the parent's peak instead of its own."""
    try:
        with open("/proc/self/status") as status:
            return next(float(line.split()[1]) for line in status if line.startswith("VmHWM:"))  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)


if __name__ == "__main__":  # the peak-memory child: bench_train.py --rss-of PEER ROW
    parser = argparse.ArgumentParser(description="one peer's peak memory on one row (used by bench_train)")
    parser.add_argument("--rss-of", nargs=2, metavar=("PEER", "ROW"), required=True)
    peer_name, row_index = parser.parse_args().rss_of
    if peer_name not in PEERS:
        parser.error(f"--rss-of PEER must be one of {PEERS}, got {peer_name!r}")
    _report_peak_rss(peer_name, int(row_index))
