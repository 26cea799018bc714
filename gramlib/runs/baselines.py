"""What the trajectory prediction of Chapter 7 is compared with.

Every baseline estimates the test loss ``L(w_T)`` (or bounds a gap) of a
network trained by gradient descent on ``L_S = (1/2n) Σ_i ‖f(x_i) − y_i‖²``
with step ``η`` for ``T`` steps; ``Θ`` is an ``N×N`` empirical NTK
(``N = nC``, rows ordered (sample, output)).

* :func:`gcv` — generalized cross-validation (Golub, Heath & Wahba 1979) of the
  linearized model on the initial kernel;
* :func:`linearized_loss` — the exact leave-one-out loss of the linearized
  model (constant initial kernel, Chapter 5);
* :func:`ntk_norm_bound` — the norm-based bound ``sqrt(2 yᵀ Θ⁺ y / n)`` of
  Arora et al. (2019) (:func:`gramlib.bounds.ntk_norm_bound`, re-exported);
* :func:`contraction_free_loss` — the train loss plus the integral of the
  perturbation factor at the twins alone, the gap ODE of Chapter 3 without
  contraction;
* :func:`brute_force_loo` — leave-one-out retraining of the real network on a
  random subset of samples (the ground truth the prediction is checked on);
* :func:`influence_loo` — the influence-function estimate of leave-one-out (Koh & Liang 2017): one
  damped Newton step on the full Hessian of the final training loss, by conjugate gradients;
* :func:`infinitesimal_jackknife` and :func:`approximate_loo` — the infinitesimal jackknife (Giordano et
  al. 2019) and the Newton-step approximate leave-one-out (Rad & Maleki 2020; Stephenson & Broderick
  2020) with the Gauss–Newton Hessian, in closed form from the final kernel; for ridge regression
  :func:`approximate_loo` is exact leave-one-out (Allen's PRESS).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np

from . import train
from .. import _checks
from ..mathematics import effective_gram, kernel_flow
from ..mathematics.bounds import ntk_norm_bound  # noqa: F401


def _finite_problem(theta, r0, t, outputs, lr):
    """The :class:`gramlib.kernel_flow.KernelProblem` of a baseline, which needs a finite ``t``."""
    problem = kernel_flow.kernel_problem(theta, r0, t, outputs, lr)
    if np.any(np.isinf(problem.times)):
        raise ValueError("t must be finite for this baseline")
    return problem


def gcv(theta, r0, t, *, outputs=None, lr=None):
    """Generalized cross-validation of kernel training from the initial residual ``r0``.

    Linearized training is a linear smoother of the offset targets
    ``Y − f_0(X)``: ``f_t(X) − f_0(X) = S_t (Y − f_0(X))`` with the smoother
    (hat) matrix ``S_t = I − e^{−Θt/n}`` for gradient flow, or
    ``S_k = I − (I − (η/n)Θ)^k`` after ``k`` gradient-descent steps with
    ``lr = η``; the train residual is ``r(t) = (I − S_t) r0``. GCV replaces
    each leave-one-out correction ``1 − [S_t]_ii`` by its average
    ``tr(I − S_t)/N``:

        GCV(t) = (1/2n) ‖r(t)‖² / (tr(I − S_t) / N)².

    ``theta`` a matrix or a :class:`gramlib.kernel_flow.Factorization`; ``t`` a time (or
    number of steps) or a 1-D array; returns a float or ``(len(t),)``.
    """
    fact, r0, times, scalar, lr = _finite_problem(theta, r0, t, outputs, lr)
    factor = kernel_flow.decay(fact.eigenvalues, jnp.asarray(times, fact.theta.dtype), fact.n, lr,
                               fact.tol)  # eigenvalues of I − S_t
    train_loss = kernel_flow.residual_loss(factor * (fact.eigenvectors.T @ r0), fact.n)
    out = train_loss / np.asarray(jnp.mean(factor, axis=1)) ** 2
    return float(out[0]) if scalar else out


def linearized_loss(theta, r0, t, *, outputs=None, lr=None):
    """Leave-one-out test-loss prediction of the linearized network: ``(1/2n) Σ_i ‖ρ_i(t)‖²``.

    ``ρ`` from :func:`gramlib.effective_gram.loo_residuals` with the constant
    kernel ``theta`` (the initial NTK: the lazy-training prediction, Chapter 5), a matrix
    or a :class:`gramlib.kernel_flow.Factorization`. Returns ``(loss, ρ)``.
    """
    fact = kernel_flow.kernel_problem(theta, r0, t, outputs, lr).factorization
    rho = np.asarray(effective_gram.loo_residuals(fact, r0, t, lr=lr))
    return kernel_flow.residual_loss(rho, fact.n), rho


def contraction_free_loss(thetas, residuals, loo_path, lr, *, outputs=1):
    """Train loss at the end plus ``Σ_k η ε̄_k``: the gap equation of Chapter 3 without contraction.

    ``ε̄_k = (1/n²) Σ_i ρ_i(k)ᵀ Θ_ii ρ_i(k)`` is the perturbation factor at the
    twins (:func:`gramlib.effective_gram.perturbation_factor`) at step ``k``,
    with the diagonal blocks of the snapshot kernel ``Θ_{⌊k/s⌋}`` (snapshots as
    in :func:`gramlib.effective_gram.loo_trajectory`) and the twins'
    leave-one-out residuals ``loo_path`` ``(steps, N)`` of the trajectory
    recursion (``loo_trajectory(..., path=True)``). Gradient-descent time
    ``t = kη`` turns ``∫₀ᵀ ε̄_n(s) ds`` into the sum. Dropping the contraction
    ``c̄_n`` lets every perturbation accumulate: this baseline shows by how much.
    """

    th = _checks.array(thetas, "thetas", ndim=3)
    res = _checks.array(residuals, "residuals", ndim=2, shape=(None, th.shape[1]))
    steps = res.shape[0] - 1
    rho = _checks.array(loo_path, "loo_path", ndim=2, shape=(steps, th.shape[1]))
    lr = _checks.positive(lr, "lr")
    outputs = _checks.integer(outputs, "outputs", minimum=1)
    if steps < th.shape[0]:
        raise ValueError(f"residuals must hold steps+1 rows with steps >= K={th.shape[0]}, got {res.shape[0]} rows")
    s = steps // th.shape[0]
    which = np.minimum(np.arange(steps) // s, th.shape[0] - 1)
    eps = np.concatenate([np.atleast_1d(effective_gram.perturbation_factor(th[j], rho[which == j], outputs=outputs))
                          for j in range(th.shape[0])])
    return kernel_flow.residual_loss(res[-1], th.shape[1] // outputs) + lr * float(np.sum(eps))


def brute_force_subset(key, n, size):
    """The ``size`` distinct indices out of ``n`` that :func:`brute_force_loo` retrains, sorted."""
    n = _checks.integer(n, "n", minimum=1)
    size = _checks.integer(size, "size", minimum=1)
    if size > n:
        raise ValueError(f"size must be at most the {n} training samples, got {size}")
    return np.sort(np.asarray(jax.random.choice(key, n, (size,), replace=False)))


def brute_force_loo(apply, params, x, y, *, lr, steps, size, key, loop="scan", progress=True):
    """Leave-one-out retraining of the network on ``size`` random samples (ground truth).

    Draws ``size`` distinct indices with ``key`` and retrains from the same
    initialization without each of them (:func:`gramlib.train.retrain_without`,
    one ``vmap`` over 0/1 sample masks; ``loop`` as there). Returns ``(indices, ρ)`` with
    ``ρ_i = f_{S∖i}(x_i) − y_i``.
    """
    idx = brute_force_subset(key, len(x), size)
    return idx, train.retrain_without(apply, params, x, y, idx, lr=lr, steps=steps, loop=loop,
                                       progress=progress)


def _leverage_blocks(theta, residuals, damping, outputs):
    """The diagonal ``C×C`` blocks ``H_ii`` of ``H = Θ (Θ + nλ I)⁻¹`` and the residuals as ``(n, C)``."""
    th = _checks.square_symmetric(theta, "theta")
    r = _checks.array(residuals, "residuals", ndim=(1, 2))
    damping = _checks.positive(damping, "damping", allow_zero=True)
    big_n = th.shape[0]
    c = (r.shape[1] if r.ndim == 2 else 1) if outputs is None else _checks.integer(outputs, "outputs", minimum=1)
    if r.size != big_n or big_n % c:
        raise ValueError(f"residuals must hold the kernel's {big_n} rows (n samples × {c} outputs), "
                         f"got shape {r.shape}")
    n = big_n // c
    th = jnp.asarray(th)
    hat = jnp.linalg.solve(th + n * damping * jnp.eye(big_n, dtype=th.dtype), th).T  # Θ(Θ+nλ)⁻¹, Θ symmetric
    blocks = hat.reshape(n, c, n, c)[jnp.arange(n), :, jnp.arange(n), :]
    return np.asarray(blocks), np.asarray(r, dtype=float).reshape(n, c)


def _shaped(rho, residuals):
    return rho[:, 0] if np.ndim(residuals) == 1 and rho.shape[1] == 1 else rho


def infinitesimal_jackknife(theta, residuals, *, damping, outputs=None):
    """Leave-one-out residuals by the infinitesimal jackknife, Gauss–Newton Hessian: ``ρ_i = (I + H_ii) r_i``.

    At the final weights ``w`` of ``L = (1/2n) Σ_i ‖r_i‖²`` the jackknife (Giordano et al. 2019) moves
    the weights by ``(1/n) (G + λI)⁻¹ J_iᵀ r_i`` to leave sample ``i`` out, ``G = (1/n) JᵀJ`` the
    Gauss–Newton Hessian damped by ``λ = damping``; read out linearly, the left-out residual grows by
    ``J_i (1/n)(G + λI)⁻¹ J_iᵀ r_i = H_ii r_i`` with ``H = Θ (Θ + nλ I)⁻¹``, ``Θ = J Jᵀ`` (``theta``,
    ``N×N``, the kernel at the final weights) — the same first-order step as the influence function of
    :func:`influence_loo` with the Hessian replaced by Gauss–Newton. ``residuals``: ``r(T)``, ``(n,)`` or
    ``(n, C)``. Returns ``ρ`` shaped like ``residuals``.
    """
    blocks, r = _leverage_blocks(theta, residuals, damping, outputs)
    return _shaped(r + np.einsum("iab,ib->ia", blocks, r), residuals)


def approximate_loo(theta, residuals, *, damping, outputs=None):
    """Newton-step approximate leave-one-out with the Gauss–Newton Hessian: ``ρ_i = (I − H_ii)⁻¹ r_i``.

    One Newton step from the final weights on the leave-one-out objective, with its own Hessian
    ``G_{∖i} + λI`` (``G_{∖i} = G − (1/n) J_iᵀ J_i``; Rad & Maleki 2020, Stephenson & Broderick 2020);
    by Sherman–Morrison the left-out residual is ``(I − H_ii)⁻¹ r_i``, ``H = Θ (Θ + nλ I)⁻¹`` as in
    :func:`infinitesimal_jackknife`. For ridge regression at its minimizer (``f = xᵀw``,
    ``L + (λ/2)‖w‖²``) this is exact leave-one-out (Allen's PRESS, 1974). Returns ``ρ`` shaped like
    ``residuals``.
    """
    blocks, r = _leverage_blocks(theta, residuals, damping, outputs)
    eye = np.eye(blocks.shape[1])
    return _shaped(np.linalg.solve(eye - blocks, r[..., None])[..., 0], residuals)


def influence_loo(apply, params, x, y, *, damping, maxiter=100, tol=1e-10):
    """Leave-one-out residuals by influence functions (Koh & Liang 2017), with the full damped Hessian.

    At the final weights ``w``, removing sample ``i`` moves them by ``Δ_i = (1/n)(∇²L(w) + λI)⁻¹ ∇ℓ_i(w)``
    (``L = (1/2n) Σ_j ‖f(x_j; w) − y_j‖²``, ``ℓ_i = ½‖f(x_i; w) − y_i‖²``, damping ``λ``; the Hessian
    includes the residual curvature ``Σ_j r_j ∇²f_j``), and the left-out residual is read out linearly,
    ``ρ_i = r_i + J_i Δ_i``: the influence of sample ``i`` on its own loss. ``Δ_i`` by conjugate gradients
    on Hessian–vector products (``maxiter`` iterations at most, relative tolerance ``tol``), all samples
    at once. Returns ``ρ`` ``(n,)`` or ``(n, C)`` like ``y``.
    """
    if not callable(apply):
        raise TypeError(f"apply must be a function apply(params, x), got {type(apply).__name__}")
    x = _checks.array(x, "x")
    y = _checks.array(y, "y", ndim=(1, 2))
    if len(y) != len(x):
        raise ValueError(f"y must have one row per input: x has {len(x)}, y has {len(y)}")
    damping = _checks.positive(damping, "damping", allow_zero=True)
    maxiter = _checks.integer(maxiter, "maxiter", minimum=1)
    tol = _checks.positive(tol, "tol")
    flat, unravel = ravel_pytree(params)
    rho = _influence(lambda w, xs: apply(unravel(w), xs), flat, jnp.asarray(x, flat.dtype),
                     jnp.asarray(y, flat.dtype), damping, maxiter, tol)
    return np.asarray(rho, dtype=float)


@partial(jax.jit, static_argnames=("f", "maxiter"))
def _influence(f, w, x, y, damping, maxiter, tol):
    n = x.shape[0]
    loss = lambda v: 0.5 * jnp.sum((f(v, x) - y) ** 2) / n  # noqa: E731
    grad = jax.grad(loss)

    def hessian_times(v):
        return jax.jvp(grad, (w,), (v,))[1] + damping * v

    def one(xi, yi):
        gi = jax.grad(lambda v: 0.5 * jnp.sum((f(v, xi[None]) - yi) ** 2) / n)(w)  # (1/n) ∇ℓ_i
        delta, _ = jax.scipy.sparse.linalg.cg(hessian_times, gi, tol=tol, maxiter=maxiter)
        out, moved = jax.jvp(lambda v: f(v, xi[None]), (w,), (delta,))
        return (out - yi + moved)[0]

    return jax.vmap(one)(x, y)
