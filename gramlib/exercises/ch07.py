"""Self-checks for the exercises of Chapter 7 (predicting the test loss)."""

from __future__ import annotations

import numpy as np

from . import call_answer, compare, not_answered


def _problems():
    """Small Gram matrices (one and two outputs) with residuals, steps and step sizes."""
    rng = np.random.default_rng(707)
    out = []
    for n, c, p in ((6, 1, 20), (8, 1, 5), (5, 2, 30)):
        j = rng.normal(size=(n * c, p)) / np.sqrt(p)
        out.append((j @ j.T, rng.normal(size=n * c), c))
    return out


def check_perturbation_factor(my_perturbation_factor) -> bool:
    """Check ``my_perturbation_factor(theta, r, outputs)`` = ``(1/n²) rᵀ (Bdiag Θ − Θ/n) r``."""
    if not_answered(my_perturbation_factor):
        return False
    got, want = [], []
    for theta, r, c in _problems():
        value = call_answer(my_perturbation_factor, "my_perturbation_factor", theta, r, c)
        if value is None:
            return False
        n = len(r) // c
        blocks = np.kron(np.eye(n), np.ones((c, c))) * theta
        got.append(value)
        want.append(r @ (blocks - theta / n) @ r / n**2)
    return compare(got, want, "perturbation factor ε(r)", rtol=1e-8, atol=1e-12,
                   hint="Keep only the C×C diagonal blocks of Θ for the first term (the per-sample "
                        "squared gradient norms), subtract Θ/n, and divide the quadratic form by n².")


def check_gcv(my_gcv) -> bool:
    """Check ``my_gcv(theta, r0, steps, lr)`` = ``(1/2n)‖r_k‖² / (tr(I − S_k)/N)²`` for one output."""
    if not_answered(my_gcv):
        return False
    got, want = [], []
    for (theta, r0, c), (steps, lr) in zip(_problems()[:2], ((7, 1.0), (30, 0.5))):
        value = call_answer(my_gcv, "my_gcv", theta, r0, steps, lr)
        if value is None:
            return False
        n = len(r0)
        m = np.linalg.matrix_power(np.eye(n) - lr / n * theta, steps)
        r = m @ r0
        got.append(value)
        want.append(0.5 * (r @ r) / n / (np.trace(m) / n) ** 2)
    return compare(got, want, "GCV", rtol=1e-8, atol=1e-12,
                   hint="I − S_k = (I − (η/n)Θ)^k; its trace over N replaces each 1 − [S_k]_ii.")
