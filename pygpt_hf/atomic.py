"""Write a whole file or folder or nothing: fill a temporary sibling, then rename it into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_folder(output_dir: str) -> Iterator[str]:
    """Yield a temporary sibling of `output_dir` to write into; on success it becomes `output_dir`.

    A crash or Ctrl-C inside the block leaves `output_dir` as it was (or absent) and no temporary folder.
    An existing `output_dir` is replaced, so callers check for overwrites before they start the work.
    """
    output_dir = os.path.abspath(os.path.expanduser(output_dir))
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; give it a normal folder's mode
        yield staging
        if os.path.exists(output_dir):
            old = staging + ".old"
            os.rename(output_dir, old)
            os.rename(staging, output_dir)
            shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)
        else:
            os.rename(staging, output_dir)  # the commit point
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary sibling of `path` to write; on success it replaces `path` (a reader sees old or new)."""
    path = os.fspath(path)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"  # keeps the extension: some writers (matplotlib) choose the format by it
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> str:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(path)


def write_json(path: str | os.PathLike, data) -> str:
    """Write `data` as JSON (indent=2, like transformers' own files, and a final newline) atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")
