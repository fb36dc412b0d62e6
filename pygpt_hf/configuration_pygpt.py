"""PyGPTConfig: the architecture of a PyGPT model, and nothing else.

This file travels with every saved checkpoint (remote code), so it imports only `transformers` and runs
unchanged on transformers 4.57 and 5.x.
"""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from transformers import PretrainedConfig

POSITION_EMBEDDING_TYPES = ("sinusoidal", "learned", "rope")


class PyGPTConfig(PretrainedConfig):
    """Configuration of a GPT-style decoder.

    Args:
        vocab_size: number of token ids (bytes + special tokens + merges).
        n_positions: longest sequence the model accepts (context length).
        n_embd: width of the residual stream.
        n_layer: number of transformer blocks.
        n_head: attention heads per block; `n_embd` must be divisible by it.
        n_inner: width of the MLP hidden layer; `None` means `4 * n_embd`.
        activation_function: MLP non-linearity, a key of transformers' `ACT2FN` (e.g. "gelu_new").
        resid_pdrop, embd_pdrop, attn_pdrop: dropout rates on the residual branches, the embeddings and
            the attention probabilities (used only when training).
        layer_norm_epsilon: epsilon of every LayerNorm.
        initializer_range: standard deviation of the normal weight init.
        position_embedding_type: "sinusoidal" (fixed sin/cos added to the token embeddings, scaled by
            `initializer_range` to match them; the original PyGPT design), "learned" (a trained table, as in
            GPT-2) or "rope" (rotary, applied to Q and K).
        rope_theta: base of the rotary frequencies (only for "rope").
        tie_word_embeddings: share the LM head with the token embedding.
        bos_token_id, eos_token_id, pad_token_id: special ids; with the PyGPT tokenizer these are fixed at
            256 (`<|endoftext|>`, both bos and eos) and 257 (`<|pad|>`).
        use_cache: return key/value caches for fast decoding.
    """

    model_type = "pygpt"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    def __init__(
        self,
        vocab_size: int = 8192,
        n_positions: int = 512,
        n_embd: int = 256,
        n_layer: int = 4,
        n_head: int = 4,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        resid_pdrop: float = 0.0,
        embd_pdrop: float = 0.0,
        attn_pdrop: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        position_embedding_type: str = "sinusoidal",
        rope_theta: float = 10000.0,
        tie_word_embeddings: bool = True,
        bos_token_id: int = 256,
        eos_token_id: int = 256,
        pad_token_id: int = 257,
        use_cache: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.activation_function = activation_function
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.use_cache = use_cache
        self._validate()
        kwargs.setdefault("auto_map", dict(AUTO_MAP))  # so every saved config.json points at the remote code
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def _validate(self) -> None:
        """Reject impossible architectures here, with the field's name, not later inside a matmul."""
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"PyGPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ValueError(f"PyGPTConfig.n_inner must be a positive integer or None, got {self.n_inner!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"PyGPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"PyGPTConfig.position_embedding_type must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}"
            )
        if self.position_embedding_type == "rope" and self.head_dim % 2:
            raise ValueError(f"PyGPTConfig: rope needs an even n_embd / n_head, got head size {self.head_dim}")
        if self.position_embedding_type == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"PyGPTConfig.n_embd must be even for sinusoidal positions, got {self.n_embd}")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"PyGPTConfig.{name} must be in [0, 1), got {value!r}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"PyGPTConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        if self.initializer_range <= 0:
            raise ValueError(f"PyGPTConfig.initializer_range must be > 0, got {self.initializer_range!r}")
        if self.rope_theta <= 0:
            raise ValueError(f"PyGPTConfig.rope_theta must be > 0, got {self.rope_theta!r}")


# ----------------------------------------------------------------------------------------------------------
# One contract for bad input, shared by the Flax model and its PyTorch twin: both call these with plain
# Python values (shapes, dtype names, the smallest and largest id), so a bad input gets the same ValueError,
# naming the argument and its limit, in either framework. Shape checks cost nothing under `jax.jit` (shapes
# are known at trace time); value checks need concrete values, so the wrappers skip them for jax tracers.


