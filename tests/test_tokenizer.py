"""PyGPTTokenizer (slow) and PyGPTTokenizerFast: same ids, lossless, HF behaviour users rely on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bpe import slice_texts
from transformers import AutoTokenizer
from transformers.convert_slow_tokenizer import convert_slow_tokenizer

from pygpt_hf import PyGPTConfig, PyGPTTokenizer, PyGPTTokenizerFast
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.tokenization_pygpt import GPT4_SPLIT_PATTERN

GUTENBERG = Path("../shared/data/gutenberg.jsonl")  # the full corpus, where the sibling checkout has it


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A 2,000-token tokenizer trained on the committed slices, saved the way users get it."""
    path = tmp_path_factory.mktemp("pygpt-tokenizer")
    train_tokenizer(slice_texts(), 2000, model_max_length=64, show_progress=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def slow(folder) -> PyGPTTokenizer:
    return AutoTokenizer.from_pretrained(folder, use_fast=False)


@pytest.fixture(scope="module")
def fast(folder) -> PyGPTTokenizerFast:
    return AutoTokenizer.from_pretrained(folder)


def ids(tok, text: str, **kwargs) -> list[int]:
    return tok(text, **kwargs)["input_ids"]


# ---- loading and saving --------------------------------------------------------------------------------


def test_auto_tokenizer_loads_fast_by_default_and_slow_on_request(folder, slow, fast):
    assert type(fast) is PyGPTTokenizerFast and type(slow) is PyGPTTokenizer
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} <= set(
        os.listdir(folder)
    )
    assert slow.get_vocab() == fast.get_vocab() and len(slow) == len(fast) == 2000
    for tok in (slow, fast):
        assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
            "<|endoftext|>", "<|endoftext|>", "<|pad|>", None)
        assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 256, 257)
        assert tok.model_max_length == 64
        assert tok.clean_up_tokenization_spaces is False and tok.add_prefix_space is False


def test_registered_for_the_pygpt_model_type():
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    assert TOKENIZER_MAPPING[PyGPTConfig] == (PyGPTTokenizer, PyGPTTokenizerFast)


def test_save_round_trip_keeps_files_and_special_token_flags(tmp_path, slow, fast):
    (tmp_path / "slow").mkdir()
    (tmp_path / "fast").mkdir()
    slow_files, fast_files = slow.save_vocabulary(str(tmp_path / "slow")), fast.save_vocabulary(str(tmp_path / "fast"))
    assert [Path(f).name for f in slow_files] == [Path(f).name for f in fast_files] == ["vocab.json", "merges.txt"]
    for a, b in zip(slow_files, fast_files):  # written from memory, identical whichever class writes them
        assert Path(a).read_bytes() == Path(b).read_bytes()
    merges = Path(slow_files[1]).read_text(encoding="utf-8")
    assert merges.startswith("#version: 0.2\n") and merges.endswith("\n")
    assert len(merges.split("\n")[1:-1]) == 2000 - 258  # the way GPT-2-style readers parse it

    for tok in (slow, fast):
        tok.save_pretrained(tmp_path / type(tok).__name__)
        for use_fast in (True, False):
            again = AutoTokenizer.from_pretrained(tmp_path / type(tok).__name__, use_fast=use_fast)
            assert type(again) is (PyGPTTokenizerFast if use_fast else PyGPTTokenizer)
            eot = again.added_tokens_decoder[256]
            assert (eot.content, eot.special, eot.normalized, eot.lstrip, eot.rstrip) == (
                "<|endoftext|>", True, False, False, False)
            assert again.added_tokens_decoder[257].content == "<|pad|>"
            assert again.model_max_length == 64
            text = "Re-loaded: <|endoftext|> still works."
            assert ids(again, text) == ids(slow, text)


