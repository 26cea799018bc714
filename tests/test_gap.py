"""Tests of gramlib.gap against independent computations (Chapter 1)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib import gap
from gramlib.views.exercises import ch01
from tests.tolerance import assert_close, cond, tolerance

# A finite distribution with non-orthogonal inputs and unequal probabilities: every
# expectation over datasets is an exact finite sum over the 3^n datasets.
POINTS = np.array([[1.0, 0.0], [0.6, 0.8], [-0.5, 0.3]])
TARGETS = np.array([1.0, -0.5, 2.0])
PROBS = np.array([0.5, 0.3, 0.2])
N_MC = 4000  # datasets per Monte Carlo check (one batch size: fewer compilations)


def finite_task():
    P, T, p = jnp.asarray(POINTS), jnp.asarray(TARGETS), jnp.log(jnp.asarray(PROBS))

    def sample(key, n):
        j = jax.random.categorical(key, p, shape=(n,))
        return P[j], T[j]

    def population_loss(w):
        return 0.5 * jnp.sum(jnp.asarray(PROBS) * (P @ w - T) ** 2)

    return gap.Task(sample, population_loss)


def within(estimate, exact, sigmas=4.0):
    """MC mean within `sigmas` standard errors (half_width is 1.96 se) of the exact value."""
    se = np.asarray(estimate.half_width) / gap.Z95
    rounding = tolerance(np.float64, N_MC) * np.abs(exact).max()  # an exact 0 when every sample agrees
    return np.all(np.abs(np.asarray(estimate.mean) - exact) <= sigmas * se + rounding)


# ----------------------------------------------------------------------- trainers


def rk4(X, Y, w0, t, steps=1000):
    n = X.shape[0]
    f = lambda w: -X.T @ (X @ w - Y) / n
    w, h = np.array(w0, float), t / steps
    for _ in range(steps):
        k1 = f(w)
        k2 = f(w + h / 2 * k1)
        k3 = f(w + h / 2 * k2)
        k4 = f(w + h * k3)
        w = w + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return w


def test_gradient_flow_matches_numerical_integration():
    rng = np.random.default_rng(0)
    X, Y, w0 = rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=3)
    W = gap.linear_gradient_flow(X, Y, [0.0, 0.7, 2.5], w0)
    for t, w in zip([0.0, 0.7, 2.5], W):
        np.testing.assert_allclose(w, rk4(X, Y, w0, t), atol=1e-10)  # RK4, 1000 steps: error O(h⁴) ≈ 1e-12


def test_gradient_flow_at_infinity_is_nearest_interpolant_even_when_singular():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 5))
    X = np.vstack([X, X[:1]])  # a repeated input: X^T X / n singular, d > n
    Y = np.append(rng.normal(size=3), 0.0)
    Y[3] = Y[0]
    w0 = rng.normal(size=5)
    w = np.asarray(gap.linear_gradient_flow(X, Y, np.inf, w0))
    pinv = np.linalg.pinv(X)
    expected = pinv @ Y + (np.eye(5) - pinv @ X) @ w0
    assert_close(w, expected, 4 * 5, cond=cond(X @ X.T))  # on the range of the singular X Xᵀ
    np.testing.assert_allclose(gap.linear_gradient_flow(X, Y, 1e8, w0), w, atol=1e-9)  # continuity: decays as e^{−λ_min t}
    assert np.all(np.isfinite(w))


def test_gradient_descent_matches_explicit_loop_including_large_steps():
    rng = np.random.default_rng(2)
    X, Y, w0 = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=3)
    lam_max = np.linalg.eigvalsh(X.T @ X / 5).max()
    for lr in [0.1, 1.0 / lam_max, 1.5 / lam_max]:  # ηλ < 1, = 1 and in (1, 2)
        w, loop = w0.copy(), []
        for _ in range(31):
            loop.append(w.copy())
            w = w - lr * X.T @ (X @ w - Y) / 5
        W = gap.linear_gradient_descent(X, Y, np.arange(31), lr, w0)
        assert_close(W, np.array(loop), 31 * 5 * 3, cond=cond(X.T @ X))  # 31 steps against the closed form


def test_trainer_factories_agree_with_closed_forms():
    rng = np.random.default_rng(3)
    X, Y = jnp.asarray(rng.normal(size=(4, 2))), jnp.asarray(rng.normal(size=4))
    flow = jax.jit(gap.gradient_flow([0.5, np.inf]))
    rule = tolerance(np.float64, 7 * 4 * 2, cond=cond(np.asarray(X).T @ np.asarray(X)))  # jit against eager
    np.testing.assert_allclose(flow(X, Y), gap.linear_gradient_flow(X, Y, [0.5, np.inf]), rtol=rule)
    trainer = gap.linear_descent([0, 3, 7], 0.4)
    np.testing.assert_allclose(jax.jit(trainer)(X, Y), gap.linear_gradient_descent(X, Y, [0, 3, 7], 0.4), rtol=rule)
    np.testing.assert_allclose(trainer.times, [0.0, 1.2, 2.8], rtol=tolerance(np.float64))


# ------------------------------------------------------- identities, exactly enumerated


def test_replace_one_and_leave_one_out_identities_hold_exactly():
    n, times = 4, [0.3, 2.0, np.inf]
    train = jax.jit(jax.vmap(gap.gradient_flow(times)))
    idx = np.array(list(itertools.product(range(3), repeat=n)))  # all 3^n datasets
    prob = np.prod(PROBS[idx], axis=1)
    W = np.asarray(train(POINTS[idx], TARGETS[idx]))  # (3^n, T, d)
    pred = np.einsum("std,snd->stn", W, POINTS[idx])
    own = 0.5 * (pred - TARGETS[idx][:, None, :]) ** 2  # ℓ(w_S; z_i), (3^n, T, n)
    test = 0.5 * np.einsum("j,stj->st", PROBS, (W @ POINTS.T - TARGETS) ** 2)
    direct = prob @ (test - own.mean(axis=2))
    replace = np.zeros(len(times))
    loo_test = np.zeros(len(times))
    loo_loss = np.zeros(len(times))
    for i in range(n):
        zi = idx[:, i]
        for j in range(3):  # the fresh z' is point j, with probability PROBS[j]
            swapped = idx.copy()
            swapped[:, i] = j
            Wi = np.asarray(train(POINTS[swapped], TARGETS[swapped]))
            other = 0.5 * (np.einsum("std,sd->st", Wi, POINTS[zi]) - TARGETS[zi][:, None]) ** 2
            replace += PROBS[j] * prob @ (other - own[:, :, i]) / n
        kept = np.delete(idx, i, axis=1)
        Wl = np.asarray(train(POINTS[kept], TARGETS[kept]))
        loo_test += prob @ (0.5 * np.einsum("j,stj->st", PROBS, (Wl @ POINTS.T - TARGETS) ** 2)) / n
        loo_loss += prob @ (0.5 * (np.einsum("std,sd->st", Wl, POINTS[zi]) - TARGETS[zi][:, None]) ** 2) / n
    size = 3**n * n * 3  # sums over the 3^n datasets, the n samples and the 3 fresh points
    np.testing.assert_allclose(replace, direct, rtol=tolerance(np.float64, size))
    np.testing.assert_allclose(loo_loss, loo_test, rtol=tolerance(np.float64, size))
    assert np.all(direct > 1e-3)  # a real gap, not a trivial identity 0 = 0
    # and the same exact values against the Monte Carlo estimators
    task = finite_task()
    train = gap.gradient_flow(times)
    key = jax.random.PRNGKey(7)
    g = gap.gap_samples(key, task.sample, train, n, N_MC, population_loss=task.population_loss)
    assert_close(g["gap"], g["test"] - g["train"], 2, scale=np.abs(g["test"]).max())  # one subtraction
    estimate = gap.interval(g["gap"])
    assert within(estimate, direct)
    assert not within(estimate, direct + 8 * estimate.half_width)  # the agreement check can fail
    g_fresh = gap.gap_samples(key, task.sample, train, n, N_MC, n_test=50)  # test loss from fresh samples
    assert within(gap.interval(g_fresh["gap"]), direct)
    r = gap.replace_one_samples(jax.random.PRNGKey(8), task.sample, train, n, N_MC)
    assert within(gap.interval(r), direct)
    lo = gap.leave_one_out_samples(jax.random.PRNGKey(9), task.sample, train, n, N_MC, population_loss=task.population_loss)
    assert within(gap.interval(lo["test"]), loo_test)
    assert within(gap.interval(lo["loo"]), loo_test)


def test_interval_matches_normal_formula():
    x = np.array([[1.0, 2.0], [3.0, 5.0], [2.0, 2.0], [6.0, 0.0]])
    est = gap.interval(x)
    np.testing.assert_allclose(est.mean, x.mean(0), rtol=tolerance(np.float64, 4))
    np.testing.assert_allclose(est.half_width, 1.959963984540054 * x.std(0, ddof=1) / 2.0, rtol=tolerance(np.float64, 4))


def test_student_interval_uses_the_t_quantile_and_covers_95_percent():
    x = np.array([[1.0, 2.0], [3.0, 5.0], [2.0, 2.0], [6.0, 0.0]])
    est = gap.interval(x, student=True)  # t_{0.975, 3} = 3.182446305284263 (printed tables)
    # scipy's t quantile is an iterative inversion of the t distribution (≈ 1e-13 relative), not a rounding
    np.testing.assert_allclose(est.half_width, 3.182446305284263 * x.std(0, ddof=1) / 2.0, rtol=1e-12)
    assert abs(gap.interval(np.arange(10.0), student=True).half_width / (np.arange(10.0).std(ddof=1) / np.sqrt(10))
               - 2.262157) < 1e-6  # t_{0.975, 9}, printed tables: 7 digits
    draws = np.random.default_rng(0).normal(size=(4, 20000))  # 20,000 samples of 4 normal draws
    est = gap.interval(draws, student=True)
    normal = gap.interval(draws)
    covered = np.mean(np.abs(est.mean) <= est.half_width)
    assert abs(covered - 0.95) < 0.01  # exact for normal samples; the normal quantile covers far less
    assert np.mean(np.abs(normal.mean) <= normal.half_width) < 0.9


# ------------------------------------------------------------- two-point example


def binomial_sum_gap(n, t, y=(1.0, 1.0)):
    """Exact finite sum over n_1 ~ Binomial(n, 1/2), independent of the closed form."""
    total = 0.0
    for n1 in range(n + 1):
        p = math.comb(n, n1) / 2**n
        for nj, yj in ((n1, y[0]), (n - n1, y[1])):
            decay = 0.0 if (t == math.inf and nj > 0) else (1.0 if nj == 0 else math.exp(-2 * nj * t / n))
            total += p * 0.5 * yj**2 * decay * (0.5 - nj / n)
    return total


@pytest.mark.parametrize("n", [2, 3, 7, 20, 64])
def test_two_point_gap_closed_form_equals_binomial_sum(n):
    ts = [0.0, 0.1, 1.0, 9.0, 100.0, math.inf]
    got = gap.two_point_gap(n, ts, targets=(1.0, -2.0))
    want = [binomial_sum_gap(n, t, (1.0, -2.0)) for t in ts]
    # the binomial sum has n + 1 terms of both signs: bound relative to the sum of their sizes (≤ 0.5 Σ y²)
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(np.float64, n + 1) * 0.5 * 5.0)
    assert got[-1] == pytest.approx(0.25 * 5.0 * 2.0**-n, rel=tolerance(np.float64, n))


def test_two_point_gap_by_enumeration_gf_and_gd():
    n, y = 5, np.array([0.7, -1.3])
    ts, steps, lr = [0.4, 3.0, np.inf], [0, 1, 4, 25], 0.9
    gf, gd = np.zeros(3), np.zeros(4)
    for bits in itertools.product([0, 1], repeat=n):
        X, Y = np.eye(2)[list(bits)], y[list(bits)]
        for W, acc in ((np.asarray(gap.linear_gradient_flow(X, Y, ts)), gf), (None, gd)):
            if W is None:  # gradient descent by an explicit loop
                w, W = np.zeros(2), []
                for k in range(max(steps) + 1):
                    if k in steps:
                        W.append(w.copy())
                    w = w - lr * X.T @ (X @ w - Y) / n
                W = np.array(W)
            test = 0.25 * np.sum((W - y) ** 2, axis=1)
            train = np.mean(0.5 * (W @ X.T - Y) ** 2, axis=1)
            acc += (test - train) / 2**n
    scale = np.sum(y**2)  # the losses' size: the 2^n datasets' terms are at most this
    np.testing.assert_allclose(gap.two_point_gap(n, ts, targets=y), gf, rtol=0, atol=tolerance(np.float64, 2**n * n) * scale)
    np.testing.assert_allclose(gap.two_point_gap(n, steps, targets=y, lr=lr), gd, rtol=0,
                               atol=tolerance(np.float64, 2**n * n * max(steps)) * scale)


def test_two_point_gap_matches_monte_carlo():
    task = gap.two_point_task((1.0, -0.5))
    times = [0.5, 3.0, np.inf]
    g = gap.gap_samples(jax.random.PRNGKey(3), task.sample, gap.gradient_flow(times), 6, N_MC,
                        population_loss=task.population_loss)
    assert within(gap.interval(g["gap"]), gap.two_point_gap(6, times, targets=(1.0, -0.5)))


def test_two_point_gap_vectorized_shapes():
    assert gap.two_point_gap(np.arange(2, 6), [1.0, 2.0]).shape == (4, 2)
    assert gap.two_point_gap(np.arange(2, 6), 1.0).shape == (4,)
    assert np.ndim(gap.two_point_gap(3, 1.0)) == 0


# ------------------------------------------------------------------------- bounds


def test_ntk_norm_bound_invertible_and_singular():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(5, 8)), rng.normal(size=5)
    G = X @ X.T
    assert gap.ntk_norm_bound(G, y) == pytest.approx(np.sqrt(2 * y @ np.linalg.solve(G, y) / 5),
                                                     rel=tolerance(np.float64, 5, cond=cond(G)))
    Xs = np.vstack([X[:3], X[:2]])  # repeated inputs: singular Gram matrix
    ys = np.concatenate([y[:3], y[:2]])
    Gs = Xs @ Xs.T
    assert np.linalg.matrix_rank(Gs) == 3
    want = np.sqrt(2 * ys @ np.linalg.pinv(Gs, rcond=tolerance(np.float64, 5)) @ ys / 5)
    assert gap.ntk_norm_bound(Gs, ys) == pytest.approx(want, rel=tolerance(np.float64, 5, cond=cond(Gs)))


def test_two_point_ntk_bound_by_enumeration():
    y = np.array([1.5, -0.4])
    for n in [2, 3, 6]:
        total = 0.0
        for bits in itertools.product([0, 1], repeat=n):
            X = np.eye(2)[list(bits)]
            total += gap.ntk_norm_bound(X @ X.T, y[list(bits)]) / 2**n
        assert gap.two_point_ntk_bound(n, y) == pytest.approx(total, rel=tolerance(np.float64, 2**n * n))
    b = gap.two_point_ntk_bound(np.arange(2, 65))
    assert np.all(np.diff(b) < 0) and b[-1] * np.sqrt(64) == pytest.approx(2.0, rel=tolerance(np.float64, 64))


def test_stability_bound_formula():
    t = np.array([0.0, 1.0, 3.0])
    V = np.array([4.0, 1.0, 0.25])
    D = (0.5 * (2 + 1) * 1 + 0.5 * (1 + 0.5) * 2) / 4
    assert gap.stability_bound(0.09, V, t, 4, input_bound=2.0) == pytest.approx(0.3 * D + 0.5 * 4 * D**2,
                                                                                rel=tolerance(np.float64, 3))


def test_two_point_stability_bound_against_monte_carlo_and_exact_gap():
    n, y, T = 6, (1.0, -0.5), 4.0
    grid = np.linspace(0.0, T, 41)
    task = gap.two_point_task(y)
    s = gap.gradient_disagreement_samples(jax.random.PRNGKey(5), task.sample, gap.gradient_flow(grid), n, N_MC)
    V, G2 = gap.interval(s["disagreement"]), gap.interval(s["train_grad_sq"])
    q = (1 + np.exp(-2 * grid / n)) / 2
    assert within(V, 0.5 * 1.25 * q**n)
    assert within(G2, 0.5 * 1.25 * np.exp(-2 * grid / n) * q ** (n - 1))
    fine = np.linspace(0.0, T, 20001)
    qf = (1 + np.exp(-2 * fine / n)) / 2
    exact_inputs = gap.stability_bound(0.5 * 1.25 * np.exp(-2 * T / n) * q[-1] ** (n - 1),
                                       0.5 * 1.25 * qf**n, fine, n)
    bound = gap.two_point_stability_bound(n, T, y)
    assert bound == pytest.approx(exact_inputs, rel=1e-7)  # Gauss-Legendre vs trapezoid at h = 2e-4: O(h²) ≈ 1e-8
    mc = gap.stability_bound(G2.mean[-1], V.mean, grid, n)
    assert mc == pytest.approx(bound, rel=0.03)  # MC trajectory statistics, coarse grid
    # the bound is valid: it exceeds the exact gap, at every n and time
    ns = np.arange(2, 40)
    for t in [0.5, 5.0, 60.0]:
        assert np.all(gap.two_point_stability_bound(ns, t, y) >= np.abs(gap.two_point_gap(ns, t, y)))
    assert gap.two_point_stability_bound(n, np.inf) == np.inf


# ------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: gap.linear_gradient_flow(np.ones((3, 2)), np.ones(4), 1.0), "Y"),
        (lambda: gap.linear_gradient_flow(np.ones(3), np.ones(3), 1.0), "X"),
        (lambda: gap.linear_gradient_flow(np.full((3, 2), np.nan), np.ones(3), 1.0), "X"),
        (lambda: gap.linear_gradient_flow(np.ones((3, 2)), np.ones(3), -1.0), "t"),
        (lambda: gap.linear_gradient_flow(np.ones((3, 2)), np.ones(3), np.nan), "t"),
        (lambda: gap.linear_gradient_flow(np.ones((3, 2)), np.ones(3), 1.0, w0=np.ones(3)), "w0"),
        (lambda: gap.linear_gradient_descent(np.ones((3, 2)), np.ones(3), 1.5, 0.1), "steps"),
        (lambda: gap.linear_gradient_descent(np.ones((3, 2)), np.ones(3), 2, -0.1), "lr"),
        (lambda: gap.gradient_flow([1.0, -2.0]), "t"),
        (lambda: gap.two_point_gap(1, 1.0), "n"),
        (lambda: gap.two_point_gap(np.array([1, 4]), 1.0), "n"),
        (lambda: gap.two_point_gap(4, -1.0), "t"),
        (lambda: gap.two_point_gap(4, 1.0, targets=(1.0, np.nan)), "targets"),
        (lambda: gap.two_point_gap(4, 1.0, targets=(1.0, 2.0, 3.0)), "targets"),
        (lambda: gap.two_point_ntk_bound(1), "n"),
        (lambda: gap.two_point_stability_bound(4, -3.0), "t"),
        (lambda: gap.ntk_norm_bound(np.ones((3, 2)), np.ones(3)), "theta"),
        (lambda: gap.ntk_norm_bound(np.eye(3), np.ones(2)), "y"),
        (lambda: gap.ntk_norm_bound(np.eye(1), np.ones(1)), "theta"),
        (lambda: gap.stability_bound(1.0, [1.0, 1.0], [0.0, 1.0, 2.0], 4), "disagreement"),
        (lambda: gap.stability_bound(1.0, [1.0, 1.0], [1.0, 2.0], 4), "t"),
        (lambda: gap.stability_bound(-1.0, [1.0, 1.0], [0.0, 1.0], 4), "train_grad_sq"),
        (lambda: gap.stability_bound(1.0, [1.0, 1.0], [0.0, 1.0], 1), "n"),
        (lambda: gap.interval(np.ones((1, 3))), "samples"),
        (lambda: gap.gaussian_task(np.ones(2), -1.0), "noise"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_monte_carlo_bad_inputs():
    task = gap.two_point_task()
    train = gap.gradient_flow([1.0])
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="n must be at least 2"):
        gap.gap_samples(key, task.sample, train, 1, 10)
    with pytest.raises(ValueError, match="num_datasets"):
        gap.replace_one_samples(key, task.sample, train, 4, 1)
    with pytest.raises(ValueError, match="sample"):
        gap.leave_one_out_samples(key, lambda k, n: (jnp.ones((n + 1, 2)), jnp.ones(n + 1)), train, 4, 10)
    with pytest.raises(TypeError, match="train"):
        gap.gradient_disagreement_samples(key, task.sample, None, 4, 10)


# ---------------------------------------------------------------- exercise checks


def test_exercise_check_accepts_correct_and_rejects_wrong(capsys):
    def right(n, steps, lr):
        return float(gap.two_point_gap(n, steps, lr=lr))

    def gradient_flow_instead(n, steps, lr):
        return float(gap.two_point_gap(n, steps * lr))

    assert ch01.check_two_point_gd_gap(right)
    assert "✅" in capsys.readouterr().out
    assert not ch01.check_two_point_gd_gap(gradient_flow_instead)
    assert "❌" in capsys.readouterr().out
    assert not ch01.check_two_point_gd_gap(None)
    assert "Not answered" in capsys.readouterr().out

    def skeleton(n, steps, lr):
        ...  # your code here

    assert not ch01.check_two_point_gd_gap(skeleton)
    assert "Not answered" in capsys.readouterr().out
    assert not ch01.check_two_point_gd_gap(lambda n, steps, lr: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out
