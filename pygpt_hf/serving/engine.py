"""The model's one worker: a background thread that owns the model and runs every request.

The HTTP handlers never touch the model. They `submit` a `Request` (prompt ids + `SamplingParams`) and
receive `Token` events and one `Finished` event, in lists, through the request's callback, called from this
thread;
`cancel` (a client went away) frees the request's slot before the next step.

`FlaxBatchEngine` is continuous batching over S slots, with the model's own KV cache and no change to it:

    cache:    (S, H, L, D) per layer, one row per slot; ONE write column `pos` shared by all rows
              (the model's `cache_index` is a scalar), so every decode step writes every row at column pos.
    slot i:   its tokens sit contiguously in columns [start_i, pos) of row i; the step's attention_mask
              opens exactly those columns (and pos) for row i, and position_ids are pos - start_i, so the row
              computes what it would compute alone (K and V do not depend on the column they sit in,
              rope included).
    join:     every waiting request (up to the free rows) is prefilled in ONE call: R prompts left-padded to
              one bucket length Tb >= every T (rows padded to a row bucket), their caches scattered into
              their rows ending at pos in the same jitted call: start_i = pos - T_i (padding lands left of
              start_i, masked).
    shift:    when the next call would run past column L, every row is rolled left by the smallest start among
              live slots (a live slot is shorter than n_positions, and L = n_positions + K, so there is always
              room); before a join that needs pos >= Tb, rows are rolled right instead.
    leave:    a slot that finished (eos, max_tokens) or was cancelled is only marked free; its row is reused.

So one jitted call of K decode steps of shape (S, 1) serves every live request, requests join and leave
between calls, and each row's tokens are what the model gives for that prompt alone (greedy:
`generate(do_sample=False)`).

Where the time went at 16 clients (default 4x128 shape, engine alone, before this layout): each join was its
own prefill + insert call and read its first token back at once (16 host syncs between decode calls), and
the first request of each new row count, window or prompt length compiled (3-4 s each on this 2-core
machine) while every live stream waited. Now `warm_up` compiles every shape ahead of time (AOT, jax's
persistent cache makes a restart quick), joins are one call, and the first tokens are read after the
previous decode call's. Measured afterwards (engine alone, 112 requests, `timings`): waiting for decode
calls 78% of the worker's host time, join dispatch + first-token wait 15%, decode dispatch 5%, emit and
flush 1%; through HTTP the event loop sits idle in epoll most of the time (cProfile), so what is left is
CPU shared with the load generator and other processes on 2 cores, not the engine's host work.

`TorchEngine` serves the PyTorch twin one request at a time through `model.generate` itself.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

TOP_LOGPROBS = 5  # the most alternatives per position a request may ask for (OpenAI's completions limit)
WINDOW_STEP = 64  # decode windows: 32, 64, 96, 128, then multiples of this below n_positions, then the whole cache
ROW_BUCKETS = (1, 4, 16, 64)  # decode calls run this many rows (the fewest that hold every live slot)
CACHE_TIME_AXIS = 2  # the model's KV cache keys and values are (batch, heads, time, head_dim)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0
    ignore_eos: bool = False  # keep generating after <|endoftext|> (benchmarks: every request runs max_tokens)
    logprobs: bool = False  # report each token's logprob and the TOP_LOGPROBS alternatives (else 0.0 and ())


@dataclass(frozen=True)
class Token:
    id: int
    logprob: float  # the model's log-probability of this token (before temperature and filters), if asked
    top: tuple[tuple[int, float], ...]  # the TOP_LOGPROBS most likely (id, logprob) at this position, if asked


@dataclass(frozen=True)
class Finished:
    reason: str  # "eos", "length", "cancelled" or "error"
    message: str = ""


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    on_events: Callable[[list[Token | Finished]], None]  # called from the worker, with the events of one step
    eos_token_id: int | None = None
    cancelled: bool = False
    generated: int = field(default=0, init=False)


@dataclass(eq=False)
class ScoreJob:
    """Log-probabilities of a prompt's own tokens (echo), answered through `future`: a list with None for the
    first token, then (logprob, top pairs) for each next token."""

    prompt_ids: list[int]
    future: Future


class Engine:
    """The worker thread and its inbox; subclasses implement `_run`."""

    def __init__(self):
        self._inbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=type(self).__name__, daemon=True)
        self._closed = False
        self._error: str | None = None  # set when the worker stopped: every later job fails with it

    def start(self) -> Engine:
        self._thread.start()
        return self

    def submit(self, job: Request | ScoreJob) -> None:
        if self._error is not None:
            _fail(job, self._error)
        else:
            self._inbox.put(job)

    def cancel(self, request: Request) -> None:
        """Free the request's slot before the next step (a client disconnected)."""
        request.cancelled = True
        self._inbox.put(None)  # wakes an idle worker

    def close(self) -> None:
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout=10)

    def _main(self) -> None:
        try:
            self._run()
        except BaseException:  # the worker must never die silently: fail what is in flight, then say why
            traceback.print_exc()
            self._error = "the model worker stopped after an internal error (see the server's log)"
            for job in self._in_flight():
                _fail(job, self._error)
            self._fail_all(self._error)
            raise

    def _run(self) -> None:
        raise NotImplementedError

    def summary(self) -> str | None:
        """A line for the server's log at shutdown (what the worker did), where the engine keeps one."""
        return None

    def _in_flight(self) -> list:
        """The requests the worker holds outside its inbox (to fail them if it stops)."""
        return []

    def _fail_all(self, message: str) -> None:
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            _fail(job, message)


