"""Spreading the work over devices: a 1-D mesh named "data", and where each array lives on it.

- Data parallel (default): every device holds all parameters; each batch is split along its batch axis
  (`P(None, "data")` for (accum, batch, T+1)). jit + GSPMD insert the gradient all-reduce themselves.
- `--fsdp`: parameters and optimizer state are also split, each leaf along its largest axis that divides
  by the device count (small leaves stay replicated); XLA gathers a layer's weights when it needs them.
  Same maths, less memory per device.
- Several processes (hosts, or one process per GPU): `join_processes` calls `jax.distributed.initialize`
  before anything else touches jax; the mesh then spans every process's devices, each process reads the
  data shards whose rows its devices hold (`process_shards`) and puts them there (`put_local`), and
  `barrier` waits for all of them with a bounded timeout. A process that fails says so through the
  coordination service's key-value store (`report_failure`); a thread in every other process
  (`watch_failures`) reads it and stops that process too, even one blocked in a collective.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
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
FAILURE_KEY = "pygpt:failure"  # set in the coordination service's key-value store by a process that failed
FAILURE_POLL_S = 0.5


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
    watch_failures()
    return launch


_reported = threading.Event()  # this process reported its own failure: its watcher stays quiet


def report_failure(message: str) -> None:
    """Tell the other processes that this one failed, and why: their `watch_failures` threads stop them with
    this message; if a peer reported first, this process names that failure as the cause instead. Best effort
    (the process is leaving anyway). The key is stored once the call returns; process 0
    hosts the coordination service, so it waits two polls for the others to read it before it is gone."""
    if not jax.distributed.is_initialized():
        return
    from jax._src.distributed import global_state

    _reported.set()
    try:
        earlier = _peer_failure(global_state.client)
        if earlier is not None:  # a peer failed first (its exit can break this one's collective): that is the cause
            _print_stop(earlier)
        else:
            global_state.client.key_value_set(FAILURE_KEY, message)
        if jax.process_index() == 0:
            time.sleep(2 * FAILURE_POLL_S)
    except Exception:  # noqa: BLE001, S110  (the service may be gone already)
        pass


def _peer_failure(client) -> str | None:
    """The failure another process reported, if any."""
    try:
        return client.key_value_try_get(FAILURE_KEY)
    except Exception:  # noqa: BLE001  (not set: nobody failed)
        return None


def _print_stop(message: str) -> None:
    print(f"error: process {jax.process_index()} of {jax.process_count()} stops, since another failed: {message}",
          file=sys.stderr, flush=True)


def watch_failures(poll_s: float = FAILURE_POLL_S) -> threading.Thread:
    """A daemon thread that ends this process (exit code 1) soon after another process reports a failure.

    Why a thread: a process waiting in a collective for a peer that died cannot raise; without this it would
    wait for jax's heartbeat timeout (100 s), and a peer that left with an ordinary error would not be named.
    """
    from jax._src.distributed import global_state

    client, stop = global_state.client, threading.Event()
    atexit.register(stop.set)  # (registered after jax's own shutdown hook, so it runs before it)

    def watch() -> None:
        while not stop.wait(poll_s):
            message = _peer_failure(client)
            if message is None:
                continue
            if stop.is_set() or _reported.is_set():
                return
            _print_stop(message)
            os._exit(1)

    thread = threading.Thread(target=watch, name="pygpt-failure-watch", daemon=True)
    thread.start()
    return thread


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


def process_shards(num_shards: int, sharding: NamedSharding, batch_shape: tuple[int, ...], axis: int = 1) -> range:
    """The data shards this process reads: shard j fills rows [j*B/N, (j+1)*B/N) of the batch `axis` (B rows,
    N shards), and a process reads the shards whose rows its devices hold."""
    processes, rows = jax.process_count(), batch_shape[axis]
    if num_shards % processes:
        raise ValueError(f"--data-shards ({num_shards}) must be a multiple of the number of processes ({processes}): "
                         f"each process reads whole shards")
    mine, per_shard = process_rows(sharding, batch_shape, axis), rows // num_shards
    if mine.start % per_shard or mine.stop % per_shard:
        raise ValueError(f"this process's devices hold rows {mine.start}:{mine.stop} of the batch, which do not "
                         f"fall on data-shard boundaries ({per_shard} rows each)")
    return range(mine.start // per_shard, mine.stop // per_shard)


def put_local(rows: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...]) -> jax.Array:
    """This process's rows of a global batch -> one array on the mesh.

    `make_array_from_process_local_data`: each process hands jax only the rows it read, so no data crosses
    between hosts; on a single process (which holds every row) this is a `device_put`.
    """
    if jax.process_count() == 1:
        return jax.device_put(rows, sharding)
    return jax.make_array_from_process_local_data(sharding, rows, global_shape)


def put_tree(tree, shardings):
    """Host arrays that are the same on every process -> global arrays, each process filling its own devices."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    def put(leaf, sharding):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(put, tree, shardings)


_gathers: dict = {}  # compiled "every device gets the whole leaf" functions, by tree structure, shapes, shardings


def _gather_key(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((leaf.shape, leaf.dtype, leaf.sharding) for leaf in leaves)


def compile_gather(tree) -> None:
    """Compile, ahead of time, the gather `to_host` does for trees like `tree` (global arrays) in a
    multi-process run, so that the first checkpoint does not compile inside the training loop."""
    leaves = jax.tree_util.tree_leaves(tree)
    if jax.process_count() == 1 or all(leaf.is_fully_replicated for leaf in leaves):
        return  # nothing to gather: to_host copies every leaf from a local device
    replicated = NamedSharding(leaves[0].sharding.mesh, P())
    out = jax.tree_util.tree_map(lambda _: replicated, tree)
    _gathers[_gather_key(tree)] = jax.jit(lambda t: t, out_shardings=out).lower(tree).compile()


def to_host(tree):
    """Every leaf as a whole numpy array on this host: a leaf every device holds whole is copied from a local
    device; the others are gathered from the processes that hold their pieces (a collective: every process
    must call it, and does so for the same leaves, since shardings are global)."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    gather = _gathers.get(_gather_key(tree))
    if gather is not None:  # compiled by compile_gather: every leaf comes back whole on every device
        tree = gather(tree)

    def fetch(leaf):
        if not isinstance(leaf, jax.Array):
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(fetch, tree)


def check_divisible(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"--batch-size ({batch_size}) must be divisible by the number of devices ({n})")
