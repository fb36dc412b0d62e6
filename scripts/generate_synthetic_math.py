"""Write synthetic math/LaTeX instruction records (Dolly-shaped JSON lines) with exactly computed answers.

    python scripts/generate_synthetic_math.py --n 20000 --seed 0 --output data/math.jsonl
    python scripts/generate_synthetic_math.py --n 500 --seed 1 --kinds fraction,equation --output eq.jsonl
    python scripts/generate_synthetic_math.py --n 5000 --no-meta --output math-dolly.jsonl   # 4 Dolly columns
    python scripts/train.py --dataset data/math.jsonl --format dolly ...

The same --n, --seed and --kinds always give a byte-identical file. The file is written to a temporary
name and renamed into place when complete, so an interrupted run never leaves a half-written --output.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from tqdm.auto import tqdm

from pygpt_hf.synthetic_math import KINDS, generate_records, write_jsonl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, required=True, help="number of records to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same file")
    parser.add_argument("--output", required=True, help="the .jsonl file to write (replaced if it exists)")
    parser.add_argument("--no-meta", action="store_true",
                        help="leave out the machine-readable `meta` field: plain 4-column Dolly rows, e.g. to mix "
                             "with databricks-dolly-15k, whose columns must match")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated problem kinds (default: all of {','.join(KINDS)})")
    args = parser.parse_args(argv)
    if args.n <= 0:
        parser.error(f"--n must be a positive integer, got {args.n}")
    args.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown or not args.kinds:
        parser.error(f"--kinds: unknown kind(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts: Counter = Counter()

    def counted(records):
        for record in records:
            counts[record["meta"]["kind"], record["meta"]["style"]] += 1
            if args.no_meta:
                del record["meta"]
            yield record

    records = tqdm(generate_records(args.n, args.seed, args.kinds), total=args.n, desc="generating", unit=" records")
    try:
        written = write_jsonl(args.output, counted(records))
    except OSError as err:
        print(f"error: cannot write --output {args.output}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {written:,} records to {args.output} (seed {args.seed})")
    for kind in args.kinds:
        print(f"  {kind:<18} {counts[kind, 'words']:>7,} in words  {counts[kind, 'latex']:>7,} in LaTeX")
    return 0


if __name__ == "__main__":
    sys.exit(main())