def _fail(job, message: str) -> None:
    if isinstance(job, Request):
        job.on_events([Finished("error", message)])
    elif isinstance(job, ScoreJob) and not job.future.done():
        job.future.set_exception(RuntimeError(message))


def _top(ids, logprobs, n: int = TOP_LOGPROBS) -> tuple[tuple[int, float], ...]:
    return tuple((int(i), float(lp)) for i, lp in zip(ids[:n], logprobs[:n]))


def _finish_reason(request: Request, token_id: int) -> str | None:
    if token_id == request.eos_token_id and not request.params.ignore_eos:
        return "eos"
    if request.generated >= request.params.max_tokens:
        return "length"
    return None


def decode_windows(n_positions: int, cache_len: int) -> list[int]:
    """The cache widths a decode call may run on: few (each compiles), fine enough that a step reads little
    more of the cache than the live tokens: 32, 64, 96, 128, then steps of WINDOW_STEP, then the whole cache.
    (A call's time grows with its window: 4 x 128, 16 rows, 8 steps took 7.2 / 9.8 / 14.3 ms at 32 / 64 / 136
    columns; staggered requests span a little more than their own length, hence 96.)"""
    windows = [w for w in (32, 64, 96, 128) if w < n_positions]
    windows += range(128 + WINDOW_STEP, n_positions, WINDOW_STEP)
    return [*windows, cache_len]


def bucket_length(n: int, limit: int, smallest: int = 16) -> int:
    """The padded length for n tokens: a power of two (>= smallest), at most `limit`."""
    length = smallest
    while length < n:
        length *= 2
    return min(length, limit)


# ----------------------------------------------------------------------------------------------------------
# Flax: continuous batching


@dataclass(eq=False)
class _Slot:
    request: Request
    start: int  # the cache column of its first prompt token
    key: np.ndarray  # the request's PRNG key (from its seed)


