"""Pre-tokenized data: tokenize once (scripts/pretokenize.py), train many times without the tokenizer's cost.

The folder enters the data pipeline at the tokenized stage: its rows go straight to packing (packing.py).

A pre-tokenized folder:

    manifest.json              what it holds, how it was made, and the tokenizer's sha256 (see below)
    tokenizer/                 the tokenizer it was made with (save_pretrained; with the chat template)
    train/train-00000.parquet  the training token stream, cut into rows of seq_len tokens
    eval/eval-00000.parquet    the held-out documents, one row each: input_ids, loss_mask, num_bytes, loss_bytes

The training rows are the exact token stream the on-the-fly pipeline (encoding.py) gives packing: documents rendered,
tokenized, each ended with <|endoftext|>, concatenated in the order the mixture draws them, then cut into
rows of `seq_len` tokens (the last row may be shorter), each with its loss-mask bits (always written, so
one folder serves both --loss-on all and --loss-on response). `TokenStream` concatenates the rows again and
packs them into overlapping seq_len + 1 blocks, so training from the folder gives the very batches that
tokenizing on the fly gives; a different --seq-len re-cuts the same stream, exactly.

The tokenizer hash is the sha256 of tokenizer.json (`tokenizer.tokenizer_sha256`; `sha256sum
tokenizer/tokenizer.json` prints it too). Training refuses a folder whose hash is not its tokenizer's:
the ids would mean other tokens. The folder is written into a temporary sibling and renamed when complete.
Stream position and resume: parquet sources resume exactly through `IterableDataset.state_dict()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_folder, write_json, write_text
from .encoding import tokenize_documents
from .mixture import Mixture
from .tokenizer import set_instruction_chat_template, tokenizer_json, tokenizer_sha256

MANIFEST = "manifest.json"
KIND = "pygpt_hf pre-tokenized data"
VERSION = 1
TOKENIZER_DIR = "tokenizer"
DEFAULT_SHARD_TOKENS = 1 << 24  # 16M tokens (64 MB of int32 before compression) per training shard


def is_pretokenized(path: str | None) -> bool:
    return path is not None and os.path.isfile(os.path.join(os.path.expanduser(path), MANIFEST))


@dataclass(frozen=True)
class PretokenizedFolder:
    """An opened folder: its manifest (checked) and its rows, which enter the pipeline at the tokenized stage."""

    path: str
    manifest: dict

    @property
    def tokenizer_dir(self) -> str:
        return os.path.join(self.path, TOKENIZER_DIR)

    @property
    def is_instruction(self) -> bool:
        return bool(self.manifest["recipe"].get("instruction"))

    def describe(self) -> str:
        return f"{self.path} (pre-tokenized: {self.manifest['recipe'].get('source', '?')})"

    def eval_rows(self):
        return eval_dataset(self.path, self.manifest)

    def train_rows(self, with_mask: bool = True):
        return train_dataset(self.path, self.manifest, with_mask)


def open_folder(path: str | None) -> PretokenizedFolder | None:
    """The pre-tokenized folder `--dataset` names, or None when it names sources."""
    if not is_pretokenized(path):
        return None
    folder = os.path.expanduser(path)
    return PretokenizedFolder(folder, read_manifest(folder))


def read_manifest(folder: str) -> dict:
    """The folder's manifest, checked: kind, version, and that the files it lists are there."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable pre-tokenized manifest: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ValueError(f"{path} is not a manifest written by scripts/pretokenize.py (no kind {KIND!r})")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path} has version {manifest.get('version')!r}; this pygpt_hf reads version {VERSION}")
    missing = [name for name in manifest["train_files"] + manifest["eval_files"] + [TOKENIZER_DIR]
               if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise ValueError(f"pre-tokenized folder {folder} is incomplete: missing {', '.join(missing)}")
    return manifest


# --- writing ------------------------------------------------------------------------------------------------


def pretokenize(settings, tokenizer, output_dir: str, *, overwrite: bool = False,
                shard_tokens: int = DEFAULT_SHARD_TOKENS, log: Callable[[str], None] = print) -> dict:
    """Tokenize the held-out and training records of `settings` (dataset, formats, labels, mixture, eval_docs,
    seed) exactly as a training run would, and write them to a pre-tokenized folder. Returns its manifest."""
    if is_pretokenized(settings.dataset):
        raise ValueError(f"--dataset {settings.dataset} is already pre-tokenized")
    mixture = Mixture.from_settings(settings)
    if mixture.is_instruction:
        set_instruction_chat_template(tokenizer)
    eval_stats, train_stats = mixture.new_stats(), mixture.new_stats()
    eval_rows = tokenize_documents(mixture.eval_dataset(eval_stats), tokenizer, with_mask=True)
    train_rows = tokenize_documents(mixture.train_dataset(train_stats), tokenizer, with_mask=True)
    recipe = {
        "dataset": settings.dataset, "source": mixture.describe(), "split": settings.split,
        "sources": [{"source": label, "format": s.format, "text_column": s.text_column, "probability": p}
                    for label, s, p in zip(mixture.labels, mixture.sources, mixture.probabilities)],
        "txt_sample_by": settings.txt_sample_by, "strip_labels": settings.strip_labels,
        "mix_stopping": settings.mix_stopping, "seed": settings.seed, "eval_docs": settings.eval_docs,
        "held_out": dict(zip(mixture.labels, mixture.held_out_counts())), "instruction": mixture.is_instruction,
    }
    manifest = write_pretokenized(output_dir, tokenizer=tokenizer, eval_rows=eval_rows, train_rows=train_rows,
                                  seq_len=settings.seq_len, recipe=recipe, shard_tokens=shard_tokens,
                                  overwrite=overwrite)
    for label, held, used in zip(mixture.labels, eval_stats, train_stats):
        log(f"  {label}: held out {held.summary()}; training {used.summary()}")
    if manifest["train_tokens"] == 0:
        log("warning: no training tokens were written: the sources held nothing usable beyond the held-out records")
    return manifest


class _ShardWriter:
    """Rows of token lists -> parquet shards of at most `rows_per_shard` rows, named prefix-00000.parquet ..."""

    def __init__(self, folder: str, prefix: str, schema, rows_per_shard: int):
        self.folder, self.prefix, self.schema, self.rows_per_shard = folder, prefix, schema, rows_per_shard
        self.files: list[str] = []
        self._writer = None
        self._rows_in_shard = 0
        os.makedirs(os.path.join(folder, prefix), exist_ok=True)

    def _next_shard(self) -> None:
        import pyarrow.parquet as pq

        self.close()
        name = f"{self.prefix}/{self.prefix}-{len(self.files):05d}.parquet"
        self.files.append(name)
        self._writer = pq.ParquetWriter(os.path.join(self.folder, name), self.schema)
        self._rows_in_shard = 0

    def write(self, columns: dict[str, list]) -> None:
        import pyarrow as pa

        n = len(next(iter(columns.values())))
        start = 0
        while start < n:
            if self._writer is None or self._rows_in_shard == self.rows_per_shard:
                self._next_shard()
            take = min(n - start, self.rows_per_shard - self._rows_in_shard)
            self._writer.write_table(pa.table({k: v[start:start + take] for k, v in columns.items()}, schema=self.schema))
            self._rows_in_shard += take
            start += take

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self) -> list[str]:
        """Close the last shard; with no rows at all, write one empty shard (readers need a file)."""
        if not self.files:
            self._next_shard()
            self._writer.write_table(self.schema.empty_table())
        self.close()
        return self.files


