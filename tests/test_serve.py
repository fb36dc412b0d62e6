"""The OpenAI-compatible server, driven by the real `openai` client over loopback.

A tiny random model with a tiny tokenizer and the chat template is saved to a temp folder and served in this
process (uvicorn in a thread, a free port), by the continuous-batching Flax engine and by the PyTorch twin.
Greedy answers must be `generate(do_sample=False)`'s tokens, streamed or not, alone or batched with others.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jax
import numpy as np
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from helpers import load_script, save_tiny_model

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.documents import CHAT_TEMPLATE
from pygpt_hf.serving.app import Served, create_app
from pygpt_hf.serving.engine import FlaxBatchEngine, TorchEngine
from pygpt_hf.serving.prompts import chat_prompt_ids, completion_prompt_ids

N_POSITIONS = 64
TEXTS = ["the cat sat on the mat", "héllo wörld, naïve café", "日本語のテキスト", "emoji 🙂 and 🚀 too",
         "### Instruction:\nSay hi.\n\n### Response:\nhi"] * 4
NAME = "tiny"


class Server:
    """uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=120)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-chat-model")
    save_tiny_model(folder, TEXTS, N_POSITIONS, chat_template=CHAT_TEMPLATE)
    return folder


@pytest.fixture(scope="module")
def flax(folder):
    """(server, served, model): the Flax model behind continuous batching with 4 slots."""
    from transformers import AutoTokenizer, FlaxAutoModelForCausalLM

    model = FlaxAutoModelForCausalLM.from_pretrained(folder)
    served = Served(NAME, AutoTokenizer.from_pretrained(folder), FlaxBatchEngine(model, slots=4).start(), N_POSITIONS)
    server = Server(create_app(served))
    yield server, served, model
    server.stop()
    served.engine.close()


@pytest.fixture(scope="module")
def plain(folder, flax):
    """The same engine behind a tokenizer without a chat template (a model trained on plain text)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = None
    server = Server(create_app(Served(NAME, tokenizer, flax[1].engine, N_POSITIONS)))
    yield server
    server.stop()


def generate_greedy(model, ids, max_new_tokens):
    out = model.generate(np.asarray([ids], np.int32), max_length=len(ids) + max_new_tokens, do_sample=False,
                         eos_token_id=256, pad_token_id=257)
    new = np.asarray(out.sequences[0, len(ids):]).tolist()
    return new[:new.index(256) + 1] if 256 in new else new


def text_of(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=True)


CHAT = [{"role": "user", "content": "Say hi."}]


# ---- the API on the Flax engine ----------------------------------------------------------------------------


def test_models_and_health(flax, plain):
    server = flax[0]
    models = server.client.models.list()
    assert [m.id for m in models.data] == [NAME]
    entry = models.data[0].model_dump()
    assert entry["object"] == "model" and entry["owned_by"] == "pygpt_hf" and entry["max_model_len"] == N_POSITIONS
    assert entry["chat_template"] is True
    assert plain.client.models.list().data[0].model_dump()["chat_template"] is False
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_chat_is_greedy_generate_streamed_or_not(flax):
    server, served, model = flax
    ids = chat_prompt_ids(served.tokenizer, CHAT)
    expected = generate_greedy(model, ids, 20)
    reply = server.client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=20, temperature=0)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == text_of(served.tokenizer, expected)
    assert reply.choices[0].finish_reason == ("stop" if expected[-1] == 256 else "length")
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == len(expected)
    assert reply.usage.total_tokens == len(ids) + len(expected)
    chunks = list(server.client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=20, temperature=0,
                                                        stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(expected)


def test_completion_is_greedy_generate_streamed_or_not(flax):
    server, served, model = flax
    prompt = "the cat"
    ids = completion_prompt_ids(served.tokenizer, prompt)
    expected = generate_greedy(model, ids, 24)
    reply = server.client.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == text_of(served.tokenizer, expected)
    assert reply.usage.completion_tokens == len(expected) and reply.usage.prompt_tokens == len(ids)
    chunks = list(server.client.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == reply.choices[0].text
    # token ids as the prompt (what lm-evaluation-harness sends) give the same answer
    again = server.client.completions.create(model=NAME, prompt=ids, max_tokens=24, temperature=0)
    assert again.choices[0].text == reply.choices[0].text


def test_stop_strings_cut_the_text_streamed_or_not(flax):
    server = flax[0]
    full = server.client.completions.create(model=NAME, prompt="the cat", max_tokens=30, temperature=0,
                                            extra_body={"ignore_eos": True})
    text = full.choices[0].text
    assert len(text) > 6, text
    stop = text[3:5]  # a stop string met in the middle of the answer
    cut = text[:text.index(stop)]
    for stream in (False, True):
        reply = server.client.completions.create(model=NAME, prompt="the cat", max_tokens=30, temperature=0,
                                                 stop=["\x01never", stop], stream=stream)
        if stream:
            chunks = list(reply)
            assert "".join(c.choices[0].text for c in chunks) == cut
            assert chunks[-1].choices[0].finish_reason == "stop"
        else:
            assert reply.choices[0].text == cut and reply.choices[0].finish_reason == "stop"
    chat = server.client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=30, temperature=0,
                                                 stop=stop, extra_body={"ignore_eos": True})
    assert stop not in chat.choices[0].message.content


def test_multi_turn_chat_and_tokenize(flax):
    server, served, model = flax
    messages = CHAT + [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "Again."}]
    ids = chat_prompt_ids(served.tokenizer, messages)
    assert ids.count(256) == 2  # bos, and the eos after the answered turn
    counted = httpx.post(server.url + "/tokenize", json={"model": NAME, "messages": messages}).json()
    assert counted == {"count": len(ids), "max_model_len": N_POSITIONS, "tokens": ids}
    assert httpx.post(server.url + "/tokenize", json={"model": NAME, "prompt": "the cat"}).json()["tokens"] == \
        completion_prompt_ids(served.tokenizer, "the cat")
    expected = generate_greedy(model, ids, 10)
    reply = server.client.chat.completions.create(model=NAME, messages=messages, max_completion_tokens=10,
                                                  temperature=0)
    assert reply.choices[0].message.content == text_of(served.tokenizer, expected)


def test_concurrent_streams_are_batched_and_unchanged(flax):
    """Batching does not change any stream's tokens: six concurrent greedy streams over 4 slots (so requests
    join and leave mid-way, and the cache shifts) each equal that request served alone, which is generate's."""
    server, served, model = flax
    prompts = ["the cat", "héllo", "emoji 🙂", "日本", "the mat sat on the cat and", "x"]
    lengths = [30, 12, 40, 25, 20, 60]  # the last joins when a slot frees, and runs past the 80-column cache's end
    engine = served.engine

    def stream(i):
        chunks = server.client.completions.create(model=NAME, prompt=prompts[i], max_tokens=lengths[i],
                                                  temperature=0, stream=True)
        return "".join(c.choices[0].text for c in chunks)

    alone = [stream(i) for i in range(len(prompts))]  # one request at a time: each runs alone in the cache
    steps, shifts = engine.steps, engine.shifts
    with ThreadPoolExecutor(len(prompts)) as pool:
        texts = list(pool.map(stream, range(len(prompts))))
    assert texts == alone
    ids = completion_prompt_ids(served.tokenizer, prompts[2])  # and alone is generate's answer
    assert alone[2] == text_of(served.tokenizer, generate_greedy(model, ids, lengths[2]))
    assert engine.steps - steps < sum(lengths) - len(prompts)  # steps were shared: they ran batched
    assert engine.shifts > shifts  # the shared write position wrapped while streams were live


