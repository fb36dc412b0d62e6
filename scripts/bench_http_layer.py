"""The serving HTTP layer alone: CPU per streamed request of `create_app`, with a stand-in for the model.

    python scripts/bench_http_layer.py                      # this checkout
    python scripts/bench_http_layer.py --against ../other   # and another checkout, in alternating rounds

The server is the real app (`pygpt_hf.serving.app.create_app`, uvicorn, a tokenizer trained on the embedded
corpus) over a stand-in engine that hands every live request 8 tokens each 5 ms, as the batch engine does
at the default shape, so what is measured is FastAPI, uvicorn, the SSE stream and the detokenizer, not the
model. The load is `scripts/benchmark.py serve`'s generator (16 aiohttp clients of streamed 64-token
completions on loopback); the figure is the server process's CPU time (user + system, from /proc) per
request, medians over the rounds. docs/performance.md, section 7, has what it showed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def serve(tokenizer_dir: str) -> None:
    """Run the app over the stand-in engine on a free loopback port; print its API line when ready."""
    import uvicorn
    from transformers import AutoTokenizer

    from pygpt_hf.serving.app import Served, create_app
    from pygpt_hf.serving.engine import Engine, Finished, Token

    class StandInEngine(Engine):
        """Every 5 ms, each live request gets its next 8 tokens (ids cycle over 300..799)."""

        def __init__(self):
            super().__init__()
            self.live, self.lock = [], threading.Lock()

        def submit(self, job) -> None:
            with self.lock:
                self.live.append(job)

        def cancel(self, request) -> None:
            request.cancelled = True

        def _run(self) -> None:
            while not self._closed:
                time.sleep(0.005)
                with self.lock:
                    live = list(self.live)
                for request in live:
                    n = min(8, request.params.max_tokens - request.generated)
                    events = [Token(300 + (request.generated + i) % 500, 0.0, ()) for i in range(n)]
                    request.generated += n
                    if request.cancelled or request.generated >= request.params.max_tokens:
                        events.append(Finished("cancelled" if request.cancelled else "length"))
                        with self.lock:
                            self.live.remove(request)
                    request.on_events(events)

    served = Served("bench", AutoTokenizer.from_pretrained(tokenizer_dir), StandInEngine().start(), 128)
    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=0, log_level="warning"))

    async def announce():
        while not server.started:
            await asyncio.sleep(0.05)
        print(f"API: http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1", flush=True)

    async def main():
        task = asyncio.create_task(announce())
        await server.serve()
        task.cancel()

    asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="another checkout of this repository, measured in alternating rounds")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16, help="requests per client per round")
    parser.add_argument("--serve", metavar="TOKENIZER_DIR", help=argparse.SUPPRESS)  # the server subprocess
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    from pygpt_hf.serving.benchmark import SHAPES, _load, bench_prompts, save_bench_tokenizer

    roots = {"this checkout": ROOT} | ({"--against": Path(args.against).resolve()} if args.against else {})
    vocab_size = SHAPES["default"]["vocab_size"]
    prompts = bench_prompts(vocab_size, 16)
    with tempfile.TemporaryDirectory(prefix="pygpt-http-bench-") as folder:
        save_bench_tokenizer(folder, vocab_size)
        servers, urls = {}, {}
        try:
            for name, root in roots.items():
                servers[name] = subprocess.Popen(
                    [sys.executable, __file__, "--serve", folder],
                    stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)})  # its pygpt_hf
                line = next((line for line in servers[name].stdout if line.startswith("API:")), None)
                if line is None:
                    raise RuntimeError(f"the {name} server exited ({servers[name].wait()}) before it was ready")
                urls[name] = line.split()[1].removesuffix("/v1")
                asyncio.run(_load(urls[name], prompts, args.clients, 2, 64))  # warm up
            results = {name: [] for name in roots}
            for _ in range(args.rounds):
                for name in roots:
                    before = _cpu_seconds(servers[name].pid)
                    records, wall = asyncio.run(_load(urls[name], prompts, args.clients, args.requests, 64))
                    cpu_ms = (_cpu_seconds(servers[name].pid) - before) / len(records) * 1e3
                    results[name].append((cpu_ms, len(records) / wall))
        finally:
            for process in servers.values():
                process.terminate()
                process.wait(timeout=30)
    print(f"HTTP layer over a stand-in engine (8 tokens per request each 5 ms), {args.clients} clients x "
          f"{args.requests} streamed 64-token requests, {args.rounds} rounds")
    for name, rounds in results.items():
        print(f"{name:>14}: server CPU {statistics.median(r[0] for r in rounds):.2f} ms/request (median; rounds "
              f"{', '.join(f'{r[0]:.2f}' for r in rounds)}), {statistics.median(r[1] for r in rounds):.0f} req/s")


if __name__ == "__main__":
    main()
