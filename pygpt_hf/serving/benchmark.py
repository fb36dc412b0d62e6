"""`scripts/benchmark.py serve`: the server under a bounded load on loopback, batched vs one at a time.

For each model shape (random weights, a tokenizer trained on the embedded corpus, saved to a temp folder),
`scripts/serve.py` runs in two subprocesses on free loopback ports: continuous batching with 16 slots, and
`--max-batch 1` (one request at a time). A load generator (asyncio + aiohttp, in this process) runs 1, 4 and 16
concurrent clients, each
sending a fixed number of streamed greedy completions of `--new-tokens` tokens (`ignore_eos`, so each runs
its full length), and prints requests/s, generated tokens/s, time to first token and p50/p99 latency. The
ceiling is the model's own jitted `generate` at batch 16 on the same prompts. Both servers stay up and every
round runs each setting once, side by side, so the printed medians compare like with like on a busy machine.
It also checks that every stream's greedy text is the same batched as alone.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"default": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 128, "vocab_size": 1024},
          "6x384": {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_positions": 256, "vocab_size": 1024}}
ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser) -> None:
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per client (default 2)")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians are printed)")
    parser.add_argument("--steps-per-call", type=int, default=8, help="scripts/serve.py --steps-per-call")
    parser.add_argument("--engines", type=int, default=1, help="scripts/serve.py --engines, for the batched server")


def bench_prompts(vocab_size: int, prompt_tokens: int, n: int = 16) -> list[list[int]]:
    """n fixed prompts (seeded): <|endoftext|> (id 256), then random ids past the specials."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [[256] + rng.integers(258, vocab_size, prompt_tokens - 1).tolist() for _ in range(n)]


def save_bench_tokenizer(folder: str, vocab_size: int) -> None:
    """A tokenizer trained on the embedded corpus's first 4000 lines, saved in `folder` (the servers load it)."""
    from pygpt_hf.bpe import train_tokenizer
    from pygpt_hf.documents import embedded_corpus_path

    text = Path(embedded_corpus_path()).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    train_tokenizer(lines[:4000], vocab_size=vocab_size, show_progress=False).save_pretrained(folder)


def _percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class _Server:
    """scripts/serve.py on `folder`, in a subprocess on a free loopback port."""

    def __init__(self, folder: str, max_batch: int, steps_per_call: int, engines: int = 1):
        command = [sys.executable, str(ROOT / "scripts" / "serve.py"), "--model", folder, "--port", "0", "--no-page",
                   "--served-model-name", "bench", "--max-batch", str(max_batch), "--steps-per-call", str(steps_per_call),
                   "--engines", str(engines)]
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115  its stderr (the warm-up line, or why it failed), closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
        for line in self.process.stdout:
            if line.startswith("API:"):
                self.url = line.split()[1].removesuffix("/v1")
                self.log.seek(0)
                warm = [line.split(" (")[0] for line in self.log if line.startswith("compiled ")]
                print(f"  server --max-batch {max_batch} --engines {engines}: {warm[0] if warm else 'no warm-up line'}",
                      flush=True)
                return
        self.log.seek(0)
        raise RuntimeError(f"scripts/serve.py exited ({self.process.wait()}) before it was ready:\n{self.log.read()}")

    def stop(self, label: str = ""):
        """Stop it; print its engine's shutdown line (calls, rows in use, the worker's time) under `label`."""
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.seek(0)
        for line in self.log:
            if line.startswith("engine:") and label:
                print(f"  {label}: {line.strip()}", flush=True)
        self.log.close()


