"""pygpt in lm-evaluation-harness, offline on the local tasks in tests/data/lm_eval_tasks (loaded through
`include_path`): the `pygpt` model type (Flax) and the harness's own `hf` backend on the PyTorch twin
(`trust_remote_code=True`) give the same per-request log-likelihoods, each equal to the log-softmax of the
model's logits computed directly; batch sizes never change a score; rolling windows match evaluate.py."""

import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")
torch = pytest.importorskip("torch")

from helpers import save_tiny_model
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from pygpt_hf.evaluation.loading import EvaluationError
from pygpt_hf.evaluation.perplexity import score_text

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "tests" / "data" / "lm_eval_tasks"
N_POSITIONS = 32
TEXTS = [p for p in (ROOT / "tests" / "data" / "train_shakespeare.txt").read_text().split("\n\n") if p.strip()]
CHOICE, ROLLING, GENERATE = "pygpt_tiny_choice", "pygpt_tiny_rolling", "pygpt_tiny_generate"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-lm-eval-model")
    model, tokenizer = save_tiny_model(folder, TEXTS, N_POSITIONS, seed=1)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager(include_path=str(TASKS_DIR))


def make_lm(backend: str, folder, **args):
    from lm_eval.api.registry import get_model

    import pygpt_hf  # noqa: F401  registers "pygpt"

    if backend == "hf":
        args = {"trust_remote_code": True, "device": "cpu", **args}
    arg_string = ",".join(f"{k}={v}" for k, v in {"pretrained": folder, **args}.items())
    return get_model(backend).create_from_arg_string(arg_string)


def sample_scores(results: dict, task: str) -> list:
    """Per-request responses of `task` in (doc, request) order: floats (or (float, greedy)) or strings."""
    out = []
    for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"]):
        for resp in sample["resps"]:
            out.append(resp[0])
    return out


@pytest.fixture(scope="module")
def runs(saved, task_manager):
    """simple_evaluate on the three tasks for both backends, without and with add_bos_token=True."""
    folder = saved[0]
    results = {}
    for backend in ("pygpt", "hf"):
        for bos in (None, True):
            extra = {} if bos is None else {"add_bos_token": bos}
            tasks = [CHOICE, ROLLING] + ([GENERATE] if bos is None else [])
            results[(backend, bos)] = lm_eval.simple_evaluate(
                model=make_lm(backend, folder, batch_size=4, **extra), tasks=tasks, task_manager=task_manager,
                log_samples=True, verbosity="ERROR")
    return results


def test_pygpt_registers_lazily_when_pygpt_hf_is_imported():
    code = ("import sys, pygpt_hf\n"
            "from lm_eval.api.registry import model_registry\n"
            "assert 'pygpt' in model_registry and 'hf' in model_registry\n"
            "assert 'pygpt_hf.evaluation.lm_eval_model' not in sys.modules, 'imported eagerly'\n"
            "assert 'lm_eval.models.huggingface' not in sys.modules, 'imported eagerly'\n"
            "print(model_registry.get('pygpt').__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "FlaxPyGPTLM"


@pytest.mark.parametrize("bos", [None, True])
def test_flax_and_the_hf_backend_agree_per_request(runs, bos):
    flax, hf = runs[("pygpt", bos)], runs[("hf", bos)]
    for task in (CHOICE, ROLLING):
        ours, theirs = sample_scores(flax, task), sample_scores(hf, task)
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            a, b = (a, b) if task == ROLLING else (a[0], b[0])
            assert a == pytest.approx(b, abs=1e-4), task
    assert flax["results"][CHOICE]["acc,none"] == hf["results"][CHOICE]["acc,none"]
    assert flax["results"][ROLLING]["bits_per_byte,none"] == pytest.approx(
        hf["results"][ROLLING]["bits_per_byte,none"], rel=1e-5)
    if bos is None:
        assert sample_scores(flax, GENERATE) == sample_scores(hf, GENERATE)  # same greedy text, same stops


def test_continuation_loglikelihood_is_the_log_softmax_of_the_logits(saved, runs):
    from transformers import AutoModelForCausalLM

    folder, model, tokenizer = saved
    twin = AutoModelForCausalLM.from_pretrained(folder).eval()
    flax_logits = jax.jit(lambda ids: model(ids).logits[0].astype("float32"))  # one shape: right-padded, causal
    samples = sorted(runs[("pygpt", None)]["samples"][CHOICE], key=lambda s: s["doc_id"])
    flax_scores, hf_scores = sample_scores(runs[("pygpt", None)], CHOICE), sample_scores(runs[("hf", None)], CHOICE)
    k = 0
    for sample in samples:
        for context, continuation in (r for r in sample["arguments"]):
            ids = tokenizer.encode(context + continuation)
            n_continuation = len(ids) - len(tokenizer.encode(context))
            ids = ids[-(N_POSITIONS + 1):]  # the harness keeps the last tokens that fit
            n_context = len(ids) - n_continuation
            padded = np.zeros((1, N_POSITIONS), np.int32)
            padded[0, :len(ids) - 1] = ids[:-1]
            flax_logprobs = np.asarray(jax.nn.log_softmax(flax_logits(padded)))
            with torch.no_grad():
                inputs = torch.tensor([ids[:-1]])
                torch_logprobs = torch.log_softmax(twin(inputs).logits[0].float(), -1).numpy()
            targets = range(n_context, len(ids))  # token t is predicted at position t - 1
            assert flax_scores[k][0] == pytest.approx(sum(flax_logprobs[t - 1, ids[t]] for t in targets), abs=1e-5)
            assert hf_scores[k][0] == pytest.approx(sum(torch_logprobs[t - 1, ids[t]] for t in targets), abs=1e-5)
            greedy = all(flax_logprobs[t - 1].argmax() == ids[t] for t in targets)
            assert flax_scores[k][1] == greedy
            k += 1
    assert k == len(flax_scores)


@pytest.mark.parametrize("backend", ["pygpt", "hf"])
def test_batch_size_never_changes_a_score(saved, task_manager, backend):
    folder = saved[0]
    choice = [("The capital of France is", " Paris"), ("Two plus two is", " four"), ("", "Speak, speak."),
              ("First Citizen:\n" * 12 + "Before we proceed", " any further, hear me speak.")] + \
             [(TEXTS[i][:40], " " + TEXTS[i + 1][:25]) for i in range(12)]
    passages = [TEXTS[i] for i in range(6)] + ["x", "Café, naïve, 日本語"]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(choice)]
    rolling = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(passages)]
    scores = {}
    for batch_size in (1, 4, 16):
        lm = make_lm(backend, folder, batch_size=batch_size)
        scores[batch_size] = ([s for s, _ in lm.loglikelihood(requests, disable_tqdm=True)],
                              lm.loglikelihood_rolling(rolling, disable_tqdm=True))
    for batch_size in (4, 16):
        for ours, base in zip(scores[batch_size], scores[1]):
            np.testing.assert_allclose(ours, base, atol=1e-5, rtol=0, err_msg=f"{backend} batch {batch_size}")


