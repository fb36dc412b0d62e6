"""PyGPTTokenizer: byte-level BPE with GPT-4's split pattern, in pure Python (a `PreTrainedTokenizer`).

Files: `vocab.json` ({token string: id}) and `merges.txt` (one "left right" merge a line, in rank order)
in GPT-2's byte-level format, so they are readable, diffable and safe to share (no pickle).

This file travels next to checkpoints as remote code: it imports only installed packages.
"""

from __future__ import annotations

import json
import os
from itertools import pairwise

import regex
from transformers import AddedToken, PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}

# GPT-4's (cl100k) pre-split: contractions, words with one leading non-letter (usually a space), numbers of
# 1-3 digits, punctuation runs, newlines, other whitespace. BPE merges never cross these boundaries.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
# Fixed ids 256 and 257 (after the 256 bytes), whatever the vocabulary size.
ENDOFTEXT, PAD = "<|endoftext|>", "<|pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, PAD)

NO_MERGE = float("inf")  # the rank of a pair that merges.txt does not list
_CACHE_LIMIT = 100_000  # chunks remembered by `bpe`; cleared when full so a long stream cannot grow it forever


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, so a token is a plain (JSON-safe) string.

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, ...) to chr(256 + n), so the
    space byte 32 becomes "Ġ" and newline 10 becomes "Ċ".
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def _special(token: str | AddedToken | None) -> AddedToken | None:
    """Special tokens match only as typed (never normalized, no stripping), like GPT-2's."""
    if isinstance(token, str):
        return AddedToken(token, lstrip=False, rstrip=False, special=True, normalized=False)
    return token