def test_fast_is_built_from_vocab_and_merges_with_our_split_pattern(folder, slow):
    """Without tokenizer.json the fast class converts the slow one; GPT-2's converter would change the split."""
    converted = PyGPTTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    split = json.loads(converted.backend_tokenizer.to_str())["pre_tokenizer"]["pretokenizers"][0]
    assert split["pattern"] == {"Regex": GPT4_SPLIT_PATTERN}
    text = "I'LL pay 1234567 -- don't\r\n\n   x  y\t\tz"  # GPT-2's regex splits all of these differently
    assert ids(converted, text) == ids(slow, text)
    assert convert_slow_tokenizer(slow).encode(text).ids == ids(slow, text)


# ---- same ids, lossless ------------------------------------------------------------------------------


def test_slow_and_fast_agree_on_the_committed_slices(slow, fast):
    for text in slice_texts():
        assert ids(slow, text) == ids(fast, text)
        assert slow.decode(ids(slow, text)) == fast.decode(ids(fast, text)) == text


@pytest.mark.skipif(not GUTENBERG.exists(), reason="../shared/data/gutenberg.jsonl is not present")
def test_slow_and_fast_agree_on_every_gutenberg_document(slow, fast):
    with open(GUTENBERG, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    assert len(texts) == 50
    fast_ids = fast(texts, split_special_tokens=True)["input_ids"]
    for i, text in enumerate(texts):
        assert ids(slow, text, split_special_tokens=True) == fast_ids[i], f"document {i} differs"


HARD_PIECES = [
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "中文字符", "日本語のテキスト", "한국어", "e\u0301", "Z\u0351\u0352\u0353",
    "שלום עולם", "مرحبا بالعالم", "\u200f\u202e", "\x00", "\x07\x1b[0m", "\r\n", "\r", "\n\n\n", "\t",
    " " * 40, "\u00a0\u3000\u2003", "'S", "'ll", "12345678", "<|endoftext|>", "<|pad|>", "<|endoftext", "\ufeff",
]
texts_strategy = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=20),
        st.sampled_from(HARD_PIECES),
        st.text(alphabet=" \t\r\n\u00a0", min_size=1, max_size=60),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts_strategy)
def test_slow_and_fast_agree_and_round_trip_on_any_text(slow, fast, text):
    for split in (True, False):
        slow_ids, fast_ids = ids(slow, text, split_special_tokens=split), ids(fast, text, split_special_tokens=split)
        assert slow_ids == fast_ids
        assert slow.decode(slow_ids) == fast.decode(fast_ids) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token_ids=st.lists(st.integers(0, 1999), max_size=30))
def test_slow_and_fast_decode_any_ids_alike(slow, fast, token_ids):
    """Arbitrary ids (cut UTF-8 sequences, special tokens) decode the same way: invalid bytes become U+FFFD."""
    for skip in (False, True):
        assert slow.decode(token_ids, skip_special_tokens=skip) == fast.decode(token_ids, skip_special_tokens=skip)


def test_add_prefix_space_agrees_between_slow_and_fast(folder, tmp_path):
    slow = PyGPTTokenizer.from_pretrained(folder, add_prefix_space=True)
    fast = PyGPTTokenizerFast.from_pretrained(folder, add_prefix_space=True)
    plain = AutoTokenizer.from_pretrained(folder)
    for text in ["Hello world", "Hello<|endoftext|>world", " already spaced", "x\n<|pad|>", "<|endoftext|>", ""]:
        assert ids(slow, text) == ids(fast, text)
    assert ids(fast, "Hello world") == ids(plain, " Hello world")
    assert ids(slow, ["Hello", "world"], is_split_into_words=True) == ids(
        fast, ["Hello", "world"], is_split_into_words=True) == ids(plain, " Hello world")
    fast.save_pretrained(tmp_path)  # the setting is saved, and both classes honour it on reload
    for use_fast in (True, False):
        again = AutoTokenizer.from_pretrained(tmp_path, use_fast=use_fast)
        assert again.add_prefix_space is True and ids(again, "Hello world") == ids(plain, " Hello world")


