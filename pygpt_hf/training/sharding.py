"""Spreading the work over devices: a 1-D mesh named "data", and where each array lives on it.

- Data parallel (default): every device holds all parameters; each batch is split along its batch axis
  (`P(None, "data")` for (accum, batch, T+1)). jit + GSPMD insert the gradient all-reduce themselves.
- `--fsdp`: parameters and optimizer state are also split, each leaf along its largest axis that divides
  by the device count (small leaves stay replicated); XLA gathers a layer's weights when it needs them.
  Same maths, less memory per device.
- Several processes (hosts, or one process per GPU): `join_processes` calls `jax.distributed.initialize`
  before anything else touches jax; the mesh then spans every process's devices, each process puts its
  rows of the global batch on its own devices (`put_global`), and `barrier` waits for all of them with a
  bounded timeout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .launch import Launch, resolve_launch

AXIS = "data"
# How long a process waits at a barrier (a checkpoint's steps) for the others before it gives up, naming itself:
# long enough for process 0 to write a big model folder.
BARRIER_TIMEOUT_S = float(os.environ.get("PYGPT_BARRIER_TIMEOUT_S", "900"))
def join_processes(settings, environ: Mapping[str, str] = os.environ) -> Launch | None:
    """Join the multi-process run `settings` / the environment describe (once; before any other jax work).

    On CPU the processes talk through gloo, set explicitly: a jax without CPU collectives would otherwise
    start, then hang at the first collective.
    """
    launch = resolve_launch(settings, environ)
    if launch is None:
        return None
    if jax.distributed.is_initialized():
        return launch
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError) as err:
        raise RuntimeError(f"multi-process training on CPU needs jax's gloo collectives "
                           f"(jax_cpu_collectives_implementation), which jax {jax.__version__} lacks: {err}. "
                           f"Install a newer jax (the pinned 0.10.2 has them).") from err
    if launch.auto:
        jax.distributed.initialize()  # jax reads the coordinator, process count and id from the cluster
    else:
        jax.distributed.initialize(launch.coordinator_address, launch.num_processes, launch.process_id)
    return launch


def barrier(name: str, timeout_s: float | None = None) -> None:
    """Wait until every process reaches `name` (nothing to wait for in a single-process run).

    `multihost_utils.sync_global_devices` waits forever; this waits at most `timeout_s` (BARRIER_TIMEOUT_S),
    then raises naming this process and the barrier. A process that died is reported by jax's coordination
    service (its heartbeat stops), so the others fail here too instead of hanging.
    """
    if jax.process_count() == 1:
        return
    from jax._src.distributed import global_state  # the client jax.distributed.initialize() created

    timeout_s = BARRIER_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        global_state.client.wait_at_barrier(f"pygpt:{name}", int(timeout_s * 1000))
    except Exception as err:  # jax raises its own runtime error type
        raise RuntimeError(f"process {jax.process_index()} of {jax.process_count()}: gave up at barrier {name!r} "
                           f"(timeout {timeout_s:g}s): another process failed or is stuck: {err}") from err


STOP_REASONS = (None, "time budget", "interrupted")  # in rising precedence


def agreed_stop(reason: str | None) -> str | None:
    """The reason to stop that any process has (Ctrl-C in one, the time budget in another): a collective, so
    every process leaves the loop at the same step."""
    from jax.experimental import multihost_utils

    codes = multihost_utils.process_allgather(np.int32(STOP_REASONS.index(reason)))
    return STOP_REASONS[int(np.max(codes))]


def make_mesh() -> Mesh:
    """All devices of all processes on one axis."""
    return Mesh(np.array(jax.devices()), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Training batches (accum, batch, T+1): split the batch axis."""
    return NamedSharding(mesh, P(None, AXIS))


def eval_sharding(mesh: Mesh) -> NamedSharding:
    """Eval blocks (N, T+1) and weights (N, T): split the first axis."""
    return NamedSharding(mesh, P(AXIS))


def _leaf_spec(shape: tuple[int, ...], n_devices: int, fsdp: bool) -> P:
    if not fsdp or n_devices == 1:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):  # largest axis first
        if shape[axis] % n_devices == 0 and shape[axis] >= n_devices:
            return P(*[AXIS if a == axis else None for a in range(len(shape))])
    return P()


def state_sharding(state, mesh: Mesh, fsdp: bool):
    """A NamedSharding for every leaf of the train state: replicated, or split (FSDP) where possible."""
    n = mesh.devices.size
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, _leaf_spec(np.shape(x), n, fsdp)), state)


def process_rows(sharding: NamedSharding, shape: tuple[int, ...], axis: int) -> slice:
    """The rows along `axis` that this process's devices hold of an array of `shape` (one contiguous range)."""
    spans = {(idx[axis].indices(shape[axis])[:2]) for idx in sharding.addressable_devices_indices_map(shape).values()}
    start, stop = min(a for a, _ in spans), max(b for _, b in spans)
    if sum(b - a for a, b in spans) != stop - start:
        raise ValueError(f"this process's devices hold rows {sorted(spans)} of axis {axis}: not one contiguous range")
    return slice(start, stop)


def put_global(batch: np.ndarray, sharding: NamedSharding, axis: int = 1) -> jax.Array:
    """A global batch (every process holds all of it) -> one array on the mesh.

    Each process hands jax only its own rows along the batch `axis` (`make_array_from_process_local_data`), so
    nothing crosses between hosts; on a single process this is a `device_put`.
    """
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    rows = process_rows(sharding, batch.shape, axis)
    local = batch[(slice(None),) * axis + (rows,)]
    return jax.make_array_from_process_local_data(sharding, local, batch.shape)


def put_tree(tree, shardings):
    """Host arrays that are the same on every process -> global arrays, each process filling its own devices."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    def put(leaf, sharding):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(put, tree, shardings)


def to_host(tree):
    """Every leaf as a whole numpy array on this host (gathering the shards other processes hold, which is a
    collective: every process must call it)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def check_divisible(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"--batch-size ({batch_size}) must be divisible by the number of devices ({n})")
