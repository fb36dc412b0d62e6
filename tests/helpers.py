"""Helpers the tests share (kept out of the package: no user calls them)."""

import re

from pygpt_hf.documents import RowStats, render_source
from pygpt_hf.training.encoding import tokenize_documents


def tokenized(dataset, tokenizer, fmt: str, text_column: str, stats: RowStats, batch_size: int = 256,
              strip_labels=None, with_mask: bool = False):
    """`dataset`'s raw records, rendered per `fmt` and tokenized (lazily, in batched `map`), as one source of a
    run is."""
    rendered = render_source(dataset, fmt, text_column, stats, strip_labels=strip_labels, batch_size=batch_size)
    return tokenize_documents(rendered, tokenizer, with_mask, batch_size)


def usage_snippets(card_text: str) -> dict[str, str]:
    """The card's Python usage snippets by framework ("flax", "pytorch"), so tests can run them as written."""
    snippets = {}
    for heading, code in re.findall(r"^### (Flax|PyTorch)\b.*?^```python\n(.*?)^```", card_text, re.MULTILINE | re.DOTALL):
        snippets[heading.lower()] = code
    return snippets
