"""Train PyGPT's byte-level BPE tokenizer on a dataset and save a folder `AutoTokenizer` loads.

    python scripts/train_tokenizer.py --dataset ../shared/data/gutenberg.jsonl --vocab-size 8192 \
        --output-dir out/tokenizer [--text-column text] [--split train] [--strip-labels [LABELS]] \
        [--push-to-hub user/name]

--dataset is a local .txt/.json/.jsonl/.parquet file, a folder of them, or a Hub dataset id; it is streamed
(`datasets`, streaming=True; local .txt and .jsonl files are read line by line), so it may be larger than
memory. The folder is written to a temporary sibling and renamed into place only when complete, so a failed run
leaves nothing half-written.
--strip-labels removes record labels ("### Instruction:", "Response:", ...) from the start of lines first, as
scripts/train.py --strip-labels does; rows left blank are skipped and counted.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import sys

from pygpt_hf.atomic import atomic_folder
from pygpt_hf.documents import RowStats, read_records, render_record
from pygpt_hf.labels import DEFAULT_LABELS_FLAG as DEFAULT_STRIP_LABELS
from pygpt_hf.labels import parse_labels


class CliError(Exception):
    """Bad input: printed as one clear line, exit status 1."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="local file/folder (.txt, .json, .jsonl, .parquet) or Hub id")
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--split", default="train", help="split of a Hub dataset (default: train)")
    parser.add_argument("--vocab-size", type=int, required=True, help="total tokens: 256 bytes + 2 specials + merges")
    parser.add_argument("--output-dir", required=True, help="folder to write (must not exist, or --overwrite)")
    parser.add_argument("--model-max-length", type=int, default=512, help="the model's n_positions (default 512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--strip-labels", nargs="?", const=DEFAULT_STRIP_LABELS, metavar="LABELS",
                        help=f"strip these comma-separated record labels from line starts (the flag alone: "
                             f"{DEFAULT_STRIP_LABELS})")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the tokenizer to this Hub repo")
    args = parser.parse_args(argv)
    try:
        args.strip_labels = parse_labels(args.strip_labels)
    except ValueError as err:
        parser.error(str(err))
    return args


def read_texts(dataset: str, text_column: str, split: str, stats: RowStats, strip_labels=None):
    """The dataset's texts, streamed; fails early and by name on a missing file, column or empty dataset."""
    try:
        records = read_records(dataset, split=split)
        first = next(records, None)
    except StopIteration:  # how `datasets` reports an empty json file
        first = None
    except Exception as err:  # datasets raises many kinds (FileNotFoundError, DatasetNotFoundError, ...)
        detail = str(err) or type(err).__name__
        raise CliError(detail if dataset in detail else f"cannot read --dataset {dataset}: {detail}") from err
    if first is None:
        raise CliError(f"--dataset {dataset} is empty (no records)")
    if text_column not in first:
        raise CliError(
            f"--dataset {dataset} has no column {text_column!r} (columns: {', '.join(first)}); "
            f"choose one with --text-column"
        )
    for record in itertools.chain([first], records):
        yield from render_record(record, "text", text_column, stats, strip_labels)


def save_atomically(tokenizer, output_dir: str, overwrite: bool) -> None:
    """save_pretrained into a temporary sibling folder, then rename it to `output_dir`."""
    with atomic_folder(output_dir) as staging:  # an existing folder is replaced only with --overwrite
        tokenizer.save_pretrained(staging)


def learn(args: argparse.Namespace, on_counted=None) -> tuple[list[tuple[bytes, bytes]], RowStats]:
    """Read the dataset and learn the merges: all of training, none of transformers."""
    from pygpt_hf.bpe import train_bpe

    stats = RowStats()
    texts = read_texts(args.dataset, args.text_column, args.split, stats, args.strip_labels)
    try:
        return train_bpe(texts, args.vocab_size, on_counted=on_counted), stats
    except ValueError as err:  # e.g. no text at all
        raise CliError(f"--dataset {args.dataset}: {err} ({stats.summary()})") from err


def learn_while_importing_transformers(args: argparse.Namespace) -> tuple[list[tuple[bytes, bytes]], RowStats]:
    """`learn(args)` in a forked child process, with this one importing transformers (~0.6 s; needed only to
    save) while the child merges. Counting uses every core and merging one, so the import then costs no wall
    time. Where fork is not available, or not safe (jax's threads are running: main() called from a program
    that uses jax), the two run one after the other."""
    if "fork" not in multiprocessing.get_all_start_methods() or "jax" in sys.modules:
        return learn(args)
    fork = multiprocessing.get_context("fork")  # the child starts with this process's state: nothing to send
    receive, send = fork.Pipe(duplex=False)
    child = fork.Process(target=_learn_and_send, args=(args, send), name="train_tokenizer: learning merges")
    child.start()
    send.close()
    try:
        kind, *result = receive.recv()
        if kind == "counted":
            import pygpt_hf.tokenization_pygpt_fast  # noqa: F401  (the import that overlaps the merging)

            kind, *result = receive.recv()
    except EOFError:  # the child died without an answer; its traceback is already on stderr
        child.join()
        raise CliError(f"learning the merges failed (the process exited with code {child.exitcode})") from None
    child.join()
    if kind == "error":
        raise CliError(result[0])
    return result[0], result[1]


def _learn_and_send(args: argparse.Namespace, send) -> None:
    try:
        send.send(("merges", *learn(args, on_counted=lambda: send.send(("counted",)))))
    except CliError as err:  # sent as text: the parent may not be able to import this script as a module
        send.send(("error", str(err)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # imported only now, so that --help and argument errors answer at once
    from pygpt_hf.bpe import FIRST_MERGE_ID, tokenizer_from_merges

    try:
        if args.vocab_size < FIRST_MERGE_ID:
            raise CliError(
                f"--vocab-size must be at least {FIRST_MERGE_ID} (256 bytes + <|endoftext|> + <|pad|>), "
                f"got {args.vocab_size}"
            )
        if os.path.exists(args.output_dir) and not args.overwrite and os.listdir(args.output_dir):
            raise CliError(f"--output-dir {args.output_dir} exists and is not empty; pass --overwrite to replace it")
        print(f"training a {args.vocab_size}-token byte-level BPE on {args.dataset} (column {args.text_column!r})")
        merges, stats = learn_while_importing_transformers(args)
    except CliError as err:
        print(f"train_tokenizer.py: error: {err}", file=sys.stderr)
        return 1

    tokenizer = tokenizer_from_merges(merges, args.model_max_length)
    print(f"rows: {stats.summary()}")
    if len(tokenizer) < args.vocab_size:
        print(f"note: the corpus ran out of pairs to merge: {len(tokenizer)} tokens, not {args.vocab_size}")
    save_atomically(tokenizer, args.output_dir, args.overwrite)
    print(f"saved {len(tokenizer)} tokens to {args.output_dir} (AutoTokenizer.from_pretrained loads it)")
    if args.push_to_hub:
        tokenizer.push_to_hub(args.push_to_hub)
        print(f"pushed to the Hub: {args.push_to_hub}")
    return 0


if __name__ == "__main__":
    # This program never uses torch, but `import transformers` (for the tokenizer classes) imports it whenever it
    # is installed, ~2 s of start-up. USE_TORCH is transformers' own switch; a value the user set is kept.
    os.environ.setdefault("USE_TORCH", "0")
    sys.exit(main())
