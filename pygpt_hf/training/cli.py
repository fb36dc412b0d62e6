"""Flags, a `--config FILE` (JSON or YAML) and a resumed run's saved settings -> one validated settings object.

Precedence, lowest to highest: the dataclass defaults < the config file < flags typed on the command line.
With `--resume`, the settings saved in the output folder replace the defaults and the config file, so a run
continues with exactly what it started with; only the fields in `CHANGEABLE_ON_RESUME` may be changed then
(anything else would silently make the resumed run a different run).

The flags are built and parsed by transformers' `HfArgumentParser` from the dataclass fields (their help,
choices and types); values are converted by `coerce`, so a wrong value, typed or in a file, is named the same
way ("setting 'batch_size' in run.yaml must be a int, got 'many'"). Checking what the values mean together is
`validate()`'s job (settings.py).
"""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from typing import Any

from ..labels import DEFAULT_LABELS_FLAG
from ..run_folder import SETTINGS_FILE
from .settings import CHANGEABLE_ON_RESUME, LAUNCH_SETTINGS, RETIRED_SETTINGS, TrainSettings, _fields, _flag


def _base_type(cls, name: str) -> tuple[type, bool]:
    """(the field's type without Optional, whether None is allowed)."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None)), True
    return hint, False


def coerce(cls, name: str, value: Any, source: str) -> Any:
    """Convert `value` (a string from the command line, or any JSON/YAML value) to the type of field `name`."""
    if name not in _fields(cls):
        raise ValueError(f"unknown setting {name!r} in {source}; known: {', '.join(_fields(cls))}")
    kind, optional = _base_type(cls, name)
    if name == "strip_labels" and isinstance(value, (list, tuple, bool)):  # YAML/JSON: a list, or true/false
        value = ",".join(map(str, value)) if not isinstance(value, bool) else DEFAULT_LABELS_FLAG if value else None
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if not optional:
            raise ValueError(f"setting {name!r} in {source} cannot be empty")
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name!r} in {source} must be a {kind.__name__}, got {value!r}") from None


def read_config_file(cls, path: str) -> dict[str, Any]:
    """Settings from a JSON or YAML file (keys with '-' or '_'), checked and converted."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: no such file: {path}")
    kind = "YAML" if path.endswith((".yaml", ".yml")) else "JSON"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if kind == "YAML":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        raise ValueError(f"--config {path} is not valid {kind}: {err}") from err
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of setting -> value, got {type(data).__name__}")  # noqa: TRY004
    return {key.replace("-", "_"): coerce(cls, key.replace("-", "_"), value, path) for key, value in data.items()}


def _hf_argument_parser() -> type:
    """transformers' `HfArgumentParser`, without importing the `transformers` package when it is not loaded yet.

    `import transformers` runs `transformers.utils`, which imports torch when it is installed (about 2 s), and a
    `--help` should not pay that. `transformers/hf_argparser.py` itself imports only the standard library and
    yaml, so it is loaded here as a standalone module from transformers' own file (the class is the same code).
    """
    import sys

    if "transformers" in sys.modules:
        from transformers import HfArgumentParser

        return HfArgumentParser
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    path = os.path.join(os.path.dirname(spec.origin), "hf_argparser.py")
    module_spec = importlib.util.spec_from_file_location("_pygpt_hf_argparser", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.HfArgumentParser


def build_parser(cls=TrainSettings, description: str | None = None, required: tuple[str, ...] = ()):
    """`HfArgumentParser` over `cls`, with `--config FILE`. Defaults are SUPPRESSed (so what was typed can be
    told from what was not) and values stay strings until `coerce` converts them, naming the setting."""
    HfArgumentParser = _hf_argument_parser()
    parser = HfArgumentParser(cls, description=description or cls.__doc__, formatter_class=argparse.HelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of settings (flags override it)")
    fields = _fields(cls)
    for action in list(parser._actions):
        if action.dest not in fields:
            continue
        action.default, action.type, action.required = argparse.SUPPRESS, None, action.dest in required
        action.option_strings.sort(key=lambda option: "_" in option)  # --n-layer first (--n_layer also works)
        kind = _base_type(cls, action.dest)[0]
        if kind is bool:  # `--fsdp` alone means true; `--fsdp false` and `--no-fsdp` turn it off
            action.metavar = "BOOL"
            parser.add_argument(f"--no-{_flag(action.dest)}", dest=action.dest, action="store_const", const="false",
                                default=argparse.SUPPRESS, help=f"the same as --{_flag(action.dest)} false")
        elif action.metavar is None and action.choices is None:
            action.metavar = kind.__name__.upper()
    return parser


def parse_settings(argv: list[str] | None = None, cls=TrainSettings, *, description: str | None = None,
                   required: tuple[str, ...] = ()) -> tuple[Any, list[str]]:
    """Settings of class `cls` from the command line (and --config / a resumed run's saved settings).

    Returns the validated settings and a list of notes for the log (e.g. what a resume changed). `required`
    names fields that must be typed (scripts/pretokenize.py's --tokenizer, say).
    """
    args = vars(build_parser(cls, description, required).parse_args(argv))
    config_path = args.pop("config", None)
    typed = {name: coerce(cls, name, value, "the command line") for name, value in args.items()}
    chosen = {**(read_config_file(cls, config_path) if config_path else {}), **typed}
    notes: list[str] = []
    if chosen.get("resume"):
        chosen, notes = _resumed(chosen)
    return cls(**chosen).validate(), notes


def _resumed(chosen: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The saved settings of the run in --output-dir, with the changes `chosen` may make to them."""
    output_dir = chosen.get("output_dir", _fields(TrainSettings)["output_dir"].default)
    saved_path = os.path.join(output_dir, SETTINGS_FILE)
    if not os.path.isfile(saved_path):
        raise FileNotFoundError(f"--resume: {saved_path} not found; is {output_dir!r} the folder of a run?")
    with open(saved_path, encoding="utf-8") as f:
        saved = {k: coerce(TrainSettings, k, v, saved_path) for k, v in json.load(f).items()
                 if k not in RETIRED_SETTINGS and k not in LAUNCH_SETTINGS}  # the launch is this one's
    changed = {k: v for k, v in chosen.items() if k in saved and saved[k] != v and k != "resume"}
    locked = sorted(k for k in changed if k not in CHANGEABLE_ON_RESUME)
    if locked:
        raise ValueError("--resume continues a run exactly, so these settings cannot change: "
                         + ", ".join(f"--{_flag(k)} (saved {saved[k]!r}, given {changed[k]!r})" for k in locked))
    notes = [f"resume changes --{_flag(k)}: {saved[k]!r} -> {v!r}" for k, v in changed.items()]
    if "max_steps" in changed:
        notes.append("note: a new --max-steps also moves the end of the cosine learning-rate decay")
    return {**saved, **chosen, "resume": True}, notes
