"""pygpt as an lm-evaluation-harness model type: `lm_eval --model pygpt --model_args pretrained=DIR_OR_REPO`.

`FlaxPyGPTLM` runs the Flax model. It takes the `hf` backend's model arguments where they make sense
(`pretrained`, `revision`, `batch_size`, `max_length`, `add_bos_token`, `max_gen_toks`, `trust_remote_code`)
and tokenizes exactly as `hf` does (`tokenizer.encode`, the same bos rules), so the two backends give the
same per-request log-likelihoods on the same checkpoint (the PyTorch twin under `hf`).

- `loglikelihood`: each (context, continuation) is one row `(context + continuation)[-(max_length + 1):]`
  whose last len(continuation) targets count (scoring.py), as in `hf`.
- `loglikelihood_rolling`: the harness's rolling windows (windows.harness_rolling_rows), every token once.
- `generate_until`: greedy `generate` under `jax.jit`, contexts left-padded to a bucket length and batches
  padded to `batch_size` rows, so it compiles once per (bucket, max_gen_toks); the text is cut at the first
  stop sequence.
Rows are batched longest first and padded to a few fixed shapes; a request's score never depends on its
batch. Registered with the harness's registry when `pygpt_hf` is imported (pygpt_hf.evaluation).
"""

from __future__ import annotations

import logging

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm import tqdm

from .loading import EvaluationError, load_config_and_tokenizer, load_weights
from .scoring import score_rows
from .windows import harness_rolling_rows

logger = logging.getLogger(__name__)


def _as_bool(name: str, value) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise EvaluationError(f"pygpt model argument {name} must be True or False, got {value!r}")


