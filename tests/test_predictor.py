"""The leave-one-out predictor of a run (gramlib.loo_predictor): one kernel, every question (Chapter 7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gramlib
from gramlib import loo_estimate, models, ntk, predict, train
from tests.tolerance import assert_close, tolerance

KEY = jax.random.PRNGKey(0)


def tanh_run(every, n=8, steps=24, lr=0.9):
    """A small tanh network (depth 2) and its run with a snapshot every ``every`` steps."""
    model = models.mlp(3, 6, depth=2, outputs=1, dtype=jnp.float64)
    x = jax.random.normal(KEY, (n, 3), jnp.float64)
    y = jnp.sign(jax.random.normal(jax.random.PRNGKey(9), (n,)))
    params = model.init(jax.random.PRNGKey(3))
    run = train.gradient_descent(model.apply, params, x, y, lr=lr, steps=steps, snapshots=steps // every,
                                 progress=False)
    return model, x, y, params, run


def test_with_a_snapshot_every_step_the_predictor_is_retraining():
    """Independent oracle: re-linearized with Euler's rule at every step, a twin is the retrained twin."""
    model, x, y, params, run = tanh_run(every=1)
    loo = gramlib.loo_predictor(model.apply, run, x)
    subset = np.array([1, 4, 6])
    twins = np.asarray(train.retrain_without(model.apply, params, x, y, subset, lr=run.lr, steps=run.steps,
                                             progress=False))
    assert_close(np.asarray(loo.relinearized(subset, rule="euler")), twins, size=run.n * run.steps, cond=1e4)
    # and the two-time prediction is the twins linearized around the run: close to them on this small step
    rho = loo.two_time()
    assert rho.shape == (run.n,) and np.max(np.abs(rho[subset] - twins)) < 0.1 * np.max(np.abs(twins))


def test_every_answer_is_the_library_function_with_the_runs_kernel():
    model, x, _, _, run = tanh_run(every=4)
    loo = gramlib.loo_predictor(model.apply, run, x)
    cross = ntk.two_time_kernel(model.apply, run.weights, x)
    rho, _, forces = predict.trajectory_loo(run, cross=cross)
    size = run.n * run.steps
    assert_close(loo.two_time(), rho, size=size)
    assert abs(loo.two_time_loss() - 0.5 * np.sum(rho ** 2) / run.n) <= tolerance(jnp.float64, size) * np.sum(rho ** 2)
    assert_close(loo.one_time(), predict.trajectory_loo(run).rho, size=size)
    assert_close(loo.twin_residuals().forces, forces, size=size)
    half = predict.trajectory_loo(run, len(run.thetas) // 2, cross=cross).rho  # every second snapshot
    assert_close(loo.two_time(snapshots=len(run.thetas) // 2), half, size=size)
    assert_close(loo.one_time(snapshots=len(run.thetas) // 2), predict.trajectory_loo(run, len(run.thetas) // 2).rho,
                 size=size)
    assert abs(loo.two_time_loss(len(run.thetas) // 2) - 0.5 * np.sum(half ** 2) / run.n) <= (
        tolerance(jnp.float64, size) * np.sum(half ** 2))
    subset = [0, 5]
    assert_close(loo.readout(subset), predict.twin_readout(model.apply, run, x, forces, subset), size=size)
    assert_close(loo.relinearized(subset),
                 predict.twin_readout(model.apply, run, x, forces, subset, relinearize=True), size=size)
    est = loo.estimate(size=4, key=KEY)
    want = loo_estimate.estimate_loo_loss(model.apply, run, x, size=4, key=KEY)
    np.testing.assert_array_equal(est.indices, want.indices)
    assert abs(est.estimate - want.estimate) <= tolerance(jnp.float64, size) * abs(want.estimate)
    within = loo.estimate_within(key=KEY, tolerance=1.0, pilot=4)
    want = loo_estimate.estimate_loo_loss_within(model.apply, run, x, key=KEY, tolerance=1.0, pilot=4)
    assert abs(within.estimate.estimate - want.estimate.estimate) <= tolerance(jnp.float64, size) * abs(want.estimate.estimate)
    check = loo.snapshot_check(est)
    assert check.snapshots == len(run.thetas) and check.coarse_snapshots == len(run.thetas) // 2


def test_bad_input_to_the_predictor_raises():
    model, x, y, params, run = tanh_run(every=4)
    with pytest.raises(TypeError, match="apply"):
        gramlib.loo_predictor("f", run, x)
    with pytest.raises(TypeError, match="TrainResult"):
        gramlib.loo_predictor(model.apply, (run.params, run.residuals), x)
    bare = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=4, progress=False)
    with pytest.raises(ValueError, match="snapshots"):
        gramlib.loo_predictor(model.apply, bare, x)
    with pytest.raises(ValueError, match="8 training inputs"):
        gramlib.loo_predictor(model.apply, run, x[:5])
