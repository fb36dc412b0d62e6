"""Data recipes in the training harness, in-process: the chat template, the response-only loss mask,
--strip-labels, weighted mixtures (interleave_datasets) and pre-tokenized folders, each with exact resume.

Data: tests/data/recipes_dolly.jsonl (36 hand-written Dolly-shaped cooking records, some with context) and
synthetic math records (pygpt_hf.synthetic_math, with their nested `meta` column) written per test session.
"""

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import tokenized
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.documents import (
    CHAT_TEMPLATE,
    RowStats,
    instruction_messages,
    open_source,
    render_instruction,
    render_record,
)
from pygpt_hf.synthetic_math import generate_records, write_jsonl
from pygpt_hf.training import pretokenized
from pygpt_hf.training.cli import parse_settings
from pygpt_hf.training.data import prepare_data
from pygpt_hf.training.encoding import tokenize_documents
from pygpt_hf.training.mixture import Mixture
from pygpt_hf.training.packing import TokenStream, build_eval_set
from pygpt_hf.training.pretokenized import pretokenize
from pygpt_hf.training.settings import SourceSpec, TrainSettings, parse_dataset_spec
from pygpt_hf.training.tokenizer import EOS_ID, set_instruction_chat_template, tokenizer_sha256

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DOLLY = DATA / "recipes_dolly.jsonl"
SEED_TASKS = ROOT.parent / "shared" / "data" / "alpaca_seed_tasks.jsonl"  # CC BY-NC: read in tests, never copied
SPLIT = {"split_special_tokens": True}  # how training encodes text: typed control strings stay text


def dolly_records() -> list[dict]:
    return [json.loads(line) for line in DOLLY.read_text().splitlines()]


@pytest.fixture(scope="module")
def math_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("math") / "math.jsonl"
    write_jsonl(str(path), generate_records(60, seed=3))  # with the nested `meta` column
    return path


@pytest.fixture(scope="module")
def tokenizer(math_file):
    texts = [render_instruction(r["instruction"], r["response"], r["context"]) for r in dolly_records()]
    texts += [json.loads(line)["response"] for line in math_file.read_text().splitlines()]
    texts += ["Note:\n\nkeep it cold."] * 20  # teaches the merge ":\n\n" (a token that can straddle a prompt's end)
    tok = train_tokenizer(texts, vocab_size=360, model_max_length=64, show_progress=False)
    set_instruction_chat_template(tok)
    return tok


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- the chat template ------------------------------------------------------------------------------------


def test_chat_template_renders_exactly_the_training_text_and_ids(tokenizer, tmp_path):
    records = [
        {"instruction": "Name a colour.", "context": "", "response": "Blue."},
        {"instruction": "How many eggs?", "context": "Pancakes: 2 eggs, 300 ml milk.", "response": "Two eggs."},
        {"instruction": "Say <|endoftext|> twice.", "context": "   ", "response": "<|endoftext|> <|endoftext|>"},
    ]
    for r in records:
        messages = instruction_messages(r["instruction"], r["response"], r["context"])
        assert tokenizer.apply_chat_template(messages, tokenize=False) == render_instruction(
            r["instruction"], r["response"], r["context"])
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        assert prompt == render_instruction(r["instruction"], "", r["context"]) and prompt.endswith("### Response:\n")
    assert "### Input:\n" in render_instruction(records[1]["instruction"], "", records[1]["context"])
    assert "### Input:" not in tokenizer.apply_chat_template(instruction_messages("x", "y", "   "), tokenize=False)

    # the ids: what training encodes for the record == the template's ids + <|endoftext|>
    rows = list(tokenized(open_source(str(jsonl(tmp_path / "r.jsonl", records))), tokenizer, "dolly", "text",
                          RowStats()))
    for r, row in zip(records, rows):
        ids = tokenizer.apply_chat_template(instruction_messages(r["instruction"], r["response"], r["context"]),
                                            tokenize=True, tokenizer_kwargs=SPLIT)
        assert row["input_ids"] == ids + [EOS_ID]
    assert EOS_ID not in rows[2]["input_ids"][:-1]  # typed markers stayed text

    with pytest.raises(Exception, match="unexpected user message"):
        tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                      tokenize=False)
    with pytest.raises(Exception, match="no user message"):
        tokenizer.apply_chat_template([{"role": "system", "content": "a"}], tokenize=False)


