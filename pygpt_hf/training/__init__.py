"""The harness that makes models: data pipeline, train state and step, checkpoints, metrics, Hub pushes.

One module per concern, in the order a run meets them (`loop.train` calls them in this order):
    settings.py      the run's settings: one dataclass (validation, the --dataset grammar)
    cli.py           flags (HfArgumentParser), --config files and a resumed run's saved settings fill it
    data.py          settings -> first batch, top to bottom, through the three data stages:
      mixture.py       1. the sources' documents (pygpt_hf.documents), held out, mixed; built once
      tokenizer.py        the tokenizer, loaded or trained once; its chat template, hash and special ids
      encoding.py      2. documents -> token ids + loss masks (batched map)
      pretokenized.py     ... or a folder of tokens enters here (scripts/pretokenize.py writes it)
      packing.py       3. ids -> packed blocks -> seeded shuffle buffer -> (tokens, mask) batches; the eval set
    state.py         model, AdamW + warmup/cosine schedule, the TrainState pytree
    sharding.py      the device mesh: data parallel or FSDP, multi-process setup
    step.py          the jitted train step (masked loss, grad accumulation, donated state) and eval step
    metrics.py       progress bar, metrics.jsonl, loss-curve PNG, eval figures (bits per byte)
    clock.py         where the run's wall time goes: start-up parts, train-step share, tokens/s, recompiles
    checkpoint.py    atomic checkpoints = HF model folder + training state (safetensors + JSON)
    hub.py           push the output folder, one commit per checkpoint
    sample.py        a text sample at the end (through the chat template for instruction runs)
    hooks.py         fault injection for tests, from environment variables
    loop.py          train(settings): the run, top to bottom
"""

import importlib as _importlib

# Imported on first use (PEP 562), so that `from pygpt_hf.training.settings import ...` (the CLIs' --help, the
# tokenizer CLI) does not pay for jax, optax and flax through loop.py / state.py / step.py.
_EXPORTS = {
    "DataSettings": "settings",
    "NoUsableData": "packing",
    "TrainResult": "loop",
    "TrainSettings": "settings",
    "TrainState": "state",
    "TrainingDiverged": "loop",
    "build_model": "state",
    "create_train_state": "state",
    "make_eval_step": "step",
    "make_optimizer": "state",
    "make_train_step": "step",
    "model_config": "state",
    "parse_settings": "cli",
    "train": "loop",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
