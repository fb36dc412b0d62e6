"""Quality per second: bits per byte on held-out tinyshakespeare after the same wall-clock budget.

    python scripts/benchmark.py quality [--peer-iters 2000] [--ours-args "--max-steps 400"] [--keep DIR]

The peer is nanoGPT's own small CPU example (its README: `train.py config/train_shakespeare_char.py
--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
--n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`), that recipe run on pygpt's
PyTorch twin: characters (here bytes, the same thing on this ASCII text), learned positions, a tied head, AdamW
at 1e-3 with betas (0.9, 0.99) and decay 0.1 on matrices, 100 warmup steps then a cosine to 1e-4 at 2000, clip
1.0, random 64-byte windows of the training text, and its evaluation every 250 steps (20 batches of each split),
which counts in its time as it does in nanoGPT's.

Both sides read the same split of the embedded corpus: the first 90% of its paragraphs train, the last 10% are
held out (nanoGPT holds out its last 10% too). The training text reaches the peer as nanoGPT's stream does, with
each blank-line paragraph break written as pygpt's document separator, so that both models see the held-out
paragraphs as they trained. pygpt then runs the README's main command (`scripts/train.py`, every default) on the
training split with `--max-minutes` set to the peer's wall time, and both are scored by the same code
(`pygpt_hf.evaluation.perplexity.score_text`, each model with its own context), in bits per byte.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.8  # issue 16: at least 20% fewer bits per byte than the peer in its wall time


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peer-iters", type=int, default=2000, help="nanoGPT's max_iters (default 2000)")
    parser.add_argument("--ours-args", default="", help="extra arguments for scripts/train.py (quoted)")
    parser.add_argument("--keep", metavar="DIR", help="keep the split, both models and the logs in DIR")


def split_corpus(folder: Path) -> tuple[Path, list[str]]:
    """train.txt (first 90% of the paragraphs) in `folder`, and the held-out paragraphs."""
    from pygpt_hf.documents import embedded_corpus_path, read_records

    paragraphs = [r["text"] for r in read_records(embedded_corpus_path())]
    cut = math.ceil(len(paragraphs) * 0.9)
    train = folder / "train.txt"
    train.write_text("\n\n".join(paragraphs[:cut]) + "\n", encoding="utf-8")
    return train, paragraphs[cut:]


def train_peer(train_file: Path, out: Path, iters: int) -> float:
    """nanoGPT's CPU shakespeare-char recipe on the PyTorch twin; returns its wall seconds (loop and evals)."""
    import numpy as np
    import torch

    from pygpt_hf.bpe import train_tokenizer
    from pygpt_hf.configuration_pygpt import PyGPTConfig
    from pygpt_hf.evaluation.perplexity import document_ids
    from pygpt_hf.modeling_pygpt import PyGPTForCausalLM

    block, batch, eval_interval, eval_iters = 64, 12, 250, 20
    lr, min_lr, warmup, decay_iters = 1e-3, 1e-4, 100, iters
    paragraphs = train_file.read_text(encoding="utf-8").split("\n\n")
    tokenizer = train_tokenizer(paragraphs, vocab_size=258, model_max_length=block, show_progress=False)  # bytes
    # one stream, each paragraph after <|endoftext|>: the documents as training packs them and scoring reads them
    data = np.asarray([i for text in paragraphs for i in document_ids(tokenizer, text)], dtype=np.int64)
    cut = int(0.9 * len(data))  # nanoGPT's own train/val split, for its in-run evaluation
    splits = {"train": torch.from_numpy(data[:cut]), "val": torch.from_numpy(data[cut:])}

    torch.manual_seed(1337)
    config = PyGPTConfig(vocab_size=len(tokenizer), n_positions=block, n_embd=128, n_layer=4, n_head=4,
                         position_embedding_type="learned", tie_word_embeddings=True, activation_function="gelu",
                         embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = PyGPTForCausalLM(config)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = splits[split]
        ix = torch.randint(len(d) - block, (batch,))
        return torch.stack([d[i:i + block] for i in ix]), torch.stack([d[i + 1:i + 1 + block] for i in ix])

    def get_lr(it: int) -> float:  # nanoGPT's: linear warmup, then cosine to min_lr at decay_iters
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay_iters:
            return min_lr
        ratio = (it - warmup) / (decay_iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    start = time.perf_counter()
    for it in range(iters + 1):  # nanoGPT runs iterations 0 .. max_iters
        if it % eval_interval == 0:
            model.eval()
            with torch.no_grad():
                losses = {s: float(np.mean([loss_of(*get_batch(s)).item() for _ in range(eval_iters)]))
                          for s in splits}
            model.train()
            print(f"peer step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        loss = loss_of(*get_batch("train"))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return seconds


def bits_per_byte(folder: Path, framework: str, held_out: list[str]) -> float:
    from pygpt_hf.evaluation.loading import load_eval_model
    from pygpt_hf.evaluation.perplexity import score_text

    model = load_eval_model(str(folder), framework=framework)
    return score_text(held_out, model.tokenizer, model.forward(), model.n_positions).bits_per_byte


def main(args: argparse.Namespace) -> None:
    notice = "TensorFlow and JAX classes are deprecated"  # transformers 4.57 logs it when a Flax model loads
    logging.getLogger("transformers.modeling_flax_utils").addFilter(lambda record: notice not in record.getMessage())
    keep = Path(args.keep) if args.keep else None
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_file, held_out = split_corpus(work)
        held_bytes = sum(len(p.encode()) for p in held_out)
        print(f"tinyshakespeare split by paragraphs: {train_file.stat().st_size:,} bytes train, "
              f"{len(held_out)} held-out paragraphs ({held_bytes:,} bytes)")

        peer_dir = work / "peer"
        peer_seconds = _train_peer_in_subprocess(train_file, peer_dir, args.peer_iters)
        print(f"peer (nanoGPT's CPU shakespeare-char recipe, {args.peer_iters} iters): {peer_seconds:.1f} s")

        ours_dir = work / "ours"
        command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--dataset", str(train_file),
                   "--output-dir", str(ours_dir), "--max-minutes", f"{peer_seconds / 60:.4f}",
                   *shlex.split(args.ours_args)]
        print("ours: " + " ".join(shlex.quote(c) for c in command[1:]), flush=True)
        started = time.perf_counter()
        with open(work / "ours.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        ours_wall = time.perf_counter() - started
        print(f"ours: {ours_wall:.1f} s wall in all (training capped at {peer_seconds:.1f} s); "
              + _last_line_with(work / "ours.log", "tokens/s"))

        peer_bpb = bits_per_byte(peer_dir, "torch", held_out)
        ours_bpb = bits_per_byte(ours_dir, "flax", held_out)
        print(f"{'model':<34}{'bits/byte':>10}")
        print(f"{'peer (nanoGPT recipe, bytes)':<34}{peer_bpb:>10.4f}")
        print(f"{'ours (README default recipe)':<34}{ours_bpb:>10.4f}")
        print(f"ours / peer = {ours_bpb / peer_bpb:.3f} (target <= {TARGET}: at least 20% fewer bits per byte)")


def _train_peer_in_subprocess(train_file: Path, out: Path, iters: int) -> float:
    """Train the peer in a fresh process (torch alone, no jax threads beside it); returns its seconds."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import bench_quality as b; "
            f"print('SECONDS', b.train_peer(b.Path({str(train_file)!r}), b.Path({str(out)!r}), {iters}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the peer run failed:\n{done.stderr[-4000:]}")
    for line in done.stdout.splitlines():
        if line.startswith("peer step"):
            print("  " + line)
    return float(done.stdout.split("SECONDS")[-1])


def _last_line_with(path: Path, needle: str) -> str:
    lines = [line.strip() for line in path.read_text().splitlines() if needle in line]
    return lines[-1] if lines else ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    main(parser.parse_args())
