"""One train step on 1 device vs 4 (data parallel, and --fsdp), side by side in one process on simulated CPU
devices: step-time ratios (medians of interleaved rounds), the per-device memory XLA plans for each compiled
step, and the gradient bytes a data-parallel step all-reduces. docs/concepts/scaling.md quotes its output.

    python scripts/bench_scaling.py                     # the default run's model: 4 x 128, batch 16 x 128
    python scripts/bench_scaling.py --rounds 9 --n-embd 256

Simulated devices share this machine's cores, so 4 of them cannot be faster than 1: the ratio says what the
split and the collectives cost, not what 4 real devices would gain.
"""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import argparse
import statistics
import time
import warnings

warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")

import jax
import numpy as np
from jax.sharding import Mesh

from pygpt_hf.training.settings import TrainSettings
from pygpt_hf.training.sharding import batch_sharding, state_sharding
from pygpt_hf.training.state import build_model, create_train_state, model_config, optimizer_from_settings
from pygpt_hf.training.step import make_train_step


def compiled_step(settings, devices, fsdp: bool):
    """(compiled step, state, batch) on a mesh of `devices`."""
    mesh = Mesh(np.array(devices), ("data",))
    model, params = build_model(model_config(settings, settings.vocab_size), settings.seed)
    optimizer, _ = optimizer_from_settings(settings)
    state = create_train_state(params, optimizer)
    shardings = state_sharding(state, mesh, fsdp)
    state = jax.device_put(state, shardings)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, settings.vocab_size, (1, settings.batch_size, settings.seq_len + 1), dtype=np.int32)
    batch = jax.device_put((tokens, np.ones_like(tokens, np.uint8)), batch_sharding(mesh))
    step = make_train_step(model, optimizer, state_sharding=shardings, batch_sharding=batch_sharding(mesh),
                           masked=True).lower(state, batch).compile()
    return step, state, batch


def per_device_mib(compiled) -> float:
    """Arguments + outputs + temporaries XLA planned for one device (donated buffers counted once)."""
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    settings = TrainSettings(n_layer=args.n_layer, n_embd=args.n_embd, batch_size=args.batch_size,
                             seq_len=args.seq_len, dropout=0.0)
    devices = jax.devices()
    peers = {"1 device": (devices[:1], False), "4 devices, data parallel": (devices[:4], False),
             "4 devices, FSDP": (devices[:4], True)}
    built = {name: compiled_step(settings, d, fsdp) for name, (d, fsdp) in peers.items()}
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(built["1 device"][1].params))
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(args.rounds):  # interleaved: every round times every peer, so load drifts hit all alike
        for name, (step, state, batch) in built.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times[name].append((time.perf_counter() - start) / args.steps)
            built[name] = (step, state, batch)
    base = statistics.median(times["1 device"])
    print(f"train step, {args.n_layer} x {args.n_embd}, batch {args.batch_size} x {args.seq_len}, f32, "
          f"{n_params / 1e6:.2f}M parameters; medians of {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'layout':<26} {'ms/step':>9} {'vs 1 device':>12} {'MiB per device (XLA plan)':>26}")
    for name, (step, _, _) in built.items():
        median = statistics.median(times[name])
        print(f"{name:<26} {median * 1e3:9.1f} {median / base:11.2f}x {per_device_mib(step):26.1f}")
    print(f"gradient all-reduce per step (data parallel): {n_params * 4 / 2**20:.2f} MiB "
          f"({n_params:,} float32 gradients)")


if __name__ == "__main__":
    main()
