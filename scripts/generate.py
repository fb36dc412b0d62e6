"""Generate text with a PyGPT model, streamed to the terminal token by token.

    python scripts/generate.py --model runs/pygpt --prompt "ROMEO:"
    python scripts/generate.py --model runs/pygpt --instruction "Differentiate 3x^2 + 2x." --temperature 0
    python scripts/generate.py --model user/pygpt-tiny --framework torch --prompt "Once upon a time"
    python scripts/generate.py --model runs/pygpt          # interactive: one prompt per line, Ctrl-D quits

--model is a model folder (what scripts/train.py or save_pretrained writes, with its tokenizer) or a Hub
repo id. --instruction/--context go through the tokenizer's chat template when it has one
(`apply_chat_template` with messages user = instruction, system = context, and the generation prompt;
scripts/train.py stores the instruction template there for dolly/alpaca data), else through the training
instruction template itself; either way an instruction-tuned model sees what it was trained on. Every
prompt starts with <|endoftext|>, as every training document does, and typed control strings stay text. Sampling: --temperature 0 is greedy; --top-k 0 and
--top-p 1 switch those filters off. --seed makes sampling repeatable; in the interactive loop, line i
uses seed + i. Only the generated text goes to stdout; notes and errors go to stderr.

Exit codes: 0 done, 1 bad arguments or model, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


class CliError(Exception):
    """Bad input: printed as one clear line, exit status 1."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub repo id (default: the model's own)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--prompt", help="text to continue (without --prompt/--instruction: interactive)")
    what.add_argument("--instruction", help="an instruction, rendered through the instruction template")
    parser.add_argument("--context", help="optional input/context for --instruction")
    parser.add_argument("--interactive-format", choices=("text", "instruction"), default="text",
                        help="what an interactive line is: text to continue, or an instruction (default: text)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="new tokens at most (default 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens; 0 = off (default 50)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--framework", choices=("flax", "torch"), default="flax", help="default: flax")
    args = parser.parse_args(argv)
    if args.context is not None and args.instruction is None:
        parser.error("--context needs --instruction")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not args.temperature >= 0:
        parser.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k < 0:
        parser.error(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top-p must be in (0, 1] (1 = off), got {args.top_p}")
    return args


def check_model_location(name: str) -> None:
    """Fail early and plainly for a local path that is not a model folder (before any heavy import)."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise CliError(f"--model {name}: the folder has no config.json, so it is not a saved model "
                           "(point it at what scripts/train.py or save_pretrained wrote)")
    elif os.path.exists(path):
        raise CliError(f"--model {name}: is a file; give the model's folder")
    elif name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise CliError(f"--model {name}: no such model folder (and not a Hub repo id of the form user/name)")


def model_path(name: str) -> str:
    path = os.path.expanduser(name)
    return path if os.path.isdir(path) else name


def load_config_and_tokenizer(args: argparse.Namespace):
    """The model's config and tokenizer: light, so bad requests are refused before the weights load."""
    from transformers import AutoConfig, AutoTokenizer

    import pygpt_hf  # noqa: F401  registers PyGPT with the Auto classes

    try:
        config = AutoConfig.from_pretrained(model_path(args.model))
    except (OSError, ValueError) as err:
        where = "folder" if os.path.isdir(model_path(args.model)) else "Hub repo (there is no such local folder)"
        raise CliError(f"--model {args.model}: cannot read the model's config from this {where}: {err}") from err
    tokenizer_path = args.tokenizer or model_path(args.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError, TypeError) as err:
        raise CliError(f"cannot load a tokenizer from {tokenizer_path}: {err}; pass one with --tokenizer") from err
    if tokenizer.eos_token_id is None:
        raise CliError(f"the tokenizer of {tokenizer_path} has no eos token, so generation could not stop")
    return config, tokenizer


def load_model(args: argparse.Namespace):
    """The model for --model in the chosen framework."""
    try:
        if args.framework == "torch":
            try:
                import torch  # noqa: F401
            except ImportError as err:
                raise CliError("--framework torch needs PyTorch: pip install 'pygpt-hf[torch]'") from err
            from transformers import AutoModelForCausalLM

            return AutoModelForCausalLM.from_pretrained(model_path(args.model)).eval()
        from transformers import FlaxAutoModelForCausalLM

        return FlaxAutoModelForCausalLM.from_pretrained(model_path(args.model))
    except (OSError, ValueError) as err:
        raise CliError(f"--model {args.model}: cannot load the model's weights: {err}") from err


def instruction_text(instruction: str, context: str | None = None) -> str:
    """The training template with an empty response: the model continues after "### Response:"."""
    from pygpt_hf.documents import render_instruction

    return render_instruction(instruction, "", context)


def prompt_ids(tokenizer, text: str | None = None, instruction: str | None = None,
               context: str | None = None) -> list[int]:
    """The ids the model is given: <|endoftext|> (bos), then `text`, or the instruction prompt rendered by the
    tokenizer's chat template (when it has one) or by the training template."""
    from pygpt_hf.streaming import encode_prompt

    if instruction is None:
        return encode_prompt(tokenizer, text)
    if tokenizer.chat_template is None:
        return encode_prompt(tokenizer, instruction_text(instruction, context))
    from jinja2 import TemplateError

    from pygpt_hf.documents import instruction_messages

    try:
        ids = tokenizer.apply_chat_template(instruction_messages(instruction, None, context), add_generation_prompt=True,
                                            tokenize=True, tokenizer_kwargs={"split_special_tokens": True})
    except TemplateError as err:
        raise CliError(f"the tokenizer's chat template cannot render --instruction: {err}") from err
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None and ids[:1] != [bos] else []) + list(ids)


class Generator:
    """One prompt's ids in, its continuation streamed to stdout."""

    def __init__(self, args: argparse.Namespace, model, tokenizer):
        self.args, self.model, self.tokenizer = args, model, tokenizer
        if args.framework == "flax":
            from pygpt_hf.streaming import FlaxTokenStreamer

            self.streamer = FlaxTokenStreamer(model, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)

    def __call__(self, ids: list[int], seed: int) -> int:
        from pygpt_hf.streaming import check_fits, context_length, stream_text, stream_torch

        args = self.args
        check_fits(len(ids), args.max_new_tokens, context_length(self.model.config))
        start = time.perf_counter()
        if args.framework == "torch":
            new_ids = stream_torch(self.model, self.tokenizer, ids, args.max_new_tokens, args.temperature,
                                   args.top_k, args.top_p, seed)
        else:
            new_ids = []

            def recorded(tokens):
                for token in tokens:
                    new_ids.append(token)
                    yield token

            tokens = self.streamer.stream(ids, args.max_new_tokens, seed=seed, eos_token_id=self.tokenizer.eos_token_id)
            for piece in stream_text(recorded(tokens), self.tokenizer):
                print(piece, end="", flush=True)
            print(flush=True)
        seconds = time.perf_counter() - start
        print(f"[{len(new_ids)} tokens in {seconds:.1f} s]", file=sys.stderr, flush=True)
        return len(new_ids)


def interactive(generate: Generator, args: argparse.Namespace) -> None:
    """One generation per line of stdin, until end of input (Ctrl-D)."""
    tty = sys.stdin.isatty()
    print("interactive: type a " + ("prompt" if args.interactive_format == "text" else "instruction")
          + " and press Enter; Ctrl-D quits", file=sys.stderr, flush=True)
    for i in range(sys.maxsize):
        try:
            line = input("> ") if tty else sys.stdin.readline()
        except EOFError:
            line = ""
        if line == "":  # end of input
            if tty:
                print(file=sys.stderr)
            return
        text = line.rstrip("\r\n")
        try:
            if args.interactive_format == "instruction":
                ids = prompt_ids(generate.tokenizer, instruction=text)
            else:
                ids = prompt_ids(generate.tokenizer, text=text)
            generate(ids, seed=args.seed + i)
        except ValueError as err:  # e.g. this line is too long for the context: say so and go on
            print(f"error: {err}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_model_location(args.model)
        config, tokenizer = load_config_and_tokenizer(args)
        from pygpt_hf.streaming import check_fits, context_length

        n_positions = context_length(config)
        if args.max_new_tokens >= n_positions:
            raise CliError(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in the model's "
                           f"context (n_positions = {n_positions}); use at most {n_positions - 1}")
        ids = None
        if args.prompt is not None or args.instruction is not None:
            ids = prompt_ids(tokenizer, text=args.prompt, instruction=args.instruction, context=args.context)
            check_fits(len(ids), args.max_new_tokens, n_positions)  # refused before the weights load
        generate = Generator(args, load_model(args), tokenizer)
        if ids is not None:
            generate(ids, seed=args.seed)
        else:
            interactive(generate, args)
    except (CliError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
