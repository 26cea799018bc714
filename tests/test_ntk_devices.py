"""The empirical NTK with its rows split over devices (``mesh=``) equals the one-device result; ``gramlib.devices``.

The check on 4 simulated CPU devices runs in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``, so that the other
tests keep their single CPU device; the argument checks and the padding run here.
"""

import textwrap

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import devices, models, ntk
from tests.simulated_devices import run_on_devices
from tests.tolerance import assert_close, tolerance

SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    jax.config.update("jax_enable_x64", True)
    from gramlib import devices, models, ntk

    out = {"devices": len(jax.devices())}
    size = lambda p: int(ravel_pytree(p)[0].size)  # the terms of one NTK entry
    mesh = devices.sample_mesh()
    out["blocks"] = devices.row_blocks(mesh)
    model = models.mlp(5, 16, 2, 3, sigma_b=0.5, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    params2 = jax.tree_util.tree_map(lambda w: 1.1 * w + 0.05, params)
    x1 = jax.random.normal(jax.random.PRNGKey(1), (11, 5))  # 11: not a multiple of 4 devices
    x2 = jax.random.normal(jax.random.PRNGKey(2), (6, 5))
    plain = lambda w, x: jnp.tanh(x @ w)[:, 0]  # no layer structure: the Jacobian path
    w = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
    cases = {
        "mlp x1 x2": (model.apply, params, (x1, x2), {}),
        "mlp x1": (model.apply, params, (x1,), {}),
        "mlp tiles": (model.apply, params, (x1, x2), {"batch_size": 2}),
        "mlp jacobian": (model.apply, params, (x1, x2), {"method": "jacobian"}),
        "mlp two weights": (model.apply, params, (x1, x2), {"params2": params2}),
        "mlp 2 rows": (model.apply, params, (x1[:2], x2), {}),  # fewer rows than devices
        "plain": (plain, w, (x1,), {}),
    }
    for name, (f, p, xs, kw) in cases.items():
        one = ntk.empirical_ntk(f, p, *xs, **kw)
        many = ntk.empirical_ntk(f, p, *xs, mesh=mesh, **kw)
        out[name] = {"shape_ok": many.shape == one.shape,
                     "diff": float(jnp.max(jnp.abs(many - one)) / jnp.max(jnp.abs(one))), "size": size(p)}
    theta = ntk.two_time_kernel(model.apply, [params, params2], x1, mesh=mesh)
    one = ntk.two_time_kernel(model.apply, [params, params2], x1)(1, 0)
    out["two_time_kernel"] = {"shape_ok": theta(1, 0).shape == one.shape,
                              "diff": float(jnp.max(jnp.abs(theta(1, 0) - one)) / jnp.max(jnp.abs(one))),
                              "size": size(params)}
    print("RESULT" + json.dumps(out))
''')


def test_sharded_ntk_equals_one_device():
    result = run_on_devices(SCRIPT)
    assert result.pop("devices") == 4 and result.pop("blocks") == 4
    assert len(result) == 8
    for name, r in result.items():
        assert r["shape_ok"], name
        assert r["diff"] <= tolerance(np.float64, r["size"]), (name, r)  # equal up to rounding in float64


def test_one_device_mesh_is_the_plain_call():
    model = models.mlp(5, 8, 2, outputs=2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 5))
    mesh = devices.sample_mesh(jax.devices()[:1])
    assert_close(ntk.empirical_ntk(model.apply, params, x, mesh=mesh), ntk.empirical_ntk(model.apply, params, x),
                 ravel_pytree(params)[0].size)


@pytest.mark.parametrize("mesh", ["cpu", 4, jax.devices(), object()])
def test_a_mesh_that_is_not_a_mesh_is_refused(mesh):
    model = models.mlp(5, 8, 2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        ntk.empirical_ntk(model.apply, params, jnp.ones((3, 5)), mesh=mesh)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        ntk.two_time_kernel(model.apply, [params], jnp.ones((3, 5)), mesh=mesh)


def test_a_mesh_without_the_samples_axis_is_refused():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    with pytest.raises(ValueError, match="'samples'"):
        devices.row_blocks(mesh)


def test_sample_mesh():
    mesh = devices.sample_mesh()
    assert mesh.axis_names == (devices.AXIS,) and devices.row_blocks(mesh) == len(jax.devices())
    with pytest.raises(ValueError, match="devices"):
        devices.sample_mesh([])
    with pytest.raises(TypeError, match="devices"):
        devices.sample_mesh("cpu")


def test_pad_rows_repeats_the_last_row():
    x = np.arange(10.0).reshape(5, 2)
    padded = devices.pad_rows(x, 4)
    assert padded.shape == (8, 2)
    np.testing.assert_array_equal(padded[:5], x)
    np.testing.assert_array_equal(padded[5:], np.repeat(x[-1:], 3, axis=0))
    assert devices.pad_rows(x, 5).shape == (5, 2) and devices.pad_rows(x, 1).shape == (5, 2)
    assert jax.jit(lambda a: devices.pad_rows(a, 3))(x).shape == (6, 2)  # static shapes: works under jit
    with pytest.raises(ValueError, match="multiple"):
        devices.pad_rows(x, 0)
    with pytest.raises(TypeError, match="multiple"):
        devices.pad_rows(x, 2.0)
    with pytest.raises(ValueError, match="at least one row"):
        devices.pad_rows(np.ones((0, 2)), 2)
