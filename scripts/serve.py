"""Serve a pygpt model over an OpenAI-compatible API, with the chat page at /.

    python scripts/serve.py                                  # runs/pygpt, what scripts/train.py writes
    python scripts/serve.py --model user/pygpt-tiny --port 8080 --served-model-name tiny
    python scripts/serve.py --framework torch

The page is web/out (built once with npm when missing or older than web/'s sources); the API is under /v1
(`openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")`). Binds 127.0.0.1 unless --host says
otherwise. Exit codes: 0 stopped (Ctrl-C), 1 bad arguments or model.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/pygpt", help="model folder or Hub repo id (default: runs/pygpt, what scripts/train.py writes)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--framework", choices=("flax", "torch"), default="flax", help="default: flax")
    parser.add_argument("--served-model-name", help="the model's name in the API (default: the folder's name)")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="Flax: requests decoded together in one step (default 16; 1 = one at a time)")
    parser.add_argument("--engines", type=int, default=1,
                        help="Flax: batch engines the --max-batch rows are split over, each running its calls "
                             "on its own thread (default 1; 2 on a 2-core machine for a small model)")
    parser.add_argument("--steps-per-call", type=int, default=8,
                        help="Flax: decode steps run per jitted call (default 8; tokens stream in groups of this size)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="Flax: skip compiling every request shape at start-up (starts sooner, but the first "
                             "requests of each new size then wait for a compile)")
    parser.add_argument("--no-page", action="store_true", help="serve the API only")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch < 1:
        parser.error(f"--max-batch must be at least 1, got {args.max_batch}")
    if not 1 <= args.engines <= args.max_batch:
        parser.error(f"--engines must be between 1 and --max-batch ({args.max_batch}), got {args.engines}")
    if args.steps_per_call < 1:
        parser.error(f"--steps-per-call must be at least 1, got {args.steps_per_call}")
    if args.framework == "torch":  # the twin serves one request at a time through generate: say so, never ignore
        flax_only = [f"--{name.replace('_', '-')}" for name in ("max_batch", "engines", "steps_per_call")
                     if getattr(args, name) != parser.get_default(name)]
        if flax_only:
            parser.error(f"{', '.join(flax_only)}: Flax options (--framework torch serves one request at a time)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from pygpt_hf.serving.loading import LoadError, check_model_location

    try:
        check_model_location(args.model)
    except LoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    import asyncio

    import uvicorn

    from pygpt_hf.serving.app import create_app
    from pygpt_hf.serving.loading import load_served
    from pygpt_hf.serving.page import page_folder

    page = None if args.no_page else page_folder(ROOT / "web", log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"loading {args.model} ({args.framework}) ...", file=sys.stderr, flush=True)
    try:
        served = load_served(args.model, args.framework, args.served_model_name, slots=args.max_batch,
                             steps_per_call=args.steps_per_call, warm_up=args.warm_up, engines=args.engines,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    except LoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    app = create_app(served, static_dir=page)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)

    async def announce():
        while not server.started:
            await asyncio.sleep(0.05)
        host = f"[{args.host}]" if ":" in args.host else args.host
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else args.port
        base = f"http://{host}:{port}"
        if page:
            print(f"chat page: {base}/", flush=True)
        print(f"API:       {base}/v1  (model {served.name!r}; OpenAI clients: base_url={base}/v1)", flush=True)

    async def run():
        task = asyncio.create_task(announce())
        await server.serve()
        task.cancel()

    # uvicorn shuts down gracefully on SIGTERM, then raises it again; as Ctrl-C, so that the engine closes and
    # logs below instead of the process dying with the signal.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        served.engine.close()
        if summary := served.engine.summary():
            print(summary, file=sys.stderr, flush=True)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