async def _load(url: str, prompts: list[list[int]], clients: int, requests: int, new_tokens: int):
    """Each client sends `requests` streamed completions one after another; returns per-request records.

    The clients share this machine's cores with the server, so the load generator is aiohttp (about a quarter
    of httpx's CPU per streamed request, measured) reading raw SSE lines, one json.loads per event."""
    import json

    import aiohttp

    records = []

    async def client(c: int, http: aiohttp.ClientSession):
        for r in range(requests):
            prompt = prompts[(c * requests + r) % len(prompts)]
            body = {"model": "bench", "prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
                    "ignore_eos": True, "stream_options": {"include_usage": True}}
            start, first, parts, tokens = time.perf_counter(), None, [], 0
            async with http.post(url + "/v1/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.content:  # one SSE line at a time
                    if not line.startswith(b"data: {"):  # blank separators and "data: [DONE]"
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
                    for choice in chunk["choices"]:
                        if first is None and choice["text"]:
                            first = time.perf_counter()
                        parts.append(choice["text"])
            end = time.perf_counter()
            records.append({"prompt": tuple(prompt), "ttft": (first or end) - start, "latency": end - start,
                            "tokens": tokens, "text": "".join(parts)})

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - start
    return records, wall


def _generate_fn(model, prompts, new_tokens: int):
    """The model's own jitted greedy `generate` at batch len(prompts) (eos never triggers): a timed callable."""
    import jax
    import numpy as np

    ids = np.asarray(prompts, np.int32)
    run = jax.jit(lambda x: model.generate(x, max_length=ids.shape[1] + new_tokens, do_sample=False,
                                           eos_token_id=model.config.vocab_size + 7, pad_token_id=0).sequences)
    run(ids).block_until_ready()  # compile
    return lambda: run(ids).block_until_ready()


def run(args) -> None:
    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig

    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        model = FlaxPyGPTForCausalLM(PyGPTConfig(**shape), seed=0)
        prompts = bench_prompts(shape["vocab_size"], args.prompt_tokens)
        print(f"\n== {shape_name}: {shape['n_layer']}x{shape['n_embd']}, n_positions {shape['n_positions']}, "
              f"prompt {args.prompt_tokens} + {args.new_tokens} new tokens, {args.requests} requests per client, "
              f"medians of {args.repeats} interleaved rounds", flush=True)
        generate = _generate_fn(model, prompts, args.new_tokens)
        runs, ceiling, texts = {}, [], {}
        with tempfile.TemporaryDirectory(prefix="pygpt-serve-bench-") as folder:
            model.save_pretrained(folder)
            save_bench_tokenizer(folder, shape["vocab_size"])
            servers = {"batched": _Server(folder, 16, args.steps_per_call, args.engines),
                       "one-at-a-time": _Server(folder, 1, args.steps_per_call)}
            try:
                for label, server in servers.items():  # compile and warm up
                    asyncio.run(_load(server.url, prompts, 16 if label == "batched" else 1, 1, args.new_tokens))
                for _ in range(args.repeats):  # side by side: each round runs every setting once
                    start = time.perf_counter()
                    generate()
                    ceiling.append(len(prompts) * args.new_tokens / (time.perf_counter() - start))
                    for clients in args.clients:
                        for label, server in servers.items():
                            records, wall = asyncio.run(_load(server.url, prompts, clients, args.requests,
                                                              args.new_tokens))
                            runs.setdefault((label, clients), []).append((records, wall))
                            for record in records:
                                texts.setdefault((label, record["prompt"]), record["text"])
            finally:
                for label, server in servers.items():
                    server.stop(label)
        _report(runs, texts, statistics.median(ceiling), max(args.clients))


def _report(runs: dict, texts: dict, ceiling: float, top: int) -> None:
    """Per setting: the round with the median tokens/s, and its requests/s, TTFT and latency percentiles."""
    print(f"{'server':<15}{'clients':>8}{'req/s':>8}{'tok/s':>9}{'TTFT p50':>10}{'p99':>8}"
          f"{'latency p50':>13}{'p99':>8}")
    rates = {}
    for (label, clients), rounds in sorted(runs.items(), key=lambda item: (item[0][0] != "batched", item[0][1])):
        by_rate = sorted(rounds, key=lambda r: sum(x["tokens"] for x in r[0]) / r[1])
        records, wall = by_rate[len(by_rate) // 2]
        ttft = [r["ttft"] for r in records]
        latency = [r["latency"] for r in records]
        rates[label, clients] = sum(r["tokens"] for r in records) / wall
        print(f"{label:<15}{clients:>8}{len(records) / wall:>8.2f}{rates[label, clients]:>9.0f}"
              f"{_percentile(ttft, .5):>9.3f}s{_percentile(ttft, .99):>7.3f}s"
              f"{_percentile(latency, .5):>12.3f}s{_percentile(latency, .99):>7.3f}s")
    same = all(text == texts[("one-at-a-time", prompt)] for (label, prompt), text in texts.items()
               if label == "batched" and ("one-at-a-time", prompt) in texts)
    batched, alone = rates["batched", top], rates["one-at-a-time", top]
    print(f"generate() at batch 16 (jitted, the ceiling): {ceiling:,.0f} tok/s")
    print(f"at {top} clients: batched / one-at-a-time = {batched / alone:.2f}x (target >= 2x); "
          f"batched / generate(batch 16) = {batched / ceiling:.0%} (target >= 80%)")
    print(f"every stream's greedy text the same batched and alone: {'yes' if same else 'NO'}", flush=True)
