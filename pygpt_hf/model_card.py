"""The model card: the README.md a pushed model shows on the Hub, rendered from `model_card.md` (package data).

Everything on the card is read from an output folder (what scripts/train.py writes, or any folder a
model was saved to):

    config.json              the architecture table
    model.safetensors        the parameter count (tensor shapes from the file's header; nothing is loaded)
    training_settings.json   data and hyper-parameters                      (absent for a hand-saved model)
    metrics.jsonl            eval loss / perplexity, tokens seen, the loss curve          (absent likewise)
    loss_curve.png           drawn from metrics.jsonl when missing, pushed beside the card, linked relatively

The YAML metadata (license, language, tags, datasets, pipeline_tag, model-index with the measured eval
loss and perplexity) is built with huggingface_hub's `ModelCardData`, so it is exactly what the Hub parses.
Nothing here touches the network: `ModelCard.validate()` / `ModelCard.push_to_hub()` POST to huggingface.co
whatever HF_ENDPOINT says, so the card is pushed as a file (`upload_folder` validates it at HF_ENDPOINT).
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .atomic import write_text
from .configuration_pygpt import TRAVELLING_FILES, PyGPTConfig
from .run_folder import METRICS_FILE, PLOT_FILE, SETTINGS_FILE, list_checkpoints, plot_loss_curve, read_metrics

# The template ships inside the package (package data), so an installed pygpt_hf renders cards anywhere.
TEMPLATE_PATH = Path(str(resources.files("pygpt_hf") / "model_card.md"))
CARD_FILE = "README.md"
TAGS = ["pygpt", "jax", "flax", "text-generation"]
# The corpus shipped inside pygpt_hf (the default of scripts/train.py) is this Hub dataset's text.
EMBEDDED_DATASET_ID = "karpathy/tiny_shakespeare"
DEFAULT_PROMPT = "To be, or not to be,"
LOCAL_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet")

WEIGHTS_FILE = "model.safetensors"

LICENSE_NAMES = {"mit": "MIT", "apache-2.0": "Apache 2.0", "cc-by-4.0": "CC BY 4.0"}
POSITION_DESCRIPTIONS = {
    "sinusoidal": "fixed sinusoidal position encodings added to them",
    "learned": "a learned position-embedding table added to them",
    "rope": "rotary position embeddings (RoPE) applied to queries and keys",
}


# --- reading the folder -------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} ({what}) is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} ({what}) must hold a JSON object, got {type(data).__name__}")  # noqa: TRY004
    return data


def count_parameters(weights_path: Path) -> int:
    """Number of parameters stored in a safetensors file, from its header (shapes only)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(weights_path), framework="numpy") as f:
        for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            total += math.prod(f.get_slice(name).get_shape())
    return total


def model_step(folder: Path, metrics: list[dict]) -> int | None:
    """The training step of the weights at the top of `folder`: its latest checkpoint, else the last logged step."""
    checkpoints = list_checkpoints(str(folder))
    if checkpoints:
        return checkpoints[-1][0]
    logged = [r["step"] for r in metrics if "loss" in r]
    return max(logged) if logged else None


def is_hub_dataset_id(name: str) -> bool:
    """`user/name` (or a canonical `name`) that is not a local path: what `--dataset` reads from the Hub."""
    return (not os.path.exists(os.path.expanduser(name)) and not name.endswith(LOCAL_SUFFIXES)
            and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None)


