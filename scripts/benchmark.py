"""Speed side by side with the peers, in one process, as medians and ratios.

    python scripts/benchmark.py generate         # cached greedy decoding vs transformers' FlaxGPT2LMHeadModel
    python scripts/benchmark.py train            # train step vs FlaxGPT2 (same optax step) and the PyTorch twin
    python scripts/benchmark.py tokenizer-train  # our BPE trainer vs tokenizers' BpeTrainer
    python scripts/benchmark.py tokenizer-encode # our tokenizers vs GPT2Tokenizer / raw tokenizers
    python scripts/benchmark.py eval             # evaluate.py tokens/s vs lm-eval's hf backend (scripts/bench_eval.py)
    python scripts/benchmark.py checkpoint-load  # Flax load's peak memory: one file vs shards (bench_checkpoints.py)
    python scripts/benchmark.py quality          # bits per byte vs nanoGPT's CPU recipe in its wall time (bench_quality.py)

Absolute numbers drift between runs and machines; the ratios, measured side by side, are the figures.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling bench_*.py modules

SHAPES = {"tiny": dict(n_layer=4, n_embd=128, n_head=4), "small": dict(n_layer=6, n_embd=384, n_head=6)}
VOCAB = 512


def median_seconds(fn, repeats: int) -> float:
    return interleaved_medians({"only": fn}, repeats)["only"]


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median wall time of each function, running them in turn so that load drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up: compile
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def build_pair(shape: dict, n_positions: int):
    """Our model and FlaxGPT2 with the same shape (layers, width, heads, vocab, context), f32."""
    import pygpt_hf  # noqa: F401
    from transformers import FlaxGPT2LMHeadModel, GPT2Config

    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig

    ours = FlaxPyGPTForCausalLM(PyGPTConfig(vocab_size=VOCAB, n_positions=n_positions, **shape), seed=0)
    gpt2 = FlaxGPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=n_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                   bos_token_id=256, eos_token_id=256, **shape),
        seed=0,
    )
    return {"pygpt": ours, "FlaxGPT2": gpt2}


def count_params(params) -> int:
    import jax

    return sum(x.size for x in jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------------------------------------------------
def bench_generate(args) -> None:
    """Greedy decoding with the KV cache, every row running all new tokens (eos outside the vocabulary)."""
    import jax
    import jax.numpy as jnp

    prompt_len, new = 16, args.new_tokens
    print(f"cached greedy generation: {prompt_len}-token prompt + {new} new tokens, f32, median of {args.repeats}")
    print(f"{'shape':<8}{'batch':>6}{'model':>10}{'generate tok/s':>16}{'jit(generate) tok/s':>21}{'best':>10}")
    for shape_name in args.shapes:
        models = build_pair(SHAPES[shape_name], n_positions=prompt_len + new)
        for batch in args.batches:
            prompt = jnp.asarray(jax.random.randint(jax.random.PRNGKey(0), (batch, prompt_len), 0, 256))
            runs = {}
            for name, model in models.items():
                kwargs = dict(max_new_tokens=new, do_sample=False, eos_token_id=VOCAB + 7, pad_token_id=0)
                jitted_fn = jax.jit(lambda ids, model=model, kwargs=kwargs: model.generate(ids, **kwargs).sequences)
                runs[(name, "plain")] = lambda m=model, k=kwargs: m.generate(prompt, **k).sequences.block_until_ready()
                runs[(name, "jit")] = lambda f=jitted_fn: f(prompt).block_until_ready()
            seconds = interleaved_medians(runs, args.repeats)
            best = {}
            for name in models:
                rates = [batch * new / seconds[(name, kind)] for kind in ("plain", "jit")]
                best[name] = max(rates)
                print(f"{shape_name:<8}{batch:>6}{name:>10}{rates[0]:>16,.0f}{rates[1]:>21,.0f}{best[name]:>10,.0f}")
            print(f"{'':<14}ratio pygpt / FlaxGPT2 (best of each): {best['pygpt'] / best['FlaxGPT2']:.2f}x")
    if args.torch:
        bench_generate_torch(args)


def bench_generate_torch(args) -> None:
    """The PyTorch twin's cached greedy decoding, for comparison with the Flax figures above."""
    try:
        import torch
    except ImportError:
        print("torch not installed: skipping the PyTorch twin")
        return
    from pygpt_hf import PyGPTConfig
    from pygpt_hf.modeling_pygpt import PyGPTForCausalLM

    prompt_len, new = 16, args.new_tokens
    print(f"PyTorch twin, cached greedy generation, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for shape_name in args.shapes:
        model = PyGPTForCausalLM(PyGPTConfig(vocab_size=VOCAB, n_positions=prompt_len + new, **SHAPES[shape_name]))
        model.eval()
        for batch in args.batches:
            prompt = torch.randint(0, 256, (batch, prompt_len))

            def run():
                with torch.no_grad():
                    model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                   min_new_tokens=new, do_sample=False, eos_token_id=VOCAB + 7, pad_token_id=0)

            rate = batch * new / median_seconds(run, args.repeats)
            print(f"{shape_name:<8}{batch:>6}{'torch twin':>12}{rate:>16,.0f} tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="cached greedy generation vs FlaxGPT2")
    gen.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=list(SHAPES))
    gen.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    gen.add_argument("--new-tokens", type=int, default=200)
    gen.add_argument("--repeats", type=int, default=3)
    gen.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch twin")
    import bench_train

    bench_train.add_train_args(sub.add_parser("train", help="train step vs FlaxGPT2 and the PyTorch twin"))
    for name in ("tokenizer-train", "tokenizer-encode"):
        sub.add_parser(name, help="see scripts/bench_tokenizer.py", add_help=False)
    import bench_eval

    bench_eval.add_args(sub.add_parser("eval", help="evaluate.py vs lm-eval's hf backend (see scripts/bench_eval.py)"))
    import bench_checkpoints

    bench_checkpoints.add_args(sub.add_parser("checkpoint-load", help="peak memory of a Flax load: one file vs shards"))
    import bench_quality

    bench_quality.add_args(sub.add_parser("quality", help="bits per byte vs nanoGPT's CPU recipe in its wall time"))
    from pygpt_hf.serving import benchmark as serve_benchmark

    serve_benchmark.add_arguments(sub.add_parser("serve", help="the OpenAI server under load: batched vs one at a time"))
    args, rest = parser.parse_known_args()

    if args.command == "generate":
        bench_generate(args)
    elif args.command == "train":
        bench_train.bench_train(args)
    elif args.command == "eval":
        bench_eval.main(args)
    elif args.command == "checkpoint-load":
        bench_checkpoints.main(args)
    elif args.command == "serve":
        serve_benchmark.run(args)
    elif args.command == "quality":
        bench_quality.main(args)
    else:
        import bench_tokenizer

        sys.argv = [sys.argv[0], args.command.removeprefix("tokenizer-"), *rest]
        bench_tokenizer.main()


if __name__ == "__main__":
    main()
