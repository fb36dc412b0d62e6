"""scripts/evaluate.py and pygpt_hf.evaluation on a tiny random model: every token scored once, the figures
equal a direct computation from the model's logits, batching never leaks into a score, Flax and PyTorch agree,
bad requests are refused before anything loads, and --update-card / --task synthetic-math do what they say."""

import json
import math
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import load_script, save_tiny_model

from pygpt_hf.documents import CHAT_TEMPLATE
from pygpt_hf.evaluation import loading
from pygpt_hf.evaluation.math_accuracy import answers_match, final_answer, score_math
from pygpt_hf.evaluation.perplexity import document_ids, score_text
from pygpt_hf.evaluation.scoring import bucket_length
from pygpt_hf.evaluation.windows import sliding_windows
from pygpt_hf.synthetic_math import generate_records

ROOT = Path(__file__).resolve().parents[1]
N_POSITIONS = 32
TEXTS = [p for p in (ROOT / "tests" / "data" / "train_shakespeare.txt").read_text().split("\n\n") if p.strip()]
DOCS = TEXTS[:12] + ["héllo wörld, naïve café 日本語 🙂", "x", "<|endoftext|> typed as text"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder, flax model, tokenizer): a tiny random model with a chat template, saved as one model folder."""
    folder = tmp_path_factory.mktemp("tiny-eval-model")
    model, tokenizer = save_tiny_model(folder, TEXTS, N_POSITIONS, chat_template=CHAT_TEMPLATE)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def flax_forward(saved):
    return loading.load_eval_model(str(saved[0]), framework="flax").forward()


@pytest.fixture(scope="module")
def direct_nats(saved):
    """nats(ids, window, stride): the same windows one at a time through the model, -sum of log-softmax of its
    logits at each scored token. One compiled shape: a window is right-padded to the context (attention is causal)."""
    _, model, _ = saved
    logits_of = jax.jit(lambda ids: model(ids).logits[0].astype("float32"))

    def nats(ids: list[int], window: int, stride: int) -> float:
        total, scored_until, begin = 0.0, 1, 0
        while scored_until < len(ids):
            begin = max(0, min(begin, len(ids) - window))  # the last window ends at the end
            end = min(begin + window, len(ids))
            chunk = np.zeros((1, N_POSITIONS), np.int32)
            chunk[0, :end - begin] = ids[begin:end]
            logits = np.asarray(logits_of(chunk), np.float64)
            logprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
                - logits.max(-1, keepdims=True)
            for t in range(scored_until, end):  # token t sits at position t - begin, predicted one step before
                total -= logprobs[t - begin - 1, ids[t]]
            scored_until, begin = end, begin + stride
        return total

    return nats


@pytest.mark.parametrize("stride", [1, 5, 16, 31])
def test_windows_score_every_token_exactly_once(stride):
    for n in (2, 3, 31, 32, 33, 64, 100):
        tokens = list(range(n))
        scored = []
        for row, n_scored in sliding_windows(tokens, 32, stride):
            assert 1 <= n_scored <= len(row) - 1 and len(row) <= 32
            scored += row[len(row) - n_scored:]
            if row[0] != 0:  # a later window: full, and at least `window - stride` tokens of context
                assert len(row) == 32 and len(row) - n_scored >= 32 - stride
            if row[-1] == n - 1 and n >= 32:  # the last window ends at the end and is full
                assert len(row) == 32
        assert scored == tokens[1:]


def test_bad_strides_are_refused():
    for stride in (0, -1, 32, 33):
        with pytest.raises(ValueError, match="--stride must be between 1 and n_positions - 1 = 31"):
            sliding_windows(list(range(50)), 32, stride)
    assert [bucket_length(n, 32) for n in (1, 16, 17, 31, 32)] == [16, 16, 32, 32, 32]


@pytest.mark.parametrize("stride", [16, 31])
def test_scores_equal_log_softmax_of_the_logits(saved, flax_forward, direct_nats, stride):
    tokenizer = saved[2]
    scores = score_text(DOCS, tokenizer, flax_forward, N_POSITIONS, stride, batch_size=4)
    expected = sum(direct_nats(document_ids(tokenizer, d), N_POSITIONS, stride) for d in DOCS)
    assert scores.nats == pytest.approx(expected, rel=1e-5)
    assert scores.tokens == sum(len(document_ids(tokenizer, d)) - 1 for d in DOCS)
    assert scores.bytes == sum(len(d.encode("utf-8")) for d in DOCS)
    assert scores.bits_per_byte == pytest.approx(expected / math.log(2) / scores.bytes, rel=1e-5)
    assert scores.perplexity == pytest.approx(math.exp(expected / scores.tokens), rel=1e-5)
    assert 256 not in document_ids(tokenizer, DOCS[-1])[1:]  # typed control strings stay text


def test_batch_size_and_framework_never_change_the_figures(saved, flax_forward):
    folder, _, tokenizer = saved
    torch_forward = loading.load_eval_model(str(folder), framework="torch").forward()
    figures = {(name, b): score_text(DOCS, tokenizer, forward, N_POSITIONS, 8, batch_size=b).nats
               for name, forward in (("flax", flax_forward), ("torch", torch_forward)) for b in (1, 4, 16)}
    for (name, b), nats in figures.items():
        assert nats == pytest.approx(figures[(name, 1)], rel=1e-6, abs=1e-5), (name, b)
        assert nats == pytest.approx(figures[("flax", 1)], rel=1e-5), (name, b)


def test_script_reports_and_writes_the_figures(saved, direct_nats, tmp_path, capsys):
    folder, _, tokenizer = saved
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"body": d, "n": i}) + "\n" for i, d in enumerate(DOCS[:6])))
    out = tmp_path / "results.json"
    assert load_script("evaluate").main(["--model", str(folder), "--dataset", str(data), "--text-column", "body",
                               "--stride", "31", "--batch-size", "3", "--output", str(out), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    assert printed == written
    expected = sum(direct_nats(document_ids(tokenizer, d), N_POSITIONS, 31) for d in DOCS[:6])
    assert written["nats"] == pytest.approx(expected, rel=1e-5)
    assert written["bits_per_byte"] == pytest.approx(written["nats"] / math.log(2) / written["bytes"], rel=1e-9)
    assert written["nats_per_token"] == pytest.approx(expected / written["tokens"], rel=1e-5)
    assert written["documents"] == 6 and written["stride"] == 31 and written["framework"] == "flax"
    assert written["revision"].startswith("sha256:") and written["dataset"]["revision"].startswith("sha256:")
    assert written["dataset"]["name"] == str(data)


def test_a_txt_file_and_max_docs_read_as_in_training(saved, flax_forward, tmp_path, capsys):
    folder, _, tokenizer = saved
    data = tmp_path / "held_out.txt"
    data.write_text("\n\n".join(DOCS[:5]) + "\n")
    assert load_script("evaluate").main(["--model", str(folder), "--dataset", str(data), "--max-docs", "3",
                               "--no-progress"]) == 0
    written = json.loads(capsys.readouterr().out)
    expected = score_text(DOCS[:3], tokenizer, flax_forward, N_POSITIONS, N_POSITIONS // 2)
    assert written["documents"] == 3 and written["stride"] == N_POSITIONS // 2
    assert written["nats"] == pytest.approx(expected.nats, rel=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--model", "no/such/folder", "--dataset", "DATA"], "no such model folder"),
    (["--model", "MODEL", "--dataset", "DATA", "--stride", "0"], "--stride must be between 1 and n_positions - 1 = 31"),
    (["--model", "MODEL", "--dataset", "DATA", "--stride", "32"], "--stride must be between 1 and n_positions - 1"),
    (["--model", "MODEL", "--dataset", "EMPTY"], "the dataset is empty"),
    (["--model", "MODEL", "--dataset", "DATA", "--text-column", "content"], "no column 'content' .*--text-column"),
    (["--model", "MODEL", "--dataset", "missing.jsonl"], "no such file or folder"),
    (["--model", "MODEL", "--dataset", "DATA", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--model", "PLAIN", "--task", "synthetic-math"], "has no chat template"),
])
def test_bad_requests_fail_before_the_weights_load(saved, tmp_path, monkeypatch, capsys, argv, message):
    folder, model, tokenizer = saved
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(plain)
    tokenizer.chat_template = CHAT_TEMPLATE
    (tmp_path / "data.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    names = {"MODEL": str(folder), "PLAIN": str(plain), "DATA": str(tmp_path / "data.jsonl"),
             "EMPTY": str(tmp_path / "empty.jsonl"), "missing.jsonl": str(tmp_path / "missing.jsonl")}

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded before the request was checked")

    monkeypatch.setattr("pygpt_hf.evaluation.run.load_weights", no_weights)
    assert load_script("evaluate").main([names.get(a, a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


def test_update_card_writes_model_index_and_keeps_the_rest(saved, tmp_path, capsys):
    import shutil

    from huggingface_hub import ModelCard

    folder = tmp_path / "run"
    shutil.copytree(saved[0], folder)
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- pygpt\n---\n# My run\n\nHand-written notes.\n")
    data = tmp_path / "a.txt"
    data.write_text("\n\n".join(DOCS[:4]))
    script = load_script("evaluate")
    for _ in range(2):  # twice: the entries are replaced, not repeated
        assert script.main(["--model", str(folder), "--dataset", str(data), "--update-card", "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and "Hand-written notes." in card.text
    metrics = {r.metric_type: r for r in card.data.eval_results}
    assert len(card.data.eval_results) == 3 and set(metrics) == {"bits_per_byte", "perplexity", "loss"}
    assert metrics["bits_per_byte"].metric_value == pytest.approx(results["bits_per_byte"])
    assert metrics["bits_per_byte"].dataset_name == str(data)
    assert metrics["bits_per_byte"].dataset_revision == results["dataset"]["revision"]
    assert json.loads((folder / "eval_results.json").read_text())[0]["metric_type"] == "bits_per_byte"


def test_math_accuracy_uses_the_recipes_answers():
    records = list(generate_records(20, seed=5))
    for record in records:
        assert answers_match(record["response"], record["response"])
        assert final_answer(record["response"]) is not None
    assert not answers_match("x = 3", "so x = 4")
    assert answers_match("steps\n3 + 4 = 7", "3 + 4 =  7.")

    class FakeTokenizer:  # prompt = one id per problem; "decoding" a generated id gives the answer stored for it
        bos_token_id = 256
        chat_template = "x"

        def __init__(self):
            self.answers = {}

        def apply_chat_template(self, messages, **kwargs):
            return [hash(messages[0]["content"]) % 1000]

        def decode(self, ids, skip_special_tokens=True):
            return self.answers[ids[0]]

    tokenizer = FakeTokenizer()

    def generate(prompts, max_new_tokens, max_context, progress=None):  # right everywhere except arithmetic
        out = []
        for record, prompt in zip(generate_records(20, seed=5), prompts):
            wrong = record["meta"]["kind"] == "arithmetic"
            tokenizer.answers[len(tokenizer.answers)] = "= 0.5" if wrong else record["response"]
            out.append([len(tokenizer.answers) - 1])
        return out

    scores = score_math(generate, tokenizer, 20, 5, 16, N_POSITIONS)
    kinds = {r["meta"]["kind"] for r in records}
    assert scores.problems == 20 and set(scores.per_kind) == kinds
    assert scores.per_kind["arithmetic"]["accuracy"] == 0.0
    assert all(v["accuracy"] == 1.0 for k, v in scores.per_kind.items() if k != "arithmetic")
    assert scores.correct == 20 - scores.per_kind["arithmetic"]["problems"]


def test_math_task_runs_greedily_through_the_chat_template(saved, tmp_path, capsys):
    folder, _, _ = saved
    out = tmp_path / "math.json"
    assert load_script("evaluate").main(["--model", str(folder), "--task", "synthetic-math", "--max-docs", "6", "--seed", "3",
                               "--max-new-tokens", "8", "--batch-size", "4", "--output", str(out),
                               "--no-progress"]) == 0
    written = json.loads(out.read_text())
    assert written["problems"] == 6 and written["seed"] == 3 and 0 <= written["accuracy"] <= 1
    assert sum(v["problems"] for v in written["per_kind"].values()) == 6
    assert written["examples"][0]["instruction"] == next(generate_records(6, 3))["instruction"]


def test_a_hub_model_and_dataset_are_named_by_their_commits(saved, hub, capsys):
    """--model user/repo --revision R and --dataset user/data (the loopback Hub): the figures name both commits."""
    folder = saved[0]
    api = hub.api()
    model_repo, data_repo = hub.repo_id("eval-model"), hub.repo_id("eval-data")
    api.create_repo(model_repo)
    commit = api.upload_folder(folder_path=str(folder), repo_id=model_repo).oid
    api.create_repo(data_repo, repo_type="dataset")
    api.upload_file(path_or_fileobj="".join(json.dumps({"text": d}) + "\n" for d in DOCS[:4]).encode(),
                    path_in_repo="data/test.jsonl", repo_id=data_repo, repo_type="dataset")
    assert load_script("evaluate").main(["--model", model_repo, "--revision", commit, "--dataset", data_repo,
                               "--split", "test", "--no-progress", "--framework", "torch"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["revision"] == commit and written["framework"] == "torch"
    assert written["dataset"]["name"] == data_repo
    assert written["dataset"]["revision"] == api.dataset_info(data_repo).sha
    assert written["documents"] == 4 and written["dataset"]["split"] == "test"
