"""Spreading the work over devices: a 1-D mesh named "data", and where each array lives on it.

- Data parallel (default): every device holds all parameters; each batch is split along its batch axis
  (`P(None, "data")` for (accum, batch, T+1)). jit + GSPMD insert the gradient all-reduce themselves.
- `--fsdp`: parameters and optimizer state are also split, each leaf along its largest axis that divides
  by the device count (small leaves stay replicated); XLA gathers a layer's weights when it needs them.
  Same maths, less memory per device.
- Several hosts: when a multi-process environment is set (see `maybe_initialize_distributed`), every
  process calls `jax.distributed.initialize()` first; each process then reads its own shard of the data
  (`split_dataset_by_node`) and contributes its slice of the global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def maybe_initialize_distributed() -> bool:
    """Join a multi-process run when one is configured in the environment; True when we did.

    Either set JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on
    every process, or run under a cluster manager jax detects by itself (SLURM, Open MPI, Cloud TPU).
    """
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        missing = [v for v in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not os.environ.get(v)]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS is set, so multi-process training also needs "
                             f"{', '.join(missing)}")
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return True
    cluster_sizes = [os.environ.get(v) for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")]
    if any(size not in (None, "", "1") for size in cluster_sizes) or os.environ.get("TPU_WORKER_HOSTNAMES"):
        jax.distributed.initialize()  # jax reads the coordinator, process count and id from the cluster
        return True
    return False


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


def put_global(local_batch: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This process's rows of a batch -> one global array on the mesh (device_put on a single host)."""
    if jax.process_count() == 1:
        return jax.device_put(local_batch, sharding)
    return multihost_utils.host_local_array_to_global_array(local_batch, sharding.mesh, sharding.spec)


def to_host(tree):
    """Every leaf as a numpy array on this host (gathering shards from other processes when needed)."""
    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def check_divisible(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"--batch-size ({batch_size}) must be divisible by the number of devices ({n})")
