"""The OpenAI-compatible HTTP API (FastAPI), in front of one model and its engine.

    GET  /health                  {"status": "ok"}
    GET  /v1/models               the one model, with max_model_len and chat_template (extensions, as vLLM)
    POST /v1/chat/completions     messages through the chat template; stream: SSE chunks ending [DONE]
    POST /v1/completions          plain continuation; logprobs, echo (lm-evaluation-harness scoring)
    POST /tokenize                the prompt ids and count (extension, as vLLM), so a page can fit a chat
    /                             the chat page's static files, when given

Errors are OpenAI's body `{"error": {"message", "type", "param", "code"}}`: 400 for malformed or out-of-range
requests (never FastAPI's 422), `context_length_exceeded` when prompt + max_tokens > n_positions, 404 for an
unknown model; an internal failure answers 500 without a traceback, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import aclosing
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..streaming import IncrementalDetokenizer
from .engine import Engine, Finished, Request, SamplingParams, ScoreJob, Token
from .prompts import PromptError, StopMatcher, chat_prompt_ids, completion_prompt_ids, token_text
from .schemas import ChatCompletionRequest, CompletionRequest, Message, TokenizeRequest


class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_response(status: int, message: str, type: str = "invalid_request_error", param=None, code=None):
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}}, status_code=status)


@dataclass
class Served:
    """What the API serves: one model, its tokenizer and the engine that runs it."""

    name: str
    tokenizer: object
    engine: Engine
    n_positions: int
    created: int = field(default_factory=lambda: int(time.time()))
    # Read once: transformers looks special tokens and the vocabulary up anew on every access (~0.1-0.3 ms
    # each), which the event loop would pay per request.
    eos_token_id: int | None = field(init=False)
    vocab_size: int = field(init=False)

    def __post_init__(self):
        self.eos_token_id, self.vocab_size = self.tokenizer.eos_token_id, len(self.tokenizer)

    @property
    def has_chat_template(self) -> bool:
        return self.tokenizer.chat_template is not None


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class EventStream(StreamingResponse):
    """A `text/event-stream` response whose stream is cancelled as soon as the client disconnects (the slot is
    freed then, through the stream's `aclosing`). Starlette's StreamingResponse does the same through an anyio
    task group per response; this is one asyncio task watching `receive()` beside the stream's own, a part of
    what cut the server's CPU per streamed request by a quarter (docs/performance.md, section 7)."""

    def __init__(self, content):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def __call__(self, scope, receive, send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            stream.cancel()  # a no-op once the response is complete (receive answers disconnect then too)

        watcher = asyncio.ensure_future(watch())
        try:
            await stream
        except asyncio.CancelledError:
            stream.cancel()
            if not (watcher.done() and not watcher.cancelled()):
                raise  # this handler itself was cancelled (the server stops), not the client gone
        finally:
            watcher.cancel()


# ---- one generation: engine events -> text, tokens, finish reason -------------------------------------------


class Generation:
    """Follows one request's tokens: complete-character text, stop strings, usage and logprobs."""

    def __init__(self, served: Served, prompt_ids: list[int], params: SamplingParams, stops: list[str]):
        self.served, self.prompt_ids, self.params = served, prompt_ids, params
        self.detokenizer = IncrementalDetokenizer(served.tokenizer)
        self.stops = StopMatcher(stops)
        self.text = ""  # decoded so far (complete characters), cut at a stop string
        self.shown = 0  # characters already streamed
        self.tokens: list[Token] = []
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.request: Request | None = None

    async def events(self, http: HttpRequest) -> AsyncIterator[None]:
        """Runs the request; yields after each batch of new tokens (the caller streams `take_delta()`)."""
        loop = asyncio.get_running_loop()
        arrived: list = []  # events handed over by the worker, not yet taken (loop thread only)
        waiter: asyncio.Future | None = None  # what the loop below awaits while nothing has arrived

        def arrive(events: list) -> None:  # on the loop, called soon after the worker's callback
            arrived.extend(events)
            if waiter is not None:
                _wake(waiter)

        self.request = Request(self.prompt_ids, self.params, lambda events: loop.call_soon_threadsafe(arrive, events),
                               eos_token_id=self.served.eos_token_id)
        if self.params.max_tokens == 0:
            self.finish_reason = "length"
            return
        self.served.engine.submit(self.request)
        try:
            while self.finish_reason is None:
                if not arrived:  # wait for the worker; every half second, see whether the client is still there
                    waiter = loop.create_future()
                    timer = loop.call_later(0.5, _wake, waiter)
                    await waiter
                    timer.cancel()
                    if not arrived:
                        if await http.is_disconnected():
                            return
                        continue
                events = arrived[:]  # tokens that came together go out together
                arrived.clear()
                self._on_all(events)
                yield
        finally:
            if self.finish_reason is None:  # the client went away (or we stopped early): free the slot now
                self.served.engine.cancel(self.request)

    def _on_all(self, events: list) -> None:
        """The events that came together. Their tokens are decoded at once (one decode, not one per token); when
        that text holds a stop string or ends in an unfinished character, they are replayed one by one instead,
        so the result is always what `_on` gives token by token. (The text released token by token is a
        prefix of the text of all of them: if this one holds no stop string, none of those did.)"""
        n = next((i for i, e in enumerate(events) if not isinstance(e, Token)), len(events))
        if n > 1 and self.finish_reason is None:
            mark = self.detokenizer.mark()
            piece = self.detokenizer.push_many([e.id for e in events[:n]])
            if piece and self.stops.find(self.text + piece, len(self.text)) is None:
                self.text += piece
                self.tokens += events[:n]
                events = events[n:]
            else:
                self.detokenizer.undo(mark)
        for event in events:
            if self.finish_reason is None:
                self._on(event)

    def _on(self, event) -> None:
        if isinstance(event, Finished):
            self.text += self.detokenizer.flush()
            self._cut_at_stop()
            if self.finish_reason is None:
                self.finish_reason = {"eos": "stop", "length": "length"}.get(event.reason, event.reason)
                self.error = event.message or None
            return
        self.tokens.append(event)
        before = len(self.text)
        self.text += self.detokenizer.push(event.id)
        if self._cut_at_stop(before):
            self.served.engine.cancel(self.request)

    def _cut_at_stop(self, since: int = 0) -> bool:
        at = self.stops.find(self.text, since)
        if at is None:
            return False
        self.text, self.finish_reason = self.text[:at], "stop"
        return True

    def take_delta(self) -> str:
        """New text safe to show (held back while it could still become a stop string)."""
        end = len(self.text) if self.finish_reason else self.stops.safe_length(self.text)
        delta, self.shown = self.text[self.shown:end], max(self.shown, end)
        return delta

    def usage(self) -> dict:
        p, c = len(self.prompt_ids), len(self.tokens)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def run(self, http: HttpRequest) -> None:
        """The whole generation (no streaming); a failure inside the model answers 500."""
        async with aclosing(self.events(http)) as events:
            async for _ in events:
                pass
        if self.finish_reason == "error":
            raise ApiError(500, self.error or "generation failed", "server_error")


# ---- request -> prompt ids, sampling -------------------------------------------------------------------------


def _check_model(served: Served, name: str) -> None:
    if name != served.name:
        raise ApiError(404, f"the model {name!r} does not exist; this server serves {served.name!r}",
                       param="model", code="model_not_found")


def _messages(messages: list[Message]) -> list[dict]:
    return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]


def _prompt_ids(fn, *args) -> list[int]:
    try:
        return fn(*args)
    except PromptError as err:
        raise ApiError(400, str(err), param=err.param) from err


def _fit(served: Served, prompt_len: int, max_tokens: int | None, param: str) -> int:
    """max_tokens (default: the rest of the context), refused with both numbers when it cannot fit."""
    room = served.n_positions - prompt_len
    if max_tokens is None:
        max_tokens = room
    if prompt_len + max_tokens > served.n_positions or room < 1:
        raise ApiError(400, f"this model's maximum context length is {served.n_positions} tokens; the prompt has "
                            f"{prompt_len} tokens and {param} asks for {max_tokens}, {prompt_len + max_tokens} in all",
                       param=param, code="context_length_exceeded")
    return max_tokens


def _params(body, max_tokens: int) -> SamplingParams:
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                          seed=seed, ignore_eos=body.ignore_eos, logprobs=body.logprobs not in (None, False))