def write_vocab_files(
    save_directory: str, filename_prefix: str | None, vocab: dict[str, int], merges: list[tuple[str, str]]
) -> tuple[str, str]:
    """Write vocab.json (ordered by id, one token a line) and merges.txt (header + one merge a line)."""
    prefix = filename_prefix + "-" if filename_prefix else ""
    vocab_file = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["vocab_file"])
    merges_file = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["merges_file"])
    with open(vocab_file, "w", encoding="utf-8") as f:
        # indented as transformers writes every JSON file; ordered by id (bytes, specials, merges as learned)
        # rather than GPT-2's sorted keys, so a reader sees the layout
        by_id = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        f.write(json.dumps(by_id, indent=2, ensure_ascii=False) + "\n")
    with open(merges_file, "w", encoding="utf-8") as f:
        # The header line and the trailing newline matter: GPT-2-style readers drop the first and last line.
        f.write("#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges))
    return vocab_file, merges_file


def read_merges(merges_file: str) -> list[tuple[str, str]]:
    """Merges in rank order from a merges.txt (skips the `#version` header and blank lines)."""
    with open(merges_file, encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]


def check_json_files(resolved_files: dict) -> None:
    """Raise naming the file when a tokenizer JSON file (config, special tokens, vocab, tokenizer.json) is
    truncated or corrupted: transformers' own errors name none, and skip some files (a broken
    special_tokens_map.json or an unused vocab.json loads silently)."""
    for path in resolved_files.values():
        if isinstance(path, str) and path.endswith(".json") and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    json.load(f)
            except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
                raise OSError(f"{path} is truncated or corrupted (not valid JSON: {err}); "
                              f"re-download or re-save the tokenizer") from err


def _encoding_options() -> set[str]:
    """The options transformers' tokenizers name (transformers 5.x hands some of them down to tokenize)."""
    import inspect

    from transformers import PreTrainedTokenizerBase

    names = set()
    for method in ("__call__", "encode_plus", "encode"):
        if hasattr(PreTrainedTokenizerBase, method):
            names |= set(inspect.signature(getattr(PreTrainedTokenizerBase, method)).parameters)
    return names - {"self", "kwargs"}


class LongDocuments:
    """Mixin: no "Token indices sequence length is longer than the specified maximum" warning.

    Long inputs are expected (training and evaluation documents, packed or windowed later) and the model
    refuses more than `n_positions` tokens itself, with a ValueError naming the limit, so the warning only
    added noise. `truncation=True` (at `model_max_length`) and `max_length=` cut exactly as before.
    """

    def _eventual_warn_about_too_long_sequence(self, ids, max_length, verbose):
        return None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        folder = os.path.join(str(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        if os.path.isdir(folder):  # read before _from_pretrained sees the files (AutoTokenizer reads it itself)
            check_json_files({"tokenizer_config_file": os.path.join(folder, "tokenizer_config.json")})
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _from_pretrained(cls, resolved_vocab_files, *args, **kwargs):
        check_json_files(resolved_vocab_files)
        return super()._from_pretrained(resolved_vocab_files, *args, **kwargs)


class PyGPTTokenizer(LongDocuments, PreTrainedTokenizer):
    """PyGPT's tokenizer: byte-level BPE over GPT-4's split pattern, pure Python, with a chunk cache.

    Id layout (the same at every vocabulary size): 0..255 the bytes (id == byte value), 256 `<|endoftext|>`
    (bos and eos), 257 `<|pad|>`, 258.. the merges in the order they were learned. No unknown token: every
    string is some sequence of bytes. `decode(encode(s)) == s` for any string.

    Typed control text stays text. A document may contain the characters `<|endoftext|>`; when encoding
    *training data* pass `split_special_tokens=True`, so they encode as ordinary bytes and merges and only
    the separators your pipeline inserts (by id) are control tokens:

        ids = tok(document, split_special_tokens=True)["input_ids"] + [tok.eos_token_id]

    Args:
        vocab_file: path to vocab.json. merges_file: path to merges.txt.
        errors: how to decode byte sequences that are not valid UTF-8 (see `bytes.decode`).
        add_prefix_space: put a space before the text (before each piece between special tokens), so the
            first word is encoded like any other. Same behaviour in `PyGPTTokenizerFast`.
        model_max_length: longest input the model takes (the model's `n_positions`).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        merges_file: str,
        errors: str = "replace",
        unk_token: str | AddedToken | None = None,
        bos_token: str | AddedToken = ENDOFTEXT,
        eos_token: str | AddedToken = ENDOFTEXT,
        pad_token: str | AddedToken = PAD,
        add_prefix_space: bool = False,
        model_max_length: int = 512,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ):
        with open(vocab_file, encoding="utf-8") as f:
            self.encoder: dict[str, int] = json.load(f)
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(read_merges(merges_file))}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: b for b, char in self.byte_encoder.items()}
        self.errors = errors
        self.add_prefix_space = add_prefix_space
        self.pat = regex.compile(GPT4_SPLIT_PATTERN)
        self.cache: dict[str, list[str]] = {}
        super().__init__(
            errors=errors,
            unk_token=_special(unk_token),
            bos_token=_special(bos_token),
            eos_token=_special(eos_token),
            pad_token=_special(pad_token),
            add_prefix_space=add_prefix_space,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder, **self.added_tokens_encoder)

    def bpe(self, chunk: str) -> list[str]:
        """Tokens of one pre-split chunk: start from its bytes, merge the best-ranked pair until none is known."""
        tokens = self.cache.get(chunk)
        if tokens is not None:
            return tokens
        ranks = self.bpe_ranks
        tokens = [self.byte_encoder[b] for b in chunk.encode("utf-8")]
        while len(tokens) > 1:
            pair_ranks = [ranks.get(pair, NO_MERGE) for pair in pairwise(tokens)]
            best = min(pair_ranks)
            if best == NO_MERGE:
                break
            i = pair_ranks.index(best)  # the first (left, right); merge it and every later one, left to right
            left, right = tokens[i], tokens[i + 1]
            merged = tokens[:i]
            while i < len(tokens):
                if i + 1 < len(tokens) and tokens[i] == left and tokens[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(tokens[i])
                    i += 1
            tokens = merged
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        self.cache[chunk] = tokens
        return tokens

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        """Unknown keywords are an error (transformers' slow tokenizers only log "not recognized" and go on),
        as they are for the fast tokenizer."""
        unknown = sorted(set(kwargs) - _encoding_options())
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}")
        return text, kwargs

    def _tokenize(self, text: str) -> list[str]:
        """Called on each piece of text between special tokens (or on all of it with split_special_tokens)."""
        if self.add_prefix_space:
            text = " " + text
        tokens, cache = [], self.cache
        for chunk in self.pat.findall(text):
            tokens.extend(cache.get(chunk) or self.bpe(chunk))  # most chunks are cached: skip the call
        return tokens

    def _convert_token_to_id(self, token: str) -> int | None:
        return self.encoder.get(token)  # None for an unknown token, like the fast tokenizer (there is no unk)

    def _convert_id_to_token(self, index: int) -> str | None:
        return self.decoder.get(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = bytes(self.byte_decoder[char] for char in "".join(tokens))
        return data.decode("utf-8", errors=self.errors)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, str]:
        if not os.path.isdir(save_directory):
            raise ValueError(f"save_vocabulary: {save_directory!r} is not a directory")
        merges = [pair for pair, _ in sorted(self.bpe_ranks.items(), key=lambda kv: kv[1])]
        return write_vocab_files(save_directory, filename_prefix, self.encoder, merges)


PyGPTTokenizer.register_for_auto_class("AutoTokenizer")  # saved folders carry this file as remote code

__all__ = ["PyGPTTokenizer"]
