"""The data pipeline: sources and formats, skipped rows, tokenizing, packing, the held-out set, exact resume."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import tokenized
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.documents import RowStats, open_source, render_instruction, render_record
from pygpt_hf.training.packing import NoUsableData, TokenStream, build_eval_set
from pygpt_hf.training.tokenizer import EOS_ID, PAD_ID

DATA = Path(__file__).parent / "data"
SHAKESPEARE = str(DATA / "train_shakespeare.txt")


@pytest.fixture(scope="module")
def tokenizer():
    paragraphs = (DATA / "train_shakespeare.txt").read_text().split("\n\n")
    return train_tokenizer(paragraphs, vocab_size=300, show_progress=False)


def test_instruction_formats_render_through_one_template():
    stats = RowStats()
    dolly = {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "open_qa"}
    alpaca = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    seed_task = {"instruction": "Negate it.", "instances": [{"input": "yes", "output": "no"},
                                                             {"input": "", "output": "never"}]}
    assert render_record(dolly, "dolly", "text", stats) == ["### Instruction:\nName a colour.\n\n### Response:\nBlue."]
    assert render_record(alpaca, "alpaca", "text", stats) == [render_instruction("Add the numbers.", "5", "2 and 3")]
    assert render_instruction("Add the numbers.", "5", "2 and 3") == (
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5")
    assert render_record(seed_task, "alpaca", "text", stats) == [
        render_instruction("Negate it.", "no", "yes"), render_instruction("Negate it.", "never")]
    assert render_record({"instruction": "x"}, "dolly", "text", stats) == []  # no response: skipped, counted
    assert stats.rows == 4 and stats.used == 3 and stats.skipped == {"lack column 'response'": 1}


def test_bad_rows_are_skipped_and_counted(tokenizer):
    stats = RowStats()
    rows = list(tokenized(open_source(str(DATA / "train_records.jsonl")), tokenizer, "text", "text", stats))
    assert len(rows) == 53 and sum(bool(r["input_ids"]) for r in rows) == 30
    assert stats.skipped == {"have an empty 'text'": 10, "lack column 'text'": 10, "have a non-string 'text'": 3}
    assert stats.summary() == ("53 rows read, 30 used, skipped: 3 have a non-string 'text', "
                               "10 have an empty 'text', 10 lack column 'text'")


def test_missing_files_and_mixed_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        open_source(str(tmp_path / "nothing.jsonl"))
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.jsonl").write_text('{"text": "hi"}\n')
    with pytest.raises(ValueError, match="mixes file kinds"):
        open_source(str(tmp_path))


def test_typed_control_text_stays_text_and_every_document_ends_with_eos(tokenizer, tmp_path):
    path = tmp_path / "docs.jsonl"
    docs = ["A story. <|endoftext|> It goes on.", "Second <|pad|> one."]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    rows = list(tokenized(open_source(str(path)), tokenizer, "text", "text", RowStats()))
    for doc, row in zip(docs, rows):
        ids = row["input_ids"]
        assert ids[-1] == EOS_ID and EOS_ID not in ids[:-1] and PAD_ID not in ids
        assert tokenizer.decode(ids[:-1]) == doc  # the typed marker survives as its characters
        assert row["num_bytes"] == len(doc.encode())


def _stream(tokenizer, seq_len=16, buffer=8, seed=0, path=SHAKESPEARE, skip=0):
    raw = open_source(path)
    return TokenStream(lambda: tokenized(raw.skip(skip), tokenizer, "text", "text", RowStats(), batch_size=16),
                       seq_len, buffer, seed)


def test_packing_wastes_nothing_and_every_token_is_a_target_once(tokenizer):
    """With a buffer of one block, blocks come out in order: they tile the document stream exactly."""
    stream = _stream(tokenizer, seq_len=16, buffer=1)
    rows = tokenized(open_source(SHAKESPEARE), tokenizer, "text", "text", RowStats())
    expected = [t for r in rows for t in r["input_ids"]]
    blocks = [stream.next_block() for _ in range(len(expected) // 16 + 40)]  # runs into the second epoch
    assert all(b.shape == (17,) for b in blocks)
    assert all((a[-1] == b[0]) for a, b in itertools.pairwise(blocks))  # consecutive blocks overlap by one token
    targets = np.concatenate([b[1:] for b in blocks])  # each token, except the very first, is a target once
    stream_tokens = np.asarray(expected * 2)
    assert np.array_equal(targets, stream_tokens[1:len(targets) + 1])
    assert stream.epoch == 1 and PAD_ID not in targets


def test_shuffle_buffer_resumes_exactly_across_epochs(tokenizer):
    """Stop mid-epoch, save (through safetensors + JSON), restore into a new stream: same batches."""
    reference = _stream(tokenizer, buffer=32, seed=3)
    batches = [reference.next_batch(2, 16) for _ in range(70)]  # about 3 passes over the file
    first = _stream(tokenizer, buffer=32, seed=3)
    for b in batches[:35]:
        assert np.array_equal(first.next_batch(2, 16), b)
    assert first.epoch == 1  # stopped in the middle of the second pass
    arrays, meta = first.state_dict()
    arrays, meta = load_safetensors(save_safetensors(arrays)), json.loads(json.dumps(meta))
    second = _stream(tokenizer, buffer=32, seed=999)  # the seed is overwritten by the saved generator state
    second.load_state_dict(arrays, meta)
    for b in batches[35:]:
        assert np.array_equal(second.next_batch(2, 16), b)
    assert reference.epoch >= 2  # the test really crossed epoch boundaries
    assert not np.array_equal(batches[0], _stream(tokenizer, buffer=32, seed=4).next_batch(2, 16))  # seeded


def test_held_out_documents_never_enter_training(tokenizer):
    raw = open_source(SHAKESPEARE)
    eval_set = build_eval_set(tokenized(raw.take(10), tokenizer, "text", "text", RowStats()), 16, 10_000)
    assert eval_set.num_docs == 10 and eval_set.num_bytes > 0
    # padding only at the very end, never counted as a target; targets = all tokens but the first
    held = [r["input_ids"] for r in tokenized(raw.take(10), tokenizer, "text", "text", RowStats())]
    assert eval_set.num_tokens == sum(map(len, held)) - 1
    assert eval_set.weights[:-1].all() and eval_set.blocks[-1][-1] == PAD_ID
    # no held-out paragraph appears in a full epoch of the training stream
    training = [tuple(r["input_ids"]) for r in tokenized(raw.skip(10), tokenizer, "text", "text", RowStats())]
    held_docs = {tuple(ids) for ids in held if len(ids) > 8}
    assert held_docs and not held_docs & set(training)
    stream = _stream(tokenizer, seq_len=16, buffer=1, skip=10)
    blocks = np.stack([stream.next_block() for _ in range(sum(map(len, training)) // 16)])
    flat = blocks[:, 1:].ravel().tolist()
    for ids in held_docs:
        assert not any(flat[i:i + len(ids)] == list(ids) for i in range(len(flat) - len(ids)))


def test_a_dataset_with_nothing_usable_says_so(tokenizer):
    stream = _stream(tokenizer, path=str(DATA / "train_unusable.jsonl"))
    with pytest.raises(NoUsableData, match="no usable document"):
        stream.next_batch(1, 2)


def test_a_hub_dataset_streams_through_the_same_pipeline(hub, tokenizer):
    """--dataset user/name reads a Hub dataset repo (here the loopback Hub) with streaming=True."""
    repo_id = hub.repo_id("records")
    api = hub.api()
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=str(DATA / "train_records.jsonl"), path_in_repo="data/train.jsonl",
                    repo_id=repo_id, repo_type="dataset")
    stats = RowStats()
    rows = list(tokenized(open_source(repo_id, split="train"), tokenizer, "text", "text", stats))
    assert len(rows) == 53 and stats.used == 30 and stats.skipped["lack column 'text'"] == 10
    local = list(tokenized(open_source(str(DATA / "train_records.jsonl")), tokenizer, "text", "text", RowStats()))
    assert [r["input_ids"] for r in rows] == [r["input_ids"] for r in local]
    with pytest.raises(ValueError, match="--split"):
        open_source(repo_id, split="validation")
