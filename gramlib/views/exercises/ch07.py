"""Self-checks for the exercises of Chapter 7 (predicting the test loss)."""

from __future__ import annotations

import numpy as np

from . import call_answer, call_each, compare, not_answered
from ...mathematics import effective_gram


def _problems():
    """Small Gram matrices (one and two outputs) with residual vectors (read as ``r0`` or as ``ρ``)."""
    rng = np.random.default_rng(707)
    out = []
    for n, c, p in ((6, 1, 20), (8, 1, 5), (5, 2, 30)):
        j = rng.normal(size=(n * c, p)) / np.sqrt(p)
        out.append((j @ j.T, rng.normal(size=n * c), c))
    return out


def check_perturbation_factor(my_perturbation_factor) -> bool:
    """Check ``my_perturbation_factor(theta, rho, outputs)`` = ``(1/n²) Σ_i ρ_iᵀ Θ_ii ρ_i``.

    The perturbation factor at the twins: ``Θ_ii`` is the ``C×C`` diagonal block of
    sample ``i`` and ``ρ_i`` its leave-one-out residual (the twin's residual at the
    sample it never saw). The reference is an explicit loop over samples.
    """
    if not_answered(my_perturbation_factor):
        return False
    problems = _problems()
    got = call_each(my_perturbation_factor, "my_perturbation_factor", problems)
    if got is None:
        return False
    want = [sum(rho[i * c:(i + 1) * c] @ theta[i * c:(i + 1) * c, i * c:(i + 1) * c] @ rho[i * c:(i + 1) * c]
                for i in range(len(rho) // c)) / (len(rho) // c) ** 2 for theta, rho, c in problems]
    return compare(got, want, "perturbation factor ε̄", rtol=1e-8, atol=1e-12,
                   hint="Only the C×C diagonal blocks Θ_ii enter (the squared gradient ‖J_iᵀ ρ_i‖² of the "
                        "sample each twin never saw); no −Θ/n term; divide the sum by n².")


def check_gcv(my_gcv) -> bool:
    """Check ``my_gcv(theta, r0, steps, lr)`` = ``(1/2n)‖r_k‖² / (tr(I − S_k)/N)²`` for one output."""
    if not_answered(my_gcv):
        return False
    cases = [(theta, r0, steps, lr) for (theta, r0, _), (steps, lr) in zip(_problems()[:2], ((7, 1.0), (30, 0.5)))]
    got = call_each(my_gcv, "my_gcv", cases)
    if got is None:
        return False
    want = []
    for theta, r0, steps, lr in cases:
        n = len(r0)
        m = np.linalg.matrix_power(np.eye(n) - lr / n * theta, steps)
        want.append(0.5 * (m @ r0) @ (m @ r0) / n / (np.trace(m) / n) ** 2)
    return compare(got, want, "GCV", rtol=1e-8, atol=1e-12,
                   hint="I − S_k = (I − (η/n)Θ)^k; its trace over N replaces each 1 − [S_k]_ii.")


def _twin_problem():
    """A made-up run: Jacobians ``J_0 … J_T`` that rotate step by step, residuals ``r_0 … r_T``, a step size."""
    rng = np.random.default_rng(717)
    n, p, steps = 6, 9, 8
    base, drift = rng.normal(size=(n, p)) / np.sqrt(p), rng.normal(size=(n, p)) / np.sqrt(p)
    jacobians = [base + 0.15 * t * drift for t in range(steps + 1)]
    return jacobians, rng.normal(size=(steps + 1, n)), 0.8


def check_linearized_twins(my_linearized_twins) -> bool:
    """Check ``my_linearized_twins(jacobians, residuals, lr)`` against the two-time recursion.

    ``jacobians``: ``J_0, …, J_T`` ``(n, P)``; ``residuals`` ``(T + 1, n)``.
    Expected: ``ρ_i = r_i(T) + J_i(T) δ^{(i)}_T`` with
    ``δ_{t+1} = δ_t − (lr/n) J_tᵀ (P_{−i} J_t δ_t − e_i r_i(t))``, computed here in
    function space by :func:`gramlib.effective_gram.loo_trajectory` with
    ``cross(k, l) = J_k J_lᵀ`` (one snapshot per step).
    """

    if not_answered(my_linearized_twins):
        return False
    jacobians, residuals, lr = _twin_problem()
    value = call_answer(my_linearized_twins, "my_linearized_twins", [j.copy() for j in jacobians],
                        residuals.copy(), lr)
    if value is None:
        return False
    thetas = np.stack([j @ j.T for j in jacobians[:-1]])
    want = np.asarray(effective_gram.loo_trajectory(thetas, residuals, lr,
                                                    cross=lambda k, l: jacobians[k] @ jacobians[l].T).rho)
    return compare(value, want, "leave-one-out residuals ρ_i", rtol=1e-8, atol=1e-12,
                   labels=[f"ρ_{i}" for i in range(len(want))],
                   hint="One δ per sample i, all starting at 0. At step t the force is −(lr/n)·(J_t δ with "
                        "row i set to 0, minus r_i(t) in row i); δ grows by J_tᵀ times the force. Read the "
                        "twin out with the LAST Jacobian: ρ_i = r_i(T) + (J_T δ)_i.")
