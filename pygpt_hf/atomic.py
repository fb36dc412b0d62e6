"""Write a whole folder or nothing: fill a temporary sibling, then rename it into place."""

from __future__ import annotations

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