# ---- special tokens, padding, truncation ------------------------------------------------------------------


def test_typed_control_text_is_encoded_as_text(slow, fast):
    """A document that *contains* "<|endoftext|>" must not get a document separator from it."""
    document = "The tag <|endoftext|> ends GPT documents;<|pad|> pads them."
    for tok in (slow, fast):
        as_text = ids(tok, document, split_special_tokens=True)
        assert 256 not in as_text and 257 not in as_text
        assert tok.decode(as_text) == document
        assert 256 in ids(tok, document)  # by default HF matches special tokens in the text: hence the flag
    assert ids(slow, document, split_special_tokens=True) == ids(fast, document, split_special_tokens=True)
    # A separator the pipeline inserts by id decodes as the special token and can be skipped.
    sep = ids(fast, "one", split_special_tokens=True) + [fast.eos_token_id] + ids(fast, "two")
    assert fast.decode(sep) == slow.decode(sep) == "one<|endoftext|>two"
    assert fast.decode(sep, skip_special_tokens=True) == slow.decode(sep, skip_special_tokens=True) == "onetwo"


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_a_batch(slow, fast, side):
    batch = ["short", "a somewhat longer sentence with more tokens"]
    outputs = []
    for tok in (slow, fast):
        tok.padding_side = side
        try:
            out = tok(batch, padding=True, return_tensors="np")
        finally:
            tok.padding_side = "right"
        outputs.append(out)
        n_short = len(ids(tok, batch[0]))
        input_ids, mask = out["input_ids"], out["attention_mask"]
        assert input_ids.shape == mask.shape == (2, len(ids(tok, batch[1])))
        assert mask[1].all() and mask[0].sum() == n_short
        pads = input_ids[0][mask[0] == 0]
        assert (pads == 257).all() and len(pads) == input_ids.shape[1] - n_short
        real = input_ids[0][: n_short] if side == "right" else input_ids[0][-n_short:]
        assert real.tolist() == ids(tok, batch[0])
        assert (mask[0][:n_short] == 1).all() if side == "right" else (mask[0][-n_short:] == 1).all()
    np.testing.assert_array_equal(outputs[0]["input_ids"], outputs[1]["input_ids"])
    np.testing.assert_array_equal(outputs[0]["attention_mask"], outputs[1]["attention_mask"])


def test_truncation(slow, fast):
    text = " ".join(["word"] * 200)
    for tok in (slow, fast):
        full = ids(tok, text)
        assert len(full) > 64  # longer than model_max_length: encoded whole unless truncation is asked for
        assert ids(tok, text, truncation=True, max_length=10) == full[:10]
        assert ids(tok, text, truncation=True) == full[:64]  # model_max_length
        tok.truncation_side = "left"
        try:
            assert ids(tok, text, truncation=True, max_length=10) == full[-10:]
        finally:
            tok.truncation_side = "right"
        batch = tok([text, "short"], truncation=True, max_length=8, padding="max_length")
        assert [len(row) for row in batch["input_ids"]] == [8, 8]


# ---- training through the HF API -------------------------------------------------------------------------


def test_train_new_from_iterator_keeps_our_id_layout(tmp_path, fast):
    texts = slice_texts()
    new = fast.train_new_from_iterator(texts, 500)
    assert type(new) is PyGPTTokenizerFast and len(new) == 500
    vocab = new.get_vocab()
    assert (vocab["<|endoftext|>"], vocab["<|pad|>"], new.eos_token_id, new.pad_token_id) == (256, 257, 256, 257)
    assert vocab["Ġ"] == ord(" ") and vocab["a"] == ord("a")
    new.save_pretrained(tmp_path)
    slow = AutoTokenizer.from_pretrained(tmp_path, use_fast=False)
    for text in texts[:3] + ["<|endoftext|> x 😀 中文"]:
        assert ids(slow, text) == ids(new, text)
        assert new.decode(ids(new, text)) == text
