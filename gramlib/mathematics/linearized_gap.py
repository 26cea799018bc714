"""The gap equation of a linearized network: ``K_n`` and its two factors (Chapters 3–5).

For kernel training with a constant Gram matrix ``Θ`` the leave-one-out gap is the quadratic
form ``r0ᵀ K_n(t) r0`` (:func:`gramlib.effective_gram.effective_gram`). Differentiating it
along the run gives Chapter 3's gap equation exactly, ``dK_n/dt = −C_n + P_n``: the
contraction ``C_n`` (the twins' pull towards the run) and the perturbation ``P_n`` (the
squared gradient of the sample each twin never saw). This module computes the factors
(:func:`gap_factors`, :func:`gap_factor_matrices`), the perturbation factor at the twins of
any run (:func:`perturbation_factor`) and the in-sample gradient covariance it is often
confused with (:func:`in_sample_covariance`). The functions that train accept a
:class:`gramlib.kernel_flow.Factorization` in place of ``Θ``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from .. import _checks
from .leave_one_out import loo_rates, loo_residuals
from .kernel_flow import kernel_problem, kernel_residuals, own_blocks


def _kernel_and_rows(theta, v, outputs, name):
    """Validated ``(Θ, v, n)`` for a quadratic form in ``v`` ``(..., N)``, in a common float dtype."""
    th = _checks.square_symmetric(theta, "theta")
    outputs = _checks.integer(outputs, "outputs", minimum=1)
    if th.shape[0] % outputs:
        raise ValueError(f"outputs={outputs} must divide the size of theta ({th.shape[0]} rows)")
    va = _checks.array(v, name)
    if va.ndim == 0 or va.shape[-1] != th.shape[0]:
        raise ValueError(f"{name} must have shape (..., {th.shape[0]}) (one entry per row of theta), got {va.shape}")
    dtype = jnp.result_type(float, th.dtype, va.dtype)
    # from the arguments themselves: a JAX array of this dtype stays the same object, whose values are checked once
    return jnp.asarray(theta, dtype), jnp.asarray(v, dtype), th.shape[0] // outputs


@_checks.public
def perturbation_factor(theta, rho, *, outputs=1):
    """The perturbation factor at the twins, ``ε̄ = (1/n²) Σ_i ρ_iᵀ Θ_ii ρ_i`` (Chapters 3–5).

    Chapter 3's perturbation of the leave-one-out twin of sample ``i`` is
    ``(1/n) ‖∇ℓ(v_i; z_i)‖²``, the squared gradient of the sample the twin never
    saw, *at the twin* ``v_i``. For a linearized network
    ``∇ℓ(v_i; z_i) = J_iᵀ ρ_i`` with the twin's own residual ``ρ_i`` there, so the
    average over ``i`` is this quadratic form in the leave-one-out residuals
    (``Θ_ii = J_i J_iᵀ`` the ``C×C`` diagonal block of sample ``i``). It does not
    decay with the training residual: an interpolating model has ``r → 0``
    but ``ρ ↛ 0``. ``rho``: ``(N,)`` or ``(..., N)`` (e.g. one row per time);
    returns a float or a NumPy ``(...)`` array in the common float dtype of ``theta`` and
    ``rho`` (a JAX array under ``jax.jit``, ``jax.vmap``, ``jax.grad``; ``outputs`` static).
    """
    th, rho, n = _kernel_and_rows(theta, rho, outputs, "rho")
    out = jnp.sum(rho * own_blocks(th, rho[..., None], outputs=outputs)[..., 0], axis=-1) / n**2
    return _checks.host(out)


@_checks.public
def in_sample_covariance(theta, r, *, outputs=1):
    """``(1/n²) rᵀ (Bdiag Θ − Θ/n) r``: the per-sample gradient covariance of the run, over ``n`` (Chapter 4).

    With per-sample gradients ``g_i = J_iᵀ r_i`` of the *main run*,
    ``(1/n) tr Cov_i[g_i] = (1/n)[(1/n) Σ_i ‖g_i‖² − ‖(1/n) Σ_i g_i‖²]`` is this
    quadratic form (``Bdiag`` keeps the ``C×C`` diagonal blocks). It is *not*
    the perturbation factor of the leave-one-out twin
    (:func:`perturbation_factor`, evaluated at the twins): it pairs the
    sample's pull with the run's residual ``r_i`` instead of the twin's
    ``ρ_i``, and decays to zero as the run interpolates. ``r``: ``(N,)`` or
    ``(..., N)``; returns a float or ``(...)``, dtype and transformations as
    :func:`perturbation_factor`.
    """
    th, r, n = _kernel_and_rows(theta, r, outputs, "r")
    own = jnp.sum(r * own_blocks(th, r[..., None], outputs=outputs)[..., 0], axis=-1)
    out = (own - jnp.einsum("...i,ij,...j->...", r, th, r) / n) / n**2
    return _checks.host(out)


class LinearizedGapFactors(NamedTuple):
    """The leave-one-out gap of a linearized network and its two factors (Chapter 5).

    ``gap = r0ᵀ K_n(t) r0``, ``contraction = r0ᵀ C_n(t) r0`` and
    ``perturbation = r0ᵀ P_n(t) r0 = ε̄(t)``, with ``d gap/dt = −contraction +
    perturbation`` (gradient flow), so that ``c̄ = contraction / gap`` and ``ε̄``
    are Chapter 3's factors. From :func:`gap_factors` (numbers, one per time)
    or :func:`gap_factor_matrices` (the ``N×N`` matrices ``K_n``, ``C_n``, ``P_n``).
    """

    gap: Any
    contraction: Any
    perturbation: Any


def _gap_terms(fact, r0, times, lr):
    """``(gap, contraction, perturbation)`` as bilinear forms in the columns of ``r0`` ``(N, m)``: ``(T, m, m)`` each.

    ``ρ``, ``r`` from one eigendecomposition (``fact``); the twins' contracted residuals
    ``[Θ r^{(i)}]_i = Θ_ii ρ_i − n ρ̇_i`` (flow: ``ρ̇`` from :func:`gramlib.effective_gram.loo_rates`)
    or ``Θ_ii ρ_i(k) − (n/η)(ρ_i(k+1) − ρ_i(k))`` (descent).
    """
    n, theta = fact.n, fact.theta
    t = jnp.asarray(times, theta.dtype)
    if lr is None:
        rho = loo_residuals(fact, r0, times)
    else:  # steps k and k + 1 in one call: the per-sample spectra of Θ without each sample are computed once
        both = loo_residuals(fact, r0, np.concatenate([times, times + 1]), lr=lr)
        rho, ahead = both[: len(times)], both[len(times):]
    r = jnp.where((t == 0)[:, None, None], r0[None], kernel_residuals(fact, r0, times, lr=lr))  # r(0) = r0 exactly
    own_rho = own_blocks(fact, rho)
    if lr is None:
        twin_pull = own_rho - n * loo_rates(fact, r0, times)
    else:
        twin_pull = own_rho - (n / lr) * (ahead - rho)
    gram = lambda a, b: jnp.einsum("tim,tik->tmk", a, b)  # noqa: E731
    sym = lambda m: (m + jnp.swapaxes(m, 1, 2)) / 2  # noqa: E731
    gap = sym(gram(rho, rho) - gram(r, r)) / (2 * n)
    contraction = sym(gram(rho, twin_pull) - gram(r, jnp.einsum("ij,tjm->tim", theta, r))) / n**2
    perturbation = sym(gram(rho, own_rho)) / n**2
    return gap, contraction, perturbation


@_checks.public
def gap_factors(theta, r0, t, *, outputs=None, lr=None):
    """The gap equation of a linearized network, ``d gap/dt = −contraction + perturbation`` (Chapter 5).

    For kernel training with constant ``Θ`` from the initial residual ``r0``,
    twin ``i`` (trained without sample ``i``) has residuals
    ``r^{(i)}(t) = e^{−Θ P_{−i} t/n} r0`` and leave-one-out residual ``ρ_i``; the run
    has ``r(t) = e^{−Θt/n} r0``. With ``F_i(v) = ∇ℓ(v; z_i)·∇L_S(v)`` (Chapter 3):

    * ``gap = (1/2n) Σ_i (‖ρ_i‖² − ‖r_i‖²) = r0ᵀ K_n(t) r0``;
    * ``contraction = (1/n) Σ_i [F_i(v_i) − F_i(w)]
      = (1/n²) Σ_i (ρ_iᵀ [Θ r^{(i)}]_i − r_iᵀ [Θ r]_i) = r0ᵀ C_n(t) r0``;
    * ``perturbation = (1/n²) Σ_i ρ_iᵀ Θ_ii ρ_i = r0ᵀ P_n(t) r0 = ε̄(t)``
      (:func:`perturbation_factor`).

    Then ``d gap/dt = −contraction + perturbation`` exactly, Chapter 3's equation
    with ``c̄ = contraction / gap``. With ``lr``, gradient descent for ``t = k``
    steps: the same terms at step ``k`` (``F_i`` at the start of the step), and
    ``gap(k+1) − gap(k) = lr (perturbation − contraction) + (1/2n) Σ_i
    (‖ρ_i(k+1) − ρ_i(k)‖² − ‖r_i(k+1) − r_i(k)‖²)``, an ``O(lr²)`` remainder as in
    Chapter 3. Cost: one eigendecomposition of ``Θ`` and, for the flow, two
    Talbot inversions (``ρ`` and ``ρ̇``, ``O(N²)`` per node and time); descent
    uses the exact formula of :func:`loo_residuals` at ``k`` and ``k + 1``.
    ``t``: a number or 1-D array (``inf`` allowed). Returns
    :class:`LinearizedGapFactors` of floats, or of ``(len(t),)`` NumPy arrays in the float
    dtype of ``theta``. Under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (in ``theta``,
    ``r0``, ``lr``; ``t`` and ``outputs`` static) the fields are JAX arrays.
    """
    fact, r0, times, scalar, lr = kernel_problem(theta, r0, t, outputs, lr)
    terms = _gap_terms(fact, r0[:, None], times, lr)
    return LinearizedGapFactors(*(_checks.host(term[0, 0, 0] if scalar else term[:, 0, 0]) for term in terms))


@_checks.public
def gap_factor_matrices(theta, t, *, outputs=None, lr=None):
    """The matrices of :func:`gap_factors`: ``K_n(t)``, ``C_n(t)``, ``P_n(t)`` with ``dK_n/dt = −C_n + P_n`` (Chapter 5).

    With ``R_t`` the map ``r0 ↦ ρ(t)`` and ``S_t = e^{−Θt/n}`` the map ``r0 ↦ r(t)``:
    ``P_n = (1/n²) R_tᵀ Bdiag(Θ) R_t`` (positive semidefinite) and
    ``C_n = (1/n²) [Σ_i sym(Q_iᵀ e_i e_iᵀ Θ Q_i) − S_t Θ S_t]``, ``Q_i = e^{−Θ P_{−i} t/n}``
    (the twin's residual map), computed from the columns of the identity in one
    eigendecomposition. ``K_n(T) = ∫₀ᵀ (P_n − C_n) dt``. Returns
    :class:`LinearizedGapFactors` of ``(N, N)`` or ``(len(t), N, N)`` JAX arrays in the float
    dtype of ``theta``; transformations as :func:`gap_factors`.
    """
    fact, _, times, scalar, lr = kernel_problem(theta, None, t, outputs, lr)
    terms = _gap_terms(fact, jnp.eye(fact.theta.shape[0], dtype=fact.theta.dtype), times, lr)
    return LinearizedGapFactors(*(term[0] if scalar else term for term in terms))
