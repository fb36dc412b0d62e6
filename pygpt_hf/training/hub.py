"""Pushing the output folder to the Hugging Face Hub: one commit per checkpoint.

The token comes from where `huggingface_hub` always looks (the HF_TOKEN variable, or `huggingface-cli
login`); it is never printed or logged. HF_ENDPOINT points the client at another Hub-compatible server.
What is pushed is the top of the output folder (the latest model, tokenizer, settings, metrics, plot),
not the `checkpoint-*` folders with their optimizer state.
"""

from __future__ import annotations

from ..run_folder import RESULTS_FILE

# Not pushed: the checkpoints (the top of the folder is the latest one's model), staging debris, and
# train_results.json (this session's timings on this machine, written after the final push).
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", ".tmp*", "*.tmp", "*.tmp.*", "*.tmp-*", RESULTS_FILE]


class HubPusher:
    def __init__(self, repo_id: str, private: bool = False):
        from huggingface_hub import HfApi

        self.api = HfApi()
        self.repo_id = repo_id
        # Created at the start of the run, so a wrong name or a missing token fails before any training.
        self.url = self.api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")

    def push(self, folder: str, step: int, eval_loss: float | None) -> str:
        """Render the model card (README.md) from the run's figures, then upload `folder` as one commit."""
        from ..model_card import write_model_card

        write_model_card(folder, self.repo_id)
        loss = f"eval loss {eval_loss:.4f}" if eval_loss is not None else "no eval yet"
        info = self.api.upload_folder(
            repo_id=self.repo_id,
            folder_path=folder,
            commit_message=f"step {step}: {loss}",
            ignore_patterns=IGNORE_PATTERNS,
        )
        return info.oid
