"""Alignment of the residual with the effective Gram matrix (Chapter 6).

The predicted generalization gap after training for a time ``t`` is the
quadratic form ``r0ᵀ K_n(t) r0`` (Chapter 5). Writing the effective Gram
matrix in its eigenbasis, ``K_n(t) = Σ_j λ_j v_j v_jᵀ`` with
``λ_1 ≤ … ≤ λ_N``, splits the gap into eigen-components

    r0ᵀ K_n r0 = Σ_j λ_j c_j²,    c_j = v_jᵀ r0,

so the gap is small when ``‖r0‖²`` sits in the eigenvectors with small
``λ_j``. This module measures that:

* :func:`spectrum` — the eigenvalues (ascending) and eigenvectors of ``K_n``;
* :func:`cumulative_share` / :func:`bottom_share` — the share
  ``Σ_{j≤k} c_j² / ‖r‖²`` of ``‖r‖²`` in the bottom-``k`` eigenvectors;
* :func:`random_share_expected` / :func:`random_share_samples` — the same share
  for a random vector of equal norm, whose direction is uniform on the sphere:
  exactly ``k/N`` in expectation (and ``Beta(k/2, (N−k)/2)`` distributed);
* :func:`gap_components` and :func:`random_gap_expected` — the eigen-components
  of the gap, and the gap ``‖r0‖² tr(K_n)/N`` a random direction would give;
* :func:`effective_grams` and :func:`alignment_curve` — all of the above along
  a kernel-training run (``r(t)`` from :func:`gramlib.kernel_flow.kernel_residuals`,
  ``K_n(t)`` from :func:`gramlib.effective_gram.effective_gram`, computed once
  per kernel and shared by every set of labels);
* :func:`trajectory_alignment` — the shares of ``‖r0‖²`` and of the real ``‖r(t)‖²`` in the
  bottom of a real run's own effective Gram matrix ``K_traj(t)`` at its snapshot times;
* :func:`gramlib.kernel_flow.kernel_test_residuals` — the held-out residuals of the linearized
  (kernel) model, so that each alignment can be paired with a test loss.

``K_n(t)`` need not be positive semi-definite at finite ``t`` (Chapter 6 shows
an example; ``K_n(0) = 0`` and ``K_n(∞)`` are PSD): "bottom" means smallest
algebraic eigenvalue. When eigenvalues repeat, the bottom-``k`` subspace is
only defined up to a rotation inside the repeated eigenspace; the shares are
then those of the eigenvectors ``numpy``/``jax`` return.

The chapter's experiments, figures and ``reproduce`` command are in
:mod:`gramlib.experiments.ch6`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .effective_gram import effective_gram
from .kernel_flow import factorize, kernel_problem, kernel_residuals, residual_loss
from .trajectory_gram import TrajectoryGram, gram_from_eigen, snapshot_arguments, snapshot_eigen, trajectory_effective_gram

# ---------------------------------------------------------------- validation
def _gram(k_matrix, name="k_matrix"):
    a = _checks.square_symmetric(k_matrix, name)
    if a.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    return a


def _residual(r, n_dim, name="r"):
    a = _checks.array(r, name, ndim=(1, 2))
    if a.shape[-1] != n_dim:
        raise ValueError(f"{name} must have last dimension {n_dim} (the size of the Gram matrix), got shape {a.shape}")
    if _checks.concrete(a, "nonzero") and np.any(np.sqrt(np.sum(np.abs(a) ** 2, axis=-1)) == 0):
        raise ValueError(f"{name} must be nonzero: the share of ‖{name}‖² is undefined for a zero vector")
    return a


def _bottom_k(k, n_dim):
    _checks.integer(k, "k", minimum=1)
    if k > n_dim:
        raise ValueError(f"k must be at most N = {n_dim} (the size of the Gram matrix), got {k}")
    return int(k)


# ---------------------------------------------------------------- kernels
@jax.jit
def _eigh(k_matrix):
    return jnp.linalg.eigh(0.5 * (k_matrix + k_matrix.T))


@jax.jit
def _cumulative_share(eigenvectors, r):
    c2 = jnp.square(r @ eigenvectors)  # (..., N): squared coordinates c_j² in the eigenbasis
    return jnp.cumsum(c2, axis=-1) / jnp.sum(c2, axis=-1, keepdims=True)


# ---------------------------------------------------------------- public API
@_checks.public
def spectrum(k_matrix):
    """Eigenvalues ``λ_1 ≤ … ≤ λ_N`` and orthonormal eigenvectors (columns) of a symmetric matrix.

    For ``K_n(t)`` (Chapter 6) or ``Θ``. Returns ``(eigenvalues (N,), eigenvectors (N, N))``.
    """
    a = _gram(k_matrix)
    return _eigh(jnp.asarray(a))


@_checks.public
def cumulative_share(k_matrix, r):
    """The share of ``‖r‖²`` in the bottom-``k`` eigenvectors of ``k_matrix``, for every ``k = 1..N``.

    ``s_k = Σ_{j≤k} (v_jᵀ r)² / ‖r‖²`` with eigenvalues ascending, so
    ``s_N = 1``. ``r`` is ``(N,)`` or a stack ``(T, N)``; returns the same shape.
    A random direction gives ``E s_k = k/N`` (:func:`random_share_expected`).
    """
    a = _gram(k_matrix)
    r = _residual(r, a.shape[0])
    _, vecs = _eigh(jnp.asarray(a))
    return _cumulative_share(vecs, jnp.asarray(r, dtype=vecs.dtype))


@_checks.public
def bottom_share(k_matrix, r, k):
    """``Σ_{j≤k} (v_jᵀ r)² / ‖r‖²``: the fraction of ``‖r‖²`` in the ``k`` eigenvectors of smallest eigenvalue.

    Equal to ``‖P_k r‖² / ‖r‖²`` with ``P_k`` the orthogonal projection onto
    their span. Returns a scalar, or ``(T,)`` for ``r`` of shape ``(T, N)``.
    """
    a = _gram(k_matrix)
    k = _bottom_k(k, a.shape[0])
    return cumulative_share(a, r)[..., k - 1]


@_checks.public
def random_share_expected(n_dim, k):
    """``E ‖P_k u‖² / ‖u‖² = k/N`` for ``u`` uniform on the sphere and ``P_k`` any rank-``k`` projection.

    Proof: by symmetry each of the ``N`` squared coordinates of ``u/‖u‖`` in an
    orthonormal basis has the same mean, and they sum to 1. Also returns the
    exact standard deviation: the share is ``Beta(k/2, (N−k)/2)``, with variance
    ``2 (k/N)(1 − k/N) / (N + 2)``. Returns ``(mean, std)``.
    """
    n_dim = _checks.integer(n_dim, "n_dim", minimum=1)
    k = _bottom_k(k, n_dim)
    p = k / n_dim
    return p, float(np.sqrt(2.0 * p * (1.0 - p) / (n_dim + 2)))


@_checks.public
def random_share_samples(k_matrix, k, *, key, samples=1000):
    """Shares of ``‖u‖²`` in the bottom-``k`` eigenvectors of ``k_matrix`` for random ``u``.

    ``u`` has i.i.d. Gaussian entries, so its direction is uniform on the
    sphere; the share does not depend on ``‖u‖``, so this is also the share of
    a random vector of the same norm as a residual. Returns ``(samples,)``;
    their mean estimates ``k/N``.
    """
    a = _gram(k_matrix)
    k = _bottom_k(k, a.shape[0])
    samples = _checks.integer(samples, "samples", minimum=1)
    _, vecs = _eigh(jnp.asarray(a))
    u = jax.random.normal(key, (samples, a.shape[0]), vecs.dtype)
    return _cumulative_share(vecs, u)[:, k - 1]


@_checks.public
def gap_components(k_matrix, r0):
    """The eigen-components of the predicted gap ``r0ᵀ K r0 = Σ_j λ_j (v_jᵀ r0)²``.

    Returns ``(eigenvalues (N,), components (N,))`` with eigenvalues ascending
    and ``components[j] = λ_j (v_jᵀ r0)²``; their sum is the quadratic form.
    """
    a = _gram(k_matrix)
    r0 = _checks.array(r0, "r0", shape=(a.shape[0],))
    vals, vecs = _eigh(jnp.asarray(a))
    return vals, vals * jnp.square(jnp.asarray(r0, vecs.dtype) @ vecs)


@_checks.public
def random_gap_expected(k_matrix, norm):
    """``E uᵀ K u = ‖u‖² tr(K) / N`` for ``u`` of norm ``norm`` and uniformly random direction.

    The gap a residual of that norm would give if it were not aligned with
    ``K`` at all (``E u uᵀ = (‖u‖²/N) I``). Returns a Python float (a JAX scalar under
    ``jax.jit``, ``jax.vmap``, ``jax.grad``).
    """
    a = _gram(k_matrix)
    norm = _checks.positive(norm, "norm", allow_zero=True)
    if _checks.is_traced((a, norm)):
        return norm ** 2 * jnp.trace(jnp.asarray(a)) / a.shape[0]
    return norm ** 2 * float(np.trace(a)) / a.shape[0]


class AlignmentCurve(NamedTuple):
    """Alignment along a kernel-training run (leading axis: the times ``t``).

    ``eigenvalues[j]`` is the spectrum of ``K_n(t_j)`` (ascending);
    ``share_r0``/``share_rt`` are the shares of ``‖r0‖²`` and ``‖r(t)‖²`` in its
    bottom-``k`` eigenvectors; ``cumulative_r0[j]`` is the whole cumulative
    share curve of ``r0`` (:func:`cumulative_share`); ``random_share`` is
    ``k/N``; ``gap`` is ``r0ᵀ K_n(t) r0`` and ``random_gap`` the gap
    ``‖r0‖² tr K_n(t)/N`` of a random direction of the same norm;
    ``train_loss`` is ``‖r(t)‖²/(2n)`` and ``predicted_test_loss`` the
    leave-one-out prediction ``train_loss + gap = (1/2n) Σ_i ‖ρ_i(t)‖²``.
    NumPy arrays in the float dtype of ``theta``, except ``train_loss`` and
    ``predicted_test_loss``, float64 (:func:`gramlib.kernel_flow.residual_loss`); JAX arrays
    under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
    """

    times: np.ndarray
    k: int
    eigenvalues: np.ndarray
    share_r0: np.ndarray
    share_rt: np.ndarray
    cumulative_r0: np.ndarray
    random_share: float
    gap: np.ndarray
    random_gap: np.ndarray
    train_loss: np.ndarray
    predicted_test_loss: np.ndarray


@_checks.public
def bottom_count(n_dim, fraction):
    """``k = max(1, round(fraction · N))``: the number of eigenvectors in the bottom ``fraction``."""
    n_dim = _checks.integer(n_dim, "n_dim", minimum=1)
    fraction = _checks.positive(fraction, "fraction")
    if fraction > 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * n_dim)))


class EffectiveGrams(NamedTuple):
    """``K_n(t)`` at several times with their spectra (eigenvalues ascending), computed once per kernel."""

    times: np.ndarray
    k_matrices: jnp.ndarray
    eigenvalues: jnp.ndarray
    eigenvectors: jnp.ndarray
    outputs: int
    lr: float | None


@jax.jit
def _batched_eigh(k_matrices):
    return jax.vmap(jnp.linalg.eigh)(k_matrices)


@_checks.public
def effective_grams(theta, t, *, outputs=None, lr=None):
    """``K_n(t_j)`` for each time (:func:`gramlib.effective_gram.effective_gram`) and their spectra.

    One call per kernel; :func:`alignment_curve` then measures any number of
    residuals (true labels, random labels, label noise) against it. ``theta`` may be a
    :class:`gramlib.kernel_flow.Factorization`.
    ``t = 0`` is refused: ``K_n(0) = 0`` has no preferred eigenvectors.
    """
    fact, _, times, _, lr = kernel_problem(theta, None, t, outputs, lr)
    if np.any(times == 0):
        raise ValueError("t must be > 0: K_n(0) = 0 has no preferred eigenvectors")
    kn = effective_gram(fact, times, lr=lr)  # (T, N, N): times is an array
    vals, vecs = _batched_eigh(kn)
    return EffectiveGrams(times, kn, vals, vecs, fact.outputs, lr)


@_checks.public
def alignment_curve(theta, r0, t=None, *, fraction=0.1, outputs=None, lr=None, grams=None):
    """How ``r0`` and ``r(t)`` sit in the eigenbasis of ``K_n(t)`` along kernel training.

    For each time ``t_j > 0`` (flow time, or steps when ``lr`` is given):
    ``K_n(t_j)``, its spectrum, the shares of ``‖r0‖²`` and ``‖r(t_j)‖²`` in
    its bottom ``k = round(fraction · N)`` eigenvectors, the gap
    ``r0ᵀ K_n r0`` and what a random direction would give. ``t = ∞`` (flow) is
    the limit ``K_n(∞)`` of Chapter 5, where ``share_rt`` is NaN if
    ``r(∞) = 0``. Pass ``grams = effective_grams(theta, t, ...)`` (then ``t``,
    ``outputs`` and ``lr`` are taken from it) to measure several residuals
    (true and random labels) against one computation of ``K_n``; ``theta`` may be a
    :class:`gramlib.kernel_flow.Factorization`, decomposed once for ``K_n`` and ``r(t)``.
    Returns an :class:`AlignmentCurve`.
    """
    if grams is None:
        theta = factorize(theta, outputs=outputs)
        grams = effective_grams(theta, t, lr=lr)
    elif not isinstance(grams, EffectiveGrams):
        raise TypeError(f"grams must come from effective_grams(), got {type(grams).__name__}")
    times, lr = grams.times, grams.lr
    fact, r0, _, _, _ = kernel_problem(theta, r0, times, grams.outputs, lr)
    n_dim = fact.theta.shape[0]
    if grams.k_matrices.shape[1] != n_dim:
        raise ValueError(f"grams are for N = {grams.k_matrices.shape[1]}, theta has N = {n_dim}")
    _residual(r0, n_dim, "r0")
    k = bottom_count(n_dim, fraction)
    kn, vals, vecs = grams.k_matrices, grams.eigenvalues, grams.eigenvectors
    rt = jnp.atleast_2d(kernel_residuals(fact, r0, times, lr=lr))
    shares = _checks.host(_cumulative_share(vecs, r0[None, None, :])[:, 0])  # (T, N)
    rt_norm = jnp.sum(rt ** 2, axis=-1)
    ct = jnp.square(jnp.einsum("ti,tij->tj", rt, vecs))
    shares_t = jnp.where(rt_norm > 0, jnp.sum(ct[:, :k], axis=-1) / jnp.where(rt_norm > 0, rt_norm, 1.0), jnp.nan)
    gaps = _checks.host(jnp.einsum("i,tij,j->t", r0, kn, r0))
    rand = _checks.host(jnp.sum(r0 ** 2) * jnp.trace(kn, axis1=1, axis2=2) / n_dim)
    train = residual_loss(rt, fact.n)
    return AlignmentCurve(times, k, _checks.host(vals), shares[:, k - 1], _checks.host(shares_t), shares, k / n_dim,
                          gaps, rand, train, train + gaps)


class TrajectoryAlignment(NamedTuple):
    """Alignment along a real run with a moving kernel (leading axis: the snapshot times).

    ``steps[j]``: the step at the end of the ``j``-th measured segment and ``times[j]`` its
    gradient-flow time ``lr · steps[j]`` (the book's ``t``); ``share_r0[j]`` and
    ``share_rt[j]``: the shares of ``‖r0‖²`` and of the run's residual ``‖r(t_j)‖²`` in the
    bottom ``k`` eigenvectors of ``K_traj(t_j)``; ``random_share = k/N``; ``last``: ``K_traj``
    at the last measured time (a :class:`~gramlib.mathematics.trajectory_gram.TrajectoryGram`).
    """

    steps: np.ndarray
    times: np.ndarray
    k: int
    share_r0: np.ndarray
    share_rt: np.ndarray
    random_share: float
    last: TrajectoryGram


@_checks.public
def trajectory_alignment(thetas, residuals, lr, *, outputs=1, fraction=0.1, prefixes=None):
    """Where ``r0`` and ``r(t)`` sit in the eigenbasis of the run's own ``K_traj(t)``, during training (Chapter 6).

    ``thetas`` ``(M, N, N)``: the kernel snapshots of a gradient-descent run with step ``lr``;
    ``residuals`` ``(steps + 1, N)``: its residuals at every step (snapshot ``j`` for steps
    ``[j s, (j+1) s)``, ``s = steps // M``, the leftover steps on the last, as in
    :func:`gramlib.mathematics.trajectory_gram.trajectory_effective_gram`). At the end of each
    segment, ``t_j = (j+1) s`` (the last: ``steps``), ``K_traj(t_j)`` is the effective Gram
    matrix of the run's first ``j + 1`` snapshots over ``t_j`` steps, and the shares of
    ``‖r0‖²`` and of the real ``‖r(t_j)‖²`` in its bottom ``k = round(fraction · N)``
    eigenvectors are measured. With a frozen kernel and residuals that follow it, this is
    :func:`alignment_curve` at the same steps. ``prefixes``: the numbers of snapshots ``j + 1``
    at whose ends to measure (default ``1, …, M``); the snapshots are decomposed once and
    each prefix costs the backward recursion over its segments, so all ``M`` of them cost
    ``M(M+1)/2`` segments, and a few spread over the run far less. Returns a :class:`TrajectoryAlignment`.
    """
    th = _checks.array(thetas, "thetas", ndim=3)
    res = _checks.array(residuals, "residuals", ndim=2, shape=(None, th.shape[-1]))
    count, steps = th.shape[0], res.shape[0] - 1
    if steps < count:
        raise ValueError(f"residuals must hold steps+1 rows with steps >= K={count}, got {res.shape[0]} rows")
    th, steps, lr, outputs = snapshot_arguments(th, steps, lr, outputs)
    prefixes = range(1, count + 1) if prefixes is None else [_checks.integer(p, "prefixes", minimum=1)
                                                              for p in prefixes]
    if not prefixes or max(prefixes) > count:
        raise ValueError(f"prefixes must be snapshot counts in 1..{count}, got {list(prefixes)}")
    k = bottom_count(th.shape[-1], fraction)
    s = steps // count
    lengths = [s] * (count - 1) + [steps - s * (count - 1)]
    lam, u = snapshot_eigen(th)
    ends, share_r0, share_rt = [], [], []
    for p in prefixes:
        end = steps if p == count else s * p
        last = gram_from_eigen(lam[:p], u[:p], lengths[:p - 1] + [end - s * (p - 1)], lr, outputs)
        ends.append(end)
        share_r0.append(bottom_share(last.k_matrix, res[0], k))
        share_rt.append(bottom_share(last.k_matrix, res[end], k))
    return TrajectoryAlignment(np.array(ends), lr * np.array(ends), k, _checks.host(jnp.stack(share_r0)),
                               _checks.host(jnp.stack(share_rt)), k / th.shape[-1], last)
