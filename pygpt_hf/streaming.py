"""Generate text token by token and hand each piece over as soon as it exists (for a terminal or a UI).

Flax `generate()` runs its whole loop inside `lax.while_loop` and returns only at the end, so it cannot
stream. Here the loop is in Python around two jitted calls that use the model's own KV cache:

    prefill: cache = model.init_cache(1, L)            # L = prompt + new tokens: (1, L, H, D) per layer
             logits, cache = model(prompt (1, T), positions 0..T-1, cache)      # the whole prompt at once
    step:    logits, cache = model(token (1, 1), position t, cache)             # one call per new token
    next token = sample_token(logits[:, -1])           # greedy, or temperature / top-k / top-p sampling

Same cache length, mask and positions as `model.generate`, so greedy decoding gives its exact tokens.

Tokens become text through `IncrementalDetokenizer`: one byte-level token may hold half of a multi-byte
UTF-8 character (é, 日, 🙂), so text is released only once it decodes to complete characters.

The PyTorch twin streams through transformers' own `TextStreamer` (`stream_torch`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp


def check_fits(prompt_len: int, max_new_tokens: int, n_positions: int) -> None:
    """Refuse a generation longer than the model's context, before anything is computed (Flax's cache would
    fail deep inside with a broadcasting error)."""
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if prompt_len + max_new_tokens > n_positions:
        raise ValueError(
            f"the prompt ({prompt_len} tokens) plus --max-new-tokens ({max_new_tokens}) is {prompt_len + max_new_tokens} "
            f"tokens, more than the model's context (n_positions = {n_positions}); ask for at most "
            f"{max(n_positions - prompt_len, 0)} new tokens or use a shorter prompt"
        )


def context_length(config) -> int:
    """The most tokens the model can attend to (PyGPT and GPT-2 call it n_positions)."""
    for name in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError(f"the {config.model_type!r} config names no context length (n_positions)")


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids for `text`, started like a training document: after <|endoftext|> (bos).

    Control strings typed in the text stay text (`split_special_tokens=True`), as in training.
    """
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids


# ----------------------------------------------------------------------------------------------------------
# Sampling


def validate_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0 = off), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1] (1 = off), got {top_p}")


