"""One Hub path: `model.push_to_hub()` pushes the model card the harness pushes (the tokenizer's push keeps it),
and the card's template is package data, so an installed pygpt_hf renders it outside the source tree."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from huggingface_hub import ModelCard

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.model_card import TAGS

ROOT = Path(__file__).resolve().parents[1]
TINY = {"vocab_size": 300, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}


def test_model_push_to_hub_pushes_our_card_and_the_tokenizer_push_keeps_it(hub):
    repo_id = hub.repo_id("card")
    model = FlaxPyGPTForCausalLM(PyGPTConfig(**TINY), seed=0)
    model.push_to_hub(repo_id)
    card = ModelCard.load(repo_id)
    assert set(TAGS) <= set(card.data.tags) and card.data.library_name == "transformers"
    assert f"# {repo_id.split('/')[-1]}" in card.text and "What it is not" in card.text
    assert "automatically generated" not in card.text  # not transformers' placeholder card

    tokenizer = train_tokenizer(["To be, or not to be."] * 20, vocab_size=270, show_progress=False)
    tokenizer.push_to_hub(repo_id)
    assert ModelCard.load(repo_id).text == card.text
    assert "tokenizer.json" in hub.api().list_repo_files(repo_id)


def test_the_installed_wheel_renders_a_card_outside_the_source_tree(tmp_path):
    """Build the wheel (no deps), install it into a bare target folder, render from there in a subprocess."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("pygpt_hf-*.whl")
    assert "pygpt_hf/model_card.md" in zipfile.ZipFile(wheel).namelist()
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)

    folder = tmp_path / "model"
    FlaxPyGPTForCausalLM(PyGPTConfig(**TINY), seed=0).save_pretrained(folder)
    script = (
        "import sys, pygpt_hf.model_card as mc\n"
        f"assert mc.__file__.startswith({str(site)!r}), mc.__file__\n"
        f"assert str(mc.TEMPLATE_PATH).startswith({str(site)!r}), mc.TEMPLATE_PATH\n"
        f"print(mc.write_model_card({str(folder)!r}, 'someone/tiny'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)  # the installed copy, not the source tree (nor an editable install)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    card = (folder / "README.md").read_text()
    assert "# tiny" in card and "without a training record" in card
