"""The run's settings: flags, --config files (JSON/YAML) and resumed runs fill one TrainSettings."""

import json

import pytest

from pygpt_hf.training.cli import parse_settings
from pygpt_hf.training.settings import SETTINGS_FILE, TrainSettings


def test_flags_fill_the_settings_and_defaults_fill_the_rest():
    settings, notes = parse_settings(["--n-layer", "2", "--lr", "1e-3", "--fsdp", "--dataset", "x.jsonl",
                                      "--position-embedding", "rope", "--max-minutes", "none"])
    assert (settings.n_layer, settings.lr, settings.fsdp, settings.dataset) == (2, 1e-3, True, "x.jsonl")
    assert settings.position_embedding == "rope" and settings.max_minutes is None
    assert settings.n_embd == TrainSettings().n_embd and notes == []


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_fills_the_same_object_and_flags_override_it(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    values = {"n-layer": 3, "seq_len": 64, "lr": 0.01, "format": "dolly"}
    path.write_text(json.dumps(values) if suffix == ".json" else
                    "n-layer: 3\nseq_len: 64\nlr: 0.01\nformat: dolly\n")
    settings, _ = parse_settings(["--config", str(path), "--lr", "0.02"])
    assert (settings.n_layer, settings.seq_len, settings.format) == (3, 64, "dolly")
    assert settings.lr == 0.02  # the flag wins over the file


def test_bad_settings_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"n_layers": 3}))
    with pytest.raises(ValueError, match="unknown setting 'n_layers'"):
        parse_settings(["--config", str(bad)])
    bad.write_text(json.dumps({"batch_size": "many"}))
    with pytest.raises(ValueError, match="'batch_size'.*must be a int"):
        parse_settings(["--config", str(bad)])
    with pytest.raises(ValueError, match="--n-embd .*divisible by --n-head"):
        parse_settings(["--n-embd", "30", "--n-head", "4"])
    with pytest.raises(ValueError, match="--seq-len must be a positive integer"):
        parse_settings(["--seq-len", "0"])
    with pytest.raises(ValueError, match=r"--batch-size \(16\) must be divisible by --data-shards \(3\)"):
        parse_settings(["--data-shards", "3"])
    with pytest.raises(ValueError, match="--data-shards must be a positive integer, got 0"):
        parse_settings(["--data-shards", "0"])
    with pytest.raises(FileNotFoundError, match="--config"):
        parse_settings(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit):  # argparse: not one of the formats
        parse_settings(["--format", "csv"])


def test_resume_uses_the_saved_settings_and_refuses_to_change_the_maths(tmp_path):
    saved = TrainSettings(output_dir=str(tmp_path), n_layer=2, seq_len=32)
    saved.save(str(tmp_path))
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["n_layer"] == 2
    assert "kill_at_step" not in json.loads((tmp_path / SETTINGS_FILE).read_text())  # test hooks are not settings

    settings, notes = parse_settings(["--output-dir", str(tmp_path), "--resume", "--max-steps", "99"])
    assert (settings.n_layer, settings.seq_len, settings.max_steps, settings.resume) == (2, 32, 99, True)
    assert any("max-steps" in note for note in notes)

    with pytest.raises(ValueError, match=r"cannot change: --n-layer \(saved 2, given 3\)"):
        parse_settings(["--output-dir", str(tmp_path), "--resume", "--n-layer", "3"])
    with pytest.raises(FileNotFoundError, match="--resume"):
        parse_settings(["--output-dir", str(tmp_path / "elsewhere"), "--resume"])
