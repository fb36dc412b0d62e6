"""Push a saved model folder (e.g. a training run's --output-dir) to the Hugging Face Hub, with its model card.

    python scripts/push_to_hub.py runs/pygpt your-name/pygpt-shakespeare
    python scripts/push_to_hub.py runs/pygpt your-name/pygpt-shakespeare --private --commit-message "first try"

It renders `model_card.md` into DIR/README.md (with the run's real numbers), then uploads the folder as one
commit: model, tokenizer, remote code, settings, metrics, loss curve, card. The `checkpoint-*` folders
(optimizer state) stay home. The token comes from HF_TOKEN or `huggingface-cli login` and is never printed;
HF_ENDPOINT points the client at another Hub-compatible server.

Exit codes: 0 pushed, 1 the Hub refused or could not be reached, 2 bad folder or arguments.
"""

import argparse
import sys
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import HfHubHTTPError

from pygpt_hf.model_card import card_values, write_model_card
from pygpt_hf.training.hub import IGNORE_PATTERNS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="saved model folder (config.json, model.safetensors, tokenizer, ...)")
    parser.add_argument("repo_id", help="Hub repo to push to, as user/name (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", default=None, help="branch to push to (created from main if missing); default: main")
    parser.add_argument("--commit-message", default=None, help="default: says the step and eval loss of the run")
    parser.add_argument("--license", default="mit", help="license id for the card's metadata")
    parser.add_argument("--language", default="en", help="language code of the training text, for the card")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    if get_token() is None:
        print("error: no Hugging Face token: set HF_TOKEN or run `huggingface-cli login`", file=sys.stderr)
        return 2
    try:
        card_path = write_model_card(folder, args.repo_id, license=args.license, language=args.language)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model card: {card_path}")

    api = HfApi()
    try:
        url = api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        if args.revision:
            api.create_branch(args.repo_id, branch=args.revision, exist_ok=True)
        message = args.commit_message or _default_message(folder, args.repo_id)
        commit = api.upload_folder(repo_id=args.repo_id, folder_path=str(folder), commit_message=message,
                                   revision=args.revision, ignore_patterns=IGNORE_PATTERNS)
    except HfHubHTTPError as err:  # its message names the request and the Hub's reason, never the token
        print(f"error: the Hub refused the push to {args.repo_id}: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # connection refused, DNS, ...
        print(f"error: could not reach the Hub: {err}", file=sys.stderr)
        return 1
    print(f"pushed {folder} to {url} ({args.revision or 'main'}): {commit.commit_url}")
    print(f"commit {commit.oid}")
    return 0


def _default_message(folder: Path, repo_id: str) -> str:
    """'Upload PyGPT model (step N, eval loss X)', from what the card shows."""
    values = card_values(folder, repo_id)
    parts = [f"step {values['model_step']}"] if values["model_step"] is not None else []
    if values["evaluation"]:
        parts.append(f"eval loss {values['evaluation']['loss']:.4f}")
    return "Upload PyGPT model" + (f" ({', '.join(parts)})" if parts else "")


if __name__ == "__main__":
    sys.exit(main())
