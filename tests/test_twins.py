"""Tests for gramlib.twins: HVP contraction vs dense Hessian, twins vs brute-force GD, bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gramlib import models, twins
from gramlib.views.exercises import ch02
from tests.tolerance import assert_close, tolerance


def linear_apply(params, x):
    return x @ params["w"]


@pytest.fixture(scope="module")
def tiny():
    model = models.mlp(3, 5, 2, dtype=jnp.float64)  # 3*5 + 5 + 5 + 1 = 26 parameters
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 3))
    y = np.sign(x[:, 0] + 0.3)
    return model, params, x, y


@pytest.mark.parametrize("i", [0, 4, None])
def test_rayleigh_quotient_matches_dense_hessian(tiny, i):
    model, params, x, y = tiny
    theta, unravel = ravel_pytree(params)
    assert theta.size <= 50
    weights = jnp.ones(9) if i is None else jnp.ones(9).at[i].set(0.0)
    dense = jax.jit(jax.hessian(twins.flat_loss(model.apply, unravel, x, y, weights, 9)))(theta)
    for seed in range(3):
        v = np.random.default_rng(seed).normal(size=theta.size)
        expected = v @ np.asarray(dense) @ v / (v @ v)
        got = float(twins.rayleigh_quotient(model.apply, params, x, y, i, v))
        # a Hessian-vector product against the dense Hessian: sums over the parameters and the 9 samples
        assert abs(got - expected) <= tolerance(np.float64, 9 * theta.size) * max(1.0, abs(expected))


def brute_force_twins(x, y, i, lr, steps, x_new=None, y_new=None):
    """Numpy gradient descent for f(x) = x·w and the book's squared loss."""
    n, d = x.shape
    w = np.zeros(d)
    u = np.zeros(d)
    xt, yt = x.copy(), y.copy()
    weights = np.ones(n)
    if x_new is None:
        weights[i] = 0.0
    else:
        xt[i], yt[i] = x_new, y_new
    shared = np.ones(n)
    shared[i] = 0.0
    h_shared = (x * shared[:, None]).T @ x / n
    out = []
    for _ in range(steps):
        w = w - lr * x.T @ (x @ w - y) / n
        u = u - lr * xt.T @ (weights * (xt @ u - yt)) / n
        delta = u - w
        p = x[i] * (x[i] @ w - y[i]) / n
        if x_new is not None:
            p = p - x_new * (x_new @ u - y_new) / n
        out.append(dict(delta=delta, rayleigh=delta @ h_shared @ delta / (delta @ delta),
                        perturbation_norm=np.linalg.norm(p),
                        perturbation_along=p @ delta / np.linalg.norm(delta),
                        loss_w=0.5 * (x[i] @ w - y[i]) ** 2, loss_u=0.5 * (x[i] @ u - y[i]) ** 2))
    return out


@pytest.mark.parametrize("replace", [False, True])
def test_twins_match_brute_force_on_a_linear_model(replace):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4))
    y = x @ rng.normal(size=4) + 0.3 * rng.normal(size=8)
    x_new, y_new = rng.normal(size=4), 0.7
    record = [1, 3, 10, 40]
    rep = (x_new, y_new) if replace else None
    rec = twins.twin_trajectories(linear_apply, {"w": jnp.zeros(4)}, x, y, 2, lr=0.3,
                                  record_at=record, replacement=rep)
    ref = brute_force_twins(x, y, 2, 0.3, 40, *(rep or (None, None)))
    for k, step in enumerate(record):
        want = ref[step - 1]
        rule = tolerance(np.float64, step * 8 * 4)  # step steps of sums over 8 samples and 4 weights
        assert_close(rec.delta[k], want["delta"], step * 8 * 4)
        for field in ("rayleigh", "perturbation_norm", "perturbation_along", "loss_w", "loss_u"):
            np.testing.assert_allclose(getattr(rec, field)[k], want[field], rtol=rule)
    # quadratic loss: the secant contraction is the Rayleigh quotient exactly
    np.testing.assert_allclose(rec.secant, rec.rayleigh, rtol=tolerance(np.float64, 40 * 8 * 4))
    np.testing.assert_allclose(rec.delta_norm, np.linalg.norm(rec.delta, axis=1), rtol=tolerance(np.float64, 4))