def _as_int(name: str, value, minimum: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise EvaluationError(f"pygpt model argument {name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise EvaluationError(f"pygpt model argument {name} must be at least {minimum}, got {number}")
    return number


class FlaxPyGPTLM(TemplateLM):
    """lm-eval model type `pygpt`: a pygpt checkpoint (folder or Hub repo) in Flax."""

    def __init__(self, pretrained: str, revision: str | None = None, batch_size: int | str = 1,
                 max_length: int | None = None, add_bos_token: bool | None = None, max_gen_toks: int = 256,
                 trust_remote_code: bool | None = None, device: str | None = None,
                 max_batch_size: int | None = None, **unknown):
        super().__init__()
        if unknown:
            raise EvaluationError(f"pygpt model arguments not understood: {', '.join(sorted(unknown))} (known: "
                                  "pretrained, revision, batch_size, max_length, add_bos_token, max_gen_toks, "
                                  "trust_remote_code, device)")
        if str(batch_size).startswith("auto"):
            raise EvaluationError("pygpt: batch_size=auto is not supported; give a number, e.g. batch_size=16")
        if device not in (None, "cpu", "cuda", "gpu", "tpu") and not str(device).startswith("cuda"):
            raise EvaluationError(f"pygpt: device {device!r} is not one JAX knows (cpu, gpu/cuda, tpu)")
        if device is not None:
            import jax

            wanted = "gpu" if str(device).startswith(("cuda", "gpu")) else device
            if jax.default_backend() != wanted:
                logger.warning("pygpt: device=%s asked, but JAX runs on its default backend, %s",
                               device, jax.default_backend())
        self.batch_size_per_gpu = _as_int("batch_size", batch_size)
        self.add_bos_token = _as_bool("add_bos_token", add_bos_token)
        self._max_gen_toks = _as_int("max_gen_toks", max_gen_toks)
        tokenizer_kwargs = {} if self.add_bos_token is None else {"add_bos_token": self.add_bos_token}
        location, self.config, self.tokenizer = load_config_and_tokenizer(pretrained, revision, **tokenizer_kwargs)
        n_positions = self.config.n_positions
        self._max_length = n_positions if max_length is None else _as_int("max_length", max_length)
        if self._max_length > n_positions:
            raise EvaluationError(f"pygpt: max_length={self._max_length} is more than the model's context "
                                  f"(n_positions = {n_positions})")
        self.model = load_weights(location, revision, "flax")
        self.pretrained, self.revision = pretrained, revision
        self._forward = None
        self._generator = None

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> FlaxPyGPTLM:
        """`--model_args` win over the command line's defaults (`lm_eval` always passes `--batch_size`, default 1),
        so `--model_args pretrained=DIR,batch_size=16` works as written."""
        extra = {}
        for key, value in (additional_config or {}).items():
            if value is None:
                continue
            if key in arg_dict:
                if str(arg_dict[key]) != str(value):
                    logger.warning("pygpt: %s=%s from --model_args wins over %s=%s", key, arg_dict[key], key, value)
                continue
            extra[key] = value
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> FlaxPyGPTLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ---- what the harness asks of a model ------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs) -> list[int]:
        """As `hf` encodes: the tokenizer's own special-token rules unless add_bos_token says otherwise."""
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        ids = self.tokenizer.encode(string, **special)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ---- scoring ---------------------------------------------------------------------------------------
    def _score(self, rows, desc: str, disable_tqdm: bool):
        if self._forward is None:
            from .flax_backend import make_flax_forward

            self._forward = make_flax_forward(self.model)
        with tqdm(total=sum(n for _, n in rows), desc=desc, unit="tok", disable=disable_tqdm) as bar:
            return score_rows(rows, self._forward, self.batch_size, self.max_length, progress=bar.update)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        rows = []
        for _, context_enc, continuation_enc in requests:
            if not continuation_enc:
                raise EvaluationError("pygpt: a loglikelihood request has an empty continuation")
            if len(continuation_enc) > self.max_length:
                raise EvaluationError(f"pygpt: a continuation of {len(continuation_enc)} tokens is longer than "
                                      f"max_length={self.max_length}, so it cannot be scored")
            tokens = (context_enc + continuation_enc)[-(self.max_length + 1):]  # the context is cut on the left
            rows.append((tokens, len(continuation_enc)))
        scores = self._score(rows, "pygpt loglikelihood", disable_tqdm)
        results = []
        for (cache_key, _, _), score in zip(requests, scores, strict=True):
            answer = (score.logprob, score.is_greedy)
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, answer)
            results.append(answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        rows, owner = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            windows = harness_rolling_rows(self.tok_encode(string), self.prefix_token_id, self.max_length)
            rows.extend(windows)
            owner.extend([index] * len(windows))
        scores = self._score(rows, "pygpt loglikelihood_rolling", disable_tqdm)
        totals = [0.0] * len(requests)
        for index, score in zip(owner, scores, strict=True):
            totals[index] += score.logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation ------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from .generation import GreedyGenerator

        if self._generator is None:
            self._generator = GreedyGenerator(self.model, self.eot_token_id, self.tokenizer.pad_token_id,
                                              self.batch_size)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}  # one group per set of generation arguments
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        bar = tqdm(total=len(requests), desc="pygpt generate_until", disable=disable_tqdm)
        for members in groups.values():
            kwargs = normalize_gen_kwargs(requests[members[0]].args[1], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_new = kwargs.pop("max_gen_toks")
            if kwargs.pop("do_sample", False) or kwargs.pop("temperature", 0.0):
                raise EvaluationError("pygpt: generate_until supports greedy decoding only (do_sample=False)")
            if kwargs:
                raise EvaluationError(f"pygpt: generation arguments not supported: {', '.join(sorted(kwargs))}")
            max_context = self.max_length - max_new
            if max_context < 1:
                raise EvaluationError(f"pygpt: max_gen_toks={max_new} leaves no room for a prompt in "
                                      f"max_length={self.max_length}")
            prompts = [self.tok_encode(requests[i].args[0]) for i in members]
            outputs = self._generator.generate(prompts, max_new, max_context, progress=bar.update)
            for i, new in zip(members, outputs, strict=True):
                text = postprocess_generated_text(self.tok_decode(new), until, None)
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        bar.close()
        return results  # type: ignore[return-value]