def test_chat_template_is_saved_with_the_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    import pygpt_hf  # noqa: F401  (registers the tokenizer classes)

    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    again = AutoTokenizer.from_pretrained(tmp_path)
    messages = instruction_messages("How long does the dough rise?", None, "One hour, then thirty minutes.")
    assert again.chat_template == CHAT_TEMPLATE
    assert again.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == render_instruction(
        "How long does the dough rise?", "", "One hour, then thirty minutes.")
    assert set_instruction_chat_template(again) is None  # already ours: nothing to report
    again.chat_template = "{{ messages[0]['content'] }}"
    assert "replaced" in set_instruction_chat_template(again) and again.chat_template == CHAT_TEMPLATE


# ---- the response-only loss mask ----------------------------------------------------------------------------


def test_loss_mask_covers_exactly_the_response_and_its_eos(tokenizer, tmp_path):
    records = dolly_records()[:6] + [{"instruction": "Start on a new line.", "context": "", "response": "\nBlue."}]
    path = jsonl(tmp_path / "r.jsonl", records)
    rows = list(tokenized(open_source(str(path)), tokenizer, "dolly", "text", RowStats(), with_mask=True))
    straddles = 0
    for r, row in zip(records, rows):
        ids, mask = row["input_ids"], row["loss_mask"]
        assert len(mask) == len(ids) and ids[-1] == EOS_ID and mask[-1] == 1
        n_prompt = mask.index(1)
        assert set(mask[:n_prompt]) == {0} and set(mask[n_prompt:]) == {1}  # prompt first, then response + eos
        prompt_ids = tokenizer(render_instruction(r["instruction"], "", r["context"]), add_special_tokens=False,
                               **SPLIT)["input_ids"]
        assert ids[:n_prompt] == prompt_ids[:n_prompt]  # the masked-out tokens are the prompt's own tokens
        if n_prompt == len(prompt_ids):
            assert tokenizer.decode(ids[n_prompt:-1]) == r["response"]
        else:  # the first response token swallowed the prompt's last characters ("\n" + "\n")
            straddles += 1
            assert tokenizer.decode(ids[n_prompt:-1]).endswith(r["response"])
        assert row["loss_bytes"] == len(r["response"].encode())
        # transformers' own answer: the {% generation %} block's tokens (fast tokenizers), + our <|endoftext|>
        out = tokenizer.apply_chat_template(instruction_messages(r["instruction"], r["response"], r["context"]),
                                            return_dict=True, return_assistant_tokens_mask=True, tokenizer_kwargs=SPLIT)
        assert out["input_ids"] + [EOS_ID] == ids and list(out["assistant_masks"]) + [1] == mask
    assert straddles == 1

    # text documents have no prompt: every token counts
    text_rows = list(tokenized(open_source(str(DATA / "train_shakespeare.txt")).take(3), tokenizer, "text", "text",
                               RowStats(), with_mask=True))
    assert all(row["loss_mask"] == [1] * len(row["input_ids"]) for row in text_rows)


@pytest.fixture(scope="module")
def tiny_model():
    from pygpt_hf import PyGPTConfig
    from pygpt_hf.training.state import build_model

    return build_model(PyGPTConfig(vocab_size=360, n_positions=16, n_layer=2, n_head=2, n_embd=32), seed=0)