def test_weighted_loss_and_gradient_step_match_closed_forms():
    """``(1/2n) Σ m_j (x_j·w − y_j)²`` and one step ``w − η Xᵀ diag(m) (Xw − y) / n`` of the linear model."""
    rng = np.random.default_rng(4)
    x, y, w = rng.normal(size=(7, 3)), rng.normal(size=7), rng.normal(size=3)
    m = np.ones(7)
    m[2] = 0.0  # the leave-one-out twin of sample 2, normalized by n = 7
    value, r = twins.weighted_loss(linear_apply, {"w": jnp.asarray(w)}, x, y, m)
    size = 7 * 3  # 7 samples, 3 weights (or 3 × 2 with two outputs)
    assert_close(r, x @ w - y, size)
    assert value == pytest.approx(0.5 * np.sum(m * (x @ w - y) ** 2) / 7, rel=tolerance(np.float64, size))
    new, r, g = twins.gradient_step(linear_apply, {"w": jnp.asarray(w)}, x, y, m, 0.3)
    want_g = x.T @ (m * (x @ w - y)) / 7
    assert_close(g["w"], want_g, size)
    assert_close(new["w"], w - 0.3 * want_g, size)
    assert_close(r, x @ w - y, size)
    # C = 2 outputs: residuals stacked (sample, output); a flat parameter vector works the same way
    W, Y = rng.normal(size=(3, 2)), rng.normal(size=(7, 2))
    flat = lambda theta, xs: xs @ theta.reshape(3, 2)  # noqa: E731
    value, r = twins.weighted_loss(flat, jnp.asarray(W.ravel()), x, Y, m)
    assert_close(r, (x @ W - Y).ravel(), 2 * size)
    assert value == pytest.approx(0.5 * np.sum(m[:, None] * (x @ W - Y) ** 2) / 7, rel=tolerance(np.float64, 2 * size))
    with pytest.raises(ValueError, match="one row per sample"):
        twins.weighted_loss(linear_apply, {"w": jnp.asarray(w)}, x, y, m[:-1])
    with pytest.raises(ValueError, match="one row per sample"):
        twins.weighted_loss(linear_apply, {"w": jnp.asarray(w)}, x, y[:-1], m)
    with pytest.raises(ValueError, match="expected the shape"):
        twins.weighted_loss(linear_apply, {"w": jnp.asarray(w)}, x, y[:, None], m)
    with pytest.raises(ValueError, match="lr"):
        twins.gradient_step(linear_apply, {"w": jnp.asarray(w)}, x, y, m, -0.1)


def test_perturbation_equation_error_is_second_order(tiny):
    """One step from the recorded state: δ_{k+1} − δ_k = η(−H_{−i}δ + p) + O(‖δ‖²) for the MLP."""
    model, params, x, y = tiny
    rec = twins.twin_trajectories(model.apply, params, x, y, 3, lr=0.2, record_at=[1, 2, 3, 4, 5])
    gap = np.abs(rec.secant - rec.rayleigh)  # the O(‖δ‖) relative linearization error
    rounding = tolerance(np.float64, 5 * 9 * ravel_pytree(params)[0].size) * np.abs(rec.rayleigh).max()
    assert np.all(gap <= 2.0 * rec.delta_norm * np.abs(rec.rayleigh).max() + rounding)
    assert gap[0] < gap[-1]  # grows with ‖δ‖ as δ grows from 0