def check_token_ids(shape: tuple, dtype: str, is_integer: bool, n_positions: int, past: int = 0,
                    capacity: int | None = None, name: str = "input_ids") -> None:
    """`input_ids` must be a non-empty (batch, sequence) array of integers that fits the context with the past.

    `past` is the number of tokens a KV cache already holds; `capacity` the cache's own length when it is
    shorter than the context (a Flax cache is allocated for `max_length` tokens).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2:
        raise ValueError(f"{name} must have shape (batch, sequence), got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape}): give at least one row and one token per row")
    if not is_integer:
        raise ValueError(f"{name} must hold integer token ids, got dtype {dtype}")
    check_length(shape[1], n_positions, past, capacity, name)


def check_length(new: int, n_positions: int, past: int = 0, capacity: int | None = None,
                 name: str = "input_ids") -> None:
    """`past` cached plus `new` tokens must fit the context `n_positions` (and the cache's `capacity`)."""
    total = past + new
    what = f"{total} tokens (past {past} + new {new})" if past else f"{new} tokens"
    if total > n_positions:
        raise ValueError(f"{name}: {what} exceed the context length n_positions={n_positions}")
    if capacity is not None and total > capacity:
        raise ValueError(f"{name}: {what} exceed the KV cache's length max_length={capacity} (see init_cache)")


def check_token_values(low: int, high: int, vocab_size: int, name: str = "input_ids") -> None:
    """Every id must lie in [0, vocab_size): an out-of-range id would be clamped (Flax) or crash (PyTorch)."""
    if low < 0:
        raise ValueError(f"{name} contains the negative id {low}; token ids must be in [0, vocab_size={vocab_size})")
    if high >= vocab_size:
        raise ValueError(
            f"{name} contains the id {high}, outside the vocabulary; token ids must be in [0, vocab_size={vocab_size})"
        )


def check_attention_mask(shape: tuple, batch: int, past: int, new: int, capacity: int | None = None) -> None:
    """`attention_mask` covers every key position: (batch, past + new); with a Flax cache also (batch, max_length)."""
    shape, expected = tuple(int(n) for n in shape), (batch, past + new)
    allowed = [expected] + ([(batch, capacity)] if capacity is not None and capacity != past + new else [])
    if shape not in allowed:
        also = f" or (batch, max_length) = {allowed[1]}" if len(allowed) > 1 else ""
        raise ValueError(
            f"attention_mask must have shape (batch, past + new) = {expected}{also}, got {shape} "
            f"(input_ids: batch {batch}, {new} new tokens, {past} cached)"
        )


def check_position_ids(shape: tuple, dtype: str, is_integer: bool, batch: int, new: int) -> None:
    """`position_ids` are (batch, new) or (1, new) integers, like input_ids."""
    shape = tuple(int(n) for n in shape)
    if shape not in ((batch, new), (1, new)):
        raise ValueError(f"position_ids must have shape (batch, new) = {(batch, new)} or (1, {new}), got {shape}")
    if not is_integer:
        raise ValueError(f"position_ids must hold integer positions, got dtype {dtype}")


def check_position_values(low: int, high: int, n_positions: int) -> None:
    """Positions must lie in [0, n_positions): learned tables end there, and no encoding was trained beyond."""
    if low < 0 or high >= n_positions:
        bad = low if low < 0 else high
        raise ValueError(f"position_ids contains {bad}; positions must be in [0, n_positions={n_positions})")


def check_generation_length(prompt: int, n_positions: int, max_new_tokens: int | None = None,
                            max_length: int | None = None) -> int:
    """The total length generate will reach, refused up front when it cannot fit; returns it.

    `max_new_tokens` wins over `max_length` (as in transformers); with neither, transformers' default of 20
    new tokens is capped at the context, which needs room for at least one.
    """
    if max_new_tokens is not None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        total, asked = prompt + max_new_tokens, f"prompt {prompt} + max_new_tokens {max_new_tokens}"
    elif max_length is not None:
        if max_length <= prompt:
            raise ValueError(
                f"max_length={max_length} leaves no room after the prompt of {prompt} tokens; "
                f"pass max_new_tokens (> 0) instead"
            )
        total, asked = max_length, f"max_length {max_length}"
    else:  # transformers' default: 20 new tokens, capped at the context
        total, asked = min(prompt + 20, max(n_positions, prompt + 1)), f"prompt {prompt} + at least 1 new token"
    if total > n_positions:
        raise ValueError(
            f"generate: {asked} = {total} tokens exceed the context length n_positions={n_positions}; "
            f"ask for fewer new tokens or a shorter prompt"
        )
    return total


def parse_max_shard_size(max_shard_size: int | str) -> int:
    """`max_shard_size` in bytes ("5GB", "200MB", "1MiB" or an int, as transformers reads it); > 0 or refused."""
    try:
        from transformers.utils.hub import convert_file_size_to_int
    except ImportError:  # pragma: no cover - moved in some transformers versions
        from huggingface_hub.serialization._base import parse_size_to_int as convert_file_size_to_int
    try:
        if isinstance(max_shard_size, bool):
            raise TypeError("a bool is not a size")
        limit = convert_file_size_to_int(max_shard_size)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"save_pretrained: max_shard_size={max_shard_size!r} is not a size such as '5GB'") from err
    if limit <= 0:
        raise ValueError(f"save_pretrained: max_shard_size={max_shard_size!r} must be a positive size such as '5GB'")
    return limit