def describe_data(settings: dict) -> dict:
    """Where the training text came from, for the page and the metadata."""
    dataset = settings.get("dataset")
    if dataset is None:
        hub_id, name = EMBEDDED_DATASET_ID, "tinyshakespeare"
        description = "the 1 MB excerpt of Shakespeare's plays used by char-rnn and nanoGPT, shipped inside pygpt_hf"
        license_note = "the training text (Shakespeare) is in the public domain"
    elif is_hub_dataset_id(dataset):
        hub_id, name, description, license_note = dataset, dataset, "a dataset on the Hub, streamed", None
    else:  # a local file or folder: name it without the machine's path
        hub_id, name = None, os.path.basename(os.path.normpath(dataset))
        description, license_note = "local file(s)", None
    fmt = settings.get("format", "text")
    if fmt != "text":
        format_description = f"{fmt}-style instruction records rendered as `### Instruction:` / `### Response:` text"
    elif dataset is None or dataset.endswith(".txt"):
        format_description = f"one document per {settings.get('txt_sample_by', 'paragraph')}"
    else:
        format_description = f"the `{settings.get('text_column', 'text')}` column as plain text"
    return {
        "hub_id": hub_id,
        "name": name,
        "link": f"https://huggingface.co/datasets/{hub_id}" if hub_id else None,
        "description": description,
        "license_note": license_note,
        "split": settings.get("split", "train"),
        "format": fmt,
        "format_description": format_description,
        "eval_docs": settings.get("eval_docs"),
    }


# --- the card -----------------------------------------------------------------------------------------------