def _sse(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _completion_logprobs(served: Served, entries: list, n: int, offset0: int = 0) -> dict:
    """OpenAI's legacy logprobs object from (token id, logprob or None, top pairs or None) entries."""
    tok = served.tokenizer
    tokens, logprobs, tops, offsets = [], [], [], []
    detokenizer, offset = IncrementalDetokenizer(tok), offset0
    for token_id, logprob, top in entries:
        text = token_text(tok, token_id)
        tokens.append(text)
        logprobs.append(logprob)
        tops.append(None if top is None else {token_text(tok, i): lp for i, lp in top[:max(n, 1)]}
                    if n else ({text: logprob} if logprob is not None else None))
        offsets.append(offset)
        offset += len(detokenizer.push(token_id))
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def _chat_logprobs(served: Served, tokens: list[Token], n: int) -> dict:
    tok = served.tokenizer

    def entry(token_id, logprob):
        text = token_text(tok, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8")) if not
                text.startswith("bytes:") else list(bytes.fromhex(text[6:].replace("\\x", "")))}

    return {"content": [{**entry(t.id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top[:n]]}
                        for t in tokens]}


# ---- the app ---------------------------------------------------------------------------------------------------


def create_app(served: Served, static_dir: str | None = None) -> FastAPI:
    app = FastAPI(title="pygpt_hf", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(_, err: ApiError):
        return error_response(err.status, err.message, err.type, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, err: RequestValidationError):
        first = err.errors()[0]
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return error_response(400, "the request body is not valid JSON", param=None)
        param = ".".join(where) or None
        message = first.get("msg", "invalid request")
        if first.get("type") == "missing":
            message = f"the field {param!r} is required"
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field {param!r}: this server does not support it"
        else:
            message = f"{param}: {message}" if param else message
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), "not_found_error" if err.status_code == 404 else
                              "invalid_request_error")

    @app.exception_handler(Exception)
    async def _internal(_, err: Exception):
        return error_response(500, f"internal error ({type(err).__name__})", "server_error")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "pygpt_hf", "max_model_len": served.n_positions,
                                            "chat_template": served.has_chat_template}]}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        _check_model(served, body.model)
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "give exactly one of 'prompt' or 'messages'", param="prompt")
        if body.messages is not None:
            ids = _prompt_ids(chat_prompt_ids, served.tokenizer, _messages(body.messages))
        else:
            ids = _prompt_ids(completion_prompt_ids, served.tokenizer, body.prompt, served.vocab_size)
        return {"count": len(ids), "max_model_len": served.n_positions, "tokens": ids}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, http: HttpRequest):
        _check_model(served, body.model)
        if body.max_tokens is not None and body.max_completion_tokens is not None and \
                body.max_tokens != body.max_completion_tokens:
            raise ApiError(400, "max_tokens and max_completion_tokens disagree; give one", param="max_tokens")
        ids = _prompt_ids(chat_prompt_ids, served.tokenizer, _messages(body.messages))
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        wanted = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        if wanted == 0:
            raise ApiError(400, f"{param} must be at least 1", param=param)
        gen = Generation(served, ids, _params(body, _fit(served, len(ids), wanted, param)), body.stop)
        n_top = (body.top_logprobs or 0) if body.logprobs else 0
        if body.top_logprobs and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        head = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": served.name}
        if not body.stream:
            await gen.run(http)
            choice = {"index": 0, "message": {"role": "assistant", "content": gen.text},
                      "logprobs": _chat_logprobs(served, gen.tokens, n_top) if body.logprobs else None,
                      "finish_reason": gen.finish_reason}
            return {**head, "object": "chat.completion", "choices": [choice], "usage": gen.usage()}

        def chunk(delta: dict, finish=None, tokens=None):
            logprobs = _chat_logprobs(served, tokens, n_top) if body.logprobs and tokens else None
            return _sse({**head, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]})

        async def stream():
            yield chunk({"role": "assistant", "content": ""})
            sent = 0
            async with aclosing(gen.events(http)) as events:  # closing the stream frees the slot at once
                async for _ in events:
                    delta = gen.take_delta()
                    if delta:
                        yield chunk({"content": delta}, tokens=gen.tokens[sent:])
                        sent = len(gen.tokens)
            if gen.finish_reason == "error":
                yield _sse({"error": {"message": gen.error, "type": "server_error", "param": None, "code": None}})
                return
            rest = gen.take_delta()
            tail = chunk({"content": rest} if rest else {}, gen.finish_reason, tokens=gen.tokens[sent:])
            if body.stream_options and body.stream_options.include_usage:
                tail += _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": gen.usage()})
            yield tail + "data: [DONE]\n\n"  # one write for the last events

        return EventStream(stream())

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HttpRequest):
        _check_model(served, body.model)
        prompts = body.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise ApiError(400, "prompt is empty", param="prompt")
        if body.stream and len(prompts) > 1:
            raise ApiError(400, "stream: true takes one prompt; send several prompts without streaming", param="prompt")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default for completions
        gens = []
        for prompt in prompts:
            ids = _prompt_ids(completion_prompt_ids, served.tokenizer, prompt, served.vocab_size)
            gens.append(Generation(served, ids, _params(body, _fit(served, len(ids), max_tokens, "max_tokens")),
                                   body.stop))
        head = {"id": "cmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": served.name}
        n_top = body.logprobs

        async def echo_entries(gen: Generation) -> list:
            future = Future()
            served.engine.submit(ScoreJob(gen.prompt_ids, future))
            scored = await asyncio.wrap_future(future)
            return [(i, None, None) if s is None else (i, s[0], s[1]) for i, s in zip(gen.prompt_ids, scored)]

        def prompt_text(gen: Generation) -> str:
            return served.tokenizer.decode(gen.prompt_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

        if not body.stream:
            async def run(gen: Generation):
                echoed = await echo_entries(gen) if body.echo and n_top is not None else []
                await gen.run(http)
                return echoed

            echoed_all = await asyncio.gather(*(run(g) for g in gens))
            choices = []
            for index, (gen, echoed) in enumerate(zip(gens, echoed_all)):
                text = (prompt_text(gen) if body.echo else "") + gen.text
                logprobs = None
                if n_top is not None:
                    entries = echoed + [(t.id, t.logprob, t.top) for t in gen.tokens]
                    logprobs = _completion_logprobs(served, entries, n_top)
                choices.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": gen.finish_reason})
            usage = {k: sum(g.usage()[k] for g in gens) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
            return {**head, "object": "text_completion", "choices": choices, "usage": usage}

        gen = gens[0]

        def chunk(text: str, finish=None, entries=None, offset0=0):
            logprobs = _completion_logprobs(served, entries, n_top, offset0) if n_top is not None and entries else None
            return _sse({**head, "object": "text_completion",
                         "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]})

        async def stream():
            if body.echo:
                entries = await echo_entries(gen) if n_top is not None else None
                yield chunk(prompt_text(gen), entries=entries)
            sent = 0
            async with aclosing(gen.events(http)) as events:
                async for _ in events:
                    delta = gen.take_delta()
                    if delta:
                        yield chunk(delta, entries=[(t.id, t.logprob, t.top) for t in gen.tokens[sent:]])
                        sent = len(gen.tokens)
            if gen.finish_reason == "error":
                yield _sse({"error": {"message": gen.error, "type": "server_error", "param": None, "code": None}})
                return
            tail = chunk(gen.take_delta(), gen.finish_reason, [(t.id, t.logprob, t.top) for t in gen.tokens[sent:]])
            if body.stream_options and body.stream_options.include_usage:
                tail += _sse({**head, "object": "text_completion", "choices": [], "usage": gen.usage()})
            yield tail + "data: [DONE]\n\n"  # one write for the last events

        return EventStream(stream())

    if static_dir is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=static_dir, html=True), name="page")
    return app
