"""The effective Gram matrix ``K_n(t)`` (Chapter 5).

Kernel training with a constant Gram matrix ``Θ`` (``N×N``, ``N = nC``, rows ordered
(sample, output)) moves the residual as ``ṙ = −(1/n) Θ r``; its leave-one-out residuals
``ρ(t) = R_t r0`` (:mod:`gramlib.leave_one_out`) are linear in ``r0``, so the predicted gap
``(1/2n) Σ_i (‖ρ_i‖² − ‖r_i‖²)`` is the quadratic form ``r0ᵀ K_n(t) r0`` with the effective
Gram matrix ``K_n(t) = (1/2n) (R_tᵀ R_t − e^{−2Θt/n})``.

This module is also where the book calls the leave-one-out machinery from: the residuals
(:mod:`gramlib.leave_one_out`), the gap equation of ``K_n`` (:mod:`gramlib.linearized_gap`)
and the twins of a real run (:mod:`gramlib.trajectory`) are re-exported here under the names
the chapters use (``effective_gram.loo_residuals``, ``effective_gram.gap_factors``,
``effective_gram.loo_trajectory``, …).

The module is callable: ``gramlib.effective_gram(theta, t)`` calls :func:`effective_gram`, so
that the top-level name is both this module (as the chapters import it) and the function of
the curated API (see :mod:`gramlib`).
"""

from __future__ import annotations

from functools import partial
import sys
import types

import jax
import jax.numpy as jnp

from .. import _checks
from .kernel_flow import decay, kernel_problem, kernel_residuals
from .leave_one_out import first_order_loo_residuals, loo_residuals  # noqa: F401
from .linearized_gap import (gap_factor_matrices, gap_factors, in_sample_covariance,  # noqa: F401
                             LinearizedGapFactors, perturbation_factor)
from .trajectory import loo_trajectory  # noqa: F401


@_checks.public
def effective_gram(theta, t, *, outputs=None, lr=None):
    """The effective Gram matrix ``K_n(t) = (1/2n) (R_tᵀ R_t − S_t²)`` (Chapter 5).

    ``R_t`` is the linear map ``r0 ↦ ρ(t)`` of :func:`gramlib.leave_one_out.loo_residuals` and
    ``S_t = e^{−Θt/n}`` (flow) or ``(I − (lr/n) Θ)^t`` (descent) the map
    ``r0 ↦ r(t)``, so that ``r0ᵀ K_n(t) r0 = (1/2n) Σ_i (‖ρ_i(t)‖² − ‖r_i(t)‖²)``
    for every ``r0``. ``K_n(0) = 0``; for invertible ``Θ``,
    ``K_n(∞) = (1/2n) Θ⁻¹ D⁻² Θ⁻¹`` with ``D = Diag(diag Θ⁻¹)`` (one output).
    ``theta`` may be a :class:`gramlib.kernel_flow.Factorization`.
    Returns ``(N, N)`` symmetric, or ``(len(t), N, N)`` for an array ``t``, in the float
    dtype of ``theta``. Works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` in ``theta``
    and ``lr``; ``t`` and ``outputs`` are static (close over them).
    """
    fact, _, times, scalar, lr = kernel_problem(theta, None, t, outputs, lr)
    dtype = fact.theta.dtype
    loo_map = loo_residuals(fact, jnp.eye(fact.theta.shape[0], dtype=dtype), times, lr=lr)  # R_t
    k = _gram_from_maps(loo_map, fact.eigenvalues, fact.eigenvectors, jnp.asarray(times, dtype), fact.n, lr, fact.tol)
    k = jnp.triu(k) + jnp.swapaxes(jnp.triu(k, 1), 1, 2)  # bitwise symmetric (XLA may not be)
    return k[0] if scalar else k


@partial(jax.jit, static_argnames=("n",))
def _gram_from_maps(loo_map, lam, u, t, n, lr, tol):
    """``(1/2n)(R_tᵀ R_t − S_t²)``, symmetrized; ``S_0 = I`` exactly so that ``K_n(0) = 0``."""
    s2 = jnp.einsum("ik,tk,jk->tij", u, decay(lam, t, n, lr, tol) ** 2, u)
    s2 = jnp.where((t == 0)[:, None, None], jnp.eye(u.shape[0], dtype=u.dtype), s2)
    k = (jnp.einsum("tji,tjk->tik", loo_map, loo_map) - s2) / (2 * n)
    return (k + jnp.swapaxes(k, 1, 2)) / 2


@_checks.public
def predicted_gap(theta, r0, t, *, outputs=None, lr=None):
    """``(1/2n) Σ_i (‖ρ_i(t)‖² − ‖r_i(t)‖²)``, the LOO-predicted gap of kernel training (Chapter 5).

    ``theta`` a matrix or a :class:`gramlib.kernel_flow.Factorization`; shapes as
    :func:`gramlib.leave_one_out.loo_residuals` (one ``r0``), dtype and transformations as
    :func:`effective_gram` (also in ``r0``).
    """
    fact, r0, times, scalar, lr = kernel_problem(theta, r0, t, outputs, lr)
    rho = loo_residuals(fact, r0, times, lr=lr)
    r = kernel_residuals(fact, r0, times, lr=lr)
    gap = (jnp.sum(rho**2, axis=1) - jnp.sum(r**2, axis=1)) / (2 * fact.n)
    return gap[0] if scalar else gap


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`effective_gram` (the one name that is both a module and a function)."""

    def __call__(self, theta, t, *, outputs=None, lr=None):
        return effective_gram(theta, t, outputs=outputs, lr=lr)


sys.modules[__name__].__class__ = _CallableModule
