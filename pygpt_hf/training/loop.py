"""The training loop, top to bottom as the run happens: plan -> data -> model -> compile -> steps -> eval/save -> sample.

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

import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np

from ..atomic import write_text
from ..run_folder import PLOT_FILE, RESULTS_FILE, checkpoint_name, plot_loss_curve
from . import checkpoint as ckpt
from .clock import RunClock
from .data import prepare_data
from .hooks import FaultHooks
from .metrics import MetricsLog, ProgressBar, eval_line, eval_summary
from .sample import sample_text
from .settings import TrainSettings
from .sharding import (
    agreed_stop,
    barrier,
    batch_sharding,
    check_divisible,
    compile_gather,
    eval_sharding,
    join_processes,
    make_mesh,
    process_shards,
    put_local,
    put_tree,
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
    timings: dict = field(default_factory=dict)  # RunClock.summary: start-up, training, train-step share, tokens/s


def train(settings: TrainSettings, log: Callable[[str], None] = print, started: float | None = None) -> TrainResult:
    """Run the training `settings` describe. `started`: the `time.time()` the process began at (for the
    time-to-first-step figure; scripts/train.py passes it), else now."""
    settings.validate()
    hooks = FaultHooks.from_environment()
    t_begin = time.time()
    clock = RunClock(started)

    # --- plan: devices (joining a multi-process run comes before anything else touches jax), output folder ---
    launch = join_processes(settings)
    lead = jax.process_index() == 0
    if not lead:  # one voice: the log, the bar, the files and the Hub are process 0's (errors still raise)
        log = _silent
    mesh = make_mesh()
    check_divisible(settings.batch_size, mesh)
    # the data shards fix the data order; saved with the run, so a resume (on any number of processes) deals alike
    settings = dataclasses.replace(settings, data_shards=settings.data_shards or jax.process_count())
    train_batch_sharding = batch_sharding(mesh)
    global_batch_shape = (settings.grad_accum, settings.batch_size, settings.seq_len + 1)
    shards = process_shards(settings.data_shards, train_batch_sharding, global_batch_shape)
    out = settings.output_dir
    resume_from = ckpt.open_output_dir(out, settings.resume, lead)
    if lead:
        settings.save(out)
    barrier("output-dir")  # debris removed and settings written before any process reads the folder

    # --- data: tokenizer, held-out eval set, training stream (its first batch fetched before compiling) ------
    data = prepare_data(settings, resume_from, settings.batch_size, log, show_progress=lead, shards=shards)
    clock.lap("data")

    # --- model, optimizer, state (restored on resume), placed on the mesh ---------------------------------
    config = model_config(settings, len(data.tokenizer))
    model, params = build_model(config, settings.seed, settings.dtype)
    optimizer, schedule = optimizer_from_settings(settings)
    state = create_train_state(params, optimizer)
    num_params = count_params(state.params)
    shardings = state_sharding(state, mesh, settings.fsdp)
    if resume_from:  # straight onto the devices, each process reading only the blocks its devices hold
        step, params, opt_state = ckpt.load_training_state(resume_from, state, shardings)
        state = TrainState(step=put_tree(np.asarray(step, np.int32), shardings.step), params=params,
                           opt_state=opt_state)
    else:
        state = put_tree(state, shardings)
    start_step = int(state.step)
    log(_plan(settings, config, num_params, mesh, start_step, resume_from, shardings, launch, shards))
    if hooks.describe():
        log(hooks.describe())
    pusher = None
    if settings.push_to_hub and lead:
        from .hub import HubPusher

        pusher = HubPusher(settings.push_to_hub, private=settings.hub_private)
        log(f"hub: pushing to {pusher.url} at every checkpoint")
    clock.lap("model")

    # --- compile (ahead of time, so the log can say how long it took) -------------------------------------
    t0 = time.time()
    batch = _put_batch(data.first_batch, train_batch_sharding, global_batch_shape)
    train_step = make_train_step(model, optimizer, dropout_seed=settings.seed, state_sharding=shardings,
                                 batch_sharding=train_batch_sharding, inject_nan_at_step=hooks.nan_at_step,
                                 masked=True).lower(state, batch).compile()
    evaluator = Evaluator(model, data.eval_set, settings.batch_size, shardings.params, eval_sharding(mesh), state)
    learning_rates = np.asarray(jax.jit(jax.vmap(schedule))(np.arange(settings.max_steps)))  # for the log, by step
    if jax.process_count() > 1:  # the collectives of checkpoints and of stopping together, compiled now too
        compile_gather(state.params)
        agreed_stop(None)
    log(f"compiled the train and eval steps in {time.time() - t0:.1f}s")
    clock.lap("compile")

    # --- the steps, with evaluations and checkpoints along the way ----------------------------------------
    metrics = MetricsLog(out, resume_step=start_step if resume_from else None) if lead else None
    bar = ProgressBar(settings.max_steps, start_step, disable=not lead)
    window = LossWindow(settings.tokens_per_step, learning_rates, metrics, bar, clock)
    saver = Saver(settings, model, data, metrics, bar, pusher, hooks, lead, last=resume_from)
    evaluate = clock.timed("eval", evaluator.run)
    save = clock.timed("checkpoints", saver.save)
    evaluator.best = min((r["eval_loss"] for r in (metrics.read() if metrics else []) if "eval_loss" in r),
                         default=None)
    ctrl_c = CtrlC()
    step, stopped = start_step, "finished"
    clock.loop_started()
    try:
        while step < settings.max_steps:
            if step > start_step:  # the first batch was fetched before compiling
                with clock.host_work("data", behind=state.step):  # the previous step may still be computing
                    batch = _put_batch(data.next_batch(settings.grad_accum, settings.batch_size),
                                       train_batch_sharding, global_batch_shape)
            state, step_metrics = train_step(state, batch)  # returns at once; the device works on
            step += 1
            hooks.fail_if_due(step)
            window.add(step, step_metrics)
            if step % settings.log_every == 0:
                window.flush(saver.last)
            if step % settings.eval_every == 0 and step < settings.max_steps:
                window.flush(saver.last)
                evaluate(state.params, step, metrics, bar)
                window.restart()  # tokens/s measures training only
            if step % settings.save_every == 0 and step < settings.max_steps:
                window.flush(saver.last)
                save(step, state, evaluator.last)
                window.restart()
            reason = ("interrupted" if ctrl_c.pressed else "time budget" if settings.max_minutes is not None
                      and time.time() - clock.t_loop > settings.max_minutes * 60 else None)
            if jax.process_count() > 1:  # all processes stop at the same step: they agree at every log step
                reason = agreed_stop(reason) if step % settings.log_every == 0 else None
            if reason:
                stopped = reason
                break
        window.flush(saver.last)
        if stopped != "interrupted" and evaluator.last.get("step") != step:  # Ctrl-C: save and leave, no eval
            evaluate(state.params, step, metrics, bar)
        if saver.last is None or os.path.basename(saver.last) != checkpoint_name(step):
            save(step, state, evaluator.last)
    finally:
        clock.loop_ended()
        bar.close()
        ctrl_c.restore()
    tokens = (step - start_step) * settings.tokens_per_step
    timings = clock.summary(tokens)
    if lead:
        write_text(os.path.join(out, RESULTS_FILE), json.dumps({"step": step, "timings": timings}, indent=2) + "\n")

    # --- a sample of what it learned --------------------------------------------------------------------------
    sample = None
    if settings.sample_tokens > 0 and stopped != "interrupted":
        params = state.params if jax.process_count() == 1 else to_host(state.params)  # (a collective: all call it)
        try:
            if lead:
                sample = sample_text(model, params, data.tokenizer, settings.sample_prompt, settings.sample_tokens,
                                     seed=settings.seed, instruction_run=data.is_instruction)
        except ValueError as err:  # the prompt does not fit the context: the run itself is done and saved
            log(f"warning: no sample: {err}")
    log(f"data read: training {data.train_summary()}")
    return TrainResult(
        output_dir=out, step=step, tokens=tokens,
        seconds=time.time() - t_begin, stopped=stopped, final_eval=evaluator.last, best_eval_loss=evaluator.best,
        checkpoint=saver.last, sample=sample, num_params=num_params, timings=timings,
    )


# --- the pieces the loop keeps its bookkeeping in ------------------------------------------------------------


class CtrlC:
    """The first Ctrl-C (SIGINT) sets `pressed` (the loop finishes the step, saves and stops); the second one
    raises KeyboardInterrupt at once."""

    def __init__(self):
        self.pressed = False
        self.previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        self.pressed = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self.previous)


class LossWindow:
    """The step metrics still on the device since the last fetch, and the training time they took."""

    def __init__(self, tokens_per_step: int, learning_rates: np.ndarray, metrics: MetricsLog | None,
                 bar: ProgressBar, clock: RunClock):
        self.tokens_per_step, self.metrics, self.bar = tokens_per_step, metrics, bar
        self.learning_rates = learning_rates  # the schedule, evaluated once: calling it here would dispatch jax ops
        self.clock = clock
        self.pending: list[tuple[int, dict]] = []  # (step, metrics still on the device)
        self.t_window = time.time()
        self.steps = 0

    def add(self, step: int, step_metrics: dict) -> None:
        self.pending.append((step, step_metrics))
        self.steps += 1

    def restart(self) -> None:
        """Start timing anew (after an eval or a checkpoint, which are not training)."""
        self.t_window = time.time()

    def flush(self, last_checkpoint: str | None) -> None:
        """Fetch the pending losses (the only host<->device sync of the loop), check them, log them."""
        if not self.pending:
            return
        fetched = jax.device_get([m for _, m in self.pending])
        for (s, _), m in zip(self.pending, fetched):
            if not (math.isfinite(float(m["loss"])) and math.isfinite(float(m["grad_norm"]))):
                self.pending.clear()
                where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                         else "no checkpoint had been written yet")
                raise TrainingDiverged(
                    f"loss became {float(m['loss'])} (gradient norm {float(m['grad_norm'])}) at step {s}; "
                    f"stopped without saving it; {where}. Try a lower --lr or more --warmup-steps.")
        with self.clock.host_work("logging"):
            now = time.time()
            tokens_per_s = self.steps * self.tokens_per_step / max(now - self.t_window, 1e-9)
            loss = float(np.mean([float(m["loss"]) for m in fetched]))
            last = self.pending[-1][0]
            lr = float(self.learning_rates[last - 1])  # the rate used by the update that produced step `last`
            self.bar.update(len(self.pending), loss, tokens_per_s, lr)
            if self.metrics:
                self.metrics.write({"step": last, "loss": loss, "grad_norm": float(fetched[-1]["grad_norm"]),
                                    "lr": lr, "tokens": last * self.tokens_per_step,
                                    "tokens_per_s": round(tokens_per_s, 1), "elapsed_s": round(now - self.clock.t_loop, 2)})
            self.pending.clear()
            self.t_window, self.steps = now, 0


class Evaluator:
    """The held-out set in eval batches (padded with weightless rows to one compiled shape), its compiled
    eval step, and the latest and best results."""

    def __init__(self, model, eval_set, rows: int, params_sharding, sharding, state):
        extra = -len(eval_set.blocks) % rows
        self.blocks = np.concatenate([eval_set.blocks, np.zeros((extra, eval_set.blocks.shape[1]), np.int32)])
        self.weights = np.concatenate([eval_set.weights, np.zeros((extra, eval_set.weights.shape[1]), np.float32)])
        self.rows, self.sharding, self.num_bytes = rows, sharding, eval_set.num_bytes
        self.step_fn = make_eval_step(model, params_sharding, sharding).lower(state.params, *self._chunk(0)).compile()
        self.last: dict = {}
        self.best: float | None = None

    def _chunk(self, start: int):
        """Rows [start, start + rows) as global arrays; every process holds the whole eval set."""
        blocks, weights = self.blocks[start:start + self.rows], self.weights[start:start + self.rows]
        return (jax.make_array_from_callback(blocks.shape, self.sharding, lambda idx: blocks[idx]),
                jax.make_array_from_callback(weights.shape, self.sharding, lambda idx: weights[idx]))

    def run(self, params, step: int, metrics: MetricsLog | None, bar: ProgressBar) -> dict:
        nats, targets = 0.0, 0.0
        for start in range(0, len(self.blocks), self.rows):
            n, t = self.step_fn(params, *self._chunk(start))
            nats, targets = nats + float(n), targets + float(t)
        self.last = {"step": step, **eval_summary(nats, targets, self.num_bytes)}
        self.best = self.last["eval_loss"] if self.best is None else min(self.best, self.last["eval_loss"])
        if metrics:
            metrics.write(self.last)
        bar.write(eval_line(step, self.last))
        return self.last


class Saver:
    """Writes checkpoint N (atomically), then publishes it at the top of the output folder, prunes old ones,
    redraws the loss curve and pushes to the Hub."""

    def __init__(self, settings, model, data, metrics, bar, pusher, hooks: FaultHooks, lead: bool,
                 last: str | None):
        self.settings, self.model, self.data, self.metrics, self.bar = settings, model, data, metrics, bar
        self.pusher, self.hooks, self.lead = pusher, hooks, lead
        self.last = last  # the latest complete checkpoint

    def save(self, step: int, state: TrainState, last_eval: dict) -> str:
        out = self.settings.output_dir
        path = ckpt.save_checkpoint(out, step, model=self.model, params=state.params,
                                    opt_state=state.opt_state, tokenizer=self.data.tokenizer,
                                    settings=self.settings, data_states=self.data.stream.state_dict(),
                                    metrics=last_eval, hooks=self.hooks)
        if self.lead:
            ckpt.publish(path, out)
            ckpt.prune(out, self.settings.keep_checkpoints)
            plot_loss_curve(self.metrics.read(), os.path.join(out, PLOT_FILE), title=f"PyGPT on {self.data.source}")
            if self.pusher is not None:
                try:
                    self.pusher.push(out, step, last_eval.get("eval_loss"))
                except Exception as err:  # noqa: BLE001  (network, auth, server: go on; the next save retries)
                    self.bar.write(f"warning: push to the Hub failed at step {step}: {type(err).__name__}: {err}")
        self.last = path
        self.bar.write(f"step {step}: saved {path}")
        return path


def _silent(text: str) -> None:
    """The log of every process but process 0."""


def _put_batch(batch, sharding, global_shape):
    """This process's rows of a batch (a (tokens, loss mask) pair) -> global arrays on the mesh."""
    return jax.tree_util.tree_map(lambda part: put_local(part, sharding, global_shape), batch)


