"""A model folder or Hub repo -> what the server serves (`Served`), in Flax or PyTorch."""

from __future__ import annotations

import os

from .app import Served


class LoadError(Exception):
    """The model cannot be served (the message says why and what to do)."""


TRAIN_COMMAND = "python scripts/train.py"
DEFAULT_MODEL = "runs/pygpt"  # where the README's main command (TRAIN_COMMAND) writes its model


def check_model_location(name: str) -> str:
    """The local folder for `name`, or `name` itself as a Hub repo id; plain errors before any heavy import."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise LoadError(f"--model {name}: the folder has no config.json, so it is not a saved model "
                            "(point it at what scripts/train.py or save_pretrained wrote)")
        return path
    if os.path.exists(path):
        raise LoadError(f"--model {name}: is a file; give the model's folder")
    if name == DEFAULT_MODEL or name.startswith((".", "/", "~")) or name.count("/") != 1 \
            or os.path.isdir(name.split("/")[0]):  # "runs/x" with a local runs/ folder is a path, not a repo
        raise LoadError(f"--model {name}: there is no such model folder (and it is not a Hub repo id user/name). "
                        f"Train one first: {TRAIN_COMMAND}  (it writes {DEFAULT_MODEL})")
    return name


COMPILE_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pygpt_hf", "jax")


def load_served(model: str, framework: str = "flax", served_model_name: str | None = None, slots: int = 16,
                steps_per_call: int = 8, warm_up: bool = False, log=None, engines: int = 1) -> Served:
    """Config, tokenizer and weights of `model`, and the engine started on them.

    Flax: `slots` rows decoded together, split over `engines` batch engines that run side by side
    (`EnginePool`; 1 = one engine).

    `warm_up` (Flax) compiles every shape a request can need before returning, so no request waits for a
    compile under load; compiled programs are kept in jax's persistent cache (COMPILE_CACHE unless
    JAX_COMPILATION_CACHE_DIR says otherwise), so the next start of the same model shape is quick. `log` gets
    one line saying what was compiled."""
    from transformers import AutoConfig, AutoTokenizer

    import pygpt_hf  # noqa: F401  registers PyGPT with the Auto classes

    from ..streaming import context_length
    from .engine import EnginePool, FlaxBatchEngine, TorchEngine

    if not 1 <= engines <= slots:
        raise LoadError(f"--engines must be between 1 and --max-batch ({slots}), got {engines}")

    location = check_model_location(model)
    try:
        config = AutoConfig.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise LoadError(f"--model {model}: cannot read its config and tokenizer: {err}") from err
    if tokenizer.eos_token_id is None:
        raise LoadError(f"--model {model}: the tokenizer has no eos token, so generation could not stop")
    try:
        if framework == "torch":
            try:
                import torch  # noqa: F401
            except ImportError as err:
                raise LoadError("--framework torch needs PyTorch: pip install 'pygpt-hf[torch]'") from err
            from transformers import AutoModelForCausalLM

            engine = TorchEngine(AutoModelForCausalLM.from_pretrained(location).eval())
        else:
            from transformers import FlaxAutoModelForCausalLM

            flax_model = FlaxAutoModelForCausalLM.from_pretrained(location)
            sizes = [slots // engines + (i < slots % engines) for i in range(engines)]  # rows of each engine
            pool = [FlaxBatchEngine(flax_model, slots=n, steps_per_call=steps_per_call) for n in sizes]
            engine = pool[0] if engines == 1 else EnginePool(pool)
    except (OSError, ValueError) as err:
        raise LoadError(f"--model {model}: cannot load the weights: {err}") from err
    if warm_up and framework != "torch":  # `pool`: the Flax engines built above
        import jax

        if not jax.config.jax_compilation_cache_dir:
            jax.config.update("jax_compilation_cache_dir", COMPILE_CACHE)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        shapes, seconds = engine.warm_up()
        first = pool[0]  # every engine of a pool compiles the same kinds of shapes
        if log is not None:
            log(f"compiled {shapes} shapes in {seconds:.1f} s (decode: rows {first.row_buckets} x cache windows "
                f"{first.windows}; prefill: rows x prompt lengths {first.prompt_buckets}"
                f"{f', in each of {engines} engines' if engines > 1 else ''}; cache: "
                f"{jax.config.jax_compilation_cache_dir})")
    else:
        engine.start()
    name = served_model_name or (os.path.basename(os.path.normpath(model)) if os.path.isdir(location) else model)
    return Served(name=name, tokenizer=tokenizer, engine=engine,
                  n_positions=context_length(config))
