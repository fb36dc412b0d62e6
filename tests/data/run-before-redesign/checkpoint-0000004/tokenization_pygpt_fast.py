"""PyGPTTokenizerFast: the same tokenizer as `PyGPTTokenizer`, run by the Rust `tokenizers` library.

The pipeline reproduces the slow tokenizer exactly (same ids on any text):
    normalizer      Prepend(" ") only with add_prefix_space
    pre-tokenizer   Split(GPT-4 pattern, isolated) -> ByteLevel(no prefix space, no GPT-2 regex): bytes -> chars
    model           BPE(vocab.json, merges.txt)
    decoder         ByteLevel: chars -> bytes -> UTF-8

This file travels next to checkpoints as remote code: it imports only installed packages and its sibling.
"""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AddedToken, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import SLOW_TO_FAST_CONVERTERS, Converter

from .tokenization_pygpt import (
    ENDOFTEXT,
    GPT4_SPLIT_PATTERN,
    PAD,
    PyGPTTokenizer,
    _special,
    bytes_to_unicode,
    read_merges,
    write_vocab_files,
)

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt", "tokenizer_file": "tokenizer.json"}


def build_backend_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], add_prefix_space: bool = False
) -> Tokenizer:
    """A `tokenizers.Tokenizer` with our pipeline around a byte-level BPE model of `vocab` and `merges`."""
    bpe = models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="")
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Prepend(" ") if add_prefix_space else None
    # ByteLevel's own add_prefix_space would prefix *every* piece the Split made; hence the normalizer above.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


class PyGPTConverter(Converter):
    """Slow -> fast: rebuilds *our* pipeline (GPT-2's converter would silently switch to GPT-2's regex)."""

    def converted(self) -> Tokenizer:
        slow = self.original_tokenizer
        merges = [pair for pair, _ in sorted(slow.bpe_ranks.items(), key=lambda kv: kv[1])]
        return build_backend_tokenizer(slow.encoder, merges, slow.add_prefix_space)


SLOW_TO_FAST_CONVERTERS["PyGPTTokenizer"] = PyGPTConverter


class PyGPTTokenizerFast(PreTrainedTokenizerFast):
    """PyGPT's tokenizer on `tokenizers` (Rust): same ids, special tokens and options as `PyGPTTokenizer`.

    Id layout: 0..255 bytes, 256 `<|endoftext|>` (bos/eos), 257 `<|pad|>`, 258.. merges in learned order.

    Typed control text stays text: encode training data with `split_special_tokens=True`, so a document
    containing the characters `<|endoftext|>` gets ordinary byte/merge ids, and add the separator by id:

        ids = tok(document, split_special_tokens=True)["input_ids"] + [tok.eos_token_id]

    Loads from tokenizer.json, or from vocab.json + merges.txt through the slow class and `PyGPTConverter`.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class = PyGPTTokenizer

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        tokenizer_file: str | None = None,
        unk_token: str | AddedToken | None = None,
        bos_token: str | AddedToken = ENDOFTEXT,
        eos_token: str | AddedToken = ENDOFTEXT,
        pad_token: str | AddedToken = PAD,
        add_prefix_space: bool = False,
        model_max_length: int = 512,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ):
        super().__init__(
            vocab_file,
            merges_file,
            tokenizer_file=tokenizer_file,
            unk_token=_special(unk_token),
            bos_token=_special(bos_token),
            eos_token=_special(eos_token),
            pad_token=_special(pad_token),
            add_prefix_space=add_prefix_space,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )
        # The argument wins over what a tokenizer.json says, so slow and fast always agree.
        self.backend_tokenizer.normalizer = normalizers.Prepend(" ") if add_prefix_space else None

    @classmethod
    def convert_to_native_format(cls, **kwargs):
        """transformers 5.x only (4.57 never calls it): build the backend from our files as saved.

        5.x's default keeps only tokenizer.json's vocabulary (and no merges, no split) for a class with its own
        `__init__`; we hand it the whole tokenizer.json, or our pipeline rebuilt from vocab.json + merges.txt.
        """
        if kwargs.get("tokenizer_file") is None and kwargs.get("vocab_file") and kwargs.get("merges_file"):
            with open(kwargs["vocab_file"], encoding="utf-8") as f:
                vocab = json.load(f)
            merges = read_merges(kwargs["merges_file"])
            kwargs["tokenizer_object"] = build_backend_tokenizer(vocab, merges, kwargs.get("add_prefix_space", False))
        return kwargs

    def _vocab_and_merges(self) -> tuple[dict[str, int], list[tuple[str, str]]]:
        model = json.loads(self.backend_tokenizer.to_str())["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return model["vocab"], merges

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, str]:
        """vocab.json + merges.txt, byte for byte what the slow tokenizer writes (so either class can load)."""
        vocab, merges = self._vocab_and_merges()
        return write_vocab_files(save_directory, filename_prefix, vocab, merges)

    def train_new_from_iterator(self, text_iterator, vocab_size: int, length: int | None = None, **kwargs):
        """HF's trainer (Rust `BpeTrainer`, our pipeline), renumbered to our id layout.

        `BpeTrainer` puts the special tokens first; PyGPT keeps bytes at 0..255 and the specials at 256, 257,
        so the result works with any PyGPT model config. (`pygpt_hf.bpe.train_tokenizer` is our own trainer.)
        """
        trained = super().train_new_from_iterator(text_iterator, vocab_size, length=length, **kwargs)
        vocab, merges = trained._vocab_and_merges()
        byte_chars = list(bytes_to_unicode().values())  # in byte order
        specials = [t for t in trained.all_special_tokens if t in vocab]
        ordered = byte_chars + specials + sorted(set(vocab) - set(byte_chars) - set(specials), key=vocab.get)
        new_vocab = {token: i for i, token in enumerate(ordered)}
        backend = build_backend_tokenizer(new_vocab, merges, self.add_prefix_space)
        init_kwargs = {k: v for k, v in trained.init_kwargs.items() if k not in ("tokenizer_file", "name_or_path")}
        init_kwargs.pop("added_tokens_decoder", None)
        return self.__class__(tokenizer_object=backend, **init_kwargs)


# save_pretrained then writes `auto_map` into tokenizer_config.json and copies this file and its sibling next
# to the vocabulary, so the folder loads without pygpt_hf: AutoTokenizer.from_pretrained(..., trust_remote_code=True)
PyGPTTokenizerFast.register_for_auto_class("AutoTokenizer")

__all__ = ["PyGPTConverter", "PyGPTTokenizerFast", "build_backend_tokenizer"]
