"""Models: output shapes, the convolution against an explicit sum, parameterizations."""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import models
from tests.tolerance import assert_close

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("shape,outputs", [((8, 8, 1), 1), ((6, 5, 3), 3), ((12, 2), 3)])
def test_cnn_output_shapes_and_flat_inputs(shape, outputs):
    m = models.cnn(shape, channels=4, depth=3, outputs=outputs, dtype=jnp.float64)
    p = m.init(KEY)
    x = jax.random.normal(KEY, (5,) + shape, jnp.float64)
    out = m.apply(p, x)
    assert out.shape == ((5,) if outputs == 1 else (5, outputs))
    assert_close(out, m.apply(p, x.reshape(5, -1)), ravel_pytree(p)[0].size)  # an output sums over the parameters


def explicit_conv(h, w):
    """SAME, stride-1 correlation by explicit loops (the definition lax.conv implements)."""
    h, w = np.asarray(h), np.asarray(w)
    spatial = h.shape[1:-1]
    window = w.shape[:-2]
    pad = [((k - 1) // 2, k // 2) for k in window]
    hp = np.pad(h, [(0, 0)] + pad + [(0, 0)])
    out = np.zeros(h.shape[:1] + spatial + w.shape[-1:])
    for idx in np.ndindex(*spatial):
        for off in np.ndindex(*window):
            src = tuple(i + o for i, o in zip(idx, off))
            out[(slice(None),) + idx] += hp[(slice(None),) + src] @ w[off]
    return out


@pytest.mark.parametrize("spatial,window", [((7,), (3,)), ((5, 4), (3, 3))])
def test_conv_apply_matches_explicit_sum(spatial, window):
    k1, k2 = jax.random.split(KEY)
    h = jax.random.normal(k1, (3,) + spatial + (2,), jnp.float64)
    layer = models.conv_init(k2, window, 2, 4, "ntk", 1.0, jnp.float64)
    layer["b"] = jnp.arange(4.0)
    got = models.conv_apply(layer, h, "ntk", 1.5, 0.5)
    fan_in = 2 * int(np.prod(window))
    want = explicit_conv(h, layer["w"]) * 1.5 / np.sqrt(fan_in) + 0.5 * np.arange(4.0)
    assert_close(got, want, fan_in)  # each output sums over the window and the channels
    assert_close(models.conv_apply(layer, h, "standard", 1.5, 0.5), explicit_conv(h, layer["w"]) + np.arange(4.0), fan_in)


def test_ntk_and_standard_parameterizations_compute_the_same_function():
    ntk = models.cnn((6, 6, 1), 8, 3, dtype=jnp.float64)
    std = models.cnn((6, 6, 1), 8, 3, parameterization="standard", dtype=jnp.float64)
    p_ntk, p_std = ntk.init(KEY), std.init(KEY)
    x = jax.random.normal(KEY, (4, 36), jnp.float64)
    assert_close(ntk.apply(p_ntk, x), std.apply(p_std, x), ravel_pytree(p_ntk)[0].size)   # same key, rescaled weights


def test_ntk_cnn_output_scale_does_not_grow_with_channels():
    x = jax.random.normal(KEY, (100, 20), jnp.float64)
    stds = []
    for c in (8, 64):
        m = models.cnn((20, 1), c, 3, dtype=jnp.float64)
        outs = [m.apply(m.init(jax.random.PRNGKey(s)), x) for s in range(3)]
        stds.append(float(np.std(np.concatenate(outs))))
    assert 0.5 < stds[1] / stds[0] < 2.0


def test_mlp_signature_unchanged():
    m = models.mlp(64, 32, 2, 1, activation="tanh", parameterization="ntk")
    assert m.apply(m.init(KEY), jnp.ones((3, 64))).shape == (3,)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="input_shape"):
        models.cnn((4,), 2, 3)
    with pytest.raises(ValueError, match="depth"):
        models.cnn((4, 1), 2, 1)
    with pytest.raises(ValueError, match="parameterization"):
        models.cnn((4, 1), 2, 2, parameterization="mup")
    with pytest.raises(ValueError, match="activation"):
        models.cnn((4, 1), 2, 2, activation="swishy")
    with pytest.raises(TypeError, match="channels"):
        models.cnn((4, 1), 2.5, 2)


def test_bad_arguments_of_every_public_function_raise():
    k = KEY
    dense = models.dense_init(k, 3, 2, "ntk", 1.0, jnp.float64)
    conv = models.conv_init(k, (3,), 2, 4, "ntk", 1.0, jnp.float64)
    h, h_conv = jnp.ones((5, 3)), jnp.ones((5, 7, 2))
    cases = [
        (ValueError, "sigma_w must be > 0", lambda: models.mlp(3, 4, sigma_w=0.0)),
        (ValueError, "sigma_b must be >= 0", lambda: models.cnn((4, 1), 2, 2, sigma_b=-1.0)),
        (ValueError, "sigma_w must be a finite", lambda: models.mlp(3, 4, sigma_w=np.nan)),
        (TypeError, "dtype must be a floating-point", lambda: models.mlp(3, 4, dtype=jnp.int32)),
        (TypeError, "dtype must be a floating-point", lambda: models.cnn((4, 1), 2, 2, dtype="wide")),
        (ValueError, "width must be at least 1", lambda: models.mlp(3, 0)),
        (TypeError, "in_dim must be an integer", lambda: models.mlp(3.0)),
        (ValueError, "activation", lambda: models.mlp(3, activation=["tanh"])),
        (ValueError, "input_shape", lambda: models.cnn(8, 2, 2)),
        (TypeError, "key must be a PRNG key", lambda: models.mlp(3, 4).init(0)),
        (TypeError, "key must be a PRNG key", lambda: models.dense_init(np.ones(3), 3, 2, "ntk", 1.0, jnp.float32)),
        (ValueError, "fan_in must be at least 1", lambda: models.dense_init(k, 0, 2, "ntk", 1.0, jnp.float32)),
        (ValueError, "parameterization", lambda: models.dense_init(k, 3, 2, "mup", 1.0, jnp.float32)),
        (ValueError, "window must be a tuple", lambda: models.conv_init(k, (3, 3, 3), 2, 4, "ntk", 1.0, jnp.float32)),
        (ValueError, "window size must be at least 1", lambda: models.conv_init(k, (0,), 2, 4, "ntk", 1.0, jnp.float32)),
        (ValueError, "c_out must be at least 1", lambda: models.conv_init(k, (3,), 2, 0, "ntk", 1.0, jnp.float32)),
        (ValueError, r"h must have shape \(\.\.\., 3\)", lambda: models.dense_apply(dense, jnp.ones((5, 4)), "ntk", 1.0, 0.0)),
        (ValueError, "h contains", lambda: models.dense_apply(dense, h.at[0, 0].set(jnp.nan), "ntk", 1.0, 0.0)),
        (TypeError, "layer must be a dict", lambda: models.dense_apply([dense["w"]], h, "ntk", 1.0, 0.0)),
        (ValueError, r"layer\['b'\] must have shape", lambda: models.dense_apply({**dense, "b": jnp.ones(3)}, h,
                                                                                  "ntk", 1.0, 0.0)),
        (ValueError, "parameterization", lambda: models.dense_apply(dense, h, "NTK", 1.0, 0.0)),
        (ValueError, "sigma_b", lambda: models.dense_apply(dense, h, "ntk", 1.0, -0.5)),
        (ValueError, r"layer\['w'\] must have 3 or 4", lambda: models.conv_apply(dense, h_conv, "ntk", 1.0, 0.0)),
        (ValueError, "h must have shape", lambda: models.conv_apply(conv, jnp.ones((5, 7, 3)), "ntk", 1.0, 0.0)),
        (ValueError, "h must have shape", lambda: models.conv_apply(conv, jnp.ones((5, 7, 2, 1)), "ntk", 1.0, 0.0)),
        (ValueError, "sigma_w", lambda: models.conv_apply(conv, h_conv, "ntk", -1.0, 0.0)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()


def test_apply_checks_its_inputs_also_under_jit():
    mlp, cnn = models.mlp(3, 4, dtype=jnp.float64), models.cnn((4, 4, 1), 2, 3, dtype=jnp.float64)
    p_mlp, p_cnn = mlp.init(KEY), cnn.init(jax.random.key(1))   # a typed key works too
    for model, params, good, bad in ((mlp, p_mlp, jnp.ones((2, 3)), jnp.ones((2, 5))),
                                     (cnn, p_cnn, jnp.ones((2, 4, 4, 1)), jnp.ones((2, 15)))):
        assert_close(jax.jit(model.apply)(params, good), model.apply(params, good), ravel_pytree(params)[0].size)
        with pytest.raises(ValueError, match="x must have shape"):
            model.apply(params, bad)
        with pytest.raises(ValueError, match="x must have shape"):
            jax.jit(model.apply)(params, bad)              # a shape check: it runs while tracing
        with pytest.raises(ValueError, match="x contains"):
            model.apply(params, good.at[0, 0].set(jnp.nan))
        with pytest.raises(ValueError, match="params must be a list of"):
            model.apply(params[:-1], good)
    # NaN weights are not refused: a diverged run still evaluates (to NaN)
    nan_params = [dict(layer, w=layer["w"] * jnp.nan) for layer in p_mlp]
    assert np.all(np.isnan(mlp.apply(nan_params, jnp.ones((2, 3)))))
