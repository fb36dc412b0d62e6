"""The speed work on the attention/MLP internals must not change the numbers: on a fixed batch (with left
padding), today's loss and gradients equal, to f32 rounding, those saved before the rewrite
(tests/data/step_reference.npz, written by tests/make_step_reference.py at commit 93defc0)."""

import numpy as np
import pytest
from make_step_reference import CASES, OUT, loss_and_grads


@pytest.fixture(scope="module")
def reference():
    with np.load(OUT, allow_pickle=False) as saved:
        return dict(saved)


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_match_the_saved_reference(case, reference):
    loss, grads, params = loss_and_grads(CASES[case])
    for name, value in params.items():  # the same starting point: init is unchanged
        np.testing.assert_array_equal(value, reference[f"{case}:param:{name}"], err_msg=name)
    assert loss == pytest.approx(float(reference[f"{case}:loss"]), rel=1e-6)
    expected = {k.split(":", 2)[2]: v for k, v in reference.items() if k.startswith(f"{case}:grad:")}
    assert sorted(grads) == sorted(expected)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, expected[name], rtol=2e-5, atol=1e-7, err_msg=name)
