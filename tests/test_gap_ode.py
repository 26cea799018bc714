"""Tests for gramlib.gap_ode: factors vs brute-force GD, the discrete identity, discretization order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib import gap, gap_ode
from gramlib.views.exercises import ch03
from tests.tolerance import assert_close, tolerance

D = 3


def linear_apply(params, x):
    return x @ params["w"]


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, D))
    y = x @ np.array([1.0, -0.5, 0.3]) + 0.5 * rng.normal(size=40)
    return x, y


def brute_force_pair(x_pool, y_pool, train, i, new, lr, steps):
    """Numpy GD of both twins of one pair; the two replace-one samples, averaged, per step."""
    x, y = x_pool[train], y_pool[train]
    n = len(y)
    xt, yt = x.copy(), y.copy()
    xt[i], yt[i] = x_pool[new], y_pool[new]
    zi, zn = (x[i], y[i]), (x_pool[new], y_pool[new])

    def g(v, z):
        return z[0] * (z[0] @ v - z[1])

    def loss(v, z):
        return 0.5 * (z[0] @ v - z[1]) ** 2

    w, u = np.zeros(D), np.zeros(D)
    out, remainder = [], []
    for _ in range(steps + 1):
        gs_w = x.T @ (x @ w - y) / n
        gt_u = xt.T @ (xt @ u - yt) / n
        gs_u = x.T @ (x @ u - y) / n
        gt_w = xt.T @ (xt @ w - yt) / n
        fwd = [loss(u, zi) - loss(w, zi), g(u, zi) @ gs_u - g(w, zi) @ gs_w,
               (g(u, zi) @ g(u, zi) - g(u, zi) @ g(u, zn)) / n]
        bwd = [loss(w, zn) - loss(u, zn), g(w, zn) @ gt_w - g(u, zn) @ gt_u,
               (g(w, zn) @ g(w, zn) - g(w, zn) @ g(w, zi)) / n]
        out.append(0.5 * (np.array(fwd) + np.array(bwd)))
        # exact second-order Taylor remainder of the quadratic loss (both samples)
        remainder.append(0.25 * lr**2 * ((zi[0] @ gt_u) ** 2 - (zi[0] @ gs_w) ** 2
                                         + (zn[0] @ gs_w) ** 2 - (zn[0] @ gt_u) ** 2))
        w, u = w - lr * gs_w, u - lr * gt_u
    return np.array(out).T, np.array(remainder)


@pytest.fixture(scope="module")
def run(pool):
    x, y = pool
    pairs = gap_ode.sample_replace_one(jax.random.PRNGKey(0), len(y), 6, 4, cov_size=10)
    f = gap_ode.replace_one_factors(linear_apply, {"w": jnp.zeros(D)}, x, y, pairs,
                                    lr=0.2, steps=12, record_every=4)
    return pairs, f


def test_training_the_pairs_in_chunks_joins_to_one_call_on_all_of_them(pool, run):
    from gramlib.runs import train
    x, y = pool
    pairs, whole = run
    for chunk in (2, 3):  # two equal chunks, and a short last one
        parts = train.train_replace_one_pairs(linear_apply, {"w": jnp.zeros(D)}, x, y, pairs, lr=0.2, steps=12,
                                              record_every=4, chunk=chunk, progress=False)
        for name in ("gap", "contraction", "perturbation", "train_loss", "population_loss", "trace_cov",
                     "self_term"):
            assert_close(getattr(parts, name), getattr(whole, name), size=12 * D)  # the same vmap, other batch
        assert parts.lr == whole.lr and parts.n == whole.n
        np.testing.assert_array_equal(parts.record_steps, whole.record_steps)
    with pytest.raises(ValueError, match="part 1"):
        gap_ode.join_factors([whole, whole._replace(lr=0.1)])
    with pytest.raises(TypeError, match="GapFactors"):
        gap_ode.join_factors([])
    with pytest.raises(TypeError, match="ReplaceOnePairs"):
        train.train_replace_one_pairs(linear_apply, {"w": jnp.zeros(D)}, x, y, tuple(pairs), lr=0.2, steps=12,
                                      record_every=4)


def test_factors_match_brute_force_and_discrete_identity_is_exact(pool, run):
    x, y = pool
    pairs, f = run
    assert f.gap.shape == (4, 13) and f.train_loss.shape == (4, 3)
    for m in range(4):
        ref, rem = brute_force_pair(x, y, pairs.train[m], pairs.i[m], pairs.new[m], 0.2, 12)
        size = 12 * 6 * D  # 12 steps over 6 samples and D weights
        assert_close(f.gap[m], ref[0], size)
        assert_close(f.contraction[m], ref[1], size)
        assert_close(f.perturbation[m], ref[2], size)
        # D_{k+1} − D_k = η(−ΔF_k + ε_k) + R_k with R_k the exact Taylor remainder (differences of the gap's size)
        increments = np.diff(f.gap[m]) - 0.2 * (f.perturbation[m] - f.contraction[m])[:-1]
        assert_close(increments, rem[:-1], size, scale=np.abs(ref).max())
    # the twins start together: no gap, and no contraction up to the rounding of its gradient products
    np.testing.assert_array_equal(f.gap[:, 0], 0.0)
    assert_close(f.contraction[:, 0], 0.0, 6 * D, scale=np.abs(f.contraction).max())


def test_contraction_self_term_against_a_direct_split(pool, run):
    """F_i(u) − F_i(w) = (1/n)[‖∇ℓ(u;z_i)‖² − ‖∇ℓ(w;z_i)‖²] + shared-data part, each by NumPy GD."""
    x, y = pool
    pairs, f = run
    got = f.self_term
    assert got.shape == f.contraction.shape
    for m in range(4):
        xs, ys = x[pairs.train[m]], y[pairs.train[m]]
        i, n = pairs.i[m], 6
        xt, yt = xs.copy(), ys.copy()
        xt[i], yt[i] = x[pairs.new[m]], y[pairs.new[m]]
        zi, zn = (xs[i], ys[i]), (x[pairs.new[m]], y[pairs.new[m]])
        rest = np.arange(n) != i  # the n − 1 samples both twins train on

        def g(v, z):
            return z[0] * (z[0] @ v - z[1])

        def shared(v, z, xx, yy, keep):  # ∇ℓ(v; z)·(1/n) Σ_{j≠i} ∇ℓ(v; z_j)
            return g(v, z) @ (xx[keep].T @ (xx[keep] @ v - yy[keep])) / n

        w, u = np.zeros(D), np.zeros(D)
        self_want, shared_want = [], []
        for _ in range(13):
            self_want.append(0.5 * (g(u, zi) @ g(u, zi) - g(w, zi) @ g(w, zi)
                                    + g(w, zn) @ g(w, zn) - g(u, zn) @ g(u, zn)) / n)
            shared_want.append(0.5 * (shared(u, zi, xs, ys, rest) - shared(w, zi, xs, ys, rest)
                                      + shared(w, zn, xt, yt, rest) - shared(u, zn, xt, yt, rest)))
            w, u = w - 0.2 * xs.T @ (xs @ w - ys) / n, u - 0.2 * xt.T @ (xt @ u - yt) / n
        size = 12 * n * D  # 12 steps over n samples and D weights
        scale = np.abs(f.contraction[m]).max()
        assert_close(got[m], self_want, size, scale=scale)
        assert_close(f.contraction[m] - got[m], shared_want, size, scale=scale)  # the two parts add up
    with pytest.raises(ValueError, match="pairs.i"):
        gap_ode.replace_one_factors(linear_apply, {"w": jnp.zeros(D)}, x, y, pairs._replace(i=pairs.i + 6),
                                    lr=0.2, steps=2, record_every=1)


def test_records_match_direct_computation(pool, run):
    x, y = pool
    pairs, f = run
    xs, ys = x[pairs.train[0]], y[pairs.train[0]]
    xt, yt = xs.copy(), ys.copy()
    xt[pairs.i[0]], yt[pairs.i[0]] = x[pairs.new[0]], y[pairs.new[0]]
    w, u = np.zeros(D), np.zeros(D)
    for _ in range(8):
        w, u = w - 0.2 * xs.T @ (xs @ w - ys) / 6, u - 0.2 * xt.T @ (xt @ u - yt) / 6
    cx, cy = x[pairs.cov[0]], y[pairs.cov[0]]

    def trace_cov(v):
        grads = cx * (cx @ v - cy)[:, None]
        return np.trace(np.cov(grads.T)) / 6  # np.cov: unbiased, divides by m - 1

    rule = tolerance(np.float64, 8 * len(y) * D)  # 8 steps; losses over up to the pool's samples, D weights
    np.testing.assert_allclose(
        f.train_loss[0, 1], 0.25 * (np.mean((xs @ w - ys) ** 2) + np.mean((xt @ u - yt) ** 2)), rtol=rule)
    np.testing.assert_allclose(
        f.population_loss[0, 1], 0.25 * (np.mean((x @ w - y) ** 2) + np.mean((x @ u - y) ** 2)), rtol=rule)
    np.testing.assert_allclose(f.trace_cov[0, 1], 0.5 * (trace_cov(w) + trace_cov(u)), rtol=rule)
    np.testing.assert_allclose(
        gap_ode.trace_gradient_covariance(linear_apply, {"w": jnp.asarray(w)}, cx, cy, 6), trace_cov(w), rtol=rule)


def test_integrated_ode_error_is_time_discretization_and_shrinks_with_step(pool):
    """At fixed T, |ODE − replace-one gap| is first order in η: halving η halves it."""
    x, y = pool
    pairs = gap_ode.sample_replace_one(jax.random.PRNGKey(2), len(y), 8, 16, cov_size=4)
    errors = []
    for lr in (0.04, 0.02, 0.01):
        steps = int(round(1.0 / lr))
        f = gap_ode.replace_one_factors(linear_apply, {"w": jnp.zeros(D)}, x, y, pairs,
                                        lr=lr, steps=steps, record_every=steps)
        c = gap_ode.gap_curves(f)
        errors.append([abs(c.ode_numerator[-1] - c.replace_one[-1]), abs(c.ode[-1] - c.replace_one[-1])])
        assert abs(c.replace_one[-1]) > 10 * errors[-1][0]
    errors = np.array(errors)
    ratios = errors[:-1] / errors[1:]
    assert np.all((ratios > 1.7) & (ratios < 2.3)), ratios


def test_integrate_gap_ode_against_closed_forms():
    rng = np.random.default_rng(3)
    c, e, dt = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30), 0.05
    got = gap_ode.integrate_gap_ode(c, e, dt)
    want = [sum(dt * e[k] * np.prod(1 - dt * c[k + 1:K]) for k in range(K)) for K in range(30)]
    assert_close(got, want, 30 * 30)  # up to 30 terms of products of up to 30 factors
    # constant factors: Euler → ε/c (1 − e^{−cT}) as dt → 0, with first-order error
    errs = []
    for dt in (0.1, 0.05, 0.025):
        k = int(round(4 / dt))
        sol = gap_ode.integrate_gap_ode(np.full(k + 1, 0.7), np.full(k + 1, 0.3), dt)
        errs.append(abs(sol[-1] - 0.3 / 0.7 * (1 - np.exp(-0.7 * 4))))
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2
    assert_close(gap_ode.integrate_gap_ode(np.zeros(5), np.ones(5), 0.5), [0, 0.5, 1, 1.5, 2], 5)


def test_gap_curves_consistency(run):
    _, f = run
    c = gap_ode.gap_curves(f)
    m = f.gap.shape[0]  # pairs
    assert_close(c.measured, (f.population_loss - f.train_loss).mean(0), 2 * m, scale=np.abs(f.population_loss).max())
    assert c.contraction_free[3] == pytest.approx(0.2 * f.perturbation[:, :3].sum(1).mean(), rel=tolerance(np.float64, 3 * m))
    assert c.cbar[0] == 0.0
    assert_close(c.t_record, [0.8, 1.6, 2.4], 1)
    # the bands are gramlib.gap.interval's: 1.96 σ/√M over the M pairs
    mean, hw = gap.interval(f.gap)
    np.testing.assert_array_equal(c.replace_one, mean)
    np.testing.assert_array_equal(c.replace_one_hw, hw)
    np.testing.assert_allclose(hw, 1.959963984540054 * f.gap.std(0, ddof=1) / 2, rtol=tolerance(np.float64, f.gap.shape[0]))


def test_bad_inputs_raise(pool, run):
    x, y = pool
    _, f = run
    pairs = gap_ode.sample_replace_one(jax.random.PRNGKey(0), len(y), 4, 2, cov_size=3)
    p0 = {"w": jnp.zeros(D)}
    with pytest.raises(ValueError, match="multiple"):
        gap_ode.replace_one_factors(linear_apply, p0, x, y, pairs, lr=0.1, steps=5, record_every=2)
    with pytest.raises(TypeError, match="ReplaceOnePairs"):
        gap_ode.replace_one_factors(linear_apply, p0, x, y, tuple(pairs), lr=0.1, steps=4, record_every=2)
    bad = x.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="x_pool contains"):
        gap_ode.replace_one_factors(linear_apply, p0, bad, y, pairs, lr=0.1, steps=4, record_every=2)
    with pytest.raises(ValueError, match="index the pool"):
        gap_ode.replace_one_factors(linear_apply, p0, x[:3], y[:3], pairs._replace(train=pairs.train + 100),
                                    lr=0.1, steps=4, record_every=2)
    with pytest.raises(ValueError, match="lr"):
        gap_ode.replace_one_factors(linear_apply, p0, x, y, pairs, lr=0.0, steps=4, record_every=2)
    with pytest.raises(ValueError, match="epsbar"):
        gap_ode.integrate_gap_ode(np.ones(4), np.ones(3), 0.1)
    with pytest.raises(ValueError, match="dt"):
        gap_ode.integrate_gap_ode(np.ones(4), np.ones(4), -0.1)
    with pytest.raises(ValueError, match="cbar must be finite"):
        gap_ode.integrate_gap_ode(np.array([1.0, np.nan]), np.ones(2), 0.1)
    with pytest.raises(ValueError, match="at least 2"):
        gap_ode.gap_curves(f._replace(**{k: getattr(f, k)[:1] for k in ("gap", "contraction", "perturbation",
                                                                          "train_loss", "population_loss",
                                                                          "trace_cov")}))
    with pytest.raises(ValueError, match="n must"):
        gap_ode.sample_replace_one(jax.random.PRNGKey(0), 10, 1, 3)


def test_exercise_check_integrator(capsys):
    def right(cbar, epsbar, dt):
        return gap_ode.integrate_gap_ode(cbar, epsbar, dt)

    def wrong(cbar, epsbar, dt):  # forgets the contraction
        return gap_ode.integrate_gap_ode(0 * cbar, epsbar, dt)

    assert ch03.check_gap_integrator(right)
    assert not ch03.check_gap_integrator(wrong)
    assert not ch03.check_gap_integrator(None)
    out = capsys.readouterr().out
    assert "✅" in out and "❌" in out and "Not answered" in out


def test_cbar_band_matches_bootstrap():
    """The delta-method band of c̄ = mean(ΔF)/mean(D) agrees with a bootstrap over pairs."""
    rng = np.random.default_rng(5)
    m, k = 2000, 3
    gaps = np.concatenate([np.zeros((m, 1)), rng.normal(1.0, 0.5, (m, k))], 1)
    contraction = np.concatenate([np.zeros((m, 1)), 0.3 * gaps[:, 1:] + rng.normal(0, 0.2, (m, k))], 1)
    f = gap_ode.GapFactors(lr=0.1, n=10, gap=gaps, contraction=contraction, perturbation=np.ones((m, k + 1)),
                           record_steps=np.array([1, 2]), train_loss=np.ones((m, 2)),
                           population_loss=np.ones((m, 2)), trace_cov=np.ones((m, 2)),
                           self_term=np.zeros((m, k + 1)))
    c = gap_ode.gap_curves(f)
    boot = []
    for _ in range(400):
        idx = rng.integers(0, m, m)
        boot.append(contraction[idx, 1:].mean(0) / gaps[idx, 1:].mean(0))
    np.testing.assert_allclose(c.cbar_hw[1:], gap.Z95 * np.std(boot, axis=0), rtol=0.2)  # a 400-draw bootstrap: ±7% (2σ)
    assert c.cbar_hw[0] == np.inf and c.cbar[0] == 0.0
