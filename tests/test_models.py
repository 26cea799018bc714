"""Models: output shapes, the convolution against an explicit sum, parameterizations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from gramlib import models  # noqa: E402

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("shape,outputs", [((8, 8, 1), 1), ((6, 5, 3), 3), ((12, 2), 3)])
def test_cnn_output_shapes_and_flat_inputs(shape, outputs):
    m = models.cnn(shape, channels=4, depth=3, outputs=outputs, dtype=jnp.float64)
    p = m.init(KEY)
    x = jax.random.normal(KEY, (5,) + shape, jnp.float64)
    out = m.apply(p, x)
    assert out.shape == ((5,) if outputs == 1 else (5, outputs))
    assert np.allclose(out, m.apply(p, x.reshape(5, -1)))


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
    assert np.allclose(got, want, atol=1e-12)
    assert np.allclose(models.conv_apply(layer, h, "standard", 1.5, 0.5), explicit_conv(h, layer["w"]) + np.arange(4.0))


def test_ntk_and_standard_parameterizations_compute_the_same_function():
    ntk = models.cnn((6, 6, 1), 8, 3, dtype=jnp.float64)
    std = models.cnn((6, 6, 1), 8, 3, parameterization="standard", dtype=jnp.float64)
    p_ntk, p_std = ntk.init(KEY), std.init(KEY)
    x = jax.random.normal(KEY, (4, 36), jnp.float64)
    assert np.allclose(ntk.apply(p_ntk, x), std.apply(p_std, x), atol=1e-12)   # same key, rescaled weights


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
