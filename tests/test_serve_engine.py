"""The continuous-batching engine on its own (no HTTP): requests that join together in one prefill call, or
while others decode, each get exactly the greedy tokens `generate` gives that prompt alone; after `warm_up`
no request shape compiles while serving."""

from __future__ import annotations

import threading

import numpy as np

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.serving.engine import EnginePool, FlaxBatchEngine, Request, SamplingParams, Token

EOS = 256


def generate_greedy(model, ids, max_new_tokens):
    out = model.generate(np.asarray([ids], np.int32), max_length=len(ids) + max_new_tokens, do_sample=False,
                         eos_token_id=EOS, pad_token_id=257)
    new = np.asarray(out.sequences[0, len(ids):]).tolist()
    return new[:new.index(EOS) + 1] if EOS in new else new


def tiny_model():
    return FlaxPyGPTForCausalLM(PyGPTConfig(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2), seed=3)


class Streams:
    """Each request's tokens and finish reason, by key; `done` is set once `expected` requests have finished.
    `then(key, event)` runs after each event on the worker's thread (to submit more requests from there)."""

    def __init__(self, expected: int, then=lambda key, event: None):
        self.expected, self.then = expected, then
        self.got, self.reasons, self.done = {}, {}, threading.Event()

    def on(self, key):
        self.got[key] = []

        def on_events(events):
            for event in events:
                if isinstance(event, Token):
                    self.got[key].append(event.id)
                else:
                    self.reasons[key] = event.reason
                self.then(key, event)
                if len(self.reasons) == self.expected:
                    self.done.set()
        return on_events

    def wait(self):
        assert self.done.wait(120), f"requests still running: {sorted(set(self.got) - set(self.reasons), key=str)}"


def test_batched_joins_give_every_stream_its_own_greedy_tokens():
    """Three prompts of different lengths join in one prefill call (left-padded to one bucket); when the first
    finishes, two more join in one call while the others decode, and the shared write position wraps
    (a 32-token context). Requests submitted from a callback (the worker's thread) all wait in the inbox
    together, so the joins are deterministic."""
    model = tiny_model()
    rng = np.random.default_rng(0)
    lengths = [3, 17, 9, 12, 20, 4]
    max_tokens = [6, 12, 14, 15, 10, 1]
    prompts = [rng.integers(0, 256, n).tolist() for n in lengths]
    engine = FlaxBatchEngine(model, slots=4, steps_per_call=4)
    engine.warm_up()

    def then(i, event):
        if isinstance(event, Token):
            return
        if i == 5:  # a first request alone; then three at once
            for j in range(3):
                submit(j)
        if i == 0:  # two join (rows 0 and 3) while requests 1 and 2 decode
            submit(3)
            submit(4)

    streams = Streams(len(prompts), then)

    def submit(i):
        engine.submit(Request(prompts[i], SamplingParams(max_tokens[i], temperature=0), streams.on(i), eos_token_id=EOS))

    try:
        submit(5)
        streams.wait()
    finally:
        engine.close()
    for i, ids in enumerate(prompts):
        expected = generate_greedy(model, ids, max_tokens[i])
        assert streams.got[i] == expected, f"request {i} (prompt of {lengths[i]} tokens)"
        assert streams.reasons[i] == ("eos" if expected[-1] == EOS else "length")
    assert engine.joins == 3  # one request, then three in one prefill call, then two in one call
    assert engine.shifts > 0
    assert engine.late_compiles == 0  # warm_up compiled every shape these requests needed


def test_requests_that_fill_the_context_run_to_their_limit():
    """A request whose prompt plus max_tokens is the whole context (what the API allows at most) runs to its
    last token with generate's greedy tokens, alone and beside another that joins later: calls are pipelined,
    so a slot at its limit is still live for the call in flight, and the cache must hold that too (it once
    ran out of columns and stopped the worker)."""
    model = tiny_model()
    engine = FlaxBatchEngine(model, slots=2, steps_per_call=4)
    engine.warm_up()
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 256, n).tolist() for n in (2, 1, 9, 5)]

    def then(i, event):
        if isinstance(event, Token):
            if i == 2 and len(streams.got[i]) == 5:  # the last one joins while request 2 decodes
                submit(3)
        elif i < 2:
            submit(i + 1)

    streams = Streams(len(prompts), then)

    def submit(i):
        params = SamplingParams(32 - len(prompts[i]), temperature=0, ignore_eos=True)
        engine.submit(Request(prompts[i], params, streams.on(i), eos_token_id=EOS))

    try:
        submit(0)
        streams.wait()
    finally:
        engine.close()
    for i, ids in enumerate(prompts):
        out = model.generate(np.asarray([ids], np.int32), max_length=32, do_sample=False, pad_token_id=257)
        assert streams.got[i] == np.asarray(out.sequences[0, len(ids):]).tolist(), f"request {i}"
        assert streams.reasons[i] == "length"


