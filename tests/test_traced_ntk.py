"""The empirical NTK of any function, with its structure found by tracing (gramlib.tangent_structure).

Every case is checked against an independent ``J Jᵀ``: the Jacobian of the
whole batch from ``jax.jacrev`` (to the rounding of an entry's sum over the parameters,
``tests.tolerance``, in float64 and float32), on plain functions over dicts, lists and tuples, closures over
objects, shared weights, several outputs, tiles, two weights, and leaves that
take the Jacobian block (elementwise scales, a weight inside ``lax.scan``).
"""

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import models, ntk, train
from gramlib import tangent_structure as ts
from tests.tolerance import assert_close

def terms(params):
    """An NTK entry sums over the parameters: the size in the tolerance rule."""
    return ravel_pytree(params)[0].size


KEYS = jax.random.split(jax.random.PRNGKey(0), 16)


def explicit_ntk(f, params, x1, x2, params2=None):
    """``J(x1; params) J(x2; params2)ᵀ`` from full-batch ``jax.jacrev``, rows ordered (sample, output)."""

    def flat(p, x):
        jac = jax.jacrev(f)(p, x)
        rows = int(np.prod(jax.eval_shape(f, p, x).shape))
        return jnp.concatenate([leaf.reshape(rows, -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)

    return flat(params, x1) @ flat(params if params2 is None else params2, x2).T


def normal(i, shape, dtype=jnp.float64, scale=1.0):
    return scale * jax.random.normal(KEYS[i], shape, dtype)


def conv(h, w, stride=1):
    return jax.lax.conv_general_dilated(h, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def layer_norm(h, gain, bias):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / jnp.sqrt(var + 1e-5) * gain + bias


def architectures(dtype):
    """``name -> (f, params, input shape)``: six networks written as plain functions."""
    d, m = 5, 8
    mlp = {"w1": normal(0, (d, m), dtype), "b1": normal(1, (m,), dtype), "w2": normal(2, (m, m), dtype),
           "b2": normal(3, (m,), dtype), "w3": normal(4, (m, 3), dtype)}

    def mlp_f(p, x):
        h = jnp.tanh(x @ p["w1"] / math.sqrt(d) + p["b1"])
        h = jax.nn.gelu(h @ p["w2"] / math.sqrt(m) + 0.5 * p["b2"])
        return h @ p["w3"] / math.sqrt(m)

    cnn = [normal(5, (3, 3, 2, 4), dtype, 0.3), normal(6, (4,), dtype), normal(7, (3, 3, 4, 4), dtype, 0.3),
           normal(8, (3 * 3 * 4, 2), dtype, 0.2)]

    def cnn_f(p, x):
        h = jax.nn.relu(conv(x, p[0]) + p[1])
        h = jnp.tanh(conv(h, p[2], stride=2))  # 6x6 -> 3x3
        return h.reshape(h.shape[0], -1) @ p[3]

    res = ({"w": normal(9, (d, m), dtype)}, [normal(10, (m, m), dtype), normal(11, (m, m), dtype)],
           normal(12, (m,), dtype))

    def res_f(p, x):
        h = x @ p[0]["w"] / math.sqrt(d)
        for w in p[1]:
            h = h + jnp.tanh(h @ w / math.sqrt(m))  # residual connections
        return h @ p[2] / math.sqrt(m)

    ln = {"w": normal(13, (d, m), dtype), "gain": 1 + 0.1 * normal(14, (m,), dtype),
          "bias": normal(15, (m,), dtype, 0.1), "out": normal(0, (m, 2), dtype)}

    def ln_f(p, x):
        h = layer_norm(jnp.tanh(x @ p["w"]), p["gain"], p["bias"])
        return h @ p["out"] / math.sqrt(m)

    shared = {"w": normal(1, (d, m), dtype), "u": normal(2, (m, m), dtype), "v": normal(3, (m,), dtype)}

    def shared_f(p, x):
        h = jnp.tanh(x @ p["w"] / math.sqrt(d))
        h = jnp.tanh(h @ p["u"] / math.sqrt(m))  # u used twice: the cross terms of its two uses count
        h = jnp.tanh(h @ p["u"] / math.sqrt(m))
        back = jnp.tanh(h @ p["w"].T / math.sqrt(m))  # w used again, transposed (tied weights)
        return (h @ p["v"] + back.sum(-1)) / math.sqrt(m)

    seq = {"w": normal(4, (d, m), dtype), "b": normal(5, (m,), dtype), "out": normal(6, (m, 3), dtype)}

    def seq_f(p, x):  # a dense layer applied at each of 4 positions: shared axes in its factors
        h = jnp.tanh(jnp.einsum("ntd,dm->ntm", x, p["w"]) / math.sqrt(d) + p["b"])
        return h.mean(1) @ p["out"]

    return {"dense-dict": (mlp_f, mlp, (d,)), "cnn-list": (cnn_f, cnn, (6, 6, 2)),
            "residual-tuple": (res_f, res, (d,)), "layer-norm": (ln_f, ln, (d,)),
            "shared-weights": (shared_f, shared, (d,)), "sequence-3-outputs": (seq_f, seq, (4, d))}


NAMES = list(architectures(jnp.float64))


@pytest.mark.parametrize("name", NAMES)
def test_equals_the_explicit_jacobian_in_float64(name):
    f, params, shape = architectures(jnp.float64)[name]
    x1, x2 = normal(7, (7,) + shape), normal(8, (5,) + shape)
    want = explicit_ntk(f, params, x1, x2)
    assert np.abs(want).max() > 1e-2
    for method in ("auto", "structured"):
        got = ntk.empirical_ntk(f, params, x1, x2, method=method)
        assert_close(got, want, terms(params))
    same = ntk.empirical_ntk(f, params, x1)  # x2 = x1: the symmetric path
    assert_close(same, explicit_ntk(f, params, x1, x1), terms(params))


@pytest.mark.parametrize("name", NAMES)
def test_equals_the_explicit_jacobian_in_float32(name):
    f, params, shape = architectures(jnp.float32)[name]
    x = normal(9, (6,) + shape, jnp.float32)
    want = explicit_ntk(f, jax.tree_util.tree_map(lambda w: w.astype(jnp.float64), params), x.astype(jnp.float64),
                        x.astype(jnp.float64))
    got = ntk.empirical_ntk(f, params, x)
    assert got.dtype == jnp.float32
    assert_close(got, want, terms(params))  # float32 (the less precise dtype sets the bound)


@pytest.mark.parametrize("name", ["dense-dict", "cnn-list", "shared-weights", "sequence-3-outputs"])
def test_tiles_and_two_weights(name):
    f, params, shape = architectures(jnp.float64)[name]
    params2 = jax.tree_util.tree_map(lambda w: w * 1.1 + 0.05, params)
    x1, x2 = normal(10, (7,) + shape), normal(11, (5,) + shape)
    want = explicit_ntk(f, params, x1, x2, params2)
    got = ntk.empirical_ntk(f, params, x1, x2, params2=params2, batch_size=3)
    assert_close(got, want, terms(params))
    theta = ntk.two_time_kernel(f, [params, params2], x1)
    assert_close(theta(0, 1), explicit_ntk(f, params, x1, x1, params2), terms(params), scale=np.abs(want).max())


def test_dense_factors_are_chosen_by_cost():
    f, params, shape = architectures(jnp.float64)["dense-dict"]
    x = normal(12, (40,) + shape)
    plan = ts.explain(f, params, x)
    assert plan["['w1']"] == plan["['w2']"] == "dense factors"
    assert plan["['b1']"] == "Jacobian block"  # a bias: G summed over its broadcast axes
    f, params, shape = architectures(jnp.float64)["cnn-list"]
    plan = ts.explain(f, params, normal(12, (40,) + shape))
    assert plan["[0]"] == plan["[2]"] == "Jacobian block"  # filters: per-sample filter gradients
    f, params, shape = architectures(jnp.float64)["shared-weights"]
    plan = ts.explain(f, params, normal(12, (40,) + shape))
    assert plan["['u']"] == plan["['w']"] == "Jacobian block"  # used twice: uses summed before the product
    # a dense layer at many positions: the factors cost S² per pair, the block does not
    f, params, _ = architectures(jnp.float64)["sequence-3-outputs"]
    long = normal(12, (40, 64, 5))
    assert ts.explain(f, params, long)["['w']"] == "Jacobian block"
    assert ts.explain(f, params, long, method="structured")["['w']"] == "dense factors"


class Network:
    """A module object: its structure (activation, widths) inside, its parameters passed in."""

    def __init__(self, activation, scale):
        self.activation, self.scale = activation, scale
        self.mask = jnp.asarray(np.random.default_rng(0).integers(0, 2, (5, 8)), jnp.float64)  # a constant

    def __call__(self, params, x):
        h = self.activation(x @ (params["w"] * self.mask) * self.scale)  # a masked weight
        h = h * params["scale"]  # an elementwise scale: a Jacobian block
        return h @ params["v"]


def test_closures_elementwise_leaves_and_control_flow():
    net = Network(jnp.tanh, 0.4)
    params = {"w": normal(0, (5, 8)), "scale": normal(1, (8,)), "v": normal(2, (8, 2))}
    x1, x2 = normal(3, (6, 5)), normal(4, (3, 5))
    f = lambda p, x: net(p, x)  # noqa: E731
    want = explicit_ntk(f, params, x1, x2)
    assert_close(ntk.empirical_ntk(f, params, x1, x2), want, terms(params))

    def rnn(p, x):  # the recurrent weight lives inside lax.scan: its use is transposed whole
        def step(h, xt):
            return jnp.tanh(h @ p["u"] + xt @ p["w"]), None

        h, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], 4), x.dtype), jnp.swapaxes(x, 0, 1))
        return h @ p["v"]

    p = {"u": normal(5, (4, 4), scale=0.5), "w": normal(6, (3, 4)), "v": normal(7, (4,))}
    x = normal(8, (5, 6, 3))
    want = explicit_ntk(rnn, p, x, x)
    assert_close(ntk.empirical_ntk(rnn, p, x), want, x.shape[1] * terms(p))  # through 6 steps of the scan
    # an output that does not depend on the input: left to the Jacobian contraction of the whole network
    const = lambda p, x: jnp.zeros((x.shape[0],)) + p["a"] * p["a"] + 0 * x[:, 0]  # noqa: E731
    got = ntk.empirical_ntk(const, {"a": jnp.array(1.5)}, x1)
    assert_close(got, 9.0 * np.ones((6, 6)), 1)


