"""Gradient descent recorder and brute-force leave-one-out retraining, against closed forms
for a model that is linear in its parameters (its NTK is constant: X Xᵀ / d)."""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import models, ntk, train, twins
from tests.tolerance import assert_close, tolerance

KEY = jax.random.PRNGKey(0)
N, D = 12, 5


def terms(params, steps):
    """The rounding size of a run: ``steps`` steps, each a sum over the parameters."""
    return max(1, steps) * ravel_pytree(params)[0].size


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
    assert_close(run.residuals, np.array(want), steps * N * D)  # weight space against the kernel recursion
    np.testing.assert_allclose(run.train_loss, 0.5 * np.sum(np.array(want) ** 2, 1) / N, rtol=tolerance(np.float64, steps * N * D))
    assert run.thetas.shape == (5, N, N)
    assert_close(run.thetas, np.broadcast_to(theta, run.thetas.shape), D)
    assert list(run.snapshot_steps) == [0, 5, 10, 15, 20]
    assert run.steps == steps and run.n == N and run.outputs == 1


def test_chunking_does_not_change_the_run_and_snapshots_are_taken_on_time():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 4)), rng.standard_normal((10, 2))
    model = models.mlp(4, 16, 2, outputs=2, dtype=jnp.float64)
    params = model.init(KEY)
    a = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=12, snapshots=3, chunk=5, progress=False)
    b = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=12, snapshots=3, chunk=100, progress=False)
    assert a.residuals.shape == (13, 20)
    assert_close(a.residuals, b.residuals, terms(params, 12))
    # snapshot 1 is the NTK at step 4: rebuild the parameters at step 4 and compare
    p4 = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=4, progress=False).params
    assert_close(a.thetas[1], ntk.empirical_ntk(model.apply, p4, jnp.asarray(x)), terms(params, 4))
    assert_close(a.residuals[4], (np.asarray(model.apply(p4, x)) - y).ravel(), terms(params, 4))


@pytest.fixture(scope="module")
def mlp_and_cnn():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((9, 12)), np.sign(rng.standard_normal(9))
    mlp = models.mlp(12, 6, 2, dtype=jnp.float64)
    cnn = models.cnn((12, 1), 3, 3, dtype=jnp.float64)
    return {"mlp": (mlp, mlp.init(KEY)), "cnn": (cnn, cnn.init(KEY))}, x, y


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_both_loops_take_the_same_steps(mlp_and_cnn, arch):
    # loop="per_step" (one compiled call per step, twins one at a time) is the CPU-convolution
    # workaround: the recorded run and the retrained twins must be those of the lax.scan loop.
    nets, x, y = mlp_and_cnn
    model, params = nets[arch]
    drop = np.array([0, 4])
    runs, twins = {}, {}
    for loop in train.LOOPS:
        runs[loop] = train.gradient_descent(model.apply, params, x, y, lr=0.5, steps=14, chunk=5, loop=loop,
                                            progress=False)
        twins[loop] = train.retrain_without(model.apply, params, x, y, drop, lr=0.5, steps=6, chunk=4, loop=loop,
                                            progress=False)
    assert runs["scan"].residuals.shape == (15, 9) and runs["scan"].train_loss[-1] < runs["scan"].train_loss[0]
    assert_close(runs["scan"].residuals, runs["per_step"].residuals, terms(params, 14))
    assert twins["scan"].shape == (2,)
    assert_close(twins["scan"], twins["per_step"], terms(params, 6))


def test_the_loop_is_the_callers_choice(mlp_and_cnn, monkeypatch):
    nets, x, y = mlp_and_cnn
    (cnn, p_cnn), (mlp, p_mlp) = nets["cnn"], nets["mlp"]
    plain = lambda p, z: cnn.apply(p, z)  # noqa: E731
    # the recommendation: one call per step for a convolution on the CPU, found by tracing any function
    assert train.recommended_loop(cnn.apply, p_cnn, x, backend="cpu") == "per_step"
    assert train.recommended_loop(plain, p_cnn, x, backend="cpu") == "per_step"
    assert train.recommended_loop(cnn.apply, p_cnn, x, backend="gpu") == "scan"
    assert train.recommended_loop(mlp.apply, p_mlp, x, backend="cpu") == "scan"
    assert train.recommended_loop(cnn.apply, p_cnn, x) in train.LOOPS
    # ... which the trainers never consult: no tracing for primitives, no look at the backend
    def refuse(*args, **kwargs):
        raise AssertionError("the trainers must not choose the loop themselves")

    monkeypatch.setattr(train, "uses_primitive", refuse)
    monkeypatch.setattr(train, "recommended_loop", refuse)
    monkeypatch.setattr(jax, "default_backend", refuse)
    train.gradient_descent(cnn.apply, p_cnn, x, y, lr=0.5, steps=2, progress=False)
    train.retrain_without(cnn.apply, p_cnn, x, y, np.array([1]), lr=0.5, steps=2, loop="per_step", progress=False)
    for bad in ("unrolled", None, 1):
        with pytest.raises(ValueError, match=r"loop must be one of \('scan', 'per_step'\)"):
            train.gradient_descent(cnn.apply, p_cnn, x, y, lr=0.5, steps=2, loop=bad, progress=False)
        with pytest.raises(ValueError, match="loop must be one of"):
            train.retrain_without(cnn.apply, p_cnn, x, y, np.array([1]), lr=0.5, steps=2, loop=bad, progress=False)


