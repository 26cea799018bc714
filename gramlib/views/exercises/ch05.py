"""Self-checks for the exercises of Chapter 5 (the effective Gram matrix)."""

from __future__ import annotations

import numpy as np

from . import call_answer, compare, compare_call, not_answered
from ...mathematics.effective_gram import effective_gram, loo_residuals


def _kernel_problem(n=9, p=14, key=5):
    rng = np.random.default_rng(key)
    jac = rng.standard_normal((n, p)) / np.sqrt(p)
    return jac @ jac.T, rng.standard_normal(n)


def check_loo_limit(my_limit) -> bool:
    """Check ``my_limit(theta, r0) -> ρ(∞)``, the LOO residuals of interpolating kernel regression."""
    if not_answered(my_limit):
        return False

    theta, r0 = _kernel_problem()
    return compare_call(my_limit, "my_limit", (theta, r0), loo_residuals(theta, r0, np.inf), "ρ(∞)",
                        rtol=1e-7, atol=1e-10, hint="ρ_i(∞) = [Θ⁻¹ r0]_i / [Θ⁻¹]_ii.")


def check_loo_descent(my_loo) -> bool:
    """Check ``my_loo(theta, r0, lr, steps) -> ρ`` (gradient descent twins, loss weight 1/n)."""
    if not_answered(my_loo):
        return False

    theta, r0 = _kernel_problem(n=7, key=6)
    cases = [(0.5, 1), (1.0, 25), (2.0, 60)]
    ok = True
    for lr, steps in cases:
        got = call_answer(my_loo, "my_loo", theta, r0, lr, steps)
        if got is None:
            return False
        ok &= compare(got, loo_residuals(theta, r0, steps, lr=lr), f"ρ after {steps} steps at lr={lr}",
                      rtol=1e-8, atol=1e-10,
                      hint="Twin i: r ← r − (lr/n) Θ P_{−i} r with P_{−i} zeroing entry i; n = len(r0), "
                           "not n − 1; read off entry i at the end.")
    return bool(ok)


def check_effective_gram_infinity(my_k) -> bool:
    """Check ``my_k(theta) -> K_n(∞) = (1/2n) Θ⁻¹ D⁻² Θ⁻¹``, ``D = Diag(diag Θ⁻¹)``."""
    if not_answered(my_k):
        return False

    theta, _ = _kernel_problem(n=6, p=10, key=7)
    return compare_call(my_k, "my_k", (theta,), effective_gram(theta, np.inf), "K_n(∞)", rtol=1e-7, atol=1e-12,
                        hint="ρ(∞) = D⁻¹ Θ⁻¹ r0 and r(∞) = 0, so the gap is (1/2n)‖D⁻¹Θ⁻¹r0‖².")
