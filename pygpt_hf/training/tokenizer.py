"""The run's tokenizer: loaded from a folder or Hub repo, or trained on the training documents.

Whatever its origin, it must follow the project's id layout (256 = <|endoftext|>, 257 = <|pad|>), because
the data pipeline separates documents with id 256 and the model config fixes bos/eos/pad to 256/257.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .data import EOS_ID, PAD_ID


def check_layout(tokenizer, where: str):
    if tokenizer.eos_token_id != EOS_ID or tokenizer.pad_token_id != PAD_ID:
        raise ValueError(
            f"tokenizer {where} has eos id {tokenizer.eos_token_id} and pad id {tokenizer.pad_token_id}; "
            f"PyGPT needs <|endoftext|> = {EOS_ID} and <|pad|> = {PAD_ID} (train one: leave --tokenizer out)"
        )
    return tokenizer


def load_tokenizer(name_or_path: str):
    """A saved tokenizer (folder or Hub repo) through `AutoTokenizer`, checked against the id layout."""
    from transformers import AutoTokenizer

    return check_layout(AutoTokenizer.from_pretrained(name_or_path), repr(name_or_path))


def limited(texts: Iterable[str], limit: int) -> Iterator[str]:
    for i, text in enumerate(texts):
        if i >= limit:
            return
        yield text


def train_new_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int, show_progress: bool = True):
    """Our byte-level BPE (pygpt_hf.bpe), trained on `texts`, as a ready PyGPTTokenizerFast."""
    from ..bpe import train_tokenizer

    return check_layout(
        train_tokenizer(texts, vocab_size=vocab_size, model_max_length=model_max_length, show_progress=show_progress),
        "trained here",
    )
