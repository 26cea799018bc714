"""The linearized residual dynamics of one kernel (Chapters 4–5).

Linearizing a network ``f`` around its initialization and training on
``L_S = (1/2n) Σ_i ‖f(x_i) − y_i‖²`` gives, with the ``N×N`` Gram matrix ``Θ``
(``N = nC``, rows ordered (sample, output)), the residual dynamics

    gradient flow      ṙ = −(1/n) Θ r          ⇒  r(t) = e^{−Θt/n} r0,
    gradient descent   r_{k+1} = (I − (η/n) Θ) r_k  ⇒  r_k = (I − (η/n) Θ)^k r0,

computed through one eigendecomposition ``Θ = U Λ Uᵀ``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks


def kernel_problem(theta, r0, t, outputs, lr, *, r0_name="r0"):
    """Validate ``(theta, r0, t, outputs, lr)`` of a kernel-training problem.

    Returns ``(theta, r0, times, scalar_t, n, lr)`` with ``theta`` and ``r0`` as
    JAX arrays of a common float dtype. ``r0`` may be ``None`` (not checked).
    Raises ``ValueError`` naming the offending argument.
    """
    th = _checks.square_symmetric(theta, "theta")
    outputs = _checks.integer(outputs, "outputs", minimum=1)
    big_n = th.shape[0]
    if big_n == 0:
        raise ValueError("theta must not be empty")
    if big_n % outputs:
        raise ValueError(f"outputs={outputs} must divide the size of theta ({big_n} rows)")
    n = big_n // outputs
    if n < 2:
        raise ValueError(f"theta must hold at least 2 samples for leave-one-out, got n={n}")
    if lr is not None:
        lr = _checks.positive(lr, "lr")
    times, scalar = _checks.times(t, "t", integer_steps=lr is not None)
    dtype = jnp.result_type(float, th.dtype)
    if r0 is not None:
        _checks.array(r0, r0_name, shape=(big_n,))
        r0 = jnp.asarray(r0, dtype)
    return jnp.asarray(th, dtype), r0, times, scalar, n, lr


@jax.jit
def _eigh(theta):
    return jnp.linalg.eigh(theta)


def spectrum(theta):
    """``Θ = U diag(λ) Uᵀ`` and the null-space tolerance; refuses indefinite ``theta``.

    Eigenvalues ``λ ≤ tol = 10 N ε λ_max`` are treated as zero (``ε`` the
    machine epsilon of the dtype); ``λ < −sqrt(ε) λ_max`` means ``theta`` is not
    a Gram matrix.
    """
    lam, u = _eigh(theta)
    lam_np = np.asarray(lam)
    top = max(float(np.max(np.abs(lam_np))), np.finfo(lam_np.dtype).tiny)
    eps = float(np.finfo(lam_np.dtype).eps)
    if lam_np.min() < -np.sqrt(eps) * top:
        raise ValueError(f"theta must be positive semidefinite (a Gram matrix); smallest eigenvalue "
                         f"{lam_np.min():.3g} vs largest {lam_np.max():.3g}")
    return lam, u, 10.0 * lam_np.size * eps * top


def check_descent_limit(lam, tol, n, lr):
    """Gradient descent converges (``t = inf`` allowed) only if ``lr λ_max / n < 2``."""
    a = lr * float(np.max(np.asarray(lam))) / n
    if a >= 2:
        raise ValueError(f"lr={lr} is too large for t=inf: lr*λ_max/n = {a:.4g} >= 2, gradient descent diverges")


def decay(lam, t, n, lr, tol):
    """Spectral factor of the residual map: ``e^{−λt/n}`` (flow) or ``(1 − lr λ/n)^t`` (descent).

    ``lam`` has shape ``(N,)``, ``t`` shape ``(T,)`` (``inf`` allowed, giving the
    projector on the null space ``λ ≤ tol``); returns ``(T, N)``.
    """
    t = t[:, None]
    null = lam <= tol
    if lr is None:
        finite = jnp.exp(-jnp.maximum(lam, 0.0) * jnp.where(jnp.isinf(t), 0.0, t) / n)
    else:
        q = 1.0 - lr * lam / n
        k = jnp.where(jnp.isinf(t), 0.0, t)
        mag = jnp.exp(k * jnp.log(jnp.where(q == 0, 1.0, jnp.abs(q))))
        odd = jnp.mod(k, 2.0) == 1.0
        finite = jnp.where(q == 0, jnp.where(k == 0, 1.0, 0.0), jnp.where((q < 0) & odd, -mag, mag))
    return jnp.where(jnp.isinf(t), null.astype(lam.dtype), finite)


def gain(lam, t, n, lr, tol):
    """``g(λ) = (1 − decay(λ, t))/λ`` with ``∫₀ᵗ r = n U g(Λ) Uᵀ r0`` (flow; descent: ``Σ_{j<k} r_j``).

    Continuous at ``λ = 0`` (``g = t/n``, or ``k lr/n``) for finite ``t``; at
    ``t = inf``, ``g = 1/λ`` on ``λ > tol`` and ``0`` on the null space. Shapes as
    :func:`decay`.
    """
    t = t[:, None]
    k = jnp.where(jnp.isinf(t), 0.0, t)
    x = (lr if lr is not None else 1.0) * lam / n
    if lr is None:
        one_minus = -jnp.expm1(-x * k)
    else:  # 1 − (1 − x)^k, accurately for small x, with the sign of (1 − x)^k for x > 1
        q = 1.0 - x
        mag = jnp.exp(k * jnp.log(jnp.where(q == 0, 1.0, jnp.abs(q))))
        power = jnp.where(q == 0, jnp.where(k == 0, 1.0, 0.0),
                          jnp.where((q < 0) & (jnp.mod(k, 2.0) == 1.0), -mag, mag))
        one_minus = jnp.where(x <= 0.5, -jnp.expm1(k * jnp.log1p(-jnp.minimum(x, 0.5))), 1.0 - power)
    tiny = jnp.abs(lam) < jnp.finfo(lam.dtype).tiny * 1e10
    finite = jnp.where(tiny, k * (lr if lr is not None else 1.0) / n, one_minus / jnp.where(tiny, 1.0, lam))
    at_inf = jnp.where(lam > tol, 1.0 / jnp.where(lam > tol, lam, 1.0), 0.0)
    return jnp.where(jnp.isinf(t), at_inf, finite)


@partial(jax.jit, static_argnames=("n", "lr"))
def _test_map(lam, u, cross, r0, r0_test, t, n, lr, tol):
    return r0_test[None] - jnp.einsum("ik,tk,k->ti", cross @ u, gain(lam, t, n, lr, tol), u.T @ r0)


def kernel_test_residuals(theta, theta_test, r0, r0_test, t, *, outputs=1, lr=None):
    """Residuals at test points of kernel training with constant ``theta`` (Chapter 4).

    ``theta_test`` ``(M, N)`` is the cross Gram matrix ``Θ(X_*, X)``, ``r0_test``
    ``(M,)`` the initial test residuals. Since ``ṙ_* = −(1/n) Θ(X_*, X) r(t)``,
    ``r_*(t) = r0_* − Θ(X_*, X) U g(Λ) Uᵀ r0`` with ``g(λ) = (1 − e^{−λt/n})/λ``
    (descent: ``(1 − (1 − lr λ/n)^t)/λ``); ``t = inf`` gives kernel regression.
    Returns ``(M,)`` or ``(len(t), M)``.
    """
    theta, r0, times, scalar, n, lr = kernel_problem(theta, r0, t, outputs, lr)
    big_n = theta.shape[0]
    cross = _checks.array(theta_test, "theta_test", ndim=2, shape=(None, big_n))
    rt = _checks.array(r0_test, "r0_test", shape=(cross.shape[0],))
    lam, u, tol = spectrum(theta)
    if lr is not None and np.isinf(times).any():
        check_descent_limit(lam, tol, n, lr)
    out = _test_map(lam, u, jnp.asarray(cross, theta.dtype), r0, jnp.asarray(rt, theta.dtype),
                    jnp.asarray(times, theta.dtype), n, lr, tol)
    return out[0] if scalar else out


@partial(jax.jit, static_argnames=("n", "lr"))
def _residual_map(lam, u, r0, t, n, lr, tol):
    return jnp.einsum("ik,tk,k...->ti...", u, decay(lam, t, n, lr, tol), u.T @ r0)


def kernel_residuals(theta, r0, t, *, outputs=1, lr=None):
    """Residuals of kernel training with constant Gram matrix ``theta`` (Chapter 4).

    Gradient flow (``lr=None``): ``r(t) = e^{−Θt/n} r0``; gradient descent with
    step ``lr``: ``r_k = (I − (lr/n) Θ)^k r0`` with ``t = k`` steps. ``n = N /
    outputs``; ``t`` a scalar or 1-D array, ``inf`` allowed (the projection of
    ``r0`` on the null space of ``Θ``). Returns ``(N,)`` or ``(len(t), N)``.
    """
    theta, r0, times, scalar, n, lr = kernel_problem(theta, r0, t, outputs, lr)
    lam, u, tol = spectrum(theta)
    if lr is not None and np.isinf(times).any():
        check_descent_limit(lam, tol, n, lr)
    out = _residual_map(lam, u, r0, jnp.asarray(times, theta.dtype), n, lr, tol)
    return out[0] if scalar else out


def residual_loss(r, n):
    """``(1/2n) ‖r‖²`` over the last axis: the loss ``L = (1/2n) Σ_i ‖r_i‖²`` of stacked residuals (Chapter 1).

    ``r`` ``(..., N)`` holds the residuals of ``n`` samples stacked as ``(sample, output)``
    rows (``N = nC``); leave-one-out residuals ``ρ`` give the leave-one-out loss. Returns a
    float for one vector, else an array of shape ``r.shape[:-1]``.
    """
    r = _checks.array(r, "r", ndim=(1, 2, 3))
    n = _checks.integer(n, "n", minimum=1)
    out = 0.5 * np.sum(np.asarray(r, float) ** 2, axis=-1) / n
    return float(out) if out.ndim == 0 else out