def _plan(settings: TrainSettings, config, num_params: int, mesh, start_step: int, resume_from: str | None,
          shardings, launch=None, shards: range = range(1)) -> str:
    steps = settings.max_steps - start_step
    leaves = jax.tree_util.tree_leaves(shardings.params)
    split = sum(1 for sharding in leaves if any(axis is not None for axis in sharding.spec))
    layout = f"FSDP ({split} of {len(leaves)} parameter tensors split)" if settings.fsdp else "data parallel"
    budget = f", at most {settings.max_minutes:g} min" if settings.max_minutes else ""
    resuming = f"resuming at step {start_step} from {resume_from}, " if resume_from else ""
    processes = f"{jax.process_count()} process" + ("es" if jax.process_count() > 1 else "")
    if launch is not None:
        processes += f"; this is {launch.describe()}"
    lines = [
        "plan:",
        (f"  model     {config.n_layer} layers x {config.n_embd} wide, {config.n_head} heads, "
         f"{config.position_embedding_type} positions, context {config.n_positions}, vocab {config.vocab_size}: "
         f"{num_params / 1e6:.2f}M parameters ({settings.dtype} compute)"),
        (f"  batches   {settings.batch_size} x {settings.seq_len} tokens x {settings.grad_accum} accumulation "
         f"= {settings.tokens_per_step:,} tokens per step"
         + ("; loss on response tokens only (--loss-on response)" if settings.loss_on == "response" else "")
         + (f"; documents dealt to {settings.data_shards} data shards, {settings.batch_size // settings.data_shards} "
            f"rows each (this process reads shard {shards.start}{f'-{shards.stop - 1}' if len(shards) > 1 else ''})"
            if settings.data_shards > 1 else "")),
        (f"  training  {resuming}{steps:,} steps = {steps * settings.tokens_per_step / 1e6:.1f}M tokens{budget}; "
         f"AdamW lr {settings.lr:g}, {settings.warmup_steps} warmup steps, cosine to "
         f"{settings.lr * settings.min_lr_ratio:g}"),
        f"  devices   {mesh.devices.size} x {jax.devices()[0].platform} ({processes}), {layout}",
        (f"  output    {settings.output_dir}: eval every {settings.eval_every}, checkpoint every "
         f"{settings.save_every} steps (last {settings.keep_checkpoints} kept)"),
    ]
    return "\n".join(lines)