def test_masked_step_ignores_prompt_targets(tiny_model):
    from pygpt_hf.training.state import create_train_state
    from pygpt_hf.training.step import make_train_step

    model, params = tiny_model
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 360, size=(2, 4, 17)).astype(np.int32)  # (accum, batch, T + 1)
    mask = (rng.random((2, 4, 17)) < 0.5).astype(np.uint8)
    mask[:, :, -1] = [0, 1, 0, 1]  # the last token is a target only (never an input): rows 0, 2 prompt, 1, 3 response
    optimizer = optax.sgd(1.0)
    step = make_train_step(model, optimizer, masked=True)

    def run(toks, msk):
        state = create_train_state(jax.tree_util.tree_map(jnp.copy, params), optimizer)
        new_state, metrics = step(state, (jnp.asarray(toks), jnp.asarray(msk)))
        return float(metrics["loss"]), new_state.params

    loss, new_params = run(tokens, mask)
    # the loss is the mean over the counted targets of the whole step
    logits = [model(tokens[a, :, :-1], params=params).logits for a in range(2)]
    nats = np.stack([optax.softmax_cross_entropy_with_integer_labels(lg, tokens[a, :, 1:]) for a, lg in enumerate(logits)])
    assert loss == pytest.approx(float((nats * mask[:, :, 1:]).sum() / mask[:, :, 1:].sum()), rel=1e-5)

    changed = tokens.copy()
    changed[:, 0, -1] = (changed[:, 0, -1] + 1) % 360  # a prompt-only target (mask 0): nothing changes
    same_loss, same_params = run(changed, mask)
    assert same_loss == loss
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new_params),
                                                     jax.tree_util.tree_leaves(same_params)))
    changed = tokens.copy()
    changed[:, 1, -1] = (changed[:, 1, -1] + 1) % 360  # a response target (mask 1): the loss moves
    assert run(changed, mask)[0] != loss

    # an all-ones mask is the plain next-token loss
    plain = make_train_step(model, optimizer)
    _, plain_metrics = plain(create_train_state(jax.tree_util.tree_map(jnp.copy, params), optimizer), jnp.asarray(tokens))
    assert run(tokens, np.ones_like(mask))[0] == pytest.approx(float(plain_metrics["loss"]), rel=1e-6)


# ---- --strip-labels ----------------------------------------------------------------------------------------


def test_strip_labels_cleans_text_rows_and_skips_rows_left_blank(tmp_path):
    rows = [{"text": "### Instruction:\nName a colour.\n\n### Response:\nBlue."},
            {"text": "Input:\n\n**Response:**"},  # labels only: blank once stripped
            {"text": "The output: was fine, and the response: too."}]  # label words mid-sentence stay
    stats = RowStats()
    docs = [render_record(r, "text", "text", stats, strip_labels=("Instruction", "Input", "Response")) for r in rows]
    assert docs == [["Name a colour.\n\nBlue."], [], ["The output: was fine, and the response: too."]]
    assert stats.used == 2 and stats.skipped == {"are blank after --strip-labels": 1}

    settings, _ = parse_settings(["--strip-labels", "--dataset", "a.txt"])
    assert settings.strip_labels == "Instruction,Input,Output,Response,Context"
    assert parse_settings(["--strip-labels", "Input,Response"])[0].strip_labels == "Input,Response"
    with pytest.raises(ValueError, match="--strip-labels cleans --format text"):
        parse_settings(["--strip-labels", "--format", "dolly"])

    # the tokenizer trainer takes the same flag
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_tokenizer_script", ROOT / "scripts" / "train_tokenizer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data = jsonl(tmp_path / "dump.jsonl", rows * 3)
    stats = RowStats()
    texts = list(script.read_texts(str(data), "text", "train", stats, ("Instruction", "Input", "Response")))
    assert texts == [docs[0][0], docs[2][0]] * 3 and stats.skipped == {"are blank after --strip-labels": 3}
    assert script.main(["--dataset", str(data), "--vocab-size", "270", "--output-dir", str(tmp_path / "tok"),
                        "--strip-labels"]) == 0
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


