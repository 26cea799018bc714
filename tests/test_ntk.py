"""Chapter 4: the empirical NTK against an explicit J Jᵀ, and the linearized residual dynamics."""

from functools import partial

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import kernel_flow, models, ntk
from tests.tolerance import assert_close, cond


def tiny_cnn(outputs):
    """conv 3×3 (4 channels, tanh) → global average pool → dense: enough to exercise a CNN."""

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"conv": jax.random.normal(k1, (3, 3, 1, 4), jnp.float64) / 3.0,
                "bias": jnp.linspace(-0.2, 0.2, 4),
                "dense": jax.random.normal(k2, (4, outputs), jnp.float64) / 2.0}

    def apply(params, x):
        h = jax.lax.conv_general_dilated(x[..., None], params["conv"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jnp.tanh(h + params["bias"]).mean(axis=(1, 2))
        out = h @ params["dense"]
        return out[:, 0] if outputs == 1 else out

    return models.Model(init, apply)


def explicit_ntk(f, params, x):
    """J(x) J(x)ᵀ with the full-batch Jacobian from jax.jacrev, rows (sample, output)."""

    @jax.jit
    def gram(params, x):
        jac = jax.jacrev(f)(params, x)
        rows = int(np.prod(jax.eval_shape(f, params, x).shape))
        flat = jnp.concatenate([leaf.reshape(rows, -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)
        return flat @ flat.T

    return gram(params, x)


def model_and_inputs(kind, outputs):
    key = jax.random.PRNGKey(0)
    if kind == "mlp":
        model = models.mlp(5, width=16, depth=3, outputs=outputs, sigma_b=0.5, dtype=jnp.float64)
        x1 = jax.random.normal(key, (7, 5))
        x2 = jax.random.normal(jax.random.PRNGKey(1), (5, 5))
    else:
        model = tiny_cnn(outputs)
        x1 = jax.random.normal(key, (7, 6, 6))
        x2 = jax.random.normal(jax.random.PRNGKey(1), (5, 6, 6))
    return model.apply, model.init(jax.random.PRNGKey(2)), x1, x2


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("outputs", [1, 3])
def test_empirical_ntk_matches_explicit_jacobian(kind, outputs):
    f, params, x1, x2 = model_and_inputs(kind, outputs)
    want = explicit_ntk(f, params, jnp.concatenate([x1, x2]))  # blocks: (x1, x1) and (x1, x2)
    rows = 7 * outputs
    got_11 = ntk.empirical_ntk(f, params, x1)
    got_12 = ntk.empirical_ntk(f, params, x1, x2, batch_size=3)  # 3 divides neither 7 nor 5
    assert got_11.shape == (rows, rows) and got_12.shape == (rows, 5 * outputs)
    assert got_11.dtype == jnp.float64
    size = ravel_pytree(params)[0].size  # each entry sums over the parameters
    scale = np.abs(want).max()
    assert_close(got_11, want[:rows, :rows], size, scale=scale)
    assert_close(got_12, want[:rows, rows:], size, scale=scale)
    assert np.abs(want[:rows, rows:]).max() > 1e-2


def test_empirical_ntk_float32_follows_inputs():
    model = models.mlp(4, width=8, depth=2)
    params = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((3, 4), jnp.float32)
    assert ntk.empirical_ntk(model.apply, params, x).dtype == jnp.float32


def test_kernel_residuals_flow_and_descent():
    rng = np.random.default_rng(0)
    jac = rng.standard_normal((12, 20)) / 4
    theta, r0, n = jac @ jac.T, rng.standard_normal(12), 6  # 2 outputs
    got = kernel_flow.kernel_residuals(theta, r0, [0.0, 2.5, np.inf], outputs=2)
    assert_close(got[0], r0, 12)  # t = 0: U Uᵀ r0, 12 terms
    r, h = r0.copy(), 2.5 / 500  # RK4 on ṙ = −(1/n) Θ r
    for _ in range(500):
        k1 = -theta @ r / n
        k2 = -theta @ (r + h / 2 * k1) / n
        k3 = -theta @ (r + h / 2 * k2) / n
        k4 = -theta @ (r + h * k3) / n
        r = r + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    np.testing.assert_allclose(got[1], r, atol=1e-11)  # RK4 at h λ_max / n ≈ 2e-3: error O((hλ/n)⁴ t) ≈ 1e-12
    assert_close(got[2], 0.0, 12, cond=cond(theta), scale=np.abs(r0).max())  # Θ invertible: interpolation
    r = r0.copy()
    for _ in range(5):
        r = r - 0.7 / n * theta @ r
    assert_close(kernel_flow.kernel_residuals(theta, r0, 5, outputs=2, lr=0.7), r, 5 * 12, cond=cond(theta))


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda f, p, x: ntk.empirical_ntk(f, p, x[:0]), "x1"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x, x[:, :2]), "x2"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x.at[0, 0].set(jnp.nan)), "x1"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x, batch_size=0), "batch_size"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x, method="magic"), "method"),
        (lambda f, p, x: kernel_flow.kernel_residuals(np.eye(4), np.ones(4), -1.0), "t"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x[:, :3]), "x1"),  # wrong width, x2 = x1
        (lambda f, p, x: ntk.empirical_ntk(f, p, x[:, :3], x[:, :3]), "x1"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x, jnp.ones((4, 6))), "x2"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x, x.at[1, 2].set(jnp.nan)), "x2"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x, params2=p[:1]), "params2"),
        (lambda f, p, x: ntk.empirical_ntk(f, p, x, params2=[p[0], {**p[1], "w": p[1]["w"][:4]}]),
         r"params2\[1\]\['w'\] must have the shape \(8, 1\)"),
        (lambda f, p, x: ntk.two_time_kernel(f, [p], x[:, :3]), "x"),
        (lambda f, p, x: ntk.two_time_kernel(f, [p], x.at[0, 0].set(jnp.inf)), "x"),
        (lambda f, p, x: ntk.two_time_kernel(f, [p, p[:1]], x), r"weights\[1\]"),
        (lambda f, p, x: ntk.two_time_kernel(f, [], x), "weights"),
        (lambda f, p, x: ntk.two_time_kernel(f, [p], x)(0, 1), "l"),
    ],
)
def test_bad_inputs(call, name):
    model = models.mlp(5, width=8, depth=2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=name):
        call(model.apply, params, jnp.ones((4, 5)))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda p, x: ntk.empirical_ntk(None, p, x), "f must be a function"),
        (lambda p, x: ntk.empirical_ntk(np.eye(3), p, x), "f must be a function"),
        (lambda p, x: ntk.two_time_kernel("apply", [p], x), "f must be a function"),
        (lambda p, x: ntk.empirical_ntk(lambda w, z: z, p, "x"), "x1 must be an array"),
        (lambda p, x: ntk.empirical_ntk(lambda w, z: z, p, x, batch_size=2.5), "batch_size"),
        (lambda p, x: ntk.empirical_ntk(lambda w, z: z, p, x, params2=[p[0], {**p[1], "w": "w"}]),
         r"params2\[1\]\['w'\]"),
    ],
)
def test_bad_types(call, message):
    params = models.mlp(5, width=8, depth=2, dtype=jnp.float64).init(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match=message):
        call(params, jnp.ones((4, 5)))


