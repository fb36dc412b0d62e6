"""The run's tokenizer: loaded from a folder or Hub repo, or trained on the training documents, once a run.

Whatever its origin, it must follow the project's id layout (`EOS_ID` = <|endoftext|>, `PAD_ID` = <|pad|>,
right after the 256 byte ids, as tokenization_pygpt.SPECIAL_TOKENS orders them), because the data pipeline
separates documents with EOS_ID and the model config fixes bos/eos/pad to these ids.

A run on instruction records (any source in --format dolly or alpaca) stores the instruction template as
the tokenizer's chat template (`set_instruction_chat_template`), so the saved model folder answers
`apply_chat_template` with exactly the text it was trained on; text-only runs leave the tokenizer's chat
template as it is (a model that never saw the template should not advertise one).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

from ..documents import CHAT_TEMPLATE
from ..tokenization_pygpt import ENDOFTEXT, PAD, SPECIAL_TOKENS

N_BYTES = 256  # ids 0..255 are the bytes themselves
EOS_ID = N_BYTES + SPECIAL_TOKENS.index(ENDOFTEXT)  # 256: bos and eos, between documents
PAD_ID = N_BYTES + SPECIAL_TOKENS.index(PAD)  # 257: padding, never a target


def tokenizer_for_run(settings, resume_from: str | None, log: Callable[[str], None], *, texts: Iterable[str] = (),
                      folder=None, instruction: bool = False, show_progress: bool = True):
    """The run's tokenizer, chosen once: the resumed checkpoint's, `--tokenizer`, a pre-tokenized folder's own
    copy, or our BPE trained on `texts` (the training documents). A folder refuses a tokenizer that is not the
    one it was made with (`folder.manifest["tokenizer_sha256"]`); an instruction run stores the chat template."""
    if resume_from or settings.tokenizer or folder is not None:
        name = resume_from or settings.tokenizer or folder.tokenizer_dir
        tokenizer = load_tokenizer(name)
        where = (f"of the checkpoint {resume_from}" if resume_from else f"--tokenizer {settings.tokenizer}"
                 if settings.tokenizer else f"in {name}")
        if folder is not None:
            check_hash(tokenizer, folder, where)
            where += (f" ({len(tokenizer)} tokens, tokenizer.json sha256 {folder.manifest['tokenizer_sha256'][:12]}..., "
                      f"as the pre-tokenized folder expects)")
        log(f"tokenizer: {where}" + ("" if folder is not None else f" ({len(tokenizer)} tokens)"))
        if instruction and (folder is None or tokenizer.chat_template is None):
            note = set_instruction_chat_template(tokenizer)
            log(note or "tokenizer: the instruction template is its chat template (apply_chat_template renders it)")
        return tokenizer
    t0 = time.time()
    tokenizer = train_new_tokenizer(texts, settings.vocab_size, settings.context_length, show_progress)
    log(f"tokenizer: trained a {len(tokenizer)}-token BPE on the first training documents in {time.time() - t0:.1f}s")
    if instruction:
        tokenizer.chat_template = CHAT_TEMPLATE  # (a new tokenizer has none to replace)
        log("tokenizer: the instruction template is its chat template (apply_chat_template renders it)")
    return tokenizer


def check_hash(tokenizer, folder, where: str) -> None:
    """Refuse a tokenizer that is not the one a pre-tokenized folder (pretokenized.PretokenizedFolder) was made
    with, naming both hashes."""
    ours, theirs = tokenizer_sha256(tokenizer), folder.manifest["tokenizer_sha256"]
    if ours != theirs:
        raise ValueError(
            f"the tokenizer {where} (tokenizer.json sha256 {ours}) is not the one the pre-tokenized folder "
            f"{folder.path} was made with (sha256 {theirs}): its token ids would mean other tokens. Leave --tokenizer "
            f"out to use the folder's own copy ({folder.tokenizer_dir}), or pre-tokenize again with this tokenizer")


def check_layout(tokenizer, where: str):
    if tokenizer.eos_token_id != EOS_ID or tokenizer.pad_token_id != PAD_ID:
        raise ValueError(
            f"tokenizer {where} has eos id {tokenizer.eos_token_id} and pad id {tokenizer.pad_token_id}; "
            f"PyGPT needs {ENDOFTEXT} = {EOS_ID} and {PAD} = {PAD_ID} (train one: leave --tokenizer out)"
        )
    return tokenizer


def load_tokenizer(name_or_path: str):
    """A saved tokenizer (folder or Hub repo) through `AutoTokenizer`, checked against the id layout."""
    from transformers import AutoTokenizer

    return check_layout(AutoTokenizer.from_pretrained(name_or_path), repr(name_or_path))


def train_new_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int, show_progress: bool = True):
    """Our byte-level BPE (pygpt_hf.bpe), trained on `texts`, as a ready PyGPTTokenizerFast."""
    from ..bpe import train_tokenizer

    return check_layout(
        train_tokenizer(texts, vocab_size=vocab_size, model_max_length=model_max_length, show_progress=show_progress),
        "trained here",
    )


def set_instruction_chat_template(tokenizer) -> str | None:
    """Make `CHAT_TEMPLATE` the tokenizer's chat template; returns a note when it replaced another one."""
    previous = tokenizer.chat_template
    tokenizer.chat_template = CHAT_TEMPLATE
    if previous is not None and previous != CHAT_TEMPLATE:
        return "note: the tokenizer's chat template was replaced by the instruction template this run trains on"
    return None


def tokenizer_json(tokenizer) -> str:
    """The text of tokenizer.json as `save_pretrained` writes it, without the runtime padding/truncation
    settings (transformers leaves those in the backend after a call with padding=/truncation=)."""
    from tokenizers import Tokenizer

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer without tokenizer.json; load the fast one "
                         "(AutoTokenizer's default)")
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend.to_str(pretty=True)


def tokenizer_sha256(tokenizer) -> str:
    """sha256 of tokenizer.json (`tokenizer_json`): it covers everything that decides the ids (vocabulary,
    merges, pre-tokenizer, special tokens) and nothing that does not (the chat template lives in
    tokenizer_config.json / chat_template.jinja). `sha256sum tokenizer.json` of a saved copy gives it too."""
    return hashlib.sha256(tokenizer_json(tokenizer).encode("utf-8")).hexdigest()