# ---- mixtures ------------------------------------------------------------------------------------------------


def test_dataset_spec_parsing_and_errors_naming_the_part(tmp_path):
    assert parse_dataset_spec(None, "dolly") == [SourceSpec(None, "dolly", "text", None)]
    assert parse_dataset_spec("databricks/databricks-dolly-15k", "dolly") == [
        SourceSpec("databricks/databricks-dolly-15k", "dolly")]
    mix = parse_dataset_spec("dolly.jsonl@dolly:0.7,notes.txt@text:0.3,wiki.parquet@text=body:1", "alpaca", "x")
    assert mix == [SourceSpec("dolly.jsonl", "dolly", "x", 0.7), SourceSpec("notes.txt", "text", "x", 0.3),
                   SourceSpec("wiki.parquet", "text", "body", 1.0)]
    assert parse_dataset_spec("a.jsonl,b.jsonl@dolly", "text")[1] == SourceSpec("b.jsonl", "dolly")
    odd = tmp_path / "odd,name@v2:1.jsonl"  # an existing path is one source, whatever it contains
    odd.write_text("{}\n")
    assert parse_dataset_spec(str(odd)) == [SourceSpec(str(odd))]
    for spec, message in [
        ("a.jsonl:0.7,b.jsonl:x", r"part 2 \('b.jsonl:x'\): the weight 'x' is not a number"),
        ("a.jsonl:0.7,b.jsonl:-1", r"part 2 .*positive number"),
        ("a.jsonl:0.7,b.jsonl", r"no weight on part 2 \('b.jsonl'\)"),
        ("a.jsonl@csv", r"part 1 .*unknown format 'csv'"),
        ("a.jsonl@dolly=body", r"only text takes a column"),
        ("a.jsonl,,b.jsonl", r"part 2 \(''\): is empty"),
        ("@dolly:1,b:1", r"part 1 .*names no file"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_dataset_spec(spec)


def _mixture(math_file, eval_records=10, seed=7, stopping="all_exhausted"):
    sources = parse_dataset_spec(f"{DOLLY}@dolly:0.7,{math_file}@dolly:0.3")
    return Mixture(sources, seed=seed, stopping=stopping, eval_records=eval_records)


def test_mixture_follows_the_weights_drops_other_columns_and_holds_out_its_first_records(math_file):
    mixture = _mixture(math_file)
    full = mixture._interleave(mixture._rendered(mixture.raw, mixture.new_stats()))  # the whole mixture's order
    first = list(full.take(400))
    assert set(first[0]) == {"text", "response_start", "source"}  # `meta`, `category` etc. are gone
    share = Counter(row["source"] for row in first)[0] / len(first)
    assert 0.62 < share < 0.78  # 70% dolly, 30% math

    held = list(mixture.eval_dataset(mixture.new_stats()))
    assert Counter(d for r in held for d in r["text"]) == Counter(d for r in first[:10] for d in r["text"])
    assert mixture.held_out_counts() == [Counter(r["source"] for r in first[:10])[i] for i in (0, 1)]
    # a whole training pass: every source read to its end (the small one repeated), no held-out document
    stats = mixture.new_stats()
    training = [d for row in mixture.train_dataset(stats) for d in row["text"]]
    held_docs = {d for r in held for d in r["text"]}
    assert held_docs and not held_docs & set(training)
    every_math = {render_instruction(r["instruction"], r["response"], r["context"])
                  for r in map(json.loads, math_file.read_text().splitlines())}
    assert every_math - held_docs <= set(training)
    assert Counter(training).most_common(1)[0][1] > 1  # dolly (31 records at 70%) runs out first: repeated

    # first_exhausted ends the pass when a source runs out: less than a full pass of math
    short = _mixture(math_file, stopping="first_exhausted")
    assert len(list(short.train_dataset(short.new_stats()))) < len(training)


def _batches(stream, n, accum=2, batch=4):
    return [stream.next_masked_batch(accum, batch) for _ in range(n)]


def _round_trip(state):
    arrays, meta = state
    return load_safetensors(save_safetensors(arrays)), json.loads(json.dumps(meta))


def _find(state, key):
    """The first value of `key` in a nested datasets state dict."""
    if isinstance(state, dict):
        if key in state:
            return state[key]
        for value in state.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def test_mixture_stream_resumes_exactly(math_file, tokenizer):
    """Stop mid-pass, after the mixture restarted its smaller source, save through safetensors + JSON and
    restore into a new stream: the same (tokens, mask) batches follow."""
    mixture = _mixture(math_file)

    def stream(seed=0):
        return TokenStream(lambda: tokenize_documents(mixture.train_dataset(mixture.new_stats()), tokenizer, True,
                                                      batch_size=16), seq_len=16, buffer_size=8, seed=seed)

    reference = _batches(stream(), 90)
    first = stream()
    for tokens, mask in reference[:60]:
        got_tokens, got_mask = first.next_masked_batch(2, 4)
        assert np.array_equal(got_tokens, tokens) and np.array_equal(got_mask, mask)
    saved = first.state_dict()
    assert _find(saved[1]["dataset"], "is_exhausted") == [True, False]  # dolly ran out and was restarted
    second = stream(seed=99)  # the saved generator state replaces the seed
    second.load_state_dict(*_round_trip(saved))
    for tokens, mask in reference[60:]:
        got_tokens, got_mask = second.next_masked_batch(2, 4)
        assert np.array_equal(got_tokens, tokens) and np.array_equal(got_mask, mask)
    masks = np.stack([m for _, m in reference])
    assert 0 < masks.mean() < 1  # prompts masked out, responses in


@pytest.mark.skipif(not SEED_TASKS.is_file(), reason="../shared/data/alpaca_seed_tasks.jsonl is not here")
def test_alpaca_seed_tasks_mix_with_dolly_records(tokenizer):
    """The nested seed-task form ({instruction, instances: [{input, output}]}) mixed with Dolly records."""
    mixture = Mixture(parse_dataset_spec(f"{DOLLY}@dolly:1,{SEED_TASKS}@alpaca:1"), seed=0, eval_records=4)
    rows = list(mixture.train_dataset(mixture.new_stats()).take(60))
    seed_docs = [d for r in rows if r["source"] == 1 for d in r["text"]]
    assert 15 < len(seed_docs) < 45 and all(d.startswith("### Instruction:\n") for d in seed_docs)
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()]
    first_trained = tasks[mixture.held_out_counts()[1]]  # the first seed task after the held-out ones
    instance = first_trained["instances"][0]
    messages = instruction_messages(first_trained["instruction"], instance["output"], instance["input"])
    assert tokenizer.apply_chat_template(messages, tokenize=False) == seed_docs[0]
    assert ("### Input:\n" in seed_docs[0]) == bool(instance["input"].strip())


# ---- pre-tokenized folders ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretok(tmp_path_factory, math_file, tokenizer):
    """(settings, folder, manifest): the mixture pre-tokenized into 16-token rows, in small shards."""
    folder = tmp_path_factory.mktemp("pretok") / "pretok"
    tokenizer_dir = folder.parent / "tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    settings = TrainSettings(dataset=f"{DOLLY}@dolly:0.7,{math_file}@dolly:0.3", tokenizer=str(tokenizer_dir),
                             seq_len=16, eval_docs=10, seed=7, batch_size=4, grad_accum=2, shuffle_buffer=8,
                             loss_on="response").validate()
    manifest = pretokenize(settings, tokenizer, str(folder), shard_tokens=2048, log=lambda text: None)
    return settings, folder, manifest


