"""Chapter 7's baselines, each against an independent computation: explicit matrix powers,
a brute-force retraining loop, a linear solve, and per-sample gradients."""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import baselines, kernel_flow, models, train
from tests.tolerance import assert_close, cond, tolerance

RNG = np.random.default_rng(7)
N = 10


def gram(n, p=30, rng=RNG):
    j = rng.standard_normal((n, p)) / np.sqrt(p)
    return j @ j.T, j


def test_gcv_descent_matches_explicit_smoother():
    theta, _ = gram(N)
    r0 = RNG.standard_normal(N)
    lr, k = 2.0, 17
    residual_map = np.linalg.matrix_power(np.eye(N) - lr / N * theta, k)   # I − S_k
    r = residual_map @ r0
    want = 0.5 * (r @ r) / N / (np.trace(residual_map) / N) ** 2
    assert abs(baselines.gcv(theta, r0, k, lr=lr) - want) <= tolerance(np.float64, k * N) * want  # k products of N terms
    both = baselines.gcv(theta, r0, np.array([0, k]), lr=lr)
    assert both.shape == (2,) and abs(both[0] - 0.5 * (r0 @ r0) / N) <= tolerance(np.float64, N) * both[0]


def test_gcv_flow_matches_eigen_free_exponential():
    theta, _ = gram(N)
    r0 = RNG.standard_normal(2 * N)
    big = np.kron(theta, np.eye(2))                     # two outputs, rows (sample, output)
    t = 3.0
    term, expm = np.eye(2 * N), np.eye(2 * N)           # Taylor series of e^{−Θt/n}
    for m in range(1, 60):
        term = term @ (-big * t / N) / m
        expm = expm + term
    r = expm @ r0
    want = 0.5 * (r @ r) / N / (np.trace(expm) / (2 * N)) ** 2
    # 60 Taylor terms of 2N-term products; rounding grows with the terms' size, up to e^{‖Θ t/n‖}
    growth = np.exp(np.linalg.norm(big, 2) * t / N)
    assert abs(baselines.gcv(big, r0, t, outputs=2) - want) <= tolerance(np.float64, 60 * 2 * N, cond=growth) * want


def test_linearized_loss_matches_brute_force_kernel_retraining():
    theta, _ = gram(N)
    r0 = RNG.standard_normal(N)
    lr, k = 1.5, 40
    loss, rho = baselines.linearized_loss(theta, r0, k, lr=lr)
    for i in range(N):
        keep = np.ones(N)
        keep[i] = 0
        r = r0.copy()
        for _ in range(k):                               # twin without sample i, weight 1/n
            r = r - lr / N * theta @ (keep * r)
        assert abs(rho[i] - r[i]) <= tolerance(np.float64, k * N, cond=cond(theta)) * np.abs(r0).max()
    assert abs(loss - 0.5 * np.sum(rho**2) / N) <= tolerance(np.float64, N) * loss


def test_ntk_norm_bound_matches_a_linear_solve_and_handles_singular_kernels():
    theta, _ = gram(N)
    y = np.sign(RNG.standard_normal(N))
    want = np.sqrt(2 * y @ np.linalg.solve(theta, y) / N)
    assert abs(baselines.ntk_norm_bound(theta, y) - want) <= tolerance(np.float64, N, cond=cond(theta)) * want
    two = np.kron(theta, np.eye(2))
    y2 = RNG.standard_normal((N, 2))
    want = np.sqrt(2 * y2.ravel() @ np.linalg.solve(two, y2.ravel()) / N)
    assert abs(baselines.ntk_norm_bound(two, y2) - want) <= tolerance(np.float64, 2 * N, cond=cond(two)) * want
    low, _ = gram(N, p=4)                               # rank 4
    in_range = low @ RNG.standard_normal(N)
    assert np.isfinite(baselines.ntk_norm_bound(low, in_range))
    assert baselines.ntk_norm_bound(low, y) == np.inf
    with pytest.raises(ValueError, match="y must hold"):
        baselines.ntk_norm_bound(theta, y[:-1])


