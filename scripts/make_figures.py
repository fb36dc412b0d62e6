"""Draw the documentation's figures from the real model and tokenizer, and compute the numbers its pages state.

    python scripts/make_figures.py --out build/docs/figures

writes one PNG per figure and `facts.json` (parameter counts, FLOPs, tensor shapes, losses, compression).
The docs build runs this same code (`docs/hooks.py` calls `make_all`), so no figure or number in the pages
is drawn or typed by hand. Everything is seeded and small: a 512-token BPE and a 2-layer model trained for
150 steps on the embedded tinyshakespeare corpus, about ten seconds on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

# transformers 4.57 logs a deprecation notice when a Flax model is built; the pinned stack knows it already.
logging.getLogger("transformers.modeling_flax_utils").addFilter(lambda record: "JAX classes" not in str(record.msg))
matplotlib.use("Agg")  # files only, never a window
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from pygpt_hf.bpe import FIRST_MERGE_ID, to_vocab_and_merges, train_bpe
from pygpt_hf.configuration_pygpt import PyGPTConfig
from pygpt_hf.modeling_flax_pygpt import (
    FlaxPyGPTForCausalLM,
    apply_rotary,
    rotary_cos_sin,
    sinusoidal_positions,
)
from pygpt_hf.tokenization_pygpt_fast import PyGPTTokenizerFast, build_backend_tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "pygpt_hf" / "data" / "tinyshakespeare.txt"
SEED = 0
VOCAB_SIZE = 512  # the small tokenizer every figure uses
TINY = {"n_positions": 64, "n_embd": 64, "n_layer": 2, "n_head": 4, "position_embedding_type": "learned"}
STEPS, BATCH, LR, WARMUP = 150, 16, 3e-3, 20
SENTENCE = "ROMEO:\nBut soft, what light through yonder window breaks?"
DPI = 110
# GPT-2's pre-split (its GPT2Tokenizer hard-codes it), to compare with the GPT-4 pattern pygpt_hf uses.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@dataclass
class Corpus:
    train: str
    held_out: str


def load_corpus() -> Corpus:
    """tinyshakespeare, split 90/10 at a paragraph boundary: merges and weights never see the held-out part."""
    text = CORPUS.read_text(encoding="utf-8")
    cut = text.index("\n\n", int(len(text) * 0.9)) + 2
    return Corpus(text[:cut], text[cut:])


def paragraphs(text: str) -> list[str]:
    return [p + "\n\n" for p in text.split("\n\n") if p]


def tokenizer_from_merges(merges: list[tuple[bytes, bytes]]) -> PyGPTTokenizerFast:
    vocab, merge_strings = to_vocab_and_merges(merges)
    backend = build_backend_tokenizer(vocab, merge_strings)
    return PyGPTTokenizerFast(tokenizer_object=backend, model_max_length=VERY_LARGE_INTEGER)  # whole texts


def bytes_per_token(tokenizer, text: str) -> float:
    ids = tokenizer(text, split_special_tokens=True)["input_ids"]
    return len(text.encode("utf-8")) / len(ids)


def save(fig, out: Path, name: str) -> None:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# Tokenizer


def figure_bpe(corpus: Corpus, out: Path, facts: dict) -> PyGPTTokenizerFast:
    """Bytes per token on held-out text as the merges grow, from the same learned merge list cut short."""
    merges = train_bpe(paragraphs(corpus.train), VOCAB_SIZE, show_progress=False)
    sizes = sorted({0, 8, 16, 32, 64, 96, 128, 192, len(merges)})
    sizes = [k for k in sizes if k <= len(merges)]
    ratios = [bytes_per_token(tokenizer_from_merges(merges[:k]), corpus.held_out) for k in sizes]

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([FIRST_MERGE_ID + k for k in sizes], ratios, marker="o")
    ax.set_xlabel("vocabulary size (256 bytes + 2 specials + merges)")
    ax.set_ylabel("bytes per token (held-out)")
    ax.set_title("BPE compression on tinyshakespeare as merges are added")
    ax.grid(alpha=0.3)
    save(fig, out, "bpe_compression.png")

    # The same training with GPT-2's split pattern, encoded through the same kind of pipeline.
    gpt2_merges = train_bpe(paragraphs(corpus.train), VOCAB_SIZE, pattern=GPT2_SPLIT_PATTERN, show_progress=False)
    vocab, merge_strings = to_vocab_and_merges(gpt2_merges)
    gpt2 = Tokenizer(models.BPE(vocab=vocab, merges=merge_strings))
    gpt2.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    facts["bpe_bytes_per_token_gpt2_split"] = f"{len(corpus.held_out.encode()) / len(gpt2.encode(corpus.held_out).ids):.2f}"

    show = lambda b: b.decode("utf-8", errors="replace")
    facts["bpe_vocab_size"] = FIRST_MERGE_ID + len(merges)
    facts["bpe_n_merges"] = len(merges)
    facts["bpe_first_merges"] = ", ".join(f"`{show(a + b)!r}`" for a, b in merges[:8])
    facts["bpe_bytes_per_token"] = f"{ratios[-1]:.2f}"
    facts["bpe_bytes_per_token_bytes_only"] = f"{ratios[0]:.2f}"
    return tokenizer_from_merges(merges)


# ----------------------------------------------------------------------------------------------------------
# Positions


def figure_sinusoidal(out: Path, facts: dict) -> None:
    T, C = 128, 64
    table = np.asarray(sinusoidal_positions(jnp.arange(T)[None], C)[0])  # (T, C)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    im = ax.imshow(table.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, origin="lower")
    ax.set_xlabel("position p")
    ax.set_ylabel("channel (sin at even, cos at odd)")
    ax.set_title(f"sinusoidal_positions: the table for T={T}, C={C}")
    fig.colorbar(im, ax=ax)
    save(fig, out, "sinusoidal.png")
    facts["sinusoidal_table_shape"] = str(tuple(table.shape))


def figure_rope(out: Path, facts: dict) -> None:
    """One (x_i, x_{i+D/2}) pair turned by position, and q.k depending only on the distance m - n."""
    D, theta, T = 8, 10000.0, 16
    positions = jnp.arange(T)[None]  # (1, T)
    cos, sin = rotary_cos_sin(positions, D, theta)  # (1, T, 1, D)
    x = jnp.zeros((1, T, 1, D)).at[..., 0].set(1.0)  # the same vector at every position: pair 0 = (1, 0)
    rotated = np.asarray(apply_rotary(x, cos, sin))[0, :, 0]  # (T, D)

    rng = np.random.default_rng(SEED)
    q = jnp.broadcast_to(jnp.asarray(rng.normal(size=D), jnp.float32), (1, T, 1, D))
    k = jnp.broadcast_to(jnp.asarray(rng.normal(size=D), jnp.float32), (1, T, 1, D))
    qr, kr = np.asarray(apply_rotary(q, cos, sin))[0, :, 0], np.asarray(apply_rotary(k, cos, sin))[0, :, 0]
    scores = qr @ kr.T  # (T, T): score of query at m against key at n

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    a.add_patch(plt.Circle((0, 0), 1, fill=False, ls=":", color="gray"))
    for p in range(8):
        a.annotate("", xy=(rotated[p, 0], rotated[p, D // 2]), xytext=(0, 0),
                   arrowprops={"arrowstyle": "->", "color": plt.cm.viridis(p / 8)})
        a.text(1.12 * rotated[p, 0], 1.12 * rotated[p, D // 2], str(p), ha="center", va="center")
    a.set_xlim(-1.4, 1.4)
    a.set_ylim(-1.4, 1.4)
    a.set_aspect("equal")
    a.set_title("pair (x_0, x_4) of (1, 0, ...) at positions 0..7")
    im = b.imshow(scores, cmap="viridis")
    b.set_xlabel("key position n")
    b.set_ylabel("query position m")
    b.set_title("rotated q.k: constant along diagonals", fontsize=10)
    fig.colorbar(im, ax=b)
    save(fig, out, "rope.png")
    diagonal_spread = max(float(np.ptp(np.diag(scores, d))) for d in range(-T + 1, T))
    facts["rope_diagonal_spread"] = f"{diagonal_spread:.1e}"


def figure_learned(model, params, out: Path) -> None:
    table = np.asarray(params["transformer"]["wpe"]["embedding"])  # (n_positions, C)
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.imshow(table.T, aspect="auto", cmap="RdBu", origin="lower")
    a.set_xlabel("position")
    a.set_ylabel("channel")
    a.set_title("learned wpe after training")
    im = b.imshow(unit @ unit.T, cmap="viridis", vmin=-1, vmax=1)
    b.set_xlabel("position")
    b.set_ylabel("position")
    b.set_title("cosine similarity between positions")
    fig.colorbar(im, ax=b)
    save(fig, out, "learned_positions.png")


# ----------------------------------------------------------------------------------------------------------
# Attention


def figure_causal_mask(out: Path, facts: dict) -> None:
    """The mask read back from a real model: the attention weights that come out exactly zero."""
    config = PyGPTConfig(vocab_size=300, **TINY)
    model = FlaxPyGPTForCausalLM(config, seed=SEED)
    T = 10
    ids = jnp.full((1, T), 72)
    mask = jnp.array([[0, 0, 0] + [1] * (T - 3)])  # a left-padded row: three pad slots
    attentions = jax.jit(lambda ids, mask: model(ids, attention_mask=mask, output_attentions=True).attentions)
    plain = attentions(ids, jnp.ones_like(mask))[0][0, 0]  # (T, T): layer 0, head 0
    padded = attentions(ids, mask)[0][0, 0]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, probs, title in zip(axes, (plain, padded), ("causal", "causal + 3 left pads")):
        ax.imshow(np.asarray(probs) > 0, cmap="Greens", vmin=0, vmax=1.3)
        ax.set_xlabel("key position s")
        ax.set_ylabel("query position t")
        ax.set_title(f"allowed (weight > 0): {title}")
    save(fig, out, "causal_mask.png")
    facts["causal_mask_zero_above_diagonal"] = bool(np.all(np.triu(np.asarray(plain), 1) == 0))


def figure_attention(model, params, tokenizer, out: Path, facts: dict) -> None:
    ids = [256] + tokenizer(SENTENCE, split_special_tokens=True)["input_ids"]
    ids = ids[: model.config.n_positions]
    attentions = jax.jit(lambda p, x: model(x, params=p, output_attentions=True).attentions)(params, jnp.array([ids]))
    labels = ["<eot>"] + [tokenizer.decode([i]).replace("\n", "\\n") for i in ids[1:]]
    L, H = model.config.n_layer, model.config.n_head
    fig, axes = plt.subplots(L, H, figsize=(3.1 * H, 3.1 * L))
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            ax.imshow(np.asarray(attentions[layer][0, head]), cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=5)
            ax.set_yticks(range(len(ids)), labels, fontsize=5)
    fig.tight_layout()
    save(fig, out, "attention_patterns.png")
    facts["attention_sentence_tokens"] = len(ids)
    facts["attentions_shape"] = str(tuple(attentions[0].shape))


# ----------------------------------------------------------------------------------------------------------
# Training


def batches(ids: np.ndarray, seq_len: int, batch: int, rng: np.random.Generator):
    """Random windows of seq_len + 1 tokens: inputs are [:, :-1], targets [:, 1:]."""
    while True:
        starts = rng.integers(0, len(ids) - seq_len - 1, size=batch)
        yield np.stack([ids[s: s + seq_len + 1] for s in starts])


def train_tiny(tokenizer, corpus: Corpus, out: Path, facts: dict):
    """A 2-layer model, AdamW with warmup + cosine and clipping, next-token cross-entropy: the whole idea."""
    train_ids = np.array(tokenizer(corpus.train, split_special_tokens=True)["input_ids"], dtype=np.int32)
    held_ids = np.array(tokenizer(corpus.held_out, split_special_tokens=True)["input_ids"], dtype=np.int32)
    config = PyGPTConfig(vocab_size=len(tokenizer), **TINY)
    model = FlaxPyGPTForCausalLM(config, seed=SEED)
    schedule = optax.warmup_cosine_decay_schedule(0.0, LR, WARMUP, STEPS, LR * 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.1))

    def loss_fn(params, tokens):  # tokens: (B, T + 1)
        logits = model(tokens[:, :-1], params=params).logits  # (B, T, V)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    @jax.jit
    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_loss = jax.jit(loss_fn)
    T = config.n_positions
    held = held_ids[: (len(held_ids) - 1) // T * T + 1]
    held_blocks = np.stack([held[i: i + T + 1] for i in range(0, len(held) - T - 1, T)][:64])

    params, opt_state = model.params, optimizer.init(model.params)
    data = batches(train_ids, T, BATCH, np.random.default_rng(SEED))
    losses, evals = [], []
    for i in range(STEPS):
        params, opt_state, loss = step(params, opt_state, next(data))
        losses.append(float(loss))
        if i % 25 == 0 or i == STEPS - 1:
            evals.append((i, float(eval_loss(params, held_blocks))))

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.plot(losses, label="train (one batch)")
    a.plot(*zip(*evals), marker="o", label="held-out")
    a.axhline(math.log(config.vocab_size), ls=":", color="gray", label="ln(V): uniform guess")
    a.set_xlabel("step")
    a.set_ylabel("cross-entropy (nats/token)")
    a.set_title(f"{config.n_layer}x{config.n_embd} on tinyshakespeare")
    a.legend(loc="upper right")
    a.grid(alpha=0.3)
    b.plot([float(schedule(i)) for i in range(STEPS)])
    b.set_xlabel("step")
    b.set_ylabel("learning rate")
    b.set_title(f"warmup {WARMUP} steps, cosine to {LR * 0.1:g}")
    b.grid(alpha=0.3)
    save(fig, out, "loss_curve.png")

    held_bytes = len(tokenizer.decode(held_blocks[:, 1:].reshape(-1).tolist()).encode("utf-8"))
    final = evals[-1][1]
    facts.update(
        tiny_steps=STEPS, tiny_batch=BATCH, tiny_seq=T, tiny_lr=f"{LR:g}",
        tiny_params=f"{sum(p.size for p in jax.tree_util.tree_leaves(params)):,}",
        tiny_first_loss=f"{losses[0]:.2f}", tiny_uniform_loss=f"{math.log(config.vocab_size):.2f}",
        tiny_eval_loss=f"{final:.2f}",
        tiny_bits_per_byte=f"{final * held_blocks[:, 1:].size / held_bytes / math.log(2):.2f}",
    )
    return model, params


def figure_sampling(model, params, tokenizer, out: Path, facts: dict) -> None:
    """What temperature and top-p do to the trained model's next-token distribution after a prompt."""
    from transformers.generation.flax_logits_process import FlaxTopPLogitsWarper

    prompt = "ROMEO:\nI will"
    ids = [256] + tokenizer(prompt, split_special_tokens=True)["input_ids"]
    logits = jax.jit(lambda p, x: model(x, params=p).logits[0, -1])(params, jnp.array([ids]))  # (V,)
    order = np.argsort(-np.asarray(logits))[:15]
    labels = [repr(tokenizer.decode([int(i)]))[1:-1].replace(" ", "␣") for i in order]  # spaces shown
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharey=True)
    for ax, temperature in zip(axes[:3], (0.5, 1.0, 2.0)):
        probs = np.asarray(jax.nn.softmax(logits / temperature))
        ax.bar(range(15), probs[order])
        ax.set_title(f"temperature {temperature}")
    warped = FlaxTopPLogitsWarper(0.5)(None, logits[None], 0)[0]
    nucleus = np.asarray(jax.nn.softmax(warped))
    axes[3].bar(range(15), nucleus[order], color="tab:orange")
    axes[3].set_title("top-p 0.5 (temperature 1)")
    for ax in axes:
        ax.set_xticks(range(15), labels, rotation=90, fontsize=7)
    axes[0].set_ylabel(f"p(next | {prompt!r})")
    save(fig, out, "sampling.png")
    facts["sampling_top_p_kept"] = int((nucleus > 0).sum())


