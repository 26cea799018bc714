"""The one-call prediction of Chapter 7: its pieces, its agreement with brute-force
retraining in the lazy regime, and the table plumbing of the command line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from gramlib import baselines, ch7, data, effective_gram, models, ntk, predict, results  # noqa: E402

KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def run():
    ds = data.digits(40, 60, key=KEY)
    model = models.mlp(64, 256, 2, dtype=jnp.float64)
    p = predict.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=60, snapshots=6,
                                  brute_force=8, progress=False)
    return model, ds, p


def test_prediction_is_the_loo_loss_of_the_trajectory(run):
    model, ds, p = run
    cross = ntk.two_time_kernel(model.apply, p.run.weights, ds.x_train)
    rho = np.asarray(effective_gram.loo_trajectory(p.run.thetas, p.run.residuals, 1.0, cross=cross))
    assert np.allclose(p.loo, rho, rtol=0, atol=1e-12)
    assert abs(p.predicted - 0.5 * np.mean(rho**2)) < 1e-14
    one = np.asarray(effective_gram.loo_trajectory(p.run.thetas, p.run.residuals, 1.0))
    assert abs(p.one_time - 0.5 * np.mean(one**2)) < 1e-14
    assert len(p.run.weights) == len(p.run.thetas) + 1
    f = np.asarray(model.apply(p.run.params, ds.x_test))
    assert abs(p.held_out - 0.5 * np.mean((f - ds.y_test) ** 2)) < 1e-12
    assert abs(p.train_loss - p.run.train_loss[-1]) < 1e-14
    assert abs(p.relative_error - abs(p.predicted - p.held_out) / p.held_out) < 1e-14
    assert abs(p.ntk_bound - baselines.ntk_norm_bound(p.run.thetas[0], ds.y_train)) < 1e-12
    assert set(p.row()) >= {"predicted", "held_out", "gcv", "linearized", "ntk_bound", "contraction_free",
                            "brute_force", "correlation"}
    assert p.row()["baseline_dynamics"] == "descent"       # N = 40 rows: exact gradient descent
    rho_path = predict.trajectory_loo(p.run, cross=cross, path=True)[1]
    want = baselines.contraction_free_loss(p.run.thetas, p.run.residuals, rho_path, 1.0)
    assert abs(p.contraction_free - want) < 1e-14


def test_the_baselines_say_when_they_switch_to_gradient_flow(run, monkeypatch):
    model, ds, _ = run
    monkeypatch.setattr(predict, "EXACT_DESCENT_MAX_ROWS", 10)
    q = predict.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=60, snapshots=6,
                                  brute_force=0, progress=False)
    assert q.row()["baseline_dynamics"] == "flow"
    assert abs(q.gcv - baselines.gcv(q.run.thetas[0], q.run.residuals[0], 60.0)) < 1e-12


def test_loo_residuals_agree_with_brute_force_retraining(run):
    _, _, p = run
    assert p.correlation > 0.999
    assert np.max(np.abs(p.loo[p.subset] - p.brute_force_loo)) < 0.05 * np.max(np.abs(p.brute_force_loo))
    assert abs(p.brute_force - 0.5 * np.mean(p.brute_force_loo**2)) < 1e-14


def test_without_retraining_the_same_subset_is_drawn_and_predicted(run):
    # The CPU job for the CNN cells skips retraining; its subset-level numbers must be those of a full run.
    model, ds, p = run
    q = predict.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=60, snapshots=6,
                                  brute_force=8, retrain=False, progress=False)
    assert np.array_equal(q.subset, p.subset) and len(q.brute_force_loo) == 0
    assert q.predicted_on_subset == p.predicted_on_subset and q.predicted == p.predicted
    row = q.row()
    assert row["one_time_on_subset"] == p.row()["one_time_on_subset"]
    assert np.isnan(row["brute_force"]) and np.isnan(row["correlation"])
    with pytest.raises(ValueError, match="at most"):
        baselines.brute_force_subset(KEY, 5, 6)


def test_fewer_snapshots_and_constant_kernel_reduce_to_the_linearized_prediction(run):
    _, _, p = run
    one = predict.trajectory_loo(p.run, 1)
    assert one.shape == p.loo.shape and not np.allclose(one, p.loo)
    with pytest.raises(ValueError, match="divide"):
        predict.trajectory_loo(p.run, 4)
    # A linear model has a constant kernel: trajectory and exact linearized LOO must coincide.
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((15, 6)), np.sign(rng.standard_normal(15))
    lin = models.mlp(6, 1, depth=1, dtype=jnp.float64)
    ds = data.Dataset(x, y, x[:5], y[:5], y, y[:5])
    q = predict.predict_test_loss(lin, ds, key=KEY, lr=0.8, steps=30, snapshots=3, brute_force=0, progress=False)
    assert abs(q.predicted - q.linearized) < 1e-12
    assert np.isnan(q.brute_force) and np.isnan(q.correlation)


def test_summarize_averages_cells():
    rows = [{"dataset": "d", "arch": "mlp", "labels": "true", "seed": s, "predicted": 1.0 + s, "held_out": 2.0,
             "relative_error": 0.1 * s, "one_time": 0.5, "one_time_relative_error": 0.75, "gcv": 1.0, "gcv_relative_error": 0.5, "linearized": 1.0,
             "ntk_bound": 3.0, "contraction_free": 4.0, "brute_force": 1.0, "predicted_on_subset": 1.0,
             "correlation": 0.99 + 0.001 * s} for s in range(3)]
    rows.append(dict(rows[0], labels="random", predicted=7.0, held_out=8.0))
    (cell,) = ch7.summarize(rows)
    assert cell["runs"] == 3 and cell["predicted"] == 2.0 and abs(cell["relative_error"] - 0.1) < 1e-15
    assert cell["min_correlation"] == 0.99 and cell["random_predicted"] == 7.0
    assert cell["one_time"] == 0.5 and cell["one_time_relative_error"] == 0.75


def test_command_line_refuses_unknown_choices():
    from gramlib.__main__ import main

    with pytest.raises(SystemExit):
        main(["reproduce", "ch9"])
    with pytest.raises(SystemExit):
        main(["reproduce", "ch7", "--scale", "huge"])
    with pytest.raises(ValueError, match="scale"):
        ch7.reproduce_ch7("/tmp/never-written", "huge")


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
    got = predict.frozen_kernel_losses(lin, data.Dataset(x, y, xt, yt, y, yt), key=key, time=t)
    np.testing.assert_allclose(got, (loo, held), rtol=1e-9)
    with pytest.raises(ValueError, match="time"):
        predict.frozen_kernel_losses(lin, data.Dataset(x, y, xt, yt, y, yt), key=key, time=-1.0)


def test_noise_table_of_the_command_line(tmp_path):
    jax.config.update("jax_enable_x64", False)  # a caller in float32: the command must not change it
    try:
        rows = ch7.reproduce_ch7_noise(tmp_path, "smoke", archs=("mlp",), progress=False)
        assert not jax.config.jax_enable_x64, "reproduce switched float64 on in the caller's process"
    finally:
        jax.config.update("jax_enable_x64", True)
    assert [(r["dataset"], r["arch"]) for r in rows] == [("digits", "mlp"), ("mnist1d", "mlp"), ("teacher", "mlp")]
    back = results.read_table(tmp_path / "ch7_noise.csv")
    for r, b in zip(rows, back):
        assert b["splits"] == 3 and 0 <= b["share_above_10pct"] <= 1
        assert abs(b["mean_relative_error"] - r["mean_relative_error"]) < 1e-12
        assert b["median_relative_error"] <= b["p90_relative_error"]


def test_part_of_the_table(tmp_path):
    ch7.reproduce_ch7(tmp_path, "smoke", archs=("mlp",), datasets=("teacher",), seeds=(0,), progress=False)
    table = results.read_table(tmp_path / "ch7_table.csv")
    assert [(r["dataset"], r["arch"], r["labels"], r["seed"]) for r in table] == [
        ("teacher", "mlp", "true", 0), ("teacher", "mlp", "random", 0)]
    with pytest.raises(ValueError, match="datasets"):
        ch7.reproduce_ch7(tmp_path, "smoke", datasets=("cifar10",), progress=False)
    with pytest.raises(ValueError, match="seeds"):
        ch7.reproduce_ch7(tmp_path, "smoke", seeds=(7,), progress=False)


def test_table_and_limits_of_the_command_line(tmp_path):
    summary = ch7.reproduce_ch7(tmp_path, "smoke", archs=("mlp",), progress=False)
    table = results.read_table(tmp_path / "ch7_table.csv")
    assert [(r["dataset"], r["labels"]) for r in table] == [
        ("digits", "true"), ("digits", "random"), ("mnist1d", "true"), ("mnist1d", "random"),
        ("teacher", "true"), ("teacher", "random")]
    assert [c["dataset"] for c in summary] == ["digits", "mnist1d", "teacher"]
    for r in table:
        assert abs(r["relative_error"] - abs(r["predicted"] - r["held_out"]) / r["held_out"]) < 1e-12
        assert abs(r["one_time_relative_error"] - abs(r["one_time"] - r["held_out"]) / r["held_out"]) < 1e-12
    snaps = results.read_table(tmp_path / "ch7_snapshots.csv")
    assert sorted({s["snapshots"] for s in snaps}) == [1, 2, 4]
    assert (tmp_path / "ch7_predicted_vs_heldout.png").stat().st_size > 0
    limits = ch7.reproduce_ch7_limits(tmp_path, "smoke", progress=False)
    assert [r["lr"] for r in limits] == [0.5, 1.0, 2.0]
    assert all(r["diverged"] or r["loo_ratio_to_brute_force"] > 0 for r in limits)
    quick = ch7.reproduce_ch7_limits(tmp_path / "no-retrain", "smoke", retrain=False, progress=False)
    for r, q in zip(limits, quick):
        assert r["diverged"] == q["diverged"]
        if not r["diverged"]:
            assert q["predicted_on_subset"] == r["predicted_on_subset"] and np.isnan(q["brute_force"])
            assert np.isnan(q["loo_ratio_to_brute_force"])
    with pytest.raises(ValueError, match="parity"):
        ch7.reproduce_ch7_limits(tmp_path, "paper")