def test_many_twins_equal_single_twins(tiny):
    model, params, x, y = tiny
    rng = np.random.default_rng(2)
    xs = np.stack([x, x + 0.1 * rng.normal(size=x.shape)])
    ys = np.stack([y, -y])
    idx = np.array([1, 5])
    new = (rng.normal(size=(2, 3)), np.array([1.0, -1.0]))
    many = twins.many_twin_trajectories(model.apply, params, xs, ys, idx, lr=0.5, record_at=[2, 7],
                                        replacement=new)
    for b in range(2):
        one = twins.twin_trajectories(model.apply, params, xs[b], ys[b], int(idx[b]), lr=0.5,
                                      record_at=[2, 7], replacement=(new[0][b], new[1][b]))
        size = 7 * 9 * ravel_pytree(params)[0].size  # 7 steps of sums over 9 samples and the parameters
        assert_close(many.delta[b], one.delta, size)
        np.testing.assert_allclose(many.rayleigh[b], one.rayleigh, rtol=tolerance(np.float64, size))


def test_multi_output_model():
    """C = 2 outputs, f(x) = x W: the perturbation (1/n)∇ℓ(w; z_i) = x_i ⊗ r_i / n in closed form."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    w0 = 0.1 * rng.normal(size=(3, 2))
    rec = twins.twin_trajectories(linear_apply, {"w": jnp.asarray(w0)}, x, y, 0, lr=0.5, record_at=[1, 5])
    w1 = w0 - 0.5 * x.T @ (x @ w0 - y) / 6  # the record at step 1 is taken at w_1
    expected = np.linalg.norm(np.outer(x[0], x[0] @ w1 - y[0])) / 6
    np.testing.assert_allclose(rec.perturbation_norm[0], expected, rtol=tolerance(np.float64, 6 * 3 * 2))


def test_bad_inputs_raise(tiny):
    model, params, x, y = tiny
    kw = dict(lr=0.1, record_at=[1, 2])
    bad_x = x.copy()
    bad_x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains"):
        twins.twin_trajectories(model.apply, params, bad_x, y, 0, **kw)
    with pytest.raises(ValueError, match="i must be"):
        twins.twin_trajectories(model.apply, params, x, y, 9, **kw)
    with pytest.raises(ValueError, match="record_at"):
        twins.twin_trajectories(model.apply, params, x, y, 0, lr=0.1, record_at=[3, 2])
    with pytest.raises(ValueError, match="record_at"):
        twins.twin_trajectories(model.apply, params, x, y, 0, lr=0.1, record_at=[0, 2])
    with pytest.raises(ValueError, match="lr"):
        twins.twin_trajectories(model.apply, params, x, y, 0, lr=-1.0, record_at=[1])
    with pytest.raises(ValueError, match="same leading"):
        twins.twin_trajectories(model.apply, params, x, y[:-1], 0, **kw)
    with pytest.raises(ValueError, match="x_new"):
        twins.twin_trajectories(model.apply, params, x, y, 0, replacement=(np.ones(4), 1.0), **kw)
    with pytest.raises(TypeError, match="replacement"):
        twins.twin_trajectories(model.apply, params, x, y, 0, replacement=np.ones(3), **kw)
    with pytest.raises(ValueError, match="shape"):
        twins.rayleigh_quotient(model.apply, params, x, y, 0, np.ones(3))
    with pytest.raises(ValueError, match="every i"):
        twins.many_twin_trajectories(model.apply, params, x[None], y[None], np.array([12]), **kw)


def test_exercise_check_rayleigh(tiny, capsys):
    def right(apply, params, x, y, i, v):
        return twins.rayleigh_quotient(apply, params, x, y, i, v)

    def wrong(apply, params, x, y, i, v):  # full-data Hessian instead of H_{-i}
        return twins.rayleigh_quotient(apply, params, x, y, None, v)

    assert ch02.check_rayleigh_quotient(right)
    assert not ch02.check_rayleigh_quotient(wrong)
    assert not ch02.check_rayleigh_quotient(None)
    out = capsys.readouterr().out
    assert "✅" in out and "❌" in out and "Not answered" in out
