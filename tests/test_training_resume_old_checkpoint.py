"""A checkpoint written by the harness before its redesign (tests/data/run-before-redesign: 4 steps of a
1-layer model on tests/data/train_shakespeare.txt, saved at step 4) resumes with today's code, and goes on
as the old code went on from it (continued-by-the-old-code.jsonl: its steps 5 and 6, and the eval at 6)."""

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "run-before-redesign"


def test_a_checkpoint_from_before_the_redesign_resumes_and_continues_the_same_run(tmp_path, monkeypatch):
    from pygpt_hf.training import parse_settings, train

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    monkeypatch.chdir(ROOT)  # the saved --dataset is relative to the repository root
    # its saved settings still carry the retired test-hook fields; resuming ignores them
    assert "kill_at_step" in json.loads((run / "training_settings.json").read_text())
    settings, notes = parse_settings(["--output-dir", str(run), "--resume", "--max-steps", "6"])
    assert any("max-steps" in note for note in notes)  # 4 -> 6 also moves the end of the cosine decay
    logs: list[str] = []
    result = train(settings, log=logs.append)

    assert any("resuming at step 4" in line for line in logs) and result.step == 6 and result.stopped == "finished"
    assert (run / "checkpoint-0000006" / "training_state" / "state.json").is_file()
    ours = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in (FIXTURE / "continued-by-the-old-code.jsonl").read_text().splitlines()]
    # the same data position, weights, optimizer moments and dropout keys: the same losses (float rounding aside)
    for old, new in zip(theirs, [r for r in ours if r["step"] > 4], strict=True):
        assert old["step"] == new["step"]
        for key in ("loss", "grad_norm", "eval_loss", "eval_nats_per_byte"):
            if key in old:
                assert new[key] == pytest.approx(old[key], rel=1e-4), (old["step"], key)
    assert ours[-1]["eval_bits_per_byte"] == pytest.approx(ours[-1]["eval_nats_per_byte"] / 0.6931471805599453)
