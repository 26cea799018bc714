"""Leave-one-out residuals and the effective Gram matrix ``K_n(t)`` (Chapter 5).

Kernel training with a constant Gram matrix ``Θ`` (``N×N``, ``N = nC``, rows
ordered (sample, output)) on ``L_S = (1/2n) Σ_i ‖f(x_i) − y_i‖²`` moves the
residual as ``ṙ = −(1/n) Θ r``. The leave-one-out twin trained on ``S∖i`` (same
start, same per-sample weight ``1/n``) has residuals ``r^{(i)}`` with
``ṙ^{(i)} = −(1/n) Θ P_{−i} r^{(i)}``, ``P_{−i}`` deleting the ``C`` rows of
sample ``i``; its residual at the left-out sample is the LOO residual
``ρ_i(t) = [r^{(i)}(t)]_i``. In the Laplace variable ``z``, with
``R(z) = (nzI + Θ)^{-1}`` and ``[R]_ii`` its ``C×C`` diagonal block,

    ρ̂_i(z) = (z [R(z)]_ii)^{-1} [R(z) r0]_i                       (Sherman–Morrison–Woodbury),

and one eigendecomposition ``Θ = U Λ Uᵀ`` makes each ``z`` cost ``O(N²)``. The
time domain is reached with a fixed Talbot contour (Talbot 1979; optimized parameters of
Trefethen, Weideman & Schmelzer 2006).
``T = ∞`` and gradient descent use exact closed forms (see the functions).
Because ``ρ(t) = R_t r0`` is linear in ``r0``, the predicted gap
``(1/2n) Σ_i (‖ρ_i‖² − ‖r_i‖²)`` is the quadratic form ``r0ᵀ K_n(t) r0`` with
the effective Gram matrix ``K_n(t) = (1/2n) (R_tᵀ R_t − e^{−2Θt/n})``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .kernel_flow import _residual_map, check_descent_limit, decay, gain, kernel_problem, spectrum

TALBOT_NODES = 32
"""Nodes of the fixed Talbot contour (16 evaluations thanks to conjugate symmetry)."""

_CHUNK_ELEMENTS = 1 << 22  # complex numbers per chunk of contour nodes (bounded memory)
_NULL_WEIGHT = 1e-8  # a sample "sees" the null space of Θ when its block weight exceeds this


# ----------------------------------------------------------------------------- Laplace domain

def talbot_contour(t, nodes=TALBOT_NODES):
    """Nodes ``z`` and weights ``w`` with ``f(t) ≈ Re Σ_k w_k F(z_k)`` for ``t > 0``.

    The optimized Talbot contour of Trefethen, Weideman & Schmelzer (2006), ``z(θ) = (N/t)(−0.6122 + 0.5017 θ
    cot(0.6407 θ) + 0.2645 i θ)``, midpoint rule in ``θ ∈ (−π, π)``, keeping the
    ``θ > 0`` half (``F(z̄) = conj F(z)`` for real ``f``). ``t`` has shape ``(T,)``;
    returns two ``(T, nodes // 2)`` complex arrays.
    """
    half = nodes // 2
    theta = (jnp.arange(half) + 0.5) * (2 * jnp.pi / nodes)
    alpha = 0.6407
    cot = 1.0 / jnp.tan(alpha * theta)
    scale = nodes / t[:, None]
    z = scale * (-0.6122 + 0.5017 * theta * cot + 0.2645j * theta)
    dz = scale * (0.5017 * (cot - alpha * theta / jnp.sin(alpha * theta) ** 2) + 0.2645j)
    w = (2.0 / nodes) * (-1j) * jnp.exp(z * t[:, None]) * dz
    return z, w


def _real_times_complex(a, x):
    """``a @ x`` for real ``a`` ``(p, N)`` and complex ``x`` ``(N, q)`` with one real matmul."""
    q = x.shape[1]
    y = a @ jnp.concatenate([x.real, x.imag], axis=1)
    return lax.complex(y[:, :q], y[:, q:])


def _laplace_loo(lam, u, a, z, n, outputs, first_order, rate=False):
    """``ρ̂_i(z)`` for a chunk of nodes ``z`` ``(B,)``; ``a = Uᵀ R0`` ``(N, m)``; returns ``(B, rows, m)``.

    ``u`` holds the rows of ``U`` of the samples wanted (all ``N``, or one
    device's share in :mod:`gramlib.sharding`). Exact: ``(z [R]_ii)^{-1} [R R0]_i``. ``first_order``: the twin contracted with
    the full ``Θ`` instead of ``Θ P_{−i}``, ``n (2I − nz [R]_ii) [R R0]_i``. ``rate``: the
    transform ``z ρ̂_i(z) − ρ_i(0) = [R]_ii^{-1} [R R0]_i − [R0]_i`` of the time derivative ``ρ̇_i``.
    """
    big_n, m = a.shape
    b = z.shape[0]
    c = outputs
    rows = u.shape[0]
    local = rows // c  # samples handled here
    weight = 1.0 / (n * z[:, None] + lam[None, :])  # (B, N): the eigenvalues of R(z)
    x = (weight[:, :, None] * a[None]).transpose(1, 0, 2).reshape(big_n, b * m)
    r_r0 = _real_times_complex(u, x).reshape(local, c, b, m).transpose(2, 0, 1, 3)
    u3 = u.reshape(local, c, big_n)
    uu = (u3[:, :, None, :] * u3[:, None, :, :]).reshape(local * c * c, big_n)
    blocks = _real_times_complex(uu, weight.T).T.reshape(b, local, c, c)  # [R]_ii
    if first_order:
        eye = jnp.eye(c, dtype=blocks.dtype)
        out = n * jnp.einsum("bicd,bidm->bicm", 2 * eye - n * z[:, None, None, None] * blocks, r_r0)
    elif rate:
        own = (u @ a).reshape(local, c, m)  # the rows of R0 of these samples
        shortcut = r_r0 / blocks if c == 1 else jnp.linalg.solve(blocks, r_r0)
        out = shortcut - own[None]
    elif c == 1:
        out = r_r0 / (z[:, None, None, None] * blocks)
    else:
        out = jnp.linalg.solve(z[:, None, None, None] * blocks, r_r0)
    return out.reshape(b, rows, m)


@partial(jax.jit, static_argnames=("n", "outputs", "first_order", "chunk", "rate"))
def _talbot_loo(lam, u, r0, t, n, outputs, first_order, chunk, rate=False):
    """Talbot inversion of ``ρ̂(z)`` (``rate``: of ``ρ̇``) at times ``t`` ``(T,)`` (finite, > 0); ``(T, N, m)``."""
    return talbot_sum(lam, u, u.T @ r0, t, n, outputs, first_order, chunk, rate)


def talbot_sum(lam, u, a, t, n, outputs, first_order, chunk, rate=False):
    """``Σ_k Re w_k ρ̂(z_k)`` for the samples whose rows of ``U`` are ``u``; ``a = Uᵀ R0``; ``(T, rows, m)``."""
    z, w = talbot_contour(t)
    count = z.size
    pad = (-count) % chunk
    zf = jnp.concatenate([z.reshape(-1), jnp.ones(pad, z.dtype)]).reshape(-1, chunk)
    wf = jnp.concatenate([w.reshape(-1), jnp.zeros(pad, w.dtype)]).reshape(-1, chunk)
    which = jnp.concatenate([jnp.repeat(jnp.arange(t.shape[0]), z.shape[1]),
                             jnp.zeros(pad, int)]).reshape(-1, chunk)

    def add(total, block):
        zc, wc, tc = block
        hat = _laplace_loo(lam, u, a, zc, n, outputs, first_order, rate)
        return total.at[tc].add(jnp.real(wc[:, None, None] * hat)), None

    total = jnp.zeros((t.shape[0], u.shape[0], a.shape[1]), lam.dtype)
    return lax.scan(add, total, (zf, wf, which))[0]


# ----------------------------------------------------------------------------- exact closed forms

@partial(jax.jit, static_argnames=("n", "outputs"))
def _loo_limit(lam, u, r0, tol, n, outputs):
    """``ρ(∞) = lim_{z→0} [R(z)]_ii^{-1} [R(z) r0]_i``, also for singular ``Θ``; returns ``(N, m)``.

    With ``P`` the projector on the null space of ``Θ`` and ``Θ⁺`` the
    pseudo-inverse, ``[R(z)]_ii = P_ii/(nz) + Θ⁺_ii + O(z)``. If sample ``i``
    sees no null direction (``P_ii = 0``, always so for invertible ``Θ``) the
    limit is ``(Θ⁺_ii)^{-1} [Θ⁺ r0]_i`` (``[Θ⁻¹ r0]_i / [Θ⁻¹]_ii`` for one
    output); the directions where ``P_ii`` is nonzero are fixed by
    ``P_ii p = [P r0]_i`` and the rest by ``Θ⁺``.
    """
    c = outputs
    null = (lam <= tol).astype(lam.dtype)
    inv = jnp.where(lam <= tol, 0.0, 1.0 / jnp.where(lam <= tol, 1.0, lam))
    a = u.T @ r0
    u3 = u.reshape(n, c, -1)
    p_blocks = jnp.einsum("ick,idk,k->icd", u3, u3, null)
    q_blocks = jnp.einsum("ick,idk,k->icd", u3, u3, inv)
    p_r0 = jnp.einsum("ick,k,km->icm", u3, null, a)
    q_r0 = jnp.einsum("ick,k,km->icm", u3, inv, a)

    if c == 1:  # scalar blocks: [P r0]_i / P_ii where sample i sees the null space, else Θ⁺
        seen = p_blocks > _NULL_WEIGHT
        return jnp.where(seen, p_r0 / jnp.where(seen, p_blocks, 1.0),
                         q_r0 / jnp.where(seen, 1.0, q_blocks)).reshape(r0.shape)

    def one(p_i, q_i, pa, qb):
        alpha, o = jnp.linalg.eigh(p_i)
        seen = alpha > _NULL_WEIGHT
        q_o = o.T @ q_i @ o
        p = jnp.where(seen[:, None], (o.T @ pa) / jnp.where(seen, alpha, 1.0)[:, None], 0.0)
        free = ~seen
        g = jnp.where(free[:, None] & free[None, :], q_o, 0.0) + jnp.diag(seen.astype(q_o.dtype))
        rhs = jnp.where(free[:, None], o.T @ qb - q_o @ p, 0.0)
        return o @ (p + jnp.linalg.solve(g, rhs))

    return jax.vmap(one)(p_blocks, q_blocks, p_r0, q_r0).reshape(r0.shape)


@partial(jax.jit, static_argnames=("n", "outputs"))
def _first_order_limit(lam, u, r0, tol, n, outputs):
    """``lim_{z→0} z ρ̂^FO(z) = (2I − P_ii) [P r0]_i``, ``P`` the null-space projector of ``Θ``."""
    c = outputs
    null = (lam <= tol).astype(lam.dtype)
    u3 = u.reshape(n, c, -1)
    p_blocks = jnp.einsum("ick,idk,k->icd", u3, u3, null)
    p_r0 = jnp.einsum("ick,k,km->icm", u3, null, u.T @ r0)
    return jnp.einsum("icd,idm->icm", 2 * jnp.eye(c, dtype=lam.dtype) - p_blocks, p_r0).reshape(r0.shape)


@partial(jax.jit, static_argnames=("n", "outputs", "lr"))
def _loo_descent(theta, r0, steps, n, outputs, lr):
    """Exact LOO residuals of gradient descent after ``steps`` ``(T,)`` (finite) steps; ``(T, N, m)``.

    The twin's own block moves as ``ρ_i(k) = r0_i − Θ_{i,−i} g(Θ_{−i}) r0_{−i}``
    with ``g(μ) = (1 − (1 − lr μ/n)^k)/μ`` (:func:`gramlib.kernel_flow.gain`); ``Θ_{−i}`` (``Θ`` without sample
    ``i``, the rank-``C``-updated problem whose eigenvalues interlace with those
    of ``Θ``) is diagonalized for each sample: ``O(n N³)`` in all.
    """
    c = outputs
    big_n = theta.shape[0]

    def one(i):
        keep = jnp.arange(big_n - c)
        keep = keep + c * (keep >= i * c)
        mu, v = jnp.linalg.eigh(theta[keep][:, keep])
        coupling = lax.dynamic_slice_in_dim(theta, i * c, c, 0)[:, keep] @ v  # (C, N−C)
        coords = v.T @ r0[keep]  # (N−C, m)
        own = lax.dynamic_slice_in_dim(r0, i * c, c, 0)  # (C, m)
        return own[None] - jnp.einsum("cp,tp,pm->tcm", coupling, gain(mu, steps, n, lr, 0.0), coords)

    out = lax.map(one, jnp.arange(n))  # (n, T, C, m)
    return out.transpose(1, 0, 2, 3).reshape((steps.shape[0],) + r0.shape)


# ----------------------------------------------------------------------------- public API

def _loo_map(theta, r0, times, n, outputs, lr, *, first_order=False, spec=None):
    """LOO residuals for the columns of ``r0`` ``(N, m)`` at validated ``times``; ``(T, N, m)``.

    ``spec``: the ``(λ, U, tol)`` of :func:`gramlib.kernel_flow.spectrum`, when the caller has it already.
    """
    lam, u, tol = spectrum(theta) if spec is None else spec
    times = np.asarray(times, dtype=float)
    out = np.zeros((times.size,) + r0.shape, theta.dtype)
    inf = np.isinf(times)
    middle = (times > 0) & ~inf
    out[times == 0] = np.asarray(r0)
    if inf.any():
        if lr is not None:
            check_descent_limit(lam, tol, n, lr)
        limit = (_first_order_limit if first_order else _loo_limit)(lam, u, r0, tol, n, outputs)
        out[inf] = np.asarray(limit)
    if middle.any():
        t = jnp.asarray(times[middle], theta.dtype)
        if lr is None or first_order:
            per_node = theta.shape[0] * r0.shape[1]
            chunk = int(min(max(1, _CHUNK_ELEMENTS // per_node), t.size * (TALBOT_NODES // 2)))
            done = _talbot_loo(lam, u, r0, t, n, outputs, first_order, chunk)
        else:
            done = _loo_descent(theta, r0, t, n, outputs, lr)
        out[middle] = np.asarray(done)
    return jnp.asarray(out)


def loo_residuals(theta, r0, t, *, outputs=1, lr=None):
    """Exact leave-one-out residuals ``ρ(t)`` of kernel training with constant ``theta`` (Chapter 5).

    ``theta`` is the ``N×N`` Gram matrix (``N = n * outputs``, rows ordered
    (sample, output)), ``r0`` the ``(N,)`` initial residual. Without ``lr``:
    gradient flow ``ṙ = −(1/n) Θ r`` for time ``t``, inverted from
    ``ρ̂_i(z) = (z [R(z)]_ii)^{-1} [R(z) r0]_i``, ``R(z) = (nzI + Θ)^{-1}``, on a
    32-node Talbot contour. With ``lr``: gradient descent
    ``r_{k+1} = (I − (lr/n) Θ) r_k`` for ``t = k`` steps, computed exactly
    through the spectrum of ``Θ`` without each sample (one ``(N−C)×(N−C)``
    eigendecomposition per sample, ``O(n N³)``; :func:`loo_trajectory` integrates
    real runs step by step instead). ``t`` is a number or a
    1-D array; ``t = inf`` gives the limit ``[Θ⁻¹ r0]_i / [Θ⁻¹]_ii`` (and its
    continuous extension when ``Θ`` is singular, e.g. duplicated inputs).
    Leaving sample ``i`` out removes all ``outputs`` rows of that sample.
    Returns ``(N,)``, or ``(len(t), N)`` for an array ``t``.
    """
    theta, r0, times, scalar, n, lr = kernel_problem(theta, r0, t, outputs, lr)
    out = _loo_map(theta, r0[:, None], times, n, outputs, lr)[..., 0]
    return out[0] if scalar else out


def first_order_loo_residuals(theta, r0, t, *, outputs=1):
    """The first-order trap (Chapter 4): the twin contracted with the full-data ``Θ``.

    Replacing the twin's ``Θ P_{−i}`` by ``Θ`` gives
    ``ė^{(i)} = −(1/n) Θ (e^{(i)} − e_i r_i(t))`` and LOO residuals
    ``ρ^FO_i = r_i + e^{(i)}_i`` with Laplace transform
    ``n (2I − nz[R]_ii)[R r0]_i``; they tend to ``0`` as ``t → ∞`` whenever
    ``Θ`` is invertible. Gradient flow only. Same shapes as :func:`loo_residuals`.
    """
    theta, r0, times, scalar, n, _ = kernel_problem(theta, r0, t, outputs, None)
    out = _loo_map(theta, r0[:, None], times, n, outputs, None, first_order=True)[..., 0]
    return out[0] if scalar else out


def effective_gram(theta, t, *, outputs=1, lr=None):
    """The effective Gram matrix ``K_n(t) = (1/2n) (R_tᵀ R_t − S_t²)`` (Chapter 5).

    ``R_t`` is the linear map ``r0 ↦ ρ(t)`` of :func:`loo_residuals` and
    ``S_t = e^{−Θt/n}`` (flow) or ``(I − (lr/n) Θ)^t`` (descent) the map
    ``r0 ↦ r(t)``, so that ``r0ᵀ K_n(t) r0 = (1/2n) Σ_i (‖ρ_i(t)‖² − ‖r_i(t)‖²)``
    for every ``r0``. ``K_n(0) = 0``; for invertible ``Θ``,
    ``K_n(∞) = (1/2n) Θ⁻¹ D⁻² Θ⁻¹`` with ``D = Diag(diag Θ⁻¹)`` (one output).
    Returns ``(N, N)`` symmetric, or ``(len(t), N, N)`` for an array ``t``.
    """
    theta, _, times, scalar, n, lr = kernel_problem(theta, None, t, outputs, lr)
    loo_map = _loo_map(theta, jnp.eye(theta.shape[0], dtype=theta.dtype), times, n, outputs, lr)  # R_t
    lam, u, tol = spectrum(theta)
    k = np.asarray(_gram_from_maps(loo_map, lam, u, jnp.asarray(times, theta.dtype), n, lr, tol))
    k = jnp.asarray(np.triu(k) + np.swapaxes(np.triu(k, 1), 1, 2))  # bitwise symmetric (XLA may not be)
    return k[0] if scalar else k


@partial(jax.jit, static_argnames=("n", "lr"))
def _gram_from_maps(loo_map, lam, u, t, n, lr, tol):
    """``(1/2n)(R_tᵀ R_t − S_t²)``, symmetrized; ``S_0 = I`` exactly so that ``K_n(0) = 0``."""
    s2 = jnp.einsum("ik,tk,jk->tij", u, decay(lam, t, n, lr, tol) ** 2, u)
    s2 = jnp.where((t == 0)[:, None, None], jnp.eye(u.shape[0], dtype=u.dtype), s2)
    k = (jnp.einsum("tji,tjk->tik", loo_map, loo_map) - s2) / (2 * n)
    return (k + jnp.swapaxes(k, 1, 2)) / 2


def predicted_gap(theta, r0, t, *, outputs=1, lr=None):
    """``(1/2n) Σ_i (‖ρ_i(t)‖² − ‖r_i(t)‖²)``, the LOO-predicted gap of kernel training (Chapter 5)."""
    theta, r0, times, scalar, n, lr = kernel_problem(theta, r0, t, outputs, lr)
    rho = _loo_map(theta, r0[:, None], times, n, outputs, lr)[..., 0]
    lam, u, tol = spectrum(theta)
    if lr is not None and np.isinf(times).any():
        check_descent_limit(lam, tol, n, lr)
    r = _residual_map(lam, u, r0, jnp.asarray(times, theta.dtype), n, lr, tol)
    gap = (jnp.sum(rho**2, axis=1) - jnp.sum(r**2, axis=1)) / (2 * n)
    return gap[0] if scalar else gap


# ----------------------------------------------------------------------------- the gap equation of K_n

def _own_blocks(theta, v, n, outputs):
    """``Bdiag(Θ) v``: each sample's ``C×C`` diagonal block ``Θ_ii`` applied to its own rows of ``v`` ``(..., N, m)``."""
    c = outputs
    blocks = theta.reshape(n, c, n, c)[jnp.arange(n), :, jnp.arange(n), :]  # (n, C, C)
    vb = v.reshape(v.shape[:-2] + (n, c, v.shape[-1]))
    return jnp.einsum("icd,...idm->...icm", blocks, vb).reshape(v.shape)


def _kernel_and_rows(theta, v, outputs, name):
    """Validated ``(Θ, v, n)`` for a quadratic form in ``v`` ``(..., N)``, in a common float dtype."""
    th = _checks.square_symmetric(theta, "theta")
    outputs = _checks.integer(outputs, "outputs", minimum=1)
    if th.shape[0] % outputs:
        raise ValueError(f"outputs={outputs} must divide the size of theta ({th.shape[0]} rows)")
    v = _checks.array(v, name)
    if v.ndim == 0 or v.shape[-1] != th.shape[0]:
        raise ValueError(f"{name} must have shape (..., {th.shape[0]}) (one entry per row of theta), got {v.shape}")
    dtype = jnp.result_type(float, th.dtype, v.dtype)
    return jnp.asarray(th, dtype), jnp.asarray(v, dtype), th.shape[0] // outputs


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
    returns a float or ``(...)``.
    """
    th, rho, n = _kernel_and_rows(theta, rho, outputs, "rho")
    out = jnp.sum(rho * _own_blocks(th, rho[..., None], n, outputs)[..., 0], axis=-1) / n**2
    return float(out) if out.ndim == 0 else np.asarray(out)


def in_sample_covariance(theta, r, *, outputs=1):
    """``(1/n²) rᵀ (Bdiag Θ − Θ/n) r``: the per-sample gradient covariance of the run, over ``n`` (Chapter 4).

    With per-sample gradients ``g_i = J_iᵀ r_i`` of the *main run*,
    ``(1/n) tr Cov_i[g_i] = (1/n)[(1/n) Σ_i ‖g_i‖² − ‖(1/n) Σ_i g_i‖²]`` is this
    quadratic form (``Bdiag`` keeps the ``C×C`` diagonal blocks). It is *not*
    the perturbation factor of the leave-one-out twin
    (:func:`perturbation_factor`, evaluated at the twins): it pairs the
    sample's pull with the run's residual ``r_i`` instead of the twin's
    ``ρ_i``, and decays to zero as the run interpolates. ``r``: ``(N,)`` or
    ``(..., N)``; returns a float or ``(...)``.
    """
    th, r, n = _kernel_and_rows(theta, r, outputs, "r")
    own = jnp.sum(r * _own_blocks(th, r[..., None], n, outputs)[..., 0], axis=-1)
    out = (own - jnp.einsum("...i,ij,...j->...", r, th, r) / n) / n**2
    return float(out) if out.ndim == 0 else np.asarray(out)


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


def _gap_terms(theta, r0, times, n, outputs, lr):
    """``(gap, contraction, perturbation)`` as bilinear forms in the columns of ``r0`` ``(N, m)``: ``(T, m, m)`` each.

    ``ρ``, ``r`` from one eigendecomposition; the twins' contracted residuals
    ``[Θ r^{(i)}]_i = Θ_ii ρ_i − n ρ̇_i`` (flow: ``ρ̇`` by Talbot inversion of
    ``z ρ̂ − r0``) or ``Θ_ii ρ_i(k) − (n/η)(ρ_i(k+1) − ρ_i(k))`` (descent).
    """
    spec = spectrum(theta)
    lam, u, tol = spec
    if lr is not None and np.isinf(times).any():
        check_descent_limit(lam, tol, n, lr)
    t = jnp.asarray(times, theta.dtype)
    if lr is None:
        rho = _loo_map(theta, r0, times, n, outputs, lr, spec=spec)
    else:  # steps k and k + 1 in one call: the per-sample spectra of Θ without each sample are computed once
        both = _loo_map(theta, r0, np.concatenate([times, times + 1]), n, outputs, lr, spec=spec)
        rho, ahead = both[: len(times)], both[len(times):]
    r = jnp.where((t == 0)[:, None, None], r0[None], _residual_map(lam, u, r0, t, n, lr, tol))  # r(0) = r0 exactly
    own_rho = _own_blocks(theta, rho, n, outputs)
    if lr is None:
        rate = np.zeros(rho.shape, theta.dtype)
        start = times == 0  # ρ̇_i(0) = −(1/n)([Θ r0]_i − Θ_ii r0_i)
        rate[start] = np.asarray(-(theta @ r0 - _own_blocks(theta, r0, n, outputs)) / n)
        middle = (times > 0) & ~np.isinf(times)
        if middle.any():
            tm = jnp.asarray(times[middle], theta.dtype)
            per_node = theta.shape[0] * r0.shape[1]
            chunk = int(min(max(1, _CHUNK_ELEMENTS // per_node), tm.size * (TALBOT_NODES // 2)))
            rate[middle] = np.asarray(_talbot_loo(lam, u, r0, tm, n, outputs, False, chunk, True))
        twin_pull = own_rho - n * jnp.asarray(rate)
    else:
        twin_pull = own_rho - (n / lr) * (ahead - rho)
    gram = lambda a, b: jnp.einsum("tim,tik->tmk", a, b)  # noqa: E731
    sym = lambda m: (m + jnp.swapaxes(m, 1, 2)) / 2  # noqa: E731
    gap = sym(gram(rho, rho) - gram(r, r)) / (2 * n)
    contraction = sym(gram(rho, twin_pull) - gram(r, jnp.einsum("ij,tjm->tim", theta, r))) / n**2
    perturbation = sym(gram(rho, own_rho)) / n**2
    return gap, contraction, perturbation


def gap_factors(theta, r0, t, *, outputs=1, lr=None):
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
    :class:`LinearizedGapFactors` of floats, or of ``(len(t),)`` arrays.
    """
    theta, r0, times, scalar, n, lr = kernel_problem(theta, r0, t, outputs, lr)
    terms = _gap_terms(theta, r0[:, None], times, n, outputs, lr)
    out = [np.asarray(term[:, 0, 0]) for term in terms]
    return LinearizedGapFactors(*(float(o[0]) if scalar else o for o in out))


def gap_factor_matrices(theta, t, *, outputs=1, lr=None):
    """The matrices of :func:`gap_factors`: ``K_n(t)``, ``C_n(t)``, ``P_n(t)`` with ``dK_n/dt = −C_n + P_n`` (Chapter 5).

    With ``R_t`` the map ``r0 ↦ ρ(t)`` and ``S_t = e^{−Θt/n}`` the map ``r0 ↦ r(t)``:
    ``P_n = (1/n²) R_tᵀ Bdiag(Θ) R_t`` (positive semidefinite) and
    ``C_n = (1/n²) [Σ_i sym(Q_iᵀ e_i e_iᵀ Θ Q_i) − S_t Θ S_t]``, ``Q_i = e^{−Θ P_{−i} t/n}``
    (the twin's residual map), computed from the columns of the identity in one
    eigendecomposition. ``K_n(T) = ∫₀ᵀ (P_n − C_n) dt``. Returns
    :class:`LinearizedGapFactors` of ``(N, N)`` or ``(len(t), N, N)`` arrays.
    """
    theta, _, times, scalar, n, lr = kernel_problem(theta, None, t, outputs, lr)
    terms = _gap_terms(theta, jnp.eye(theta.shape[0], dtype=theta.dtype), times, n, outputs, lr)
    return LinearizedGapFactors(*(term[0] if scalar else term for term in terms))


def _segment(lam, u, f0, r, lr, n, outputs):
    """One segment of constant kernel ``Θ = U Λ Uᵀ``: ``len(r)`` steps from ``F_0 = Uᵀ E_0``.

    With ``Q = I − (lr/n) Λ``, ``U_i`` the ``C`` rows of sample ``i`` and
    ``d_k = e_k + r_k`` (``e_k``: the twins' own blocks), the eigen-coordinates move as
    ``F_{k+1} = Q F_k + (lr/n) Λ U_iᵀ d_k`` (column ``i``), so the own blocks obey
    the Volterra recursion ``e_k = U_i Q^k F_0[:, i] + Σ_{j<k} H_{k−1−j}[i] d_j``
    with ``H_l[i] = (lr/n) U_i Λ Q^l U_iᵀ`` (``C×C``). Cost ``O(N² s)`` in matrix
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


def loo_trajectory(thetas, residuals, lr, *, outputs=1, cross=None, path=False):
    """LOO residuals at the end of a real gradient-descent run, with a moving kernel (Chapter 7).

    ``thetas`` ``(K, N, N)``: kernel snapshots ``Θ(t_k) = J_k J_kᵀ``, snapshot
    ``k`` used for steps ``[k s, (k+1) s)`` with ``s = steps // K`` (leftover
    steps use the last one); ``residuals`` ``((steps+1), N)``: the run's
    residuals ``r_t`` at every step. All twins at once: column ``i`` of
    ``E_t`` is twin ``i``'s offset ``e^{(i)}``, and the force on the twins is
    ``a_t = −(lr/n) (E_t − Bdiag(E_t) − Bdiag(r_t))`` (``Bdiag`` keeps the
    ``C`` rows of sample ``i`` in column ``i``). Returns
    ``ρ_i = r_i(T) + e^{(i)}_i(T)``, shape ``(N,)``; with ``path=True`` also the
    twins' leave-one-out residuals at every step before the last, ``ρ(k)``
    ``(steps, N)`` (the perturbation factor along the run,
    :func:`gramlib.baselines.contraction_free_loss`).

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
    cost ``K`` eigendecompositions (``≈ 9 N³`` flops each) plus
    ``O(steps · N² C + n C² steps²/K)``, instead of ``2 N² n`` per step for
    the literal recursion; the gain, about ``2 steps / (9 K C)``, is large for
    one output and fades for many classes with few steps per snapshot
    (appendix "Scaling up"). The two-time kernel adds ``K(K+1)/2`` products
    ``Θ(t_k, t_l) A_l`` (``N² n`` flops each).
    """
    th = _checks.array(thetas, "thetas", ndim=3)
    if th.shape[1] != th.shape[2] or th.shape[0] == 0:
        raise ValueError(f"thetas must have shape (K, N, N) with K >= 1, got {th.shape}")
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
        if not bool(jnp.all(jnp.isfinite(total))):  # one check per segment; find the culprit only on failure
            for l in range(k):
                _checks.array(cross(k, l), f"cross({k}, {l})")
            raise FloatingPointError(f"the two-time sum of segment {k} overflowed")
        return total

    e, forces, u, f, rhos = jnp.zeros((big_n, n), dtype), [], None, None, []
    for k in range(count):
        stop = steps if k == count - 1 else (k + 1) * s
        lam, u = jnp.linalg.eigh(th[k])
        if cross is not None and k:
            e = two_time(k, forces)
        f0 = u.T @ e
        f, own, history = _segment_jit(lam, u, f0, res[k * s: stop], lr, n, outputs)
        rhos.append(history.reshape(-1, big_n))  # d_j = e_j + r_j = ρ(j) within the segment
        if cross is not None:
            forces.append(_segment_forces(lam, u, f0, history, lr, n, outputs))
        e = u @ f
    if cross is not None:
        e = two_time(count, forces)
    own = jnp.sum(e.reshape(n, outputs, n) * jnp.eye(n, dtype=dtype)[:, None, :], axis=2).reshape(-1)
    if path:
        return res[-1] + own, jnp.concatenate(rhos)
    return res[-1] + own
