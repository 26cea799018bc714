"""Sharded Gram matrix and leave-one-out over 4 simulated CPU devices equal the one-device results.

The check runs in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` so that the other tests
keep their single CPU device.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from gramlib import effective_gram, models, ntk, sharding

    out = {"devices": len(jax.devices())}
    model = models.mlp(5, 16, 2, 3, sigma_b=0.5, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    x1 = jax.random.normal(jax.random.PRNGKey(1), (11, 5))  # 11: not a multiple of 4 devices
    x2 = jax.random.normal(jax.random.PRNGKey(2), (6, 5))
    one = ntk.empirical_ntk(model.apply, params, x1, x2)
    many = sharding.sharded_ntk(model.apply, params, x1, x2)
    out["ntk_shape_ok"] = many.shape == one.shape
    out["ntk_diff"] = float(jnp.max(jnp.abs(many - one)) / jnp.max(jnp.abs(one)))
    plain = lambda w, x: jnp.tanh(x @ w)[:, 0]  # no layer structure: the Jacobian path
    w = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
    one_plain = ntk.empirical_ntk(plain, w, x1)
    out["plain_diff"] = float(jnp.max(jnp.abs(sharding.sharded_ntk(plain, w, x1) - one_plain))
                              / jnp.max(jnp.abs(one_plain)))
    theta = np.asarray(ntk.empirical_ntk(model.apply, params, x1))
    r0 = np.random.default_rng(0).standard_normal(theta.shape[0])
    t = np.array([0.0, 0.5, 10.0, 1e3, np.inf])
    for c, th, r in [(3, theta, r0), (1, theta[::3, ::3], r0[:11])]:
        one_loo = effective_gram.loo_residuals(th, r, t, outputs=c)
        many_loo = sharding.sharded_loo_residuals(th, r, t, outputs=c)
        out[f"loo_diff_{c}"] = float(jnp.max(jnp.abs(many_loo - one_loo)) / jnp.max(jnp.abs(one_loo)))
        out[f"loo_moved_{c}"] = float(jnp.max(jnp.abs(one_loo[-1] - r)))
    print("RESULT" + json.dumps(out))
''')


def test_sharded_results_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT")[-1])
    assert result["devices"] == 4
    assert result["ntk_shape_ok"]
    for key in ["ntk_diff", "plain_diff", "loo_diff_1", "loo_diff_3"]:
        assert result[key] < 1e-12, (key, result[key])  # equal up to rounding in float64
    assert result["loo_moved_1"] > 1e-3 and result["loo_moved_3"] > 1e-3  # LOO differs from r0 (not trivial)


def test_sharded_inputs_are_validated():
    import numpy as np
    import pytest

    from gramlib import sharding

    with pytest.raises(ValueError, match="theta"):
        sharding.sharded_loo_residuals(np.ones((3, 2)), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="x2"):
        sharding.sharded_ntk(lambda p, x: x @ p, np.ones(3), np.ones((2, 3)), np.ones((2, 4)))