def test_the_harness_rolling_windows_are_evaluate_py_windows():
    from pygpt_hf.evaluation.windows import harness_rolling_rows, sliding_windows

    for max_length in (1, 5, 31):
        for n in (1, 2, 5, 31, 32, 33, 62, 63, 64, 100):
            tokens = list(range(1000, 1000 + n))
            assert harness_rolling_rows(tokens, 7, max_length) == sliding_windows([7] + tokens, max_length + 1,
                                                                                  max_length), (max_length, n)


def test_rolling_windows_match_evaluate_py_at_stride_n_positions_minus_one(saved, task_manager):
    """The harness's windows with max_length = n_positions - 1 are evaluate.py's at --stride n_positions - 1."""
    import json

    folder, _, tokenizer = saved
    passages = [json.loads(line)["text"] for line in (TASKS_DIR / "passages.jsonl").read_text().splitlines()]
    assert max(len(tokenizer.encode(p)) for p in passages) > 2 * N_POSITIONS  # several windows
    from pygpt_hf.evaluation.flax_backend import make_flax_forward

    ours = score_text(passages, tokenizer, make_flax_forward(saved[1]), N_POSITIONS, N_POSITIONS - 1)
    for backend in ("pygpt", "hf"):
        results = lm_eval.simple_evaluate(model=make_lm(backend, folder, batch_size=4, max_length=N_POSITIONS - 1),
                                          tasks=[ROLLING], task_manager=task_manager, verbosity="ERROR")
        assert results["results"][ROLLING]["bits_per_byte,none"] == pytest.approx(ours.bits_per_byte, rel=1e-5)
    # With the full context the harness's windows differ (one more token each), so the figures may too.
    assert ours.bits_per_byte == pytest.approx(-sum(
        make_lm("pygpt", folder, max_length=N_POSITIONS - 1).loglikelihood_rolling(
            [Instance("loglikelihood_rolling", {}, (p,), i) for i, p in enumerate(passages)], disable_tqdm=True))
        / math.log(2) / sum(len(p.encode()) for p in passages), rel=1e-5)


def test_generate_until_is_greedy_and_stops(saved):
    folder, model, tokenizer = saved
    lm = make_lm("pygpt", folder, batch_size=2)
    prompts = ["First Citizen:\n", "ROMEO:", "All:\nSpeak"]
    gen = lm.generate_until([Instance("generate_until", {}, (p, {"until": ["\n\n"], "max_gen_toks": 6}), i)
                             for i, p in enumerate(prompts)], disable_tqdm=True)
    for prompt, text in zip(prompts, gen):
        ids = np.array([tokenizer.encode(prompt)])
        out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id).sequences[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in out:
            out = out[:out.index(tokenizer.eos_token_id)]
        assert text == tokenizer.decode(out, skip_special_tokens=True).split("\n\n")[0]
    stop = gen[0][1:3] or "e"  # a stop sequence that occurs in the greedy text: the text ends before it
    cut = lm.generate_until([Instance("generate_until", {}, (prompts[0], {"until": [stop], "max_gen_toks": 6}), 0)],
                            disable_tqdm=True)[0]
    assert stop not in cut and gen[0].startswith(cut)


def test_bad_model_arguments_are_named(saved):
    folder = saved[0]
    with pytest.raises(EvaluationError, match="not understood: temprature"):
        make_lm("pygpt", folder, temprature=0.5)
    with pytest.raises(EvaluationError, match="max_length=64 is more than the model's context"):
        make_lm("pygpt", folder, max_length=64)
    with pytest.raises(EvaluationError, match="batch_size must be an integer"):
        make_lm("pygpt", folder, batch_size="many")
    lm = make_lm("pygpt", folder)
    with pytest.raises(EvaluationError, match="continuation of 40 tokens is longer than max_length=32"):
        lm._loglikelihood_tokens([(None, [1, 2], list(range(3, 43)))])


def test_the_command_line_runs_the_pygpt_model_type(saved):
    done = subprocess.run(
        [sys.executable, "-m", "pygpt_hf.evaluation.lm_eval_cli", "--model", "pygpt", "--model_args",
         f"pretrained={saved[0]},batch_size=2", "--tasks", CHOICE, "--include_path", str(TASKS_DIR), "--limit", "3"],
        check=False, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert CHOICE in done.stdout and "acc" in done.stdout