class FlaxBatchEngine(Engine):
    """Continuous batching for a Flax causal LM with `slots` rows; each dispatch runs `steps_per_call` decode
    steps in one jitted `lax.scan` (requests join and leave between calls; a row that finishes mid-call has its
    remaining tokens dropped), so the per-call overhead is paid once per few tokens, as inside `generate`'s own
    loop. The cache has n_positions + 2 * steps_per_call columns: calls are pipelined (the next is dispatched
    before the last one's tokens are read), so a slot that has in fact reached its limit may still be live for
    one call in flight and the one being dispatched; its span is then under n_positions + 2K, and the shift
    before a call that would run past the end always frees enough columns."""

    def __init__(self, model, params=None, slots: int = 16, steps_per_call: int = 8):
        import jax

        from ..streaming import context_length

        super().__init__()
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be at least 1, got {steps_per_call}")
        self.model = model
        self.params = model.params if params is None else params
        self.n_positions = context_length(model.config)
        self.slots = slots
        self.steps_per_call = steps_per_call
        self.cache_len = self.n_positions + 2 * steps_per_call
        self.windows = decode_windows(self.n_positions, self.cache_len)
        self.row_buckets = sorted({b for b in ROW_BUCKETS if b < slots} | {slots})  # rows of a decode or join call
        self.prompt_buckets = sorted({bucket_length(n, self.cache_len) for n in range(1, self.n_positions)})
        self._decode = jax.jit(self._decode_fn, donate_argnums=(1,), static_argnames=("window", "rows"))
        self._join_call = jax.jit(self._join_fn, donate_argnums=(1, 2, 3))
        self._roll = jax.jit(self._roll_fn, donate_argnums=(0,))
        self._score = jax.jit(self._score_fn)
        self.cache = None  # made on the worker thread
        self.pos = 0
        self.rows: list[_Slot | None] = [None] * slots
        self.waiting: deque[Request] = deque()
        self.steps = 0  # decode steps run (for tests and logs)
        self.row_steps = 0  # decode steps x rows in use at the time (the batch the server actually ran)
        self.shifts = 0
        self.joins = 0  # prefill calls (each joins every request that waits, up to the free rows)
        self.late_compiles = 0  # shapes first run while serving (each compiled there; warm_up() makes this 0)
        self._outbox: dict[Request, list] = {}  # events of this loop turn, sent together per request
        self._warm_up: threading.Event | None = None  # set by warm_up(): compile every shape before serving
        self.compiled = (0, 0.0)  # (shapes, seconds) compiled by warm_up()
        self.timings: dict[str, list] = {}  # name -> [count, seconds] of the worker's host-side pieces
        self._shapes: set = set()  # the decode and join shapes run so far (a new one compiles unless warmed up)

    # ---- jitted pieces ----------------------------------------------------------------------------------

    def _decode_fn(self, params, cache, tokens, counters, pos, window_start, starts, live, keys, temperature,
                   top_k, top_p, want_logprobs, window: int, rows: int):
        """steps_per_call decode steps over all rows: per step (tokens, logprobs, best ids, best logprobs),
        stacked (K, S, ...), and the new cache, next tokens and PRNG counters.

        The steps run on a window of the cache: its first `rows` rows (every live slot: joins take the lowest
        free row) and `window` columns from `window_start` (every live token and the K new columns), copied out
        once, with only the K new columns written back, so a step costs what the live slots need rather than
        the whole cache; both sizes are rounded up (ROW_BUCKETS, `decode_windows`), so it compiles a few times
        (all in `warm_up`).
        """
        import jax
        import jax.numpy as jnp

        from .sampling import pick_tokens

        def sliced(path, x):
            return x if _is_index(path) else jax.lax.dynamic_slice_in_dim(x[:rows], window_start, window, axis=CACHE_TIME_AXIS)

        def put_back(path, big, small):  # only the K columns the steps wrote: the rest of the window is unchanged
            if _is_index(path):
                return big
            written = jax.lax.dynamic_slice_in_dim(small, pos - window_start, self.steps_per_call,
                                                   axis=CACHE_TIME_AXIS)
            return jax.lax.dynamic_update_slice_in_dim(big, written, pos, axis=CACHE_TIME_AXIS)

        full_tokens, full_counters = tokens, counters
        tokens, counters, live, keys = tokens[:rows], counters[:rows], live[:rows], keys[:rows]
        temperature, top_k, top_p, want_logprobs = temperature[:rows], top_k[:rows], top_p[:rows], want_logprobs[:rows]
        cols = jnp.arange(window)[None, :]
        starts = starts[:rows] - window_start  # columns inside the window

        def step(carry, i):
            part, tokens, counters = carry
            at = pos - window_start + i  # the shared write column of this step
            mask = (cols >= starts[:, None]) & (cols <= at) & live[:, None]  # (S, W): the row's own columns
            positions = jnp.clip(jnp.where(live, at - starts, 0), 0, self.n_positions - 1)[:, None]  # (S, 1)
            out = self.model(tokens[:, None], attention_mask=mask.astype(jnp.int32), position_ids=positions,
                             params=params, past_key_values=_with_index(part, at))
            step_keys = jax.vmap(jax.random.fold_in)(keys, counters)
            picked = pick_tokens(out.logits[:, -1], step_keys, temperature, top_k, top_p, want_logprobs, TOP_LOGPROBS)
            return (out.past_key_values, picked[0], counters + 1), picked

        part = jax.tree_util.tree_map_with_path(sliced, cache)
        (part, tokens, counters), picked = jax.lax.scan(step, (part, tokens, counters), jnp.arange(self.steps_per_call))
        cache = jax.tree_util.tree_map_with_path(put_back, cache, part)
        return picked, cache, full_tokens.at[:rows].set(tokens), full_counters.at[:rows].set(counters)

    def _join_fn(self, params, cache, tokens, counters, ids, lengths, rows, col, keys, temperature, top_k, top_p):
        """Prefill R prompts at once, each left-padded to the bucket Tb (ids (R, Tb), lengths (R,)), and write
        their caches into rows `rows` (R,), columns [col, col + Tb), in place; row index S (past the end) marks a
        padding row, whose writes are dropped. Returns each prompt's first token (tokens, logprobs, best ids,
        best logprobs), (R, ...), and the cache, next tokens and PRNG counters with those rows set."""
        import jax
        import jax.numpy as jnp

        from .sampling import pick_tokens

        R, Tb = ids.shape
        cols = jnp.arange(Tb)[None, :]
        pad = (Tb - lengths)[:, None]  # (R, 1)
        out = self.model(ids, attention_mask=(cols >= pad).astype(jnp.int32), position_ids=jnp.maximum(cols - pad, 0),
                         params=params, past_key_values=self.model.init_cache(R, Tb))
        first_keys = jax.vmap(jax.random.fold_in)(keys, jnp.zeros((R,), jnp.uint32))
        picked = pick_tokens(out.logits[:, -1], first_keys, temperature, top_k, top_p, jnp.ones((R,), bool),
                             TOP_LOGPROBS)
        # (R, 1) rows x (1, Tb) columns of the (S, H, L, D) cache; indices split by a slice index (R, Tb, H, D)
        where = (rows[:, None], slice(None), col + cols)

        def put(path, big, small):  # small: (R, H, Tb, D)
            return big if _is_index(path) else big.at[where].set(small.transpose(0, 2, 1, 3).astype(big.dtype), mode="drop")

        cache = jax.tree_util.tree_map_with_path(put, cache, out.past_key_values)
        tokens = tokens.at[rows].set(picked[0], mode="drop")
        counters = counters.at[rows].set(1, mode="drop")
        return picked, cache, tokens, counters

    @staticmethod
    def _roll_fn(cache, shift):
        import jax
        import jax.numpy as jnp

        return jax.tree_util.tree_map_with_path(lambda p, x: x if _is_index(p) else jnp.roll(x, -shift, axis=CACHE_TIME_AXIS), cache)

    def _score_fn(self, params, ids, mask):
        """Log-probabilities of each next token of a right-padded prompt (1, Tb), and the best alternatives."""
        import jax
        import jax.numpy as jnp

        logits = self.model(ids, attention_mask=mask, params=params).logits[0, :-1].astype(jnp.float32)  # (Tb-1, V)
        logprobs = jax.nn.log_softmax(logits, axis=-1)
        chosen = jnp.take_along_axis(logprobs, ids[0, 1:, None], axis=-1)[:, 0]
        best_logprobs, best_ids = jax.lax.top_k(logprobs, TOP_LOGPROBS)
        return chosen, best_ids, best_logprobs

    def _in_flight(self) -> list:
        return [slot.request for slot in self.rows if slot is not None] + list(self.waiting) + \
            [r for r in self._outbox if not any(isinstance(e, Finished) for e in self._outbox[r])]

    # ---- the loop -----------------------------------------------------------------------------------------
    # One decode call is kept in flight: call k+1 is dispatched (jax runs it asynchronously) before call k's
    # tokens are read back and handed to the clients, so the Python work overlaps the model's. The tokens and
    # PRNG counters that feed the next call never leave the device; a slot that finished in call k has one
    # wasted row in call k+1, whose output is dropped (the row's slot is no longer the one it was run for).
    # Every waiting request joins in ONE prefill call per loop turn, dispatched before the decode call that
    # already runs its row; its first token is read back after the previous decode call's tokens.

    def _run(self) -> None:
        import jax.numpy as jnp

        S = self.slots
        self.cache = self.model.init_cache(S, self.cache_len)
        self.tokens = jnp.zeros((S,), jnp.int32)  # on device: the token each row feeds next
        self.counters = jnp.zeros((S,), jnp.uint32)  # on device: how many tokens each row has sampled
        self._settings = None  # per-row (starts, live, keys, temperature, top_k, top_p) on device; None = stale
        if self._warm_up is not None:
            self._compile_all()
            self._warm_up.set()
        pending = None
        while not self._closed:
            self._read_inbox(block=pending is None and not self.waiting and not any(self.rows))
            for row, slot in enumerate(self.rows):
                if slot is not None and slot.request.cancelled:
                    self._leave(row, "cancelled")
            for request in [r for r in self.waiting if r.cancelled]:
                self.waiting.remove(request)
                self._send(request, Finished("cancelled"))
            joined = self._join_waiting() if self.waiting and None in self.rows else None
            dispatched = self._dispatch() if any(self.rows) else None
            if pending is not None:
                self._deliver(*pending)
            if joined is not None:
                self._deliver_first(*joined)
            pending = dispatched
            with self._timed("flush"):
                self._flush()

    def warm_up(self) -> tuple[int, float]:
        """Start the worker and compile, before any request, every shape a request can need (each decode row
        bucket x window, each join row bucket x prompt-length bucket), so that no compile stalls the live
        streams later; returns (shapes compiled, seconds)."""
        self._warm_up = threading.Event()
        self.start()
        while not self._warm_up.wait(0.1):
            if not self._thread.is_alive():
                raise RuntimeError(self._error or "the model worker stopped while compiling")
        return self.compiled

    def _compile_all(self) -> None:
        """Compile (ahead of time, in a thread per core: XLA compiles without the GIL) every decode and join
        shape; a later call of the same shape finds it in jit's cache."""
        from concurrent.futures import ThreadPoolExecutor

        start = time.perf_counter()
        row_buckets, lengths = self.row_buckets, self.prompt_buckets
        state = (self.params, self.cache, self.tokens, self.counters)
        settings, scalar = self._device_settings(), np.int32(0)
        lowered = []
        for rows in row_buckets:
            for window in self.windows:
                self._shapes.add(("decode", rows, window))
                lowered.append(self._decode.lower(*state, scalar, scalar, *settings, window=window, rows=rows))
            for Tb in lengths:
                self._shapes.add(("join", rows, Tb))
                lowered.append(self._join_call.lower(
                    *state, np.zeros((rows, Tb), np.int32), np.full(rows, Tb, np.int32), np.full(rows, self.slots, np.int32),
                    scalar, np.zeros((rows, 2), np.uint32), np.zeros(rows, np.float32), np.zeros(rows, np.int32),
                    np.ones(rows, np.float32)))
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(lambda x: x.compile(), lowered))
        self.compiled = (len(lowered), time.perf_counter() - start)

    def summary(self) -> str:
        """What the worker did, for the server's log at shutdown: calls, the rows they ran, where its time went."""
        calls = self.steps // self.steps_per_call
        rows = self.row_steps / self.steps if self.steps else 0.0
        times = ", ".join(f"{name} {seconds:.2f} s" for name, (_, seconds) in sorted(self.timings.items()))
        return (f"engine: {calls} decode calls of {self.steps_per_call} steps ({rows:.1f} of {self.slots} rows in use "
                f"on average), {self.joins} prefill calls, {self.shifts} cache shifts, {self.late_compiles} late "
                f"compiles; worker time: {times or 'none'}")

    def _timed(self, name: str):
        return _Timer(self.timings, name)

    def _send(self, request: Request, event) -> None:
        self._outbox.setdefault(request, []).append(event)

    def _flush(self) -> None:
        """One callback per request per loop turn (a step's K tokens, not K wake-ups of the event loop)."""
        outbox, self._outbox = self._outbox, {}
        for request, events in outbox.items():
            request.on_events(events)

    def _read_inbox(self, block: bool) -> None:
        while True:
            try:
                job = self._inbox.get(block=block)
            except queue.Empty:
                return
            block = False
            if isinstance(job, Request):
                self.waiting.append(job)
            elif isinstance(job, ScoreJob):
                self._run_score(job)

    def _join_waiting(self):
        """Dispatch one prefill call for as many waiting requests as there are free rows (the lowest free rows,
        so decode calls run the fewest rows); returns what `_deliver_first` needs once it has run."""
        free = [row for row, slot in enumerate(self.rows) if slot is None]
        joining = [self.waiting.popleft() for _ in range(min(len(free), len(self.waiting)))]
        R = len(joining)
        Rb = self._row_bucket(R)
        Tb = bucket_length(max(len(r.prompt_ids) for r in joining), self.cache_len)
        if not any(self.rows):
            self.pos = Tb  # nothing else lives in the cache: start afresh
        elif self.pos < Tb:
            self._shift(self.pos - Tb)  # room on the left for the prompts: roll every row right
        with self._timed("join"):
            ids = np.zeros((Rb, Tb), np.int32)
            lengths, rows = np.full(Rb, Tb, np.int32), np.full(Rb, self.slots, np.int32)  # padding rows: dropped
            keys, temperature = np.zeros((Rb, 2), np.uint32), np.zeros(Rb, np.float32)
            top_k, top_p = np.zeros(Rb, np.int32), np.ones(Rb, np.float32)
            slots = []
            for i, (row, request) in enumerate(zip(free, joining)):
                T, p = len(request.prompt_ids), request.params
                ids[i, Tb - T:] = request.prompt_ids
                lengths[i], rows[i], keys[i] = T, row, _prng_key(p.seed)
                temperature[i], top_k[i], top_p[i] = p.temperature, p.top_k, p.top_p
                self.rows[row] = slot = _Slot(request, start=self.pos - T, key=keys[i])
                slots.append((row, slot))
            self._settings = None
            self._count_shape(("join", Rb, Tb))
            self.joins += 1
            picked, self.cache, self.tokens, self.counters = self._join_call(
                self.params, self.cache, self.tokens, self.counters, ids, lengths, rows, np.int32(self.pos - Tb), keys,
                temperature, top_k, top_p)
        return picked, slots

    def _deliver_first(self, picked, slots) -> None:
        with self._timed("join wait"):
            first, logprob, best_ids, best_lps = jax_device_get(picked)
        for i, (row, slot) in enumerate(slots):
            if self.rows[row] is slot:  # not cancelled meanwhile
                self._emit(row, int(first[i]), float(logprob[i]), _top(best_ids[i], best_lps[i]))

    def _row_bucket(self, n: int) -> int:
        """The rows a decode or join call runs for n rows in use: the smallest of `row_buckets` (what warm_up
        compiled) that holds them."""
        return next(b for b in self.row_buckets if b >= n)

    def _count_shape(self, key) -> None:
        if key not in self._shapes:
            self._shapes.add(key)
            self.late_compiles += 1

    def _shift(self, shift: int) -> None:
        """Roll every row left by `shift` columns (right when negative); the slots' starts move with them."""
        import jax.numpy as jnp

        self.cache = self._roll(self.cache, jnp.int32(shift))
        self.pos -= shift
        for slot in self.rows:
            if slot is not None:
                slot.start -= shift
        self._settings = None
        self.shifts += 1

    def _device_settings(self):
        import jax.numpy as jnp

        if self._settings is None:
            def column(f, dtype, empty=0):
                return jnp.asarray(np.array([f(s) if s else empty for s in self.rows], dtype=dtype))

            self._settings = (
                column(lambda s: s.start, np.int32), jnp.asarray(np.array([s is not None for s in self.rows])),
                jnp.asarray(np.stack([s.key if s else np.zeros(2, np.uint32) for s in self.rows])),
                column(lambda s: s.request.params.temperature, np.float32),
                column(lambda s: s.request.params.top_k, np.int32),
                column(lambda s: s.request.params.top_p, np.float32, 1.0),
                column(lambda s: s.request.params.logprobs, bool, False))
        return self._settings

    def _dispatch(self):
        """Start one decode call over every row; returns what `_deliver` needs once its results are read."""
        K = self.steps_per_call
        with self._timed("dispatch"):
            if self.pos + K > self.cache_len:
                self._shift(min(slot.start for slot in self.rows if slot is not None))
            first = min(slot.start for slot in self.rows if slot is not None)
            window = next(w for w in self.windows if w >= self.pos + K - first)
            window_start = min(first, self.cache_len - window)
            needed = max(row for row, slot in enumerate(self.rows) if slot is not None) + 1
            rows = self._row_bucket(needed)
            self._count_shape(("decode", rows, window))
            outputs, self.cache, self.tokens, self.counters = self._decode(
                self.params, self.cache, self.tokens, self.counters, np.int32(self.pos), np.int32(window_start),
                *self._device_settings(), window=window, rows=rows)
        self.pos += K
        self.steps += K
        self.row_steps += K * sum(slot is not None for slot in self.rows)
        return outputs, list(self.rows[:rows])

    def _deliver(self, outputs, rows_then) -> None:
        with self._timed("decode wait"):
            tokens, logprobs, best_ids, best_lps = jax_device_get(outputs)  # (K, rows, ...): waits for the call
        with self._timed("emit"):
            for k in range(self.steps_per_call):
                for row, slot in enumerate(rows_then):
                    if slot is not None and self.rows[row] is slot:  # still the slot this row was computed for
                        asked = slot.request.params.logprobs
                        self._emit(row, int(tokens[k, row]), float(logprobs[k, row]) if asked else 0.0,
                                   _top(best_ids[k, row], best_lps[k, row]) if asked else ())

    def _emit(self, row: int, token_id: int, logprob: float, top) -> None:
        slot = self.rows[row]
        request = slot.request
        request.generated += 1
        self._send(request, Token(token_id, logprob, top))
        reason = _finish_reason(request, token_id)
        if reason is not None:
            self._leave(row, reason)

    def _leave(self, row: int, reason: str) -> None:
        request = self.rows[row].request
        self.rows[row] = None
        self._settings = None
        self._send(request, Finished(reason))

    def _run_score(self, job: ScoreJob) -> None:
        import jax.numpy as jnp

        try:
            T = len(job.prompt_ids)
            Tb = bucket_length(T, self.n_positions)
            ids = jnp.asarray([job.prompt_ids + [0] * (Tb - T)], dtype=jnp.int32)
            mask = jnp.asarray([[1] * T + [0] * (Tb - T)], dtype=jnp.int32)
            chosen, best_ids, best_lps = (np.asarray(x) for x in self._score(self.params, ids, mask))
            job.future.set_result([None] + [(float(chosen[t]), _top(best_ids[t], best_lps[t])) for t in range(T - 1)])
        except Exception as err:  # noqa: BLE001  a failed score answers its own request only
            job.future.set_exception(err)


