"""Tokenize a dataset (or a mixture) once, into packed token shards that scripts/train.py reads directly.

    python scripts/pretokenize.py --dataset data/dolly.jsonl@dolly:0.7,data/math.jsonl@dolly:0.3 \
        --tokenizer runs/tok --seq-len 256 --output-dir data/pretok
    python scripts/train.py --dataset data/pretok --seq-len 256 ...     # no tokenizing; the folder's tokenizer

The data flags mean what they mean for scripts/train.py, with the same defaults (--eval-docs, --seed, ...),
so the folder holds exactly the held-out set and the token stream a training run would make: training from
it gives the same batches as tokenizing on the fly. The folder: manifest.json (counts, the recipe, the
tokenizer's sha256), tokenizer/ (a copy, with the chat template for instruction data), train/*.parquet (the
token stream in rows of --seq-len tokens, with loss-mask bits for --loss-on response), eval/*.parquet (the
held-out documents). It is written to a temporary sibling and renamed when complete.

Exit codes: 0 done, 1 bad arguments or data, 130 interrupted (nothing is left behind).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")  # transformers 4.57 notice

from pygpt_hf.training.mixture import STOPPING_STRATEGIES
from pygpt_hf.training.pretokenized import DEFAULT_SHARD_TOKENS, MANIFEST
from pygpt_hf.training.settings import DEFAULT_STRIP_LABELS, FORMATS, TXT_SAMPLE_BY, TrainSettings

DEFAULTS = TrainSettings()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True,
                        help="as for scripts/train.py: a file, folder or Hub id, or SOURCE[@FORMAT][:WEIGHT],...")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub repo id")
    parser.add_argument("--seq-len", type=int, required=True, help="tokens per training sequence")
    parser.add_argument("--output-dir", required=True, help="folder to write (must not exist, or --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--format", choices=FORMATS, default=DEFAULTS.format, help="default record format")
    parser.add_argument("--text-column", default=DEFAULTS.text_column, help="column of --format text sources")
    parser.add_argument("--split", default=DEFAULTS.split, help="split of Hub datasets")
    parser.add_argument("--txt-sample-by", choices=TXT_SAMPLE_BY, default=DEFAULTS.txt_sample_by,
                        help="what one document is in a .txt file")
    parser.add_argument("--strip-labels", nargs="?", const=DEFAULT_STRIP_LABELS, metavar="LABELS",
                        help=f"strip record labels from text sources (the flag alone: {DEFAULT_STRIP_LABELS})")
    parser.add_argument("--mix-stopping", choices=STOPPING_STRATEGIES, default=DEFAULTS.mix_stopping,
                        help="when a pass over a mixture ends")
    parser.add_argument("--eval-docs", type=int, default=DEFAULTS.eval_docs,
                        help=f"the first N records are held out for eval (default {DEFAULTS.eval_docs}, as train.py)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help=f"orders a mixture (default {DEFAULTS.seed}, as train.py)")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                        help=f"training tokens per parquet shard (default {DEFAULT_SHARD_TOKENS:,})")
    args = parser.parse_args(argv)
    if args.shard_tokens < args.seq_len:
        parser.error(f"--shard-tokens ({args.shard_tokens}) must be at least --seq-len ({args.seq_len})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = TrainSettings(dataset=args.dataset, format=args.format, text_column=args.text_column,
                                 split=args.split, txt_sample_by=args.txt_sample_by, strip_labels=args.strip_labels,
                                 mix_stopping=args.mix_stopping, eval_docs=args.eval_docs, seed=args.seed,
                                 seq_len=args.seq_len, tokenizer=args.tokenizer).validate()
        from pygpt_hf.training.pipeline import pretokenize
        from pygpt_hf.training.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
        print(f"pre-tokenizing {args.dataset} with {args.tokenizer} ({len(tokenizer)} tokens) into "
              f"{args.seq_len}-token rows; the first {args.eval_docs} records are held out", flush=True)
        t0 = time.time()
        manifest = pretokenize(settings, tokenizer, args.output_dir, overwrite=args.overwrite,
                               shard_tokens=args.shard_tokens, log=lambda text: print(text, flush=True))
    except (ValueError, OSError) as err:  # bad flags or data, a missing file, an existing --output-dir
        print(f"pretokenize.py: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(f"wrote {manifest['train_tokens']:,} training tokens ({manifest['train_documents']:,} documents, "
          f"{len(manifest['train_files'])} shard(s)) and {manifest['eval_documents']} held-out documents to "
          f"{args.output_dir} in {time.time() - t0:.1f}s")
    print(f"tokenizer.json sha256 {manifest['tokenizer_sha256']} (in {MANIFEST})")
    print(f"train with:  python scripts/train.py --dataset {args.output_dir} --seq-len {args.seq_len}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
