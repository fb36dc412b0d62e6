"""Held-out text -> documents (strings), read the way `scripts/train.py` reads its data.

Sources are opened by the package's own `documents.open_source` (a local .txt / .json / .jsonl / .parquet file
or folder, or a Hub dataset id, streamed with `datasets`, so a corpus larger than memory is fine), with the
same arguments and meanings as `train.py`: `--text-column`, `--split` (Hub datasets; local files have only
"train"), and for .txt files one document per paragraph / line / whole file (`txt_sample_by`). What this
module adds is evaluation's view: plain strings of one column, checked up front, and what was scored.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator

from ..documents import TXT_SAMPLE_BY, local_files, open_source


def read_documents(dataset: str, text_column: str = "text", split: str = "train", max_docs: int | None = None,
                   txt_sample_by: str = "paragraph") -> Iterator[str]:
    """The non-blank documents of `dataset`, streamed, at most `max_docs` of them.

    Raises (before yielding) a clear error for a missing file, a missing column or a dataset with no text.
    """
    if txt_sample_by not in TXT_SAMPLE_BY:
        raise ValueError(f"--txt-sample-by must be one of {', '.join(TXT_SAMPLE_BY)}, got {txt_sample_by!r}")
    column = text_column
    path = os.path.expanduser(dataset)
    if os.path.exists(path):
        builder, files = local_files(path)
        if all(os.path.getsize(f) == 0 for f in files):
            raise ValueError(f"--dataset {dataset}: the dataset is empty")
        if builder == "text":
            column = "text"  # the text builder's one column, whatever --text-column says
    stream = open_source(dataset, split, txt_sample_by)
    return _documents(stream, column, dataset, max_docs)


def _documents(stream, column: str, dataset: str, max_docs: int | None) -> Iterator[str]:
    """Check the first row (column present) and find the first non-blank document eagerly, then stream."""
    rows = iter(stream)
    try:
        first = next(rows, None)
    except StopIteration:  # some `datasets` builders raise it for a file with no records
        first = None
    if first is None:
        raise ValueError(f"--dataset {dataset}: the dataset is empty")
    if column not in first:
        raise ValueError(f"--dataset {dataset}: no column {column!r} (columns: {', '.join(first)}); "
                         "choose one with --text-column")

    def texts() -> Iterator[str]:
        for row in itertools.chain([first], rows):
            text = row.get(column)
            if isinstance(text, str) and text.strip():
                yield text

    docs = texts()
    head = next(docs, None)
    if head is None:
        raise ValueError(f"--dataset {dataset}: column {column!r} holds no non-blank text")
    return itertools.islice(itertools.chain([head], docs), max_docs)


def describe_dataset(dataset: str, split: str, revision: str | None = None) -> dict:
    """Name and revision of what was scored: a Hub dataset's commit, or a local source's content hash."""
    path = os.path.expanduser(dataset)
    if os.path.exists(path):
        _, files = local_files(path)
        digest = hashlib.sha256()
        for name in files:
            with open(name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        return {"name": dataset, "split": "train", "revision": "sha256:" + digest.hexdigest()[:16], "local": True}
    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(dataset, revision=revision).sha
    except Exception:  # noqa: BLE001 -- the figure stands without it; the card then names no revision
        sha = None
    return {"name": dataset, "split": split, "revision": sha, "local": False}
