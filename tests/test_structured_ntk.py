"""Scaling up: the structured empirical NTK and the segment-wise leave-one-out trajectory.

Both fast paths are checked against independent computations: the structured
NTK against the Jacobian contraction and an explicit ``J Jᵀ`` from
``jax.jacrev``; ``loo_trajectory`` against the literal step-by-step recursion
``E_{k+1} = E_k − (lr/n) Θ_k (E_k − Bdiag(E_k) − Bdiag(r_k))``.
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import effective_gram as eg
from gramlib import models, ntk
from tests.tolerance import assert_close, recursion_growth as growth


def explicit_ntk(f, params, x1, x2):
    """``J(x1) J(x2)ᵀ`` from full-batch ``jax.jacrev``, rows ordered (sample, output)."""

    @jax.jit
    def flat(x):
        jac = jax.jacrev(f)(params, x)
        rows = int(np.prod(jax.eval_shape(f, params, x).shape))
        return jnp.concatenate([leaf.reshape(rows, -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)

    return flat(x1) @ flat(x2).T


MODELS = {
    "mlp-ntk-bias": (lambda c: models.mlp(5, 12, 3, c, sigma_b=0.5, dtype=jnp.float64), (5,)),
    "mlp-standard-relu": (lambda c: models.mlp(5, 12, 2, c, activation="relu", parameterization="standard",
                                               dtype=jnp.float64), (5,)),
    "cnn-2d": (lambda c: models.cnn((5, 5, 2), 3, 3, c, sigma_b=0.3, dtype=jnp.float64), (5, 5, 2)),
    "cnn-1d-standard": (lambda c: models.cnn((9, 1), 4, 2, c, kernel_size=5, parameterization="standard",
                                             dtype=jnp.float64), (9, 1)),
}


@pytest.mark.parametrize("name,outputs", [("mlp-ntk-bias", 3), ("mlp-standard-relu", 1), ("cnn-2d", 3),
                                          ("cnn-1d-standard", 1)])
def test_structured_ntk_equals_explicit_jacobian(name, outputs):
    build, shape = MODELS[name]
    model = build(outputs)
    params = jax.tree_util.tree_map(lambda w: w + 0.1, model.init(jax.random.PRNGKey(0)))  # nonzero biases
    x1 = jax.random.normal(jax.random.PRNGKey(1), (7,) + shape)
    x2 = jax.random.normal(jax.random.PRNGKey(2), (5,) + shape)
    want = explicit_ntk(model.apply, params, x1, x2)
    assert np.abs(want).max() > 1e-2
    for kwargs in [{}, {"batch_size": 3}] if outputs > 1 else [{}]:  # tiles: once per kind of layer
        got = ntk.empirical_ntk(model.apply, params, x1, x2, **kwargs)
        assert_close(got, want, ravel_pytree(params)[0].size)  # an entry sums over the parameters


def test_structured_is_default_and_agrees_in_float32():
    model = models.mlp(16, 64, 2, 1)
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (40, 16), jnp.float32)
    fast = ntk.empirical_ntk(model.apply, params, x)
    slow = ntk.empirical_ntk(model.apply, params, x, method="jacobian")
    assert fast.dtype == jnp.float32
    assert_close(fast, slow, ravel_pytree(params)[0].size)  # float32: the dtype of the results sets the bound


def test_structured_method_works_on_plain_functions():
    # no attribute on f: the structure is found by tracing; an unknown method is refused
    with pytest.raises(ValueError, match="method"):
        ntk.empirical_ntk(lambda p, x: x @ p, jnp.ones(3), jnp.ones((2, 3)), method="fast")
    for method in ntk.METHODS:
        got = ntk.empirical_ntk(lambda p, x: x @ p, jnp.ones(3), jnp.ones((2, 3)), method=method)
        assert_close(got, 3 * np.ones((2, 2)), 3)


def step_by_step(thetas, residuals, lr, outputs):
    """The literal recursion for all twins at once, one ``O(N² n)`` product per step (reference)."""
    count, big_n = thetas.shape[:2]
    n, c = big_n // outputs, outputs
    steps = residuals.shape[0] - 1
    s = steps // count
    e = np.zeros((big_n, n))
    block = np.repeat(np.eye(n), c, axis=0)  # (N, n): 1 where row's sample == column
    for k in range(steps):
        th = thetas[min(k // s, count - 1)]
        drive = e - block * e - block * residuals[k][:, None]
        e = e - lr / n * th @ drive
    own = (e * block).sum(axis=1)
    return residuals[-1] + own


def two_time_step_by_step(jacobians, residuals, lr, outputs):
    """The two-time recursion literally: the twins' weight offsets ``δ`` step with ``J_k``, read out with ``J_T``.

    ``jacobians`` ``(K + 1, N, P)``: ``J_k`` for segment ``k`` and the final ``J_T``; per step
    ``E = J_k δ`` and ``δ ← δ − (lr/n) J_kᵀ (E − Bdiag(E) − Bdiag(r_t))`` (reference).
    """
    count, big_n = jacobians.shape[0] - 1, jacobians.shape[1]
    n, steps = big_n // outputs, residuals.shape[0] - 1
    s = steps // count
    block = np.repeat(np.eye(n), outputs, axis=0)
    delta = np.zeros((jacobians.shape[2], n))
    for t in range(steps):
        jac = jacobians[min(t // s, count - 1)]
        e = jac @ delta
        delta = delta - lr / n * jac.T @ (e - block * e - block * residuals[t][:, None])
    return residuals[-1] + (jacobians[-1] @ delta * block).sum(axis=1)


@pytest.mark.parametrize("outputs,count,steps", [(1, 4, 23), (3, 3, 17), (1, 1, 40), (2, 2, 45)])
def test_loo_trajectory_matches_step_by_step(outputs, count, steps):
    """Short segments, and segments longer than ``n`` (cut into chunks, ``trajectory.chunk_lengths``)."""
    rng = np.random.default_rng(outputs * 100 + steps)
    n = 9
    big_n = n * outputs
    thetas = []
    for _ in range(count):
        phi = rng.standard_normal((big_n, 2 * big_n)) / np.sqrt(2 * big_n)
        thetas.append(phi @ phi.T)
    thetas = np.stack(thetas)
    residuals = rng.standard_normal((steps + 1, big_n))
    lr = 1.3
    got = np.asarray(eg.loo_trajectory(thetas, residuals, lr, outputs=outputs).rho)
    want = step_by_step(thetas, residuals, lr, outputs)
    assert_close(got, want, steps * big_n, cond=growth(thetas, lr, n, steps))  # two orders of the same recursion
    assert np.abs(got - residuals[-1]).max() > 1e-3  # the twins moved


@pytest.mark.parametrize("outputs,count,steps", [(1, 3, 20), (2, 2, 45)])
def test_two_time_loo_trajectory_matches_step_by_step(outputs, count, steps):
    """``cross(k, l) = J_k J_lᵀ``: segments of ``s ≤ n`` steps, and of ``s > n`` steps cut into chunks."""
    rng = np.random.default_rng(7 * outputs + steps)
    n = 9
    big_n = n * outputs
    jacobians = rng.standard_normal((count + 1, big_n, 2 * big_n)) / np.sqrt(2 * big_n)
    thetas = np.einsum("knp,kmp->knm", jacobians[:-1], jacobians[:-1])
    residuals = rng.standard_normal((steps + 1, big_n))
    lr = 1.1
    got = np.asarray(eg.loo_trajectory(thetas, residuals, lr, outputs=outputs,
                                       cross=lambda k, l: jacobians[k] @ jacobians[l].T).rho)
    want = two_time_step_by_step(jacobians, residuals, lr, outputs)
    assert_close(got, want, steps * jacobians.shape[2], cond=growth(thetas, lr, n, steps))
    one_time = np.asarray(eg.loo_trajectory(thetas, residuals, lr, outputs=outputs).rho)
    assert np.abs(got - one_time).max() > 1e-3  # the rotation of the Jacobian matters here


def test_appendix_exercise_check(capsys):
    from gramlib.views.exercises import appendix

    def right(x, w, v):
        d, m = x.shape[1], w.shape[0]
        h = np.tanh(x @ w.T / np.sqrt(d))
        g = v * (1 - h**2) / np.sqrt(m)
        return (x @ x.T / d) * (g @ g.T) + h @ h.T / m

    assert appendix.check_two_layer_ntk(right)
    assert not appendix.check_two_layer_ntk(lambda x, w, v: right(x, w, v) * 1.01)
    assert not appendix.check_two_layer_ntk(lambda x, w, v: None)
    assert not appendix.check_two_layer_ntk(None)
    out = capsys.readouterr().out
    assert "✅" in out and "❌" in out and "Not answered" in out
