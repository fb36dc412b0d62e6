"""The harness that makes models: data pipeline, train state and step, checkpoints, metrics, Hub pushes.

One module per concern, in the order data flows:
    settings.py    the run's settings (flags and --config fill one dataclass)
    sources.py     Hub dataset or local files, streamed; records rendered to text (text/dolly/alpaca); the
                   instruction template and the same template as a chat template
    mixture.py     --dataset with several weighted sources: interleave_datasets, the held-out split
    tokenizer.py   load a tokenizer, or train our BPE on the training documents; its chat template and hash
    data.py        tokenize (batched map), loss masks, pack into seq_len+1 blocks, seeded shuffle buffer, eval set
    pretokenized.py  folders of pre-tokenized parquet shards + manifest (scripts/pretokenize.py)
    pipeline.py    --dataset -> tokenizer, eval set and training stream (sources or a pre-tokenized folder)
    state.py       model, AdamW + warmup/cosine schedule, the TrainState pytree
    step.py        the jitted train step (grad accumulation, donated state) and eval step
    sharding.py    the device mesh: data parallel or FSDP, multi-process setup
    checkpoint.py  atomic checkpoints = HF model folder + training state (safetensors + JSON)
    metrics.py     progress bar, metrics.jsonl, loss-curve PNG
    hub.py         push the output folder, one commit per checkpoint
    sample.py      a text sample at the end
    loop.py        train(settings): the run, top to bottom
"""

import importlib as _importlib

# Imported on first use (PEP 562), so that `from pygpt_hf.training.settings import ...` (the CLIs' --help, the
# tokenizer CLI) does not pay for jax, optax and flax through loop.py / state.py / step.py.
_EXPORTS = {
    "NoUsableData": "data",
    "TrainResult": "loop",
    "TrainingDiverged": "loop",
    "train": "loop",
    "TrainSettings": "settings",
    "parse_settings": "settings",
    "TrainState": "state",
    "build_model": "state",
    "create_train_state": "state",
    "make_optimizer": "state",
    "model_config": "state",
    "make_eval_step": "step",
    "make_train_step": "step",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
