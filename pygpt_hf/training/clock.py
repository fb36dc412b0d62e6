"""Where a run's wall time goes: start-up until the first step, then the training loop split into train
steps and the host work around them.

    start-up   imports (scripts/train.py's start -> train()), data (tokenizer, eval set, first batch),
               model (build, restore, place on the mesh), compile (train and eval steps, ahead of time)
    training   the loop, first step to last save: train steps + data + eval + checkpoints + logging

Train steps are dispatched asynchronously: the host fetches the next batch while the device computes the
previous step. Data fetching that ends while that step is still running was hidden behind it and counts as
train-step time; all other host work (and data fetching that outlasted the step, whole) counts as outside the
steps. So the share of train steps reported is a lower bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

STARTUP_PARTS = ("imports", "data", "model", "compile")
HOST_PARTS = ("data", "eval", "checkpoints", "logging")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax.monitoring: one per XLA compilation


class RunClock:
    def __init__(self, started: float | None = None):
        now = time.time()
        self.started = now if started is None else started  # the process's start when the script says it
        self.startup = {"imports": now - self.started}
        self._mark = now
        self.host = dict.fromkeys(HOST_PARTS, 0.0)
        self.hidden: dict[str, float] = {}  # host work done while a train step was still running
        self.t_loop: float | None = None
        self.t_end: float | None = None
        self.compiles_in_loop = 0  # XLA compilations after the first step (the steps are compiled ahead of time)

    def lap(self, part: str) -> None:
        """Close start-up part `part` (data, model, compile), which began where the previous one ended."""
        now = time.time()
        self.startup[part] = now - self._mark
        self._mark = now

    def loop_started(self) -> None:
        import jax  # (here, so that scripts can import `describe` without jax)

        self.t_loop = time.time()
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def loop_ended(self) -> None:
        if self.t_end is None:
            import jax

            self.t_end = time.time()
            jax.monitoring.unregister_event_duration_listener(self._on_event)

    def _on_event(self, name: str, seconds: float, **kwargs) -> None:
        if name == COMPILE_EVENT:
            self.compiles_in_loop += 1

    @contextmanager
    def host_work(self, part: str, behind=None) -> Iterator[None]:
        """Time host work inside the loop that is not a train step. `behind`: an output of the step in flight;
        when it is still not ready once the work is done, the device was busy all along and the work was hidden
        behind the step (counted apart, as train-step time)."""
        start = time.time()
        try:
            yield
        finally:
            seconds = time.time() - start
            if behind is not None and not behind.is_ready():
                self.hidden[part] = self.hidden.get(part, 0.0) + seconds
            else:
                self.host[part] += seconds

    def timed(self, part: str, fn):
        """`fn`, with its calls timed as host work `part`."""
        def timed_fn(*args, **kwargs):
            with self.host_work(part):
                return fn(*args, **kwargs)
        return timed_fn

    def summary(self, tokens: int) -> dict:
        """Seconds and tokens/s, as written to metrics.jsonl and printed by scripts/train.py."""
        training = (self.t_end or time.time()) - (self.t_loop or time.time())
        steps = max(training - sum(self.host.values()), 1e-9)
        total = (self.t_end or time.time()) - self.started
        return {
            "startup_s": {part: round(self.startup.get(part, 0.0), 3) for part in STARTUP_PARTS},
            "first_step_after_s": round((self.t_loop or time.time()) - self.started, 3),
            "training_s": round(training, 3),
            "host_s": {part: round(seconds, 3) for part, seconds in self.host.items()},
            "hidden_s": {part: round(seconds, 3) for part, seconds in self.hidden.items()},
            "train_step_share": round(steps / max(training, 1e-9), 4),
            "compiles_after_first_step": self.compiles_in_loop,
            "tokens": tokens,
            "step_tokens_per_s": round(tokens / steps, 1),
            "training_tokens_per_s": round(tokens / max(training, 1e-9), 1),
            "end_to_end_tokens_per_s": round(tokens / max(total, 1e-9), 1),
        }


def describe(timings: dict) -> list[str]:
    """The summary's lines about speed, for a person."""
    share, training, host = timings["train_step_share"], timings["training_s"], timings["host_s"]
    parts = ", ".join(f"{part} {seconds / max(training, 1e-9):.1%}" for part, seconds in host.items())
    hidden = "".join(f"; {part} {seconds / max(training, 1e-9):.1%} more ran while a step computed"
                     for part, seconds in timings.get("hidden_s", {}).items())
    startup = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in timings["startup_s"].items())
    return [
        (f"  throughput   {timings['step_tokens_per_s']:,.0f} tokens/s in train steps, "
         f"{timings['training_tokens_per_s']:,.0f} over the training time, "
         f"{timings['end_to_end_tokens_per_s']:,.0f} end to end (start-up included)"),
        (f"  time         {share:.1%} of {training:.1f} s of training in train steps (outside them: {parts}{hidden}); "
         f"first step after {timings['first_step_after_s']:.1f} s ({startup})"),
        (f"  compiles     {timings['compiles_after_first_step']} after the first step"
         + (" (none expected: tell us what changed shape)" if timings["compiles_after_first_step"] else "")),
    ]