def sample_token(logits: jnp.ndarray, key: jax.Array, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> jnp.ndarray:
    """Next token ids (B,) from logits (B, V). temperature 0 is greedy (argmax, like `generate`).

    top_k keeps the k most likely tokens; top_p keeps the smallest set of most likely tokens whose
    probabilities reach p (nucleus sampling). Both apply after the temperature, through the very logits
    warpers Flax `generate` uses, so streaming samples as `generate(do_sample=True)` does.
    """
    from transformers.generation.flax_logits_process import (
        FlaxTemperatureLogitsWarper,
        FlaxTopKLogitsWarper,
        FlaxTopPLogitsWarper,
    )

    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    warpers = [FlaxTemperatureLogitsWarper(temperature)]
    if top_k and top_k < logits.shape[-1]:
        warpers.append(FlaxTopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(FlaxTopPLogitsWarper(top_p))
    scores = logits.astype(jnp.float32)
    for warp in warpers:  # the warpers ignore input_ids and cur_len
        scores = warp(None, scores, 0)
    return jax.random.categorical(key, scores, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------------------
# The Flax decode loop


class FlaxTokenStreamer:
    """Yields a Flax causal LM's new tokens one at a time, with its KV cache and one jitted step per token.

    Build it once and call `stream` for many prompts: the jitted functions are kept, and recompile only for
    a new (prompt length, cache length) shape.
    """

    def __init__(self, model, params=None, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None):
        validate_sampling(temperature, top_k, top_p)
        self.model = model
        self.params = model.params if params is None else params
        self.sampling = {"temperature": temperature, "top_k": top_k or None, "top_p": top_p}
        self._prefill = jax.jit(self._prefill_fn)
        self._step = jax.jit(self._step_fn, donate_argnums=(3,))  # the old cache is not needed after a step

    def _prefill_fn(self, params, prompt, mask, key):
        B, T = prompt.shape
        # The empty cache is made inside the jitted function: outside, `init_cache` runs the model's init
        # op by op (seconds for every new length); here it compiles with the prompt pass into one program.
        cache = self.model.init_cache(B, mask.shape[1])
        positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        out = self.model(prompt, attention_mask=mask, position_ids=positions, params=params, past_key_values=cache)
        next_token = sample_token(out.logits[:, -1], jax.random.fold_in(key, 0), **self.sampling)  # (B,)
        return next_token, out.past_key_values

    def _step_fn(self, params, token, position, cache, mask, key):
        B = token.shape[0]
        positions = jnp.full((B, 1), position, dtype=jnp.int32)
        out = self.model(token[:, None], attention_mask=mask, position_ids=positions, params=params,
                         past_key_values=cache)
        next_token = sample_token(out.logits[:, -1], jax.random.fold_in(key, position), **self.sampling)
        return next_token, out.past_key_values

    def stream(self, prompt_ids: list[int], max_new_tokens: int, seed: int = 0,
               eos_token_id: int | None = None) -> Iterator[int]:
        """The new token ids, each as soon as it is computed; stops after `eos_token_id` (which is yielded)
        or after `max_new_tokens`. The same prompt, settings and seed give the same tokens."""
        if len(prompt_ids) == 0:
            raise ValueError("the prompt is empty: give at least one token (e.g. the bos token)")
        T = len(prompt_ids)
        check_fits(T, max_new_tokens, context_length(self.model.config))
        return self._tokens(prompt_ids, max_new_tokens, seed, eos_token_id)  # bad requests fail above, at the call

    def _tokens(self, prompt_ids: list[int], max_new_tokens: int, seed: int, eos_token_id: int | None) -> Iterator[int]:
        T = len(prompt_ids)
        mask = jnp.ones((1, T + max_new_tokens), dtype=jnp.int32)  # every cache slot will hold a real token
        key = jax.random.PRNGKey(seed)
        token, cache = self._prefill(self.params, jnp.asarray([prompt_ids], dtype=jnp.int32), mask, key)
        for i in range(max_new_tokens):
            # Dispatch the next step before reading this token back: jax runs it while the caller prints.
            if i + 1 < max_new_tokens:
                next_token, cache = self._step(self.params, token, jnp.int32(T + i), cache, mask, key)
            token_id = int(token[0])  # waits for the device: the one sync per token that streaming costs
            yield token_id
            if token_id == eos_token_id:
                return
            if i + 1 < max_new_tokens:
                token = next_token


# ----------------------------------------------------------------------------------------------------------
# Token ids -> complete text


class IncrementalDetokenizer:
    """Turns token ids, pushed one at a time, into text pieces made of complete characters only.

    A byte-level token can end in the middle of a multi-byte UTF-8 character; decoding it then gives the
    replacement character U+FFFD. So the ids not yet released are decoded together each time, and their text
    is released only when it does not end in U+FFFD; `flush` releases whatever is left (a truly invalid byte
    sequence comes out as U+FFFD then, as `tokenizer.decode` would show it). Special tokens (<|endoftext|>)
    are not shown. Once a piece is released its bytes ended on a whole character, so the text of later ids
    decodes on its own: only the ids since the last release are decoded (decoding the whole stream at every
    push was about a twelfth of the server's CPU per streamed request).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.start = 0  # ids before this one are released: their text ended on a whole character
        # A fast tokenizer's `decode` is its Rust tokenizer's decode behind Python layers (argument conversion,
        # special-token lookups) that cost several times the decode itself; a server calls this per chunk of
        # every stream, so it calls the Rust one directly: the same text (no clean-up, specials skipped).
        self._backend = tokenizer.backend_tokenizer if getattr(tokenizer, "is_fast", False) else None

    def _text(self) -> str:
        """The text of the ids not released yet."""
        ids = self.ids[self.start:]
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=True)
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        return self.push_many([token_id])

    def push_many(self, token_ids: list[int]) -> str:
        """`push` for several ids that arrived together: one decode for all of them."""
        self.ids.extend(int(t) for t in token_ids)
        text = self._text()
        if text.endswith("\ufffd"):  # possibly an unfinished character: wait for the next token
            return ""
        self.start = len(self.ids)
        return text

    def mark(self) -> tuple[int, int]:
        """Where the detokenizer stands (for `undo`)."""
        return len(self.ids), self.start

    def undo(self, mark: tuple[int, int]) -> None:
        """Forget what was pushed since `mark`."""
        del self.ids[mark[0]:]
        self.start = mark[1]

    def flush(self) -> str:
        text = self._text()
        self.start = len(self.ids)
        return text


def stream_text(token_ids: Iterator[int], tokenizer) -> Iterator[str]:
    """Text pieces for a stream of token ids, each made of complete characters."""
    detokenizer = IncrementalDetokenizer(tokenizer)
    for token_id in token_ids:
        piece = detokenizer.push(token_id)
        if piece:
            yield piece
    rest = detokenizer.flush()
    if rest:
        yield rest


# ----------------------------------------------------------------------------------------------------------
# PyTorch


def stream_torch(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> list[int]:
    """Generate with the PyTorch twin, printing text to stdout as it comes (transformers' `TextStreamer`).

    Returns the new token ids. Greedy when temperature is 0; `seed` seeds torch's sampler.
    """
    import torch
    from transformers import TextStreamer

    validate_sampling(temperature, top_k, top_p)
    check_fits(len(prompt_ids), max_new_tokens, context_length(model.config))
    torch.manual_seed(seed)
    sampling = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k or None, "top_p": top_p}
    input_ids = torch.tensor([prompt_ids], dtype=torch.long)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.no_grad():
        out = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens, streamer=streamer,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sampling,
        )
    sys.stdout.flush()
    return out[0, len(prompt_ids):].tolist()


__all__ = [
    "FlaxTokenStreamer",
    "IncrementalDetokenizer",
    "check_fits",
    "context_length",
    "encode_prompt",
    "sample_token",
    "stream_text",
    "stream_torch",
]
