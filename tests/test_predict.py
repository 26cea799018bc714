"""The one-call prediction of Chapter 7: its pieces and its agreement with brute-force
retraining in the lazy regime (the reproduce commands are tested in ``test_experiments.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib import baselines, data, effective_gram, models, ntk, predict, predicted_loss
from tests.tolerance import assert_close, cond, tolerance

F64 = np.float64

KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def run():
    ds = data.digits(40, 60, key=KEY)
    model = models.mlp(64, 256, 2, dtype=jnp.float64)
    p = predicted_loss.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=60, snapshots=6,
                                  brute_force=8, progress=False)
    return model, ds, p


def test_prediction_is_the_loo_loss_of_the_trajectory(run):
    model, ds, p = run
    cross = ntk.two_time_kernel(model.apply, p.run.weights, ds.x_train)
    rho = np.asarray(effective_gram.loo_trajectory(p.run.thetas, p.run.residuals, 1.0, cross=cross).rho)
    n, steps = ds.x_train.shape[0], 60
    assert_close(p.loo, rho, steps * n)  # the same recursion of 60 steps over n samples
    assert p.predicted == pytest.approx(0.5 * np.mean(rho**2), rel=tolerance(F64, n))
    one = np.asarray(effective_gram.loo_trajectory(p.run.thetas, p.run.residuals, 1.0).rho)
    assert p.one_time == pytest.approx(0.5 * np.mean(one**2), rel=tolerance(F64, steps * n))
    assert len(p.run.weights) == len(p.run.thetas) + 1
    f = np.asarray(model.apply(p.run.params, ds.x_test))
    assert p.held_out == pytest.approx(0.5 * np.mean((f - ds.y_test) ** 2), rel=tolerance(F64, f.size))
    assert p.train_loss == pytest.approx(p.run.train_loss[-1], rel=tolerance(F64, n))
    assert abs(p.relative_error - abs(p.predicted - p.held_out) / p.held_out) <= (
        tolerance(F64, 3) * (p.predicted + p.held_out) / p.held_out)  # a difference: its terms' scale
    assert p.ntk_bound == pytest.approx(baselines.ntk_norm_bound(p.run.thetas[0], ds.y_train),
                                        rel=tolerance(F64, n, cond=cond(p.run.thetas[0])))
    assert set(p.row()) >= {"predicted", "held_out", "gcv", "linearized", "ntk_bound", "contraction_free",
                            "brute_force", "correlation"}
    assert p.row()["baseline_dynamics"] == "descent"       # N = 40 rows: exact gradient descent
    rho_path = predict.trajectory_loo(p.run, cross=cross).path
    want = baselines.contraction_free_loss(p.run.thetas, p.run.residuals, rho_path, 1.0)
    assert p.contraction_free == pytest.approx(want, rel=tolerance(F64, steps * n))


def test_the_baselines_say_when_they_switch_to_gradient_flow(run, monkeypatch):
    model, ds, _ = run
    monkeypatch.setattr(predicted_loss, "EXACT_DESCENT_MAX_ROWS", 10)
    q = predicted_loss.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=60, snapshots=6,
                                  brute_force=0, progress=False)
    assert q.row()["baseline_dynamics"] == "flow"
    assert q.gcv == pytest.approx(baselines.gcv(q.run.thetas[0], q.run.residuals[0], 60.0),
                                  rel=tolerance(np.float64, len(q.run.residuals[0])))


def test_loo_residuals_agree_with_brute_force_retraining(run):
    _, _, p = run
    assert p.correlation > 0.999
    assert np.max(np.abs(p.loo[p.subset] - p.brute_force_loo)) < 0.05 * np.max(np.abs(p.brute_force_loo))
    assert p.brute_force == pytest.approx(0.5 * np.mean(p.brute_force_loo**2), rel=tolerance(np.float64, 8))


def test_without_retraining_the_same_subset_is_drawn_and_predicted(run):
    # The CPU job for the CNN cells skips retraining; its subset-level numbers must be those of a full run.
    model, ds, p = run
    q = predicted_loss.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=60, snapshots=6,
                                  brute_force=8, retrain=False, progress=False)
    assert np.array_equal(q.subset, p.subset) and len(q.brute_force_loo) == 0
    assert q.predicted_on_subset == p.predicted_on_subset and q.predicted == p.predicted
    row = q.row()
    assert row["one_time_on_subset"] == p.row()["one_time_on_subset"]
    assert np.isnan(row["brute_force"]) and np.isnan(row["correlation"])
    assert set(p.seconds) == {"retrain"} and p.seconds["retrain"] > 0 and dict(q.seconds) == {}
    with pytest.raises(TypeError):  # read-only: no run's timings leak into another's
        q.seconds["retrain"] = 1.0
    with pytest.raises(ValueError, match="at most"):
        baselines.brute_force_subset(KEY, 5, 6)


def test_fewer_snapshots_and_constant_kernel_reduce_to_the_linearized_prediction(run):
    _, _, p = run
    one = predict.trajectory_loo(p.run, 1).rho
    assert one.shape == p.loo.shape  # and differs beyond rounding (60 steps of 40 samples):
    assert np.abs(one - p.loo).max() > 1e3 * tolerance(np.float64, 60 * 40) * np.abs(p.loo).max()
    with pytest.raises(ValueError, match="divide"):
        predict.trajectory_loo(p.run, 4)
    # A linear model has a constant kernel: trajectory and exact linearized LOO must coincide.
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((15, 6)), np.sign(rng.standard_normal(15))
    lin = models.mlp(6, 1, depth=1, dtype=jnp.float64)
    ds = data.Dataset(x, y, x[:5], y[:5], y, y[:5])
    q = predicted_loss.predict_test_loss(lin, ds, key=KEY, lr=0.8, steps=30, snapshots=3, brute_force=0, progress=False)
    # a recursion of 30 steps over 15 samples against the closed form through Θ's eigendecomposition
    assert q.predicted == pytest.approx(q.linearized, rel=tolerance(np.float64, 30 * 15, cond=cond(q.run.thetas[0])))
    assert np.isnan(q.brute_force) and np.isnan(q.correlation)


def test_frozen_kernel_losses_match_parameter_space_gradient_flow():
    """A linear model is its own linearization: retrain it in parameter space by ``expm``."""
    from scipy.linalg import expm

    rng = np.random.default_rng(5)
    n, m, d, t = 12, 9, 5, 7.3
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y, yt = np.sign(rng.standard_normal(n)), np.sign(rng.standard_normal(m))
    lin = models.mlp(d, 1, depth=1, dtype=jnp.float64)
    key = jax.random.PRNGKey(2)
    w0 = np.asarray(lin.init(key)[0]["w"])[:, 0]
    phi, phit = x / np.sqrt(d), xt / np.sqrt(d)

    def flow(keep):
        """w(t) for ẇ = −(1/n) Φ_Sᵀ (Φ_S w − y_S) on the kept samples, by one augmented matrix exponential."""
        a = np.zeros((d + 1, d + 1))
        a[:d, :d] = -phi[keep].T @ phi[keep] / n
        a[:d, d] = phi[keep].T @ y[keep] / n
        return (expm(a * t) @ np.append(w0, 1.0))[:d]

    every = np.ones(n, bool)
    held = 0.5 * np.mean((phit @ flow(every) - yt) ** 2)
    loo = 0.5 * np.mean([(phi[i] @ flow(np.arange(n) != i) - y[i]) ** 2 for i in range(n)])
    got = predict.frozen_kernel_losses(lin, data.Dataset(x, y, xt, yt, y, yt), key=key, t=t)
    np.testing.assert_allclose(got, (loo, held), rtol=1e-9)  # the LOO loss by the Talbot inversion: its own error
    with pytest.raises(ValueError, match="t must"):
        predict.frozen_kernel_losses(lin, data.Dataset(x, y, xt, yt, y, yt), key=key, t=-1.0)
