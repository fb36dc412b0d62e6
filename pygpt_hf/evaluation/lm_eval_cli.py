"""`pygpt-lm-eval` (or `python -m pygpt_hf.evaluation.lm_eval_cli`): the harness's own `lm_eval` command line,
with pygpt registered first.

lm-eval 0.4.x finds model types only in its registry and loads no plugins (no entry-point group), so a bare
`lm_eval --model pygpt` knows pygpt only in a Python process that imported `pygpt_hf`. This command is
`lm_eval` with that import done; every argument is the harness's:

    pygpt-lm-eval --model pygpt --model_args pretrained=runs/pygpt,batch_size=16 --tasks wikitext
"""

from __future__ import annotations

import warnings


def main() -> None:
    warnings.filterwarnings("ignore", message="TensorFlow and JAX classes are deprecated")  # transformers 4.57
    from lm_eval.__main__ import cli_evaluate

    import pygpt_hf  # noqa: F401  registers the model type "pygpt"

    cli_evaluate()


if __name__ == "__main__":
    main()
