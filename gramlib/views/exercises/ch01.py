"""Self-checks for the exercises of Chapter 1 (the generalization gap)."""

from __future__ import annotations

import numpy as np

from . import call_answer, compare, not_answered
from ...mathematics import gap

#: (n, steps k, learning rate η) at which an answer is checked: small and large n,
#: early and late training, a step size with ηn_j/n > 1 (oscillating residuals).
CASES = [(2, 1, 0.5), (5, 10, 1.0), (8, 40, 0.3), (16, 100, 1.5), (40, 7, 0.9)]


def check_two_point_gd_gap(answer) -> bool:
    """Check ``answer(n, steps, lr)``: the exact expected gap of the two-point example
    (targets ``y_1 = y_2 = 1``, ``w0 = 0``) after ``steps`` steps of gradient descent."""
    if not_answered(answer):
        return False
    got = []
    for n, k, lr in CASES:
        value = call_answer(answer, f"answer({n}, {k}, {lr})", n, k, lr)
        if value is None:
            return False
        got.append(float(value))
    want = np.array([gap.two_point_gap(n, k, lr=lr) for n, k, lr in CASES])
    return compare(
        np.array(got), want, "two-point gap under gradient descent", rtol=1e-8, atol=1e-14,
        labels=[f"(n={n}, k={k}, η={lr})" for n, k, lr in CASES],
        hint="Average ½y_j²(1 − ηn_j/n)^{2k}(½ − n_j/n) over n_j ~ Binomial(n, ½), summed over both points.",
    )
