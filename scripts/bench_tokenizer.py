"""Tokenizer benchmarks: our BPE trainer vs `tokenizers`' BpeTrainer, and encode speed vs the peers.

    python scripts/bench_tokenizer.py train  [--data ../shared/data/gutenberg.jsonl] [--runs 3]
    python scripts/bench_tokenizer.py encode [--data ...] [--runs 3]

(`scripts/benchmark.py tokenizer-train` / `tokenizer-encode` call `tokenizer_train(args)` /
`tokenizer_encode(args)` below; `add_train_args` / `add_encode_args` declare their flags.)

train:  each trainer runs in its own fresh subprocess, so its peak memory is its own: we report the peak
        resident set size (ru_maxrss) during training above the process's level just before it (corpus
        loaded, libraries imported). Same corpus, same GPT-4 split pattern, same vocabulary sizes.
        The "ours CLI" row times the whole `scripts/train_tokenizer.py` run from outside (interpreter start,
        imports, streaming the corpus through `datasets`, training, saving the folder).
encode: MB/s of UTF-8 input, one document per call, fresh tokenizer (cold cache) each run.
Times are medians over --runs; compare ratios, not absolute figures (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_DATA = "../shared/data/gutenberg.jsonl"
TRAIN_VOCAB_SIZES = (32000, 8192)
ENCODE_VOCAB_SIZE = 32000


def add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help="jsonl with a 'text' field (default: gutenberg)")
    parser.add_argument("--runs", type=int, default=3, help="runs per trainer and size (median reported)")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=list(TRAIN_VOCAB_SIZES))


def add_encode_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help="jsonl with a 'text' field (default: gutenberg)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tokenizer (median reported)")
    parser.add_argument("--vocab-size", type=int, default=ENCODE_VOCAB_SIZE)


def load_texts(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise SystemExit(f"bench_tokenizer: no corpus at {path} (run from the repo root, or pass --data)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _tokenizers_trainer(texts: list[str], vocab_size: int):
    """`tokenizers` BpeTrainer with our pipeline (GPT-4 split, ByteLevel without prefix space)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    from pygpt_hf.tokenization_pygpt import GPT4_SPLIT_PATTERN, SPECIAL_TOKENS

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def train_child(trainer: str, vocab_size: int, data: str, compression: bool) -> dict:
    """One training run, measured inside this (fresh) process."""
    import resource

    texts = load_texts(data)
    import tokenizers  # noqa: F401  (every import before the baseline and the clock)

    from pygpt_hf.bpe import train_tokenizer
    from pygpt_hf.tokenization_pygpt import GPT4_SPLIT_PATTERN  # noqa: F401  (used by _tokenizers_trainer)

    baseline = _maxrss_mib()
    cpu_start, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if trainer == "ours":
        tokenizer = train_tokenizer(texts, vocab_size, show_progress=False)
        encode_batch = tokenizer.backend_tokenizer.encode_batch
    else:
        tokenizer = _tokenizers_trainer(texts, vocab_size)
        encode_batch = tokenizer.encode_batch
    seconds, cpu_end = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)  # all threads
    result = {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": _maxrss_mib(),
              "peak_above_baseline_mib": _maxrss_mib() - baseline}
    if compression:
        n_tokens = sum(len(e.ids) for e in encode_batch(texts))
        result["bytes_per_token"] = sum(len(t.encode("utf-8")) for t in texts) / n_tokens
    return result


