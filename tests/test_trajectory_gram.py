"""The effective Gram matrix of a run with a moving kernel, K_traj (gramlib.trajectory_gram)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib import alignment, data, effective_gram, kernel_flow, models, predict, train, trajectory_gram
from tests.tolerance import assert_close, cond, eigvec_cond, recursion_growth, tolerance

RNG = np.random.default_rng(5)


def gram(rows, width=9):
    j = RNG.normal(size=(rows, width))
    return j @ j.T


def brute_force_maps(thetas, steps, lr, outputs):
    """``R_traj`` and ``S_traj`` by multiplying the per-step matrices, twin by twin."""
    big_n = thetas.shape[1]
    n, s = big_n // outputs, steps // len(thetas)
    which = [min(t // s, len(thetas) - 1) for t in range(steps)]
    run = np.eye(big_n)
    for t in range(steps):
        run = (np.eye(big_n) - lr / n * thetas[which[t]]) @ run
    loo = np.zeros((big_n, big_n))
    for i in range(n):
        rows = slice(i * outputs, (i + 1) * outputs)
        keep = np.eye(big_n)
        keep[rows, rows] = 0
        twin = np.eye(big_n)
        for t in range(steps):
            twin = (np.eye(big_n) - lr / n * thetas[which[t]] @ keep) @ twin
        loo[rows] = twin[rows]
    return loo, run


@pytest.mark.parametrize("outputs", [1, 3])
def test_frozen_kernel_gives_the_effective_gram_matrix_of_gradient_descent(outputs):
    theta = gram(6 * outputs)
    lr = 0.9 * 6 / np.linalg.eigvalsh(theta).max()
    got = trajectory_gram.trajectory_effective_gram(np.stack([theta] * 4), 23, lr, outputs=outputs)
    want = np.asarray(effective_gram.effective_gram(theta, 23, lr=lr, outputs=outputs))
    assert_close(got.k_matrix, want, 23 * 6 * outputs, cond=cond(theta))  # 23 steps against the closed form


@pytest.mark.parametrize("outputs,steps", [(1, 13), (2, 9), (1, 31), (2, 25)])  # the last two: chunked segments
def test_moving_kernel_against_products_of_step_matrices(outputs, steps):
    thetas = np.stack([gram(5 * outputs) for _ in range(3)])
    lr = 1.5 * 5 / max(np.linalg.eigvalsh(t).max() for t in thetas)  # oscillating steps included
    got = trajectory_gram.trajectory_effective_gram(thetas, steps, lr, outputs=outputs)
    loo, run = brute_force_maps(thetas, steps, lr, outputs)
    scale = max(np.abs(loo).max(), 1.0)
    n = 5
    size, growth = steps * 5 * outputs, recursion_growth(thetas, lr, n, steps)  # steps × rows, amplified
    assert_close(got.loo_map, loo, size, cond=growth, scale=scale)
    assert_close(got.run_map, run, size, cond=growth, scale=scale)
    assert_close(got.k_matrix, (loo.T @ loo - run.T @ run) / (2 * n), 2 * size, cond=growth, scale=scale**2 / (2 * n))


def test_on_a_real_run_against_the_trajectory_prediction():
    """r0ᵀ K_traj r0 + the linear train loss = the LOO loss of linear residuals; the run's real residuals differ little."""
    ds = data.digits(40, 100, key=jax.random.PRNGKey(0))
    model = models.mlp(64, 256, 2, dtype=jnp.float64)
    run = train.gradient_descent(model.apply, model.init(jax.random.PRNGKey(1)), ds.x_train, ds.y_train, lr=1.0,
                                 steps=200, snapshots=10, progress=False)
    out = trajectory_gram.trajectory_effective_gram(run.thetas, run.steps, run.lr)
    r0 = run.residuals[0]
    linear_loo = float(r0 @ out.k_matrix @ r0) + kernel_flow.residual_loss(out.run_map @ r0, run.n)
    np.testing.assert_allclose(linear_loo, kernel_flow.residual_loss(out.loo_map @ r0, run.n),
                               rtol=tolerance(np.float64, 40 * 40))  # two contractions of the same maps (N² terms)
    real = kernel_flow.residual_loss(predict.trajectory_loo(run).rho, run.n)  # one-time recursion, real residuals
    assert abs(linear_loo / real - 1) < 0.05  # not rounding: linear vs real residuals, a modelling difference


