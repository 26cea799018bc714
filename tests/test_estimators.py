"""One leave-one-out estimate for all n samples (Chapter 7) and the estimators researchers use instead.

The estimate against its independent computations: with every sample re-linearized it is their mean
loss, and with a snapshot at every step and Euler's rule the retrained twins' mean loss; its sampling
design against brute force over every subset; the snapshot check against a run recomputed with half
the snapshots; influence functions, the jackknife and the approximate leave-one-out against ridge
regression's closed forms (Allen's PRESS) and a dense Hessian; ``reproduce ch7-estimators`` on its
smoke scale.
"""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import baselines, loo_estimate, models, ntk, predict, train
from gramlib.experiments import ch7_estimators
from gramlib.experiments.results import read_table
from tests.tolerance import assert_close, tolerance

KEY = jax.random.PRNGKey(0)


def relu_run(every, n=8, steps=24, lr=0.9, outputs=1):
    """A small ReLU network (depth 3) and its run with a snapshot every ``every`` steps."""
    model = models.mlp(3, 6, depth=3, outputs=outputs, activation="relu", dtype=jnp.float64)
    x = jax.random.normal(KEY, (n, 3), jnp.float64)
    y = jnp.sign(jax.random.normal(jax.random.PRNGKey(9), (n,) if outputs == 1 else (n, outputs)))
    params = model.init(jax.random.PRNGKey(3))
    run = train.gradient_descent(model.apply, params, x, y, lr=lr, steps=steps, snapshots=steps // every,
                                 progress=False)
    return model, x, y, params, run


@pytest.fixture(scope="module")
def coarse():
    return relu_run(every=4, n=10)


# ----------------------------------------------------------------------------- the estimate on real runs

@pytest.mark.parametrize("outputs", [1, 2])
def test_every_twin_re_linearized_with_euler_at_every_step_is_the_retrained_mean(outputs):
    model, x, y, params, run = relu_run(every=1, outputs=outputs)
    est = loo_estimate.estimate_loo_loss(model.apply, run, x, size=run.n, key=KEY, rule="euler")
    twins = train.retrain_without(model.apply, params, x, y, np.arange(run.n), lr=run.lr, steps=run.steps,
                                  progress=False)
    exact = 0.5 * np.sum(np.asarray(twins) ** 2) / run.n
    # the re-linearized twins equal the retrained ones up to rounding over n·steps updates (test_two_time)
    assert abs(est.estimate - exact) <= tolerance(jnp.float64, run.n * run.steps, cond=1e4) * exact
    assert est.stderr == 0.0
    assert np.array_equal(est.indices, np.arange(run.n)) and np.all(est.weights == 1) and np.all(est.strata == -1)


def test_size_n_is_the_mean_loss_of_every_re_linearized_twin(coarse):
    model, x, _, _, run = coarse
    est = loo_estimate.estimate_loo_loss(model.apply, run, x, size=run.n, key=KEY)
    cross = ntk.two_time_kernel(model.apply, run.weights, x)
    rho, _, forces = predict.trajectory_loo(run, cross=cross)
    relin = predict.twin_readout(model.apply, run, x, forces, np.arange(run.n), relinearize=True)
    assert_close(est.estimate, 0.5 * np.mean(relin ** 2), size=run.n)
    assert_close(est.two_time, 0.5 * np.mean(rho ** 2), size=run.n)
    assert_close(est.two_time_loo, rho, size=1)
    assert_close(est.corrections, 0.5 * relin ** 2 - 0.5 * rho ** 2, size=1, scale=float(np.max(relin ** 2)))
    assert est.stderr == 0.0 and est.design == "stratified"
    assert set(est.seconds) == {"two_time", "relinearized", "total"}


def test_a_subset_estimate_is_the_weighted_control_variate(coarse):
    model, x, _, _, run = coarse
    est = loo_estimate.estimate_loo_loss(model.apply, run, x, size=5, key=jax.random.PRNGKey(4))
    assert len(est.indices) == 5 and np.all(np.diff(est.indices) > 0)
    rho, _, forces = predict.trajectory_loo(run, cross=ntk.two_time_kernel(model.apply, run.weights, x))
    relin = predict.twin_readout(model.apply, run, x, forces, est.indices, relinearize=True)
    ell = 0.5 * rho ** 2
    want = np.mean(ell) + np.sum(est.weights * (0.5 * relin ** 2 - ell[est.indices])) / run.n
    assert_close(est.estimate, want, size=run.n)
    assert_close(est.relinearized_loo, relin, size=1)
    # the weights are the inverse inclusion probabilities of the design's strata
    certain, groups, counts = loo_estimate.loo_strata(ell + np.mean(ell), 5)
    for i, w, s in zip(est.indices, est.weights, est.strata):
        assert (s == -1 and i in certain and w == 1) or (i in groups[s] and w == len(groups[s]) / counts[s])