def test_sampling_is_repeatable_from_a_seed(flax):
    server, _, _ = flax

    def ask(_):
        return server.client.completions.create(model=NAME, prompt="the", max_tokens=16, temperature=1.0, top_p=0.9,
                                                seed=7, extra_body={"top_k": 50}).choices[0].text

    alone = ask(0)
    with ThreadPoolExecutor(3) as pool:  # batched with others, the same seed draws the same tokens
        assert list(pool.map(ask, range(3))) == [alone] * 3


def test_echo_logprobs_score_the_prompt_like_the_model(flax):
    """lm-evaluation-harness's loglikelihood request: echo, logprobs, max_tokens 0 or 1; the numbers are the
    model's own log-softmax."""
    server, served, model = flax
    ids = completion_prompt_ids(served.tokenizer, "the cat sat on the mat")
    logits = np.asarray(model(np.asarray([ids])).logits[0], np.float64)
    expected = (logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
                - logits.max(-1, keepdims=True))[np.arange(len(ids) - 1), ids[1:]]
    for max_tokens in (0, 1):
        body = {"model": NAME, "prompt": [ids], "echo": True, "max_tokens": max_tokens, "logprobs": 1,
                "temperature": 0, "seed": 1234}
        out = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
        lp = out["choices"][0]["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) + max_tokens and lp["token_logprobs"][0] is None
        np.testing.assert_allclose(lp["token_logprobs"][1:len(ids)], expected, atol=2e-5)
        assert all(len(top) == 1 for top in lp["top_logprobs"][1:])
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    [(total, greedy)] = LocalCompletionsAPI.parse_logprobs(out, ctxlens=[3])
    assert total == pytest.approx(expected[2:].sum(), abs=1e-4) and isinstance(greedy, bool)


def test_lm_eval_local_completions_scores_against_the_server(flax, folder):
    pytest.importorskip("lm_eval")
    pytest.importorskip("tenacity")  # lm-eval's [api] extra
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    server, _, model = flax
    lm = LocalCompletionsAPI(base_url=server.url + "/v1/completions", model=NAME, tokenizer_backend="huggingface",
                             tokenizer=str(folder), max_length=N_POSITIONS, num_concurrent=1, max_retries=1)
    pairs = [("the cat", " sat on the mat"), ("héllo", " wörld")]
    results = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)],
                               disable_tqdm=True)
    for (context, continuation), (score, _) in zip(pairs, results):
        whole = lm.tok_encode(context + continuation)
        ctx = len(lm.tok_encode(context))
        logits = np.asarray(model(np.asarray([whole])).logits[0], np.float64)
        logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        assert score == pytest.approx(sum(logprobs[t - 1, whole[t]] for t in range(ctx, len(whole))), abs=1e-4)


