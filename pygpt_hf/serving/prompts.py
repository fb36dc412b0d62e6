"""Requests -> token ids, and generated tokens -> the text a client sees.

Prompt ids are made exactly as training makes documents and `scripts/generate.py` makes prompts:
`[<|endoftext|>]` + the text's ids, with `split_special_tokens=True` (a typed "<|endoftext|>" stays text).
A chat is rendered by the tokenizer's chat template; a template joins earlier turns the way training joins
documents, with the eos token between them, and that separator must become the eos *id*, not the typed
text. So the template is rendered with a unique marker as `eos_token`, the text is split at the marker,
each piece is tokenized as text, and the pieces are joined with the eos id.
"""

from __future__ import annotations

import secrets


class PromptError(ValueError):
    """A request that cannot become a prompt (the message says why); `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def encode_text(tokenizer, text: str) -> list[int]:
    # verbose=False: a prompt longer than the context is refused with its numbers, not warned about in the log
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]


def with_bos(tokenizer, ids: list[int]) -> list[int]:
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None and ids[:1] != [bos] else []) + list(ids)


def completion_prompt_ids(tokenizer, prompt: str | list[int], vocab_size: int | None = None) -> list[int]:
    """A completion prompt: text starts like a training document (after bos); token ids are taken as given
    (lm-evaluation-harness sends its own tokenization) and checked against `vocab_size` (default
    `len(tokenizer)`, which a server computes once: a fast tokenizer rebuilds its vocabulary for it)."""
    if isinstance(prompt, str):
        return with_bos(tokenizer, encode_text(tokenizer, prompt))
    vocab = len(tokenizer) if vocab_size is None else vocab_size
    bad = [i for i in prompt if not 0 <= i < vocab]
    if bad:
        raise PromptError(f"prompt token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", "prompt")
    if not prompt:
        raise PromptError("prompt is empty: give some text or at least one token id", "prompt")
    return list(prompt)


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The ids of a conversation rendered by the tokenizer's chat template, open for the assistant's answer."""
    from jinja2 import TemplateError

    if tokenizer.chat_template is None:
        raise PromptError("this model's tokenizer has no chat template (it was trained on plain text): use "
                          "/v1/completions with a prompt instead", "messages")
    marker = f"\x00eos-{secrets.token_hex(8)}\x00"
    if any(marker in m["content"] for m in messages):  # practically impossible; never split inside content
        raise PromptError("a message contains the server's internal separator; rephrase it", "messages")
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, eos_token=marker)
    except TemplateError as err:
        raise PromptError(f"the model's chat template cannot render this conversation: {err}", "messages") from err
    ids: list[int] = []
    for i, piece in enumerate(text.split(marker)):
        if i:
            ids.append(tokenizer.eos_token_id)
        ids += encode_text(tokenizer, piece)
    return with_bos(tokenizer, ids)


def token_text(tokenizer, token_id: int) -> str:
    """How one token is shown in `logprobs`: its text, or OpenAI's "bytes:\\xNN" form for a token that is only
    part of a UTF-8 character."""
    text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if "\ufffd" not in text:
        return text
    raw = tokenizer.convert_ids_to_tokens(token_id)
    byte_decoder = getattr(tokenizer, "byte_decoder", None) or _byte_decoder()
    try:
        data = bytes(byte_decoder[c] for c in raw)
    except KeyError:
        return text
    return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def _byte_decoder() -> dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {v: k for k, v in bytes_to_unicode().items()}


class StopMatcher:
    """Finds the first stop string in growing text, and says how much text is safe to show while streaming
    (text that may be the start of a stop string is held back until it is known not to be one)."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops or [] if s]

    def find(self, text: str, since: int = 0) -> int | None:
        """Where the first stop string starts in text (searching from a little before `since`), or None."""
        hits = [i for s in self.stops if (i := text.find(s, max(0, since - len(s) + 1))) >= 0]
        return min(hits) if hits else None

    def safe_length(self, text: str) -> int:
        """How much of text can be shown: all but a tail that is a prefix of some stop string."""
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:n]):
                    hold = n
                    break
        return len(text) - hold
