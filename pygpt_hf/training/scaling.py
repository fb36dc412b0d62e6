"""What a layout costs per device, computed from a model config: the bytes of parameters, gradients and AdamW's
two moments (all float32) each device holds with data parallelism or with `--fsdp`, and the gradient bytes a
data-parallel step all-reduces. The shapes come from `jax.eval_shape` (nothing is allocated, so a 1.3B config
costs nothing to ask about) and the split of each leaf from the very rule the harness uses
(`sharding._leaf_spec`), so a leaf that cannot be split evenly is counted as replicated, as it would be.

Activations are left out: they depend on the batch, the sequence length and rematerialisation, not the layout.

    from pygpt_hf.training.scaling import PRESETS, layout_costs
    layout_costs(PRESETS["1.3B"], 64)
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from ..configuration_pygpt import PyGPTConfig
from .sharding import _leaf_spec

# GPT-2 small (124M) and a GPT-3 XL-shaped 1.3B model (24 layers x 2048, as in the GPT-3 paper's table), with
# GPT-2's vocabulary and learned positions, as our config expresses them.
PRESETS = {
    "124M": PyGPTConfig(vocab_size=50257, n_positions=1024, n_layer=12, n_head=12, n_embd=768,
                        position_embedding_type="learned"),
    "1.3B": PyGPTConfig(vocab_size=50257, n_positions=2048, n_layer=24, n_head=16, n_embd=2048,
                        position_embedding_type="learned"),
}
F32 = 4  # bytes: parameters, gradients and both AdamW moments are float32


@dataclass(frozen=True)
class LayoutCosts:
    """Bytes per device for one config on `n_devices` devices."""

    n_params: int
    n_devices: int
    params_dp: int  # data parallel: every device holds everything
    params_fsdp: int  # --fsdp: the largest device's share (replicated leaves counted whole)
    allreduce: int  # gradient bytes summed across devices per optimizer step (data parallel)

    @property
    def train_state_dp(self) -> int:
        """Parameters + gradients + AdamW mu and nu, data parallel."""
        return 4 * self.params_dp

    @property
    def train_state_fsdp(self) -> int:
        """The same with parameters, gradients and moments split (gradients are reduce-scattered to their shard)."""
        return 4 * self.params_fsdp

    @property
    def ring_bytes_per_device(self) -> int:
        """What one device sends (and receives) in a ring all-reduce of the gradients: 2 (N - 1) / N of them."""
        return int(2 * (self.n_devices - 1) / self.n_devices * self.allreduce)


def param_shapes(config: PyGPTConfig) -> list[tuple[int, ...]]:
    """The shape of every parameter tensor of the causal LM `config` describes (abstractly: no memory used)."""
    from ..modeling_flax_pygpt import FlaxPyGPTForCausalLM

    model = FlaxPyGPTForCausalLM(config, _do_init=False)
    tree = jax.eval_shape(lambda key: model.init_weights(key, (1, 1)), jax.random.PRNGKey(0))
    return [tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)]


def layout_costs(config: PyGPTConfig, n_devices: int) -> LayoutCosts:
    """Per-device bytes of the training state with data parallelism and with FSDP on `n_devices` devices."""
    shapes = param_shapes(config)
    n_params = sum(int(np.prod(shape)) for shape in shapes)
    fsdp = 0
    for shape in shapes:
        spec = _leaf_spec(shape, n_devices, fsdp=True)
        split = any(axis is not None for axis in spec)
        fsdp += int(np.prod(shape)) // (n_devices if split else 1)
    return LayoutCosts(n_params, n_devices, n_params * F32, fsdp * F32, n_params * F32)


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def costs_table(configs: dict[str, PyGPTConfig], device_counts: tuple[int, ...] = (1, 8, 64)) -> str:
    """A Markdown table of `layout_costs` for every config and device count (docs/concepts/scaling.md shows it)."""
    rows = [("| model | parameters | devices | params + grads + AdamW per device, data parallel | the same, FSDP | "
             "gradient all-reduce per step (sent per device, ring) |"),
            "| --- | --- | --- | --- | --- | --- |"]
    for name, config in configs.items():
        for n in device_counts:
            c = layout_costs(config, n)
            ring = gib(c.ring_bytes_per_device) if n > 1 else "none"
            rows.append(f"| {name} | {c.n_params / 1e6:,.0f}M | {n} | {gib(c.train_state_dp)} | "
                        f"{gib(c.train_state_fsdp)} | {gib(c.allreduce)} ({ring}) |")
    return "\n".join(rows)
