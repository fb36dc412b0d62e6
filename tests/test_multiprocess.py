"""Multi-process training on JAX's distributed runtime, on this machine: processes on 127.0.0.1, simulated CPU
devices (XLA_FLAGS=--xla_force_host_platform_device_count), the gloo collectives.

One module fixture runs, side by side, a tiny 6-step run (checkpoints and evals every 2 steps, dropout and
gradient accumulation, so the data order, the dropout keys and the accumulation all have to agree):
    one      1 process with 4 devices, data parallel, --data-shards 2 (it reads both halves of the data)
    two      2 processes with 2 devices each (one data shard each, the default), --fsdp (parameters and
             optimizer state split over all 4 devices, so each process holds only its pieces), both SIGKILLed
             halfway through checkpoint 4
and then `two` again with --resume (from checkpoint 2, the last complete one). The 2-process run must end
where the 1-process run ends. Another 2-process run fails on purpose in process 1, which must stop process 0
too, with process 1's error. The launch flags and variables are checked without starting anything.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from pygpt_hf.training.cli import parse_settings
from pygpt_hf.training.hooks import FAIL_AT_STEP, KILL_AT_STEP
from pygpt_hf.training.launch import resolve_launch
from pygpt_hf.training.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--dataset", str(ROOT / "tests" / "data" / "train_shakespeare.txt"), "--n-layer", "1", "--n-head", "2",
    "--n-embd", "32", "--seq-len", "16", "--batch-size", "8", "--vocab-size", "300", "--eval-docs", "10",
    "--shuffle-buffer", "16", "--warmup-steps", "2", "--lr", "1e-2", "--max-minutes", "none", "--log-every", "1",
    "--sample-tokens", "0", "--max-steps", "6", "--save-every", "2", "--eval-every", "2", "--grad-accum", "2",
    "--dropout", "0.1",
]
TOLERANCE = 1e-5  # float32 sums in another order (4 devices in 1 process vs 2 x 2, data parallel vs FSDP)
TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """`scripts/train.py` in `count` processes of one run (or one plain process when count is 1)."""

    def __init__(self, name: str, folder: Path, output_dir: Path, args: list[str], env: dict, count: int,
                 devices: int, extra_env: dict | None = None, env_of: dict[int, dict] | None = None):
        self.name, self.dir, self.procs, self.logs = name, output_dir, [], []
        port = free_port()
        for index in range(count):
            launch = [] if count == 1 else ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes",
                                            str(count), "--process-id", str(index)]
            out, err = folder / f"{name}-{index}.out", folder / f"{name}-{index}.err"
            self.logs.append((out, err))
            with open(out, "w") as stdout, open(err, "w") as stderr:
                self.procs.append(subprocess.Popen(
                    [sys.executable, str(ROOT / "scripts" / "train.py"), "--output-dir", str(output_dir), *args,
                     *launch], cwd=ROOT, stdout=stdout, stderr=stderr,
                    env={**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                         **(extra_env or {}), **(env_of or {}).get(index, {})}))

    def wait(self) -> "Processes":
        try:
            self.rcs = [p.wait(timeout=TIMEOUT_S) for p in self.procs]
        finally:  # never leave a process behind
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.stdout = [out.read_text() for out, _ in self.logs]
        self.stderr = [err.read_text() for _, err in self.logs]
        return self

    def metrics(self) -> list[tuple]:
        records = [json.loads(line) for line in (self.dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in records]

    def explain(self) -> str:
        return "\n".join(f"{self.name} process {i} exited {rc}\n--- stdout\n{out[-2500:]}\n--- stderr\n{err[-2500:]}"
                         for i, (rc, out, err) in enumerate(zip(self.rcs, self.stdout, self.stderr)))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiprocess")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(folder / "xla-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    for name in ("PYGPT_COORDINATOR_ADDRESS", "PYGPT_NUM_PROCESSES", "PYGPT_PROCESS_ID", "JAX_COORDINATOR_ADDRESS",
                 "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    return folder, env


@pytest.fixture(scope="module")
def runs(env):
    folder, env = env
    one = Processes("one", folder, folder / "one", ARGS + ["--data-shards", "2"], env, count=1, devices=4)
    killed = Processes("two", folder, folder / "two", ARGS + ["--fsdp"], env, count=2, devices=2,
                       extra_env={KILL_AT_STEP: "4"})
    one.wait(), killed.wait()
    resumed = Processes("two-resumed", folder, folder / "two", ARGS + ["--resume"], env, count=2, devices=2).wait()
    return one, killed, resumed


def test_two_processes_train_what_one_process_with_as_many_devices_trains_and_resume_after_sigkill(runs):
    one, killed, resumed = runs
    assert one.rcs == [0], one.explain()
    assert killed.rcs == [-signal.SIGKILL] * 2, killed.explain()
    assert resumed.rcs == [0, 0], resumed.explain()
    assert "4 x cpu (2 processes; this is process 0 of 2, coordinator 127.0.0.1:" in resumed.stdout[0]
    assert "resuming at step 2" in resumed.stdout[0]  # checkpoint 4 was half written: never renamed, ignored
    assert "documents dealt to 2 data shards, 4 rows each (this process reads shard 0)" in resumed.stdout[0]
    assert "documents dealt to 2 data shards, 4 rows each (this process reads shard 0-1)" in one.stdout[0]
    assert not list(resumed.dir.glob(".tmp-*"))  # ... and its debris removed
    assert sorted(p.name for p in resumed.dir.glob("checkpoint-*")) == ["checkpoint-0000004", "checkpoint-0000006"]

    # the same losses step by step and the same evals (steps 2 before the kill; 4 and 6 after the resume)
    ours, theirs = resumed.metrics(), one.metrics()
    assert [r[0] for r in ours] == [r[0] for r in theirs] == [1, 2, 2, 3, 4, 4, 5, 6, 6]
    for (step, loss, eval_loss), (_, ref_loss, ref_eval_loss) in zip(ours, theirs):
        assert abs((loss if loss is not None else eval_loss) - (ref_loss if ref_loss is not None else ref_eval_loss)) \
            < TOLERANCE, step
    # the final parameters, as the published model holds them
    a, b = load_file(str(one.dir / "model.safetensors")), load_file(str(resumed.dir / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < TOLERANCE


def test_only_process_0_speaks_and_writes_the_run_files(runs):
    _, _, resumed = runs
    assert "summary:" in resumed.stdout[0] and "step 6: saved" in resumed.stdout[0]
    for text in (resumed.stdout[1], resumed.stderr[1]):
        assert "settings:" not in text and "summary:" not in text and "training:" not in text and "eval loss" not in text
    settings = json.loads((resumed.dir / "training_settings.json").read_text())
    assert "process_id" not in settings and "coordinator_address" not in settings  # the launch is not the run


def test_each_process_writes_its_own_pieces_of_the_sharded_training_state(runs):
    one, _, resumed = runs
    state = resumed.dir / "checkpoint-0000006" / "training_state"
    assert json.loads((state / "state.json").read_text())["num_processes"] == 2
    assert {p.name for p in state.glob("data-*.json")} == {"data-0.json", "data-1.json"}
    whole = load_file(str(one.dir / "checkpoint-0000006" / "training_state" / "params.safetensors"))
    for part in ("params", "opt_state"):
        names = []
        for index in (0, 1):
            with safe_open(state / f"{part}-{index}.safetensors", framework="numpy") as f:
                names.append(set(f.keys()))
        assert names[0] and names[1] and not names[0] & names[1]  # both wrote, nothing twice
    # FSDP: the embedding (vocab 300 x 32) is split along the vocabulary over 4 devices, 2 blocks of rows per process
    with safe_open(state / "params-1.safetensors", framework="numpy") as f:
        keys = f.keys()  # (a safetensors handle is not iterable)
        wte = sorted(key for key in keys if key.startswith("transformer/wte/embedding["))
        assert wte == ["transformer/wte/embedding[150:225,0:32]", "transformer/wte/embedding[225:300,0:32]"]
        np.testing.assert_allclose(f.get_tensor(wte[1]), whole["transformer/wte/embedding"][225:], atol=TOLERANCE)


@pytest.mark.parametrize("failing", [1, 0])  # a worker, and process 0, which hosts the coordination service
def test_an_error_in_one_process_stops_every_process_with_that_error(env, failing):
    folder, env = env
    other = 1 - failing
    run = Processes(f"failing-{failing}", folder, folder / f"failing-{failing}", ARGS, env, count=2, devices=2,
                    env_of={failing: {FAIL_AT_STEP: "3"}})
    try:
        assert run.procs[failing].wait(timeout=TIMEOUT_S) == 1
        assert run.procs[other].wait(timeout=30) == 1  # at once: not after jax's heartbeat timeout (100 s), nor never
    finally:
        run.wait()
    assert "InjectedFailure: PYGPT_TEST_FAIL_AT_STEP=3" in run.stderr[failing], run.explain()
    assert (f"error: process {other} of 2 stops, since another failed: error (process {failing} of 2): InjectedFailure: "
            "PYGPT_TEST_FAIL_AT_STEP=3: this process failed on purpose after step 3") in run.stderr[other], run.explain()
    assert not list((folder / f"failing-{failing}").glob("checkpoint-0000004"))  # it stopped before checkpoint 4


# --- the launch, checked without starting anything -------------------------------------------------------------


def launch(environ=None, **flags):
    return resolve_launch(TrainSettings(**flags), environ or {})


def test_the_launch_comes_from_flags_or_the_environment():
    assert launch() is None  # one plain process
    assert launch(num_processes=1) is None
    got = launch(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)
    assert (got.coordinator_address, got.num_processes, got.process_id, got.auto) == ("127.0.0.1:1234", 2, 1, False)
    env = {"PYGPT_COORDINATOR_ADDRESS": "node0:99", "PYGPT_NUM_PROCESSES": "4", "PYGPT_PROCESS_ID": "3"}
    assert launch(env).process_id == 3
    assert launch(env, process_id=2).process_id == 2  # the flag wins
    assert launch({"JAX_COORDINATOR_ADDRESS": "[::1]:7", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}).num_processes == 2
    slurm = launch({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "SLURM_PROCID": "3"})
    assert slurm.auto and slurm.cluster == "Slurm"
    assert launch({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None  # one task: nothing to join


@pytest.mark.parametrize(("flags", "environ", "message"), [
    ({"coordinator_address": "127.0.0.1:1234"}, {}, "missing: --num-processes, --process-id"),
    ({"num_processes": 2, "process_id": 0}, {}, "missing: --coordinator-address"),
    ({"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 2}, {}, "--process-id must be in [0, 2)"),
    ({"coordinator_address": "127.0.0.1", "num_processes": 2, "process_id": 0}, {}, "--coordinator-address must be HOST:PORT"),
    ({"coordinator_address": "h:70000", "num_processes": 2, "process_id": 0}, {}, "1..65535), got 'h:70000'"),
    ({"num_processes": 0}, {}, "--num-processes must be >= 1"),
    ({}, {"PYGPT_COORDINATOR_ADDRESS": "h:1", "PYGPT_NUM_PROCESSES": "two", "PYGPT_PROCESS_ID": "0"},
     "PYGPT_NUM_PROCESSES must be an integer, got 'two'"),
    ({}, {"PYGPT_COORDINATOR_ADDRESS": "h:1", "PYGPT_NUM_PROCESSES": "2", "PYGPT_PROCESS_ID": "5"},
     "PYGPT_PROCESS_ID must be in [0, 2)"),
])
def test_a_bad_launch_is_refused_naming_the_flag_or_variable(flags, environ, message):
    with pytest.raises(ValueError) as err:
        launch(environ, **flags)
    assert message in str(err.value)


def test_launch_flags_are_validated_with_the_run_and_may_change_on_resume(tmp_path, monkeypatch):
    for name in ("PYGPT_COORDINATOR_ADDRESS", "PYGPT_NUM_PROCESSES", "PYGPT_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="missing: --process-id"):
        parse_settings(["--coordinator-address", "127.0.0.1:5000", "--num-processes", "2"])
    settings, _ = parse_settings(["--output-dir", str(tmp_path), "--coordinator-address", "127.0.0.1:5000",
                                  "--num-processes", "2", "--process-id", "0"])
    settings.save(str(tmp_path))
    assert "num_processes" not in json.loads((tmp_path / "training_settings.json").read_text())
    resumed, notes = parse_settings(["--output-dir", str(tmp_path), "--resume"])  # launched as one process now
    assert resumed.num_processes is None and resumed.coordinator_address is None and notes == []
    again, _ = parse_settings(["--output-dir", str(tmp_path), "--resume", "--coordinator-address", "10.0.0.1:6000",
                               "--num-processes", "4", "--process-id", "3"])
    assert again.process_id == 3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