def test_twins_of_chapter_7_are_the_twins_of_chapter_2(linear):
    # one gradient step for every twin (gramlib.twins.gradient_step): the leave-one-out twin of
    # retrain_without is twin_trajectories' twin u, whose loss on z_i is ½ρ_i²
    model, params, x, y = linear
    rho = train.retrain_without(model.apply, params, x, y, np.array([3]), lr=0.7, steps=9, progress=False)
    rec = twins.twin_trajectories(model.apply, params, x, y, 3, lr=0.7, record_at=[9])
    rule = tolerance(np.float64, 9 * N * D)  # 9 steps over N samples and D weights
    assert float(rec.loss_u[0]) == pytest.approx(0.5 * rho[0] ** 2, rel=rule)
    run = train.gradient_descent(model.apply, params, x, y, lr=0.7, steps=9, progress=False)
    assert float(rec.loss_w[0]) == pytest.approx(0.5 * run.residuals[-1, 3] ** 2, rel=rule)
    assert float(rec.train_loss[0]) == pytest.approx(run.train_loss[-1], rel=rule)


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
        assert abs(rho - (x[i] @ w / np.sqrt(D) - y[i])) <= tolerance(np.float64, steps * N * D) * np.abs(y).max()


def test_bad_arguments_and_divergence(linear):
    model, params, x, y = linear
    kw = dict(lr=0.1, steps=3, progress=False)
    with pytest.raises(ValueError, match="multiple"):
        train.gradient_descent(model.apply, params, x, y, lr=0.1, steps=10, snapshots=3, progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        train.gradient_descent(model.apply, params, x, y, lr=1e6, steps=200, progress=False)
    nan_params = [{"w": params[0]["w"].at[0, 0].set(np.nan), "b": params[0]["b"]}]
    cases = [
        (TypeError, "apply must be a function", dict(apply=None)),
        (ValueError, "params must be a tree holding", dict(params=[])),
        (ValueError, r"params\[0\]\['w'\] contains 1 NaN", dict(params=nan_params)),
        (TypeError, "must be an array of numbers", dict(params=[{"w": "weights"}])),
        (ValueError, "x contains", dict(x=np.full_like(x, np.nan))),
        (ValueError, "x must have 2 or 3 or 4", dict(x=x[0])),
        (ValueError, r"apply\(params, x\) fails for x of shape \(12, 4\)", dict(x=x[:, :4])),
        (ValueError, "y must have one row", dict(y=y[:-1])),
        (ValueError, "y contains", dict(y=np.full_like(y, np.inf))),
        (ValueError, "shaped like y's rows", dict(y=y[:, None])),
        (ValueError, "lr must be > 0", dict(lr=-1.0)),
        (ValueError, "lr must be a finite", dict(lr=np.nan)),
        (ValueError, "steps must be at least 1", dict(steps=0)),
        (TypeError, "steps must be an integer", dict(steps=2.5)),
        (ValueError, "chunk must be at least 1", dict(chunk=0)),
    ]
    base = dict(apply=model.apply, params=params, x=x, y=y, lr=0.1, steps=3, progress=False)
    for error, message, change in cases:
        args = {**base, **change}
        first = [args.pop(name) for name in ("apply", "params", "x", "y")]
        with pytest.raises(error, match=message):
            train.gradient_descent(*first, **args)
        with pytest.raises(error, match=message):
            train.retrain_without(*first, np.array([0]), **args)
    with pytest.raises(ValueError, match="snapshots must be at least 0"):
        train.gradient_descent(model.apply, params, x, y, snapshots=-1, **kw)
    for drop in (np.array([N]), np.array([-1]), np.array([], int), np.array([0.5]), np.array([[0]])):
        with pytest.raises(ValueError, match="drop must be"):
            train.retrain_without(model.apply, params, x, y, drop, **kw)
    with pytest.raises(TypeError, match="backend"):
        train.recommended_loop(model.apply, params, x, backend=0)
    with pytest.raises(ValueError, match="fails for x"):
        train.recommended_loop(model.apply, params, x[:, :2])