def test_bad_input():
    theta = gram(4)
    with pytest.raises(ValueError, match="thetas"):
        trajectory_gram.trajectory_effective_gram(theta, 3, 0.1)
    with pytest.raises(ValueError, match="steps"):
        trajectory_gram.trajectory_effective_gram(np.stack([theta] * 3), 2, 0.1)
    with pytest.raises(ValueError, match="lr"):
        trajectory_gram.trajectory_effective_gram(np.stack([theta]), 3, -0.1)
    with pytest.raises(ValueError, match="symmetric"):
        trajectory_gram.trajectory_effective_gram(np.stack([theta + np.triu(theta, 1)]), 3, 0.1)
    with pytest.raises(ValueError, match="outputs"):
        trajectory_gram.trajectory_effective_gram(np.stack([theta]), 3, 0.1, outputs=3)
    bad = np.stack([theta])
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        trajectory_gram.trajectory_effective_gram(bad, 3, 0.1)


def numpy_bottom_share(k_matrix, r, k):
    vecs = np.linalg.eigh(k_matrix)[1][:, :k]
    return float(np.sum((vecs.T @ r) ** 2) / (r @ r))


def test_alignment_during_a_frozen_kernel_run_is_the_alignment_curve():
    theta = gram(12)
    lr = 0.8 * 12 / np.linalg.eigvalsh(theta).max()
    r0 = RNG.normal(size=12)
    steps = 20
    residuals = np.asarray(kernel_flow.kernel_residuals(theta, r0, np.arange(steps + 1), lr=lr))
    got = alignment.trajectory_alignment(np.stack([theta] * 4), residuals, lr, fraction=0.25)
    want = alignment.alignment_curve(theta, r0, got.steps, lr=lr, fraction=0.25)
    assert list(got.steps) == [5, 10, 15, 20] and got.k == want.k == 3
    np.testing.assert_allclose(got.times, lr * got.steps, rtol=tolerance(np.float64))
    # eigenvectors of K_n at 4 times: 20 steps of 12 rows, turned by 1 / the eigengap
    rule = tolerance(np.float64, steps * 12, cond=max(np.abs(v).max() / np.diff(v).min() for v in want.eigenvalues))
    np.testing.assert_allclose(got.share_r0, want.share_r0, rtol=0, atol=rule)
    np.testing.assert_allclose(got.share_rt, want.share_rt, rtol=0, atol=rule)


def test_alignment_during_a_moving_kernel_run_against_products_of_step_matrices():
    thetas = np.stack([gram(10) for _ in range(3)])
    lr = 0.9 * 10 / max(np.linalg.eigvalsh(t).max() for t in thetas)
    residuals = RNG.normal(size=(15, 10))  # any residuals: r(t_j) is read from them
    got = alignment.trajectory_alignment(thetas, residuals, lr, fraction=0.3)
    assert list(got.steps) == [4, 8, 14] and got.random_share == 0.3
    for j, end in enumerate(got.steps):
        loo, run = brute_force_maps(thetas[: j + 1], int(end), lr, 1)
        k_traj = (loo.T @ loo - run.T @ run) / 20
        growth = recursion_growth(thetas[: j + 1], lr, 10, int(end))
        rule = tolerance(np.float64, int(end) * 10, cond=growth * eigvec_cond(k_traj))
        assert abs(got.share_r0[j] - numpy_bottom_share(k_traj, residuals[0], 3)) <= rule
        assert abs(got.share_rt[j] - numpy_bottom_share(k_traj, residuals[end], 3)) <= rule
    assert_close(got.last.k_matrix, k_traj, int(end) * 10, cond=growth)  # K_traj at the last time: the whole run
    some = alignment.trajectory_alignment(thetas, residuals, lr, fraction=0.3, prefixes=(1, 3))
    assert list(some.steps) == [4, 14] and list(some.share_r0) == list(got.share_r0[[0, 2]])


def test_alignment_during_a_run_bad_input():
    thetas = np.stack([gram(4)] * 2)
    with pytest.raises(ValueError, match="residuals"):
        alignment.trajectory_alignment(thetas, np.zeros((2, 4)), 0.1)  # 1 step for 2 snapshots
    with pytest.raises(ValueError, match="residuals"):
        alignment.trajectory_alignment(thetas, np.zeros((5, 3)), 0.1)
    with pytest.raises(ValueError, match="residuals"):
        alignment.trajectory_alignment(thetas, np.full((5, 4), np.nan), 0.1)
    with pytest.raises(ValueError, match="prefixes"):
        alignment.trajectory_alignment(thetas, np.zeros((5, 4)), 0.1, prefixes=(1, 3))
    with pytest.raises(ValueError, match="symmetric"):
        alignment.trajectory_alignment(thetas + np.triu(np.ones((4, 4)), 1), np.zeros((5, 4)), 0.1)
    with pytest.raises(ValueError, match="outputs"):
        alignment.trajectory_alignment(thetas, np.zeros((5, 4)), 0.1, outputs=3)
    with pytest.raises(ValueError, match="lr"):
        alignment.trajectory_alignment(thetas, np.zeros((5, 4)), -0.1)
