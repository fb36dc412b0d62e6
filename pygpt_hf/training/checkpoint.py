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
            data-0.safetensors     shuffle buffer and leftover tokens (one file per process)
            data-0.json            stream position (`IterableDataset.state_dict()`), epoch, shuffle RNG
            state.json             step, seed, eval metrics at this step
    config.json  model.safetensors ...   the latest checkpoint's model files, so the folder itself loads
    training_settings.json  metrics.jsonl  loss_curve.png

A checkpoint is written into `.tmp-checkpoint-N/` and renamed to `checkpoint-N/` only when complete, so a
crash (even SIGKILL) mid-write leaves the previous checkpoints intact and `--resume` ignores the debris.
Everything is safetensors or JSON: nothing is ever pickled.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from ..atomic import atomic_file, write_json
from ..configuration_pygpt import is_weights_file
from ..run_folder import STATE_DIR, checkpoint_name, list_checkpoints
from .hooks import FaultHooks

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


def open_output_dir(output_dir: str, resume: bool) -> str | None:
    """Make `output_dir` ready for a run: debris of a crash removed; the checkpoint to resume from (`resume`), or
    None for a fresh run, which refuses a folder that already holds checkpoints (nothing is overwritten)."""
    os.makedirs(output_dir, exist_ok=True)
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


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def save_checkpoint(
    output_dir: str,
    step: int,
    *,
    model,
    params,
    opt_state,
    tokenizer,
    settings,
    data_state: tuple[dict[str, np.ndarray], dict],
    metrics: dict | None = None,
    hooks: FaultHooks | None = None,
) -> str:
    """Write checkpoint `step` atomically and return its path. `params` / `opt_state` are host arrays.

    All processes call this (each writes its own data position); process 0 writes the rest and renames.
    The files inside the temporary folder need no atomicity of their own: the rename is the commit point.
    """
    final = os.path.join(output_dir, checkpoint_name(step))
    tmp = os.path.join(output_dir, TMP_PREFIX + f"{step:07d}")
    lead = jax.process_index() == 0
    if lead:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.join(tmp, STATE_DIR))
    _barrier(f"checkpoint-{step}-mkdir")

    arrays, meta = data_state
    index = jax.process_index()
    save_file(arrays, os.path.join(tmp, STATE_DIR, f"data-{index}.safetensors"))
    write_json(os.path.join(tmp, STATE_DIR, f"data-{index}.json"), meta)
    _barrier(f"checkpoint-{step}-data")

    if lead:
        # config, generation config, weights (sharded above MAX_SHARD_SIZE), remote code
        model.save_pretrained(tmp, params=params, max_shard_size=MAX_SHARD_SIZE)
        tokenizer.save_pretrained(tmp)
        settings.save(tmp)
        if hooks is not None:
            hooks.kill_if_due(step)  # test hook: die the hardest way, halfway through a checkpoint
        save_file(flatten_tree(params), os.path.join(tmp, STATE_DIR, "params.safetensors"))
        save_file(flatten_tree(opt_state), os.path.join(tmp, STATE_DIR, "opt_state.safetensors"))
        write_json(os.path.join(tmp, STATE_DIR, "state.json"), {
            "step": step,
            "seed": settings.seed,  # the dropout keys are derived from it and the step
            "num_processes": jax.process_count(),
            "metrics": metrics or {},
        })
        if os.path.exists(final):  # e.g. interrupted right after a resume: replace, never merge
            trash = tmp + ".old"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)  # the commit point
    _barrier(f"checkpoint-{step}-done")
    return final


def publish(checkpoint_dir: str, output_dir: str) -> None:
    """Copy a checkpoint's model and tokenizer files to the top of `output_dir`, each file atomically,
    so `from_pretrained(output_dir)` loads the latest model."""
    if jax.process_index() != 0:
        return
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
    """Delete all but the newest `keep` checkpoints."""
    if jax.process_index() != 0:
        return
    for _, path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path)


# --- loading ----------------------------------------------------------------------------------------------


def read_state(checkpoint_dir: str) -> dict:
    with open(os.path.join(checkpoint_dir, STATE_DIR, "state.json"), encoding="utf-8") as f:
        return json.load(f)


def load_training_state(checkpoint_dir: str, params_template, opt_state_template):
    """(step, params, opt_state) as host arrays, checked against freshly initialised templates."""
    state = read_state(checkpoint_dir)
    folder = os.path.join(checkpoint_dir, STATE_DIR)
    params = restore_tree(params_template, load_file(os.path.join(folder, "params.safetensors")),
                          f"{checkpoint_dir} parameters")
    opt_state = restore_tree(opt_state_template, load_file(os.path.join(folder, "opt_state.safetensors")),
                             f"{checkpoint_dir} optimizer state")
    return state["step"], params, opt_state


def load_data_state(checkpoint_dir: str) -> tuple[dict[str, np.ndarray], dict]:
    """This process's data position (shuffle buffer, leftover tokens, stream state)."""
    index = jax.process_index()
    folder = os.path.join(checkpoint_dir, STATE_DIR)
    path = os.path.join(folder, f"data-{index}.json")
    if not os.path.isfile(path):
        raise ValueError(f"{checkpoint_dir} has no data state for process {index}; was it saved by a run "
                         f"with a different number of processes?")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    return load_file(os.path.join(folder, f"data-{index}.safetensors")), meta
