"""The training loop, top to bottom: data -> tokenizer -> model -> compile -> steps -> eval/save -> sample.

`train(settings)` is the whole run; scripts/train.py only parses flags and prints the summary.

Stopping, in every way it can happen:
- `max_steps` reached, or `--max-minutes` of training spent: final eval, checkpoint, sample.
- Ctrl-C (SIGINT): the current step finishes, a checkpoint is written, `TrainResult.stopped` says
  "interrupted" (the script exits with 130). A second Ctrl-C aborts at once.
- a non-finite loss or gradient norm: `TrainingDiverged` names the step; nothing after the last good
  checkpoint is saved (losses are checked before every save, so no checkpoint ever holds NaN weights).
- a dataset with nothing usable: `NoUsableData`, raised before the model is even built.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint as ckpt
from .metrics import PLOT_FILE, MetricsLog, ProgressBar, eval_summary, plot_loss_curve
from .pipeline import prepare_data
from .sample import sample_text
from .settings import TrainSettings
from .sharding import (
    batch_sharding,
    check_divisible,
    eval_sharding,
    make_mesh,
    maybe_initialize_distributed,
    put_global,
    state_sharding,
    to_host,
)
from .state import TrainState, build_model, count_params, create_train_state, model_config, optimizer_from_settings
from .step import make_eval_step, make_train_step


class TrainingDiverged(RuntimeError):
    """The loss (or gradient norm) became NaN/inf."""


@dataclass
class TrainResult:
    output_dir: str
    step: int
    tokens: int
    seconds: float
    stopped: str  # "finished", "time budget", "interrupted"
    final_eval: dict = field(default_factory=dict)
    best_eval_loss: float | None = None
    checkpoint: str | None = None
    sample: str | None = None
    num_params: int = 0


def train(settings: TrainSettings, log: Callable[[str], None] = print) -> TrainResult:
    settings.validate()
    t_begin = time.time()

    # --- devices (joining a multi-process run must come before anything else touches jax) -----------------
    maybe_initialize_distributed()
    lead = jax.process_index() == 0
    mesh = make_mesh()
    check_divisible(settings.batch_size, mesh)
    local_batch = settings.batch_size // jax.process_count()

    # --- the output folder: fresh, or resuming from its latest complete checkpoint ------------------------
    out = settings.output_dir
    os.makedirs(out, exist_ok=True)
    ckpt.remove_debris(out)
    resume_from = ckpt.latest_checkpoint(out) if settings.resume else None
    if settings.resume and resume_from is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint in {out}")
    if not settings.resume and ckpt.list_checkpoints(out):
        raise FileExistsError(f"{out} already holds checkpoints of a run: pass --resume to continue it, or "
                              f"choose another --output-dir (nothing was overwritten)")
    if lead:
        settings.save(out)

    # --- tokenizer, held-out eval set, training stream (first batch fetched before anything compiles) ------
    data = prepare_data(settings, resume_from, local_batch, log, jax.process_index(), jax.process_count())
    tokenizer, eval_set, stream, source = data.tokenizer, data.eval_set, data.stream, data.source

    # --- model, optimizer, state (restored on resume), placed on the mesh ---------------------------------
    config = model_config(settings, len(tokenizer))
    model, params = build_model(config, settings.seed, settings.dtype)
    optimizer, schedule = optimizer_from_settings(settings)
    state = create_train_state(params, optimizer)
    num_params = count_params(state.params)
    if resume_from:
        step, params, opt_state = ckpt.load_training_state(resume_from, to_host(state.params), to_host(state.opt_state))
        state = TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state)
    start_step = int(state.step)
    shardings = state_sharding(state, mesh, settings.fsdp)
    state = jax.device_put(state, shardings)
    train_batch_sharding, eval_batch_sharding = batch_sharding(mesh), eval_sharding(mesh)

    log(_plan(settings, config, num_params, mesh, start_step, resume_from, shardings))

    pusher = None
    if settings.push_to_hub and lead:
        from .hub import HubPusher

        pusher = HubPusher(settings.push_to_hub, private=settings.hub_private)
        log(f"hub: pushing to {pusher.url} at every checkpoint")

    # --- compile (ahead of time, so the log can say how long it took) -------------------------------------
    t0 = time.time()
    batch = _put_batch(data.first_batch, train_batch_sharding)
    train_step = make_train_step(model, optimizer, dropout_seed=settings.seed, state_sharding=shardings,
                                 batch_sharding=train_batch_sharding, inject_nan_at_step=settings.inject_nan_at_step,
                                 masked=data.masked).lower(state, batch).compile()
    eval_rows = settings.batch_size
    eval_blocks, eval_weights = _pad_rows(eval_set.blocks, eval_set.weights, eval_rows)
    eval_step = make_eval_step(model, shardings.params, eval_batch_sharding).lower(
        state.params, *_eval_chunk(eval_blocks, eval_weights, 0, eval_rows, eval_batch_sharding)).compile()
    log(f"compiled the train and eval steps in {time.time() - t0:.1f}s")

    def evaluate(params) -> dict[str, float]:
        nats, targets = 0.0, 0.0
        for start in range(0, len(eval_blocks), eval_rows):
            n, t = eval_step(params, *_eval_chunk(eval_blocks, eval_weights, start, eval_rows, eval_batch_sharding))
            nats, targets = nats + float(n), targets + float(t)
        return eval_summary(nats, targets, eval_set.num_bytes)

    metrics = MetricsLog(out, resume_step=start_step if resume_from else None) if lead else None
    best_eval = min((r["eval_loss"] for r in (metrics.read() if metrics else []) if "eval_loss" in r), default=None)
    last_eval: dict = {}
    last_checkpoint = resume_from

    def save(step: int) -> None:
        nonlocal last_checkpoint
        path = ckpt.save_checkpoint(out, step, model=model, params=to_host(state.params),
                                    opt_state=to_host(state.opt_state), tokenizer=tokenizer, settings=settings,
                                    data_state=stream.state_dict(), metrics=last_eval)
        if lead:
            ckpt.publish(path, out)
            ckpt.prune(out, settings.keep_checkpoints)
            plot_loss_curve(metrics.read(), os.path.join(out, PLOT_FILE), title=f"PyGPT on {source}")
            if pusher is not None:
                try:
                    pusher.push(out, step, last_eval.get("eval_loss"))
                except Exception as err:  # noqa: BLE001  (network, auth, server: go on; the next save retries)
                    bar.write(f"warning: push to the Hub failed at step {step}: {type(err).__name__}: {err}")
        last_checkpoint = path
        bar.write(f"step {step}: saved {path}")

    # --- Ctrl-C: finish the step, save, stop. A second Ctrl-C aborts. --------------------------------------
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)

    # --- the loop -----------------------------------------------------------------------------------------
    bar = ProgressBar(settings.max_steps, start_step, disable=not lead)
    pending: list[tuple[int, dict]] = []  # (step, metrics still on the device)
    step = start_step
    t_train = t_window = time.time()
    window_steps = 0
    stopped = "finished"

    def flush() -> None:
        """Fetch the pending losses (the only host<->device sync of the loop), check, log."""
        nonlocal t_window, window_steps
        if not pending:
            return
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, fetched):
            if not (math.isfinite(float(m["loss"])) and math.isfinite(float(m["grad_norm"]))):
                pending.clear()
                where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                         else "no checkpoint had been written yet")
                raise TrainingDiverged(
                    f"loss became {float(m['loss'])} (gradient norm {float(m['grad_norm'])}) at step {s}; "
                    f"stopped without saving it; {where}. Try a lower --lr or more --warmup-steps.")
        now = time.time()
        tokens_per_s = window_steps * settings.tokens_per_step / max(now - t_window, 1e-9)
        loss = float(np.mean([float(m["loss"]) for m in fetched]))
        last = pending[-1][0]
        lr = float(schedule(last - 1))  # the rate used by the update that produced step `last`
        bar.update(len(pending), loss, tokens_per_s, lr)
        if metrics:
            metrics.write({"step": last, "loss": loss, "grad_norm": float(fetched[-1]["grad_norm"]), "lr": lr,
                           "tokens": last * settings.tokens_per_step, "tokens_per_s": round(tokens_per_s, 1),
                           "elapsed_s": round(now - t_train, 2)})
        pending.clear()
        t_window, window_steps = now, 0

    def run_eval(step: int) -> None:
        nonlocal last_eval, best_eval
        last_eval = {"step": step, **evaluate(state.params)}
        best_eval = last_eval["eval_loss"] if best_eval is None else min(best_eval, last_eval["eval_loss"])
        if metrics:
            metrics.write(last_eval)
        bar.write(f"step {step}: eval loss {last_eval['eval_loss']:.4f}, perplexity "
                  f"{last_eval['eval_perplexity']:.2f}, {last_eval['eval_nats_per_byte']:.4f} nats/byte")

    try:
        while step < settings.max_steps:
            if step > start_step:  # the first batch was fetched before compiling
                batch = _put_batch(data.next_batch(settings.grad_accum, local_batch), train_batch_sharding)
            state, step_metrics = train_step(state, batch)  # returns at once; the device works on
            step += 1
            window_steps += 1
            pending.append((step, step_metrics))
            if step % settings.log_every == 0:
                flush()
            if step % settings.eval_every == 0 and step < settings.max_steps:
                flush()
                run_eval(step)
                t_window = time.time()  # tokens/s measures training only
            if step % settings.save_every == 0 and step < settings.max_steps:
                flush()
                save(step)
                t_window = time.time()
            if interrupted:
                stopped = "interrupted"
                break
            if settings.max_minutes is not None and time.time() - t_train > settings.max_minutes * 60:
                stopped = "time budget"
                break
        flush()
        if stopped != "interrupted" and last_eval.get("step") != step:  # Ctrl-C: save and leave, no eval
            run_eval(step)
        if last_checkpoint is None or os.path.basename(last_checkpoint) != ckpt.checkpoint_name(step):
            save(step)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous_handler)

    sample = None
    if settings.sample_tokens > 0 and stopped != "interrupted" and lead:
        sample = sample_text(model, state.params, tokenizer, settings.sample_prompt, settings.sample_tokens,
                             seed=settings.seed)
    log(f"data read: training {data.train_summary()}")
    return TrainResult(
        output_dir=out, step=step, tokens=(step - start_step) * settings.tokens_per_step,
        seconds=time.time() - t_begin, stopped=stopped, final_eval=last_eval, best_eval_loss=best_eval,
        checkpoint=last_checkpoint, sample=sample, num_params=num_params,
    )


# --- helpers ------------------------------------------------------------------------------------------------


def _put_batch(batch, sharding):
    """A host batch (tokens, or a (tokens, loss mask) pair) -> global arrays on the mesh."""
    return jax.tree_util.tree_map(lambda part: put_global(part, sharding), batch)


def _pad_rows(blocks: np.ndarray, weights: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the eval set with weightless rows to a whole number of eval batches (one compiled shape)."""
    extra = -len(blocks) % multiple
    blocks = np.concatenate([blocks, np.zeros((extra, blocks.shape[1]), blocks.dtype)])
    weights = np.concatenate([weights, np.zeros((extra, weights.shape[1]), weights.dtype)])
    return blocks, weights


