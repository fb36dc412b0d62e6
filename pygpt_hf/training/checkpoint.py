"""Checkpoints: a ready Hugging Face model folder plus the training state, written atomically.

Layout of `--output-dir`:

    checkpoint-0000400/            one complete checkpoint (the last `--keep-checkpoints` are kept)
        config.json  model.safetensors  generation_config.json     the model (`save_pretrained`)
        tokenizer.json  vocab.json  merges.txt  tokenizer_config.json ...        the tokenizer
        configuration_pygpt.py  modeling_*.py  tokenization_*.py     remote code (trust_remote_code)
        training_settings.json                                          the run's settings
        training_state/
            params.safetensors     parameters, as the Flax tree (exact, whatever the model file's layout)
            opt_state.safetensors  AdamW moments and counters, one tensor per leaf
              (several processes: params-P.safetensors, opt_state-P.safetensors from each process P, holding
              the pieces of each leaf only P's devices hold, named "leaf[start:stop,...]": no process gathers
              the training state; a resume reassembles each device's piece from them, onto any layout)
            data-0.safetensors     shuffle buffer and leftover tokens (one file per data shard, written by the
            data-0.json            stream position   process that reads it), epoch, shuffle RNG
            state.json             step, seed, number of processes and data shards, eval metrics at this step
    config.json  model.safetensors ...   the latest checkpoint's model files, so the folder itself loads
    training_settings.json  metrics.jsonl  loss_curve.png

A checkpoint is written into `.tmp-checkpoint-N/` and renamed to `checkpoint-N/` only when complete, so a
crash (even SIGKILL) mid-write leaves the previous checkpoints intact and `--resume` ignores the debris. With
several processes, process 0 renames only after every process has written its part (a bounded barrier).
Everything is safetensors or JSON: nothing is ever pickled.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from ..atomic import atomic_file, write_json
from ..configuration_pygpt import is_weights_file
from ..run_folder import STATE_DIR, checkpoint_name, list_checkpoints
from .hooks import FaultHooks
from .sharding import barrier, put_tree, to_host

TMP_PREFIX = ".tmp-checkpoint-"
# Model weights above this are written as shards + model.safetensors.index.json (transformers' default size)
MAX_SHARD_SIZE = "5GB"


# --- pytrees <-> flat dicts of arrays ---------------------------------------------------------------------


def flatten_tree(tree) -> dict[str, np.ndarray]:
    """{"path/to/leaf": array} for every leaf; the names make a checkpoint file readable on its own."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf) for path, leaf in leaves}


