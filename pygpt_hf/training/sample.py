"""A sample from the trained model, so the end of a run shows what it learned, not only a number."""

from __future__ import annotations

import jax
import numpy as np

from ..documents import instruction_messages
from .tokenizer import EOS_ID, PAD_ID

# What an instruction run is asked at the end when --sample-prompt is empty.
DEFAULT_INSTRUCTION = "Give me a short answer to a question of your choice."


def sample_prompt_text(tokenizer, prompt: str, instruction_run: bool) -> str:
    """The text the sample continues: `prompt` as typed, or for an instruction run the instruction `prompt`
    (or `DEFAULT_INSTRUCTION`) rendered by the tokenizer's chat template up to where the response begins."""
    if not instruction_run:
        return prompt
    return tokenizer.apply_chat_template(instruction_messages(prompt or DEFAULT_INSTRUCTION), tokenize=False,
                                         add_generation_prompt=True)


def sample_text(model, params, tokenizer, prompt: str = "", max_new_tokens: int = 120, seed: int = 0,
                temperature: float = 0.8, top_k: int = 50, instruction_run: bool = False) -> str:
    """Sample a continuation of `prompt` (see `sample_prompt_text`), started like a fresh document (after
    <|endoftext|>) and encoded as training encodes (`split_special_tokens=True`).

    Returns the prompt text plus the generated text, without special tokens. The length is capped so prompt +
    new tokens fit the model's context (`n_positions`).
    """
    text = sample_prompt_text(tokenizer, prompt, instruction_run)
    ids = [EOS_ID] + tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    n_positions = model.config.n_positions
    if len(ids) >= n_positions:
        raise ValueError(f"--sample-prompt is {len(ids) - 1} tokens; the model's context is {n_positions}")
    max_length = min(len(ids) + max_new_tokens, n_positions)
    out = model.generate(
        np.asarray([ids], np.int32), params=params, max_length=max_length, do_sample=True,
        temperature=temperature, top_k=top_k, prng_key=jax.random.PRNGKey(seed),
        eos_token_id=EOS_ID, pad_token_id=PAD_ID,  # eos must be set under jax 0.10 (hf-stack trap 3)
    )
    return tokenizer.decode(np.asarray(out.sequences[0, 1:]), skip_special_tokens=True)
