"""`documents.read_records` (the reader tokenizer training uses, without importing `datasets`) gives the
records `documents.open_source` gives through `datasets`, for every local .txt and .jsonl layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pygpt_hf.documents import TXT_SAMPLE_BY, open_source, read_records

DATA = Path(__file__).resolve().parent / "data"


def present(record: dict) -> dict:
    # datasets fills a column a row lacks with None; rendering treats both alike (`_field` reads record.get)
    return {key: value for key, value in record.items() if value is not None}


def assert_same_records(path: Path, txt_sample_by: str = "paragraph") -> None:
    ours = [present(r) for r in read_records(str(path), txt_sample_by=txt_sample_by)]
    theirs = [present(r) for r in open_source(str(path), txt_sample_by=txt_sample_by)]
    assert ours == theirs and ours


def edge_case_text(folder: Path) -> Path:
    path = folder / "edges.txt"
    # CRLF and lone CR line ends, runs of blank lines, blank lines at both ends, non-ASCII, no final newline
    path.write_bytes("\n\nfirst line\r\nsecond line\r\n\r\n\r\n\r\nnext\rpara\n\n\n\nélan café 日本\n\n\n   \n\nend"
                     .encode("utf-8"))
    return path


@pytest.mark.parametrize("sample_by", TXT_SAMPLE_BY)
@pytest.mark.parametrize("name", ["train_shakespeare.txt", "tok_multilingual.txt", "edges"])
def test_text_files(tmp_path, name, sample_by):
    assert_same_records(edge_case_text(tmp_path) if name == "edges" else DATA / name, sample_by)


@pytest.mark.parametrize("name", ["tok_gutenberg_slice.jsonl", "recipes_dolly.jsonl", "train_records.jsonl",
                                  "train_unusable.jsonl", "edges"])
def test_jsonl_files(tmp_path, name):
    if name == "edges":
        path = tmp_path / "edges.jsonl"
        rows = [{"text": "a", "n": 1}, {"text": "b"}, {"text": None, "n": 2}, {"text": "c\nd", "meta": {"k": [1, 2]}}]
        path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n   \n" +
                        "\n".join(json.dumps(r) for r in rows[2:]) + "\n", encoding="utf-8")
    else:
        path = DATA / name
    assert_same_records(path)


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_folders_are_read_in_file_order(tmp_path, kind):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["b", "a", "sub/c"]):
        if kind == "txt":
            (folder / f"{name}.txt").write_text(f"para {i}\n\nmore {i}\n", encoding="utf-8")
        else:
            (folder / f"{name}.jsonl").write_text(json.dumps({"text": f"row {i}"}) + "\n", encoding="utf-8")
    assert_same_records(folder)


def test_a_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: a JSON object per line expected, got list"):
        list(read_records(str(path)))