def restore_tree(template, arrays: dict[str, np.ndarray], what: str):
    """`template`'s structure filled with `arrays`, checking every leaf's name, shape and dtype."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, like in paths:
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        if name not in arrays:
            raise ValueError(f"{what}: no tensor {name!r}; the checkpoint does not match this model/optimizer")
        value = arrays[name]
        if value.shape != np.shape(like) or value.dtype != np.asarray(like).dtype:
            raise ValueError(f"{what}: {name!r} is {value.dtype}{list(value.shape)}, expected "
                             f"{np.asarray(like).dtype}{list(np.shape(like))}")
        leaves.append(value)
    extra = set(arrays) - {jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in paths}
    if extra:
        raise ValueError(f"{what}: unexpected tensors {sorted(extra)[:5]}; the checkpoint does not match")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def local_pieces(tree) -> dict[str, np.ndarray]:
    """{"path/to/leaf[0:64,128:256]": block} for every piece of `tree`'s global arrays that this process's
    devices hold and no other device holds a copy of (replica 0): written by this process alone, each piece
    once across all processes, without gathering anything."""
    pieces = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        for shard in leaf.addressable_shards:
            if shard.replica_id == 0:
                span = ",".join("{}:{}".format(*s.indices(n)[:2]) for s, n in zip(shard.index, leaf.shape))
                pieces[f"{name}[{span}]"] = np.asarray(shard.data)
    return pieces


PIECE = re.compile(r"(.*)\[([0-9:,]*)\]")


class PieceReader:
    """The pieces that several processes wrote (`local_pieces`), read lazily, reassembled into any block."""

    def __init__(self, files: list[str], what: str):
        self.what, self.handles, self.pieces = what, [], {}  # leaf -> [(starts, stops, handle, key)]
        for path in files:
            handle = safe_open(path, framework="numpy")
            self.handles.append(handle)
            for key in handle.keys():  # noqa: SIM118  (a safetensors handle is not iterable)
                match = PIECE.fullmatch(key)
                if not match:
                    raise ValueError(f"{what}: {path} holds {key!r}, which is not a piece name 'leaf[start:stop,...]'")
                spans = [tuple(map(int, span.split(":"))) for span in match.group(2).split(",") if span]
                self.pieces.setdefault(match.group(1), []).append(
                    (tuple(a for a, _ in spans), tuple(b for _, b in spans), handle, key))

    def block(self, name: str, shape: tuple[int, ...], dtype, index: tuple[slice, ...]) -> np.ndarray:
        """Rows `index` of leaf `name` (of `shape`), copied from every piece that overlaps them; all must be there."""
        if name not in self.pieces:
            raise ValueError(f"{self.what}: no tensor {name!r}; the checkpoint does not match this model/optimizer")
        starts, stops = zip(*(s.indices(n)[:2] for s, n in zip(index, shape))) if shape else ((), ())
        out = np.empty([b - a for a, b in zip(starts, stops)], dtype)
        covered = 0
        for p_starts, p_stops, handle, key in self.pieces[name]:
            lo = [max(a, pa) for a, pa in zip(starts, p_starts)]
            hi = [min(b, pb) for b, pb in zip(stops, p_stops)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            piece = handle.get_slice(key)
            if tuple(piece.get_shape()) != tuple(pb - pa for pa, pb in zip(p_starts, p_stops)):
                raise ValueError(f"{self.what}: {key!r} has shape {piece.get_shape()}, not what its name says")
            source = tuple(slice(low - pa, h - pa) for low, h, pa in zip(lo, hi, p_starts))
            data = piece[source] if shape else handle.get_tensor(key)
            if data.dtype != dtype:
                raise ValueError(f"{self.what}: {key!r} is {data.dtype}, expected {np.dtype(dtype)}")
            out[tuple(slice(low - a, h - a) for low, h, a in zip(lo, hi, starts))] = data
            covered += int(np.prod([h - low for low, h in zip(lo, hi)]))
        if covered != out.size:  # pieces never overlap (each was written once), so the sizes must add up
            raise ValueError(f"{self.what}: the pieces of {name!r} cover {covered} of the {out.size} values "
                             f"needed; a process's file is missing or was written by another layout")
        return out


def restore_sharded(template, shardings, reader: PieceReader):
    """`template`'s structure as global arrays on `shardings`, each device's block read from the pieces."""
    def restore(path, like, sharding):
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        shape, dtype = tuple(np.shape(like)), np.dtype(getattr(like, "dtype", None) or np.asarray(like).dtype)
        return jax.make_array_from_callback(shape, sharding, lambda idx: reader.block(name, shape, dtype, idx))

    known = {jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in
             jax.tree_util.tree_flatten_with_path(template)[0]}
    extra = set(reader.pieces) - known
    if extra:
        raise ValueError(f"{reader.what}: unexpected tensors {sorted(extra)[:5]}; the checkpoint does not match")
    return jax.tree_util.tree_map_with_path(restore, template, shardings)


# --- finding checkpoints ----------------------------------------------------------------------------------


def latest_checkpoint(output_dir: str) -> str | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def remove_debris(output_dir: str) -> None:
    """Delete half-written checkpoints left by a crash (they were never renamed, so nothing refers to them)."""
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith((TMP_PREFIX, "." + TMP_PREFIX)):  # the second: save_pretrained's own staging
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def open_output_dir(output_dir: str, resume: bool, lead: bool = True) -> str | None:
    """Make `output_dir` ready for a run: debris of a crash removed (by the `lead` process); the checkpoint to
    resume from (`resume`), or None for a fresh run, which refuses a folder that already holds checkpoints
    (nothing is overwritten)."""
    os.makedirs(output_dir, exist_ok=True)
    if lead:
        remove_debris(output_dir)
    if resume:
        latest = latest_checkpoint(output_dir)
        if latest is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {output_dir}")
        return latest
    if list_checkpoints(output_dir):
        raise FileExistsError(f"{output_dir} already holds checkpoints of a run: pass --resume to continue it, or "
                              f"choose another --output-dir (nothing was overwritten)")
    return None


# --- saving -----------------------------------------------------------------------------------------------


def save_checkpoint(
    output_dir: str,
    step: int,
    *,
    model,
    params,
    opt_state,
    tokenizer,
    settings,
    data_states: dict[int, tuple[dict[str, np.ndarray], dict]],
    metrics: dict | None = None,
    hooks: FaultHooks | None = None,
) -> str:
    """Write checkpoint `step` atomically and return its path. `params` / `opt_state`: the state's arrays.

    All processes call this: each writes the data position of its data shards (`data_states`, {shard: (arrays,
    metadata)}: packing.ShardedStream.state_dict) and, in a multi-process run, its own pieces of
    the training state; process 0 writes the model folder (the only thing gathered: the parameters, which
    the Hugging Face files hold whole) and renames once every process is done.
    The files inside the temporary folder need no atomicity of their own: the rename is the commit point.
    """
    final = os.path.join(output_dir, checkpoint_name(step))
    tmp = os.path.join(output_dir, TMP_PREFIX + f"{step:07d}")
    index, count = jax.process_index(), jax.process_count()
    lead = index == 0
    if lead:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.join(tmp, STATE_DIR))
    barrier(f"checkpoint-{step}-mkdir")

    state_dir = os.path.join(tmp, STATE_DIR)
    for shard, (arrays, meta) in data_states.items():
        save_file(arrays, os.path.join(state_dir, f"data-{shard}.safetensors"))
        write_json(os.path.join(state_dir, f"data-{shard}.json"), meta)
    if count > 1:  # each process its own pieces: nothing of the training state crosses between hosts
        save_file(local_pieces(params), os.path.join(state_dir, f"params-{index}.safetensors"))
        save_file(local_pieces(opt_state), os.path.join(state_dir, f"opt_state-{index}.safetensors"))
    model_params = to_host(params)  # a collective when several processes hold the parameters
    if hooks is not None and hooks.kill_at_step == step:  # test hook: die the hardest way, halfway through
        # a checkpoint, in every process. All of them leave the gather above first: one that died with a
        # collective's bytes still unread would make a peer's pending read fail (connection reset) before
        # that peer reached its own kill. Process 0 hosts the coordination service, so it dies last: the
        # others must hear that the barrier is done before the service is gone.
        barrier(f"checkpoint-{step}-kill")
        if lead and count > 1:
            time.sleep(1.0)
        hooks.kill_if_due(step)

    if lead:
        # config, generation config, weights (sharded above MAX_SHARD_SIZE), remote code
        model.save_pretrained(tmp, params=model_params, max_shard_size=MAX_SHARD_SIZE)
        tokenizer.save_pretrained(tmp)
        settings.save(tmp)
        if count == 1:
            save_file(flatten_tree(model_params), os.path.join(state_dir, "params.safetensors"))
            save_file(flatten_tree(to_host(opt_state)), os.path.join(state_dir, "opt_state.safetensors"))
        write_json(os.path.join(state_dir, "state.json"), {
            "step": step,
            "seed": settings.seed,  # the dropout keys are derived from it and the step
            "num_processes": count,
            "data_shards": settings.data_shards or 1,
            "metrics": metrics or {},
        })
    barrier(f"checkpoint-{step}-written")  # complete only when every process has written its part
    if lead:
        if os.path.exists(final):  # e.g. interrupted right after a resume: replace, never merge
            trash = tmp + ".old"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)  # the commit point
    barrier(f"checkpoint-{step}-done")
    return final


def publish(checkpoint_dir: str, output_dir: str) -> None:
    """Copy a checkpoint's model and tokenizer files to the top of `output_dir`, each file atomically,
    so `from_pretrained(output_dir)` loads the latest model. (Process 0's job.)"""
    names = sorted(os.listdir(checkpoint_dir))
    for name in names:
        source = os.path.join(checkpoint_dir, name)
        if os.path.isfile(source):
            with atomic_file(os.path.join(output_dir, name)) as tmp:
                shutil.copyfile(source, tmp)
    for name in os.listdir(output_dir):  # weights of another layout (one file vs shards) must not outlive it
        if is_weights_file(name) and name not in names:
            os.remove(os.path.join(output_dir, name))


def prune(output_dir: str, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints. (Process 0's job.)"""
    for _, path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path)


# --- loading ----------------------------------------------------------------------------------------------


def read_state(checkpoint_dir: str) -> dict:
    with open(os.path.join(checkpoint_dir, STATE_DIR, "state.json"), encoding="utf-8") as f:
        return json.load(f)


def load_training_state(checkpoint_dir: str, template, shardings):
    """(step, params, opt_state) as global arrays placed on `shardings` (a TrainState of shardings), checked
    against `template` (a freshly initialised TrainState): from the single files of a 1-process run, or the
    pieces of every process of a multi-process one, whatever the layout (devices, --fsdp) this run uses."""
    state = read_state(checkpoint_dir)
    folder = os.path.join(checkpoint_dir, STATE_DIR)
    restored = []
    for part, like, sharding in (("params", template.params, shardings.params),
                                 ("opt_state", template.opt_state, shardings.opt_state)):
        what = f"{checkpoint_dir} {'parameters' if part == 'params' else 'optimizer state'}"
        whole = os.path.join(folder, f"{part}.safetensors")
        if os.path.isfile(whole):  # one process wrote whole leaves
            tree = restore_tree(like, load_file(whole), what)
            restored.append(put_tree(tree, sharding))
            continue
        files = sorted(glob.glob(os.path.join(folder, f"{part}-*.safetensors")))
        expected = [os.path.join(folder, f"{part}-{p}.safetensors") for p in range(state.get("num_processes", 1))]
        missing = [path for path in expected if path not in files]
        if missing:
            raise ValueError(f"{what}: {', '.join(missing)} not found; the checkpoint is incomplete")
        restored.append(restore_sharded(like, sharding, PieceReader(files, what)))
    return state["step"], restored[0], restored[1]


def load_data_state(checkpoint_dir: str, shards: range, num_shards: int) -> dict[int, tuple[dict[str, np.ndarray], dict]]:
    """The data position (shuffle buffer, leftover tokens, stream state) of the data shards this process reads."""
    saved = read_state(checkpoint_dir).get("data_shards", 1)
    if saved != num_shards:
        raise ValueError(f"{checkpoint_dir} was saved by a run with --data-shards {saved}; this run has {num_shards}, "
                         f"which would deal the documents differently")
    folder = os.path.join(checkpoint_dir, STATE_DIR)
    states = {}
    for shard in shards:
        path = os.path.join(folder, f"data-{shard}.json")
        if not os.path.isfile(path):
            raise ValueError(f"{checkpoint_dir}: {path} (the position of data shard {shard}) not found; the "
                             f"checkpoint is incomplete")
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        states[shard] = load_file(os.path.join(folder, f"data-{shard}.safetensors")), meta
    return states
