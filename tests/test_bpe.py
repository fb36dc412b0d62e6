"""Our BPE trainer (pygpt_hf/bpe.py): same merges as textbook BPE, deterministic, fixed id layout."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from pygpt_hf.bpe import FIRST_MERGE_ID, layout_vocab, to_vocab_and_merges, train_bpe, train_tokenizer
from pygpt_hf.tokenization_pygpt import GPT4_SPLIT_PATTERN, bytes_to_unicode

DATA = Path(__file__).parent / "data"


def slice_texts() -> list[str]:
    with open(DATA / "tok_gutenberg_slice.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts + (DATA / "tok_multilingual.txt").read_text(encoding="utf-8").splitlines(keepends=True)


def textbook_bpe(texts: list[str], vocab_size: int) -> list[tuple[bytes, bytes]]:
    """The slow reference: recount every pair of every chunk after every merge.

    Same rules as ours: GPT-4 pre-split, ids 0..255 bytes + 2 specials, the most frequent pair wins and
    ties go to the smallest (left id, right id).
    """
    chunks = Counter(chunk for text in texts for chunk in regex.findall(GPT4_SPLIT_PATTERN, text))
    words = [(list(chunk.encode("utf-8")), n) for chunk, n in chunks.items()]
    tokens = [bytes([i]) for i in range(256)] + [b"<|endoftext|>", b"<|pad|>"]
    merges = []
    while len(tokens) < vocab_size:
        counts = Counter()
        for ids, n in words:
            for pair in pairwise(ids):
                counts[pair] += n
        if not counts:
            break
        a, b = min(counts, key=lambda pair: (-counts[pair], pair))
        merged = tokens[a] + tokens[b]
        new_id = tokens.index(merged, 256) if merged in tokens[256:] else len(tokens)
        if new_id == len(tokens):
            tokens.append(merged)
        merges.append((tokens[a], tokens[b]))
        for ids, _ in words:  # replace (a, b) left to right, in place
            i = 0
            while i < len(ids) - 1:
                if ids[i] == a and ids[i + 1] == b:
                    ids[i : i + 2] = [new_id]
                i += 1
    return merges


def test_same_merges_as_textbook_bpe_on_real_text():
    texts = slice_texts()
    assert train_bpe(texts, 420, show_progress=False) == textbook_bpe(texts, 420)


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.text(alphabet="aab b\nc", min_size=1, max_size=14), min_size=1, max_size=25),
    vocab_size=st.integers(FIRST_MERGE_ID, 300),
)
def test_same_merges_as_textbook_bpe_on_repetitive_text(words, vocab_size):
    """Runs like 'aaaa' and 'abab' are where incremental pair counting goes wrong (overlaps, neighbours)."""
    texts = [" ".join(words), "".join(words)]
    assert train_bpe(texts, vocab_size, show_progress=False) == textbook_bpe(texts, vocab_size)


def test_training_is_deterministic_and_streams():
    texts = slice_texts()
    first = train_bpe(texts, 1000, show_progress=False)
    again = train_bpe(iter(list(texts)), 1000, show_progress=False)  # a one-pass iterator, like a stream
    assert first == again
    assert len(first) == 1000 - FIRST_MERGE_ID


def test_saved_files_are_identical_across_runs(tmp_path):
    texts = slice_texts()
    train_tokenizer(texts, 600, show_progress=False).save_pretrained(tmp_path / "a")
    train_tokenizer(texts, 600, show_progress=False).save_pretrained(tmp_path / "b")
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("vocab_size", [300, 1000])
def test_id_layout_is_fixed_at_every_size(vocab_size):
    tok = train_tokenizer(slice_texts(), vocab_size, show_progress=False)
    assert len(tok) == vocab_size
    vocab = tok.get_vocab()
    byte_chars = bytes_to_unicode()
    assert all(vocab[byte_chars[b]] == b for b in range(256))  # id == byte value
    assert (vocab["<|endoftext|>"], vocab["<|pad|>"]) == (256, 257)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token) == (256, 256, 257, None)
    assert sorted(vocab.values()) == list(range(vocab_size))


def test_larger_vocabulary_extends_the_smaller_one():
    texts = slice_texts()
    small, large = train_bpe(texts, 300, show_progress=False), train_bpe(texts, 800, show_progress=False)
    assert large[: len(small)] == small
    vocab_small, _ = to_vocab_and_merges(small)
    vocab_large, _ = to_vocab_and_merges(large)
    assert all(vocab_large[token] == i for token, i in vocab_small.items())


def test_merge_ids_follow_learning_order():
    merges = train_bpe(["the theme then there"], 270, show_progress=False)
    tokens = layout_vocab(merges)
    # "th" and "he" both occur 4 times: the tie goes to the smaller pair of ids, ("h"=104, "e"=101)
    assert merges[0] == (b"h", b"e")
    assert tokens[FIRST_MERGE_ID : FIRST_MERGE_ID + 3] == [left + right for left, right in merges[:3]]


def test_stops_when_the_corpus_has_no_more_pairs():
    merges = train_bpe(["ab ab ab"], 10_000, show_progress=False)  # chunks "ab", " ab", " ab"
    assert merges == [(b"a", b"b"), (b" ", b"ab")]
    assert len(train_tokenizer(["ab ab ab"], 10_000, show_progress=False)) == FIRST_MERGE_ID + 2


def test_vocab_size_below_bytes_plus_specials_is_refused():
    with pytest.raises(ValueError, match="vocab_size must be at least 258"):
        train_bpe(["some text"], 257)
    assert train_bpe(["some text"], 258, show_progress=False) == []  # bytes and specials only


def test_empty_corpus_is_refused():
    with pytest.raises(ValueError, match="empty corpus"):
        train_bpe([], 300, show_progress=False)
    with pytest.raises(ValueError, match="empty corpus"):
        train_bpe(["", ""], 300, show_progress=False)


# merges of slice_texts() at vocab 1000 as the serial trainer learned them before counting went parallel (93defc0)
SLICE_1000_MERGES_SHA256 = "cfd04a29cf1de4bc09f92b7e02e74e92c6d221d4a8f77a23ca35aa54fcba0a7c"


def merges_sha256(merges: list[tuple[bytes, bytes]]) -> str:
    return hashlib.sha256(b"\n".join(left + b" " + right for left, right in merges)).hexdigest()


def test_counting_in_worker_processes_learns_the_same_merges():
    """Run in a fresh interpreter: the workers are forked, which the trainer (rightly) refuses once jax is loaded,
    as it is in the test process after other tests."""
    code = """
