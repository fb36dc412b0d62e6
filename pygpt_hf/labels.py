"""Strip record labels ("### Instruction:", "Response:", ...) from plain-text dumps of instruction data.

Text dumps of instruction datasets carry section labels that a model trained on raw text would learn to
print. A word is a label only where it is used as one: at the start of a line (after optional indentation
and markdown: `#`-headings, `>` quotes, `**bold**` or `__bold__`), followed by a colon. Elsewhere the
word is prose and stays: "The output: was fine", "Please give input to ...", "Outputs: 3", "Input/Output:".

    >>> strip_labels("### Instruction:\\nName a colour.\\n\\n### Response:\\nBlue.")
    'Name a colour.\\n\\nBlue.'
    >>> strip_labels("Input: 2 and 3\\nThe output: was fine")
    '2 and 3\\nThe output: was fine'

A label alone on its line disappears with its line break; a label followed by text on the same line
leaves that text. Matching ignores case by default ("RESPONSE:", "response:"), because dumps spell labels
every way; pass `ignore_case=False` to strip only the spellings given.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

DEFAULT_LABELS = ("Instruction", "Input", "Output", "Response", "Context")
DEFAULT_LABELS_FLAG = ",".join(DEFAULT_LABELS)  # what `--strip-labels` alone means, in scripts/train*.py


def parse_labels(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """`--strip-labels` as a tuple of labels ("Instruction,Input" -> ("Instruction", "Input")); None = off."""
    if value is None:
        return None
    labels = tuple(part.strip() for part in (value.split(",") if isinstance(value, str) else value))
    if not labels or not all(labels):
        raise ValueError(f"--strip-labels takes a comma-separated list of labels, e.g. Instruction,Response; "
                         f"got {value!r}")
    return labels


@functools.lru_cache(maxsize=32)
def label_pattern(labels: tuple[str, ...], ignore_case: bool = True) -> re.Pattern:
    """The regex that finds a label at the start of a line, with its markdown, colon and trailing spaces."""
    if not labels or any(not isinstance(label, str) or not label.strip() for label in labels):
        raise ValueError(f"labels must be non-empty strings, got {labels!r}")
    words = "|".join(re.escape(label.strip()) for label in sorted(labels, key=len, reverse=True))
    pattern = (
        r"^[ \t]*"                     # indentation
        r"(?:#{1,6}[ \t]*|>[ \t]*)?"   # a markdown heading (### ) or quote (> )
        r"(?:\*\*|__)?"                # opening bold
        rf"(?:{words})"                # the label itself
        r"(?:\*\*|__)?[ \t]*:"         # closing bold before the colon (**Input**:), then the colon
        r"(?:\*\*|__)?[ \t]*"          # or closing bold after it (**Input:**), then spaces
        r"(?:\r?\n)?"                  # a label alone on its line takes its line break with it
    )
    return re.compile(pattern, re.MULTILINE | (re.IGNORECASE if ignore_case else 0))


def strip_labels(text: str, labels: Iterable[str] = DEFAULT_LABELS, ignore_case: bool = True) -> str:
    """`text` without the given labels where they are labels (line start, optional markdown, colon)."""
    return label_pattern(tuple(labels), ignore_case).sub("", text)
