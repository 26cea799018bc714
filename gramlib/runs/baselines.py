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
  random subset of samples (the ground truth the prediction is checked on).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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
