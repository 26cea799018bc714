"""Leave-one-out residuals along a real gradient-descent run, with a moving kernel (Chapter 7).

All ``n`` leave-one-out twins of a run at once: column ``i`` of ``E_t`` is twin ``i``'s
output offset ``e^{(i)}`` from the run, driven by the run's own residuals ``r_t`` and kernel
snapshots ``Θ(t_k)``. Each segment of constant kernel is solved in that kernel's eigenbasis,
where only the twins' own ``C×C`` blocks need stepping (a Volterra recursion);
:func:`loo_trajectory` strings the segments together (one-time kernel ``Θ(t_k)``, or the
two-time kernel ``Θ(t_k, t_l)`` that follows the rotation of the Jacobian).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from .. import _checks


def _segment(lam, u, f0, r, lr, n, outputs):
    """One segment of constant kernel ``Θ = U Λ Uᵀ``: ``len(r)`` steps from ``F_0 = Uᵀ E_0``.

    With ``Q = I − (lr/n) Λ``, ``U_i`` the ``C`` rows of sample ``i`` and
    ``d_k = e_k + r_k`` (``e_k``: the twins' own blocks), the eigen-coordinates move as
    ``F_{k+1} = Q F_k + (lr/n) Λ U_iᵀ d_k`` (column ``i``), so the own blocks obey
    the Volterra recursion ``e_k = U_i Q^k F_0[:, i] + Σ_{j<k} H_{k−1−j}[i] d_j``
    with ``H_l[i] = (lr/n) U_i Λ Q^l U_iᵀ`` (``C×C``). Cost ``O(N² C s)`` in matrix
    products plus ``O(n C² s²)``; returns ``(F_s, e_s)`` and the ``d_k`` ``(s, n, C)``.
    """
    c = outputs
    s = r.shape[0]
    big_n = lam.shape[0]
    a = lr / n
    q = 1.0 - a * lam
    powers = jnp.concatenate([jnp.ones((1, big_n), lam.dtype), jnp.cumprod(jnp.broadcast_to(q, (s, big_n)), axis=0)])
    u3 = u.reshape(n, c, big_n)
    pairs = (u3[:, :, None, :] * u3[:, None, :, :]).reshape(n * c * c, big_n)
    h = (pairs @ (a * lam * powers[:s]).T).T.reshape(s, n, c, c)  # H_l[i], l < s
    h_rev = jnp.concatenate([h[::-1], jnp.zeros_like(h)])  # row s − k + j holds H_{k−1−j} (j < k), else 0
    free = ((u * f0.T[jnp.repeat(jnp.arange(n), c)]) @ powers.T).T.reshape(s + 1, n, c)  # U_i Q^k F_0[:, i]
    r = r.reshape(s, n, c)

    def step(history, k):
        weights = lax.dynamic_slice_in_dim(h_rev, s - k, s)
        e = free[k] + jnp.einsum("jicd,jid->ic", weights, history)
        j = jnp.minimum(k, s - 1)  # d_k is stored for k < s only
        stored = jnp.where(k < s, e + r[j], history[j])
        return lax.dynamic_update_index_in_dim(history, stored, j, 0), e

    history, e = lax.scan(step, jnp.zeros((s, n, c), lam.dtype), jnp.arange(s + 1))
    weights = (a * lam[None, :] * powers[s - 1::-1]).T @ history.reshape(s, big_n)  # (N_m, N): Σ_j aλ q^{s−1−j} d_j
    f = powers[s][:, None] * f0 + jnp.sum((u.T * weights).reshape(big_n, n, c), axis=2)
    return f, e[s], history


_segment_jit = jax.jit(_segment, static_argnames=("n", "outputs"))


def chunk_lengths(steps, n):
    """Split ``steps`` steps of one constant kernel into chunks of at most ``n`` steps.

    A segment's Volterra recursion costs ``O(n C² s)`` per step, the matrix products around it
    ``O(N²) = O(n² C²)``; chunks of ``n`` steps (each starting from the previous chunk's
    eigen-coordinates, with the same kernel) balance the two, so a long segment costs
    ``O(N² steps)`` instead of ``O(n C² steps²)``. Used by :func:`loo_trajectory` and
    :func:`gramlib.mathematics.trajectory_gram.trajectory_effective_gram`.
    """
    return [n] * (steps // n) + ([steps % n] if steps % n else [])


def _own(v, n, outputs):
    """``Bdiag(v)``: the ``(N, n)`` matrix whose column ``i`` holds ``v``'s ``C`` rows of sample ``i``, else 0."""
    owner = jnp.repeat(jnp.arange(n), outputs)
    return v[:, None] * (owner[:, None] == jnp.arange(n)[None, :])


@partial(jax.jit, static_argnames=("n", "outputs"))
def _segment_forces(lam, u, f0, history, lr, n, outputs):
    """``A = Σ_{t<s} a_t`` with ``a_t = −(lr/n)(E_t − Bdiag(d_t))``, from a segment's eigen-coordinates.

    ``E_{t+1} = E_t + Θ a_t``: ``a_t`` is the output-space force on every
    twin, whose weight offset grows by ``J_kᵀ a_t`` (Chapter 7). With
    ``Q = I − (lr/n) Λ``, ``Σ_t F_t = G_s F_0 + Σ_j (I − Q^{s−1−j}) U_iᵀ d_j``,
    ``G_s = Σ_{l<s} Q^l`` (column ``i``), and ``Σ_t E_t = U Σ_t F_t``.
    """
    s, big_n = history.shape[0], lam.shape[0]
    q = 1.0 - (lr / n) * lam
    powers = jnp.concatenate([jnp.ones((1, big_n), lam.dtype), jnp.cumprod(jnp.broadcast_to(q, (s - 1, big_n)), axis=0)])
    d = history.reshape(s, big_n)
    weights = (1.0 - powers[::-1]).T @ d  # (N_m, N): Σ_j (1 − q_m^{s−1−j}) d_j
    sum_f = jnp.sum(powers, axis=0)[:, None] * f0 + jnp.sum((u.T * weights).reshape(big_n, n, outputs), axis=2)
    return -(lr / n) * (u @ sum_f - _own(jnp.sum(d, axis=0), n, outputs))


class TwinResiduals(NamedTuple):
    """What :func:`loo_trajectory` returns: the twins' leave-one-out residuals and how they got there.

    ``rho`` ``(N,)``: ``ρ_i = r_i(T) + e^{(i)}_i(T)`` at the end of the run; ``path`` ``(steps, N)``:
    ``ρ(k)`` at every step before the last (the perturbation factor along the run,
    :func:`gramlib.baselines.contraction_free_loss`); ``forces`` ``(K, N, n)``: the segment forces
    ``A_l`` of the two-time recursion, from which the twins' weight offsets
    ``δ^{(i)} = Σ_l J_lᵀ A_l[:, i]`` are rebuilt (:func:`gramlib.predict.twin_readout`), ``None`` with
    the one-time kernel (it has no weight offsets).
    """

    rho: jax.Array
    path: jax.Array
    forces: Optional[jax.Array]


@_checks.public
def loo_trajectory(thetas, residuals, lr, *, outputs=1, cross=None) -> TwinResiduals:
    """LOO residuals at the end of a real gradient-descent run, with a moving kernel (Chapter 7).

    ``thetas`` ``(M, N, N)``: kernel snapshots ``Θ(t_k) = J_k J_kᵀ``, snapshot
    ``k`` used for steps ``[k s, (k+1) s)`` with ``s = steps // M`` (leftover
    steps use the last one); ``residuals`` ``((steps+1), N)``: the run's
    residuals ``r_t`` at every step. All twins at once: column ``i`` of
    ``E_t`` is twin ``i``'s offset ``e^{(i)}``, and the force on the twins is
    ``a_t = −(lr/n) (E_t − Bdiag(E_t) − Bdiag(r_t))`` (``Bdiag`` keeps the
    ``C`` rows of sample ``i`` in column ``i``). Returns a :class:`TwinResiduals`:
    ``rho``, ``ρ_i = r_i(T) + e^{(i)}_i(T)`` ``(N,)``; ``path``, the twins' leave-one-out
    residuals at every step before the last ``(steps, N)``; ``forces``, the segment forces
    ``(K, N, n)`` of the two-time kernel (``None`` without ``cross``). The recursion computes all
    three anyway; a caller that keeps only ``rho`` under ``jax.jit`` lets XLA drop the others.

    ``cross=None`` (one-time kernel, the matrix ODE of Chapter 5 with ``Θ``
    piecewise constant): ``E_{t+1} = E_t + Θ(t_k) a_t`` from ``E_0 = 0``.

    ``cross(k, l)`` given (two-time kernel): a function returning
    ``Θ(t_k, t_l) = J_k J_lᵀ`` for ``0 ≤ l < k ≤ K``, index ``K`` standing for
    the final weights ``w_T``. The twin's weight offset is
    ``δ = Σ_l J_lᵀ A_l`` with ``A_l`` the forces summed over segment ``l``, and
    the twin's outputs move with today's Jacobian: segment ``k`` starts from
    ``E = Σ_{l<k} Θ(t_k, t_l) A_l`` and ``ρ`` is read out with ``J(w_T)``. As
    ``K → steps`` this is the twin linearized around the real run with the
    Gauss–Newton Hessian, exactly; the one-time kernel also drops the rotation
    of the Jacobian (Chapter 7).

    Each segment of constant kernel is solved in that kernel's eigenbasis,
    where only the twins' own blocks need stepping (a Volterra recursion):
    cost ``M`` eigendecompositions for ``M`` snapshots (``≈ 9 N³`` flops each) plus
    ``O(N² C)`` per step (a long segment is cut into chunks of ``n`` steps,
    :func:`chunk_lengths`), instead of ``2 N² n`` per step for the literal recursion
    (appendix "Scaling up"). The two-time kernel adds ``M(M+1)/2`` products
    ``Θ(t_k, t_l) A_l`` (``2 N² n`` flops each).

    Results are JAX arrays in the common float dtype of ``thetas`` and ``residuals``. Works
    under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` in ``thetas``, ``residuals`` and ``lr``
    (``outputs`` and ``cross`` are static; symmetry and finiteness are
    checked on concrete inputs only).
    """
    th = _checks.array(thetas, "thetas", ndim=3)
    if th.shape[1] != th.shape[2] or th.shape[0] == 0:
        raise ValueError(f"thetas must have shape (M, N, N) with M >= 1 snapshots, got {th.shape}")
    if _checks.concrete(th, "symmetric"):
        asym = float(np.max(np.abs(th - np.swapaxes(th, 1, 2))))
        if asym > 1e-8 + 1e-6 * max(float(np.max(np.abs(th))), 1.0):
            raise ValueError(f"thetas must be symmetric Gram matrices; max |Θ - Θᵀ| = {asym:.3g}")
    outputs = _checks.integer(outputs, "outputs", minimum=1)
    big_n = th.shape[1]
    if big_n % outputs:
        raise ValueError(f"outputs={outputs} must divide the size of thetas ({big_n} rows)")
    res = _checks.array(residuals, "residuals", ndim=2, shape=(None, big_n))
    steps = res.shape[0] - 1
    count = th.shape[0]
    if steps < count:
        raise ValueError(f"residuals must hold steps+1 rows with steps >= K={count}, got {res.shape[0]} rows")
    lr = _checks.positive(lr, "lr")
    if cross is not None and not callable(cross):
        raise TypeError(f"cross must be a function (k, l) -> Θ(t_k, t_l), got {type(cross).__name__}")
    dtype = jnp.result_type(float, th.dtype, res.dtype)
    th, res = jnp.asarray(th, dtype), jnp.asarray(res, dtype)
    n, s = big_n // outputs, steps // count

    def two_time(k, forces):
        """``Σ_{l<k} Θ(t_k, t_l) A_l``, on the device; a block of the wrong shape or with NaN/inf is named."""
        total = jnp.zeros((big_n, n), dtype)
        for l, a in enumerate(forces):
            block = cross(k, l)
            if np.shape(block) != (big_n, big_n):
                raise ValueError(f"cross({k}, {l}) must have shape ({big_n}, {big_n}), got {np.shape(block)}")
            total = total + jnp.asarray(block, dtype) @ a
        if not _checks.is_traced(total) and not bool(jnp.all(jnp.isfinite(total))):  # once per segment; culprit on failure
            for l in range(k):
                _checks.array(cross(k, l), f"cross({k}, {l})")
            raise FloatingPointError(f"the two-time sum of segment {k} overflowed")
        return total

    forces = []
    e, rhos = jnp.zeros((big_n, n), dtype), []
    for k in range(count):
        start = k * s
        lam, u = jnp.linalg.eigh(th[k])
        if cross is not None and k:
            e = two_time(k, forces)
        f, force = u.T @ e, 0.0
        for length in chunk_lengths((steps if k == count - 1 else start + s) - start, n):
            f0 = f
            f, _, history = _segment_jit(lam, u, f0, res[start: start + length], lr, n, outputs)
            rhos.append(history.reshape(-1, big_n))  # d_j = e_j + r_j = ρ(j) within the chunk
            if cross is not None:
                force = force + _segment_forces(lam, u, f0, history, lr, n, outputs)
            start += length
        if cross is not None:
            forces.append(force)
        e = u @ f
    if cross is not None:
        e = two_time(count, forces)
    own = jnp.sum(e.reshape(n, outputs, n) * jnp.eye(n, dtype=dtype)[:, None, :], axis=2).reshape(-1)
    return TwinResiduals(res[-1] + own, jnp.concatenate(rhos), jnp.stack(forces) if cross is not None else None)
