"""Sources -> documents: the data-reading stage that training, serving and evaluation share.

A source is a Hub dataset or local files, read as a streamed `datasets.IterableDataset` (`open_source`), so a
corpus larger than memory is read lazily and its position can be checkpointed (`state_dict()`). A record
becomes documents in exactly one way per format (`render_documents`):
- `text`:   the text column's value, as is (with `strip_labels`, record labels removed first).
- `dolly`:  {instruction, context, response} (Databricks Dolly-15k), through `INSTRUCTION_TEMPLATE`.
- `alpaca`: {instruction, input, output} (Stanford Alpaca), through the same template; the nested form
            {instruction, instances: [{input, output}, ...]} (Alpaca's seed tasks) gives one document per
            instance.
Rows that are empty, not strings, or lack a field are skipped and counted (`RowStats`), never crash a run.

The instruction template is also the tokenizer's chat template (`CHAT_TEMPLATE`), so `apply_chat_template`
renders exactly what training saw. `render_source` maps a stream of raw records to rendered rows
({"text": [documents], "response_start": [offsets], "source": index}, one row per record): the common shape
that the training harness mixes and tokenizes, and that evaluation reads.

This module sits at the top of the package and imports nothing of the harness, serving or evaluation.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources

from .labels import strip_labels as _strip_labels

# --------------------------------------------------------------------------------------------------------------
# The instruction template, as text and as the tokenizer's chat template


# One instruction template for every instruction format. The context block appears only when there is
# context. A document ends after the response; the data pipeline appends <|endoftext|> to it.
INSTRUCTION_TEMPLATE = "### Instruction:\n{instruction}\n\n{context_block}### Response:\n{response}"
CONTEXT_BLOCK = "### Input:\n{context}\n\n"
FORMATS = ("text", "dolly", "alpaca")  # --format: how a record becomes documents
INSTRUCTION_FORMATS = ("dolly", "alpaca")

# `INSTRUCTION_TEMPLATE` as a Jinja chat template (stored in the tokenizer: tokenizer_config.json /
# chat_template.jinja). A conversation is a list of turns; a turn is one "user" message (the instruction), an
# optional "system" message before or after it (the context / input: what Dolly calls context and Alpaca
# input), and the "assistant" message (the response). Each answered turn is a complete training document
# followed by `eos_token`, exactly as training joins documents; the last turn is left open: with
# `add_generation_prompt=True` the text ends with "### Response:\n", where the model answers (or, when the
# last message is the assistant's, after its response with no eos). So a single turn renders as before.
# Answers sit in {% generation %} blocks, so `return_assistant_tokens_mask=True` marks their tokens.
# No bos token in the text: prompt ids are [<|endoftext|>] + the template's ids, as for every document.
CHAT_TEMPLATE = """\
{%- macro block(instruction, context) -%}
    {{- '### Instruction:\\n' + instruction + '\\n\\n' -}}
    {%- if context and context.strip() -%}
        {{- '### Input:\\n' + context + '\\n\\n' -}}
    {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(instruction=none, context=none, response=none) -%}
{%- for message in messages -%}
    {%- if message['content'] is not string -%}
        {{- raise_exception('PyGPT chat template: message contents must be strings') -}}
    {%- elif message['role'] == 'user' and ns.instruction is none -%}
        {%- set ns.instruction = message['content'] -%}
    {%- elif message['role'] == 'system' and ns.context is none -%}
        {%- set ns.context = message['content'] -%}
    {%- elif message['role'] == 'assistant' and ns.instruction is not none and loop.last -%}
        {%- set ns.response = message['content'] -%}
    {%- elif message['role'] == 'assistant' and ns.instruction is not none -%}
        {{- block(ns.instruction, ns.context) + '### Response:\\n' -}}
        {%- generation -%}{{- message['content'] -}}{%- endgeneration -%}
        {{- eos_token -}}
        {%- set ns.instruction = none -%}
        {%- set ns.context = none -%}
    {%- else -%}
        {{- raise_exception('PyGPT chat template: each turn is one user message (the instruction), optionally '
                            'one system message (its context), then one assistant message (the response); got an '
                            'unexpected ' + message['role'] + ' message') -}}
    {%- endif -%}
{%- endfor -%}
{%- if ns.instruction is none -%}
    {{- raise_exception('PyGPT chat template: no user message (the instruction) in the last turn') -}}
{%- endif -%}
{{- block(ns.instruction, ns.context) -}}
{%- if ns.response is not none -%}
    {{- '### Response:\\n' -}}{%- generation -%}{{- ns.response -}}{%- endgeneration -%}
{%- elif add_generation_prompt -%}
    {{- '### Response:\\n' -}}
{%- endif -%}
"""


def render_instruction(instruction: str, response: str, context: str | None = None) -> str:
    """Fill `INSTRUCTION_TEMPLATE`: the one place that decides what an instruction record looks like."""
    context_block = CONTEXT_BLOCK.format(context=context) if context and context.strip() else ""
    return INSTRUCTION_TEMPLATE.format(instruction=instruction, context_block=context_block, response=response)


def instruction_messages(instruction: str, response: str | None = None, context: str | None = None) -> list[dict]:
    """The chat messages `CHAT_TEMPLATE` renders into `render_instruction(instruction, response, context)`."""
    messages = [{"role": "user", "content": instruction}]
    if context is not None:
        messages.append({"role": "system", "content": context})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


# --------------------------------------------------------------------------------------------------------------
# Sources: a Hub dataset or local files, streamed


LOCAL_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TXT_SAMPLE_BY = ("line", "paragraph", "document")  # what one record of a .txt file is (open_source)
EMBEDDED_CORPUS_NAME = "tinyshakespeare (embedded)"


def embedded_corpus_path() -> str:
    """The tinyshakespeare text shipped inside the package: the offline default corpus."""
    return str(resources.files("pygpt_hf") / "data" / "tinyshakespeare.txt")


def local_files(path: str) -> tuple[str, list[str]]:
    """(builder name, sorted files) for a local file or a folder of files of one kind."""
    if os.path.isfile(path):
        files = [path]
    else:
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if os.path.splitext(name)[1].lower() in LOCAL_BUILDERS and not name.startswith(".")
        )
        if not files:
            raise ValueError(f"--dataset {path}: no .txt, .json, .jsonl or .parquet files in this folder")
    builders = {LOCAL_BUILDERS.get(os.path.splitext(f)[1].lower()) for f in files}
    if None in builders:
        raise ValueError(f"--dataset {path}: unsupported file type; use .txt, .json, .jsonl or .parquet")
    if len(builders) > 1:
        raise ValueError(f"--dataset {path}: mixes file kinds ({', '.join(sorted(builders))}); use one kind per folder")
    return builders.pop(), files


def describe_source(dataset: str | None) -> str:
    return EMBEDDED_CORPUS_NAME if dataset is None else dataset


def open_source(dataset: str | None, split: str = "train", txt_sample_by: str = "paragraph"):
    """A streaming `IterableDataset` of raw records for `--dataset` (None = the embedded corpus).

    A path that exists is read locally (`text`, `json` or `parquet` builder; for .txt files one record is
    a line, a paragraph or the whole file, per `txt_sample_by`); anything else is taken as a Hub dataset id.
    """
    from datasets import load_dataset

    path = embedded_corpus_path() if dataset is None else os.path.expanduser(dataset)
    if os.path.exists(path):
        builder, files = local_files(path)
        extra = {"sample_by": txt_sample_by} if builder == "text" else {}
        # Local files form a single split that `datasets` names "train", whatever --split says.
        return load_dataset(builder, data_files=files, split="train", streaming=True, **extra)
    if dataset.endswith(tuple(LOCAL_BUILDERS)) or dataset.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--dataset {dataset}: no such file or folder")
    try:
        return load_dataset(dataset, split=split, streaming=True)
    except ValueError as err:
        if "split" in str(err).lower():
            raise ValueError(f"--dataset {dataset}: no split {split!r} ({err}); pick one with --split") from err
        raise


def read_records(dataset: str | None, split: str = "train", txt_sample_by: str = "paragraph") -> Iterator[dict]:
    """The raw records `open_source` gives, in order, for a reader that only iterates once (tokenizer training).

    Local .txt and .jsonl files are read here, line by line as `datasets`' own text and json builders read them
    (tests/test_documents_reader.py compares the two): importing `datasets` costs ~0.8 s of start-up, a third of
    a whole tokenizer-training run. Every other source goes through `open_source`.
    """
    path = embedded_corpus_path() if dataset is None else os.path.expanduser(dataset)
    if not os.path.exists(path):
        return iter(open_source(dataset, split, txt_sample_by))
    builder, files = local_files(path)
    if builder == "text":
        return _text_records(files, txt_sample_by)
    if all(f.lower().endswith(".jsonl") for f in files):
        return _jsonl_records(files)
    return iter(open_source(dataset, split, txt_sample_by))


def _text_records(files: list[str], sample_by: str) -> Iterator[dict]:
    for file in files:
        # text mode translates "\r\n" and "\r" to "\n", as datasets' text builder reads
        with open(file, encoding="utf-8") as f:
            if sample_by == "line":
                for line in f:
                    yield {"text": line.rstrip("\n")}
            elif sample_by == "paragraph":  # split at blank lines; empty paragraphs dropped
                rest = ""
                while chunk := f.read(1 << 20):
                    *paragraphs, rest = (rest + chunk + f.readline()).split("\n\n")  # ends on a whole line
                    yield from ({"text": p} for p in paragraphs if p)
                if rest:
                    yield {"text": rest}
            elif sample_by == "document":
                yield {"text": f.read()}
            else:
                raise ValueError(f"txt_sample_by must be one of {', '.join(TXT_SAMPLE_BY)}, got {sample_by!r}")


def _jsonl_records(files: list[str]) -> Iterator[dict]:
    for file in files:
        with open(file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():  # datasets skips blank lines too
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{file}, line {number}: not valid JSON ({err})") from None
                if not isinstance(record, dict):
                    kind = type(record).__name__
                    raise ValueError(f"{file}, line {number}: a JSON object per line expected, got {kind}")
                yield record


# --------------------------------------------------------------------------------------------------------------
# Records -> documents


class NoUsableData(ValueError):
    """A source (or the data of a run) yielded no document to use; the message says what was read and skipped."""


@dataclass
class RowStats:
    """How many rows were read, used, and skipped (by reason), plus the columns seen, for the log."""

    rows: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    columns_seen: set = field(default_factory=set)

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        return f"{self.rows} rows read, {self.used} used, skipped: {reasons}"


def _field(record: dict, name: str, stats: RowStats, required: bool = True) -> str | None:
    """record[name] as a non-blank string, or None after counting why not."""
    value = record.get(name)
    if value is None:
        if required:
            stats.skipped[f"lack column {name!r}"] += 1
        return None
    if not isinstance(value, str):
        stats.skipped[f"have a non-string {name!r}"] += 1
        return None
    if required and not value.strip():
        stats.skipped[f"have an empty {name!r}"] += 1
        return None
    return value


def _instruction_document(instruction: str, response: str, context: str | None) -> tuple[str, int]:
    """(the rendered document, where its response starts)."""
    return render_instruction(instruction, response, context), len(render_instruction(instruction, "", context))


def render_documents(record: dict, fmt: str, text_column: str, stats: RowStats,
                     strip_labels: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """The (document, response_start) pairs a record renders to; [] when the row is skipped (and counted).

    `response_start` is where the response begins in the document (the prompt is document[:response_start]);
    0 for `text` documents, which have no prompt.
    """
    stats.rows += 1
    stats.columns_seen.update(k for k, v in record.items() if v is not None)
    docs: list[tuple[str, int]] = []
    if fmt == "text":
        text = _field(record, text_column, stats)
        if text is not None and strip_labels:
            text = _strip_labels(text, strip_labels)
            if not text.strip():
                stats.skipped["are blank after --strip-labels"] += 1
                text = None
        docs = [(text, 0)] if text is not None else []
    elif fmt == "dolly":
        instruction = _field(record, "instruction", stats)
        response = _field(record, "response", stats) if instruction is not None else None
        context = _field(record, "context", stats, required=False) if response is not None else None
        if response is not None:
            docs = [_instruction_document(instruction, response, context)]
    elif fmt == "alpaca":
        instruction = _field(record, "instruction", stats)
        if instruction is not None and isinstance(record.get("instances"), list):
            for instance in record["instances"]:  # seed-task form: one document per instance
                output = instance.get("output") if isinstance(instance, dict) else None
                if isinstance(output, str) and output.strip():
                    context = instance.get("input") if isinstance(instance.get("input"), str) else None
                    docs.append(_instruction_document(instruction, output, context))
            if not docs:
                stats.skipped["have no usable 'instances'"] += 1
        elif instruction is not None:
            response = _field(record, "output", stats)
            context = _field(record, "input", stats, required=False) if response is not None else None
            if response is not None:
                docs = [_instruction_document(instruction, response, context)]
    else:
        raise ValueError(f"unknown --format {fmt!r}; expected text, dolly or alpaca")
    stats.used += bool(docs)
    return docs


def render_record(record: dict, fmt: str, text_column: str, stats: RowStats,
                  strip_labels: Sequence[str] | None = None) -> list[str]:
    """The documents (usually one) a record renders to; [] when the row is skipped (and counted)."""
    return [doc for doc, _ in render_documents(record, fmt, text_column, stats, strip_labels)]


def rendered_features():
    """The columns every rendered source has, whatever its format: what `interleave_datasets` lines up."""
    from datasets import Features, Value
    from datasets import Sequence as ListOf  # datasets >= 4 turns it into List(...); 3.x has only Sequence

    return Features({"text": ListOf(Value("string")), "response_start": ListOf(Value("int64")),
                     "source": Value("int32")})


def render_source(raw, fmt: str, text_column: str, stats: RowStats, source_index: int = 0,
                  strip_labels: Sequence[str] | None = None, batch_size: int = 256):
    """A streaming dataset of raw records -> one row per record: its documents, where each response starts,
    and which source it came from. Every other column (e.g. synthetic math's `meta`) is dropped."""
    features = rendered_features()

    def render(batch: dict[str, list]) -> dict[str, list]:
        n_rows = len(next(iter(batch.values()))) if batch else 0
        out: dict[str, list] = {"text": [], "response_start": [], "source": [source_index] * n_rows}
        for i in range(n_rows):
            docs = render_documents({k: batch[k][i] for k in batch}, fmt, text_column, stats, strip_labels)
            out["text"].append([doc for doc, _ in docs])
            out["response_start"].append([start for _, start in docs])
        return out

    return raw.map(render, batched=True, batch_size=batch_size, features=features).select_columns(list(features))