# ----------------------------------------------------------------------------------------------------------
# Numbers of the default architecture


def default_shape_facts(out: Path, facts: dict) -> None:
    """Parameter count and FLOPs per token of `PyGPTConfig()`, from the model's own parameter tree and XLA."""
    config = PyGPTConfig()
    model = FlaxPyGPTForCausalLM(config, _do_init=False)
    shapes = jax.eval_shape(lambda rng: model.init_weights(rng, (1, 1)), jax.random.PRNGKey(0))  # no memory, no compute
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
    tree = shapes["transformer"]
    total, embedding, block = count(shapes), count(tree["wte"]), count(tree["h"]["0"])
    C, L, V, T, H = config.n_embd, config.n_layer, config.vocab_size, config.n_positions, config.n_head

    # Forward FLOPs of one sequence of T tokens, as XLA counts them (2 per multiply-add, plus elementwise).
    def forward(params, ids):
        return model(ids, params=params).logits

    ids = jax.ShapeDtypeStruct((1, T), jnp.int32)
    cost = jax.jit(forward).lower(shapes, ids).cost_analysis()  # XLA's HLO cost model, no compile needed
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_per_token = float(cost["flops"]) / T

    # By hand: 2 FLOPs per weight per token for every matmul (blocks and the tied output layer), plus the
    # attention scores and weighted values, 2 * 2 * T * C per layer per token over the full (T, T) square.
    matmul_weights = L * (12 * C * C) + V * C
    formula = 2 * matmul_weights + 4 * L * T * C
    facts.update(
        default_vocab=f"{V:,}", default_n_positions=T, default_n_embd=C, default_n_layer=L, default_n_head=H,
        default_head_dim=config.head_dim, default_mlp_width=config.mlp_width,
        params_total=f"{total:,}", params_embedding=f"{embedding:,}", params_block=f"{block:,}",
        params_blocks=f"{L * block:,}", params_final_norm=f"{count(tree['ln_f']):,}",
        params_block_formula=f"{12 * C * C + 13 * C:,}",
        params_embedding_share=f"{embedding / total:.0%}",
        flops_forward_formula=f"{formula / 1e6:.1f}", flops_forward_xla=f"{xla_per_token / 1e6:.1f}",
        flops_train_per_token=f"{3 * formula / 1e6:.0f}",
        train_tokens_per_s_at_100_gflops=f"{100e9 / (3 * formula):,.0f}",
        flops_attention_share=f"{4 * L * T * C / formula:.0%}",
    )
    block_tree = tree["h"]["0"]
    parts = {
        "token embedding\n(= output layer)": embedding,
        "attention\n(all layers)": L * count(block_tree["attn"]),
        "MLP\n(all layers)": L * count(block_tree["mlp"]),
        "LayerNorms": L * (count(block_tree["ln_1"]) + count(block_tree["ln_2"])) + count(tree["ln_f"]),
    }
    contexts = np.array([64, 128, 256, 512, 1024, 2048, 4096])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.barh(list(parts), [v / 1e6 for v in parts.values()], color="tab:blue")
    a.set_xlabel("parameters (millions)")
    a.set_title(f"PyGPTConfig(): {total / 1e6:.2f}M parameters")
    a.invert_yaxis()
    b.stackplot(contexts, [np.full(len(contexts), 2 * matmul_weights / 1e6), 4 * L * contexts * C / 1e6],
                labels=["matmuls with weights: 2(12LC² + VC)", "attention scores and values: 4LTC"])
    b.axvline(T, ls=":", color="gray")
    b.set_xscale("log", base=2)
    b.set_xlabel("context length T")
    b.set_ylabel("forward MFLOP per token")
    b.set_title("where a token's FLOPs go")
    b.legend(loc="upper left", fontsize=8)
    save(fig, out, "params_flops.png")

    # The shapes of one attention layer's tensors for a batch of 2 sequences of 16 tokens.
    B, S = 2, 16
    facts.update(
        attn_x_shape=str((B, S, C)), attn_qkv_shape=str((B, H, S, config.head_dim)),
        attn_scores_shape=str((B, H, S, S)), attn_out_shape=str((B, S, C)),
    )
    cache = model.init_cache(B, T)
    layer0 = cache["transformer"]["h"]["0"]["attn"]
    facts["cache_key_shape"] = str(tuple(layer0["cached_key"].shape))
    facts["cache_bytes"] = f"{sum(x.nbytes for x in jax.tree_util.tree_leaves(cache)) / 2**20:.1f}"