def test_pretokenized_folder_holds_the_stream_and_names_its_tokenizer(pretok, tokenizer, math_file):
    _, folder, manifest = pretok
    assert manifest["tokenizer_sha256"] == tokenizer_sha256(tokenizer)
    assert manifest["tokenizer_sha256"] == hashlib.sha256((folder / "tokenizer" / "tokenizer.json").read_bytes()).hexdigest()
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["seq_len"] == 16 and manifest["recipe"]["eval_docs"] == 10 and manifest["recipe"]["instruction"]
    assert len(manifest["train_files"]) > 1  # 2048 tokens a shard
    assert (folder / "tokenizer" / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    assert sorted(p.name for p in folder.parent.iterdir()) == ["pretok", "tokenizer"]  # no temp debris

    rows = list(pretokenized.train_dataset(str(folder), manifest))
    assert all(len(r["input_ids"]) == 16 for r in rows[:-1]) and 0 < len(rows[-1]["input_ids"]) <= 16
    mixture = _mixture(math_file)
    on_the_fly = list(tokenize_documents(mixture.train_dataset(mixture.new_stats()), tokenizer, True))
    assert [t for r in rows for t in r["input_ids"]] == [t for r in on_the_fly for t in r["input_ids"]]
    assert [m for r in rows for m in r["loss_mask"]] == [m for r in on_the_fly for m in r["loss_mask"]]
    assert manifest["train_tokens"] == sum(len(r["input_ids"]) for r in on_the_fly)

    held = tokenize_documents(mixture.eval_dataset(mixture.new_stats()), tokenizer, True)
    ours = build_eval_set(pretokenized.eval_dataset(str(folder), manifest), 16, 10_000, use_mask=True)
    theirs = build_eval_set(held, 16, 10_000, use_mask=True)
    assert np.array_equal(ours.blocks, theirs.blocks) and np.array_equal(ours.weights, theirs.weights)
    assert ours.num_bytes == theirs.num_bytes > 0 and 0 < ours.num_tokens < ours.blocks.size


def test_training_from_the_folder_gives_the_on_the_fly_batches_and_resumes_exactly(pretok, tokenizer):
    settings, folder, manifest = pretok
    logs: list[str] = []
    on_the_fly = prepare_data(settings, None, 4, logs.append)
    # no --tokenizer: the folder's own copy is used
    from_folder = prepare_data(TrainSettings(**{**settings.to_dict(), "dataset": str(folder), "tokenizer": None}),
                               None, 4, logs.append)
    assert tokenizer_sha256(from_folder.tokenizer) == manifest["tokenizer_sha256"]
    assert from_folder.tokenizer.chat_template == CHAT_TEMPLATE
    assert any("pre-tokenized" in line for line in logs)
    reference = [on_the_fly.first_batch] + [on_the_fly.next_batch(2, 4) for _ in range(40)]
    got = [from_folder.first_batch] + [from_folder.next_batch(2, 4) for _ in range(19)]
    resumed = TokenStream(lambda: pretokenized.train_dataset(str(folder), manifest), 16, 8, seed=0)
    resumed.load_state_dict(*_round_trip(from_folder.stream.state_dict()[0]))  # (data shard 0, the only one)
    got += [resumed.next_masked_batch(2, 4) for _ in range(21)]
    for (a_tokens, a_mask), (b_tokens, b_mask) in zip(reference, got, strict=True):
        assert np.array_equal(a_tokens, b_tokens) and np.array_equal(a_mask, b_mask)
    assert np.array_equal(on_the_fly.eval_set.weights, from_folder.eval_set.weights)


@pytest.mark.parametrize("source", ["on the fly", "pre-tokenized folder"])
def test_data_shards_deal_the_documents_and_each_process_reads_only_its_own(pretok, tokenizer, source):
    """--data-shards 2: a process that reads both shards (1 process) gets, row for row, what two processes
    reading one shard each get; the shards share no document and together hold every training document; each
    shard resumes from its own saved position."""
    settings, folder, _ = pretok
    if source != "on the fly":
        settings = TrainSettings(**{**settings.to_dict(), "dataset": str(folder), "tokenizer": None})
    settings = TrainSettings(**{**settings.to_dict(), "data_shards": 2})
    quiet = lambda text: None  # noqa: E731
    both = prepare_data(settings, None, 4, quiet)
    halves = [prepare_data(settings, None, 4, quiet, shards=range(j, j + 1)) for j in (0, 1)]
    whole = [both.first_batch] + [both.next_batch(2, 4) for _ in range(30)]
    parts = [[half.first_batch] + [half.next_batch(2, 4) for _ in range(15)] for half in halves]
    for half in halves:  # shard j resumes where it stopped, from its own state alone
        (shard, state), = half.stream.state_dict().items()
        again = prepare_data(settings, None, 4, quiet, shards=range(shard, shard + 1))
        again.stream.load_state_dict({shard: _round_trip(state)})
        parts[shard] += [again.next_batch(2, 4) for _ in range(15)]
    for (tokens, mask), first, second in zip(whole, *parts, strict=True):
        assert first[0].shape == (2, 2, 17)  # each process: its 2 rows of the 4
        assert np.array_equal(tokens, np.concatenate([first[0], second[0]], axis=1))
        assert np.array_equal(mask, np.concatenate([first[1], second[1]], axis=1))

    one_shard = TrainSettings(**{**settings.to_dict(), "data_shards": 1})
    documents = _documents_of(one_shard, tokenizer)
    dealt = [_documents_of(settings, tokenizer, shard) for shard in (0, 1)]
    assert dealt[0] and dealt[1]
    if source == "on the fly":  # each source's records are dealt, then each shard mixes (and repeats) its own
        assert not set(dealt[0]) & set(dealt[1]) and set(dealt[0]) | set(dealt[1]) == set(documents)
    else:  # the folder's rows, each dealt once
        assert sorted(dealt[0] + dealt[1]) == sorted(documents)


def _documents_of(settings, tokenizer, shard=0):
    """The token ids of every training document that data shard `shard` reads, one pass."""
    from pygpt_hf.training.mixture import Mixture, deal

    num_shards = settings.data_shards or 1
    folder = pretokenized.open_folder(settings.dataset)
    if folder is not None:
        rows = deal(folder.train_rows(), shard, num_shards)
    else:
        mixture = Mixture.from_settings(settings)
        rows = tokenize_documents(mixture.train_dataset(mixture.new_stats(), shard, num_shards), tokenizer, True)
    return [tuple(row["input_ids"]) for row in rows]


def test_a_folder_made_with_another_tokenizer_is_refused_naming_both_hashes(pretok, tmp_path):
    settings, folder, manifest = pretok
    other = train_tokenizer(["something else entirely"] * 4, vocab_size=262, show_progress=False)
    other.save_pretrained(tmp_path / "other")
    wrong = TrainSettings(**{**settings.to_dict(), "dataset": str(folder), "tokenizer": str(tmp_path / "other")})
    with pytest.raises(ValueError) as err:
        prepare_data(wrong, None, 4, lambda text: None)
    message = str(err.value)
    assert manifest["tokenizer_sha256"] in message and tokenizer_sha256(other) in message
    assert str(tmp_path / "other") in message and "Leave --tokenizer out" in message


def test_pretokenize_writes_atomically_and_never_over_a_folder(pretok, tokenizer, tmp_path):
    settings, folder, _ = pretok
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        pretokenize(settings, tokenizer, str(folder), log=lambda text: None)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before

    def broken_rows():
        yield {"input_ids": [1, 2, EOS_ID], "loss_mask": [1, 1, 1]}
        raise OSError("disk full")

    target = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        pretokenized.write_pretokenized(str(target), tokenizer=tokenizer, eval_rows=[], train_rows=broken_rows(),
                                        seq_len=16, recipe={}, show_progress=False)
    assert os.listdir(tmp_path) == []  # neither the folder nor its temporary sibling
