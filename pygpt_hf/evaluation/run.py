"""What `scripts/evaluate.py` does, step by step: check everything, load, score, report.

Every request is checked before the weights load or anything compiles: the model folder or repo, the stride
against the model's context, the dataset (it opens, is not empty, has the column), the chat template for the
math task. Then the model loads in the chosen framework and the text (or the problems) is scored with a
progress bar. The result is one flat dict, printed and written as JSON.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from .loading import EvalModel, EvaluationError, load_config_and_tokenizer, load_weights

TASKS = ("language-modelling", "synthetic-math")


@dataclass
class EvalRequest:
    model: str
    dataset: str | None = None
    revision: str | None = None
    framework: str = "flax"
    task: str = "language-modelling"
    text_column: str = "text"
    split: str = "train"
    txt_sample_by: str = "paragraph"
    max_docs: int | None = None
    stride: int | None = None
    batch_size: int = 8
    seed: int = 1234
    max_new_tokens: int = 128
    output: str | None = None
    update_card: bool = False
    progress: bool = True


def check_request(request: EvalRequest) -> None:
    """The checks that need nothing loaded."""
    if request.task not in TASKS:
        raise EvaluationError(f"--task must be one of {', '.join(TASKS)}, got {request.task!r}")
    if request.framework not in ("flax", "torch"):
        raise EvaluationError(f"--framework must be flax or torch, got {request.framework!r}")
    if request.batch_size < 1:
        raise EvaluationError(f"--batch-size must be at least 1, got {request.batch_size}")
    if request.max_docs is not None and request.max_docs < 1:
        raise EvaluationError(f"--max-docs must be at least 1, got {request.max_docs}")
    if request.task == "language-modelling" and not request.dataset:
        raise EvaluationError("--dataset is required for language modelling (a file, folder or Hub dataset id)")
    if request.task == "synthetic-math" and request.dataset:
        raise EvaluationError("--task synthetic-math generates its own problems; --dataset does not apply")
    if request.task == "synthetic-math" and request.max_new_tokens < 1:
        raise EvaluationError(f"--max-new-tokens must be at least 1, got {request.max_new_tokens}")
    if request.update_card and not os.path.isdir(os.path.expanduser(request.model)):
        raise EvaluationError(f"--update-card writes into a local model folder's README.md; {request.model} is "
                              "not a local folder")
    if request.output and os.path.isdir(request.output):
        raise EvaluationError(f"--output {request.output} is a folder; give a file name such as results.json")


def _revision(location: str, revision: str | None) -> str | None:
    from .loading import _local_revision

    if os.path.isdir(location):
        return _local_revision(location)
    from huggingface_hub import HfApi

    return HfApi().model_info(location, revision=revision).sha


def _progress_bar(request: EvalRequest, total: int | None, unit: str, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not request.progress, dynamic_ncols=True)


def evaluate(request: EvalRequest, log=print) -> dict:
    """Run one evaluation; returns the result dict (also written to `request.output` when given)."""
    from .documents import describe_dataset, read_documents
    from .windows import check_stride

    check_request(request)
    location, config, tokenizer = load_config_and_tokenizer(request.model, request.revision)
    eval_model = EvalModel(request.model, None, request.framework, config, tokenizer)
    n_positions = eval_model.n_positions
    if request.task == "language-modelling":
        stride = n_positions // 2 if request.stride is None else request.stride
        try:
            check_stride(stride, n_positions)
        except ValueError as err:
            raise EvaluationError(str(err)) from None
        try:
            documents = read_documents(request.dataset, request.text_column, request.split, request.max_docs,
                                       request.txt_sample_by)
        except (ValueError, FileNotFoundError) as err:
            raise EvaluationError(str(err)) from None
        dataset = describe_dataset(request.dataset, request.split)
    else:
        from .math_accuracy import check_chat_template

        check_chat_template(tokenizer, request.model)
        stride = None
        dataset = {"name": "pygpt_hf synthetic math", "split": f"seed {request.seed}", "revision": None}

    eval_model.revision = _revision(location, request.revision)
    eval_model.model = load_weights(location, request.revision, request.framework)
    log(f"evaluating {request.model} (revision {eval_model.revision}, {request.framework}, n_positions "
        f"{n_positions}) on {dataset['name']}" + (f", stride {stride}" if stride else ""))
    started = time.perf_counter()
    results = {"task": request.task, "model": request.model, "revision": eval_model.revision,
               "framework": request.framework, "dataset": dataset, "n_positions": n_positions,
               "batch_size": request.batch_size}
    if request.task == "language-modelling":
        from .perplexity import score_text

        with _progress_bar(request, None, "tok", "scoring") as bar:
            scores = score_text(documents, tokenizer, eval_model.forward(), n_positions, stride,
                                request.batch_size, progress=bar)
        seconds = time.perf_counter() - started
        results.update(stride=stride, **scores.as_dict(), seconds=seconds, tokens_per_second=scores.tokens / seconds)
    else:
        from .math_accuracy import score_math

        n = request.max_docs or 100
        with _progress_bar(request, n, "problem", "solving") as bar:
            scores = score_math(_generator(eval_model, request.batch_size), tokenizer, n, request.seed,
                                request.max_new_tokens, n_positions, progress=bar.update)
        results.update(**scores.as_dict(), seconds=time.perf_counter() - started)
    if request.output:
        folder = os.path.dirname(os.path.abspath(request.output))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, "." + os.path.basename(request.output) + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, request.output)
    if request.update_card:
        from .model_index import update_card

        results["card"] = str(update_card(location, results))
    return results


def _generator(eval_model: EvalModel, batch_size: int):
    """generate(prompts, max_new_tokens, max_context, progress) -> new ids, for either framework."""
    tokenizer = eval_model.tokenizer
    if eval_model.framework == "flax":
        from .generation import GreedyGenerator

        return GreedyGenerator(eval_model.model, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size).generate
    from .torch_generation import torch_greedy_generate

    def generate(prompts, max_new_tokens, max_context, progress=None):
        return torch_greedy_generate(eval_model.model, prompts, max_new_tokens, max_context, batch_size,
                                     tokenizer.eos_token_id, tokenizer.pad_token_id, progress)

    return generate


def summary(results: dict) -> str:
    """The lines a person reads at the end of a run."""
    if results["task"] == "synthetic-math":
        lines = [(f"synthetic math, seed {results['seed']}: {results['correct']}/{results['problems']} exact "
                 f"({results['accuracy']:.1%})")]
        lines += [f"  {kind:<18} {v['correct']:>4}/{v['problems']:<4} {v['accuracy']:.1%}"
                  for kind, v in results["per_kind"].items()]
        return "\n".join(lines)
    return (f"{results['dataset']['name']}: {results['documents']} documents, {results['tokens']} tokens, "
            f"{results['bytes']} bytes\n"
            f"  nats/token {results['nats_per_token']:.4f}   perplexity {results['perplexity']:.3f}   "
            f"bits/byte {results['bits_per_byte']:.4f}   ({results['tokens_per_second']:.0f} tokens/s)")