def test_jitted_sub_functions_and_gramlib_models_need_no_attribute():
    layer = jax.jit(lambda h, w: jnp.tanh(h @ w))
    f = lambda p, x: layer(layer(x, p[0]), p[1])[:, 0]  # noqa: E731
    p = (normal(0, (5, 6)), normal(1, (6, 1)))
    x = normal(2, (7, 5))
    want = explicit_ntk(f, p, x, x)
    assert_close(ntk.empirical_ntk(f, p, x), want, terms(p))
    assert ts.explain(f, p, x)["[0]"] == "dense factors"  # found inside the jitted call
    model = models.cnn((5, 5, 1), 3, 3, 2, sigma_b=0.5, dtype=jnp.float64)
    assert not hasattr(model.apply, "structure")
    params = model.init(KEYS[3])
    xs = normal(4, (6, 5, 5, 1))
    want = explicit_ntk(model.apply, params, xs, xs)
    assert_close(ntk.empirical_ntk(model.apply, params, xs), want, terms(params))
    assert train.recommended_loop(model.apply, params, xs, backend="cpu") == "per_step"  # found by tracing, not an attribute


@pytest.mark.parametrize("module", ["flax.nnx", "equinox"])
def test_module_libraries_if_installed(module):
    pytest.importorskip(module)
    x = normal(0, (6, 5), jnp.float32)
    if module == "flax.nnx":
        from flax import nnx

        model = nnx.Sequential(nnx.Linear(5, 8, rngs=nnx.Rngs(0)), jnp.tanh, nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
        graph, params = nnx.split(model)
        f = lambda p, x: nnx.merge(graph, p)(x)  # noqa: E731
    else:
        import equinox as eqx

        # float32 like the input (Equinox takes JAX's default float, float64 under x64: float64 weights on
        # float32 inputs give a float64 kernel whose input Gram the traced path forms in float32)
        model = eqx.nn.MLP(5, 2, 8, 1, activation=jnp.tanh, key=KEYS[1], dtype=jnp.float32)
        params, static = eqx.partition(model, eqx.is_array)
        f = lambda p, x: jax.vmap(eqx.combine(p, static))(x)  # noqa: E731
    want = explicit_ntk(f, params, x, x)
    got = ntk.empirical_ntk(f, params, x)
    assert_close(got, want, terms(params))  # in the library's dtype (float32 for flax and equinox defaults)


def test_bad_arguments_name_the_argument():
    f, params, _ = architectures(jnp.float64)["dense-dict"]
    x = normal(0, (4, 5))
    with pytest.raises(ValueError, match="x1"):
        ntk.empirical_ntk(f, params, normal(0, (4, 7)))  # wrong input width
    with pytest.raises(ValueError, match="x1"):
        ntk.empirical_ntk(f, params, x.at[0, 0].set(jnp.nan))
    with pytest.raises(TypeError, match=r"params\['w1'\]"):
        ntk.empirical_ntk(f, {**params, "w1": "weights"}, x)
    with pytest.raises(ValueError, match="x2"):
        ntk.empirical_ntk(f, params, x, normal(0, (4, 6)))
    with pytest.raises(ValueError, match="method"):
        ntk.empirical_ntk(f, params, x, method="factors")
    with pytest.raises(TypeError, match="f must be"):
        ntk.empirical_ntk("f", params, x)


def test_convolution_layouts_strides_dilations_and_folded_batches():
    w = normal(0, (4, 2, 3, 2))  # OIHW filters

    def strided(p, x):  # NCHW, stride 2, uneven padding, dilated filter
        h = jax.lax.conv_general_dilated(x, p, (2, 1), ((1, 2), (0, 1)), rhs_dilation=(1, 2),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.tanh(h).reshape(h.shape[0], -1)[:, :3]

    def folded(p, x):  # three images per sample folded into the convolution's batch
        h = jax.lax.conv_general_dilated(x.reshape(-1, 2, 5, 5), p, (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.tanh(h).reshape(x.shape[0], -1).sum(1)

    for f, x in ((strided, normal(1, (5, 2, 7, 6))), (folded, normal(2, (4, 3, 2, 5, 5)))):
        want = explicit_ntk(f, w, x, x)
        assert_close(ntk.empirical_ntk(f, w, x), want, terms(w) * x[0].size)  # and over the folded images' pixels
