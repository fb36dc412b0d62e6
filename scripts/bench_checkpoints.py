"""Host memory of loading a Flax checkpoint: one model.safetensors vs shards.

    python scripts/benchmark.py checkpoint-load [--n-layer 8] [--n-embd 512] [--shard-size 20MB] [--repeats 2]

One model is saved twice, as one `model.safetensors` (loaded by transformers' PT->Flax path) and as shards
(loaded by our `from_pretrained`, one tensor at a time). Each load runs in a fresh process, taking turns;
the peak resident memory during the load (Linux VmHWM, reset just before) above the RSS before it is
printed per path, with its ratio to the weights' size. The sharded path should stay near 1x (the model
plus one tensor); a load that materialises a second copy shows up as 2x or more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-layer", type=int, default=8)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--shard-size", default="20MB", help="max_shard_size of the sharded copy (default 20MB)")
    parser.add_argument("--repeats", type=int, default=2)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def measure_one_load(folder: str) -> None:
    """In the child process: warm up, reset the peak, load `folder`, print the peak growth in MB."""
    import warnings

    warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")
    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig

    FlaxPyGPTForCausalLM(PyGPTConfig(vocab_size=300, n_positions=8, n_embd=16, n_layer=1, n_head=2))  # imports, jit
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (the peak) to the current RSS
    before = _status_mb("VmRSS:")
    FlaxPyGPTForCausalLM.from_pretrained(folder)
    print(_status_mb("VmHWM:") - before)


def main(args: argparse.Namespace) -> None:
    import warnings

    warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")
    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig

    config = PyGPTConfig(vocab_size=args.vocab_size, n_positions=256, n_embd=args.n_embd, n_layer=args.n_layer,
                         n_head=8)
    with tempfile.TemporaryDirectory() as root:
        folders = {"one model.safetensors (transformers)": os.path.join(root, "one"),
                   f"shards of {args.shard_size} (ours)": os.path.join(root, "sharded")}
        model = FlaxPyGPTForCausalLM(config, seed=0)
        model.save_pretrained(folders["one model.safetensors (transformers)"])
        model.save_pretrained(folders[f"shards of {args.shard_size} (ours)"], max_shard_size=args.shard_size)
        del model
        one = folders["one model.safetensors (transformers)"]
        weights_mb = os.path.getsize(os.path.join(one, "model.safetensors")) / 2**20
        print(f"Flax from_pretrained, {args.n_layer} layers x {args.n_embd}, vocab {args.vocab_size}: "
              f"{weights_mb:.0f} MB of f32 weights; peak RSS growth during the load, median of {args.repeats}")
        peaks = {name: [] for name in folders}
        for _ in range(args.repeats):
            for name, folder in folders.items():
                out = subprocess.run([sys.executable, __file__, "--child", folder], capture_output=True, text=True,
                                     check=True).stdout
                peaks[name].append(float(out.strip().splitlines()[-1]))
        print(f"{'checkpoint':<36}{'peak MB':>10}{'x weights':>11}")
        for name, values in peaks.items():
            peak = statistics.median(values)
            print(f"{name:<36}{peak:>10.0f}{peak / weights_mb:>11.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        measure_one_load(sys.argv[2])
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(parser)
        main(parser.parse_args())
