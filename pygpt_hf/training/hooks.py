"""Fault injection for the tests of the failure paths: environment variables, never flags a user sees.

    PYGPT_TEST_NAN_AT_STEP=6    the loss (and so the gradients) of optimizer step 6 becomes NaN
    PYGPT_TEST_KILL_AT_STEP=8   SIGKILL the process halfway through writing checkpoint 8
    PYGPT_TEST_FAIL_AT_STEP=3   raise an error right after step 3 (set in one process of a multi-process run,
                                it shows how that process's failure stops the others)

They act on the process whose environment holds them, and `train` logs them, so a run that carries one by
mistake says so on its first lines.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

NAN_AT_STEP = "PYGPT_TEST_NAN_AT_STEP"
KILL_AT_STEP = "PYGPT_TEST_KILL_AT_STEP"
FAIL_AT_STEP = "PYGPT_TEST_FAIL_AT_STEP"


class InjectedFailure(RuntimeError):
    """The error PYGPT_TEST_FAIL_AT_STEP raises."""


def _step(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"the environment variable {name} must be a step number >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class FaultHooks:
    nan_at_step: int | None = None
    kill_at_step: int | None = None
    fail_at_step: int | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> FaultHooks:
        return cls(_step(environ, NAN_AT_STEP), _step(environ, KILL_AT_STEP), _step(environ, FAIL_AT_STEP))

    def describe(self) -> str | None:
        """A line for the log when a hook is set; None otherwise."""
        active = [f"{name}={value}" for name, value in ((NAN_AT_STEP, self.nan_at_step),
                                                        (KILL_AT_STEP, self.kill_at_step),
                                                        (FAIL_AT_STEP, self.fail_at_step)) if value is not None]
        return f"test hooks active: {', '.join(active)}" if active else None

    def kill_if_due(self, step: int) -> None:
        """Die the hardest way (SIGKILL: no handler, no cleanup) when checkpoint `step` is half written."""
        if self.kill_at_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def fail_if_due(self, step: int) -> None:
        """Raise an ordinary error once step `step` has been dispatched."""
        if self.fail_at_step == step:
            raise InjectedFailure(f"{FAIL_AT_STEP}={step}: this process failed on purpose after step {step}")