class _Timer:
    """Adds one [count, seconds] measurement to `timings[name]` (the worker's own profile)."""

    def __init__(self, timings: dict, name: str):
        self.entry = timings.setdefault(name, [0, 0.0])

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *_):
        self.entry[0] += 1
        self.entry[1] += time.perf_counter() - self.start


def jax_device_get(tree):
    """The arrays of `tree` as numpy, in one transfer (waits for the call that makes them)."""
    import jax

    return jax.device_get(tree)


def _prng_key(seed: int) -> np.ndarray:
    """`jax.random.PRNGKey(seed)`, computed on the host: the threefry key is the seed's high and low 32 bits
    (high ones only with jax_enable_x64; otherwise the seed wraps to 32 bits). Calling jax here would dispatch
    a device op per joining request, on the worker's critical path."""
    import jax

    seed = int(seed)
    high = (seed >> 32) & 0xFFFFFFFF if jax.config.jax_enable_x64 else 0
    return np.array([high, seed & 0xFFFFFFFF], np.uint32)


def _is_index(path) -> bool:
    return getattr(path[-1], "key", None) == "cache_index"


def _with_index(cache, pos):
    """The cache with every layer's write position (`cache_index`) set to pos."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map_with_path(lambda p, x: jnp.asarray(pos, x.dtype) if _is_index(p) else x, cache)


# ----------------------------------------------------------------------------------------------------------
# PyTorch: one request at a time through generate


class EnginePool:
    """Several batch engines behind one `submit`: each request goes to the engine with the fewest requests in
    hand, and each engine runs its own worker thread, cache and jitted calls.

    Why: on a small model XLA runs a decode call on about one core (at 4 x 128, 16 rows: the same tokens/s
    pinned to one core as on two), so on a 2-core machine one engine of 16 rows leaves a core idle, while two
    engines of 8 rows run their calls side by side (XLA releases the GIL): measured without HTTP, 16 closed-loop
    streams got 1.5x the tokens/s of one 16-row engine. A model large enough to keep every core busy gains
    nothing from a pool; `scripts/serve.py --engines` chooses."""

    def __init__(self, engines: list[FlaxBatchEngine]):
        if not engines:
            raise ValueError("an EnginePool needs at least one engine")
        self.engines = engines
        self._held = [0] * len(engines)  # requests submitted to each and not finished yet
        self._lock = threading.Lock()
        self._next_score = 0

    def start(self) -> EnginePool:
        for engine in self.engines:
            engine.start()
        return self

    def warm_up(self) -> tuple[int, float]:
        """Compile every engine's shapes (one after another: each compiles on every core); (shapes, seconds)."""
        shapes = seconds = 0
        for engine in self.engines:
            n, t = engine.warm_up()
            shapes, seconds = shapes + n, seconds + t
        return shapes, seconds

    def submit(self, job: Request | ScoreJob) -> None:
        with self._lock:
            if isinstance(job, ScoreJob):  # one forward pass each: take turns
                self._next_score = i = (self._next_score + 1) % len(self.engines)
            else:
                i = min(range(len(self.engines)), key=self._held.__getitem__)
                self._held[i] += 1
                job.on_events = self._counting(i, job.on_events)
        self.engines[i].submit(job)

    def _counting(self, i: int, on_events):
        def on(events):
            if any(isinstance(event, Finished) for event in events):
                with self._lock:
                    self._held[i] -= 1
            on_events(events)
        return on

    def cancel(self, request: Request) -> None:
        for engine in self.engines:  # the flag is the request's own; waking the others costs nothing
            engine.cancel(request)

    def close(self) -> None:
        for engine in self.engines:
            engine.close()

    def summary(self) -> str:
        return "\n".join(f"{engine.summary()} [engine {i + 1} of {len(self.engines)}]"
                         for i, engine in enumerate(self.engines))


