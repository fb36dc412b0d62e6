"""A cached virtual environment with today's transformers 5.x and CPU torch, for the issue-9 tests.

pygpt_hf itself stays on transformers 4.57 (the last release with Flax), but the checkpoints it pushes are
mostly used on 5.x. The tests check that with a second environment that has 5.x, torch and nothing of
pygpt_hf (no jax either), built here once and reused: the folder's name is a hash of the requirements and
the interpreter, and a marker file is written only after a successful install, so an interrupted build is
redone and a changed pin builds a fresh environment.

Run `python tests/tf5_env.py` to build it by hand; it prints the environment's python.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Pinned so that a run is repeatable; bump the pin to test a newer 5.x (the hash then builds a new venv).
# torch==2.13.0 is the local CPU wheel; an unpinned torch would pull the CUDA build (gigabytes).
TF5_REQUIREMENTS = (
    "transformers==5.24.0",
    "torch==2.13.0",
    "safetensors",
    "tokenizers",
)


class TF5EnvError(RuntimeError):
    """The 5.x environment could not be built; the message carries pip's output."""


def cache_root() -> Path:
    """Where the environments live: $PYGPT_TF5_CACHE, else ~/.cache/pygpt_hf (kept between CI runs)."""
    if os.environ.get("PYGPT_TF5_CACHE"):
        return Path(os.environ["PYGPT_TF5_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "pygpt_hf"


def env_dir(requirements: tuple[str, ...] = TF5_REQUIREMENTS) -> Path:
    key = "\n".join([sys.version, *requirements]).encode()
    return cache_root() / f"venv-tf5-{hashlib.sha256(key).hexdigest()[:12]}"


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + "\n" + result.stderr).strip()
        raise TF5EnvError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{output[-6000:]}")


def ensure_tf5_python(requirements: tuple[str, ...] = TF5_REQUIREMENTS) -> Path:
    """Return the python of the transformers 5.x environment, building it first if needed.

    Safe under pytest-xdist: a file lock lets one process build while the others wait.
    """
    venv = env_dir(requirements)
    python = venv / "bin" / "python"
    marker = venv / ".pygpt-ready"
    if marker.is_file():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(str(venv) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():  # another process finished it while we waited
            return python
        shutil.rmtree(venv, ignore_errors=True)  # a half-built leftover
        # sys.executable may itself be a venv's python; `-m venv` then builds on the same base interpreter.
        _run([sys.executable, "-m", "venv", str(venv)], "creating the transformers 5.x venv")
        _run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
            "pip install into the transformers 5.x venv",
        )
        marker.write_text("\n".join(requirements) + "\n")
    return python


def installed_version(python: Path, package: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


if __name__ == "__main__":
    python = ensure_tf5_python()
    print(python, "transformers", installed_version(python, "transformers"), "torch", installed_version(python, "torch"))
