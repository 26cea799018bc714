"""The linearized residual dynamics of one kernel (Chapters 4–5).

Linearizing a network ``f`` around its initialization and training on
``L_S = (1/2n) Σ_i ‖f(x_i) − y_i‖²`` gives, with the ``N×N`` Gram matrix ``Θ``
(``N = nC``, rows ordered (sample, output)), the residual dynamics

    gradient flow      ṙ = −(1/n) Θ r          ⇒  r(t) = e^{−Θt/n} r0,
    gradient descent   r_{k+1} = (I − (η/n) Θ) r_k  ⇒  r_k = (I − (η/n) Θ)^k r0,

computed through one eigendecomposition ``Θ = U Λ Uᵀ``. :func:`factorize` computes it once
(a :class:`Factorization`); every linearized-dynamics function of the library accepts the
factorization in place of the matrix, like the cached ``predict_fn`` of neural-tangents.

Compiled kernels take the step ``lr`` as a traced argument, so a new learning rate does not
compile again; ``lr=None`` (gradient flow) is an empty pytree, so flow and descent are two
compiled versions of the same function.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks


class Factorization(NamedTuple):
    """``Θ = U diag(λ) Uᵀ``, computed once by :func:`factorize` (Chapters 4–5).

    ``theta`` ``(N, N)`` in a float dtype; ``eigenvalues`` ``λ`` ascending and
    ``eigenvectors`` ``U`` (columns); eigenvalues ``λ ≤ tol`` span the null space; ``n``
    samples of ``outputs`` rows each (``N = n · outputs``). Pass it as ``theta`` to any
    linearized-dynamics function: nothing is validated or decomposed again. A JAX pytree
    whose leaves are ``theta``, ``eigenvalues``, ``eigenvectors`` and ``tol`` (``n`` and
    ``outputs`` are static), so it can be passed through ``jax.jit`` and ``jax.vmap``.
    """

    theta: Any
    eigenvalues: Any
    eigenvectors: Any
    tol: float
    n: int
    outputs: int


jax.tree_util.register_pytree_node(
    Factorization, lambda f: ((f.theta, f.eigenvalues, f.eigenvectors, f.tol), (f.n, f.outputs)),
    lambda static, leaves: Factorization(*leaves, *static))


def _checked_kernel(theta, outputs):
    """``(Factorization, outputs)``, or the validated matrix (JAX, float dtype) and its ``outputs``.

    ``outputs=None`` means 1 for a matrix and the factorization's own for a factorization; an
    explicit ``outputs`` that contradicts the factorization is a ``ValueError``.
    """
    if isinstance(theta, Factorization):
        if outputs is not None and _checks.integer(outputs, "outputs", minimum=1) != theta.outputs:
            raise ValueError(f"outputs={outputs} contradicts the factorization of theta, "
                             f"made with outputs={theta.outputs}")
        return theta, theta.outputs
    th = _checks.square_symmetric(theta, "theta")
    outputs = 1 if outputs is None else _checks.integer(outputs, "outputs", minimum=1)
    big_n = th.shape[0]
    if big_n == 0:
        raise ValueError("theta must not be empty")
    if big_n % outputs:
        raise ValueError(f"outputs={outputs} must divide the size of theta ({big_n} rows)")
    if big_n // outputs < 2:
        raise ValueError(f"theta must hold at least 2 samples for leave-one-out, got n={big_n // outputs}")
    return jnp.asarray(theta, jnp.result_type(float, th.dtype)), outputs  # a JAX theta itself: checked once


@jax.jit
def _eigh(theta):
    return jnp.linalg.eigh(theta)


def _decompose(theta, outputs):
    """The :class:`Factorization` of a validated matrix; refuses an indefinite ``theta``.

    Null-space tolerance ``tol = N ε λ_max`` (``ε`` the machine epsilon of the dtype), the
    convention of ``numpy.linalg.matrix_rank``: a backward-stable symmetric eigensolver
    returns the exact eigenvalues of ``Θ + E`` with ``‖E‖₂ ≤ p(N) ε ‖Θ‖₂``, so by Weyl's
    inequality each computed ``λ`` is within ``p(N) ε λ_max`` of the true one, and ``p(N) = N``
    is the customary bound of that factor (Golub & Van Loan, §8.1; LAPACK's error bounds grow
    more slowly). Below it an eigenvalue cannot be told from zero; above it, it can. The
    former ``10 N ε λ_max`` declared well-conditioned float32 kernels singular (a 400-sample
    ReLU MLP: ``λ_min = 0.031`` under a tolerance of 0.035). ``λ < −√ε λ_max`` means
    ``theta`` is not a Gram matrix (checked on a concrete ``theta`` only; under a JAX
    transformation ``tol`` is a traced scalar and nothing is refused).
    """
    lam, u = _eigh(theta)
    if _checks.is_traced(lam):
        eps = jnp.finfo(lam.dtype).eps
        tol = lam.size * eps * jnp.maximum(jnp.max(jnp.abs(lam)), jnp.finfo(lam.dtype).tiny)
        return Factorization(theta, lam, u, tol, theta.shape[0] // outputs, outputs)
    lam_np = np.asarray(lam)
    top = max(float(np.max(np.abs(lam_np))), np.finfo(lam_np.dtype).tiny)
    eps = float(np.finfo(lam_np.dtype).eps)
    if _checks.concrete(theta, "definite") and lam_np.min() < -np.sqrt(eps) * top:
        raise ValueError(f"theta must be positive semidefinite (a Gram matrix); smallest eigenvalue "
                         f"{lam_np.min():.3g} vs largest {lam_np.max():.3g}")
    return Factorization(theta, lam, u, lam_np.size * eps * top, theta.shape[0] // outputs, outputs)


@_checks.public
def factorize(theta, *, outputs=None):
    """``Θ = U Λ Uᵀ`` once, for every linearized-dynamics function (Chapters 4–5).

    ``theta``: the ``N×N`` Gram matrix (symmetric, positive semidefinite, ``N = n ·
    outputs`` with ``n ≥ 2``), rows ordered (sample, output); ``outputs`` defaults to 1. A
    :class:`Factorization` is returned as it is (an explicit ``outputs`` must agree with it).
    The factors keep the float dtype of ``theta`` (an integer ``theta`` becomes float).
    Works under ``jax.jit``/``jax.vmap``/``jax.grad`` (``outputs`` static; the derivative
    of the eigenvectors needs distinct eigenvalues).
    """
    th, outputs = _checked_kernel(theta, outputs)
    return th if isinstance(th, Factorization) else _decompose(th, outputs)


class KernelProblem(NamedTuple):
    """A validated kernel-training problem: ``factorization``, ``r0``, ``times``, ``scalar`` (``t`` was a number), ``lr``."""

    factorization: Factorization
    r0: Any
    times: np.ndarray
    scalar: bool
    lr: float | None


def kernel_problem(theta, r0, t, outputs, lr, *, r0_name="r0", columns=False, static_times=True):
    """Validate ``(theta, r0, t, outputs, lr)`` of a kernel-training problem, then factorize ``theta``.

    ``theta`` a matrix or a :class:`Factorization`; ``r0`` the ``(N,)`` initial residual
    (``columns``: also ``(N, m)``, ``m`` residuals at once), or ``None`` (not checked); ``t``
    a time or 1-D array (whole steps when ``lr`` is given). Gradient descent to ``t = inf``
    needs ``lr λ_max / n < 2``. Raises ``ValueError`` naming the offending argument before
    any eigendecomposition. Returns a :class:`KernelProblem`, ``r0`` in the dtype of ``Θ``.
    ``static_times``: ``t`` must be concrete (see :func:`gramlib._checks.times`); otherwise a
    traced ``t`` is allowed and ``times`` is a JAX array.
    """
    th, outputs = _checked_kernel(theta, outputs)
    if lr is not None:
        lr = _checks.positive(lr, "lr")
    times, scalar = _checks.times(t, "t", integer_steps=lr is not None, static=static_times)
    matrix = th.theta if isinstance(th, Factorization) else th
    if r0 is not None:
        big_n = matrix.shape[0]
        if columns:
            r0 = _checks.array(r0, r0_name, ndim=(1, 2))
            if r0.shape[0] != big_n:
                raise ValueError(f"{r0_name} must have {big_n} rows (one per row of theta), got shape {r0.shape}")
        else:
            _checks.array(r0, r0_name, shape=(big_n,))
        r0 = jnp.asarray(r0, matrix.dtype)
    fact = th if isinstance(th, Factorization) else _decompose(th, outputs)
    if lr is not None and not _checks.is_traced((times, lr, fact.eigenvalues)) and np.isinf(times).any():
        a = lr * float(np.max(np.asarray(fact.eigenvalues))) / fact.n
        if a >= 2:
            raise ValueError(f"lr={lr} is too large for t=inf: lr*λ_max/n = {a:.4g} >= 2, gradient descent diverges")
    return KernelProblem(fact, r0, times, scalar, lr)


def descent_power(x, k):
    """``((1 − x)^k, 1 − (1 − x)^k)`` for real ``x`` and whole ``k ≥ 0`` (float arrays, broadcast).

    The spectral factors of ``k`` gradient-descent steps, ``x = η λ`` (Chapter 1) or
    ``η λ / n`` (Chapter 4): the power keeps the sign of ``(1 − x)^k`` for ``x > 1`` and
    ``0⁰ = 1``; ``1 − (1 − x)^k = −expm1(k log1p(−x))`` is accurate for small ``x``.
    """
    q = 1.0 - x
    mag = jnp.exp(k * jnp.log(jnp.where(q == 0, 1.0, jnp.abs(q))))
    power = jnp.where(q == 0, jnp.where(k == 0, 1.0, 0.0), jnp.where((q < 0) & (jnp.mod(k, 2.0) == 1.0), -mag, mag))
    one_minus = jnp.where(x <= 0.5, -jnp.expm1(k * jnp.log1p(-jnp.minimum(x, 0.5))), 1.0 - power)
    return power, one_minus


def decay(lam, t, n, lr, tol):
    """Spectral factor of the residual map: ``e^{−λt/n}`` (flow, ``lr=None``) or ``(1 − lr λ/n)^t`` (descent).

    ``lam`` has shape ``(N,)``, ``t`` shape ``(T,)`` (``inf`` allowed, giving the
    projector on the null space ``λ ≤ tol``); returns ``(T, N)``.
    """
    t = t[:, None]
    null = lam <= tol
    k = jnp.where(jnp.isinf(t), 0.0, t)
    if lr is None:
        finite = jnp.exp(-jnp.maximum(lam, 0.0) * k / n)
    else:
        finite = descent_power(lr * lam / n, k)[0]
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
    one_minus = -jnp.expm1(-x * k) if lr is None else descent_power(x, k)[1]
    tiny = jnp.abs(lam) < jnp.finfo(lam.dtype).tiny * 1e10
    finite = jnp.where(tiny, k * (lr if lr is not None else 1.0) / n, one_minus / jnp.where(tiny, 1.0, lam))
    at_inf = jnp.where(lam > tol, 1.0 / jnp.where(lam > tol, lam, 1.0), 0.0)
    return jnp.where(jnp.isinf(t), at_inf, finite)


@partial(jax.jit, static_argnames=("n",))
def _test_map(lam, u, theta_test, r0, r0_test, t, n, lr, tol):
    return r0_test[None] - jnp.einsum("ik,tk,k->ti", theta_test @ u, gain(lam, t, n, lr, tol), u.T @ r0)


@_checks.public
def kernel_test_residuals(theta, theta_test, r0, r0_test, t, *, outputs=None, lr=None):
    """Residuals at test points of kernel training with constant ``theta`` (Chapter 4).

    ``theta_test`` ``(M, N)`` is the cross Gram matrix ``Θ(X_*, X)``, ``r0_test``
    ``(M,)`` the initial test residuals. Since ``ṙ_* = −(1/n) Θ(X_*, X) r(t)``,
    ``r_*(t) = r0_* − Θ(X_*, X) U g(Λ) Uᵀ r0`` with ``g(λ) = (1 − e^{−λt/n})/λ``
    (descent: ``(1 − (1 − lr λ/n)^t)/λ``); ``t = inf`` gives kernel regression.
    ``theta`` may be a :class:`Factorization`. Returns ``(M,)`` or ``(len(t), M)``, in the
    float dtype of ``theta``. Works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (``t``
    and ``lr`` may be traced; ``outputs`` is static).
    """
    th, _ = _checked_kernel(theta, outputs)
    big_n = (th.theta if isinstance(th, Factorization) else th).shape[0]
    theta_test = _checks.array(theta_test, "theta_test", ndim=2, shape=(None, big_n))
    rt = _checks.array(r0_test, "r0_test", shape=(theta_test.shape[0],))
    fact, r0, times, scalar, lr = kernel_problem(th, r0, t, outputs, lr, static_times=False)
    dtype = fact.theta.dtype
    out = _test_map(fact.eigenvalues, fact.eigenvectors, jnp.asarray(theta_test, dtype), r0, jnp.asarray(rt, dtype),
                    jnp.asarray(times, dtype), fact.n, lr, fact.tol)
    return out[0] if scalar else out


@partial(jax.jit, static_argnames=("n",))
def _residual_map(lam, u, r0, t, n, lr, tol):
    return jnp.einsum("ik,tk,k...->ti...", u, decay(lam, t, n, lr, tol), u.T @ r0)


@_checks.public
def kernel_residuals(theta, r0, t, *, outputs=None, lr=None):
    """Residuals of kernel training with constant Gram matrix ``theta`` (Chapter 4).

    Gradient flow (``lr=None``): ``r(t) = e^{−Θt/n} r0``; gradient descent with
    step ``lr``: ``r_k = (I − (lr/n) Θ)^k r0`` with ``t = k`` steps. ``n = N /
    outputs``; ``t`` a scalar or 1-D array, ``inf`` allowed (the projection of
    ``r0`` on the null space of ``Θ``). ``theta`` may be a :class:`Factorization`;
    ``r0`` is ``(N,)`` or ``(N, m)`` (``m`` residuals at once). Returns ``(N,)`` or
    ``(len(t), N)`` (``(…, N, m)`` for columns), in the float dtype of ``theta``. Works under
    ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (``t`` and ``lr`` may be traced, ``outputs``
    is static; the derivative in ``theta`` needs distinct eigenvalues).
    """
    fact, r0, times, scalar, lr = kernel_problem(theta, r0, t, outputs, lr, columns=True, static_times=False)
    out = _residual_map(fact.eigenvalues, fact.eigenvectors, r0, jnp.asarray(times, fact.theta.dtype), fact.n, lr,
                        fact.tol)
    return out[0] if scalar else out


@_checks.public
def own_blocks(theta, v, *, outputs=None):
    """``Bdiag(Θ) v``: each sample's ``C×C`` diagonal block ``Θ_ii`` applied to its own rows of ``v`` (Chapters 4–5).

    ``theta`` a square matrix or a :class:`Factorization` (``C = outputs``, default 1 or the
    factorization's); ``v`` ``(..., N, m)``. Returns a JAX array of the shape of ``v``, in the
    common float dtype.
    """
    if isinstance(theta, Factorization):
        th, c = _checked_kernel(theta, outputs)[0].theta, theta.outputs
    else:
        th = _checks.array(theta, "theta", ndim=2)
        c = 1 if outputs is None else _checks.integer(outputs, "outputs", minimum=1)
        if th.shape[0] != th.shape[1] or th.shape[0] % c:
            raise ValueError(f"theta must be a square matrix of n·outputs rows (outputs={c}), got shape {th.shape}")
    big_n = th.shape[0]
    a = _checks.array(v, "v")
    if a.ndim < 2 or a.shape[-2] != big_n:
        raise ValueError(f"v must have shape (..., {big_n}, m) (rows of theta on axis -2), got {a.shape}")
    n = big_n // c
    dtype = jnp.result_type(float, th.dtype, a.dtype)
    blocks = jnp.asarray(th, dtype).reshape(n, c, n, c)[jnp.arange(n), :, jnp.arange(n), :]  # (n, C, C)
    vb = jnp.asarray(v, dtype).reshape(a.shape[:-2] + (n, c, a.shape[-1]))
    return jnp.einsum("icd,...idm->...icm", blocks, vb).reshape(a.shape)


@_checks.public
def residual_loss(r, n):
    """``(1/2n) ‖r‖²`` over the last axis: the loss ``L = (1/2n) Σ_i ‖r_i‖²`` of stacked residuals (Chapter 1).

    ``r`` ``(..., N)`` holds the residuals of ``n`` samples stacked as ``(sample, output)``
    rows (``N = nC``); leave-one-out residuals ``ρ`` give the leave-one-out loss. Returns a
    Python float for one concrete vector, else a float64 NumPy array of shape ``r.shape[:-1]``;
    a traced ``r`` (under ``jax.jit``, ``jax.vmap``, ``jax.grad``) gives a JAX array in its
    own float dtype. ``n`` is static.
    """
    r = _checks.array(r, "r", ndim=(1, 2, 3))
    n = _checks.integer(n, "n", minimum=1)
    if _checks.is_traced(r):
        return 0.5 * jnp.sum(jnp.asarray(r, jnp.result_type(float, r.dtype)) ** 2, axis=-1) / n
    out = 0.5 * np.sum(np.asarray(r, float) ** 2, axis=-1) / n
    return float(out) if out.ndim == 0 else out