class TorchEngine(Engine):
    """The PyTorch twin, one request at a time through `model.generate`, streamed token by token.

    The sampling filters are passed as our own processor list after a first processor that records the raw
    log-probabilities of every step, so `logprobs` are the model's, as on the Flax side.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def _run(self) -> None:
        while not self._closed:
            job = self._inbox.get()
            if isinstance(job, ScoreJob):
                self._run_score(job)
            elif isinstance(job, Request):
                if job.cancelled:
                    job.on_events([Finished("cancelled")])
                    continue
                try:
                    self._generate(job)
                except Exception as err:  # noqa: BLE001  one failed request answers its own client only
                    traceback.print_exc()
                    job.on_events([Finished("error", f"generation failed: {type(err).__name__}")])

    def _generate(self, request: Request) -> None:
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )
        from transformers.generation.streamers import BaseStreamer

        p = request.params
        steps: list[torch.Tensor] = []  # raw log-probabilities of each step, (V,)

        class RecordLogprobs(LogitsProcessor):
            def __call__(self, input_ids, scores):
                steps.append(torch.log_softmax(scores[0].float(), dim=-1))
                return scores

        class Emit(BaseStreamer):
            prompt_seen = False
            last = None

            def put(self, value):
                if not self.prompt_seen:  # generate first puts the prompt
                    self.prompt_seen = True
                    return
                token_id = self.last = int(value.reshape(-1)[0])
                logprobs = steps[-1]
                best = torch.topk(logprobs, TOP_LOGPROBS)
                request.generated += 1
                request.on_events([Token(token_id, float(logprobs[token_id]),
                                        _top(best.indices.tolist(), best.values.tolist()))])

            def end(self):
                pass

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), request.cancelled, dtype=torch.bool)

        processors = [RecordLogprobs()]
        sampling = {"do_sample": False}
        if p.temperature > 0:
            processors.append(TemperatureLogitsWarper(p.temperature))
            if p.top_k:
                processors.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1:
                processors.append(TopPLogitsWarper(p.top_p))
            sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
        torch.manual_seed(p.seed)
        input_ids = torch.tensor([request.prompt_ids], dtype=torch.long)
        eos = None if p.ignore_eos else request.eos_token_id
        emit = Emit()
        with torch.no_grad():
            self.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=p.max_tokens,
                logits_processor=LogitsProcessorList(processors), stopping_criteria=StoppingCriteriaList([Cancelled()]),
                streamer=emit, eos_token_id=eos if eos is not None else [], pad_token_id=request.eos_token_id,
                **sampling,
            )
        if request.cancelled:
            request.on_events([Finished("cancelled")])
        else:
            request.on_events([Finished("eos" if emit.last == eos else "length")])

    def _run_score(self, job: ScoreJob) -> None:
        import torch

        try:
            with torch.no_grad():
                logits = self.model(torch.tensor([job.prompt_ids], dtype=torch.long)).logits[0, :-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            chosen = logprobs.gather(-1, torch.tensor(job.prompt_ids[1:])[:, None])[:, 0].tolist()
            best = torch.topk(logprobs, TOP_LOGPROBS, dim=-1)
            job.future.set_result([None] + [(chosen[t], _top(best.indices[t].tolist(), best.values[t].tolist()))
                                            for t in range(len(chosen))])
        except Exception as err:  # noqa: BLE001  answers its own request only
            job.future.set_exception(err)