def test_bad_input_to_the_estimate_raises(coarse):
    model, x, _, _, run = coarse
    with pytest.raises(ValueError, match="size must be at most"):
        loo_estimate.estimate_loo_loss(model.apply, run, x, size=run.n + 1, key=KEY)
    with pytest.raises(ValueError, match="size must be"):
        loo_estimate.estimate_loo_loss(model.apply, run, x, size=1, key=KEY)
    with pytest.raises(ValueError, match="design must be one of"):
        loo_estimate.estimate_loo_loss(model.apply, run, x, size=4, key=KEY, design="pps")
    with pytest.raises(ValueError, match="training inputs"):
        loo_estimate.estimate_loo_loss(model.apply, run, x[:-1], size=4, key=KEY)
    bare = run._replace(thetas=run.thetas[:0], weights=())
    with pytest.raises(ValueError, match="snapshots"):
        loo_estimate.estimate_loo_loss(model.apply, bare, x, size=4, key=KEY)


# ----------------------------------------------------------------------------- the sampling design

def synthetic(n=9, seed=0):
    """Two-time losses and heavy-tailed corrections that grow with them, as measured on real runs."""
    rng = np.random.default_rng(seed)
    ell = rng.exponential(size=n) ** 2 + 0.01
    d = -0.3 * ell * rng.uniform(0.5, 1.5, n) + 0.02 * rng.normal(size=n)
    return ell, d


@pytest.mark.parametrize("design, size", [("stratified", 4), ("stratified", 5), ("stratified", 7),
                                          ("uniform", 3), ("uniform", 6)])
def test_the_design_is_unbiased_and_its_variance_honest_over_every_subset(design, size):
    """Brute force over every subset the design can draw (uniform within strata): the mean estimate is
    the mean of ``ℓ + d``, and the mean of the estimated variance is the estimate's variance."""
    ell, d = synthetic()
    certain, groups, counts = loo_estimate.loo_strata(ell + np.mean(ell), size, design)
    assert len(certain) + sum(counts) == size and len(certain) + sum(map(len, groups)) == len(ell)
    estimates, variances = [], []
    for picks in itertools.product(*[itertools.combinations(g, k) for g, k in zip(groups, counts)]):
        idx = np.concatenate([certain] + [np.asarray(p) for p in picks]).astype(int)
        w = np.concatenate([np.ones(len(certain))] + [np.full(k, len(g) / k) for g, k in zip(groups, counts)])
        s = np.concatenate([np.full(len(certain), -1)] + [np.full(k, h) for h, k in enumerate(counts)])
        est, se = loo_estimate.control_variate(ell, d[idx], w, s)
        estimates.append(est)
        variances.append(se ** 2)
    truth = np.mean(ell + d)
    scale = np.max(np.abs(ell)) + np.max(np.abs(d)) * len(ell)
    assert abs(np.mean(estimates) - truth) <= tolerance(jnp.float64, len(ell) * len(estimates)) * scale
    assert_close(np.mean(variances), np.var(estimates), size=len(ell) * len(estimates), scale=np.var(estimates))
    assert np.var(estimates) > 0


def test_the_stratified_design_beats_a_uniform_subset_on_heavy_tailed_corrections():
    ell, d = synthetic(n=60, seed=1)

    def variance(design):
        certain, groups, counts = loo_estimate.loo_strata(ell + np.mean(ell), 12, design)
        return sum(len(g) ** 2 * (1 - k / len(g)) * np.var(d[g], ddof=1) / k for g, k in zip(groups, counts))

    assert variance("stratified") < 0.5 * variance("uniform")


def test_drawn_subsets_are_unbiased_over_many_keys():
    """``loo_subset`` with ``jax.random`` keys: the mean over 400 keys is within 4 of its standard errors."""
    ell, d = synthetic(n=12, seed=2)
    est = []
    for k in jax.random.split(jax.random.PRNGKey(5), 400):
        idx, w, s = loo_estimate.loo_subset(ell + np.mean(ell), 5, key=k)
        est.append(loo_estimate.control_variate(ell, d[idx], w, s)[0])
    est = np.asarray(est)
    assert abs(est.mean() - np.mean(ell + d)) < 4 * est.std(ddof=1) / math.sqrt(len(est))


