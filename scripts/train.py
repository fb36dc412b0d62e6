"""Train a PyGPT model and save it as a Hugging Face model folder.

    python scripts/train.py                      # offline: tinyshakespeare, a fresh BPE, ~10 min on 2 CPU cores
    python scripts/train.py --dataset data.jsonl --text-column body --max-steps 5000
    python scripts/train.py --dataset "dolly.jsonl@dolly:0.7,math.jsonl@dolly:0.3" --loss-on response
    python scripts/train.py --dataset data/pretok            # a folder written by scripts/pretokenize.py
    python scripts/train.py --config run.yaml --resume
    python scripts/train.py --help               # every setting
    python scripts/train.py --coordinator-address 10.0.0.1:1234 --num-processes 2 --process-id 0   # one per host

Exit codes: 0 done, 1 the loss diverged (NaN/inf), 2 bad settings or data, 130 interrupted (Ctrl-C; a
checkpoint was saved, continue with --resume). In a multi-process run only process 0 prints; a process that
fails prints its error, tells the others through jax's coordination service and exits at once; each other
process then prints that error, naming the process, and exits with 1 (sharding.watch_failures).
"""

import time

STARTED = time.time()  # before the imports: the summary says how long they took

import os
import sys
import warnings

if __name__ == "__main__":  # as a program only: a test that imports main() keeps its process's torch
    # The harness is JAX. transformers imports torch (and, through it, scikit-learn) whenever torch is installed,
    # which doubles the start-up; USE_TORCH=0 is transformers' own switch for that (a value the user set is
    # kept). The saved model still loads in PyTorch: the checkpoint is safetensors.
    os.environ.setdefault("USE_TORCH", "0")

warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")  # transformers 4.57 notice

from pygpt_hf.training import NoUsableData, TrainingDiverged, parse_settings, train
from pygpt_hf.training.clock import describe as describe_timings


def main(argv: list[str] | None = None) -> int:
    try:
        settings, notes = parse_settings(argv)
        from pygpt_hf.training.sharding import join_processes

        launch = join_processes(settings)  # before anything else touches jax (a no-op for one process)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import jax

    lead, where = jax.process_index() == 0, f" (process {jax.process_index()} of {jax.process_count()})"
    if lead:
        print("settings:\n" + settings.describe(), flush=True)
        for note in notes:
            print(note, flush=True)
    try:
        result = train(settings, log=lambda text: print(text, flush=True), started=STARTED)
    except (NoUsableData, ValueError, FileNotFoundError, FileExistsError) as err:
        return _failed(f"error{where if launch else ''}: {err}", 2, launch)
    except TrainingDiverged as err:
        return _failed(f"error{where if launch else ''}: {err}", 1, launch)
    except KeyboardInterrupt:  # before the loop started, or a second Ctrl-C
        return _failed("interrupted: stopped at once (checkpoints already written are intact)", 130, launch)
    except Exception as err:
        if not launch:
            raise
        import traceback

        traceback.print_exc()
        return _failed(f"error{where}: {type(err).__name__}: {err}", 1, launch)
    if not lead:
        return 0 if result.stopped != "interrupted" else 130

    ev = result.final_eval
    print("\nsummary:")
    print(f"  stopped      {result.stopped} at step {result.step:,} ({result.tokens:,} tokens this session, "
          f"{result.seconds / 60:.1f} min)")
    print(f"  model        {result.num_params / 1e6:.2f}M parameters, saved in {result.output_dir}"
          f" (latest checkpoint {result.checkpoint})")
    if ev:
        print(f"  final eval   loss {ev['eval_loss']:.4f}, perplexity {ev['eval_perplexity']:.2f}, "
              f"{ev['eval_nats_per_byte']:.4f} nats/byte (step {ev['step']})")
    if result.best_eval_loss is not None:
        print(f"  best eval    loss {result.best_eval_loss:.4f}")
    if result.timings:
        print("\n".join(describe_timings(result.timings)))
    if result.sample is not None:
        print("\nsample:\n" + result.sample)
    if result.stopped == "interrupted":
        print(f"\ninterrupted: continue with  python scripts/train.py --output-dir {result.output_dir} --resume")
        return 130
    return 0


def _failed(message: str, code: int, launch) -> int:
    """Print why; in a multi-process run tell the others (they stop too, printing this message) and leave at
    once, without jax's orderly shutdown (which would wait for them)."""
    print(message, file=sys.stderr, flush=True)
    if launch:
        from pygpt_hf.training.sharding import report_failure

        report_failure(message)
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
