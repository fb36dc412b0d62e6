"""Data stage 2: documents -> token ids (+ loss masks), lazily, in batched `map`.

    document --tokenize (split_special_tokens=True)--> ids + [<|endoftext|>]

Response-only loss (`--loss-on response`): every token carries a loss-mask bit, 1 where the token is a
target the loss counts. For an instruction document that is the response and its <|endoftext|>, never the
prompt ("### Instruction: ... ### Response:\n"); for a text document, every token. Rows tokenized without a
mask count every token: packing (packing.py) gives them a mask of ones, so the rest of the pipeline always
carries a mask, and an all-ones mask is the "all tokens" case.
"""

from __future__ import annotations

from collections.abc import Callable

from .tokenizer import EOS_ID


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def make_document_tokenizer(tokenizer, with_mask: bool = False) -> Callable[[dict], dict]:
    """The batched `map` function over rendered rows (documents.render_source): a batch of records ->
    {"input_ids", "num_bytes"} per record, + {"loss_mask", "loss_bytes"} with `with_mask` (--loss-on
    response). Rows without a mask count every token (packing gives them a mask of ones).

    One output row per input row (a skipped record gets no ids). `split_special_tokens=True`: "<|endoftext|>"
    typed inside a document stays text (its bytes), it never becomes the control token; only the id appended
    here (EOS_ID) ends a document.

    The loss mask of an instruction document: the prompt (document[:response_start]) is tokenized on its
    own, and the tokens the document shares with it from the start are the prompt's (mask 0); the rest,
    the tokens the model has to produce after seeing the prompt ids at generation time, and <|endoftext|>
    get 1. (A token that straddles the boundary, prompt text merged with the response's first characters,
    is the response's: the model must produce it.)
    """
    eos = tokenizer.eos_token_id
    if eos != EOS_ID:
        raise ValueError(f"the tokenizer's eos id is {eos}, expected {EOS_ID} (<|endoftext|>)")

    def encode(texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        flat = [doc for docs in batch["text"] for doc in docs]
        starts = [start for row in batch["response_start"] for start in row]
        flat_ids = encode(flat)
        out: dict[str, list] = {"input_ids": [], "num_bytes": []}
        if with_mask:
            prompts = encode([doc[:start] for doc, start in zip(flat, starts) if start > 0])
            prompt_ids = iter(prompts)
            masks, doc_loss_bytes = [], []  # per document
            for doc, start, ids in zip(flat, starts, flat_ids):
                n_prompt = _common_prefix(next(prompt_ids), ids) if start > 0 else 0
                masks.append([0] * n_prompt + [1] * (len(ids) - n_prompt + 1))  # + 1: the <|endoftext|>
                doc_loss_bytes.append(len(doc[start:].encode("utf-8")))
            out["loss_mask"], out["loss_bytes"] = [], []
        k = 0
        for docs in batch["text"]:
            ids: list[int] = []
            mask: list[int] = []
            row_loss_bytes = 0
            for _ in docs:
                ids += flat_ids[k] + [eos]
                if with_mask:
                    mask += masks[k]
                    row_loss_bytes += doc_loss_bytes[k]
                k += 1
            out["input_ids"].append(ids)
            out["num_bytes"].append(sum(len(d.encode("utf-8")) for d in docs))
            if with_mask:
                out["loss_mask"].append(mask)
                out["loss_bytes"].append(row_loss_bytes)
        return out

    return tokenize


def tokenize_documents(rendered, tokenizer, with_mask: bool = False, batch_size: int = 256):
    """Rendered rows (documents.render_source) -> token ids (and loss masks), lazily, in batched `map`."""
    return rendered.map(make_document_tokenizer(tokenizer, with_mask), batched=True, batch_size=batch_size,
                        remove_columns=["text", "response_start", "source"])


def tokenize(eval_documents, train_documents: Callable[[int], object], tokenizer, with_mask: bool):
    """Stage 2 of a run: (the held-out rows, a function giving a data shard's training rows anew for each epoch)."""
    return (tokenize_documents(eval_documents, tokenizer, with_mask),
            lambda shard: tokenize_documents(train_documents(shard), tokenizer, with_mask))
