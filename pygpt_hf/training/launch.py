"""Which process of which run this is: `--coordinator-address HOST:PORT --num-processes N --process-id I`, the
same from the environment, or a cluster manager that jax.distributed reads by itself. Pure Python (no jax), so
settings can be validated, naming the flag or variable, before anything starts.

Environment variables stand in for the flags because a launcher sets them per process (JAX itself reads only
JAX_COORDINATOR_ADDRESS): PYGPT_COORDINATOR_ADDRESS, PYGPT_NUM_PROCESSES, PYGPT_PROCESS_ID, then JAX_* ones.
These settings describe the launch, not the run: a resumed run may be launched differently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

# The launch settings, each with the environment variables that stand in for its flag (ours first, then JAX's).
LAUNCH_ENV = {
    "coordinator_address": ("PYGPT_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("PYGPT_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("PYGPT_PROCESS_ID", "JAX_PROCESS_ID"),
}


@dataclass(frozen=True)
class Launch:
    """How this process joins a run: explicit (coordinator, count, id) or `auto` (a cluster manager jax reads)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False
    cluster: str = ""  # what was detected, for the log

    def describe(self) -> str:
        if self.auto:
            return f"process group from {self.cluster} (jax.distributed auto-detection)"
        return f"process {self.process_id} of {self.num_processes}, coordinator {self.coordinator_address}"


def _detected_cluster(environ: Mapping[str, str]) -> str | None:
    """The multi-process cluster manager jax.distributed.initialize() can read by itself, if any."""
    def more_than_one(name: str) -> bool:
        return environ.get(name, "1").strip() not in ("", "0", "1")

    if "SLURM_JOB_ID" in environ and more_than_one("SLURM_NTASKS"):
        return "Slurm"
    if "OMPI_MCA_orte_hnp_uri" in environ and more_than_one("OMPI_COMM_WORLD_SIZE"):
        return "Open MPI"
    if "KUBERNETES_SERVICE_HOST" in environ and "JOB_COMPLETION_INDEX" in environ:
        return "Kubernetes (indexed Job)"
    if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "Cloud TPU"
    return None


def _launch_value(settings, name: str, environ: Mapping[str, str]) -> tuple[object, str]:
    """(value, where it came from): the flag, else the first environment variable that is set."""
    value = getattr(settings, name, None)
    if value is not None:
        return value, f"--{name.replace('_', '-')}"
    for var in LAUNCH_ENV[name]:
        if environ.get(var, "").strip():
            return environ[var].strip(), var
    return None, f"--{name.replace('_', '-')}"


def resolve_launch(settings, environ: Mapping[str, str] = os.environ) -> Launch | None:
    """The launch of this process from `--coordinator-address/--num-processes/--process-id`, their environment
    variables (PYGPT_*, then JAX_*) or a detected cluster; None for a plain single-process run. Bad values are
    named with the flag or variable they came from."""
    (address, address_from), (count, count_from), (index, index_from) = (
        _launch_value(settings, name, environ) for name in LAUNCH_ENV)
    if address is None and count is None and index is None:
        cluster = _detected_cluster(environ)
        return Launch(auto=True, cluster=cluster) if cluster else None
    numbers = {}
    for value, where, name in ((count, count_from, "count"), (index, index_from, "index")):
        try:
            numbers[name] = None if value is None else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be an integer, got {value!r}") from None
    count, index = numbers["count"], numbers["index"]
    if count is not None and count < 1:
        raise ValueError(f"{count_from} must be >= 1, got {count}")
    if count == 1 and address is None and index in (None, 0):
        return None  # one process: nothing to join
    missing = [where for value, where in ((address, address_from), (count, count_from), (index, index_from))
               if value is None]
    if missing:
        raise ValueError(f"a multi-process run needs --coordinator-address HOST:PORT, --num-processes N and "
                         f"--process-id I (or PYGPT_COORDINATOR_ADDRESS, PYGPT_NUM_PROCESSES, PYGPT_PROCESS_ID) "
                         f"on every process; missing: {', '.join(missing)}")
    if not 0 <= index < count:
        raise ValueError(f"{index_from} must be in [0, {count}) for {count} processes ({count_from}), got {index}")
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(\d+)", str(address))
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"{address_from} must be HOST:PORT (the address of process 0 and a free port in "
                         f"1..65535), got {address!r}")
    return Launch(str(address), count, index)