import hashlib, json, multiprocessing, sys
from collections import Counter
import regex
sys.path.insert(0, "tests")
from test_bpe import merges_sha256, slice_texts
from pygpt_hf import bpe
pools = []
get_context = multiprocessing.get_context
multiprocessing.get_context = lambda method=None: pools.append(method) or get_context(method)
bpe.BATCH_CHARS = 4096  # many batches, so that the workers really share the corpus
texts = slice_texts()
counts = bpe.count_chunks(iter(texts), show_progress=False, processes=2)
serial = Counter(chunk for text in texts for chunk in regex.findall(bpe.GPT4_SPLIT_PATTERN, text))
print(json.dumps({"pools": pools, "same_counts": counts == serial,
                  "sha": merges_sha256(bpe.learn_merges(counts, 1000, show_progress=False))}))
"""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"pools": ["fork"], "same_counts": True, "sha": SLICE_1000_MERGES_SHA256}


def test_serial_training_learns_todays_merges():
    assert merges_sha256(train_bpe(slice_texts(), 1000, show_progress=False)) == SLICE_1000_MERGES_SHA256


def test_training_uses_the_split_and_specials_the_tokenizer_encodes_with():
    # pygpt_hf.bpe keeps its own copies (so that learning merges never imports transformers)
    from pygpt_hf import bpe, tokenization_pygpt

    assert bpe.GPT4_SPLIT_PATTERN == tokenization_pygpt.GPT4_SPLIT_PATTERN
    assert bpe.SPECIAL_TOKENS == tokenization_pygpt.SPECIAL_TOKENS
