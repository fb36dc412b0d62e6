"""Files (issue 14): every JSON file a saved model folder holds is indented as transformers writes its own
(two spaces, a final newline), and a truncated or corrupted one is named when the folder is loaded."""

import json
import shutil

import pytest

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.tokenization_pygpt import PyGPTTokenizer
from pygpt_hf.tokenization_pygpt_fast import PyGPTTokenizerFast

MODEL_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = ["tokenizer_config.json", "special_tokens_map.json", "vocab.json", "tokenizer.json"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model folder as training writes it: the Flax model's save_pretrained, then the tokenizer's."""
    path = tmp_path_factory.mktemp("model")
    config = PyGPTConfig(vocab_size=300, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    FlaxPyGPTForCausalLM(config, seed=0).save_pretrained(path)
    train_tokenizer(["hello world, é 日本 " * 30], vocab_size=300, model_max_length=16,
                    show_progress=False).save_pretrained(path)
    return path


def test_every_json_file_is_indented_as_transformers_writes(folder):
    names = sorted(p.name for p in folder.glob("*.json"))
    assert names == sorted(MODEL_FILES + TOKENIZER_FILES)
    for name in names:
        text = (folder / name).read_text(encoding="utf-8")
        data = json.loads(text)
        # tokenizer.json is written by the `tokenizers` library (as for every fast tokenizer): no final newline
        end = "" if name == "tokenizer.json" else "\n"
        assert text.startswith('{\n  "') and text.endswith("}" + end), name
        # the same document, re-written with two-space indentation and the file's own key order
        assert text in {json.dumps(data, indent=2, ensure_ascii=a, sort_keys=k) + end for a in (True, False)
                        for k in (True, False)}, name


def test_vocab_json_is_ordered_by_id(folder):
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert list(vocab.values()) == list(range(len(vocab)))


def _damaged_copy(folder, tmp_path, name, how):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    text = (copy / name).read_text(encoding="utf-8")
    (copy / name).write_text(text[: len(text) // 2] if how == "truncated" else text.replace('"', "'", 3),
                             encoding="utf-8")
    return copy


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("name", MODEL_FILES)
def test_a_damaged_model_file_is_named_on_load(folder, tmp_path, name, how):
    copy = _damaged_copy(folder, tmp_path, name, how)
    loaders = [FlaxPyGPTForCausalLM.from_pretrained]
    try:
        from pygpt_hf.modeling_pygpt import PyGPTForCausalLM

        loaders.append(PyGPTForCausalLM.from_pretrained)
    except ImportError:  # the torch extra is optional
        pass
    for load in loaders:
        with pytest.raises(OSError, match=name):  # transformers used to fall back to defaults for generation_config
            load(copy)


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("name", TOKENIZER_FILES)
@pytest.mark.parametrize("cls", [PyGPTTokenizer, PyGPTTokenizerFast])
def test_a_damaged_tokenizer_file_is_named_on_load(folder, tmp_path, name, how, cls):
    copy = _damaged_copy(folder, tmp_path, name, how)
    with pytest.raises(OSError, match=name):  # even a file this class would not read (vocab.json for fast)
        cls.from_pretrained(copy)


@pytest.mark.parametrize("name", [n for n in TOKENIZER_FILES if n != "tokenizer_config.json"])
def test_a_damaged_tokenizer_file_is_named_through_auto_tokenizer(folder, tmp_path, name):
    from transformers import AutoTokenizer

    with pytest.raises(OSError, match=name):
        AutoTokenizer.from_pretrained(_damaged_copy(folder, tmp_path, name, "truncated"))


def test_a_damaged_tokenizer_config_through_auto_tokenizer(folder, tmp_path):
    from transformers import AutoTokenizer

    with pytest.raises(OSError, match="tokenizer_config.json"):
        AutoTokenizer.from_pretrained(_damaged_copy(folder, tmp_path, "tokenizer_config.json", "truncated"))
