"""Chapter 7's two-time kernel ``Θ(t, s) = J(w_t) J(w_s)ᵀ`` and the trajectory prediction built on it.

Ground truths are computed in weight space with dense ``jax.jacrev`` Jacobians
and explicit loops: the leave-one-out twin of a real gradient-descent run,
linearized around that run with the Gauss–Newton Hessian,

    δ_{t+1} = δ_t − (η/n) J_tᵀ (P_{−i} J_t δ_t − e_i r_i(t)),    ρ_i = r_i(T) + J_i(w_T) δ_T,

with ``J_t`` the Jacobian at step ``t`` (or frozen at the snapshot that
starts its segment). No function-space formula of gramlib is involved.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gramlib import effective_gram as eg  # noqa: E402
from gramlib import models, ntk, predict, train  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from tests.tolerance import assert_close, tolerance  # noqa: E402

KEY = jax.random.PRNGKey(4)


def jacobian(apply, params, x):
    """Dense ``(n*C, P)`` Jacobian, rows ordered (sample, output), by ``jax.jacrev`` of the whole batch."""
    jac = jax.jacrev(lambda p: apply(p, x).reshape(-1))(params)
    return np.concatenate([np.asarray(leaf).reshape(jac_rows(apply, params, x), -1)
                           for leaf in jax.tree_util.tree_leaves(jac)], axis=1)


def jac_rows(apply, params, x):
    return int(np.prod(jax.eval_shape(apply, params, x).shape))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["structured", "jacobian"])
def test_cross_kernel_is_the_product_of_jacobians_at_two_weights(arch, method):
    if arch == "mlp":
        model = models.mlp(5, 7, depth=3, outputs=2, dtype=jnp.float64)
        x = jax.random.normal(KEY, (6, 5), jnp.float64)
    else:
        model = models.cnn((5, 5, 1), 3, 2, outputs=2, dtype=jnp.float64)
        x = jax.random.normal(KEY, (6, 5, 5, 1), jnp.float64)
    w1, w2 = model.init(jax.random.PRNGKey(1)), model.init(jax.random.PRNGKey(2))
    want = jacobian(model.apply, w1, x) @ jacobian(model.apply, w2, x).T
    got = ntk.empirical_ntk(model.apply, w1, x, params2=w2, method=method)
    size = ravel_pytree(w1)[0].size  # an entry sums over the parameters
    assert_close(got, want, size)
    tiled = ntk.empirical_ntk(model.apply, w1, x, x[:4], params2=w2, method=method, batch_size=4)
    assert_close(tiled, want[:, : 4 * 2], size, scale=np.abs(want).max())
    theta = ntk.two_time_kernel(model.apply, [w1, w2], x)
    assert_close(theta(0, 1), want, size)
    assert_close(theta(1, 0), want.T, size)
    assert_close(theta(1, 1), ntk.empirical_ntk(model.apply, w2, x), size)


def random_run(rng, k, n, outputs, steps):
    """Random PSD snapshots and residuals for the function-space recursion."""
    big_n = n * outputs
    thetas = []
    for _ in range(k):
        a = rng.standard_normal((big_n, big_n + 2))
        thetas.append(a @ a.T / big_n)
    return np.stack(thetas), rng.standard_normal((steps + 1, big_n))


@pytest.mark.parametrize("outputs", [1, 3])
def test_one_time_kernel_as_cross_reproduces_the_one_time_recursion(outputs):
    """``Θ(t_k, t_l) := Θ(t_l)`` re-reads every past force as it was written: the one-time result.

    This checks the forces ``A_l`` summed in each segment's eigenbasis (steps
    not divisible by ``K`` leave a longer last segment).
    """
    rng = np.random.default_rng(outputs)
    thetas, res = random_run(rng, 4, 6, outputs, 23)
    plain = np.asarray(eg.loo_trajectory(thetas, res, 0.3, outputs=outputs).rho)
    cross = np.asarray(eg.loo_trajectory(thetas, res, 0.3, outputs=outputs,
                                         cross=lambda k, l: thetas[l]).rho)
    assert_close(cross, plain, 23 * 6 * outputs)  # two orders of 23 steps over N rows


def weight_trajectory(apply, params, x, y, lr, steps):
    n = x.shape[0]
    loss = jax.jit(jax.grad(lambda p: 0.5 * jnp.sum((apply(p, x) - y) ** 2) / n))
    ws = [params]
    for _ in range(steps):
        g = loss(params)
        params = jax.tree_util.tree_map(lambda w, d: w - lr * d, params, g)
        ws.append(params)
    return ws


@pytest.mark.parametrize("outputs, every", [(1, 1), (1, 4), (2, 1), (2, 3)])
def test_two_time_prediction_is_the_gauss_newton_tangent_twin(outputs, every):
    n, steps, lr = 8, 24, 0.9
    model = models.mlp(3, 6, depth=2, outputs=outputs, dtype=jnp.float64)
    x = jax.random.normal(KEY, (n, 3), jnp.float64)
    y = jnp.sign(jax.random.normal(jax.random.PRNGKey(9), (n,) if outputs == 1 else (n, outputs)))
    params = model.init(jax.random.PRNGKey(3))
    run = train.gradient_descent(model.apply, params, x, y, lr=lr, steps=steps, snapshots=steps // every,
                                 progress=False)
    cross = ntk.two_time_kernel(model.apply, run.weights, x)
    got = np.asarray(eg.loo_trajectory(run.thetas, run.residuals, lr, outputs=outputs, cross=cross).rho)
    same, _, forces = eg.loo_trajectory(run.thetas, run.residuals, lr, outputs=outputs, cross=cross)
    np.testing.assert_array_equal(np.asarray(same), got)
    subset = np.array([5, 0, 3])
    read = predict.twin_readout(model.apply, run, x, forces, subset)

    ws = weight_trajectory(model.apply, params, x, y, lr, steps)
    jacs = [jacobian(model.apply, w, x) for w in ws]
    big_n, p = jacs[0].shape
    owner = np.repeat(np.arange(n), outputs)
    want = np.zeros(big_n)
    flat_end, unravel = ravel_pytree(ws[-1])
    f_end = np.asarray(model.apply(ws[-1], x)).reshape(n, outputs)
    want_read = np.zeros((n, outputs))
    for i in range(n):
        rows = owner == i
        keep = (~rows).astype(float)
        delta = np.zeros(p)
        for t in range(steps):
            jt = jacs[(t // every) * every]  # frozen at the snapshot that starts the segment
            force = -keep * (jt @ delta)
            force[rows] += run.residuals[t][rows]
            delta = delta + (lr / n) * jt.T @ force
        want[rows] = run.residuals[-1][rows] + jacs[-1][rows] @ delta
        moved = np.asarray(model.apply(unravel(flat_end + delta), x)).reshape(n, outputs)[i]  # f_i(w_T + δ)
        want_read[i] = run.residuals[-1][rows] + moved - f_end[i]
    size = steps * big_n * p  # each of the 24 steps sums over the rows and the parameters
    for a, b in zip(jax.tree_util.tree_leaves(ws[-1]), jax.tree_util.tree_leaves(run.params)):
        assert_close(a, b, size)  # the same run as gramlib.train
    assert_close(got, want, size)
    assert_close(read, want_read[subset, 0] if outputs == 1 else want_read[subset], size)
    linear = want.reshape(n, outputs)[subset]
    assert np.max(np.abs(want_read[subset] - linear)) > 1e-6  # the network's readout is not its linearization
    one = np.asarray(eg.loo_trajectory(run.thetas, run.residuals, lr, outputs=outputs).rho)
    assert np.max(np.abs(one - want)) > 1e3 * np.max(np.abs(got - want))  # the rotation of J matters


def relu_run(outputs, every, n=8, steps=24, lr=0.9):
    """A small ReLU network (depth 3), its run with a snapshot every ``every`` steps, and the forces."""
    model = models.mlp(3, 6, depth=3, outputs=outputs, activation="relu", dtype=jnp.float64)
    x = jax.random.normal(KEY, (n, 3), jnp.float64)
    y = jnp.sign(jax.random.normal(jax.random.PRNGKey(9), (n,) if outputs == 1 else (n, outputs)))
    params = model.init(jax.random.PRNGKey(3))
    run = train.gradient_descent(model.apply, params, x, y, lr=lr, steps=steps, snapshots=steps // every,
                                 progress=False)
    forces = eg.loo_trajectory(run.thetas, run.residuals, lr, outputs=outputs,
                               cross=ntk.two_time_kernel(model.apply, run.weights, x)).forces
    return model, x, y, params, run, forces


@pytest.mark.parametrize("outputs", [1, 2])
def test_relinearized_twin_with_a_snapshot_at_every_step_is_the_retrained_twin(outputs):
    """Euler's rule with ``K = T``: the remainder completes each Gauss–Newton step to the twin's real step."""
    model, x, y, params, run, forces = relu_run(outputs, every=1)
    subset = np.array([5, 0, 3])
    got = predict.twin_readout(model.apply, run, x, forces, subset, relinearize=True, rule="euler")
    want = train.retrain_without(model.apply, params, x, y, subset, lr=run.lr, steps=run.steps, progress=False)
    assert_close(got, want, run.steps * len(x) * outputs * ravel_pytree(params)[0].size)  # steps × rows × parameters
    first = predict.twin_readout(model.apply, run, x, forces, subset)
    assert np.max(np.abs(first - want)) > 1e-2  # the first-order twin is not the twin on this network


@pytest.mark.parametrize("outputs, every, rule", [(1, 4, "heun"), (1, 3, "euler"), (2, 4, "heun")])
def test_relinearized_twin_is_the_literal_weight_space_scheme(outputs, every, rule):
    """Both rules against the same scheme written in weight space with dense Jacobians and ``jax.grad``.

    Per segment ``k``: ``δ ← δ + (η/n) J_kᵀ (e_i r_i(t) − M_i J_k δ) − η s̄_k``, with
    ``s_k(δ) = ∇L_{∖i}(w_k + δ) − ∇L_{∖i}(w_k) − (1/n) J_kᵀ M_i J_k δ`` from the loss itself.
    """
    model, x, y, params, run, forces = relu_run(outputs, every)
    lr, n, steps = run.lr, len(x), run.steps
    ws = weight_trajectory(model.apply, params, x, y, lr, steps)
    flat = [ravel_pytree(w)[0] for w in ws]
    unravel = ravel_pytree(ws[0])[1]
    jacs = {t: jacobian(model.apply, ws[t], x) for t in range(0, steps + 1, every)}
    owner = np.repeat(np.arange(n), outputs)
    subset = np.array([6, 1])
    want = []
    for i in subset:
        keep = (owner != i).astype(float)
        loss = jax.grad(lambda v: 0.5 * jnp.sum(keep * (model.apply(unravel(v), x).reshape(-1)
                                                         - y.reshape(-1)) ** 2) / n)

        def remainder(t, delta):
            j = jacs[t]
            return np.asarray(loss(flat[t] + delta) - loss(flat[t])) - j.T @ (keep * (j @ delta)) / n

        def segment(t, delta, source):
            j = jacs[t]
            for u in range(t, t + every):
                force = -keep * (j @ delta)
                force[owner == i] += run.residuals[u][owner == i]
                delta = delta + (lr / n) * j.T @ force - lr * source
            return delta

        delta = np.zeros(len(flat[0]))
        for t in range(0, steps, every):
            source = remainder(t, delta)
            if rule == "heun":
                source = 0.5 * (source + remainder(t + every, segment(t, delta, source)))
            delta = segment(t, delta, source)
        want.append(np.asarray(model.apply(unravel(flat[-1] + delta), x)).reshape(n, outputs)[i]
                    - np.asarray(y).reshape(n, outputs)[i])
    want = np.array(want)
    got = predict.twin_readout(model.apply, run, x, forces, subset, relinearize=True, rule=rule)
    assert_close(got, want[:, 0] if outputs == 1 else want, steps * n * outputs * len(flat[0]))  # steps × rows × parameters


def test_bad_input_is_refused():
    rng = np.random.default_rng(0)
    thetas, res = random_run(rng, 2, 4, 1, 6)
    with pytest.raises(TypeError, match="cross"):
        eg.loo_trajectory(thetas, res, 0.5, cross=thetas)
    with pytest.raises(ValueError, match="cross"):
        eg.loo_trajectory(thetas, res, 0.5, cross=lambda k, l: thetas[l][:-1])
    with pytest.raises(ValueError, match="cross"):
        eg.loo_trajectory(thetas, res, 0.5, cross=lambda k, l: np.full((4, 4), np.nan))
    assert eg.loo_trajectory(thetas, res, 0.5).forces is None  # the one-time kernel has no weight offsets


def test_twin_readout_refuses_bad_input():
    model = models.mlp(3, 4, depth=2, dtype=jnp.float64)
    x = jax.random.normal(KEY, (5, 3), jnp.float64)
    run = train.gradient_descent(model.apply, model.init(KEY), x, jnp.ones(5), lr=0.5, steps=4, snapshots=2,
                                 progress=False)
    forces = np.zeros((2, 5, 5))
    with pytest.raises(ValueError, match="forces"):
        predict.twin_readout(model.apply, run, x, forces[:1], [0])
    with pytest.raises(ValueError, match="forces"):
        predict.twin_readout(model.apply, run, x, np.full((2, 5, 5), np.nan), [0])
    with pytest.raises(ValueError, match="subset"):
        predict.twin_readout(model.apply, run, x, forces, [5])
    with pytest.raises(ValueError, match="x must hold"):
        predict.twin_readout(model.apply, run, x[:4], forces, [0])
    with pytest.raises(ValueError, match="rule must be"):
        predict.twin_readout(model.apply, run, x, forces, [0], relinearize=True, rule="midpoint")
    no_snapshots = run._replace(weights=())
    with pytest.raises(ValueError, match="snapshot weights"):
        predict.twin_readout(model.apply, no_snapshots, x, forces, [0])
    model = models.mlp(3, 4, dtype=jnp.float64)
    w = model.init(KEY)
    x = jnp.ones((5, 3))
    with pytest.raises(ValueError, match="k must index"):
        ntk.two_time_kernel(model.apply, [w], x)(1, 0)
    with pytest.raises(ValueError, match="weights"):
        ntk.two_time_kernel(model.apply, [], x)
    with pytest.raises(TypeError, match="function"):
        ntk.two_time_kernel(None, [w], x)
    with pytest.raises(ValueError, match="params2"):
        ntk.empirical_ntk(model.apply, w, x, params2=models.mlp(3, 5, dtype=jnp.float64).init(KEY))
