"""The chat page: the static export of `web/` (`web/out/`), built once with npm when it is missing or stale."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCES = ("app", "components", "lib", "public", "package.json", "package-lock.json", "next.config.ts",
           "next.config.mjs", "tailwind.config.ts", "postcss.config.mjs", "tsconfig.json")


def _newest(paths) -> float:
    newest = 0.0
    for path in paths:
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            newest = max([newest] + [p.stat().st_mtime for p in path.rglob("*") if p.is_file()])
    return newest


def is_stale(web: Path) -> bool:
    index = web / "out" / "index.html"
    return not index.is_file() or index.stat().st_mtime < _newest(web / name for name in SOURCES)


def page_folder(web: Path, log=print) -> str | None:
    """`web/out` ready to serve, building it first when it is missing or older than its sources and npm exists;
    None (with a note saying how to build it) when there is no page to serve."""
    if not (web / "package.json").is_file():
        log(f"note: no chat page sources at {web}; serving the API only")
        return None
    if is_stale(web):
        npm = shutil.which("npm")
        if npm is None:
            log(f"note: the chat page is not built and npm is missing; serving the API only. To build it: "
                f"cd {web} && npm ci && npm run build")
            return None
        log(f"building the chat page in {web} (npm ci && npm run build), once ...")
        env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
        for command in ([npm, "ci", "--no-audit", "--no-fund"], [npm, "run", "build"]):
            if subprocess.run(command, check=False, cwd=web, env=env).returncode != 0:  # npm's own progress on the terminal
                log(f"note: `{' '.join(command[1:])}` failed in {web}; serving the API only")
                return None
    return str(web / "out")
