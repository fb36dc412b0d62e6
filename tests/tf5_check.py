"""Run inside the transformers 5.x venv (see tests/tf5_env.py): load pygpt checkpoints the way a 5.x user does.

    python -I tests/tf5_check.py SPEC.json OUT_DIR

SPEC lists cases (a local folder or a Hub repo id, the texts to encode, a padded batch, a prompt, optionally a
usage snippet such as the model card's). For each
case this writes OUT_DIR/<name>.json (classes, ids, decoded texts, pipeline output) and
OUT_DIR/<name>.safetensors (logits, greedy tokens); the pytest side compares them with what pygpt_hf
computed under transformers 4.57. Nothing here imports pygpt_hf (it is not installed in this venv, and it
is checked), so everything comes from the checkpoint's own files.
"""

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import sys
import traceback

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module


def attempt(fn):
    """Run fn; return (value, None) or (None, "ErrorType: message") so one failure doesn't hide the others."""
    try:
        return fn(), None
    except Exception as err:  # noqa: BLE001 - reported back to the test, which asserts on it
        return None, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"


def log(message: str) -> None:
    """Progress on stderr, so a test that times out shows where this process was."""
    print(f"[tf5_check] {message}", file=sys.stderr, flush=True)


def check_case(case: dict, out_dir: str) -> None:
    source, texts = case["source"], case["texts"]
    log(f"case {case['name']}: {source}")
    result: dict = {"errors": {}}
    arrays: dict = {}

    def record(name, fn):
        log(f"  {name}")
        value, error = attempt(fn)
        if error:
            result["errors"][name] = error
        return value

    # The user's call on 5.x: AutoTokenizer with remote code. 5.x always picks the fast class of auto_map.
    tokenizer = record("tokenizer", lambda: AutoTokenizer.from_pretrained(source, trust_remote_code=True))
    if tokenizer is not None:
        result["tokenizer_class"] = f"{type(tokenizer).__module__}.{type(tokenizer).__name__}"
        result["tokenizer_ids"] = [tokenizer(t)["input_ids"] for t in texts]
        result["tokenizer_decoded"] = [tokenizer.decode(ids) for ids in result["tokenizer_ids"]]
        result["tokenizer_special_ids"] = [tokenizer.eos_token_id, tokenizer.pad_token_id]

    # No remote code at all: transformers' own fast tokenizer on tokenizer.json.
    plain = record("plain_tokenizer", lambda: PreTrainedTokenizerFast.from_pretrained(source))
    if plain is not None:
        result["plain_tokenizer_class"] = f"{type(plain).__module__}.{type(plain).__name__}"
        result["plain_ids"] = [plain(t)["input_ids"] for t in texts]
        result["plain_decoded"] = [plain.decode(ids) for ids in result["plain_ids"]]
    # What AutoTokenizer does when the user does not allow remote code (recorded, not required to work).
    _, result["auto_without_remote_code"] = attempt(lambda: AutoTokenizer.from_pretrained(source, trust_remote_code=False))

    # The slow (pure Python) class still loads as remote code on 5.x, though AutoTokenizer no longer offers it.
    def slow_tokenizer():
        cls = get_class_from_dynamic_module("tokenization_pygpt.PyGPTTokenizer", source)
        return cls.from_pretrained(source)

    slow = record("slow_tokenizer", slow_tokenizer)
    if slow is not None:
        result["slow_ids"] = [slow(t)["input_ids"] for t in texts]

    model = record("model", lambda: AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True))
    if model is not None:
        result["model_class"] = f"{type(model).__module__}.{type(model).__name__}"
        model.eval()
        ids, mask, positions = (torch.tensor(case[k]) for k in ("ids", "mask", "position_ids"))

        def logits():
            with torch.no_grad():
                return model(ids, attention_mask=mask, position_ids=positions).logits.numpy()

        value = record("logits", logits)
        if value is not None:
            arrays["logits"] = value
        value = record("greedy", lambda: model.generate(ids, attention_mask=mask, max_new_tokens=case["new_tokens"],
                                                        do_sample=False).numpy())
        if value is not None:
            arrays["greedy"] = value

    def run_pipeline():
        generator = pipeline("text-generation", model=source, trust_remote_code=True)
        return generator(case["prompt"], max_new_tokens=case["new_tokens"], do_sample=False)[0]["generated_text"]

    result["pipeline_text"] = record("pipeline", run_pipeline)

    if "snippet" in case:  # documented usage (the model card's PyTorch snippet), run as a user would paste it
        def run_snippet():
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(case["snippet"], {"__name__": "__snippet__"})  # noqa: S102 - the snippet is the test
            return printed.getvalue()

        result["snippet_output"] = record("snippet", run_snippet)

    with open(os.path.join(out_dir, case["name"] + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, os.path.join(out_dir, case["name"] + ".safetensors"))


def main() -> None:
    spec_path, out_dir = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    environment = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "huggingface_hub": importlib.metadata.version("huggingface_hub"),
        "tokenizers": importlib.metadata.version("tokenizers"),
        # this venv plays a user's machine: neither pygpt_hf nor jax may be importable here
        "pygpt_hf_importable": importlib.util.find_spec("pygpt_hf") is not None,
        "jax_importable": importlib.util.find_spec("jax") is not None,
    }
    with open(os.path.join(out_dir, "environment.json"), "w") as f:
        json.dump(environment, f)
    for case in spec["cases"]:
        check_case(case, out_dir)
    log("done")


if __name__ == "__main__":
    main()