def check_attention_shapes(facts: dict) -> None:
    """Read the shapes back from an abstract forward pass of the default config (B=2, T=16): tracing only."""
    model = FlaxPyGPTForCausalLM(PyGPTConfig(), _do_init=False)
    shapes = jax.eval_shape(lambda rng: model.init_weights(rng, (1, 1)), jax.random.PRNGKey(0))
    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    out = jax.eval_shape(lambda p, x: model(x, params=p, output_attentions=True, output_hidden_states=True), shapes, ids)
    assert str(tuple(out.attentions[0].shape)) == facts["attn_scores_shape"], out.attentions[0].shape
    assert str(tuple(out.hidden_states[0].shape)) == facts["attn_x_shape"], out.hidden_states[0].shape
    facts["logits_shape"] = str(tuple(out.logits.shape))


# ----------------------------------------------------------------------------------------------------------


def scaling_facts(facts: dict) -> None:
    """What data parallel vs FSDP keeps per device for a 124M and a 1.3B model (docs/concepts/scaling.md),
    computed from their configs by the harness's own split rule."""
    from pygpt_hf.training.scaling import PRESETS, costs_table, gib, layout_costs

    facts["scaling_table"] = costs_table(PRESETS)
    for name, key in (("124M", "124m"), ("1.3B", "1b3")):
        one, eight = layout_costs(PRESETS[name], 1), layout_costs(PRESETS[name], 8)
        facts[f"scaling_{key}_params"] = f"{one.n_params:,}"
        facts[f"scaling_{key}_state"] = gib(one.train_state_dp)
        facts[f"scaling_{key}_fsdp8"] = gib(eight.train_state_fsdp)
        facts[f"scaling_{key}_allreduce"] = gib(one.allreduce)


