"""Judge a pygpt model: bits per byte on any text, or answer accuracy on fresh synthetic math problems.

    python scripts/evaluate.py --model runs/pygpt --dataset held_out.txt
    python scripts/evaluate.py --model user/pygpt-tiny --revision main --dataset user/corpus --split test \\
        --text-column text --max-docs 500 --stride 128 --batch-size 16 --output results.json --framework torch
    python scripts/evaluate.py --model runs/math --task synthetic-math --max-docs 200 --seed 7 --update-card

Language modelling reads --dataset as scripts/train.py does (.txt, .jsonl/.json, .parquet file or folder, or a
Hub dataset id, streamed). Every document is tokenized with split_special_tokens=True after <|endoftext|> and
scored in windows of n_positions tokens that start every --stride tokens (default n_positions // 2); a window
scores only tokens no earlier window scored, so each token is predicted once with as much context as fits
(--stride n_positions-1: windows overlap by one token, the same windows as lm-eval's loglikelihood_rolling
with max_length=n_positions-1). It reports nats per token, perplexity and bits per byte (summed nats / ln 2 /
UTF-8 bytes: the figure that compares models with different tokenizers).

--task synthetic-math asks --max-docs (default 100) problems generated from --seed through the tokenizer's
chat template, greedily, and reports exact-match accuracy of the final answer, per problem kind.
--update-card writes the results as model-index entries into the model folder's README.md.

Exit codes: 0 done, 1 bad arguments, model or data, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")  # transformers 4.57 notice

from pygpt_hf.documents import TXT_SAMPLE_BY


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument("--framework", choices=("flax", "torch"), default="flax", help="default: flax")
    parser.add_argument("--task", choices=("language-modelling", "synthetic-math"), default="language-modelling")
    parser.add_argument("--dataset", help="held-out text: a .txt/.json/.jsonl/.parquet file or folder, or a Hub id")
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--split", default="train", help="dataset split (Hub datasets; local files: train)")
    parser.add_argument("--txt-sample-by", choices=TXT_SAMPLE_BY, default="paragraph",
                        help="what one document is in a .txt file (default: paragraph, as in train.py)")
    parser.add_argument("--max-docs", type=int, help="score at most this many documents (math: problems, default 100)")
    parser.add_argument("--stride", type=int, help="tokens between window starts, 1..n_positions-1 (default "
                                                   "n_positions // 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows (or prompts) per batch (default 8)")
    parser.add_argument("--seed", type=int, default=1234, help="synthetic-math problem seed (default 1234)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="synthetic-math answer length (default 128)")
    parser.add_argument("--output", help="write the results here as JSON")
    parser.add_argument("--update-card", action="store_true", help="add the results to MODEL/README.md's model-index")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pygpt_hf.evaluation.loading import EvaluationError
    from pygpt_hf.evaluation.run import EvalRequest, evaluate, summary

    request = EvalRequest(model=args.model, dataset=args.dataset, revision=args.revision, framework=args.framework,
                          task=args.task, text_column=args.text_column, split=args.split,
                          txt_sample_by=args.txt_sample_by, max_docs=args.max_docs, stride=args.stride,
                          batch_size=args.batch_size, seed=args.seed, max_new_tokens=args.max_new_tokens,
                          output=args.output, update_card=args.update_card, progress=not args.no_progress)
    try:
        results = evaluate(request, log=lambda line: print(line, file=sys.stderr))
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(summary(results), file=sys.stderr)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