def _schemas():
    import pyarrow as pa

    train = pa.schema([("input_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.uint8()))])
    held_out = pa.schema([("input_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.uint8())),
                          ("num_bytes", pa.int64()), ("loss_bytes", pa.int64())])
    return train, held_out


def write_pretokenized(
    output_dir: str,
    *,
    tokenizer,
    eval_rows: Iterable[dict],
    train_rows: Iterable[dict],
    seq_len: int,
    recipe: dict,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """Write a pre-tokenized folder atomically and return its manifest.

    `eval_rows` / `train_rows`: tokenized rows (data.tokenize_documents with a mask): {"input_ids",
    "loss_mask", "num_bytes", "loss_bytes"}; the training rows are read once, in order. `recipe` (how the
    documents were chosen and rendered) goes into the manifest as it is.
    """
    output_dir = os.path.abspath(os.path.expanduser(output_dir))
    if os.path.exists(output_dir) and not overwrite and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise FileExistsError(f"--output-dir {output_dir} exists and is not empty; pass --overwrite to replace it")
    with atomic_folder(output_dir) as staging:  # an existing folder is replaced only with overwrite (above)
        manifest = _write_into(staging, tokenizer, eval_rows, train_rows, seq_len, recipe, shard_tokens, show_progress)
    return manifest


def _write_into(folder, tokenizer, eval_rows, train_rows, seq_len, recipe, shard_tokens, show_progress) -> dict:
    train_schema, eval_schema = _schemas()
    tokenizer.save_pretrained(os.path.join(folder, TOKENIZER_DIR))
    # without runtime padding/truncation: sha256sum gives the hash
    write_text(os.path.join(folder, TOKENIZER_DIR, "tokenizer.json"), tokenizer_json(tokenizer))

    # held-out documents, one row each (a few hundred: written in one go)
    held_out = _ShardWriter(folder, "eval", eval_schema, rows_per_shard=1 << 20)
    kept = [row for row in eval_rows if row["input_ids"]]
    held_out.write({name: [row[name] for row in kept] for name in eval_schema.names})
    eval_docs, eval_tokens = len(kept), sum(len(row["input_ids"]) for row in kept)
    eval_files = held_out.finish()

    # the training stream, cut into rows of seq_len tokens
    train = _ShardWriter(folder, "train", train_schema, rows_per_shard=max(1, shard_tokens // seq_len))
    ids_carry, mask_carry = np.zeros(0, np.int32), np.zeros(0, np.uint8)
    train_docs = train_tokens = counted = 0

    def flush(final: bool) -> tuple[np.ndarray, np.ndarray]:
        n_rows = len(ids_carry) // seq_len + (final and len(ids_carry) % seq_len > 0)
        if n_rows:
            cut = [ids_carry[i * seq_len:(i + 1) * seq_len].tolist() for i in range(n_rows)]
            cut_mask = [mask_carry[i * seq_len:(i + 1) * seq_len].tolist() for i in range(n_rows)]
            train.write({"input_ids": cut, "loss_mask": cut_mask})
        return ids_carry[n_rows * seq_len:], mask_carry[n_rows * seq_len:]

    for row in tqdm(train_rows, desc="tokenizing", unit=" records", disable=not show_progress):
        if not row["input_ids"]:
            continue
        train_docs += 1
        train_tokens += len(row["input_ids"])
        counted += sum(row["loss_mask"])
        ids_carry = np.concatenate([ids_carry, np.asarray(row["input_ids"], np.int32)])
        mask_carry = np.concatenate([mask_carry, np.asarray(row["loss_mask"], np.uint8)])
        if len(ids_carry) >= 64 * seq_len:
            ids_carry, mask_carry = flush(final=False)
    flush(final=True)
    train_files = train.finish()

    manifest = {
        "kind": KIND,
        "version": VERSION,
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "vocab_size": len(tokenizer),
        "seq_len": seq_len,
        "train_tokens": train_tokens,
        "train_rows": -(-train_tokens // seq_len),
        "train_documents": train_docs,
        "train_response_tokens": counted,  # tokens in the loss mask (response + <|endoftext|>; all of text docs)
        "eval_documents": eval_docs,
        "eval_tokens": eval_tokens,
        "train_files": train_files,
        "eval_files": eval_files,
        "recipe": recipe,
    }
    write_json(os.path.join(folder, MANIFEST), manifest)
    return manifest


# --- reading ------------------------------------------------------------------------------------------------


def _parquet(folder: str, files: list[str]):
    from datasets import load_dataset

    return load_dataset("parquet", data_files=[os.path.join(folder, name) for name in files], split="train",
                        streaming=True)


def train_dataset(folder: str, manifest: dict, with_mask: bool = True):
    """The training rows (seq_len-token pieces of the stream, with their loss masks unless not `with_mask`:
    --loss-on all counts every token), streamed in order."""
    columns = ["input_ids", "loss_mask"] if with_mask else ["input_ids"]
    return _parquet(folder, manifest["train_files"]).select_columns(columns)


def eval_dataset(folder: str, manifest: dict):
    """The held-out documents: rows of {"input_ids", "loss_mask", "num_bytes", "loss_bytes"}."""
    return _parquet(folder, manifest["eval_files"])