def test_a_pool_of_engines_shares_the_requests_and_keeps_every_stream_greedy():
    """Two engines of two rows behind one submit: six requests spread over both (the one holding fewer takes
    the next), each gets generate's greedy tokens, and a cancelled one frees its row in whichever engine runs it."""
    model = tiny_model()
    pool = EnginePool([FlaxBatchEngine(model, slots=2, steps_per_call=4) for _ in range(2)])
    pool.warm_up()
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 256, n).tolist() for n in (3, 8, 5, 12, 2, 6)]
    max_tokens = [10, 4, 14, 8, 12, 6]
    streams = Streams(len(prompts) + 1)

    try:
        for i, ids in enumerate(prompts):
            pool.submit(Request(ids, SamplingParams(max_tokens[i], temperature=0), streams.on(i), eos_token_id=EOS))
        endless = Request([1, 2, 3], SamplingParams(28, temperature=0, ignore_eos=True), streams.on("endless"))
        pool.submit(endless)
        pool.cancel(endless)
        streams.wait()
    finally:
        pool.close()
    for i, ids in enumerate(prompts):
        assert streams.got[i] == generate_greedy(model, ids, max_tokens[i]), f"request {i}"
    assert streams.reasons["endless"] == "cancelled" and len(streams.got["endless"]) < 28
    assert all(engine.steps > 0 for engine in pool.engines)  # both engines decoded
    assert pool._held == [0, 0]  # every request counted out again when it finished
    assert len(pool.summary().splitlines()) == 2


class _Cancels:
    def __init__(self):
        self.cancelled = 0

    def cancel(self, request):
        self.cancelled += 1


def test_tokens_that_arrive_together_give_the_text_they_give_one_by_one():
    """The server decodes the K tokens of a decode call at once; the text, the tokens counted, the finish reason
    and the stop-string cut are what feeding them one at a time gives, however the tokens are grouped."""
    from pygpt_hf.bpe import train_tokenizer
    from pygpt_hf.serving.app import Generation, Served
    from pygpt_hf.serving.engine import Finished

    tokenizer = train_tokenizer(["héllo wörld, 日本 🙂 hello"] * 4, vocab_size=270, show_progress=False)
    text = "héllo 日本 🙂! STOP here, and more after it 🙂"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    events = [Token(i, 0.0, ()) for i in ids] + [Finished("length")]

    def follow(groups, stops):
        engine = _Cancels()
        gen = Generation(Served("m", tokenizer, engine, 128), [1], SamplingParams(max_tokens=len(ids)), stops)
        deltas = []
        for group in groups:
            if gen.finish_reason is None:
                gen._on_all(group)
                deltas.append(gen.take_delta())
        deltas.append(gen.take_delta())
        return gen.text, len(gen.tokens), gen.finish_reason, engine.cancelled, "".join(deltas)

    rng = np.random.default_rng(0)
    for stops in ([], ["STOP"], ["🙂"], ["e, a"]):
        one_by_one = follow([[e] for e in events], stops)
        assert one_by_one[0] == (text if not stops else text[:text.index(stops[0])])
        assert one_by_one[4] == one_by_one[0]  # the deltas add up to the text
        for _ in range(20):
            cuts = sorted(rng.choice(np.arange(1, len(events)), size=rng.integers(1, 8), replace=False).tolist())
            groups = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)])]
            assert follow(groups, stops) == one_by_one, (stops, cuts)


def test_the_host_prng_key_is_jaxs():
    import jax

    from pygpt_hf.serving.engine import _prng_key

    for seed in (0, 1, 5, 2**31 - 1, -1, -5, 2**32 - 1, 2**32 + 3, 2**40 + 7, -(2**31)):
        np.testing.assert_array_equal(_prng_key(seed), np.asarray(jax.random.PRNGKey(seed)))
