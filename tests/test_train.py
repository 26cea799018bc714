"""Gradient descent recorder and brute-force leave-one-out retraining, against closed forms
for a model that is linear in its parameters (its NTK is constant: X Xᵀ / d)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from gramlib import models, ntk, train  # noqa: E402

KEY = jax.random.PRNGKey(0)
N, D = 12, 5


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, D))
    y = np.sign(rng.standard_normal(N))
    model = models.mlp(D, 1, depth=1, dtype=jnp.float64)     # f(x) = x·w / sqrt(D)
    return model, model.init(KEY), x, y


def test_residuals_follow_the_kernel_recursion(linear):
    model, params, x, y = linear
    lr, steps = 0.7, 25
    run = train.gradient_descent(model.apply, params, x, y, lr=lr, steps=steps, snapshots=5, chunk=7,
                                 progress=False)
    theta = x @ x.T / D
    r = np.asarray(model.apply(params, x)) - y
    want = [r]
    for _ in range(steps):
        r = r - lr / N * theta @ r
        want.append(r)
    assert run.residuals.shape == (steps + 1, N)
    assert np.allclose(run.residuals, np.array(want), atol=1e-12)
    assert np.allclose(run.train_loss, 0.5 * np.sum(np.array(want) ** 2, 1) / N)
    assert run.thetas.shape == (5, N, N) and np.allclose(run.thetas, theta[None], atol=1e-12)
    assert list(run.snapshot_steps) == [0, 5, 10, 15, 20]
    assert run.steps == steps and run.n == N and run.outputs == 1


def test_chunking_does_not_change_the_run_and_snapshots_are_taken_on_time():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 4)), rng.standard_normal((10, 2))
    model = models.mlp(4, 16, 2, outputs=2, dtype=jnp.float64)
    params = model.init(KEY)
    a = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=12, snapshots=3, chunk=5, progress=False)
    b = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=12, snapshots=3, chunk=100, progress=False)
    assert a.residuals.shape == (13, 20) and np.allclose(a.residuals, b.residuals, atol=1e-13)
    # snapshot 1 is the NTK at step 4: rebuild the parameters at step 4 and compare
    p4 = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=4, progress=False).params
    assert np.allclose(a.thetas[1], ntk.empirical_ntk(model.apply, p4, jnp.asarray(x)), atol=1e-12)
    assert np.allclose(a.residuals[4], (np.asarray(model.apply(p4, x)) - y).ravel(), atol=1e-12)


def test_unrolled_convolutional_steps_are_the_steps_of_the_loop(monkeypatch):
    # On the CPU a network with a convolution in its traced computation takes one compiled step per
    # call (train._loop_free), whether it is a gramlib model or a plain function; forced into the
    # lax.scan loop (train.LOOP_FREE_ON_CPU = False) the same network must take the same steps, for
    # the recorded run and for the retrained twins.
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((9, 12)), np.sign(rng.standard_normal(9))
    cnn = models.cnn((12, 1), 3, 3, dtype=jnp.float64)
    plain = lambda p, z: cnn.apply(p, z)  # noqa: E731
    params = cnn.init(KEY)
    cpu = jax.default_backend() == "cpu"
    assert train._loop_free(cnn.apply, params, x) == cpu and train._loop_free(plain, params, x) == cpu
    mlp = models.mlp(12, 4)
    assert not train._loop_free(mlp.apply, mlp.init(KEY), x)
    a = train.gradient_descent(cnn.apply, params, x, y, lr=0.5, steps=14, chunk=5, progress=False)
    drop = np.array([0, 4])
    twins_a = train.retrain_without(cnn.apply, params, x, y, drop, lr=0.5, steps=6, chunk=4, progress=False)
    monkeypatch.setattr(train, "LOOP_FREE_ON_CPU", False)
    assert not train._loop_free(plain, params, x)
    b = train.gradient_descent(plain, params, x, y, lr=0.5, steps=14, chunk=5, progress=False)
    twins_b = train.retrain_without(plain, params, x, y, drop, lr=0.5, steps=6, chunk=4, progress=False)
    assert a.residuals.shape == (15, 9) and np.allclose(a.residuals, b.residuals, rtol=0, atol=1e-13)
    assert a.train_loss[-1] < a.train_loss[0]
    assert np.allclose(twins_a, twins_b, rtol=0, atol=1e-13)


def test_retrain_without_matches_an_explicit_loop(linear):
    model, params, x, y = linear
    lr, steps = 0.7, 30
    drop = np.array([0, 3, 11])
    got = train.retrain_without(model.apply, params, x, y, drop, lr=lr, steps=steps, chunk=8, progress=False)
    w0 = np.asarray(params[0]["w"])[:, 0]
    for i, rho in zip(drop, got):
        w = w0.copy()
        keep = np.arange(N) != i
        for _ in range(steps):
            r = x[keep] @ w / np.sqrt(D) - y[keep]
            w = w - lr / N * x[keep].T @ r / np.sqrt(D)           # per-sample weight 1/n, as the full run
        assert abs(rho - (x[i] @ w / np.sqrt(D) - y[i])) < 1e-12


def test_bad_arguments_and_divergence(linear):
    model, params, x, y = linear
    with pytest.raises(ValueError, match="multiple"):
        train.gradient_descent(model.apply, params, x, y, lr=0.1, steps=10, snapshots=3, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train.gradient_descent(model.apply, params, x, y, lr=-1.0, steps=10, progress=False)
    with pytest.raises(ValueError, match="y must have one row"):
        train.gradient_descent(model.apply, params, x, y[:-1], lr=0.1, steps=10, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        train.gradient_descent(model.apply, params, np.full_like(x, np.nan), y, lr=0.1, steps=10, progress=False)
    with pytest.raises(ValueError, match="drop"):
        train.retrain_without(model.apply, params, x, y, np.array([N]), lr=0.1, steps=3, progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        train.gradient_descent(model.apply, params, x, y, lr=1e6, steps=200, progress=False)