def _run_child(trainer: str, vocab_size: int, data: str, compression: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "_train-child", trainer, str(vocab_size), data]
    if compression:
        command.append("--compression")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _run_cli(vocab_size: int, data: str) -> dict:
    """The whole `scripts/train_tokenizer.py` run, start-up and saving included, timed from outside; its peak
    memory is the largest of the CLI process and its forked counting workers (ru_maxrss of the waited child)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_tokenizer.py")
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, script, "--dataset", data, "--vocab-size", str(vocab_size),
                   "--output-dir", os.path.join(folder, "tok")]
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"bench_tokenizer: {' '.join(command)} failed:\n{child.stderr.read().decode()[-2000:]}")
        child.stderr.close()
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}


def tokenizer_train(args: argparse.Namespace) -> None:
    data = getattr(args, "data", DEFAULT_DATA)
    runs = getattr(args, "runs", 3)
    sizes = getattr(args, "vocab_sizes", TRAIN_VOCAB_SIZES)
    texts = load_texts(data)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(
        f"BPE training on {data} ({len(texts)} docs, {mb:.2f} MB), GPT-4 split, median of {runs} run(s), "
        f"runs interleaved, one fresh subprocess each; tokenizers may use {os.cpu_count()} threads, ours "
        f"{os.cpu_count()} processes for counting"
    )
    header = f"{'vocab':>6}  {'trainer':<11} {'wall s':>7} {'cpu s':>7} {'runs, wall s':<20} {'peak MiB':>9} "
    print(header + f"{'+train MiB':>10} {'bytes/tok':>9}")
    trainers = ("tokenizers", "ours", "ours CLI")  # the CLI row: the whole program, from exec to saved folder
    for vocab_size in sizes:
        results = {trainer: [] for trainer in trainers}
        for i in range(runs):  # interleaved, so load from other processes hits all alike
            for trainer in trainers:
                result = (_run_cli(vocab_size, data) if trainer == "ours CLI"
                          else _run_child(trainer, vocab_size, data, compression=(i == 0)))
                results[trainer].append(result)
        wall = {t: statistics.median(r["seconds"] for r in results[t]) for t in trainers}
        cpu = {t: statistics.median(r["cpu_seconds"] for r in results[t]) for t in trainers}
        for trainer in trainers:
            rs = results[trainer]
            each_run = " ".join(f"{r['seconds']:.2f}" for r in rs)
            above = max(r.get("peak_above_baseline_mib", float("nan")) for r in rs)
            compression = rs[0].get("bytes_per_token", float("nan"))
            print(
                f"{vocab_size:>6}  {trainer:<11} {wall[trainer]:>7.2f} {cpu[trainer]:>7.2f} {each_run:<20} "
                f"{max(r['peak_mib'] for r in rs):>9.0f} {above:>10.0f} {compression:>9.3f}",
                flush=True,
            )
        print(
            f"{vocab_size:>6}  ours / tokenizers: wall {wall['ours'] / wall['tokenizers']:.2f}x, "
            f"cpu {cpu['ours'] / cpu['tokenizers']:.2f}x; whole CLI / tokenizers in-process: wall "
            f"{wall['ours CLI'] / wall['tokenizers']:.2f}x"
        )


def _mb_per_s(encode, texts: list[str], runs: int, make) -> tuple[float, int]:
    """Median MB/s of `encode(tokenizer, text)` over all texts, a fresh tokenizer (`make()`) each run."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    seconds, n_tokens = [], 0
    for _ in range(runs):
        tokenizer = make()
        start = time.perf_counter()
        n_tokens = sum(len(encode(tokenizer, t)) for t in texts)
        seconds.append(time.perf_counter() - start)
    return n_bytes / statistics.median(seconds) / 1e6, n_tokens


def tokenizer_encode(args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer
    from transformers import GPT2Tokenizer
    from transformers.utils import logging

    from pygpt_hf.bpe import train_tokenizer
    from pygpt_hf.tokenization_pygpt import PyGPTTokenizer
    from pygpt_hf.tokenization_pygpt_fast import PyGPTTokenizerFast

    logging.set_verbosity_error()  # no "sequence longer than model_max_length" warnings
    data = getattr(args, "data", DEFAULT_DATA)
    runs = getattr(args, "runs", 3)
    vocab_size = getattr(args, "vocab_size", ENCODE_VOCAB_SIZE)
    texts = load_texts(data)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"encode speed on {data} ({len(texts)} docs, {n_bytes / 1e6:.2f} MB), one document per call, "
          f"median of {runs}, vocabulary: ours at {vocab_size} trained on the same corpus")
    with tempfile.TemporaryDirectory() as folder:
        train_tokenizer(texts, vocab_size, show_progress=False).save_pretrained(folder)
        vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        rows = [
            ("PyGPTTokenizer (ours, slow)", lambda: PyGPTTokenizer(vocab, merges), lambda t, s: t(s)["input_ids"]),
            ("GPT2Tokenizer (slow, same files)", lambda: GPT2Tokenizer(vocab, merges), lambda t, s: t(s)["input_ids"]),
            ("PyGPTTokenizerFast (ours)", lambda: PyGPTTokenizerFast.from_pretrained(folder),
             lambda t, s: t(s)["input_ids"]),
            ("tokenizers.Tokenizer (raw)", lambda: Tokenizer.from_file(os.path.join(folder, "tokenizer.json")),
             lambda t, s: t.encode(s).ids),
        ]
        speeds = {}
        print(f"{'tokenizer':<34} {'MB/s':>7} {'bytes/tok':>9}")
        for name, make, encode in rows:
            speeds[name], n_tokens = _mb_per_s(encode, texts, runs, make)
            print(f"{name:<34} {speeds[name]:>7.2f} {n_bytes / n_tokens:>9.3f}", flush=True)
    names = [name for name, _, _ in rows]
    print(f"ours slow / GPT2Tokenizer: {speeds[names[0]] / speeds[names[1]]:.2f}x   "
          f"ours fast / raw tokenizers: {speeds[names[2]] / speeds[names[3]]:.2f}x")
    print("(GPT2Tokenizer splits with GPT-2's regex, so its tokens differ; it reads the same vocab/merges)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_args(commands.add_parser("train", help="trainer speed and memory, ours vs tokenizers"))
    add_encode_args(commands.add_parser("encode", help="encode MB/s, ours vs GPT2Tokenizer and tokenizers"))
    child = commands.add_parser("_train-child", help=argparse.SUPPRESS)
    child.add_argument("trainer", choices=["ours", "tokenizers"])
    child.add_argument("vocab_size", type=int)
    child.add_argument("data")
    child.add_argument("--compression", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "train":
        tokenizer_train(args)
    elif args.command == "encode":
        tokenizer_encode(args)
    else:
        print(json.dumps(train_child(args.trainer, args.vocab_size, args.data, args.compression)))


if __name__ == "__main__":
    main()
