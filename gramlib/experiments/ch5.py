"""Chapter 5's experiments: the checks of the leave-one-out formula against its ground truths.

:func:`linearized_model` is a network linearized at its initialization;
:func:`retraining_check` sets the LOO formula (``ch05-gd``) against brute-force
retraining of that model without each sample (Check 1), and
:func:`elementary_loo_residuals` evaluates the elementary solution (``ch05-elementary``)
with one matrix exponential per sample. :func:`monte_carlo_loo` is Check 2, the LOO
prediction against the Monte Carlo test loss over datasets drawn from a pool;
:func:`descent_against_flow` compares the predicted gap of gradient descent and gradient
flow, and :func:`two_point_rows` the expected LOO gap of Chapter 1's two-point example
with its closed forms.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from ..kernels.ntk import empirical_ntk
from ..mathematics.effective_gram import loo_residuals, predicted_gap
from ..mathematics.gap import two_point_gap, two_point_loo_gap
from ..mathematics.kernel_flow import kernel_residuals, kernel_test_residuals
from ..runs.train import retrain_without


def _check_params(params):
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or not all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves):
        raise TypeError(f"params0 must be a pytree of arrays (a network's weights), got {type(params).__name__}")


def linearized_model(apply, params0):
    """The network ``apply(params, x)`` linearized at ``params0`` (``ch04-linearization``).

    Returns ``f_lin(params, x) = f(x; w_0) + J(x)(w − w_0)``, evaluated with one
    Jacobian-vector product (``jax.jvp``), a function with the signature of ``apply``.
    """
    if not callable(apply):
        raise TypeError(f"apply must be a function apply(params, x), got {type(apply).__name__}")
    _check_params(params0)

    def linearized(params, inputs):
        delta = jax.tree_util.tree_map(jnp.subtract, params, params0)
        f0, df = jax.jvp(lambda q: apply(q, inputs), (params0,), (delta,))
        return f0 + df

    return linearized


class RetrainingCheck(NamedTuple):
    """LOO residuals after ``k`` gradient-descent steps, three ways, each a dict ``{k: (n,) array}``.

    ``brute``: the linearized network retrained without each sample
    (:func:`gramlib.train.retrain_without`); ``formula``: ``ch05-gd``
    (:func:`gramlib.effective_gram.loo_residuals` with ``lr``); ``flow``: gradient flow at
    the same time ``t = kη``.
    """

    brute: dict
    formula: dict
    flow: dict


def retraining_check(apply, params0, x, y, steps, *, lr, progress=True):
    """Check 1 of Chapter 5: the LOO formula against retraining the linearized network without each sample.

    ``apply`` is linearized at ``params0`` (:func:`linearized_model`); its NTK
    ``Θ = J Jᵀ`` and ``r0 = f(X; w_0) − y`` give the formula. ``steps`` is a sequence of
    step counts ``k`` of size ``lr``; one output (``y`` of shape ``(n,)``). Returns a
    :class:`RetrainingCheck`.
    """
    linearized = linearized_model(apply, params0)
    x = _checks.array(x, "x", ndim=(2, 3, 4))
    y = _checks.array(y, "y", ndim=1)
    if len(y) != len(x):
        raise ValueError(f"y must have one entry per input: x has {len(x)} rows, y has {len(y)}")
    lr = _checks.positive(lr, "lr")
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__") or len(steps) == 0:
        raise TypeError(f"steps must be a non-empty sequence of step counts, got {steps!r}")
    steps = [_checks.integer(k, "each entry of steps", minimum=1) for k in steps]
    theta = empirical_ntk(apply, params0, x)
    r0 = np.asarray(apply(params0, x)) - y
    n = len(y)
    check = RetrainingCheck({}, {}, {})
    for k in tqdm(steps, desc="retraining", disable=not progress):
        check.brute[k] = retrain_without(linearized, params0, x, y, np.arange(n), lr=lr, steps=k, progress=False)
        check.formula[k] = np.asarray(loo_residuals(theta, r0, k, lr=lr))
        check.flow[k] = np.asarray(loo_residuals(theta, r0, k * lr))
    return check


@jax.jit
def _elementary(theta, r0, t):
    n = theta.shape[0]
    masks = 1.0 - jnp.eye(n, dtype=theta.dtype)  # row i: the samples twin i sees
    return jax.vmap(lambda m, i: (jax.scipy.linalg.expm(-theta * m[None, :] * t / n) @ r0)[i])(masks, jnp.arange(n))


def elementary_loo_residuals(theta, r0, t):
    """``ρ_i(t) = e_iᵀ e^{−Θ P_{−i} t/n} r0`` (``ch05-elementary``): one matrix exponential per sample.

    Gradient flow, one output: ``theta`` ``(n, n)``, ``r0`` ``(n,)``, ``t`` a finite time
    ``≥ 0``; ``Θ P_{−i}`` is ``Θ`` without column ``i``. ``O(n⁴)`` work: a check of the
    Laplace-domain algorithm (:func:`gramlib.effective_gram.loo_residuals`), not a
    replacement. Returns ``(n,)``.
    """
    theta = _checks.square_symmetric(theta, "theta")
    if theta.shape[0] < 2:
        raise ValueError(f"theta must hold at least 2 samples for leave-one-out, got shape {theta.shape}")
    r0 = _checks.array(r0, "r0", shape=(theta.shape[0],))
    t = _checks.positive(t, "t", allow_zero=True)
    dtype = jnp.result_type(float, theta.dtype)
    return _elementary(jnp.asarray(theta, dtype), jnp.asarray(r0, dtype), jnp.asarray(t, dtype))


class MonteCarloLOO(NamedTuple):
    """Check 2 of Chapter 5 and the learning-curve identity, per dataset (rows) and time (columns).

    ``indices`` ``(D, m)``: the pool samples of each dataset; ``predicted``: the LOO
    prediction ``(1/2m) Σ_i ρ_i(t)²``; ``measured``: the pool-average test loss of the
    model trained on the first ``m − 1`` samples with weight ``1/m`` (an estimate of
    ``L_{m−1}(t)``); ``train``: the training loss ``L_S(w_S(t))`` of the model trained on all
    ``m``; ``test``: that model's pool-average test loss (``L_m(t)``).
    """

    indices: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray
    train: np.ndarray
    test: np.ndarray

    @property
    def loo_gap(self) -> np.ndarray:
        """``r0ᵀ K_m(t) r0 = predicted − train`` per dataset, the leave-one-out gap."""
        return self.predicted - self.train

    @property
    def gap(self) -> np.ndarray:
        """``L(w_S(t)) − L_S(w_S(t))`` per dataset; its mean estimates ``Δ_m(t)``."""
        return self.test - self.train

    @property
    def learning_curve(self) -> np.ndarray:
        """``L(w_{S∖m}(t)) − L(w_S(t))`` per dataset; its mean estimates ``E L_{m−1} − E L_m``."""
        return self.measured - self.test

    @property
    def duplicates(self) -> int:
        """Number of datasets that hold some pool sample twice (their kernels are singular)."""
        return int(sum(len(np.unique(row)) < len(row) for row in self.indices))


def monte_carlo_loo(theta_pool, r0_pool, m, times, *, datasets, seed, progress=True):
    """The LOO identity by Monte Carlo over datasets drawn i.i.d. from a pool (Chapter 5, Check 2).

    Each of ``datasets`` datasets draws ``m`` pool indices with replacement from
    ``np.random.default_rng(seed)``. Its LOO prediction is ``(1/2m) Σ_i ρ_i(t)²``
    (:func:`gramlib.effective_gram.loo_residuals` on the dataset's kernel); the model
    trained on its first ``m − 1`` samples with per-sample weight ``1/m`` (time
    ``t (m−1)/m`` in the usual normalization, :func:`gramlib.kernel_flow.kernel_test_residuals`)
    is tested on the whole pool, the population. By the LOO identity both have the same
    expectation. ``theta_pool`` ``(P, P)``, ``r0_pool`` ``(P,)``, ``times`` 1-D (``inf``
    allowed). The model trained on all ``m`` samples gives the training loss and its own
    pool test loss, so that ``E r0ᵀ K_m r0 = Δ_m + (E L_{m−1} − E L_m)`` (``ch05-learning-curve``)
    can be checked term by term. Returns a :class:`MonteCarloLOO`.
    """
    theta_pool = np.asarray(_checks.square_symmetric(theta_pool, "theta_pool"), dtype=float)
    r0_pool = np.asarray(_checks.array(r0_pool, "r0_pool", shape=(theta_pool.shape[0],)), dtype=float)
    m = _checks.integer(m, "m", minimum=3)
    times, scalar = _checks.times(times, "times")
    if scalar:
        raise ValueError("times must be a 1-D array of training times, got a scalar")
    datasets = _checks.integer(datasets, "datasets", minimum=1)
    seed = _checks.integer(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    indices, predicted, measured, train, test = [], [], [], [], []
    for _ in tqdm(range(datasets), desc="datasets", disable=not progress):
        idx = rng.integers(0, len(r0_pool), m)
        theta = theta_pool[np.ix_(idx, idx)]
        rho = np.asarray(loo_residuals(theta, r0_pool[idx], times))
        r_train = np.asarray(kernel_residuals(theta, r0_pool[idx], times))
        r_all = np.asarray(kernel_test_residuals(theta, theta_pool[:, idx], r0_pool[idx], r0_pool, times))
        rest = idx[:-1]
        r_test = np.asarray(kernel_test_residuals(theta_pool[np.ix_(rest, rest)], theta_pool[:, rest],
                                                  r0_pool[rest], r0_pool, times * (m - 1) / m))
        indices.append(idx)
        predicted.append(0.5 * np.mean(rho**2, axis=1))
        measured.append(0.5 * np.mean(r_test**2, axis=1))
        train.append(0.5 * np.mean(r_train**2, axis=1))
        test.append(0.5 * np.mean(r_all**2, axis=1))
    return MonteCarloLOO(*(np.array(v) for v in (indices, predicted, measured, train, test)))


class DescentAgainstFlow(NamedTuple):
    """The predicted gap ``r0ᵀ K_n r0`` of gradient descent after ``steps`` steps and of the flow at ``times = steps · lr``.

    ``relative = |descent − flow| / flow``; ``limit`` is the descent's gap at ``k = ∞``.
    """

    steps: np.ndarray
    times: np.ndarray
    descent: np.ndarray
    flow: np.ndarray
    relative: np.ndarray
    limit: float


def descent_against_flow(theta, r0, times, lr):
    """Gradient descent with step ``lr`` against gradient flow on the time grid ``times`` (Chapter 5).

    The steps are ``k = max(1, ⌊t/η⌋)`` for each ``t`` in ``times`` (duplicates removed), so
    descent after ``k`` steps meets the flow at ``t = kη``; both gaps come from
    :func:`gramlib.effective_gram.predicted_gap` (``ch05-gd`` and ``ch05-laplace``). One
    output. Returns a :class:`DescentAgainstFlow`.
    """
    lr = _checks.positive(lr, "lr")
    times, _ = _checks.times(times, "times", allow_inf=False)
    steps = np.unique(np.maximum(1, (times / lr).astype(int)))
    descent = np.asarray(predicted_gap(theta, r0, steps, lr=lr))
    flow = np.asarray(predicted_gap(theta, r0, steps * lr))
    limit = float(predicted_gap(theta, r0, np.inf, lr=lr))
    return DescentAgainstFlow(steps, steps * lr, descent, flow, np.abs(descent - flow) / flow, limit)


def two_point_rows(sizes, t):
    """Chapter 1's two-point example: the expected LOO gap ``E r0ᵀ K_n r0`` against Chapter 1's closed forms.

    For each ``n`` in ``sizes`` (integers ``≥ 3``) a dict with ``loo_t = E r0ᵀ K_n(t) r0``
    and ``ref_t = 2 Δ_n(t)``, ``loo_inf = E r0ᵀ K_n(∞) r0`` and ``ref_inf = Δ_{n−1}(∞)``
    (:func:`gramlib.gap.two_point_loo_gap`, :func:`gramlib.gap.two_point_gap`), and
    ``halving = Δ_n(∞) / Δ_{n−1}(∞)``. ``t`` a finite time.
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) == 0:
        raise TypeError(f"sizes must be a non-empty sequence of integers, got {sizes!r}")
    sizes = [_checks.integer(n, "each size", minimum=3) for n in sizes]
    t = _checks.positive(t, "t", allow_zero=True)
    return [dict(n=n, loo_t=two_point_loo_gap(n, t), ref_t=2 * two_point_gap(n, t),
                 loo_inf=two_point_loo_gap(n, np.inf), ref_inf=two_point_gap(n - 1, np.inf),
                 halving=two_point_gap(n, np.inf) / two_point_gap(n - 1, np.inf))
            for n in sizes]
