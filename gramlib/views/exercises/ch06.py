"""Self-checks for the exercises of Chapter 6 (alignment and benign training)."""

from __future__ import annotations

import numpy as np

from . import FAIL, call_answer, call_each, compare, not_answered


def _problems():
    """Small symmetric matrices (one indefinite, eigenvalues unsorted) with residuals and ``k``."""
    rng = np.random.default_rng(606)
    out = []
    for n, k, shift in ((6, 2, 0.0), (9, 4, -0.3), (12, 1, 0.0)):
        q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        lam = rng.permutation(np.exp(rng.normal(size=n))) + shift
        out.append(((q * lam) @ q.T, rng.normal(size=n), k))
    return out


def check_bottom_share(my_bottom_share) -> bool:
    """Check ``my_bottom_share(k_matrix, r, k)`` = share of ``‖r‖²`` in the ``k`` eigenvectors of smallest eigenvalue."""
    if not_answered(my_bottom_share):
        return False
    problems = _problems()
    got = call_each(my_bottom_share, "my_bottom_share", problems)
    if got is None:
        return False
    want = [np.sum((np.linalg.eigh(k_matrix)[1][:, :k].T @ r) ** 2) / (r @ r) for k_matrix, r, k in problems]
    return compare(got, want, "bottom-k share of ‖r‖²", rtol=1e-8, atol=1e-10,
                   hint="Sort eigenvalues ascending (np.linalg.eigh does), project r on the first k "
                        "eigenvectors, and divide the squared norm of the projection by ‖r‖².")


def check_random_gap(my_random_gap) -> bool:
    """Check ``my_random_gap(k_matrix, norm)`` = ``E uᵀKu`` for ``u`` of norm ``norm`` in a uniformly random direction."""
    if not_answered(my_random_gap):
        return False
    cases = [(k_matrix, norm) for (k_matrix, _, _), norm in zip(_problems(), (1.0, 2.5, 0.3))]
    got = call_each(my_random_gap, "my_random_gap", cases)
    if got is None:
        return False
    want = [norm**2 * np.trace(k_matrix) / k_matrix.shape[0] for k_matrix, norm in cases]
    return compare(got, want, "random-direction gap E uᵀKu", rtol=1e-8, atol=1e-12,
                   hint="E[u uᵀ] = (‖u‖²/N) I for a uniformly random direction; take the expectation of uᵀKu = tr(K u uᵀ).")


def check_gap_bounds(my_gap_bounds) -> bool:
    """Check ``my_gap_bounds(eigenvalues, share, k, norm) -> (lower, upper)`` for ``r0ᵀ K r0``.

    ``eigenvalues`` ascending ``λ_1 ≤ … ≤ λ_N``; a fraction ``share`` of
    ``‖r0‖² = norm²`` lies in the span of the first ``k`` eigenvectors. The
    sharp bounds are ``norm² (share λ_1 + (1 − share) λ_{k+1})`` and
    ``norm² (share λ_k + (1 − share) λ_N)``.
    """
    if not_answered(my_gap_bounds):
        return False
    got, want = [], []
    for (k_matrix, r, k), share in zip(_problems(), (0.9, 0.5, 0.99)):
        lam = np.linalg.eigvalsh(k_matrix)
        norm = float(np.linalg.norm(r))
        value = call_answer(my_gap_bounds, "my_gap_bounds", lam, share, k, norm)
        if value is None:
            return False
        if value.shape != (2,):
            print(f"{FAIL} my_gap_bounds must return (lower, upper), got shape {value.shape}.")
            return False
        got.append(value)
        want.append([norm**2 * (share * lam[0] + (1 - share) * lam[k]),
                     norm**2 * (share * lam[k - 1] + (1 - share) * lam[-1])])
    return compare(got, want, "bounds (lower, upper) on r0ᵀKr0", rtol=1e-8, atol=1e-12,
                   labels=["problem 1", "problem 2", "problem 3"],
                   hint="Inside the bottom-b eigenspace (b = k) the Rayleigh quotient lies in [μ_1, μ_b]; "
                        "outside it, in [μ_{b+1}, μ_N] (Python index k is μ_{b+1}).")
