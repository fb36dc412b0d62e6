"""Which tokens each context window scores, so that every token is predicted exactly once.

A document's ids are `T = [<|endoftext|>] + ids(document)`; token T[i] (i >= 1) is predicted from T[:i].
A model sees at most `window` tokens at once, so a long document is read in windows that start every
`stride` tokens (transformers' perplexity guide):

    window k = T[k*stride : k*stride + window]        scores only the tokens no earlier window scored
    (the last window is moved back to end at the document's end, so its tokens get all the context that fits)

    window 8, stride 4:   T0 T1 T2 T3 T4 T5 T6 T7                      scores T1..T7 (context: what precedes)
                                      T4 T5 T6 T7 T8 T9 T10 T11        scores T8..T11, each with >= 4 tokens of context
                                               T6 T7 T8 T9 T10 T11 T12 T13  the last: scores T12, T13

A small stride gives every token more context and costs more windows; `stride = window - 1` overlaps the
windows by one token (each window's first token is only context), the cheapest plan that still scores
every token, and the plan lm-evaluation-harness's `loglikelihood_rolling` uses with `max_length = window - 1`
(see `harness_rolling_rows`). A stride of `window` or more would leave tokens unscored: refused.

A window is handed to the scorer as a *row*: `(tokens, n_scored)`, where the inputs are tokens[:-1], the
targets tokens[1:], and only the last `n_scored` targets count. lm-eval's (context, continuation) requests
are rows too, so one scorer serves both.
"""

from __future__ import annotations

Row = tuple[list[int], int]  # (tokens, how many of the last targets count)


def check_stride(stride: int, window: int) -> None:
    """Refuse a stride that would skip tokens (>= window) or never advance (< 1), naming the limit."""
    if not isinstance(stride, int) or isinstance(stride, bool) or not 1 <= stride <= window - 1:
        raise ValueError(f"--stride must be between 1 and n_positions - 1 = {window - 1} (a stride of n_positions "
                         f"or more would leave tokens unscored), got {stride!r}")


def sliding_windows(tokens: list[int], window: int, stride: int) -> list[Row]:
    """The rows that score tokens[1:] exactly once, in windows of `window` tokens starting every `stride`."""
    check_stride(stride, window)
    rows: list[Row] = []
    scored_until = 1  # tokens[:scored_until] are context or already scored
    begin = 0
    while scored_until < len(tokens):
        start = max(0, min(begin, len(tokens) - window))  # the last window ends at the end: more context, same cost
        end = min(start + window, len(tokens))
        rows.append((tokens[start:end], end - scored_until))
        scored_until = end
        begin += stride
    return rows


def harness_rolling_rows(tokens: list[int], prefix_token: int, max_length: int) -> list[Row]:
    """lm-eval's `loglikelihood_rolling` windows for `tokens` (the document, without a prefix), as rows.

    The harness predicts every token of the document once, in disjoint chunks of up to `max_length` predictions;
    the first chunk is conditioned on `prefix_token`, each later one on the last token of the previous chunk, and
    the last, shorter chunk on as many tokens before it as fit
    (`lm_eval.utils.get_rolling_token_windows(..., context_len=1)` + `make_disjoint_window`). That is exactly
    `sliding_windows([prefix_token] + tokens, window=max_length + 1, stride=max_length)`, which is how both
    figures agree when `evaluate.py --stride n_positions-1` meets the harness's `max_length=n_positions-1`.
    """
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    rows: list[Row] = []
    for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
            token_list=tokens, prefix_token=prefix_token, max_seq_len=max_length, context_len=1)):
        rows.append((context + continuation, len(continuation)))
    return rows
