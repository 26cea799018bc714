"""A reader's own network in gramlib: a Flax ``linen`` CNN, a Flax ``nnx`` CNN and an Equinox MLP.

Each library's model goes through gramlib by a three-line adapter ``apply(params, x)`` plus a tree
of arrays (the book's page "Bring your own network", chapters/appendix_your_network.ipynb). For each,
the tests check against computations that do not go through gramlib or the library:

* the empirical NTK equals the contraction of full-batch ``jax.jacrev`` Jacobians;
* one step of :func:`gramlib.gradient_descent` equals ``w − η ∇L_S(w)`` written with ``jax.grad``,
  and a short run lowers the training loss;
* the leave-one-out prediction of :func:`gramlib.predict_test_loss` equals the one of the same
  network written as a plain JAX function with the same weights.
"""

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib import (data, empirical_ntk, gradient_descent, models, predict_test_loss, residual_loss,
                     trajectory_loo, two_time_kernel)
from gramlib.predict import held_out_loss
from tests.test_traced_ntk import explicit_ntk, terms
from tests.tolerance import assert_close, recursion_growth, tolerance

eqx = pytest.importorskip("equinox")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

F64 = jnp.float64
CHANNELS, WIDTH, N = 2, 8, 10
STEPS, SNAPSHOTS = 12, 4


@lru_cache
def digits(flatten):
    """The first ``N`` training digits (parity targets ±1), images ``(N, 8, 8)`` or vectors ``(N, 64)``."""
    return data.digits(N, 20, key=jax.random.PRNGKey(0), flatten=flatten)


# ----------------------------------------------------------------------------- the readers' networks

class LinenCNN(nn.Module):
    """A Flax linen CNN: 3×3 convolution, tanh, dense read-out to one output per image."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(CHANNELS, (3, 3), dtype=F64, param_dtype=F64, name="conv")(x[..., None]))
        return nn.Dense(1, dtype=F64, param_dtype=F64, name="dense")(h.reshape(h.shape[0], -1))[:, 0]


class NnxCNN(nnx.Module):
    """The same CNN in Flax nnx."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, CHANNELS, (3, 3), dtype=F64, param_dtype=F64, rngs=rngs)
        self.dense = nnx.Linear(64 * CHANNELS, 1, dtype=F64, param_dtype=F64, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.conv(x[..., None]))
        return self.dense(h.reshape(h.shape[0], -1))[:, 0]