def test_chat_logprobs(flax):
    server = flax[0]
    reply = server.client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=5, temperature=0,
                                                  logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:  # greedy: the chosen token is the most likely one
        assert len(entry.top_logprobs) == 3 and entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)


def error_of(server, path, body, raw=None):
    response = httpx.post(server.url + path, json=body, timeout=30) if raw is None else \
        httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize("path, body, status, param, fragment", [
    ("/v1/chat/completions", {"model": NAME}, 400, "messages", "required"),
    ("/v1/chat/completions", {"model": NAME, "messages": "hi"}, 400, "messages", "list"),
    ("/v1/chat/completions", {"model": NAME, "messages": CHAT, "temperature": "hot"}, 400, "temperature", "number"),
    ("/v1/chat/completions", {"model": NAME, "messages": CHAT, "temperature": 5}, 400, "temperature", "2"),
    ("/v1/chat/completions", {"model": NAME, "messages": CHAT, "top_p": 0}, 400, "top_p", "0"),
    ("/v1/chat/completions", {"model": NAME, "messages": CHAT, "n": 2}, 400, "n", "n = 1"),
    ("/v1/chat/completions", {"model": NAME, "messages": CHAT, "max_tokens": -1}, 400, "max_tokens", "0"),
    ("/v1/chat/completions", {"model": NAME, "messages": CHAT, "best_of": 3}, 400, "best_of", "unknown field"),
    ("/v1/chat/completions", {"model": NAME, "messages": CHAT + CHAT}, 400, "messages", "unexpected user"),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": CHAT}, 404, "model", "does not exist"),
    ("/v1/completions", {"model": NAME, "prompt": [99999]}, 400, "prompt", "outside the vocabulary"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "logprobs": 6}, 400, "logprobs", "5"),
    ("/tokenize", {"model": NAME}, 400, "prompt", "exactly one"),
])
def test_bad_requests_get_openai_errors(flax, path, body, status, param, fragment):
    server = flax[0]
    code, error = error_of(server, path, body)
    assert code == status and error["param"] == param and fragment in error["message"], error
    assert error["type"] in ("invalid_request_error", "not_found_error")


def test_context_length_exceeded_names_both_numbers(flax):
    server, served, _ = flax
    ids = chat_prompt_ids(served.tokenizer, CHAT)
    code, error = error_of(server, "/v1/chat/completions", {"model": NAME, "messages": CHAT, "max_tokens": 60})
    assert code == 400 and error["code"] == "context_length_exceeded"
    assert f"{N_POSITIONS}" in error["message"] and f"{len(ids)}" in error["message"] and "60" in error["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        server.client.completions.create(model=NAME, prompt="the cat " * 40, max_tokens=16)
    assert refused.value.code == "context_length_exceeded"


def test_malformed_json_and_chat_without_a_template(flax, plain):
    server = flax[0]
    code, error = error_of(server, "/v1/chat/completions", None, raw=b'{"model": "tiny", "messages": [')
    assert code == 400 and "not valid JSON" in error["message"]
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        plain.client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=4)
    assert plain.client.completions.create(model=NAME, prompt="the", max_tokens=4, temperature=0).choices[0].text
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}  # still serving after every error


