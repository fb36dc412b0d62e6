"""`--task synthetic-math`: greedy answers to a fresh seeded set of the recipe's problems, exact-match scored.

Problems come from `pygpt_hf.synthetic_math.generate_records(n, seed)`, so a seed the model never trained on
gives problems it has not seen (the same seed and n always give the same problems). Each prompt is the
tokenizer's chat template with the instruction as the user message and the generation prompt, after
<|endoftext|>, exactly as training and `scripts/generate.py --instruction` render it. The recipe's contract is
that a response's last line ends with "= <answer>"; an answer is right when the text after the last "=" of the
generated response equals the one in the recipe's own worked response (whitespace-normalised), per kind.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..synthetic_math import KINDS, generate_records
from .loading import EvaluationError


def final_answer(response: str) -> str | None:
    """What follows the last '=' of the response's last non-empty line, whitespace-normalised; None if none."""
    lines = [line for line in response.strip().splitlines() if line.strip()]
    if not lines or "=" not in lines[-1]:
        return None
    return re.sub(r"\s+", " ", lines[-1].rsplit("=", 1)[1]).strip().rstrip(".$").strip() or None


def answers_match(generated: str, reference: str) -> bool:
    expected = final_answer(reference)
    return expected is not None and final_answer(generated) == expected


def check_chat_template(tokenizer, name: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise EvaluationError(f"--task synthetic-math: the tokenizer of {name} has no chat template, so there is "
                              "no instruction prompt to ask the problems with (train on instruction data, e.g. "
                              "--format dolly, which stores the template)")


def prompt_ids(tokenizer, instruction: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True,
                                        tokenize=True, tokenizer_kwargs={"split_special_tokens": True})
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None and list(ids[:1]) != [bos] else []) + list(ids)


@dataclass
class MathScores:
    seed: int
    problems: int = 0
    correct: int = 0
    per_kind: dict = field(default_factory=dict)  # kind -> {"problems", "correct", "accuracy"}
    examples: list = field(default_factory=list)  # a few (instruction, expected, generated) for the log

    @property
    def accuracy(self) -> float:
        return self.correct / self.problems if self.problems else 0.0

    def as_dict(self) -> dict:
        return {"seed": self.seed, "problems": self.problems, "correct": self.correct, "accuracy": self.accuracy,
                "per_kind": self.per_kind, "examples": self.examples}


def score_math(generate, tokenizer, n: int, seed: int, max_new_tokens: int, n_positions: int,
               kinds: tuple[str, ...] = KINDS, progress=None, n_examples: int = 3) -> MathScores:
    """Ask `n` problems; `generate(prompts, max_new_tokens, max_context, progress)` returns new token ids."""
    if n < 1:
        raise EvaluationError(f"--max-docs (the number of math problems) must be at least 1, got {n}")
    records = list(generate_records(n, seed, kinds))
    prompts = [prompt_ids(tokenizer, r["instruction"]) for r in records]
    max_context = n_positions - max_new_tokens
    if max_context < 1:
        raise EvaluationError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's "
                              f"context (n_positions = {n_positions})")
    outputs = generate(prompts, max_new_tokens, max_context, progress)
    scores, problems, correct = MathScores(seed=seed), Counter(), Counter()
    for record, new in zip(records, outputs, strict=True):
        text = tokenizer.decode(new, skip_special_tokens=True)
        kind = record["meta"]["kind"]
        hit = answers_match(text, record["response"])
        problems[kind] += 1
        correct[kind] += hit
        if len(scores.examples) < n_examples:
            scores.examples.append({"instruction": record["instruction"], "expected": final_answer(record["response"]),
                                    "generated": text, "correct": hit})
    scores.problems, scores.correct = sum(problems.values()), sum(correct.values())
    scores.per_kind = {k: {"problems": problems[k], "correct": correct[k], "accuracy": correct[k] / problems[k]}
                       for k in sorted(problems)}
    return scores