def test_chapter4_exercise_checks(capsys):
    from gramlib.views.exercises import ch04

    def right(theta, r0, t):
        lam, u = np.linalg.eigh(theta)
        return u @ (np.exp(-lam * t / len(r0)) * (u.T @ r0))

    def wrong(theta, r0, t):  # forgets the 1/n
        lam, u = np.linalg.eigh(theta)
        return u @ (np.exp(-lam * t) * (u.T @ r0))

    @partial(jax.jit, static_argnums=0)  # one compilation instead of many eager operations
    def my_ntk(apply, params, x):
        jac = jax.jacrev(apply)(params, x)
        flat = jnp.concatenate([leaf.reshape(x.shape[0], -1) for leaf in jax.tree_util.tree_leaves(jac)], 1)
        return flat @ flat.T

    assert ch04.check_kernel_residuals(right)
    assert not ch04.check_kernel_residuals(wrong)
    assert not ch04.check_kernel_residuals(None)
    assert ch04.check_empirical_ntk(my_ntk)
    assert not ch04.check_empirical_ntk(lambda apply, params, x: 2 * my_ntk(apply, params, x))
    def first_order(theta, r0, t, weight=None):
        n, h = len(r0), 0.01
        rhs = lambda r, e: (-theta @ r / (weight or n), -theta @ (e - np.diag(r)) / (weight or n))  # noqa: E731
        r, e = np.array(r0, float), np.zeros((n, n))
        for _ in range(int(round(t / h))):
            k1 = rhs(r, e)
            k2 = rhs(r + h / 2 * k1[0], e + h / 2 * k1[1])
            k3 = rhs(r + h / 2 * k2[0], e + h / 2 * k2[1])
            k4 = rhs(r + h * k3[0], e + h * k3[1])
            r, e = r + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]), e + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        return r + np.diag(e)

    assert ch04.check_first_order(first_order)
    assert not ch04.check_first_order(lambda theta, r0, t: first_order(theta, r0, t, len(r0) - 1))
    assert "Not answered" in capsys.readouterr().out


@pytest.mark.parametrize("lr", [None, 1.3])
def test_kernel_test_residuals(lr):
    """Random features f(x) = φ(x)·w trained in parameter space; test points include the training set."""
    rng = np.random.default_rng(3)
    phi, phi_test = rng.standard_normal((10, 6)) / 2, rng.standard_normal((4, 6)) / 2  # p < n: Θ singular
    y, y_test, w0 = rng.standard_normal(10), rng.standard_normal(4), rng.standard_normal(6)
    n, times = 10, np.array([0.0, 3.0, 50.0, np.inf])
    hess, grad0 = phi.T @ phi / n, phi.T @ (phi @ w0 - y) / n
    g, v = np.linalg.eigh(hess)
    want = []
    for t in times:
        if np.isinf(t):
            gain = 1 / g
        elif lr is None:
            gain = -np.expm1(-g * t) / g
        else:
            gain = (1 - (1 - lr * g) ** t) / g
        want.append(phi_test @ (w0 - v @ (gain * (v.T @ grad0))) - y_test)
    theta = phi @ phi.T
    got = kernel_flow.kernel_test_residuals(theta, phi_test @ phi.T, phi @ w0 - y, phi_test @ w0 - y_test, times, lr=lr)
    # weight space (p = 6) against function space (n = 10), on the range of the singular Θ
    assert_close(got, np.array(want), 60, cond=cond(theta))
    same = kernel_flow.kernel_test_residuals(theta, theta, phi @ w0 - y, phi @ w0 - y, times, lr=lr)
    assert_close(same, kernel_flow.kernel_residuals(theta, phi @ w0 - y, times, lr=lr), 60, cond=cond(theta))
