"""The generalization gap and its exact rewritings (Chapter 1).

Notation of the book: ``ℓ(w; z) = ½‖f(x; w) − y‖²``, ``L_S(w) = (1/n) Σ_i ℓ(w; z_i)``,
``L(w) = E_z ℓ(w; z)``, and the gap ``Δ_n(t) = E_S[L(w_S(t)) − L_S(w_S(t))]``.

What is here:

* trainers for linear least squares, ``f(x; w) = w·x``: gradient flow
  ``ẇ = −∇L_S(w)`` and gradient descent ``w_{k+1} = w_k − η∇L_S(w_k)`` in closed
  form through the eigendecomposition of ``Σ_S = XᵀX/n``;
* Monte Carlo estimators over datasets, for any sampler ``sample(key, n) -> (X, Y)``
  and any trainer ``train(X, Y) -> W`` (weights at several times, leading axis = time):
  test/train loss and gap (:func:`gap_samples`), the replace-one form
  ``E[ℓ(w_{S⁽ⁱ⁾}; z_i) − ℓ(w_S; z_i)]`` (:func:`replace_one_samples`), the
  leave-one-out form (:func:`leave_one_out_samples`), and 95% intervals
  (:func:`interval`);
* the bounds and the two-orthonormal-point example of :mod:`gramlib.bounds`
  (:func:`ntk_norm_bound`, :func:`stability_bound`, :func:`two_point_gap`, …),
  re-exported here under the names Chapter 1 uses.

Every public function validates its input and raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from .. import _checks
from .bounds import (ntk_norm_bound, stability_bound, two_point_gap, two_point_loo_gap,  # noqa: F401
                     two_point_ntk_bound, two_point_problem, two_point_stability_bound)
from .kernel_flow import descent_power

#: two-sided 95% quantile of the standard normal distribution
Z95 = 1.959963984540054


class Estimate(NamedTuple):
    """A Monte Carlo mean and the half-width of its 95% normal interval."""

    mean: np.ndarray
    half_width: np.ndarray


def interval(samples, axis=0, *, student=False) -> Estimate:
    """Mean of i.i.d. ``samples`` along ``axis`` with a 95% interval.

    ``half_width = z · sd / √N`` (``N`` = number of samples, ``sd`` with ``N − 1``): the
    normal quantile ``z = 1.96`` for Monte Carlo over many draws, or with ``student=True`` the
    Student-t quantile ``t_{0.975, N−1}`` (2.262 for ``N = 10``), exact for normal samples and
    the honest choice for a few independent splits (Chapter 7's table).
    """
    a = _checks.array(samples, "samples", ndim=(1, 2, 3))
    m = a.shape[axis]
    if m < 2:
        raise ValueError(f"samples must hold at least 2 draws along axis {axis}, got {m}")
    z = float(scipy.stats.t.ppf(0.975, m - 1)) if student else Z95
    return Estimate(a.mean(axis=axis), z * a.std(axis=axis, ddof=1) / math.sqrt(m))


# --------------------------------------------------------------------------------------
# Linear least squares: closed-form gradient flow and gradient descent
# --------------------------------------------------------------------------------------


def squared_loss(w, X, Y):
    """Per-sample loss ``ℓ(w; z_k) = ½ (w·x_k − y_k)²`` of the linear model, shape ``(m,)``."""
    return 0.5 * (X @ w - Y) ** 2


def _spectrum(X, Y):
    """Eigen-decomposition of ``Σ = XᵀX/n``, ``b = XᵀY/n`` in its eigenbasis, and the rank cutoff."""
    n, d = X.shape
    lam, V = jnp.linalg.eigh(X.T @ X / n)
    lam = jnp.maximum(lam, 0.0)
    tol = max(n, d) * jnp.finfo(X.dtype).eps * jnp.max(lam)
    return lam, V, V.T @ (X.T @ Y / n), lam > tol


def _flow(X, Y, t, w0):
    """``w(t) = e^{−Σt} w0 + Σ⁺(I − e^{−Σt}) b`` for each time in ``t`` (shape ``(T,)``)."""
    lam, V, b, live = _spectrum(X, Y)
    finite = jnp.isfinite(t)[:, None]  # t = ∞ takes the other branches: no inf in λt (a NaN derivative)
    lt = lam[None, :] * jnp.where(finite, t[:, None], 0.0)
    decay = jnp.where(live, jnp.where(finite, jnp.exp(-lt), 0.0), 1.0)
    safe = jnp.where(live, lam, 1.0)
    # (1 − e^{−λt}) / λ, exactly 1/λ at t = ∞; null directions of Σ get no b-component (b ⟂ ker Σ)
    phi = jnp.where(live[None, :] & finite, -jnp.expm1(-lt) / safe, jnp.where(live, 1.0 / safe, 0.0))
    return (decay * (V.T @ w0)[None, :] + phi * b[None, :]) @ V.T


def _descent(X, Y, k, lr, w0):
    """``w_k = (I − ηΣ)^k w0 + Σ⁺(I − (I − ηΣ)^k) b`` for each step count in ``k``."""
    lam, V, b, live = _spectrum(X, Y)
    power, one_minus = descent_power(lr * lam, k[:, None])  # (1 − ηλ)^k and 1 − (1 − ηλ)^k
    safe = jnp.where(live, lam, 1.0)
    psi = jnp.where(live, one_minus / safe, 0.0)
    decay = jnp.where(live, power, 1.0)
    return (decay * (V.T @ w0)[None, :] + psi * b[None, :]) @ V.T


def _check_data(X, Y, w0):
    Xa = _checks.array(X, "X", ndim=2)
    n, d = Xa.shape
    _checks.array(Y, "Y", shape=(n,))
    if n < 1 or d < 1:
        raise ValueError(f"X must have at least one row and one column, got shape {Xa.shape}")
    if w0 is None:
        return jnp.zeros(d, dtype=jnp.result_type(float))
    _checks.array(w0, "w0", shape=(d,))
    return jnp.asarray(w0, dtype=jnp.result_type(float))


def linear_gradient_flow(X, Y, t, w0=None):
    """Weights of linear least squares trained by gradient flow, ``w_S(t)``.

    ``ẇ = −(1/n) Xᵀ(Xw − Y)`` from ``w0`` (default 0) has the solution
    ``w(t) = e^{−Σt} w0 + Σ⁺(I − e^{−Σt}) XᵀY/n`` with ``Σ = XᵀX/n``; ``t = ∞`` gives
    ``P_ker w0 + Σ⁺ XᵀY/n`` (the interpolant nearest to ``w0``). ``t`` is a scalar
    (returns ``(d,)``) or a 1-D array of times (returns ``(T, d)``). Chapter 1. Computed and
    returned in JAX's default float dtype (float64 with ``jax_enable_x64``, whatever the dtype of
    ``X``); works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` in ``X``, ``Y`` and ``w0``
    (``t`` static).
    """
    w0 = _check_data(X, Y, w0)
    ts, scalar = _checks.times(t, "t")
    W = _flow_jit(jnp.asarray(X, dtype=w0.dtype), jnp.asarray(Y, dtype=w0.dtype), jnp.asarray(ts, dtype=w0.dtype), w0)
    return W[0] if scalar else W


def linear_gradient_descent(X, Y, steps, lr, w0=None):
    """Weights after ``k`` steps of gradient descent ``w_{k+1} = w_k − η∇L_S(w_k)``.

    Closed form ``w_k = (I − ηΣ)^k w0 + Σ⁺(I − (I − ηΣ)^k) XᵀY/n``; training time is
    ``t = kη``. ``steps`` is a whole number or a 1-D array of them. Chapter 1. Dtype and
    transformations as :func:`linear_gradient_flow` (``steps`` static, ``lr`` may be traced).
    """
    w0 = _check_data(X, Y, w0)
    ks, scalar = _checks.times(steps, "steps", allow_inf=False, integer_steps=True)
    lr = _checks.positive(lr, "lr")
    W = _descent_jit(jnp.asarray(X, dtype=w0.dtype), jnp.asarray(Y, dtype=w0.dtype), jnp.asarray(ks, dtype=w0.dtype),
                     lr, w0)
    return W[0] if scalar else W


_flow_jit = jax.jit(_flow)
_descent_jit = jax.jit(_descent)


def gradient_flow(t, w0=None) -> Callable:
    """A trainer ``train(X, Y) -> W`` of shape ``(T, d)``: gradient flow at the times ``t``.

    The returned function is pure and traceable (it is vmapped over datasets by the
    Monte Carlo estimators); ``w0`` defaults to zero.
    """
    ts, _ = _checks.times(t, "t")
    if w0 is not None:
        w0 = jnp.asarray(_checks.array(w0, "w0", ndim=1), dtype=float)

    def train(X, Y):
        init = jnp.zeros(X.shape[1], X.dtype) if w0 is None else w0.astype(X.dtype)
        return _flow(X, Y, jnp.asarray(ts, X.dtype), init)

    train.times = ts
    return train


def linear_descent(steps, lr, w0=None) -> Callable:
    """A trainer ``train(X, Y) -> W``: gradient descent with step ``lr`` after ``steps`` steps (Chapter 1).

    The linear model's descent in closed form (:func:`linear_gradient_descent`); not the
    network trainer :func:`gramlib.train.gradient_descent`. Its ``times`` attribute holds the training times ``t = kη``.
    """
    ks, _ = _checks.times(steps, "steps", allow_inf=False, integer_steps=True)
    lr = _checks.positive(lr, "lr")
    if w0 is not None:
        w0 = jnp.asarray(_checks.array(w0, "w0", ndim=1), dtype=float)

    def train(X, Y):
        init = jnp.zeros(X.shape[1], X.dtype) if w0 is None else w0.astype(X.dtype)
        return _descent(X, Y, jnp.asarray(ks, X.dtype), lr, init)

    train.times = ks * lr
    return train


# --------------------------------------------------------------------------------------
# Data distributions
# --------------------------------------------------------------------------------------


class Task(NamedTuple):
    """A data distribution: ``sample(key, n) -> (X, Y)`` and, when known, the exact ``L(w)``."""

    sample: Callable
    population_loss: Callable | None = None


def gaussian_task(w_star, noise) -> Task:
    """``x ~ N(0, I_d)``, ``y = w*·x + σξ``; exact population loss ``L(w) = ½(‖w − w*‖² + σ²)``."""
    w_star = jnp.asarray(_checks.array(w_star, "w_star", ndim=1), dtype=float)
    noise = _checks.positive(noise, "noise", allow_zero=True)
    d = w_star.shape[0]

    def sample(key, n):
        kx, ke = jax.random.split(key)
        X = jax.random.normal(kx, (n, d), dtype=w_star.dtype)
        return X, X @ w_star + noise * jax.random.normal(ke, (n,), dtype=w_star.dtype)

    def population_loss(w):
        return 0.5 * (jnp.sum((w - w_star) ** 2) + noise**2)

    return Task(sample, population_loss)


def two_point_task(targets=(1.0, 1.0)) -> Task:
    """``x`` uniform on ``{e_1, e_2} ⊂ R²`` with fixed targets ``y(e_j) = targets[j]``.

    Exact population loss ``L(w) = ¼[(w_1 − y_1)² + (w_2 − y_2)²]``.
    """
    y = jnp.asarray(_checks.array(targets, "targets", shape=(2,)), dtype=float)

    def sample(key, n):
        j = jax.random.bernoulli(key, 0.5, (n,)).astype(jnp.int32)
        return jax.nn.one_hot(j, 2, dtype=y.dtype), y[j]

    def population_loss(w):
        return 0.25 * jnp.sum((w - y) ** 2)

    return Task(sample, population_loss)


# --------------------------------------------------------------------------------------
# Monte Carlo over datasets
# --------------------------------------------------------------------------------------


def _draw(key, sample, train, n, num_datasets, *, fresh=0):
    """Validate, then draw ``num_datasets`` datasets of size ``n`` in one call of ``sample``.

    Returns ``(X, Y)`` of shapes ``(N, n, ...)`` and, if ``fresh > 0``, a second independent
    draw of ``fresh`` samples per dataset. Drawing everything at once (outside the compiled
    kernels) keeps the kernels free of random-number generation, which is slow to compile.
    The datasets depend only on ``key``: estimators called with the same key see the same ``S``.
    """
    n = _checks.integer(n, "n", minimum=2)
    N = _checks.integer(num_datasets, "num_datasets", minimum=2)
    if not callable(sample):
        raise TypeError(f"sample must be a function sample(key, n) -> (X, Y), got {type(sample).__name__}")
    if not callable(train):
        raise TypeError(f"train must be a function train(X, Y) -> weights over time, got {type(train).__name__}")
    k_data, k_fresh = jax.random.split(jnp.asarray(key))

    def draw(k, m):
        X, Y = sample(k, N * m)
        if np.ndim(X) < 1 or np.shape(X)[0] != N * m or np.ndim(Y) < 1 or np.shape(Y)[0] != N * m:
            raise ValueError(f"sample(key, {N * m}) must return X and Y with {N * m} rows, "
                             f"got shapes {np.shape(X)} and {np.shape(Y)}")
        return jnp.reshape(X, (N, m) + np.shape(X)[1:]), jnp.reshape(Y, (N, m) + np.shape(Y)[1:])

    X, Y = draw(k_data, n)
    W = jax.eval_shape(train, X[0], Y[0])
    if any(leaf.ndim < 1 for leaf in jax.tree_util.tree_leaves(W)):
        raise ValueError("train(X, Y) must return weights with a leading time axis")
    return (X, Y) + (draw(k_fresh, fresh) if fresh else ())


def _per_time(loss):
    """``loss(W, X, Y)`` over the time axis of ``W``: shape ``(T, m)``."""
    return jax.vmap(loss, in_axes=(0, None, None))


def _test_loss(population_loss, loss, W, Xt, Yt):
    """``L(W)`` over time: exact when ``population_loss`` is given, else the mean loss on ``(Xt, Yt)``."""
    if population_loss is not None:
        return jax.vmap(population_loss)(W)
    return _per_time(loss)(W, Xt, Yt).mean(axis=1)


@functools.lru_cache(maxsize=64)
def _gap_kernel(train, population_loss, loss):
    def one(X, Y, Xt, Yt):
        W = train(X, Y)
        return _test_loss(population_loss, loss, W, Xt, Yt), _per_time(loss)(W, X, Y).mean(axis=1)

    return jax.jit(jax.vmap(one))


def gap_samples(key, sample, train, n, num_datasets, *, population_loss=None, n_test=1000,
                loss=squared_loss) -> dict:
    """Per-dataset test loss, train loss and gap of ``w_S(t)``, each of shape ``(N, T)``.

    For each of ``N = num_datasets`` independent datasets ``S`` of size ``n``:
    ``test = L(w_S(t))`` (exact ``population_loss`` when given, else the mean loss on
    ``n_test`` fresh samples: unbiased), ``train = L_S(w_S(t))``, ``gap = test − train``.
    Their means estimate ``E_S L``, ``E_S L_S`` and ``Δ_n(t)`` (use :func:`interval`).
    """
    fresh = 0 if population_loss is not None else _checks.integer(n_test, "n_test", minimum=1)
    X, Y, *test_set = _draw(key, sample, train, n, num_datasets, fresh=fresh)
    Xt, Yt = test_set if test_set else (X, Y)  # unused when the population loss is exact
    test, tr = _gap_kernel(train, population_loss, loss)(X, Y, Xt, Yt)
    return {"test": np.asarray(test), "train": np.asarray(tr), "gap": np.asarray(test - tr)}


@functools.lru_cache(maxsize=64)
def _replace_one_kernel(train, loss):
    ploss = _per_time(loss)

    def one(X, Y, Xr, Yr):
        own = ploss(train(X, Y), X, Y)  # (T, n): ℓ(w_S; z_i)

        def swapped(i):
            W = train(X.at[i].set(Xr[i]), Y.at[i].set(Yr[i]))
            return ploss(W, X[i][None], Y[i][None])[:, 0]

        other = jax.vmap(swapped)(jnp.arange(X.shape[0]))  # (n, T): ℓ(w_{S⁽ⁱ⁾}; z_i)
        return (other.T - own).mean(axis=1)

    return jax.jit(jax.vmap(one))


def replace_one_samples(key, sample, train, n, num_datasets, *, loss=squared_loss) -> np.ndarray:
    """Per-dataset replace-one estimate ``(1/n) Σ_i [ℓ(w_{S⁽ⁱ⁾}(t); z_i) − ℓ(w_S(t); z_i)]``, ``(N, T)``.

    ``S⁽ⁱ⁾`` is ``S`` with ``z_i`` replaced by a fresh ``z'_i``; its mean over datasets
    equals ``Δ_n(t)`` exactly (Chapter 1, replace-one identity). Costs ``n + 1``
    trainings per dataset. With the same ``key``, :func:`gap_samples` sees the same datasets.
    """
    X, Y, Xr, Yr = _draw(key, sample, train, n, num_datasets, fresh=n)
    return np.asarray(_replace_one_kernel(train, loss)(X, Y, Xr, Yr))


@functools.lru_cache(maxsize=64)
def _leave_one_out_kernel(train, population_loss, loss):
    ploss = _per_time(loss)

    def one(X, Y, Xt, Yt):
        n = X.shape[0]

        def left_out(i):
            keep = jnp.arange(n - 1) + (jnp.arange(n - 1) >= i)
            W = train(X[keep], Y[keep])
            return _test_loss(population_loss, loss, W, Xt, Yt), ploss(W, X[i][None], Y[i][None])[:, 0]

        test, loo = jax.vmap(left_out)(jnp.arange(n))
        return test.mean(axis=0), loo.mean(axis=0)

    return jax.jit(jax.vmap(one))


def leave_one_out_samples(key, sample, train, n, num_datasets, *, population_loss=None, n_test=1000,
                          loss=squared_loss) -> dict:
    """Both sides of the leave-one-out identity, per dataset, each ``(N, T)``.

    ``test``: ``(1/n) Σ_i L(w_{S∖i}(t))``, test loss of models trained on ``n − 1`` samples
    (exact, or on ``n_test`` fresh samples shared by the ``n`` models of a dataset);
    ``loo``: ``(1/n) Σ_i ℓ(w_{S∖i}(t); z_i)``, their loss on the left-out sample.
    Both have mean ``E_{S_{n−1}} L(w_{S_{n−1}}(t))`` (Chapter 1).
    """
    fresh = 0 if population_loss is not None else _checks.integer(n_test, "n_test", minimum=1)
    X, Y, *test_set = _draw(key, sample, train, n, num_datasets, fresh=fresh)
    Xt, Yt = test_set if test_set else (X, Y)
    test, loo = _leave_one_out_kernel(train, population_loss, loss)(X, Y, Xt, Yt)
    return {"test": np.asarray(test), "loo": np.asarray(loo)}


@functools.lru_cache(maxsize=64)
def _disagreement_kernel(train, loss):
    grad = jax.grad(lambda w, x, y: loss(w, x[None], y[None])[0])
    per_sample = jax.vmap(jax.vmap(grad, in_axes=(None, 0, 0)), in_axes=(0, None, None))  # (T, n, d)

    def one(X, Y, Xr, Yr):
        W = train(X, Y)
        g, gr = per_sample(W, X, Y), per_sample(W, Xr, Yr)
        return jnp.sum((gr - g) ** 2, axis=-1).mean(axis=1), jnp.sum(g**2, axis=-1).mean(axis=1)

    return jax.jit(jax.vmap(one))


def gradient_disagreement_samples(key, sample, train, n, num_datasets, *, loss=squared_loss) -> dict:
    """Per-dataset gradient statistics along the trajectory ``w_S(t)``, each ``(N, T)``.

    ``disagreement``: ``(1/n) Σ_i ‖∇ℓ(w_S(t); z'_i) − ∇ℓ(w_S(t); z_i)‖²`` with fresh ``z'_i``
    (its mean is ``V(t)`` of :func:`stability_bound`); ``train_grad_sq``:
    ``(1/n) Σ_i ‖∇ℓ(w_S(t); z_i)‖²`` (mean ``G(t)²``). Weights must be arrays ``(T, d)``.
    """
    X, Y, Xr, Yr = _draw(key, sample, train, n, num_datasets, fresh=n)
    dis, gsq = _disagreement_kernel(train, loss)(X, Y, Xr, Yr)
    return {"disagreement": np.asarray(dis), "train_grad_sq": np.asarray(gsq)}