def test_strata_take_the_largest_samples_with_certainty_and_keep_two_draws_per_stratum():
    a = np.array([100.0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    certain, groups, counts = loo_estimate.loo_strata(a, 4)
    assert list(certain) == [0] and counts == [3] and sorted(groups[0]) == list(range(1, 10))
    certain, groups, counts = loo_estimate.loo_strata(np.ones(10), 10)
    assert list(certain) == list(range(10)) and groups == []
    certain, groups, counts = loo_estimate.loo_strata(np.arange(1.0, 11), 6, "uniform")
    assert len(certain) == 0 and counts == [6] and len(groups[0]) == 10
    for size in range(2, 10):
        certain, groups, counts = loo_estimate.loo_strata(np.arange(1.0, 11) ** 3, size)
        assert all(k >= 2 and len(g) >= k for g, k in zip(groups, counts))
        assert len(certain) + sum(counts) == size


def test_bad_input_to_the_design_raises():
    with pytest.raises(ValueError, match="positive"):
        loo_estimate.loo_strata(np.array([1.0, 0.0, 2.0]), 2)
    with pytest.raises(ValueError, match="at most"):
        loo_estimate.loo_strata(np.ones(3), 4)
    with pytest.raises(ValueError, match="design"):
        loo_estimate.loo_strata(np.ones(3), 2, "systematic")
    with pytest.raises(ValueError, match="strata must have one entry"):
        loo_estimate.control_variate(np.ones(4), np.ones(2), np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="at least 2 per stratum"):
        loo_estimate.control_variate(np.ones(4), np.ones(2), np.full(2, 2.0), np.array([0, 1]))
    with pytest.raises(ValueError, match="weights must have shape"):
        loo_estimate.control_variate(np.ones(4), np.ones(2), np.ones(3), np.zeros(2))


# ----------------------------------------------------------------------------- the snapshot check

def test_the_snapshot_check_is_richardson_on_the_run_with_half_the_snapshots(coarse):
    model, x, y, params, run = coarse
    est = loo_estimate.estimate_loo_loss(model.apply, run, x, size=6, key=jax.random.PRNGKey(1))
    check = loo_estimate.snapshot_check(model.apply, run, x, est)
    # the same run recomputed with half the snapshots, and the same subset re-linearized on it
    half = train.gradient_descent(model.apply, params, x, y, lr=run.lr, steps=run.steps,
                                  snapshots=len(run.thetas) // 2, progress=False)
    forces = predict.trajectory_loo(half, cross=ntk.two_time_kernel(model.apply, half.weights, x)).forces
    relin = predict.twin_readout(model.apply, half, x, forces, est.indices, relinearize=True)
    ell = 0.5 * est.two_time_loo ** 2
    coarse_estimate = np.mean(ell) + np.sum(est.weights * (0.5 * relin ** 2 - ell[est.indices])) / run.n
    assert_close(check.coarse, coarse_estimate, size=run.n * run.steps)
    assert check.snapshots == len(run.thetas) and check.coarse_snapshots == len(run.thetas) // 2
    assert_close(check.extrapolated, 2 * est.estimate - coarse_estimate, size=run.n * run.steps)
    shortfall = (check.extrapolated - est.estimate) / check.extrapolated
    assert_close(check.shortfall, shortfall, size=run.n * run.steps, scale=1.0)
    assert check.needed == max(1, math.ceil(len(run.thetas) * abs(shortfall) / 0.01))
    assert check.enough == (check.needed <= len(run.thetas))
    assert_close(check.total_stderr, np.sqrt(est.stderr ** 2 + (check.extrapolated - est.estimate) ** 2),
                 size=run.n * run.steps)


def test_total_stderr_adds_the_snapshot_bias_to_the_sampling_error_in_quadrature():
    assert loo_estimate.total_stderr(0.03, 0.04) == pytest.approx(0.05, rel=4 * np.finfo(float).eps)  # 3-4-5
    assert loo_estimate.total_stderr(0.03, -0.04) == loo_estimate.total_stderr(0.03, 0.04)  # the sign does not count
    assert loo_estimate.total_stderr(0.0, 0.0) == 0.0  # every twin re-linearized, no bias left
    assert loo_estimate.total_stderr(0.02, 0.0) == 0.02  # no bias: the sampling error alone
    with pytest.raises(ValueError, match="stderr"):
        loo_estimate.total_stderr(-0.1, 0.0)
    with pytest.raises(ValueError, match="bias"):
        loo_estimate.total_stderr(0.1, np.nan)
    with pytest.raises(ValueError, match="bias"):
        loo_estimate.total_stderr(0.1, "0.1")


def test_the_snapshot_rule_says_how_many_snapshots_keep_the_twins_within_one_percent_of_retraining():
    """Euler's rule leaves an error ``∝ 1/M`` (first order in the segment length), the law the rule assumes.

    On a smooth network the checks at ``M = 4`` and ``M = 8`` agree on the ``M`` needed for 1% (within
    one), say that 4 are too few and 8 enough, and the retrained twins agree: the estimate from 4
    snapshots misses them by more than 1%, from 8 by less; Richardson's extrapolation misses by less
    than either estimate.
    """
    n, lr, steps = 10, 0.5, 48
    model = models.mlp(3, 16, depth=3, activation="tanh", dtype=jnp.float64)
    x = jax.random.normal(KEY, (n, 3), jnp.float64)
    y = jnp.sign(jax.random.normal(jax.random.PRNGKey(9), (n,)))
    params = model.init(jax.random.PRNGKey(3))
    twins = train.retrain_without(model.apply, params, x, y, np.arange(n), lr=lr, steps=steps, progress=False)
    exact = 0.5 * np.mean(np.asarray(twins) ** 2)
    checks, errors = {}, {}
    for m in (4, 8):
        run = train.gradient_descent(model.apply, params, x, y, lr=lr, steps=steps, snapshots=m, progress=False)
        est = loo_estimate.estimate_loo_loss(model.apply, run, x, size=n, key=KEY, rule="euler")
        checks[m] = loo_estimate.snapshot_check(model.apply, run, x, est, rule="euler")
        errors[m] = abs(est.estimate / exact - 1)
        assert abs(checks[m].extrapolated / exact - 1) < errors[m]
    assert abs(checks[4].needed - checks[8].needed) <= 1
    assert not checks[4].enough and checks[8].enough
    assert errors[4] > 0.01 > errors[8]
    assert 1.5 < errors[4] / errors[8] < 3  # the 1/M law: twice the snapshots, about half the error


def test_bad_input_to_the_snapshot_check_raises(coarse):
    model, x, _, _, run = coarse
    est = loo_estimate.estimate_loo_loss(model.apply, run, x, size=4, key=KEY)
    with pytest.raises(TypeError, match="LooEstimate"):
        loo_estimate.snapshot_check(model.apply, run, x, est._asdict())
    odd = run._replace(thetas=run.thetas[:3], snapshot_steps=run.snapshot_steps[:3],
                       weights=run.weights[:3] + run.weights[-1:])
    with pytest.raises(ValueError, match="even number of snapshots"):
        loo_estimate.snapshot_check(model.apply, odd, x, est)
    with pytest.raises(ValueError, match="target"):
        loo_estimate.snapshot_check(model.apply, run, x, est, target=0.0)


# ----------------------------------------------------------------------------- influence, jackknife, ALO

def ridge(n=14, d=5, outputs=1, lam=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n,) if outputs == 1 else (n, outputs))
    w = np.linalg.solve(x.T @ x / n + lam * np.eye(d), x.T @ y / n)
    return x, y, w, lam


@pytest.mark.parametrize("outputs", [1, 2])
def test_approximate_loo_is_exact_leave_one_out_for_ridge_regression(outputs):
    """Allen's PRESS: ridge refitted without each sample (same 1/n weight per sample) by brute force."""
    x, y, w, lam = ridge(outputs=outputs)
    n = len(x)
    exact = np.stack([x[i] @ np.linalg.solve(x[k].T @ x[k] / n + lam * np.eye(x.shape[1]), x[k].T @ y[k] / n) - y[i]
                      for i in range(n) for k in [np.arange(n) != i]])
    theta = np.kron(x @ x.T, np.eye(outputs))  # rows ordered (sample, output)
    got = baselines.approximate_loo(theta, x @ w - y, damping=lam)
    cond = np.linalg.cond(x.T @ x / n + lam * np.eye(x.shape[1]))
    assert got.shape == exact.shape
    assert_close(got, exact, size=n, cond=cond)


def test_influence_functions_and_the_jackknife_are_the_closed_form_on_a_linear_model():
    """``f = xᵀw``: the Hessian is Gauss–Newton, ``ρ_i = r_i (1 + h_ii)``, ``h = X (XᵀX + nλ)⁻¹ Xᵀ``."""
    x, y, w, lam = ridge()
    n = len(x)
    r = x @ w - y
    h = np.diag(x @ np.linalg.solve(x.T @ x + n * lam * np.eye(x.shape[1]), x.T))
    cond = np.linalg.cond(x.T @ x / n + lam * np.eye(x.shape[1]))
    jack = baselines.infinitesimal_jackknife(x @ x.T, r, damping=lam)
    assert_close(jack, r * (1 + h), size=n, cond=cond)
    infl = baselines.influence_loo(lambda p, xs: xs @ p["w"], {"w": jnp.asarray(w)}, x, y, damping=lam)
    # conjugate gradients to relative tolerance 1e-10 on a d = 5 system (exact after 5 steps)
    assert_close(infl, r * (1 + h), size=n, cond=cond)


def test_influence_functions_use_the_full_hessian_of_a_network():
    """Against the dense Hessian of the flattened weights (``jax.hessian``), residual curvature included."""
    model = models.mlp(3, 5, 2, activation="tanh", dtype=jnp.float64)
    x = jax.random.normal(KEY, (7, 3), jnp.float64)
    y = jnp.sign(jax.random.normal(jax.random.PRNGKey(2), (7,)))
    params = model.init(jax.random.PRNGKey(1))
    flat, unravel = ravel_pytree(params)
    n, lam = 7, 0.5
    loss = lambda v: 0.5 * jnp.sum((model.apply(unravel(v), x) - y) ** 2) / n  # noqa: E731
    hess = np.asarray(jax.hessian(loss)(flat)) + lam * np.eye(len(flat))
    assert np.min(np.linalg.eigvalsh(hess)) > 0
    jac = np.asarray(jax.jacobian(lambda v: model.apply(unravel(v), x))(flat))
    r = np.asarray(model.apply(params, x) - y)
    want = np.array([r[i] + jac[i] @ np.linalg.solve(hess, jac[i] * r[i] / n) for i in range(n)])
    got = baselines.influence_loo(model.apply, params, x, y, damping=lam, maxiter=200, tol=1e-13)
    # conjugate gradients stopped at relative residual 1e-13 on a system of condition cond(hess)
    assert np.max(np.abs(got - want)) <= 1e-13 * np.linalg.cond(hess) * np.max(np.abs(want))
    gauss_newton = baselines.infinitesimal_jackknife(jac @ jac.T, r, damping=lam)
    assert np.max(np.abs(gauss_newton - want)) > 1e-6  # the residual curvature matters on this network


def test_bad_input_to_the_baselines_raises():
    x, y, w, lam = ridge()
    with pytest.raises(ValueError, match="residuals must hold"):
        baselines.approximate_loo(x @ x.T, np.ones(5), damping=lam)
    with pytest.raises(ValueError, match="damping"):
        baselines.infinitesimal_jackknife(x @ x.T, x @ w - y, damping=-1.0)
    with pytest.raises(ValueError, match="square"):
        baselines.approximate_loo(x, x @ w - y, damping=lam)
    with pytest.raises(TypeError, match="apply"):
        baselines.influence_loo("f", {"w": w}, x, y, damping=lam)
    with pytest.raises(ValueError, match="one row per input"):
        baselines.influence_loo(lambda p, xs: xs @ p["w"], {"w": w}, x, y[:-1], damping=lam)


# ----------------------------------------------------------------------------- the subset-size rule

def pilot_of(ell, d, size, key, design="stratified"):
    """The :class:`LooEstimate` a run with two-time losses ``ell`` and corrections ``d`` would give."""
    idx, w, s = loo_estimate.loo_subset(ell + np.mean(ell), size, key=key, design=design)
    est, se = loo_estimate.control_variate(ell, d[idx], w, s)
    return loo_estimate.LooEstimate(estimate=est, stderr=se, two_time=float(np.mean(ell)),
                                    two_time_loo=np.sqrt(2 * ell), indices=idx, weights=w, strata=s,
                                    relinearized_loo=np.zeros(len(idx)), corrections=d[idx],
                                    design=design, seconds={})


def check_of(pilot, bias):
    """A :class:`SnapshotCheck` of ``pilot`` whose snapshot bias ``L_∞ − L(M)`` is ``bias``."""
    return loo_estimate.SnapshotCheck(snapshots=40, coarse_snapshots=20, estimate=pilot.estimate,
                                      coarse=pilot.estimate - bias, extrapolated=pilot.estimate + bias,
                                      extrapolated_stderr=pilot.stderr, shortfall=bias / (pilot.estimate + bias),
                                      needed=40, enough=True, total_stderr=math.hypot(pilot.stderr, bias))


@pytest.mark.parametrize("bias", [0.0, 0.004])
def test_the_size_rule_is_the_smallest_uniform_subset_whose_interval_fits_the_tolerance(bias):
    """For a uniform subset the standard error is ``S √(1/m − 1/n)`` exactly (``S²``: the population
    variance of the corrections); the rule's ``m`` is the smallest whose ``2√(se² + b²)`` is within
    ``τ L̂``, computed here from ``S`` itself rather than from the pilot."""
    ell, d = synthetic(n=200, seed=5)
    spread = np.var(d, ddof=1)
    pilot = pilot_of(ell, d, 10, KEY, "uniform")
    pilot = pilot._replace(stderr=float(np.sqrt(spread * (1 / 10 - 1 / 200))))  # the exact standard error at m₀
    rule = loo_estimate.loo_size(pilot, check_of(pilot, bias), tolerance=0.03)
    half = 0.03 * pilot.estimate / 2
    assert rule.reachable and 10 < rule.size < 200
    assert_close(rule.sampling_stderr, np.sqrt(half ** 2 - bias ** 2), size=4)
    fits = lambda m: 2 * np.sqrt(spread * (1 / m - 1 / 200) + bias ** 2) <= 0.03 * pilot.estimate  # noqa: E731
    assert fits(rule.size) and not fits(rule.size - 1)
    # the law the rule inverts: its size is the smallest whose predicted standard error fits the budget
    at = lambda m: loo_estimate.stderr_at(pilot.stderr, 10, m, 200)  # noqa: E731
    assert at(10) == pytest.approx(pilot.stderr, rel=4 * np.finfo(float).eps)
    assert_close(at(rule.size), np.sqrt(spread * (1 / rule.size - 1 / 200)), size=4)
    assert at(rule.size) <= rule.sampling_stderr < at(rule.size - 1)
    with pytest.raises(ValueError, match="pilot_size"):
        loo_estimate.stderr_at(pilot.stderr, 200, 10, 200)


def test_the_size_rule_keeps_the_pilot_when_it_suffices_and_refuses_when_the_bias_fills_the_tolerance():
    ell, d = synthetic(n=60, seed=6)
    pilot = pilot_of(ell, d, 12, KEY)
    loose = loo_estimate.loo_size(pilot, check_of(pilot, 0.0), tolerance=4 * pilot.stderr / pilot.estimate)
    assert loose == (12, pytest.approx(2 * pilot.stderr), True)  # 2 se already within τ L̂ / 2 · 2
    biased = loo_estimate.loo_size(pilot, check_of(pilot, 0.02 * pilot.estimate), tolerance=0.03)
    assert biased.size == 12 and not biased.reachable and math.isnan(biased.sampling_stderr)


def test_the_two_stage_estimate_meets_its_tolerance_over_many_pilots():
    """Heavy-tailed corrections, stratified pilots of 20 of 300: the rule's second subset brings the
    estimate within ±3% of the mean re-linearized loss in at least 85% of 100 pilots (an honest ±2
    standard-error interval would in about 95%), and its interval fits the tolerance in most."""
    ell, d = synthetic(n=300, seed=7)
    truth = np.mean(ell + d)
    hits, fits, sizes = 0, 0, []
    for k in jax.random.split(KEY, 100):
        pilot = pilot_of(ell, d, 20, k)
        rule = loo_estimate.loo_size(pilot, check_of(pilot, 0.0), tolerance=0.03)
        final = pilot_of(ell, d, rule.size, jax.random.fold_in(k, 1)) if rule.size > 20 else pilot
        hits += abs(final.estimate / truth - 1) <= 0.03
        fits += 2 * final.stderr <= 0.03 * final.estimate
        sizes.append(rule.size)
    assert hits >= 85 and fits >= 70 and 20 < np.median(sizes) < 300


def test_bad_input_to_the_size_rule_raises():
    ell, d = synthetic(n=30, seed=8)
    pilot = pilot_of(ell, d, 6, KEY)
    with pytest.raises(TypeError, match="LooEstimate"):
        loo_estimate.loo_size(pilot._asdict(), check_of(pilot, 0.0))
    with pytest.raises(TypeError, match="SnapshotCheck"):
        loo_estimate.loo_size(pilot, {"bias": 0.0})
    with pytest.raises(ValueError, match="snapshot check of pilot"):
        loo_estimate.loo_size(pilot, check_of(pilot._replace(estimate=pilot.estimate + 1), 0.0))
    with pytest.raises(ValueError, match="tolerance"):
        loo_estimate.loo_size(pilot, check_of(pilot, 0.0), tolerance=0.0)


def test_estimate_within_is_the_pilot_its_check_and_a_second_subset_of_the_rule_s_size(coarse):
    model, x, _, _, run = coarse
    key = jax.random.PRNGKey(2)
    pilot = loo_estimate.estimate_loo_loss(model.apply, run, x, size=4, key=key)
    check = loo_estimate.snapshot_check(model.apply, run, x, pilot)
    bias = check.bias
    assert bias == check.extrapolated - check.estimate
    # a tolerance that asks for half the pilot's standard error: the rule must draw more twins
    tol = 2 * math.hypot(bias, pilot.stderr / 2) / pilot.estimate
    out = loo_estimate.estimate_loo_loss_within(model.apply, run, x, key=key, tolerance=tol, pilot=4)
    assert_close(out.pilot.estimate, pilot.estimate, size=run.n * run.steps)
    assert out.size.reachable and out.size.size > 4 and len(out.estimate.indices) == out.size.size
    fresh = loo_estimate.estimate_loo_loss(model.apply, run, x, size=out.size.size, key=jax.random.fold_in(key, 1))
    assert np.array_equal(out.estimate.indices, fresh.indices)  # the pilot's twins reused, not recomputed:
    assert_close(out.estimate.estimate, fresh.estimate, size=run.n * run.steps)  # the same estimate
    assert_close(out.total_stderr, math.hypot(out.estimate.stderr, bias), size=run.n * run.steps)
    loose = loo_estimate.estimate_loo_loss_within(model.apply, run, x, key=key, tolerance=1.0, pilot=4)
    assert loose.estimate is loose.pilot and loose.within
    tight = loo_estimate.estimate_loo_loss_within(model.apply, run, x, key=key, tolerance=abs(bias) / pilot.estimate,
                                                  pilot=4)
    assert not tight.size.reachable and tight.estimate is tight.pilot and not tight.within
    with pytest.raises(ValueError, match="tolerance"):
        loo_estimate.estimate_loo_loss_within(model.apply, run, x, key=key, tolerance=-0.1)


# ----------------------------------------------------------------------------- reproduce ch7-estimators

def test_simulated_designs_report_rms_and_coverage():
    ell, d = synthetic(n=30, seed=3)
    out = ch7_estimators.simulate_designs(ell, d, 8, draws=300)
    assert set(out) == {f"{a}_{b}" for a in ("stratified", "uniform") for b in ("rms", "within3", "coverage")}
    assert out["stratified_rms"] < out["uniform_rms"]
    assert all(0 <= out[f"{a}_coverage"] <= 1 for a in ("stratified", "uniform"))


def test_reproduce_writes_one_row_per_setting_resumably(tmp_path, monkeypatch):
    rows = ch7_estimators.reproduce_ch7_estimators(tmp_path, "smoke", names=["digits-relu-smoke"], progress=False,
                                                   command="test")
    (row,) = read_table(tmp_path / "ch7_estimators.csv")
    assert row["name"] == "digits-relu-smoke" and row["command"] == "test" and rows[0]["name"] == row["name"]
    for column in ("exact", "estimate", "stderr", "two_time", "relinearized_all", "gcv", "frozen", "influence",
                   "jackknife", "alo", "time_ratio", "exact_seconds", "estimate_seconds", "snapshots_needed"):
        assert np.isfinite(row[column]), column
    assert abs(row["estimate_error"] - (row["estimate"] / row["exact"] - 1)) <= (  # a quotient minus 1, from exact digits
        tolerance(np.float64, 2) * row["estimate"] / row["exact"])
    monkeypatch.setattr(ch7_estimators, "estimator_row", lambda *a, **k: pytest.fail("recomputed a stored row"))
    ch7_estimators.reproduce_ch7_estimators(tmp_path, "smoke", names=["digits-relu-smoke"], progress=False,
                                            command="test")
    with pytest.raises(ValueError, match="names must be settings"):
        ch7_estimators.reproduce_ch7_estimators(tmp_path, "smoke", names=["nope"], progress=False)
    with pytest.raises(ValueError, match="scale must be one of"):
        ch7_estimators.reproduce_ch7_estimators(tmp_path, "huge", progress=False)


def test_the_size_rule_table_on_its_smoke_scale(tmp_path):
    from gramlib.experiments import ch7_size_rule
    assert ch7_size_rule.snapshots_for(167, 1000) == 200 and ch7_size_rule.snapshots_for(55, 500) == 100
    assert ch7_size_rule.snapshots_for(1, 8) == 2
    with pytest.raises(ValueError, match="even divisor"):
        ch7_size_rule.snapshots_for(9, 9)
    rows = ch7_size_rule.reproduce_ch7_size_rule(tmp_path, "smoke", progress=False, command="test")
    stored = ch7_size_rule.committed_rows(tmp_path, "smoke")
    assert [r["name"] for r in stored] == [r["name"] for r in rows] == [s.name for s in ch7_estimators.SCALES["smoke"]]
    for r in stored:
        assert r["size"] >= 4 and r["snapshots"] >= r["first_snapshots"] and np.isfinite(r["exact"])
        assert_close(r["total_stderr"], math.hypot(r["stderr"], r["bias"]), size=2)
        assert r["inside"] is bool(abs(r["estimate"] - r["exact"]) <= 2 * r["total_stderr"])
        assert all(isinstance(r[c], bool) for c in ch7_size_rule.FLAGS)
    with pytest.raises(ValueError, match="scale must be one of"):
        ch7_size_rule.setting_keys("rerun")


def test_a_rerun_setting_names_the_setting_it_trains_again():
    (rerun,) = ch7_estimators.scale_config("rerun")
    assert ch7_estimators.repeated_setting(rerun).name == "teacher-relu-d4-n150"
    with pytest.raises(ValueError, match="repeats 0 settings"):
        ch7_estimators.repeated_setting(dataclasses.replace(rerun, lr=0.3))


def test_summarize_counts_the_targets_and_fits_how_the_time_ratio_scales_with_n(tmp_path):
    keys = ch7_estimators.setting_keys("smoke")
    base = {"exact": 1.0, "estimate": 1.01, "stderr": 0.003, "extrapolated": 0.96, "relinearized_all": 1.004,
            "total_stderr": math.hypot(0.003, 0.05),
            "estimate_error": 0.01, "inside": "True", "extrapolated_error": -0.04, "extrapolated_inside": "False",
            "uniform_inside": "False", **{f"{b}_error": 0.1 for b in ch7_estimators.BASELINES},
            "command": "test", "commit": "abc", "platform": "linux"}
    rows = [{**keys[0], **base, "time_ratio": 0.5}, {**keys[0], **base, "n": 4 * keys[0]["n"], "time_ratio": 0.125,
                                                     "estimate_error": -0.05, "inside": "False", "name": "bigger",
                                                     "estimate": 0.95, "extrapolated": 0.951,
                                                     "total_stderr": math.hypot(0.003, 0.001)},
            {**keys[1], **base, "time_ratio": 0.9, "two_time_error": 0.02}]
    out = ch7_estimators.summarize(rows)
    assert out["settings"] == 3 and out["estimate_within"] == 2 and out["estimate_inside"] == 2
    assert out["estimate_max"] == 0.05 and out["extrapolated_within"] == 0 and out["extrapolated_inside"] == 0
    assert out["total_inside"] == 2  # the bias widens the first and the third, not the second
    assert out["two_time_within"] == 1 and out["gcv_max"] == 0.1 and out["max_ratio"] == 0.9
    assert out["largest_n"] == 4 * keys[0]["n"] and out["ratio_largest_n"] == 0.125
    # a ratio ∝ 1/n over the series that differs only in n: a log-log slope of two points (log 4 apart)
    assert abs(out["ratio_slope"] + 1) <= tolerance(np.float64, 2, cond=np.log(4 * keys[0]["n"]) / np.log(4))
    from gramlib.experiments.results import write_csv
    write_csv(tmp_path / "ch7_estimators.csv", [rows[2], rows[0], {**rows[0], "name": "other"}])
    stored = ch7_estimators.committed_rows(tmp_path, "smoke")
    assert [r["name"] for r in stored] == [keys[0]["name"], keys[1]["name"]]
    for r in stored:  # the two columns computed on loading, from the stored ones
        assert_close(r["total_stderr"], math.hypot(0.003, 0.96 - 1.01), size=2)
        assert_close(r["drawn"], (1.01 - 1.004) / 0.003, size=2, scale=2.0)
    write_csv(tmp_path / "ch7_estimators.csv", [{**rows[0], "commit": ""}])
    with pytest.raises(ValueError, match="provenance"):
        ch7_estimators.committed_rows(tmp_path, "smoke")
    with pytest.raises(ValueError, match="at least one row"):
        ch7_estimators.summarize([])