def card_values(folder: str | os.PathLike, repo_id: str, license: str = "mit", language: str = "en") -> dict:
    """Everything the template and the metadata need, read from `folder`."""
    folder = Path(folder)
    for required, what in (("config.json", "the model's configuration"), (WEIGHTS_FILE, "the weights")):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder} has no {required} ({what}); is it a saved model folder?")
    if _read_json(folder / "config.json", "model configuration").get("model_type") != "pygpt":
        raise ValueError(f"{folder / 'config.json'} is not a PyGPT configuration (model_type is not 'pygpt')")
    config = PyGPTConfig.from_json_file(str(folder / "config.json"))  # every field, defaults filled, validated
    settings = _read_json(folder / SETTINGS_FILE, "training settings") if (folder / SETTINGS_FILE).is_file() else None
    metrics = read_metrics(folder / METRICS_FILE)

    params = count_parameters(folder / WEIGHTS_FILE)
    step = model_step(folder, metrics)
    upto = [r for r in metrics if step is None or r.get("step", 0) <= step]
    evals = [r for r in upto if "eval_loss" in r]
    trains = [r for r in upto if "loss" in r]
    last_eval, last_train = (evals[-1] if evals else None), (trains[-1] if trains else None)

    values = {
        "repo_id": repo_id,
        "model_name": repo_id.split("/")[-1],
        "license": license,
        "language": language,
        "config": config,
        "params_count": params,
        "params": f"{params:,}",
        "params_short": f"{params / 1e6:.2f}M" if params >= 10_000 else f"{params:,}",
        "license_name": LICENSE_NAMES.get(license, license),
        "head_dim": config.head_dim,
        "mlp_width": config.mlp_width,
        "position_description": POSITION_DESCRIPTIONS[config.position_embedding_type],
        "code_files": [n for n in TRAVELLING_FILES if n.startswith("modeling") and (folder / n).is_file()],
        "torch_code": (folder / "modeling_pygpt.py").is_file(),
        "metrics_file": METRICS_FILE if metrics else None,
        "model_step": step,
        "training": settings,
        "data": describe_data(settings) if settings else None,
        "tokens_seen": f"{last_train['tokens']:,}" if last_train and "tokens" in last_train else None,
        "final_train_loss": f"{last_train['loss']:.4f}" if last_train else None,
        "evaluation": None,
        "loss_curve": PLOT_FILE if trains or evals else None,
        "prompt": repr((settings or {}).get("sample_prompt") or DEFAULT_PROMPT),
        # Leave room for the prompt: prompt + new tokens must fit the context (Flax generate fails otherwise).
        "max_new_tokens": max(1, min(40, config.n_positions // 2)),
    }
    if settings:
        values["tokens_per_step"] = f"{settings['batch_size'] * settings['seq_len'] * settings['grad_accum']:,}"
        values["min_lr"] = f"{settings['lr'] * settings['min_lr_ratio']:g}"
        values["tokenizer_description"] = (
            f"Byte-level BPE trained by pygpt_hf on the training documents ({config.vocab_size} tokens, "
            f"GPT-4's pre-split pattern)." if settings.get("tokenizer") is None
            else f"`{settings['tokenizer']}` ({config.vocab_size} tokens).")
    if last_eval:
        nats_per_byte = last_eval.get("eval_nats_per_byte")  # bits/byte = nats/byte / ln 2 (older runs lack it)
        bits_per_byte = last_eval.get("eval_bits_per_byte", nats_per_byte / math.log(2) if nats_per_byte else None)
        values["evaluation"] = {
            "step": last_eval["step"],
            "loss": round(last_eval["eval_loss"], 4),
            "perplexity": round(last_eval["eval_perplexity"], 2),
            "nats_per_byte": round(nats_per_byte, 4) if nats_per_byte is not None else "n/a",
            "bits_per_byte": round(bits_per_byte, 4) if bits_per_byte is not None else "n/a",
        }
    return values


def card_data(values: dict) -> ModelCardData:
    """The YAML metadata, with the measured eval loss and perplexity as `model-index`."""
    data = values["data"]
    evaluation = values["evaluation"]
    results = None
    if evaluation:
        dataset = {"dataset_type": data["hub_id"] or data["name"], "dataset_name": data["name"],
                   "dataset_split": data["split"]} if data else {"dataset_type": "unknown", "dataset_name": "unknown"}
        results = [
            EvalResult(task_type="text-generation", task_name="Text Generation", metric_type="loss",
                       metric_name="Eval loss (nats/token)", metric_value=evaluation["loss"], **dataset),
            EvalResult(task_type="text-generation", task_name="Text Generation", metric_type="perplexity",
                       metric_name="Perplexity", metric_value=evaluation["perplexity"], **dataset),
        ]
    return ModelCardData(
        license=values["license"],
        language=values["language"],
        library_name="transformers",
        tags=TAGS,
        datasets=[data["hub_id"]] if data and data["hub_id"] else None,
        pipeline_tag="text-generation",
        model_name=values["model_name"],
        eval_results=results,
    )


def render_card(values: dict, template_path: str | os.PathLike = TEMPLATE_PATH) -> ModelCard:
    """Fill the Jinja template with `values` (from `card_values`) under their YAML metadata."""
    if not Path(template_path).is_file():
        raise FileNotFoundError(f"model card template not found: {template_path}")
    return ModelCard.from_template(card_data(values), template_path=str(template_path), **values)


def build_model_card(folder: str | os.PathLike, repo_id: str, license: str = "mit", language: str = "en",
                     template_path: str | os.PathLike = TEMPLATE_PATH) -> ModelCard:
    """The card for the model saved in `folder`, as it will be pushed to `repo_id` (nothing is written)."""
    return render_card(card_values(folder, repo_id, license, language), template_path)


def write_model_card(folder: str | os.PathLike, repo_id: str, license: str = "mit", language: str = "en",
                     template_path: str | os.PathLike = TEMPLATE_PATH) -> Path:
    """Render the card into `folder`/README.md (atomically), drawing loss_curve.png first if it is missing."""
    folder = Path(folder)
    values = card_values(folder, repo_id, license, language)
    card = render_card(values, template_path)
    if values["loss_curve"] and not (folder / PLOT_FILE).is_file():
        plot_loss_curve(read_metrics(folder / METRICS_FILE), str(folder / PLOT_FILE), title=repo_id)
    path = folder / CARD_FILE
    write_text(path, str(card))
    return path


def write_push_card(folder: str | os.PathLike, repo_id: str) -> Path | None:
    """The card for a folder that `push_to_hub` is about to upload (the hook pygpt_hf installs on the Flax
    model): rendered when the folder holds a PyGPT model; otherwise (a tokenizer alone) left as transformers
    made it, which is the card already on the Hub when there is one."""
    folder = Path(folder)
    if not ((folder / "config.json").is_file() and (folder / WEIGHTS_FILE).is_file()):
        return None
    return write_model_card(folder, repo_id)