def test_contraction_free_loss_is_the_explicit_sum():
    thetas = np.stack([gram(N)[0] for _ in range(3)])
    res = RNG.standard_normal((13, N))                 # 12 steps, snapshot every 4
    rho = RNG.standard_normal((12, N))                 # the twins' LOO residuals at steps 0..11
    lr = 0.3
    want = 0.5 * res[-1] @ res[-1] / N
    for k in range(12):
        th, p = thetas[k // 4], rho[k]
        want += lr * sum(th[i, i] * p[i] ** 2 for i in range(N)) / N**2
    assert abs(baselines.contraction_free_loss(thetas, res, rho, lr) - want) <= tolerance(np.float64, 12 * N) * want
    with pytest.raises(ValueError, match="loo_path"):
        baselines.contraction_free_loss(thetas, res, rho[:-1], lr)


def test_contraction_free_loss_with_the_recursion_path_of_a_frozen_kernel():
    """Frozen kernel: the recursion's ρ(k) are the exact LOO residuals of gradient descent at every step."""
    from gramlib import effective_gram, ntk

    theta, _ = gram(N)
    r0, lr, steps = RNG.standard_normal(N), 1.5, 12
    res = np.asarray(kernel_flow.kernel_residuals(theta, r0, np.arange(steps + 1), lr=lr))
    rho_t, path, _ = effective_gram.loo_trajectory(np.stack([theta] * 3), res, lr)
    exact = np.asarray(effective_gram.loo_residuals(theta, r0, np.arange(steps), lr=lr))
    # a recursion of 12 steps (N terms each) against the closed form through Θ's eigendecomposition
    assert_close(path, exact, steps * N, cond=cond(theta))
    assert_close(rho_t, effective_gram.loo_residuals(theta, r0, steps, lr=lr), steps * N, cond=cond(theta))
    eps = effective_gram.perturbation_factor(theta, exact)
    want = 0.5 * res[-1] @ res[-1] / N + lr * eps.sum()
    assert abs(baselines.contraction_free_loss(np.stack([theta] * 3), res, path, lr) - want) <= (
        tolerance(np.float64, steps * N, cond=cond(theta)) * want)


def test_brute_force_loo_draws_distinct_samples_and_retrains():
    x = RNG.standard_normal((N, 3))
    y = np.sign(RNG.standard_normal(N))
    model = models.mlp(3, 8, 2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    idx, rho = baselines.brute_force_loo(model.apply, params, x, y, lr=0.5, steps=6, size=4,
                                         key=jax.random.PRNGKey(1), progress=False)
    assert len(set(idx)) == 4 and rho.shape == (4,)
    assert_close(rho, train.retrain_without(model.apply, params, x, y, idx, lr=0.5, steps=6, progress=False),
                 6 * ravel_pytree(params)[0].size)  # 6 steps, each output a sum over the parameters
    with pytest.raises(ValueError, match="size"):
        baselines.brute_force_loo(model.apply, params, x, y, lr=0.5, steps=6, size=N + 1,
                                  key=jax.random.PRNGKey(1), progress=False)


def test_bad_inputs_raise():
    theta, _ = gram(N)
    with pytest.raises(ValueError, match="theta"):
        baselines.gcv(theta[:-1], np.ones(N), 3.0)
    with pytest.raises(ValueError, match="finite"):
        baselines.gcv(theta, np.ones(N), np.inf)
    with pytest.raises(ValueError, match="lr"):
        baselines.contraction_free_loss(theta[None], np.ones((3, N)), np.ones((2, N)), 0.0)


def test_exercise_checks_accept_correct_and_reject_wrong_answers(capsys):
    from gramlib import effective_gram
    from gramlib.views.exercises import ch07

    def good_eps(theta, rho, outputs):
        return effective_gram.perturbation_factor(theta, rho, outputs=outputs)

    def in_sample(theta, rho, outputs):                 # the run's gradient covariance, not the twins'
        return effective_gram.in_sample_covariance(theta, rho, outputs=outputs)

    assert ch07.check_perturbation_factor(good_eps) is True
    assert ch07.check_perturbation_factor(in_sample) is False

    def good_gcv(theta, r0, steps, lr):
        return baselines.gcv(theta, r0, steps, lr=lr)

    def bad_gcv(theta, r0, steps, lr):                  # no denominator: just the train loss
        r = np.linalg.matrix_power(np.eye(len(r0)) - lr / len(r0) * theta, steps) @ r0
        return 0.5 * (r @ r) / len(r0)

    assert ch07.check_gcv(good_gcv) is True
    assert ch07.check_gcv(bad_gcv) is False
    assert ch07.check_gcv(None) is False
    out = capsys.readouterr().out
    assert "✅" in out and "❌" in out and "Not answered yet" in out


def test_linearized_twins_self_check(capsys):
    from gramlib.views.exercises import ch07

    def good(jacobians, residuals, lr):
        n, steps = residuals.shape[1], residuals.shape[0] - 1
        rho = np.zeros(n)
        for i in range(n):
            delta = np.zeros(jacobians[0].shape[1])
            for t in range(steps):
                force = -(jacobians[t] @ delta)
                force[i] = residuals[t, i]
                delta = delta + lr / n * jacobians[t].T @ force
            rho[i] = residuals[-1, i] + jacobians[-1][i] @ delta
        return rho

    def one_time(jacobians, residuals, lr):             # reads δ through the Jacobian that wrote it
        n, steps = residuals.shape[1], residuals.shape[0] - 1
        rho = np.zeros(n)
        for i in range(n):
            e = np.zeros(n)
            for t in range(steps):
                force = -e.copy()
                force[i] = residuals[t, i]
                e = e + lr / n * jacobians[t] @ jacobians[t].T @ force
            rho[i] = residuals[-1, i] + e[i]
        return rho

    assert ch07.check_linearized_twins(good) is True
    assert ch07.check_linearized_twins(one_time) is False
    assert ch07.check_linearized_twins(None) is False
    out = capsys.readouterr().out
    assert "✅" in out and "❌" in out
