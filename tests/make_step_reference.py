"""Write tests/data/step_reference.npz: loss and gradients of a fixed batch, as the model computed them before
the attention/MLP internals were rewritten for speed (commit 93defc0). tests/test_step_numerics.py compares
today's model against it; regenerate only on purpose (it is the reference, not a snapshot of today's code).

    PYTHONPATH=. python tests/make_step_reference.py
"""

from pathlib import Path

import numpy as np

CASES = {  # name -> PyGPTConfig overrides: each position encoding, padding, untied head
    "sinusoidal": {},
    "rope_untied": {"position_embedding_type": "rope", "tie_word_embeddings": False},
    "learned": {"position_embedding_type": "learned"},
}
SHAPE = {"vocab_size": 64, "n_positions": 32, "n_embd": 16, "n_layer": 2, "n_head": 2}
B, T = 3, 17
OUT = Path(__file__).parent / "data" / "step_reference.npz"


def fixed_batch() -> tuple[np.ndarray, np.ndarray]:
    """tokens (B, T + 1) and an attention mask (B, T) whose last row is left-padded by 5."""
    tokens = np.random.default_rng(0).integers(0, SHAPE["vocab_size"], size=(B, T + 1), dtype=np.int32)
    mask = np.ones((B, T), dtype=np.int32)
    mask[-1, :5] = 0
    return tokens, mask


def loss_and_grads(overrides: dict) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(mean next-token nats over unmasked targets, flat gradients, flat initial params), seed 0."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax.traverse_util import flatten_dict

    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig

    model = FlaxPyGPTForCausalLM(PyGPTConfig(**SHAPE, **overrides), seed=0)
    tokens, mask = fixed_batch()

    def loss_fn(params):
        logits = model(tokens[:, :-1], attention_mask=mask, params=params, train=False).logits  # (B, T, V)
        nats = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tokens[:, 1:])
        return (nats * mask).sum() / mask.sum()

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(model.params)
    def flat(tree):
        return {"/".join(k): np.asarray(v) for k, v in flatten_dict(tree).items()}

    return float(loss), flat(grads), flat(model.params)


if __name__ == "__main__":
    arrays = {}
    for name, overrides in CASES.items():
        loss, grads, params = loss_and_grads(overrides)
        arrays[f"{name}:loss"] = np.float32(loss)
        arrays.update({f"{name}:grad:{k}": v for k, v in grads.items()})
        arrays.update({f"{name}:param:{k}": v for k, v in params.items()})
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {len(arrays)} arrays to {OUT}")