def _eval_chunk(blocks, weights, start, rows, sharding):
    """Rows [start, start + rows) as global arrays; every process holds the whole eval set."""
    chunk_b, chunk_w = blocks[start:start + rows], weights[start:start + rows]
    return (jax.make_array_from_callback(chunk_b.shape, sharding, lambda idx: chunk_b[idx]),
            jax.make_array_from_callback(chunk_w.shape, sharding, lambda idx: chunk_w[idx]))


def _plan(settings: TrainSettings, config, num_params: int, mesh, start_step: int, resume_from: str | None,
          shardings) -> str:
    steps = settings.max_steps - start_step
    leaves = jax.tree_util.tree_leaves(shardings.params)
    split = sum(1 for sharding in leaves if any(axis is not None for axis in sharding.spec))
    layout = f"FSDP ({split} of {len(leaves)} parameter tensors split)" if settings.fsdp else "data parallel"
    budget = f", at most {settings.max_minutes:g} min" if settings.max_minutes else ""
    resuming = f"resuming at step {start_step} from {resume_from}, " if resume_from else ""
    processes = f"{jax.process_count()} process" + ("es" if jax.process_count() > 1 else "")
    lines = [
        "plan:",
        (f"  model     {config.n_layer} layers x {config.n_embd} wide, {config.n_head} heads, "
         f"{config.position_embedding_type} positions, context {config.n_positions}, vocab {config.vocab_size}: "
         f"{num_params / 1e6:.2f}M parameters ({settings.dtype} compute)"),
        (f"  batches   {settings.batch_size} x {settings.seq_len} tokens x {settings.grad_accum} accumulation "
         f"= {settings.tokens_per_step:,} tokens per step"
         + ("; loss on response tokens only (--loss-on response)" if settings.loss_on == "response" else "")),
        (f"  training  {resuming}{steps:,} steps = {steps * settings.tokens_per_step / 1e6:.1f}M tokens{budget}; "
         f"AdamW lr {settings.lr:g}, {settings.warmup_steps} warmup steps, cosine to "
         f"{settings.lr * settings.min_lr_ratio:g}"),
        f"  devices   {mesh.devices.size} x {jax.devices()[0].platform} ({processes}), {layout}",
        (f"  output    {settings.output_dir}: eval every {settings.eval_every}, checkpoint every "
         f"{settings.save_every} steps (last {settings.keep_checkpoints} kept)"),
    ]
    return "\n".join(lines)