def check_generation_config_file(name_or_path, kwargs: dict) -> None:
    """transformers' `from_pretrained` falls back to a default generation config when generation_config.json
    cannot be read, which hides a damaged file: re-read a local one, so a broken file raises and is named."""
    from transformers import GenerationConfig

    folder = os.path.join(str(name_or_path), kwargs.get("subfolder") or "")
    if os.path.isfile(os.path.join(folder, "generation_config.json")):
        GenerationConfig.from_pretrained(folder)


# Remote code: every saved folder carries these files and this `auto_map`, so a machine without pygpt_hf
# loads it with `trust_remote_code=True` (PyTorch on transformers 4.57 and 5.x; Flax on 4.57).
TRAVELLING_FILES = (
    "configuration_pygpt.py",
    "modeling_pygpt.py",
    "modeling_flax_pygpt.py",
    "tokenization_pygpt.py",
    "tokenization_pygpt_fast.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_pygpt.PyGPTConfig",
    "AutoModel": "modeling_pygpt.PyGPTModel",
    "AutoModelForCausalLM": "modeling_pygpt.PyGPTForCausalLM",
    "FlaxAutoModel": "modeling_flax_pygpt.FlaxPyGPTModel",
    "FlaxAutoModelForCausalLM": "modeling_flax_pygpt.FlaxPyGPTForCausalLM",
    "AutoTokenizer": ["tokenization_pygpt.PyGPTTokenizer", "tokenization_pygpt_fast.PyGPTTokenizerFast"],
}


def save_remote_code(save_directory: str) -> None:
    """Copy the travelling source files next to a checkpoint (those that exist beside this file)."""
    import shutil

    here = os.path.dirname(os.path.abspath(__file__))
    for name in TRAVELLING_FILES:
        source, target = os.path.join(here, name), os.path.join(save_directory, name)
        if os.path.isfile(source) and os.path.abspath(source) != os.path.abspath(target):
            shutil.copyfile(source, target)


# ----------------------------------------------------------------------------------------------------------
# Checkpoint files, shared by both frameworks. Weights are one `model.safetensors` or, above `max_shard_size`,
# `model-00001-of-0000N.safetensors` plus `model.safetensors.index.json` (transformers' layout, which its
# PyTorch loader reads and the Flax model reads through `modeling_flax_pygpt.load_sharded_params`).

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SHARD_PATTERN = "model{suffix}.safetensors"  # huggingface_hub's filename_pattern: suffix "-00001-of-00003"


def is_weights_file(name: str, variant: str | None = None) -> bool:
    """Is `name` a weights file of this variant (single file, a shard, an index, or a Flax msgpack)?

    These are the files one save replaces as a set: a sharded save removes an old `model.safetensors` (which
    loaders would otherwise prefer) and a save with fewer shards removes the extra ones.
    """
    tag = re.escape(f".{variant}") if variant else ""  # transformers: model.v2.safetensors, ...index.v2.json
    patterns = (
        rf"model{tag}\.safetensors",
        rf"model{tag}-\d{{5}}-of-\d{{5}}\.safetensors",
        rf"model\.safetensors\.index{tag}\.json",
        rf"flax_model{tag}\.msgpack",  # transformers' Flax loader would prefer it to our safetensors
        rf"flax_model{tag}-\d{{5}}-of-\d{{5}}\.msgpack",
        rf"flax_model\.msgpack\.index{tag}\.json",
    )
    return any(re.fullmatch(pattern, name) for pattern in patterns)


def plan_shards(sizes: dict[str, int], max_shard_size: int) -> tuple[dict[str, list[str]], dict | None]:
    """({file name: tensor names}, index or None) for tensors of the given byte sizes, in their order.

    huggingface_hub's splitter (what transformers' PyTorch `save_pretrained` uses), so both frameworks cut
    the same way; the index is transformers' (`metadata.total_size`, `weight_map`).
    """
    from huggingface_hub.serialization import split_state_dict_into_shards_factory

    split = split_state_dict_into_shards_factory(
        sizes, get_storage_size=lambda size: size, filename_pattern=SHARD_PATTERN, max_shard_size=max_shard_size
    )
    if not split.is_sharded:
        return {WEIGHTS_NAME: list(sizes)}, None
    return split.filename_to_tensors, {"metadata": dict(split.metadata), "weight_map": split.tensor_to_filename}


def write_index(path: str, index: dict) -> None:
    """The index as transformers writes it (sorted keys, indent 2, final newline)."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link (instant, no extra disk), or copy where the file system cannot."""
    import shutil

    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@contextmanager
