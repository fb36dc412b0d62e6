"""Start-up stays cheap: `import pygpt_hf` and the CLIs that need no model load neither jax, flax nor torch,
and the Auto classes still resolve "pygpt" (registered when transformers loads them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("jax", "flax", "torch", "optax")


def run_python(code: str) -> dict:
    """Run `code` in a fresh interpreter with the repo on the path; it prints one JSON line, returned here."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("USE_TORCH", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


LOADED = f"[m for m in {HEAVY!r} if m in sys.modules]"


def test_import_pygpt_hf_loads_no_framework():
    result = run_python(f"import json, sys; import pygpt_hf; print(json.dumps({{'loaded': {LOADED}, "
                        f"'transformers': 'transformers' in sys.modules, 'all': pygpt_hf.__all__}}))")
    assert result["loaded"] == []
    assert result["transformers"] is False  # `import transformers` alone imports torch when it is installed
    assert {"PyGPTConfig", "FlaxPyGPTForCausalLM", "PyGPTTokenizerFast", "train_tokenizer"} <= set(result["all"])


@pytest.mark.parametrize("script", ["train_tokenizer.py", "pretokenize.py", "generate_synthetic_math.py"])
def test_cli_help_loads_no_framework(script):
    path = ROOT / "scripts" / script
    code = (f"import json, runpy, sys; sys.argv = [{str(path)!r}, '--help']\n"
            f"try:\n    runpy.run_path({str(path)!r}, run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
            f"print(json.dumps({{'loaded': {LOADED}, 'exit': code}}))")
    result = run_python(code)
    assert result == {"loaded": [], "exit": 0}


@pytest.mark.parametrize("transformers_first", [False, True], ids=["pygpt_hf-first", "transformers-first"])
def test_auto_classes_resolve_pygpt_and_import_models_only_on_use(transformers_first):
    code = f"""
import json, sys
if {transformers_first}:
    import transformers.models.auto.tokenization_auto
import pygpt_hf
from transformers import AutoConfig, AutoTokenizer, FlaxAutoModel, FlaxAutoModelForCausalLM
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
config = AutoConfig.for_model("pygpt", vocab_size=300, n_embd=16, n_layer=1, n_head=2, n_positions=8)
slow, fast = TOKENIZER_MAPPING[type(config)]
jax_before_model = "jax" in sys.modules
lm = FlaxAutoModelForCausalLM.from_config(config)
base = FlaxAutoModel._model_mapping[type(config)]
names = [type(config).__name__, slow.__name__, fast.__name__, type(lm).__name__, base.__name__]
if pygpt_hf.__all__.count("PyGPTForCausalLM"):
    from transformers import AutoModelForCausalLM
    names.append(type(AutoModelForCausalLM.from_config(config)).__name__)
print(json.dumps({{"jax_before_model": jax_before_model, "names": names,
                   "same_class": type(lm) is pygpt_hf.FlaxPyGPTForCausalLM}}))
"""
    result = run_python(code)
    assert result["jax_before_model"] is False  # config and tokenizers resolve without jax
    assert result["names"][:5] == ["PyGPTConfig", "PyGPTTokenizer", "PyGPTTokenizerFast", "FlaxPyGPTForCausalLM",
                                   "FlaxPyGPTModel"]
    assert result["names"][5:] in ([], ["PyGPTForCausalLM"])
    assert result["same_class"] is True


def test_unknown_attribute_is_a_clear_error():
    result = run_python("import json, pygpt_hf\ntry:\n    pygpt_hf.NoSuchThing\nexcept AttributeError as e:\n"
                        "    print(json.dumps(str(e)))")
    assert "pygpt_hf" in result and "NoSuchThing" in result


@pytest.mark.parametrize("first_import", ["from pygpt_hf import PyGPTTokenizerFast",
                                          "import pygpt_hf.tokenization_pygpt_fast",
                                          "import pygpt_hf.tokenization_pygpt"])
def test_a_tokenizer_module_imported_first_still_registers_both_classes(first_import):
    # importing the fast tokenizer first is what loads AutoTokenizer, halfway through that very module
    code = f"""
import json
{first_import}
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
from pygpt_hf.configuration_pygpt import PyGPTConfig
print(json.dumps([cls.__name__ for cls in TOKENIZER_MAPPING[PyGPTConfig]]))
"""
    assert run_python(code) == ["PyGPTTokenizer", "PyGPTTokenizerFast"]


def test_learning_merges_imports_no_transformers():
    # scripts/train_tokenizer.py learns merges in a process that has not imported transformers (it imports it
    # meanwhile, for saving): the whole of pygpt_hf.bpe's training path must stay free of it
    code = """
import json, sys
from pygpt_hf.bpe import train_bpe
merges = train_bpe(["low lower lowest", "new newer newest"], 270, show_progress=False)
print(json.dumps({"merges": len(merges), "transformers": "transformers" in sys.modules}))
"""
    assert run_python(code) == {"merges": 12, "transformers": False}