def test_a_disconnected_stream_frees_its_slot_at_once(flax):
    server, served, _ = flax
    engine = served.engine
    body = {"model": NAME, "prompt": "the", "max_tokens": 60, "temperature": 0, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        assert any(slot is not None for slot in engine.rows)
    deadline = time.monotonic() + 5
    while any(slot is not None for slot in engine.rows) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(slot is None for slot in engine.rows)
    assert engine.steps  # and the next request is served as usual
    assert server.client.completions.create(model=NAME, prompt="the", max_tokens=3, temperature=0).choices[0].text


def test_eos_finishes_with_stop(folder, tmp_path):
    """A model that always says <|endoftext|>: finish_reason "stop", no text, one completion token."""
    from transformers import AutoTokenizer

    config = PyGPTConfig(vocab_size=300, n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=2,
                         tie_word_embeddings=False)
    model = FlaxPyGPTForCausalLM(config, seed=0)
    params = jax.tree_util.tree_map(np.array, model.params)
    params["transformer"]["ln_f"]["scale"][:] = 0
    params["transformer"]["ln_f"]["bias"][:] = 1
    params["lm_head"]["kernel"][:] = 0
    params["lm_head"]["kernel"][:, 256] = 1
    served = Served(NAME, AutoTokenizer.from_pretrained(folder), FlaxBatchEngine(model, params, slots=1).start(),
                    N_POSITIONS)
    server = Server(create_app(served))
    try:
        reply = server.client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=8, temperature=0)
        assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content == ""
        assert reply.usage.completion_tokens == 1
    finally:
        server.stop()
        served.engine.close()


# ---- the PyTorch twin ----------------------------------------------------------------------------------------


def test_torch_is_greedy_generate(folder):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    served = Served(NAME, tokenizer, TorchEngine(model).start(), N_POSITIONS)
    server = Server(create_app(served))
    try:
        for prompt, messages in (("the cat", None), (None, CHAT)):
            ids = completion_prompt_ids(tokenizer, prompt) if prompt else chat_prompt_ids(tokenizer, messages)
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False, eos_token_id=256,
                                     pad_token_id=257)
            expected = text_of(tokenizer, out[0, len(ids):].tolist())
            if prompt:
                reply = server.client.completions.create(model=NAME, prompt=prompt, max_tokens=20, temperature=0)
                chunks = server.client.completions.create(model=NAME, prompt=prompt, max_tokens=20, temperature=0,
                                                          stream=True)
                assert reply.choices[0].text == expected == "".join(c.choices[0].text for c in chunks)
            else:
                reply = server.client.chat.completions.create(model=NAME, messages=messages, max_tokens=20,
                                                              temperature=0, stream=True)
                assert "".join(c.choices[0].delta.content or "" for c in reply) == expected
        body = {"model": NAME, "prompt": "the cat sat", "echo": True, "max_tokens": 0, "logprobs": 1}
        scored = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
        flax_model = FlaxPyGPTForCausalLM.from_pretrained(folder)
        ids = completion_prompt_ids(tokenizer, "the cat sat")
        logits = np.asarray(flax_model(np.asarray([ids])).logits[0], np.float64)
        logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        np.testing.assert_allclose(scored["choices"][0]["logprobs"]["token_logprobs"][1:],
                                   logprobs[np.arange(len(ids) - 1), ids[1:]], atol=1e-4)
    finally:
        server.stop()
        served.engine.close()


def test_serve_script_says_how_to_train_when_the_model_is_missing(tmp_path, monkeypatch, capsys):
    module = load_script("serve")
    monkeypatch.chdir(tmp_path)
    assert module.main([]) == 1  # default --model runs/pygpt, not there
    err = capsys.readouterr().err
    assert "runs/pygpt" in err and "scripts/train.py" in err


def test_serve_script_stops_cleanly_on_sigterm_and_logs_what_the_engine_did(folder):
    """`kill` (a service manager's stop) shuts the server down like Ctrl-C: exit status 0, the engine closed,
    and its summary line (decode calls, rows in use, the worker's time) in the log."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from helpers import SCRIPTS

    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "serve.py"), "--model", str(folder), "--port", "0", "--no-page",
         "--no-warm-up", "--served-model-name", NAME], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(SCRIPTS.parent)})
    try:
        url = next(line.split()[1] for line in process.stdout if line.startswith("API:"))
        body = {"model": NAME, "prompt": "the", "max_tokens": 5, "temperature": 0, "ignore_eos": True}
        answer = httpx.post(url + "/completions", json=body, timeout=120).json()
        assert answer["usage"]["completion_tokens"] == 5, json.dumps(answer)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    log = process.stderr.read()
    assert "Traceback" not in log, log
    summary = next(line for line in log.splitlines() if line.startswith("engine:"))
    assert "decode calls" in summary and "rows in use" in summary, summary


def test_serve_script_refuses_more_engines_than_slots_and_flax_options_for_torch(capsys):
    module = load_script("serve")
    with pytest.raises(SystemExit):
        module.parse_args(["--max-batch", "4", "--engines", "5"])
    assert "--engines must be between 1 and --max-batch (4), got 5" in capsys.readouterr().err
    assert module.parse_args(["--max-batch", "4", "--engines", "2"]).engines == 2
    with pytest.raises(SystemExit):
        module.parse_args(["--framework", "torch", "--engines", "2"])
    assert "--engines: Flax options (--framework torch serves one request at a time)" in capsys.readouterr().err