def replaced_folder(save_directory, variant: str | None = None) -> Iterator[str]:
    """Yield an empty staging folder; on success it replaces `save_directory` as a whole (one rename).

    What a save does not write is carried over from the old folder (a tokenizer, a README, training state),
    except the old weights files (`is_weights_file`): nothing stale survives next to the new set. A crash or
    an error inside the block leaves the old folder exactly as it was and no staging folder.
    """
    import shutil
    import tempfile

    target = os.path.realpath(os.fspath(save_directory))  # through a symlink: stage beside the real folder
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"save_pretrained: {os.fspath(save_directory)} is a file, not a folder")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; give it a normal folder's mode
        yield staging
        if not os.path.isdir(target):
            os.rename(staging, target)  # the commit point
            return
        written = set(os.listdir(staging))
        for name in os.listdir(target):
            source, copy = os.path.join(target, name), os.path.join(staging, name)
            if name in written or is_weights_file(name, variant):
                continue
            if os.path.islink(source):
                os.symlink(os.readlink(source), copy)
            elif os.path.isdir(source):
                shutil.copytree(source, copy, symlinks=True, copy_function=_link_or_copy)
            else:
                _link_or_copy(source, copy)
        try:
            cwd = os.getcwd()
        except FileNotFoundError:
            cwd = None
        old = staging + ".old"
        os.rename(target, old)
        try:
            os.rename(staging, target)  # the commit point
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        if cwd is not None and (cwd == target or cwd.startswith(target + os.sep)):
            os.chdir(cwd)  # this process stood in the old folder: the same path now names the new one
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def push_folder(folder: str, repo_id: str, files_timestamps: dict | None = None, *, commit_message: str | None = None,
                token=None, create_pr: bool = False, revision: str | None = None,
                commit_description: str | None = None, variant: str | None = None):
    """Upload a saved folder in one commit that also deletes the repo's stale weights files.

    New or modified files are added (all of them without `files_timestamps`, the mtimes taken before the
    save, as transformers' `_upload_modified_files` reads them); weights files in the repo that this save
    did not write are deleted in the same commit, so a sharded push over a single file (or a push with fewer
    shards) never leaves a stale `model.safetensors` for loaders to prefer.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    additions = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if files_timestamps is not None and entry in files_timestamps and \
                os.path.getmtime(path) <= files_timestamps[entry]:
            continue
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                for name in sorted(files):
                    full = os.path.join(root, name)
                    additions.append(CommitOperationAdd(path_in_repo=os.path.relpath(full, folder).replace(os.sep, "/"),
                                                        path_or_fileobj=full))
        elif os.path.isfile(path):
            additions.append(CommitOperationAdd(path_in_repo=entry, path_or_fileobj=path))
    kept = {name for name in os.listdir(folder) if is_weights_file(name, variant)}
    remote = api.list_repo_files(repo_id, revision=None if create_pr else revision)
    deletions = [CommitOperationDelete(path_in_repo=name) for name in remote
                 if "/" not in name and is_weights_file(name, variant) and name not in kept]
    return api.create_commit(repo_id, operations=deletions + additions, commit_message=commit_message or "Upload model",
                             commit_description=commit_description, create_pr=create_pr, revision=revision)


def damaged_weights_error(name_or_path, kwargs: dict, err: Exception) -> OSError:
    """An OSError naming the unreadable weights file (index or shard) of a checkpoint transformers failed on.

    transformers' PyTorch loader passes on safetensors' and json's own errors, which name no file.
    """
    import json

    from safetensors import SafetensorError, safe_open

    folder = os.path.join(str(name_or_path), kwargs.get("subfolder") or "")
    if not os.path.isdir(folder):  # a Hub repo: look at what the failed load left in the cache
        from transformers.utils.hub import cached_file

        for name in (WEIGHTS_INDEX_NAME, WEIGHTS_NAME):
            try:
                found = cached_file(str(name_or_path), name, local_files_only=True, revision=kwargs.get("revision"),
                                    subfolder=kwargs.get("subfolder") or "", cache_dir=kwargs.get("cache_dir"),
                                    _raise_exceptions_for_missing_entries=False)
            except OSError:
                found = None
            if found:
                folder = os.path.dirname(found)
                break
    candidates = [WEIGHTS_NAME]
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                candidates = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as index_err:
            return OSError(f"The checkpoint index {index} is corrupted and cannot be read ({index_err!r}); "
                           f"re-download or re-save the checkpoint")
    for name in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            try:
                with safe_open(path, framework="numpy"):
                    pass
            except SafetensorError as shard_err:
                return OSError(f"The weights file {path} is corrupted or truncated and cannot be read: {shard_err}. "
                               f"Re-download or re-save the checkpoint.")
    return OSError(f"The weights of {name_or_path} cannot be read: {err}. Re-download or re-save the checkpoint.")
