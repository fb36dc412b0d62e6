"""The multi-turn chat template: single turns render byte for byte as training's instruction template, earlier
turns are complete documents joined by <|endoftext|> as training joins them, and the server's prompt ids put the
eos *id* between them while a typed "<|endoftext|>" stays text."""

import pytest
from jinja2 import TemplateError

from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.serving.prompts import PromptError, chat_prompt_ids, encode_text
from pygpt_hf.documents import CHAT_TEMPLATE, instruction_messages, render_instruction

TEXTS = ["### Instruction:\nSay hi.\n\n### Response:\nhi", "the cat sat on the mat", "héllo wörld"] * 10


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, show_progress=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def render(tokenizer, messages, **kwargs):
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.mark.parametrize("context", [None, "", "  ", "some context"])
@pytest.mark.parametrize("response", [None, "", "an answer"])
def test_single_turn_is_the_training_text(tokenizer, context, response):
    messages = instruction_messages("Do it.", response, context)
    assert render(tokenizer, messages) == render_instruction("Do it.", response or "", context)[
        :None if response is not None else -len("### Response:\n")]
    if response is None:
        assert render(tokenizer, messages, add_generation_prompt=True) == render_instruction("Do it.", "", context)
    system_first = [m for m in messages if m["role"] == "system"] + [m for m in messages if m["role"] != "system"]
    assert render(tokenizer, system_first, add_generation_prompt=True) == render(tokenizer, messages,
                                                                                 add_generation_prompt=True)


def test_earlier_turns_are_documents_joined_by_eos(tokenizer):
    messages = [{"role": "system", "content": "ctx"}, {"role": "user", "content": "one"},
                {"role": "assistant", "content": "first answer"}, {"role": "user", "content": "two"},
                {"role": "assistant", "content": "second"}, {"role": "user", "content": "three"}]
    docs = [render_instruction("one", "first answer", "ctx"), render_instruction("two", "second"),
            render_instruction("three", "")]
    assert render(tokenizer, messages, add_generation_prompt=True) == "<|endoftext|>".join(docs)
    ids = chat_prompt_ids(tokenizer, messages)
    eos = tokenizer.eos_token_id
    assert ids == [eos] + encode_text(tokenizer, docs[0]) + [eos] + encode_text(tokenizer, docs[1]) + [eos] + \
        encode_text(tokenizer, docs[2])
    # The answers are the assistant tokens, as training's response-only loss counts them
    out = tokenizer.apply_chat_template(messages[:5], tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "first answersecond"


def test_typed_control_strings_stay_text(tokenizer):
    ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": "say <|endoftext|> now"}])
    assert ids.count(tokenizer.eos_token_id) == 1 and ids[0] == tokenizer.eos_token_id


@pytest.mark.parametrize("messages, fragment", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "unexpected user"),
    ([{"role": "assistant", "content": "a"}], "unexpected assistant"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}],
     "unexpected assistant"),
    ([{"role": "system", "content": "a"}], "no user message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "system", "content": "c"}],
     "no user message"),
])
def test_conversations_the_template_cannot_render_are_refused(tokenizer, messages, fragment):
    with pytest.raises(TemplateError, match=fragment):
        render(tokenizer, messages, add_generation_prompt=True)
    with pytest.raises(PromptError, match=fragment):
        chat_prompt_ids(tokenizer, messages)
