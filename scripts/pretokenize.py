"""Tokenize a dataset (or a mixture) once, into packed token shards that scripts/train.py reads directly.

    python scripts/pretokenize.py --dataset data/dolly.jsonl@dolly:0.7,data/math.jsonl@dolly:0.3 \
        --tokenizer runs/tok --seq-len 256 --output-dir data/pretok
    python scripts/train.py --dataset data/pretok --seq-len 256 ...     # no tokenizing; the folder's tokenizer

The data flags are scripts/train.py's own (one settings class, `DataSettings`), with the same defaults
(--eval-docs, --seed, ...); --config FILE works as there. So the folder holds exactly the held-out set and the token stream a training run would make: training from
it gives the same batches as tokenizing on the fly. The folder: manifest.json (counts, the recipe, the
tokenizer's sha256), tokenizer/ (a copy, with the chat template for instruction data), train/*.parquet (the
token stream in rows of --seq-len tokens, with loss-mask bits for --loss-on response), eval/*.parquet (the
held-out documents). It is written to a temporary sibling and renamed when complete.

Exit codes: 0 done, 1 bad arguments or data, 130 interrupted (nothing is left behind).
"""

from __future__ import annotations

import sys
import time
import warnings

warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")  # transformers 4.57 notice

from pygpt_hf.training.cli import parse_settings
from pygpt_hf.training.settings import PretokenizeSettings

REQUIRED = ("tokenizer", "seq_len", "output_dir")


def main(argv: list[str] | None = None) -> int:
    try:
        settings, _ = parse_settings(argv, PretokenizeSettings, description=__doc__.split("\n")[0], required=REQUIRED)
        from pygpt_hf.training.pretokenized import MANIFEST, pretokenize
        from pygpt_hf.training.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(settings.tokenizer)
        print(f"pre-tokenizing {settings.dataset} with {settings.tokenizer} ({len(tokenizer)} tokens) into "
              f"{settings.seq_len}-token rows; the first {settings.eval_docs} records are held out", flush=True)
        t0 = time.time()
        manifest = pretokenize(settings, tokenizer, settings.output_dir, overwrite=settings.overwrite,
                               shard_tokens=settings.shard_tokens, log=lambda text: print(text, flush=True))
    except (ValueError, OSError) as err:  # bad flags or data, a missing file, an existing --output-dir
        print(f"pretokenize.py: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(f"wrote {manifest['train_tokens']:,} training tokens ({manifest['train_documents']:,} documents, "
          f"{len(manifest['train_files'])} shard(s)) and {manifest['eval_documents']} held-out documents to "
          f"{settings.output_dir} in {time.time() - t0:.1f}s")
    print(f"tokenizer.json sha256 {manifest['tokenizer_sha256']} (in {MANIFEST})")
    print(f"train with:  python scripts/train.py --dataset {settings.output_dir} --seq-len {settings.seq_len}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
