"""scripts/train.py end to end, in subprocesses, on a tiny config (2 layers x 32 wide, 16-token sequences).

One module fixture starts all the runs at once (they are independent) and a resumed run after them:
    reference  12 steps, checkpoints every 4, pushed to the loopback Hub
    killed     the same, SIGKILLed halfway through writing checkpoint 8, then resumed with --resume
    parallel   the same on 4 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)
    fsdp       the same on 4 devices with parameters and optimizer state sharded (--fsdp)
    nan        the same with a NaN injected into the loss of step 6
    sigint     a long run that gets Ctrl-C (SIGINT) once it is training
reference, killed, parallel and fsdp use dropout (0.1) and gradient accumulation (2), so resume also has to
reproduce the dropout masks; nan and sigint skip both (cheaper to compile).
The runs share a persistent XLA compilation cache, so the resumed run does not compile again.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from pygpt_hf.training.hooks import KILL_AT_STEP, NAN_AT_STEP

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
BASE = [
    "--dataset", str(DATA / "train_shakespeare.txt"), "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
    "--seq-len", "16", "--batch-size", "8", "--vocab-size", "300", "--eval-docs", "10", "--shuffle-buffer", "16",
    "--warmup-steps", "2", "--lr", "1e-2", "--max-minutes", "none", "--log-every", "1", "--sample-tokens", "0",
]
TWELVE = ["--max-steps", "12", "--save-every", "4", "--eval-every", "4"]
EXACT = BASE + TWELVE + ["--grad-accum", "2", "--dropout", "0.1"]  # the runs compared with each other
PARALLEL_TOLERANCE = 1e-5  # |loss difference| per step, 4 devices vs 1 (float32 sums in another order)


class Run:
    def __init__(self, name: str, folder: Path, args: list[str], env: dict, extra_env: dict | None = None,
                 output_dir: Path | None = None):
        self.name, self.dir = name, output_dir or folder / name
        self.stdout_path, self.stderr_path = folder / f"{name}.out", folder / f"{name}.err"
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:  # the child keeps them
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "train.py"), "--output-dir", str(self.dir), *args],
                cwd=ROOT, env={**env, **(extra_env or {})}, stdout=stdout, stderr=stderr,
            )

    def wait(self, timeout: float = 600) -> "Run":
        self.rc = self.proc.wait(timeout=timeout)
        self.stdout, self.stderr = self.stdout_path.read_text(), self.stderr_path.read_text()
        return self

    def metrics(self) -> list[dict]:
        path = self.dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def checkpoints(self) -> list[str]:
        return sorted(p.name for p in self.dir.glob("checkpoint-*"))

    def explain(self) -> str:
        return f"{self.name} exited {self.rc}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, hub_server):
    folder = tmp_path_factory.mktemp("train-runs")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(folder / "xla-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    env.pop("XLA_FLAGS", None)
    repo_id = f"{hub_server.user}/tiny-shakespeare-{os.getpid()}"
    started = {
        "reference": Run("reference", folder, EXACT + ["--keep-checkpoints", "2", "--sample-tokens", "8",
                                                       "--push-to-hub", repo_id], env),
        "killed": Run("killed", folder, EXACT, env, {KILL_AT_STEP: "8"}),
        "parallel": Run("parallel", folder, EXACT, env, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}),
        "fsdp": Run("fsdp", folder, EXACT + ["--fsdp"], env, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}),
        "nan": Run("nan", folder, BASE + TWELVE, env, {NAN_AT_STEP: "6"}),
        "sigint": Run("sigint", folder, BASE + ["--max-steps", "1000000", "--save-every", "100000",
                                                "--eval-every", "100000"], env),
    }
    sigint = started["sigint"]
    deadline = time.time() + 600
    while len(sigint.metrics()) < 3 and sigint.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # wait until it is really training (metrics.jsonl has records)
    sigint.proc.send_signal(signal.SIGINT)
    done = {name: run.wait() for name, run in started.items()}
    done["resumed"] = Run("resumed", folder, ["--resume"], env, output_dir=done["killed"].dir)
    return done, repo_id


def test_resume_after_sigkill_ends_bitwise_equal_to_an_uninterrupted_run(runs):
    done, _ = runs
    reference, killed = done["reference"], done["killed"]
    assert reference.rc == 0, reference.explain()
    assert killed.rc == -signal.SIGKILL, killed.explain()
    resumed = done["resumed"].wait()
    assert resumed.rc == 0, resumed.explain()
    assert "resuming at step 4" in resumed.stdout  # checkpoint 8 was half-written: ignored, its debris removed
    assert not list(killed.dir.glob(".tmp-*"))
    ref_state, res_state = (r.dir / "checkpoint-0000012" / "training_state" for r in (reference, killed))
    for name in ("params.safetensors", "opt_state.safetensors"):
        assert (ref_state / name).read_bytes() == (res_state / name).read_bytes(), name
    assert (reference.dir / "model.safetensors").read_bytes() == (killed.dir / "model.safetensors").read_bytes()
    assert [r for r in reference.metrics() if "loss" in r or "eval_loss" in r] != []
    strip = lambda records: [(r["step"], r.get("loss"), r.get("eval_loss")) for r in records]
    assert strip(reference.metrics()) == strip(killed.metrics())  # the same losses, step by step


@pytest.mark.parametrize("layout", ["parallel", "fsdp"])
def test_4_devices_match_one_device(runs, layout):
    """Same global batch on 4 devices (data parallel, or FSDP with sharded params/optimizer state)."""
    done, _ = runs
    reference, run = done["reference"], done[layout]
    assert run.rc == 0, run.explain()
    assert "4 x cpu" in run.stdout and "1 x cpu" in reference.stdout
    if layout == "fsdp":
        assert "FSDP (" in run.stdout and " of " in run.stdout and "(0 of" not in run.stdout
    one = [(r["step"], r.get("loss", r.get("eval_loss"))) for r in reference.metrics()]
    four = [(r["step"], r.get("loss", r.get("eval_loss"))) for r in run.metrics()]
    assert [s for s, _ in one] == [s for s, _ in four] and len(one) == 12 + 3
    assert max(abs(a - b) for (_, a), (_, b) in zip(one, four)) < PARALLEL_TOLERANCE


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(runs):
    done, _ = runs
    run = done["sigint"]
    assert run.rc == 130, run.explain()
    assert "Traceback" not in run.stderr and "interrupted" in run.stdout
    (checkpoint,) = run.checkpoints()
    state = json.loads((run.dir / checkpoint / "training_state" / "state.json").read_text())
    last_logged = max(r["step"] for r in run.metrics() if "loss" in r)
    assert 3 <= state["step"] == last_logged < 1_000_000 and f"at step {state['step']:,}" in run.stdout
    assert (run.dir / "model.safetensors").read_bytes() == (run.dir / checkpoint / "model.safetensors").read_bytes()


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(runs):
    done, _ = runs
    run = done["nan"]
    assert run.rc == 1, run.explain()
    assert "at step 6" in run.stderr and "checkpoint-0000004" in run.stderr
    assert run.checkpoints() == ["checkpoint-0000004"]
    weights = load_file(str(run.dir / "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values())
    assert max(r["step"] for r in run.metrics()) < 6  # nothing from the poisoned step was logged as good


def test_the_output_folder_is_a_ready_hugging_face_model(runs):
    import jax.numpy as jnp
    from transformers import AutoTokenizer, FlaxAutoModelForCausalLM

    import pygpt_hf  # noqa: F401  (registers PyGPT with the Auto classes)

    done, _ = runs
    run = done["reference"]
    assert run.rc == 0, run.explain()
    assert run.checkpoints() == ["checkpoint-0000008", "checkpoint-0000012"]  # the last 2 kept
    model = FlaxAutoModelForCausalLM.from_pretrained(run.dir)
    tokenizer = AutoTokenizer.from_pretrained(run.dir)
    assert len(tokenizer) == model.config.vocab_size == 300 and tokenizer.eos_token_id == 256
    assert model.generation_config.eos_token_id == 256 and model.config.n_layer == 2
    # the published weights are the trained ones (same logits as the params kept in the training state)
    trained = load_file(str(run.dir / "checkpoint-0000012" / "training_state" / "params.safetensors"))
    tree: dict = {}
    for name, value in trained.items():
        node = tree
        *parents, leaf = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = jnp.asarray(value)
    ids = tokenizer("First Citizen:\nWe are accounted poor citizens.")["input_ids"]
    ids = jnp.asarray([ids[: model.config.n_positions]])  # a longer input is refused (issue 14)
    np.testing.assert_allclose(model(ids).logits, model(ids, params=tree).logits, atol=1e-5)

    settings = json.loads((run.dir / "training_settings.json").read_text())
    assert settings["n_embd"] == 32 and settings["grad_accum"] == 2 and settings["push_to_hub"]
    assert (run.dir / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = run.metrics()
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8, 12]
    for r in evals:
        assert r["eval_perplexity"] == pytest.approx(math.exp(r["eval_loss"]))
        assert 0 < r["eval_nats_per_byte"] < r["eval_loss"]  # a token spans more than one byte
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5  # it learns
    assert "summary:" in run.stdout and "final eval   loss" in run.stdout and "sample:" in run.stdout


def test_the_run_says_where_its_time_went_and_never_recompiles_after_the_first_step(runs):
    done, _ = runs
    run = done["reference"]
    assert run.rc == 0, run.explain()
    results = json.loads((run.dir / "train_results.json").read_text())
    t = results["timings"]
    assert results["step"] == 12 and t["tokens"] == 12 * 2 * 8 * 16  # steps x accumulation x batch x seq
    assert t["compiles_after_first_step"] == 0  # train and eval steps compiled ahead of time, the lr log is a table
    assert set(t["startup_s"]) == {"imports", "data", "model", "compile"} and all(v >= 0 for v in t["startup_s"].values())
    assert t["first_step_after_s"] >= sum(t["startup_s"].values()) - 0.01
    assert set(t["host_s"]) == {"data", "eval", "checkpoints", "logging"} and t["host_s"]["checkpoints"] > 0
    outside = sum(t["host_s"].values())
    assert t["train_step_share"] == pytest.approx(1 - outside / t["training_s"], abs=1e-3)
    assert t["step_tokens_per_s"] >= t["training_tokens_per_s"] >= t["end_to_end_tokens_per_s"] > 0
    assert "tokens/s in train steps" in run.stdout and "compiles     0 after the first step" in run.stdout


def test_the_clock_counts_host_work_behind_a_running_step_as_step_time():
    from pygpt_hf.training.clock import RunClock

    class Step:  # stands for a train step's output: still computing, or done
        def __init__(self, ready: bool):
            self.ready = ready

        def is_ready(self) -> bool:
            return self.ready

    clock = RunClock()
    clock.loop_started()
    with clock.host_work("data", behind=Step(ready=False)):
        time.sleep(0.05)
    with clock.host_work("data", behind=Step(ready=True)):
        time.sleep(0.02)
    clock.loop_ended()
    summary = clock.summary(tokens=100)
    assert summary["hidden_s"]["data"] >= 0.05 and 0.02 <= summary["host_s"]["data"] < 0.05
    assert summary["compiles_after_first_step"] == 0


def test_push_to_hub_commits_every_checkpoint(runs):
    from huggingface_hub import HfApi
    from transformers import FlaxAutoModelForCausalLM

    import pygpt_hf  # noqa: F401

    done, repo_id = runs
    run = done["reference"]
    api = HfApi()
    messages = [c.title for c in api.list_repo_commits(repo_id)]
    evals = {r["step"]: r["eval_loss"] for r in run.metrics() if "eval_loss" in r}
    for step in (4, 8, 12):
        assert f"step {step}: eval loss {evals[step]:.4f}" in messages
    files = api.list_repo_files(repo_id)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "metrics.jsonl",
            "loss_curve.png", "training_settings.json"} <= set(files)
    assert not any(f.startswith("checkpoint-") or "training_state" in f for f in files)
    token = os.environ["HF_TOKEN"]
    assert token not in run.stdout and token not in run.stderr
    pushed = FlaxAutoModelForCausalLM.from_pretrained(repo_id)
    local = FlaxAutoModelForCausalLM.from_pretrained(run.dir)
    ids = np.arange(min(20, local.config.n_positions))[None, :]
    np.testing.assert_array_equal(pushed(ids).logits, local(ids).logits)


# --- failures that must happen before anything is compiled (in-process: cheap) ---------------------------


@pytest.fixture
def no_compiling(monkeypatch):
    """Make building the model or the train step fail loudly: the errors below must come before either."""
    from pygpt_hf.training import loop

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was built although the run should have stopped earlier")

    monkeypatch.setattr(loop, "build_model", forbidden)
    monkeypatch.setattr(loop, "make_train_step", forbidden)


def tiny_settings(**changes):
    from pygpt_hf.training import TrainSettings

    base = {"n_layer": 2, "n_head": 2, "n_embd": 32, "seq_len": 16, "batch_size": 8, "vocab_size": 300,
            "eval_docs": 4, "shuffle_buffer": 16, "max_steps": 4, "sample_tokens": 0}
    return TrainSettings(**{**base, **changes})


@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_a_dataset_with_nothing_usable_stops_with_a_clear_message(runs, tmp_path, no_compiling, with_tokenizer):
    from pygpt_hf.training import NoUsableData, train

    tokenizer = str(runs[0]["reference"].dir) if with_tokenizer else None
    settings = tiny_settings(output_dir=str(tmp_path / "out"), dataset=str(DATA / "train_unusable.jsonl"),
                             tokenizer=tokenizer)
    with pytest.raises(NoUsableData) as err:
        train(settings, log=lambda text: None)
    message = str(err.value)
    assert "no usable text" in message and "train_unusable.jsonl" in message and "'text'" in message
    assert "lack column 'text'" in message and "have an empty 'text'" in message and "body" in message


def test_an_output_folder_with_checkpoints_is_never_overwritten(runs, no_compiling):
    from pygpt_hf.training import train

    folder = runs[0]["reference"].dir
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_settings(output_dir=str(folder)), log=lambda text: None)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before
