"""Exact leave-one-out residuals of kernel training (Chapters 4–5).

Kernel training with a constant Gram matrix ``Θ`` (``N×N``, ``N = nC``, rows
ordered (sample, output)) on ``L_S = (1/2n) Σ_i ‖f(x_i) − y_i‖²`` moves the
residual as ``ṙ = −(1/n) Θ r``. The leave-one-out twin trained on ``S∖i`` (same
start, same per-sample weight ``1/n``) has residuals ``r^{(i)}`` with
``ṙ^{(i)} = −(1/n) Θ P_{−i} r^{(i)}``, ``P_{−i}`` deleting the ``C`` rows of
sample ``i``; its residual at the left-out sample is the LOO residual
``ρ_i(t) = [r^{(i)}(t)]_i``. In the Laplace variable ``ω`` (``z`` in the code), with the
resolvent ``G(ω) = (nωI + Θ)^{-1}`` and ``[G]_ii`` its ``C×C`` diagonal block (the book's
notation; ``R`` is the leave-one-out map ``r0 ↦ ρ``),

    ρ̂_i(ω) = (ω [G(ω)]_ii)^{-1} [G(ω) r0]_i                       (Sherman–Morrison–Woodbury),

and one eigendecomposition ``Θ = U Λ Uᵀ`` makes each ``ω`` cost ``O(N²)``. The
time domain is reached with a fixed Talbot contour (Talbot 1979; optimized parameters of
Trefethen, Weideman & Schmelzer 2006).
``T = ∞`` and gradient descent use exact closed forms (see the functions). With a device
mesh (:func:`gramlib.devices.sample_mesh`), each device inverts the transform for its own
samples from its rows of ``U`` (appendix "Scaling up").
Every function accepts a :class:`gramlib.kernel_flow.Factorization` in place of ``Θ``;
:mod:`gramlib.effective_gram` builds ``K_n(t)`` from these residuals.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from .. import _checks
from ..devices import AXIS, pad_rows, row_blocks
from .kernel_flow import gain, kernel_problem, own_blocks

TALBOT_NODES = 32
"""Nodes of the fixed Talbot contour (16 evaluations thanks to conjugate symmetry)."""

_CHUNK_ELEMENTS = 1 << 22  # complex numbers per chunk of contour nodes (bounded memory)
_NULL_WEIGHT = 1e-8  # a sample "sees" the null space of Θ when its block weight exceeds this


# ----------------------------------------------------------------------------- Laplace domain

def talbot_contour(t, nodes=TALBOT_NODES):
    """Nodes ``z`` and weights ``w`` with ``f(t) ≈ Re Σ_k w_k F(z_k)`` for ``t > 0``.

    The optimized Talbot contour of Trefethen, Weideman & Schmelzer (2006), ``z(θ) = (N/t)(−0.6122 + 0.5017 θ
    cot(0.6407 θ) + 0.2645 i θ)``, midpoint rule in the contour's angle ``θ ∈ (−π, π)`` (``angle``
    below; not a kernel, which is ``theta`` everywhere else in the library), keeping the ``θ > 0``
    half (``F(z̄) = conj F(z)`` for real ``f``). ``t`` has shape ``(T,)``; returns two
    ``(T, nodes // 2)`` complex arrays.
    """
    half = nodes // 2
    angle = (jnp.arange(half) + 0.5) * (2 * jnp.pi / nodes)
    alpha = 0.6407
    cot = 1.0 / jnp.tan(alpha * angle)
    scale = nodes / t[:, None]
    z = scale * (-0.6122 + 0.5017 * angle * cot + 0.2645j * angle)
    dz = scale * (0.5017 * (cot - alpha * angle / jnp.sin(alpha * angle) ** 2) + 0.2645j)
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
    device's share of a mesh). Exact: ``(ω [G]_ii)^{-1} [G R0]_i``. ``first_order``: the twin contracted with
    the full ``Θ`` instead of ``Θ P_{−i}``, ``n (2I − nω [G]_ii) [G R0]_i``. ``rate``: the
    transform ``ω ρ̂_i(ω) − ρ_i(0) = [G]_ii^{-1} [G R0]_i − [R0]_i`` of the time derivative ``ρ̇_i``.
    """
    big_n, m = a.shape
    b = z.shape[0]
    c = outputs
    rows = u.shape[0]
    local = rows // c  # samples handled here
    weight = 1.0 / (n * z[:, None] + lam[None, :])  # (B, N): the eigenvalues of the resolvent G(ω), ω = z
    x = (weight[:, :, None] * a[None]).transpose(1, 0, 2).reshape(big_n, b * m)
    r_r0 = _real_times_complex(u, x).reshape(local, c, b, m).transpose(2, 0, 1, 3)
    u3 = u.reshape(local, c, big_n)
    uu = (u3[:, :, None, :] * u3[:, None, :, :]).reshape(local * c * c, big_n)
    blocks = _real_times_complex(uu, weight.T).T.reshape(b, local, c, c)  # [G]_ii
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
def _talbot_loo(lam, u, r0, t, n, outputs, first_order, chunk, rate):
    """Talbot inversion of ``ρ̂(z)`` (``rate``: of ``ρ̇``) at times ``t`` ``(T,)`` (finite, > 0); ``(T, N, m)``."""
    return _talbot_sum(lam, u, u.T @ r0, t, n, outputs, first_order, chunk, rate)


def _talbot_sum(lam, u, a, t, n, outputs, first_order, chunk, rate):
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


@lru_cache(maxsize=32)
def _sharded_talbot(mesh, n, outputs, first_order, chunk, rate):
    """:func:`_talbot_sum` with the rows of ``U`` (the samples) split over the ``"samples"`` axis of ``mesh``."""
    local = partial(_talbot_sum, n=n, outputs=outputs, first_order=first_order, chunk=chunk, rate=rate)
    return jax.jit(jax.shard_map(lambda lam, u_rows, a, t: local(lam, u_rows, a, t), mesh=mesh,
                                 in_specs=(P(), P(AXIS), P(), P()), out_specs=P(None, AXIS), check_vma=False))


def _talbot(fact, r0, times, first_order, rate, mesh):
    """The Talbot inversion for the columns of ``r0`` ``(N, m)`` at finite ``times > 0``, on one device or ``mesh``.

    The eigendecomposition is replicated; with a mesh, device ``d`` evaluates the ``O(N²)``
    work per node and time for its block of samples only (padded to a multiple of the devices).
    """
    lam, u, n, c = fact.eigenvalues, fact.eigenvectors, fact.n, fact.outputs
    t = jnp.asarray(times, fact.theta.dtype)
    chunk = int(min(max(1, _CHUNK_ELEMENTS // (r0.shape[0] * r0.shape[1])), t.size * (TALBOT_NODES // 2)))
    if mesh is None:
        return _talbot_loo(lam, u, r0, t, n, c, first_order, chunk, rate)
    blocks = row_blocks(mesh)
    share = -(-n // blocks)  # samples per device, padded
    u_rows = pad_rows(u.reshape(n, c, -1), share * blocks).reshape(share * blocks * c, -1)
    return _sharded_talbot(mesh, n, c, first_order, chunk, rate)(lam, u_rows, u.T @ r0, t)[:, : u.shape[0]]


# ----------------------------------------------------------------------------- exact closed forms

@partial(jax.jit, static_argnames=("n", "outputs"))
def _loo_limit(lam, u, r0, tol, n, outputs):
    """``ρ(∞) = lim_{ω→0} [G(ω)]_ii^{-1} [G(ω) r0]_i``, also for singular ``Θ``; returns ``(N, m)``.

    With ``P`` the projector on the null space of ``Θ`` and ``Θ⁺`` the
    pseudo-inverse, ``[G(ω)]_ii = P_ii/(nω) + Θ⁺_ii + O(ω)``. If sample ``i``
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


@partial(jax.jit, static_argnames=("n", "outputs"))
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

def _assemble(times, pieces, shape, dtype):
    """``(T,) + shape`` from ``pieces``: ``(mask, values)`` with ``values`` the rows where the static ``mask`` holds.

    The masks come from the concrete ``times``; the values may be traced (``jax.jit``,
    ``jax.vmap``, ``jax.grad``), so the result is put together with JAX, not in place.
    """
    out = jnp.zeros((times.size,) + shape, dtype)
    for mask, values in pieces:
        if mask.any():
            out = out.at[np.flatnonzero(mask)].set(jnp.asarray(values, dtype))
    return out


def _loo_map(fact, r0, times, lr, *, first_order=False, mesh=None):
    """The one dispatch: LOO residuals for the columns of ``r0`` ``(N, m)`` at validated ``times``; ``(T, N, m)``.

    ``t = 0``: ``r0``; ``t = inf``: the exact limit; finite ``t > 0``: the Talbot inversion
    (gradient flow, on one device or ``mesh``) or the exact descent formula (``lr``).
    ``times`` are concrete (they pick the formula); everything else may be traced.
    """
    times = np.asarray(times, dtype=float)
    inf = np.isinf(times)
    middle = (times > 0) & ~inf
    pieces = [(times == 0, jnp.broadcast_to(r0, (int(np.sum(times == 0)),) + r0.shape))]
    if inf.any():
        limit = _first_order_limit if first_order else _loo_limit
        value = limit(fact.eigenvalues, fact.eigenvectors, r0, fact.tol, fact.n, fact.outputs)
        pieces.append((inf, jnp.broadcast_to(value, (int(inf.sum()),) + r0.shape)))
    if middle.any():
        if lr is None or first_order:
            done = _talbot(fact, r0, times[middle], first_order, False, mesh)
        else:
            done = _loo_descent(fact.theta, r0, jnp.asarray(times[middle], fact.theta.dtype), fact.n, fact.outputs, lr)
        pieces.append((middle, done))
    return _assemble(times, pieces, r0.shape, fact.theta.dtype)


def _shaped(out, r0, scalar):
    """``(T, N, m)`` back to the caller's shapes: drop ``m`` for a vector ``r0``, ``T`` for a number ``t``."""
    out = out if r0.ndim == 2 else out[..., 0]
    return out[0] if scalar else out


def _columns(r0):
    return r0 if r0.ndim == 2 else r0[:, None]


def _check_mesh(mesh, lr):
    if mesh is not None:
        row_blocks(mesh)
        if lr is not None:
            raise ValueError("mesh splits the gradient-flow computation over devices; with lr (gradient descent) "
                             "pass mesh=None")


@_checks.public
def loo_residuals(theta, r0, t, *, outputs=None, lr=None, mesh=None):
    """Exact leave-one-out residuals ``ρ(t)`` of kernel training with constant ``theta`` (Chapter 5).

    ``theta`` is the ``N×N`` Gram matrix (``N = n * outputs``, rows ordered
    (sample, output)) or its :class:`gramlib.kernel_flow.Factorization`, ``r0`` the ``(N,)``
    initial residual (or ``(N, m)``: ``m`` of them at once). Without ``lr``:
    gradient flow ``ṙ = −(1/n) Θ r`` for time ``t``, inverted from
    ``ρ̂_i(ω) = (ω [G(ω)]_ii)^{-1} [G(ω) r0]_i``, ``G(ω) = (nωI + Θ)^{-1}``, on a
    32-node Talbot contour; ``mesh`` (:func:`gramlib.devices.sample_mesh`) splits that
    work by samples over its devices. With ``lr``: gradient descent
    ``r_{k+1} = (I − (lr/n) Θ) r_k`` for ``t = k`` steps, computed exactly
    through the spectrum of ``Θ`` without each sample (one ``(N−C)×(N−C)``
    eigendecomposition per sample, ``O(n N³)``, one device; :func:`gramlib.trajectory.loo_trajectory`
    integrates real runs step by step instead). ``t`` is a number or a
    1-D array; ``t = inf`` gives the limit ``[Θ⁻¹ r0]_i / [Θ⁻¹]_ii`` (and its
    continuous extension when ``Θ`` is singular, e.g. duplicated inputs).
    Leaving sample ``i`` out removes all ``outputs`` rows of that sample.
    Returns ``(N,)``, or ``(len(t), N)`` for an array ``t`` (``(…, N, m)`` for columns), in the
    float dtype of ``theta``. Works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` in
    ``theta``, ``r0`` and ``lr``; ``t``, ``outputs`` and ``mesh`` are static (``t`` picks the
    formula: close over it). The derivative in ``theta`` needs distinct eigenvalues; at
    ``t = inf`` with ``outputs > 1`` it is NaN (the limit diagonalizes each sample's ``C×C``
    null-space block, zero for an invertible ``Θ``: a degenerate eigendecomposition).
    """
    _check_mesh(mesh, lr)
    fact, r0, times, scalar, lr = kernel_problem(theta, r0, t, outputs, lr, columns=True)
    return _shaped(_loo_map(fact, _columns(r0), times, lr, mesh=mesh), r0, scalar)


@_checks.public
def loo_rates(theta, r0, t, *, outputs=None, mesh=None):
    """``ρ̇(t)``, the time derivative of the leave-one-out residuals under gradient flow (Chapter 5).

    Its Laplace transform is ``ω ρ̂_i(ω) − ρ_i(0) = [G(ω)]_ii^{-1} [G(ω) r0]_i − [r0]_i``,
    inverted on the Talbot contour as in :func:`loo_residuals` (``mesh`` likewise); at
    ``t = 0`` every sample but ``i`` pulls, ``ρ̇_i(0) = −(1/n)([Θ r0]_i − Θ_ii r0_i)``, and
    ``ρ̇(∞) = 0``. Arguments, shapes, dtype and transformations as :func:`loo_residuals` (no ``lr``).
    """
    _check_mesh(mesh, None)
    fact, r0, times, scalar, _ = kernel_problem(theta, r0, t, outputs, None, columns=True)
    cols = _columns(r0)
    start = times == 0
    pieces = []
    if start.any():
        rate0 = -(fact.theta @ cols - own_blocks(fact, cols)) / fact.n
        pieces.append((start, jnp.broadcast_to(rate0, (int(start.sum()),) + cols.shape)))
    middle = (times > 0) & ~np.isinf(times)
    if middle.any():
        pieces.append((middle, _talbot(fact, cols, times[middle], False, True, mesh)))
    return _shaped(_assemble(times, pieces, cols.shape, fact.theta.dtype), r0, scalar)


@_checks.public
def first_order_loo_residuals(theta, r0, t, *, outputs=None):
    """The first-order trap (Chapter 4): the twin contracted with the full-data ``Θ``.

    Replacing the twin's ``Θ P_{−i}`` by ``Θ`` gives
    ``ė^{(i)} = −(1/n) Θ (e^{(i)} − e_i r_i(t))`` and LOO residuals
    ``ρ^FO_i = r_i + e^{(i)}_i`` with Laplace transform
    ``n (2I − nω[G]_ii)[G r0]_i``; they tend to ``0`` as ``t → ∞`` whenever
    ``Θ`` is invertible. Gradient flow only. Same shapes, dtype and transformations as
    :func:`loo_residuals`.
    """
    fact, r0, times, scalar, _ = kernel_problem(theta, r0, t, outputs, None)
    return _shaped(_loo_map(fact, r0[:, None], times, None, first_order=True), r0, scalar)
