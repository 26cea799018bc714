"""The experiments of Chapters 4 and 5 (``gramlib.ch4``, ``gramlib.ch5``) against independent computations.

Ground truths: explicit Jacobians (``jax.jacrev``) and literal gradient-descent loops in
weight space, matrix exponentials (``scipy.linalg.expm``) of the linear systems that the
chapters' equations define, and per-dataset brute force for the Monte Carlo over subsets.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm

from gramlib import ch4, ch5, effective_gram, models
from tests.tolerance import assert_close, cond, talbot_gain, tolerance


def gram(seed, n, p=None, *, rank=None):
    """A random Gram matrix ``J Jᵀ / p`` ``(n, n)`` and a random ``r0``."""
    rng = np.random.default_rng(seed)
    p = p or 3 * n
    jac = np.tanh(rng.standard_normal((n, rank or p)))
    return jac @ jac.T / p, rng.standard_normal(n)


def tiny_data(seed=0, n=5, d=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), np.sign(rng.standard_normal(n))


def jacobian(apply, params, x):
    """``J`` ``(n, p)`` of a scalar-output model, from ``jax.jacrev``."""
    jac = jax.jacrev(apply)(params, jnp.asarray(x))
    return np.concatenate([np.asarray(leaf).reshape(len(x), -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)


def flat(params):
    return np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree_util.tree_leaves(params)])


def unflat(vector, like):
    leaves, tree = jax.tree_util.tree_flatten(like)
    sizes = np.cumsum([0] + [leaf.size for leaf in leaves])
    return jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(vector[a:b].reshape(leaf.shape)) for a, b, leaf in zip(sizes[:-1], sizes[1:], leaves)])


def elementary(theta, r0, t, weights=None):
    """``ρ_i = e_iᵀ exp(−Θ diag(w^{(i)}) t / n) r0`` with ``w^{(i)}`` the weights without sample ``i``."""
    n = len(r0)
    w = np.ones(n) if weights is None else weights
    return np.array([(expm(-theta * np.where(np.arange(n) == i, 0.0, w)[None, :] * t / n) @ r0)[i]
                     for i in range(n)])


# --------------------------------------------------------------------------------------
# Chapter 4
# --------------------------------------------------------------------------------------


def test_spectrum_summary_against_known_eigenvalues():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    theta = q @ np.diag([1.0, 10.0, 100.0]) @ q.T
    params = [{"w": jnp.zeros((2, 3)), "b": jnp.zeros(4)}]
    row = ch4.spectrum_summary(theta, params)
    expected = dict(p=10, trace=111 / 3, top=100 / 3, bottom=1 / 3, fast=3 / 100, slow=3.0, decades=2.0)
    assert set(row) == set(expected)
    for key, value in expected.items():  # a 3×3 eigendecomposition of a matrix with cond 100
        assert row[key] == pytest.approx(value, rel=tolerance(np.float64, 3, cond=100.0)), key
    assert "p" not in ch4.spectrum_summary(theta)
    two = ch4.spectrum_summary(np.kron(theta, np.eye(2)), outputs=2)
    rule = tolerance(np.float64, 6, cond=100.0)
    assert two["top"] == pytest.approx(100 / 3, rel=rule) and two["slow"] == pytest.approx(3.0, rel=rule)


def test_spectrum_summary_bad_input():
    with pytest.raises(ValueError, match="positive definite"):
        ch4.spectrum_summary(np.diag([1.0, 0.0]))
    with pytest.raises(ValueError, match="square"):
        ch4.spectrum_summary(np.ones((2, 3)))
    with pytest.raises(ValueError, match="outputs"):
        ch4.spectrum_summary(np.eye(3), outputs=2)
    with pytest.raises(TypeError, match="params"):
        ch4.spectrum_summary(np.eye(2), params="weights")


def direct_linearization(net, params, x, y, lr, steps):
    """Gradient descent by ``jax.grad`` in a Python loop, NTKs from explicit Jacobians."""
    n = len(y)
    grad = jax.jit(jax.grad(lambda p: 0.5 * jnp.sum((net.apply(p, x) - y) ** 2) / n))
    p, real = params, [np.asarray(net.apply(params, x)) - y]
    for _ in range(steps):
        p = jax.tree_util.tree_map(lambda w, g: w - lr * g, p, grad(p))
        real.append(np.asarray(net.apply(p, x)) - y)
    theta0 = jacobian(net.apply, params, x) @ jacobian(net.apply, params, x).T
    theta_end = jacobian(net.apply, p, x) @ jacobian(net.apply, p, x).T
    step = np.eye(n) - lr / n * theta0
    lin = [real[0]]
    for _ in range(steps):
        lin.append(step @ lin[-1])
    real, lin = np.array(real), np.array(lin)
    error = np.max(np.linalg.norm(real - lin, axis=1)) / np.linalg.norm(real[0])
    return real, lin, error, np.linalg.norm(theta_end - theta0) / np.linalg.norm(theta0)


def test_linearization_run_against_a_direct_computation():
    x, y = tiny_data()
    net = models.mlp(3, width=8, depth=2, dtype=jnp.float64)
    params = net.init(jax.random.PRNGKey(0))
    run = ch4.linearization_run(net, params, x, y, lr=0.5, steps=6)
    real, lin, error, moved = direct_linearization(net, params, jnp.asarray(x), jnp.asarray(y), 0.5, 6)
    size = 6 * len(y) * flat(params).size  # 6 steps over the samples and the parameters
    assert_close(run.real, real, size)
    assert_close(run.lin, lin, size)
    # ratios of norms of differences: rounding relative to the norms the differences are taken of
    assert run.error == pytest.approx(error, abs=tolerance(np.float64, size) * np.abs(real).max() / np.abs(real[0]).max())
    assert run.moved == pytest.approx(moved, abs=tolerance(np.float64, size) * 2) and run.error > 0 and run.moved > 0


def test_width_sweep_is_one_linearization_run_per_width():
    x, y = tiny_data(1)
    key = jax.random.PRNGKey(3)
    runs = ch4.width_sweep(x, y, (16, 4), lr=0.5, steps=3, key=key, progress=False)
    assert list(runs) == [16, 4]
    net = models.mlp(3, width=16, depth=2, dtype=jnp.float64)
    real, lin, error, moved = direct_linearization(net, net.init(key), jnp.asarray(x), jnp.asarray(y), 0.5, 3)
    size = 3 * len(y) * flat(net.init(key)).size  # 3 steps over the samples and the parameters
    assert_close(runs[16].real, real, size)
    assert_close(runs[16].lin, lin, size)
    assert runs[16].error == pytest.approx(error, abs=tolerance(np.float64, size) * np.abs(real).max() / np.abs(real[0]).max())
    assert runs[16].moved == pytest.approx(moved, abs=tolerance(np.float64, size) * 2)
    assert_close(runs[4].lin[0], runs[4].real[0], flat(net.init(key)).size)  # the same initial residual, computed twice
    assert runs[4].moved > runs[16].moved > 0  # the narrower network's kernel moves more
    assert list(ch4.width_sweep(x, y, [4], lr=0.5, steps=1, key=jax.random.key(0), progress=False)) == [4]


def test_width_sweep_bad_input():
    x, y = tiny_data()
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="widths"):
        ch4.width_sweep(x, y, [], lr=0.5, steps=2, key=key)
    with pytest.raises(ValueError, match="width"):
        ch4.width_sweep(x, y, [0, 4], lr=0.5, steps=2, key=key)
    with pytest.raises(ValueError, match="one row per input"):
        ch4.width_sweep(x, y[:3], [4], lr=0.5, steps=2, key=key)
    with pytest.raises(TypeError, match="key"):
        ch4.width_sweep(x, y, [4], lr=0.5, steps=2, key=0)
    with pytest.raises(ValueError, match="steps"):
        ch4.width_sweep(x, y, [4], lr=0.5, steps=0, key=key)
    with pytest.raises(ValueError, match="lr"):
        ch4.width_sweep(x, y, [4], lr=-1.0, steps=2, key=key)
    with pytest.raises(TypeError, match="model"):
        ch4.linearization_run(lambda p, x: x, [jnp.zeros(2)], x, y, lr=0.5, steps=2)


def test_first_order_gap_against_the_integrated_equation():
    theta, r0 = gram(0, 4)
    n = len(r0)
    # state (r, vec E), E row-major: ṙ = −Θr/n, Ė = −Θ(E − Diag r)/n (ch04-first-order, all twins)
    select = np.zeros((n * n, n))
    select[np.arange(n) * (n + 1), np.arange(n)] = 1.0
    big = np.zeros((n + n * n, n + n * n))
    big[:n, :n] = -theta / n
    big[n:, n:] = -np.kron(theta, np.eye(n)) / n
    big[n:, :n] = np.kron(theta, np.eye(n)) @ select / n
    times = np.array([0.0, 0.5, 3.0, 20.0])
    expected = []
    for t in times:
        state = expm(big * t) @ np.concatenate([r0, np.zeros(n * n)])
        r, e = state[:n], state[n:].reshape(n, n)
        expected.append((np.sum((r + np.diag(e)) ** 2) - np.sum(r**2)) / (2 * n))
    # the first-order gap at t > 0 by Talbot inversion: its own error (≈ 1e-10 of the losses' scale)
    np.testing.assert_allclose(ch4.first_order_gap(theta, r0, times), expected, atol=1e-10)
    assert float(ch4.first_order_gap(theta, r0, 3.0)) == pytest.approx(expected[2], abs=1e-10)
    with pytest.raises(ValueError, match="r0"):
        ch4.first_order_gap(theta, r0[:3], times)


def test_held_out_gap_against_the_integrated_flow():
    rng = np.random.default_rng(1)
    jac, jac_test = np.tanh(rng.standard_normal((4, 9))), np.tanh(rng.standard_normal((6, 9)))
    theta, cross = jac @ jac.T, jac_test @ jac.T
    r0, r0_test = rng.standard_normal(4), rng.standard_normal(6)
    # ṙ = −Θr/n, ṙ* = −Θ(X*, X) r/n
    big = np.zeros((10, 10))
    big[:4, :4], big[4:, :4] = -theta / 4, -cross / 4
    times = np.array([0.0, 1.0, 10.0])
    expected = []
    for t in times:
        state = expm(big * t) @ np.concatenate([r0, r0_test])
        expected.append(0.5 * np.mean(state[4:] ** 2) - 0.5 * np.mean(state[:4] ** 2))
    # expm of ‖big t‖ (its condition) against the eigendecomposition; a difference of losses of size max r²
    bound = tolerance(np.float64, 10, cond=max(1.0, np.linalg.norm(big, 2) * times.max())) * np.abs(np.r_[r0, r0_test]).max() ** 2
    np.testing.assert_allclose(ch4.held_out_gap(theta, cross, r0, r0_test, times), expected, rtol=0, atol=bound)
    with pytest.raises(ValueError, match="theta_test"):
        ch4.held_out_gap(theta, cross[:, :3], r0, r0_test, times)


# --------------------------------------------------------------------------------------
# Chapter 5
# --------------------------------------------------------------------------------------


def test_linearized_model_is_the_first_order_taylor_expansion():
    x, _ = tiny_data()
    net = models.mlp(3, width=6, depth=2, dtype=jnp.float64)
    p0 = net.init(jax.random.PRNGKey(0))
    lin = ch5.linearized_model(net.apply, p0)
    delta = np.random.default_rng(2).standard_normal(flat(p0).size)
    moved = unflat(flat(p0) + delta, p0)
    size = flat(p0).size  # an output sums over the parameters
    assert_close(lin(p0, x), net.apply(p0, x), size)
    expected = np.asarray(net.apply(p0, x)) + jacobian(net.apply, p0, x) @ delta
    assert_close(lin(moved, x), expected, size)
    # the network itself is not affine: far beyond rounding
    assert np.abs(net.apply(moved, x) - expected).max() > 1e6 * tolerance(np.float64, size) * np.abs(expected).max()
    with pytest.raises(TypeError, match="apply"):
        ch5.linearized_model("f", p0)
    with pytest.raises(TypeError, match="params0"):
        ch5.linearized_model(net.apply, None)


def test_retraining_check_against_weight_space_descent():
    x, y = tiny_data(3, n=5)
    net = models.mlp(3, width=8, depth=2, dtype=jnp.float64)
    p0 = net.init(jax.random.PRNGKey(1))
    lr, steps = 0.7, (3, 10)
    check = ch5.retraining_check(net.apply, p0, x, y, steps, lr=lr, progress=False)
    jac, f0 = jacobian(net.apply, p0, x), np.asarray(net.apply(p0, x))
    theta, r0, n = jac @ jac.T, f0 - y, len(y)
    for k in steps:
        rho = []
        for i in range(n):  # twin i: literal descent on the linearized model without sample i
            keep, w = np.arange(n) != i, np.zeros(jac.shape[1])
            for _ in range(k):
                w = w - lr / n * jac[keep].T @ (f0 + jac @ w - y)[keep]
            rho.append((f0 + jac @ w - y)[i])
        size = k * n * jac.shape[1]  # k steps over the samples and the parameters
        assert_close(check.brute[k], rho, size)
        assert_close(check.formula[k], rho, size, cond=cond(theta))
        # gradient flow by the Talbot inversion against expm: the inversion's own error (≈ 1e-10 relative)
        np.testing.assert_allclose(check.flow[k], elementary(theta, r0, k * lr), atol=1e-9)
    with pytest.raises(TypeError, match="steps"):
        ch5.retraining_check(net.apply, p0, x, y, 3, lr=lr)
    with pytest.raises(ValueError, match="steps"):
        ch5.retraining_check(net.apply, p0, x, y, [0], lr=lr)
    with pytest.raises(ValueError, match="one entry per input"):
        ch5.retraining_check(net.apply, p0, x, y[:4], [1], lr=lr)


def test_elementary_loo_residuals():
    theta, r0 = gram(4, 6)
    expm_cond = max(1.0, np.linalg.norm(theta, 2) * 2.5 / 6)  # expm of ‖Θ t/n‖, two implementations
    assert_close(ch5.elementary_loo_residuals(theta, r0, 2.5), elementary(theta, r0, 2.5), 6, cond=expm_cond)
    np.testing.assert_allclose(ch5.elementary_loo_residuals(theta, r0, 2.5),
                               effective_gram.loo_residuals(theta, r0, 2.5), atol=1e-9)  # Talbot's own error
    assert_close(ch5.elementary_loo_residuals(theta, r0, 0.0), r0, 6)
    with pytest.raises(ValueError, match="finite"):
        ch5.elementary_loo_residuals(theta, r0, np.inf)
    with pytest.raises(ValueError, match="t"):
        ch5.elementary_loo_residuals(theta, r0, -1.0)
    with pytest.raises(ValueError, match="r0"):
        ch5.elementary_loo_residuals(theta, r0[:5], 1.0)
    with pytest.raises(ValueError, match="symmetric"):
        ch5.elementary_loo_residuals(theta + np.triu(np.ones((6, 6)), 1), r0, 1.0)


def test_monte_carlo_loo_against_brute_force_per_dataset():
    theta_pool, r0_pool = gram(5, 6, rank=4)  # a singular pool kernel, and duplicates in small draws
    m, times = 4, np.array([0.5, 4.0])
    mc = ch5.monte_carlo_loo(theta_pool, r0_pool, m, times, datasets=8, seed=0, progress=False)
    assert mc.indices.shape == (8, m) and mc.predicted.shape == mc.measured.shape == (8, 2)
    assert mc.indices.min() >= 0 and mc.indices.max() < 6
    assert mc.duplicates == sum(len(set(row)) < m for row in mc.indices) > 0
    for idx, predicted, measured, train, test in zip(mc.indices, mc.predicted, mc.measured, mc.train, mc.test):
        counts = np.bincount(idx[:-1], minlength=6).astype(float)  # the first m − 1 samples, as a multiset
        all_counts = np.bincount(idx, minlength=6).astype(float)  # all m samples
        for j, t in enumerate(times):
            rho = elementary(theta_pool[np.ix_(idx, idx)], r0_pool[idx], t)
            assert predicted[j] == pytest.approx(0.5 * np.mean(rho**2), abs=1e-9)  # Talbot's own error
            r_pool = expm(-theta_pool * counts[None, :] * t / m) @ r0_pool  # weight 1/m per sample
            assert measured[j] == pytest.approx(0.5 * np.mean(r_pool**2), abs=1e-10)  # Talbot's own error
            r_all = expm(-theta_pool * all_counts[None, :] * t / m) @ r0_pool  # trained on all m samples
            # expm against the eigendecomposition: the rule with 6 terms per entry, conditioned by ‖Θ t/m‖
            bound = tolerance(np.float64, 6, cond=max(1.0, np.abs(theta_pool).max() * t)) * np.abs(r0_pool).max() ** 2
            assert test[j] == pytest.approx(0.5 * np.mean(r_all**2), abs=bound)
            assert train[j] == pytest.approx(0.5 * np.mean(r_all[idx] ** 2), abs=bound)  # its training loss
    # the three per-dataset terms of ch05-learning-curve add up to the LOO prediction minus the training loss
    assert_close(mc.gap + mc.learning_curve, mc.loo_gap + mc.measured - mc.predicted, 4)
    again = ch5.monte_carlo_loo(theta_pool, r0_pool, m, times, datasets=8, seed=0, progress=False)
    np.testing.assert_array_equal(again.indices, mc.indices)
    np.testing.assert_array_equal(again.predicted, mc.predicted)
    with_inf = ch5.monte_carlo_loo(theta_pool, r0_pool, m, [1.0, np.inf], datasets=2, seed=1, progress=False)
    assert all(np.all(np.isfinite(v)) for v in (with_inf.predicted, with_inf.measured, with_inf.train, with_inf.test))


def test_monte_carlo_loo_bad_input():
    theta_pool, r0_pool = gram(5, 6)
    with pytest.raises(ValueError, match="m"):
        ch5.monte_carlo_loo(theta_pool, r0_pool, 2, [1.0], datasets=2, seed=0)
    with pytest.raises(ValueError, match="1-D"):
        ch5.monte_carlo_loo(theta_pool, r0_pool, 4, 1.0, datasets=2, seed=0)
    with pytest.raises(ValueError, match="seed"):
        ch5.monte_carlo_loo(theta_pool, r0_pool, 4, [1.0], datasets=2, seed=-1)
    with pytest.raises(ValueError, match="r0_pool"):
        ch5.monte_carlo_loo(theta_pool, r0_pool[:5], 4, [1.0], datasets=2, seed=0)
    with pytest.raises(TypeError, match="datasets"):
        ch5.monte_carlo_loo(theta_pool, r0_pool, 4, [1.0], datasets=2.5, seed=0)


def test_descent_against_flow():
    theta, r0 = gram(6, 5)
    n, lr = 5, 1.5
    res = ch5.descent_against_flow(theta, r0, np.array([1, 2, 3, 10, 30]), lr)
    np.testing.assert_array_equal(res.steps, [1, 2, 6, 20])
    np.testing.assert_allclose(res.times, res.steps * lr, rtol=tolerance(np.float64))
    for k, descent, flow in zip(res.steps, res.descent, res.flow):
        rho, r = [], r0.copy()
        for i in range(n):  # twin i: (I − (η/n) Θ P_{−i})^k r0
            ri = r0.copy()
            for _ in range(k):
                ri = ri - lr / n * theta @ np.where(np.arange(n) == i, 0.0, ri)
            rho.append(ri[i])
        r = np.linalg.matrix_power(np.eye(n) - lr / n * theta, k) @ r0
        # descent: k steps over n rows against the closed form, a difference of losses of size max r0²
        bound = tolerance(np.float64, k * n, cond=cond(theta)) * np.abs(r0).max() ** 2
        assert descent == pytest.approx((np.sum(np.square(rho)) - np.sum(r**2)) / (2 * n), abs=bound)
        r_flow = expm(-theta * k * lr / n) @ r0
        assert flow == pytest.approx((np.sum(elementary(theta, r0, k * lr) ** 2) - np.sum(r_flow**2)) / (2 * n),
                                     abs=1e-9)  # flow: the Talbot inversion's own error
    np.testing.assert_allclose(res.relative, np.abs(res.descent - res.flow) / res.flow, rtol=tolerance(np.float64, 3))
    inv = np.linalg.inv(theta)
    assert res.limit == pytest.approx(np.sum((inv @ r0 / np.diag(inv)) ** 2) / (2 * n),
                                      rel=tolerance(np.float64, n, cond=cond(theta)))
    with pytest.raises(ValueError, match="lr"):
        ch5.descent_against_flow(theta, r0, [1, 2], 0.0)
    with pytest.raises(ValueError, match="finite"):
        ch5.descent_against_flow(theta, r0, [1, np.inf], lr)


def test_two_point_rows():
    rows = ch5.two_point_rows((3, 5), 5.0)
    assert [row["n"] for row in rows] == [3, 5]
    for row in rows:  # Chapter 5 closes Chapter 1's example: the identities the chapter's table shows
        rule = tolerance(np.float64, row["n"] ** 2)  # K_n of n samples: n² terms
        assert row["loo_t"] == pytest.approx(row["ref_t"], abs=1e-10)  # finite t: Talbot's own error
        assert row["loo_inf"] == pytest.approx(row["ref_inf"], rel=rule)
        assert row["halving"] == pytest.approx(0.5, rel=rule)
    assert rows[1]["ref_inf"] == pytest.approx(0.5 * 2.0**-4, rel=tolerance(np.float64, 5))  # ¼ (y1² + y2²) 2^{−(n−1)}, y = (1, 1)
    with pytest.raises(ValueError, match="size"):
        ch5.two_point_rows([2, 4], 5.0)
    with pytest.raises(TypeError, match="sizes"):
        ch5.two_point_rows("24", 5.0)
    with pytest.raises(ValueError, match="t"):
        ch5.two_point_rows([4], np.inf)
