"""The effective Gram matrix of a run with a moving kernel, ``K_traj`` (Chapters 6–7).

Along a gradient-descent run with kernel snapshots ``Θ_k`` (snapshot ``k`` used for ``s_k``
steps, as in :func:`gramlib.mathematics.trajectory.loo_trajectory`), replace the real
residuals by the piecewise-linear residual dynamics of the snapshots,

    r_{t+1} = (I − (η/n) Θ_k) r_t,     so  r(T) = S_traj r0,  S_traj = Π_k (I − (η/n) Θ_k)^{s_k}.

The twin trained without sample ``i`` obeys ``r^{(i)}_{t+1} = (I − (η/n) Θ_k P_{−i}) r^{(i)}_t``
(``P_{−i}`` deletes the ``C`` rows of sample ``i``), so its leave-one-out residual is linear in
``r0`` too: ``ρ(T) = R_traj r0``, with row block ``i`` of ``R_traj`` equal to
``E_iᵀ Π_k (I − (η/n) Θ_k P_{−i})^{s_k}``. The run's effective Gram matrix is

    K_traj = (1/2n) (R_trajᵀ R_traj − S_trajᵀ S_traj),

so that ``r0ᵀ K_traj r0 = (1/2n) Σ_i (‖ρ_i(T)‖² − ‖r_i(T)‖²)``, the predicted gap of the run
read as a linear model with a moving kernel. With one snapshot it is Chapter 5's
``K_n(T)`` for gradient descent. This is the book's own construction (not in the paper).

Cost: each row block of ``R_traj`` is carried backward from ``T`` through the segments in the
snapshots' eigenbases, ``W ← W Q + (η/n)(W Λ U_iᵀ) U_i`` with ``Q = I − (η/n) Λ``; only the
``C×C`` products ``W Λ U_iᵀ`` need stepping (a Volterra recursion, as in
:func:`~gramlib.mathematics.trajectory.loo_trajectory`, in chunks of at most ``n`` steps). All
``n`` twins together cost ``M`` eigendecompositions (``≈ 9 N³`` flops each, ``M`` snapshots), ``O(N² C)`` per
step for the free terms, the chunk ends and the recursion, and ``≈ 4 N³`` per change of basis,
instead of ``n`` products of ``steps`` dense ``N×N`` matrices.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _checks
from .trajectory import chunk_lengths


class TrajectoryGram(NamedTuple):
    """``K_traj`` ``(N, N)`` with the maps it is made of: ``loo_map = R_traj``, ``run_map = S_traj``."""

    k_matrix: np.ndarray
    loo_map: np.ndarray
    run_map: np.ndarray


@partial(jax.jit, static_argnames=("s", "n", "outputs"))
def _segment_back(lam, u, w0, lr, s, n, outputs):
    """``s`` steps of the row map ``W ← W Q + a (W Λ U_iᵀ) U_i`` for all twins; ``W`` ``(n, C, N)`` in ``U``'s basis.

    With ``c_t = W_t Λ U_iᵀ`` (``C×C``): ``c_t = W_0 Q^t Λ U_iᵀ + Σ_{j<t} c_j h_{t−1−j}``,
    ``h_l = a U_i Q^l Λ U_iᵀ``, and ``W_s = W_0 Q^s + a Σ_{j<s} c_j U_i Q^{s−1−j}``.
    """
    c, big_n = outputs, lam.shape[0]
    a = lr / n
    q = 1.0 - a * lam
    powers = jnp.concatenate([jnp.ones((1, big_n), lam.dtype), jnp.cumprod(jnp.broadcast_to(q, (s, big_n)), axis=0)])
    u3 = u.reshape(n, c, big_n)
    free = jnp.einsum("icm,tm,idm->ticd", w0, powers[:s] * lam, u3)  # W_0 Q^t Λ U_iᵀ, t < s
    h = a * jnp.einsum("icm,lm,idm->licd", u3, powers[:s] * lam, u3)  # h_l, l < s
    h_rev = jnp.concatenate([h[::-1], jnp.zeros_like(h)])  # row s − t + j holds h_{t−1−j} (j < t), else 0

    def step(history, t):
        weights = lax.dynamic_slice_in_dim(h_rev, s - t, s)
        ct = free[t] + jnp.einsum("jicd,jide->ice", history, weights)
        return lax.dynamic_update_index_in_dim(history, ct, t, 0), None

    history = lax.scan(step, jnp.zeros((s, n, c, c), lam.dtype), jnp.arange(s))[0]
    pushed = a * jnp.einsum("jicd,idm,jm->icm", history, u3, powers[s - 1::-1])
    return w0 * powers[s] + pushed


@_checks.public
def trajectory_effective_gram(thetas, steps, lr, *, outputs=1):
    """``K_traj = (1/2n)(R_trajᵀ R_traj − S_trajᵀ S_traj)``: the effective Gram matrix of a run (Chapters 6–7).

    ``thetas`` ``(M, N, N)``: the kernel snapshots of a gradient-descent run with step ``lr``
    and ``steps`` steps (snapshot ``k`` for steps ``[k s, (k+1) s)``, ``s = steps // M``, the
    leftover steps on the last one, as in :func:`gramlib.mathematics.trajectory.loo_trajectory`).
    The residuals follow the snapshots' linear dynamics ``r_{t+1} = (I − (lr/n) Θ_k) r_t``
    from any ``r0``; the twins' leave-one-out residuals are ``ρ(T) = R_traj r0`` and the run's
    ``r(T) = S_traj r0``. One snapshot gives :func:`gramlib.mathematics.effective_gram.effective_gram`
    for gradient descent. Returns a :class:`TrajectoryGram` of NumPy arrays in the float dtype
    of ``thetas`` (JAX arrays under ``jax.jit``, ``jax.vmap``, ``jax.grad``, which work in
    ``thetas`` and ``lr``; ``steps`` and ``outputs`` are static).
    """
    th, steps, lr, outputs = snapshot_arguments(thetas, steps, lr, outputs)
    count = th.shape[0]
    s = steps // count
    lengths = [s] * (count - 1) + [steps - s * (count - 1)]
    return gram_from_eigen(*snapshot_eigen(th), lengths, lr, outputs)


def snapshot_arguments(thetas, steps, lr, outputs):
    """``(thetas, steps, lr, outputs)`` of a run's kernel snapshots, checked; raises ``ValueError``/``TypeError``.

    ``thetas`` ``(M, N, N)`` symmetric, ``outputs`` dividing ``N`` into ``n >= 2`` samples,
    ``steps >= K`` and ``lr > 0`` (:func:`trajectory_effective_gram`).
    """
    th = _checks.array(thetas, "thetas", ndim=3)
    if th.shape[1] != th.shape[2] or th.shape[0] == 0:
        raise ValueError(f"thetas must have shape (M, N, N) with M >= 1 snapshots, got {th.shape}")
    for k, theta in enumerate(th):
        _checks.square_symmetric(theta, f"thetas[{k}]")
    outputs = _checks.integer(outputs, "outputs", minimum=1)
    big_n, count = th.shape[1], th.shape[0]
    if big_n % outputs:
        raise ValueError(f"outputs={outputs} must divide the size of thetas ({big_n} rows)")
    n = big_n // outputs
    if n < 2:
        raise ValueError(f"thetas must hold at least 2 samples for leave-one-out, got n={n}")
    steps = _checks.integer(steps, "steps", minimum=1)
    if steps < count:
        raise ValueError(f"steps must be at least the number of snapshots K={count}, got {steps}")
    lr = _checks.positive(lr, "lr")
    return th, steps, lr, outputs


def snapshot_eigen(thetas):
    """The eigendecompositions ``Θ_k = U_k diag(λ_k) U_kᵀ`` of the snapshots, as ``(λ (M, N), U (M, N, N))``."""
    th = jnp.asarray(thetas, jnp.result_type(float, thetas.dtype))
    return jax.vmap(jnp.linalg.eigh)(th)


def gram_from_eigen(lam, u, lengths, lr, outputs):
    """``K_traj`` of :func:`trajectory_effective_gram` from the snapshots' eigendecompositions.

    ``lam`` ``(M, N)``, ``u`` ``(M, N, N)`` (:func:`snapshot_eigen`), snapshot ``k`` serving
    ``lengths[k]`` steps; arguments as checked by :func:`trajectory_effective_gram`. Lets a
    caller that needs ``K_traj`` of several prefixes of one run decompose each snapshot once
    (:func:`gramlib.mathematics.alignment.trajectory_alignment`).
    """
    count, big_n = lam.shape
    n = big_n // outputs
    run_map = jnp.eye(big_n, dtype=u.dtype)
    for k in range(count):  # S = S_{K−1} ⋯ S_0, each S_k = U diag(q^{s_k}) Uᵀ
        run_map = (u[k] * (1.0 - (lr / n) * lam[k]) ** lengths[k]) @ (u[k].T @ run_map)
    w = u[count - 1].reshape(n, outputs, big_n)  # E_iᵀ in the eigenbasis of the last snapshot
    for k in range(count - 1, -1, -1):
        for length in chunk_lengths(lengths[k], n):  # the steps of one segment commute
            w = _segment_back(lam[k], u[k], w, lr, length, n, outputs)
        if k:
            w = jnp.einsum("icm,lm,lp->icp", w, u[k], u[k - 1])  # W U_kᵀ U_{k−1}: to the previous basis
    loo_map = (w.reshape(big_n, big_n) @ u[0].T)
    k_matrix = (loo_map.T @ loo_map - run_map.T @ run_map) / (2 * n)
    k_matrix = (k_matrix + k_matrix.T) / 2
    return TrajectoryGram(_checks.host(k_matrix), _checks.host(loo_map), _checks.host(run_map))