def _timer(log):
    def timed(fn, *args):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        log(f"  {fn.__name__}: {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s cpu")
        return result
    return timed


def make_all(out_dir: str | Path, log=print) -> dict:
    """Draw every figure into `out_dir` and return the facts (also written to `out_dir/facts.json`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facts: dict = {}
    start = time.perf_counter()
    corpus = load_corpus()
    timed = _timer(log)
    tokenizer = timed(figure_bpe, corpus, out, facts)
    timed(figure_sinusoidal, out, facts)
    timed(figure_rope, out, facts)
    timed(figure_causal_mask, out, facts)
    model, params = timed(train_tiny, tokenizer, corpus, out, facts)
    timed(figure_learned, model, params, out)
    timed(figure_attention, model, params, tokenizer, out, facts)
    timed(figure_sampling, model, params, tokenizer, out, facts)
    timed(default_shape_facts, out, facts)
    timed(check_attention_shapes, facts)
    timed(scaling_facts, facts)
    (out / "facts.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    log(f"make_figures: {len(list(out.glob('*.png')))} figures and {len(facts)} facts in {out} "
        f"({time.perf_counter() - start:.1f} s)")
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/docs/figures", help="folder for the PNGs and facts.json")
    make_all(parser.parse_args().out)


if __name__ == "__main__":
    main()