def plain_cnn(p, x):
    """The CNN as a plain function of ``{"conv": {kernel, bias}, "dense": {kernel, bias}}`` (HWIO, SAME)."""
    z = jax.lax.conv_general_dilated(x[..., None], p["conv"]["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(z + p["conv"]["bias"])
    return (h.reshape(h.shape[0], -1) @ p["dense"]["kernel"] + p["dense"]["bias"])[:, 0]


def plain_mlp(p, x):
    """Equinox's MLP (``weight`` ``(out, in)``) as a plain function of ``[(W0, b0), (W1, b1)]``."""
    (w0, b0), (w1, b1) = p
    return jnp.tanh(x @ w0.T + b0) @ w1[0] + b1[0]


def step_size(apply, params, x):
    """``η = n / λ_max(Θ_0)``, half the largest stable step of the linearized network (Chapter 4)."""
    return float(len(x) / np.linalg.eigvalsh(np.asarray(empirical_ntk(apply, params, x)))[-1])


@lru_cache
def network(library):
    """``(apply, params, plain_params, plain_apply, flatten)``: the adapter, and the plain function's weights.

    Cached, so that every test sees the same ``apply`` and reuses what gramlib compiled for it.
    """
    key = jax.random.PRNGKey(1)
    if library == "linen":
        model = LinenCNN()
        params = model.init(key, jnp.zeros((1, 8, 8), F64))
        apply = lambda p, x: model.apply(p, x)  # noqa: E731  (the adapter)
        return apply, params, params["params"], plain_cnn, False
    if library == "nnx":
        graphdef, state = nnx.split(NnxCNN(nnx.Rngs(1)))
        apply = lambda s, x: nnx.merge(graphdef, s)(x)  # noqa: E731  (the adapter)
        return apply, state, nnx.to_pure_dict(state), plain_cnn, False
    mlp = eqx.nn.MLP(64, "scalar", WIDTH, 1, activation=jnp.tanh, key=key, dtype=F64)
    params, static = eqx.partition(mlp, eqx.is_array)
    apply = lambda p, x: jax.vmap(eqx.combine(p, static))(x)  # noqa: E731  (the adapter)
    plain = [(layer.weight, layer.bias) for layer in mlp.layers]
    return apply, params, plain, plain_mlp, True


LIBRARIES = ["linen", "nnx", "equinox"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_plain_function_is_the_same_network(library):
    apply, params, plain, plain_apply, flatten = network(library)
    x = digits(flatten).x_train
    out = apply(params, x)
    assert out.shape == (N,) and out.dtype == F64
    # one forward pass in two orders of the same sums: the largest is the dense read-out over its inputs
    assert_close(out, plain_apply(plain, x), terms(params))


# ----------------------------------------------------------------------------- empirical NTK

@pytest.mark.parametrize("library", LIBRARIES)
def test_empirical_ntk_equals_the_jacobian_contraction(library):
    apply, params, _, _, flatten = network(library)
    ds = digits(flatten)
    x1, x2 = ds.x_train, ds.x_test[:7]
    got = empirical_ntk(apply, params, x1)
    assert got.shape == (N, N) and got.dtype == F64
    assert_close(got, explicit_ntk(apply, params, x1, x1), terms(params))  # an entry sums over the parameters
    cross = empirical_ntk(apply, params, x1, x2)
    assert cross.shape == (N, 7)
    assert_close(cross, explicit_ntk(apply, params, x1, x2), terms(params))


class NnxDropoutCNN(NnxCNN):
    """The nnx CNN with a dropout layer: its state holds the layer's PRNG key and counter."""

    def __init__(self, rngs):
        super().__init__(rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        h = self.drop(jnp.tanh(self.conv(x[..., None])))
        return self.dense(h.reshape(h.shape[0], -1))[:, 0]


def test_random_state_is_refused_by_name_and_split_off():
    """A PRNG key among the parameters is named in the error; nnx.split(model, nnx.Param, ...) leaves it out."""
    model = NnxDropoutCNN(nnx.Rngs(1))
    model.eval()  # dropout off: the network is deterministic, but its state still holds the key
    x = digits(False).x_train
    graphdef, state = nnx.split(model)
    with pytest.raises(TypeError, match=r"params\['drop'\].*is a PRNG key.*nnx\.split\(model, nnx\.Param"):
        empirical_ntk(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    with pytest.raises(TypeError, match=r"params\['drop'\].*is a PRNG key"):
        gradient_descent(lambda s, x: nnx.merge(graphdef, s)(x), state, x, digits(False).y_train, lr=0.1, steps=1,
                         progress=False)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    apply = lambda p, x: nnx.merge(graphdef, p, rest)(x)  # noqa: E731  (the page's adapter)
    assert_close(empirical_ntk(apply, params, x), explicit_ntk(apply, params, x, x), terms(params))


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("library", LIBRARIES)
def test_gradient_descent_is_the_hand_written_step(library):
    apply, params, _, _, flatten = network(library)
    ds = digits(flatten)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    lr = step_size(apply, params, x)

    def loss(p):
        return 0.5 * jnp.mean((apply(p, x) - y) ** 2)  # L_S(w) = (1/2n) Σ_i (f(x_i; w) − y_i)²

    want = jax.tree_util.tree_map(lambda w, g: w - lr * g, params, jax.grad(loss)(params))
    one = gradient_descent(apply, params, x, y, lr=lr, steps=1, progress=False)
    assert jax.tree_util.tree_structure(one.params) == jax.tree_util.tree_structure(params)
    for got, w in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(want)):
        # a gradient entry sums over the samples and the units it feeds: at most n · P terms
        assert_close(got, w, N * terms(params))
    run = gradient_descent(apply, params, x, y, lr=lr, steps=STEPS, snapshots=SNAPSHOTS, progress=False)
    assert run.train_loss[0] == pytest.approx(float(loss(params)), rel=tolerance(F64, N))
    assert np.all(np.diff(run.train_loss) < 0), run.train_loss  # a small step: the loss falls at every step
    assert run.train_loss[-1] < 0.9 * run.train_loss[0], run.train_loss


# ----------------------------------------------------------------------------- leave-one-out prediction

def loo_prediction(apply, params, ds, lr):
    """The run, its leave-one-out residuals ``ρ(T)`` (two-time kernel) and the held-out loss (Chapter 7)."""
    run = gradient_descent(apply, params, ds.x_train, ds.y_train, lr=lr, steps=STEPS, snapshots=SNAPSHOTS,
                           progress=False)
    rho = trajectory_loo(run, cross=two_time_kernel(apply, run.weights, ds.x_train)).rho
    return run, rho, held_out_loss(apply, run.params, ds.x_test, ds.y_test)


@pytest.mark.parametrize("library", LIBRARIES)
def test_loo_prediction_equals_the_plain_function(library):
    apply, params, plain, plain_apply, flatten = network(library)
    ds = digits(flatten)
    lr = step_size(plain_apply, plain, ds.x_train)
    run, rho, held_out = loo_prediction(apply, params, ds, lr)
    run0, rho0, held_out0 = loo_prediction(plain_apply, plain, ds, lr)
    assert rho.shape == (N,) and np.all(np.isfinite(rho))
    # the two runs differ by the rounding of their forward passes (steps × parameters), which each
    # gradient step I − (η/n)Θ_k may amplify (recursion_growth)
    size = STEPS * terms(params)
    growth = recursion_growth(run0.thetas, lr, N, STEPS)
    assert_close(run.residuals, run0.residuals, size, cond=growth)
    assert_close(run.thetas, run0.thetas, size, cond=growth)
    assert_close(rho, rho0, size * N, cond=growth)  # the twins' recursion adds steps × n terms
    assert held_out == pytest.approx(held_out0, rel=tolerance(F64, size, cond=growth))
    predicted = residual_loss(rho, N)  # (1/2n) Σ ρ_i², the predicted test loss
    assert predicted == pytest.approx(residual_loss(rho0, N), rel=tolerance(F64, size * N, cond=growth))
    assert predicted > run.train_loss[-1]  # the left-out samples are fitted worse than the training set


def test_one_call_prediction_takes_an_initialized_network():
    """predict_test_loss takes a Model(init, apply); a reader's network is initialized already."""
    apply, params, _, _, flatten = network("equinox")
    ds = digits(flatten)
    lr = step_size(apply, params, ds.x_train)
    got = predict_test_loss(models.Model(lambda key: params, apply), ds, key=jax.random.PRNGKey(2), lr=lr,
                            steps=STEPS, snapshots=SNAPSHOTS, brute_force=0, progress=False)
    _, rho, held_out = loo_prediction(apply, params, ds, lr)
    assert_close(got.loo, rho, 1)  # the same computation
    assert got.held_out == pytest.approx(held_out, rel=tolerance(F64))


def test_the_adapter_exercise_check(capsys):
    from gramlib.views.exercises import your_network

    def adapter(model):
        params, static = eqx.partition(model, eqx.is_array)
        return (lambda p, x: jax.vmap(eqx.combine(p, static))(x)), params

    def right(model, x):
        apply, params = adapter(model)
        return empirical_ntk(apply, params, x)

    def frozen_head(model, x):  # no derivative through the last layer: a smaller kernel
        apply, params = adapter(model)
        def frozen(p, x):
            return apply(eqx.tree_at(lambda m: m.layers[-1], p, jax.lax.stop_gradient(p.layers[-1])), x)

        return empirical_ntk(frozen, params, x)

    def first_output(model, x):  # the kernel of the first output only: (n, n) instead of (2n, 2n)
        apply, params = adapter(model)
        return empirical_ntk(lambda p, x: apply(p, x)[:, 0], params, x)

    model, x = your_network.equinox_problem()
    assert_close(your_network.equinox_ntk_reference(model, x), explicit_ntk(*adapter(model), x, x),
                 terms(adapter(model)[1]))
    assert your_network.check_equinox_ntk(right)
    assert "✅" in capsys.readouterr().out
    for wrong in (frozen_head, first_output, lambda model, x: x @ x.T):
        assert not your_network.check_equinox_ntk(wrong)
        assert "❌" in capsys.readouterr().out
