"""A convolution filter's NTK term by patch factors: the patch and cotangent Grams contracted over positions.

For a filter ``W`` of a convolution ``z[s] = P[s] W`` (``P[s]`` the patch read by
output position ``s``), ``Θ_W(a c, b d) = Σ_{s,t} (P_a[s] · P_b[t]) (G_a,c[s] · G_b,d[t])``
(:mod:`gramlib.kernels.tangent_structure`). Checked against independent computations:
``jax.jacrev`` of the whole batch (the explicit ``J Jᵀ``), ``jax.lax.conv_general_dilated``
itself for the patches, and the per-sample ``jax.vjp`` of the convolution for the filter
gradients the patches replace.
"""

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from benchmarks import peer_workloads
from gramlib import ntk
from gramlib import tangent_structure as ts
from gramlib.kernels import tangent_factors as tf
from tests.tolerance import assert_close

KEYS = jax.random.split(jax.random.PRNGKey(3), 12)


def normal(i, shape, dtype=jnp.float64, scale=1.0):
    return scale * jax.random.normal(KEYS[i], shape, dtype)


def explicit_ntk(f, params, x1, x2, params2=None):
    """``J(x1; params) J(x2; params2)ᵀ`` from ``jax.jacrev`` of the whole batch, rows ordered (sample, output)."""
    params2 = params if params2 is None else params2

    def flat(p, x):
        jac = jax.jacrev(lambda q: f(q, x).reshape(-1))(p)
        rows = int(np.prod(jax.eval_shape(f, p, x).shape))
        return jnp.concatenate([leaf.reshape(rows, -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)

    return flat(params, x1) @ flat(params2, x2).T


def terms(params):
    """An NTK entry sums over the parameters: the size in the tolerance rule."""
    return ravel_pytree(params)[0].size


def late_cnn(dtype):
    """A network whose convolutions have few positions and many channels: the patch factors are cheaper.

    4×4×8 inputs; a 3×3 ``VALID`` convolution to 2×2×32 (4 positions, ``K = 72``, ``M = 32``), a
    2×2 ``VALID`` one to 1×1×32 (1 position, ``K = 128``), a bias, a dense read-out to 2 outputs.
    """
    params = {"c1": normal(0, (3, 3, 8, 32), dtype, 0.3), "b1": normal(1, (32,), dtype, 0.1),
              "c2": normal(2, (2, 2, 32, 32), dtype, 0.2), "out": normal(3, (32, 2), dtype, 0.3)}

    def f(p, x):
        dn = ("NHWC", "HWIO", "NHWC")
        h = jnp.tanh(jax.lax.conv_general_dilated(x, p["c1"], (1, 1), "VALID", dimension_numbers=dn)
                     / math.sqrt(72) + p["b1"])
        h = jnp.tanh(jax.lax.conv_general_dilated(h, p["c2"].astype(h.dtype), (1, 1), "VALID",
                                                  dimension_numbers=dn) / math.sqrt(128))
        return h.reshape(h.shape[0], -1) @ p["out"]

    return f, params, (4, 4, 8)


def test_the_rule_takes_patch_factors_for_few_positions_and_filter_gradients_for_many():
    f, params, shape = late_cnn(jnp.float64)
    plan = ts.explain(f, params, normal(4, (40,) + shape))
    assert plan["['c1']"] == plan["['c2']"] == "dense factors"  # S = 4 and 1 against K·M = 2304 and 4096
    assert plan["['b1']"] == "Jacobian block"
    # the peer benchmark's CNN: 64 positions, K = 144, M = 16 -> S²(K + M + 1) = 659,456 > C² K M = 2304 per pair
    f, params, x = peer_workloads.workload("cnn", "float64", n=40)
    plan = ts.explain(f, params, x)
    assert all(plan[f"['convs'][{i}]"] == "Jacobian block" for i in range(3))
    assert all(v == "dense factors" for k, v in ts.explain(f, params, x, method="structured").items()
               if k.startswith("['convs']"))
    prog = ts.program(f, params, x)
    uses = [d for d in prog.dense if d.patches]
    assert [(d.shared, d.k, d.m) for d in uses] == [(64, 9, 16), (64, 144, 16), (64, 144, 16)]
    # the benchmark's late layers (4 and 1 positions, 32 -> 64 -> 64 channels) at its n = 1000: patch factors
    f, params, x = peer_workloads.workload("cnn-late", "float32")
    plan = ts.explain(f, params, x)
    assert plan["['convs'][0]"] == plan["['convs'][1]"] == "dense factors"


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_patch_factors_equal_the_explicit_jacobian(dtype):
    f, params, shape = late_cnn(dtype)
    x1, x2 = normal(5, (7,) + shape, dtype), normal(6, (5,) + shape, dtype)
    p64 = jax.tree_util.tree_map(lambda w: w.astype(jnp.float64), params)
    want = explicit_ntk(f, p64, x1.astype(jnp.float64), x2.astype(jnp.float64))
    assert np.abs(want).max() > 1e-2
    got = ntk.empirical_ntk(f, params, x1, x2)
    assert got.dtype == dtype
    assert_close(got, want, terms(params))  # the less precise dtype sets the bound
    same = ntk.empirical_ntk(f, params, x1)  # x2 = x1: the symmetric path
    assert_close(same, explicit_ntk(f, p64, x1.astype(jnp.float64), x1.astype(jnp.float64)), terms(params))


def test_patch_factors_in_tiles_at_two_weights_and_in_the_two_time_kernel():
    f, params, shape = late_cnn(jnp.float64)
    params2 = jax.tree_util.tree_map(lambda w: 1.1 * w + 0.05, params)
    x1, x2 = normal(7, (7,) + shape), normal(8, (5,) + shape)
    want = explicit_ntk(f, params, x1, x2, params2)
    assert_close(ntk.empirical_ntk(f, params, x1, x2, params2=params2, batch_size=3), want, terms(params))
    theta = ntk.two_time_kernel(f, [params, params2], x1)
    assert_close(theta(0, 1), explicit_ntk(f, params, x1, x1, params2), terms(params))


def test_convolution_layouts_strides_dilations_and_folded_batches_by_patch_factors():
    w = normal(9, (4, 2, 3, 2))  # OIHW filters

    def strided(p, x):  # NCHW, stride (2, 1), uneven padding, dilated filter
        h = jax.lax.conv_general_dilated(x, p, (2, 1), ((1, 2), (0, 1)), rhs_dilation=(1, 2),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.tanh(h).reshape(h.shape[0], -1)[:, :3]

    def folded(p, x):  # three images per sample folded into the convolution's batch
        h = jax.lax.conv_general_dilated(x.reshape(-1, 2, 5, 5), p, (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.tanh(h).reshape(x.shape[0], -1).sum(1)

    for f, x in ((strided, normal(10, (5, 2, 7, 6))), (folded, normal(11, (4, 3, 2, 5, 5)))):
        assert ts.explain(f, w, x, method="structured")[""] == "dense factors"
        want = explicit_ntk(f, w, x, x)
        got = ntk.empirical_ntk(f, w, x, method="structured")
        assert_close(got, want, terms(w) * x[0].size)  # and over the folded images' pixels


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_conv_factors_rebuild_the_convolution_and_its_filter_gradients(dtype):
    """``P W`` is the convolution's output; ``Σ_s P[s] ⊗ G[s]`` its per-sample filter gradient (``jax.vjp``)."""
    dn = jax.lax.conv_dimension_numbers((1, 2, 7, 6), (4, 2, 3, 2), ("NCHW", "OIHW", "NCHW"))
    params = {"window_strides": (2, 1), "padding": ((1, 2), (0, 1)), "lhs_dilation": (1, 1),
              "rhs_dilation": (1, 2), "dimension_numbers": dn, "feature_group_count": 1, "batch_group_count": 1}
    w = normal(0, (4, 2, 3, 2), dtype)
    lhs = normal(1, (5, 1, 2, 7, 6), dtype)  # (n, B = 1, C_in, H, W) per sample
    conv = lambda xi, wi: jax.lax.conv_general_dilated(xi, wi, (2, 1), ((1, 2), (0, 1)), rhs_dilation=(1, 2),
                                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
    out = jax.vmap(conv, in_axes=(0, None))(lhs, w)  # (n, 1, C_out, H', W')
    g = normal(2, (5, 3) + out.shape[1:], dtype)  # C = 3 cotangents per sample
    patches, gm = tf.conv_factors(params, lhs, g, w.shape)
    n, s, k = patches.shape
    assert (gm.shape, k) == ((5, 3, s, 4), 2 * 3 * 2)
    w_matrix = jnp.transpose(w, (1, 2, 3, 0)).reshape(k, 4)  # (in, window) rows, out columns
    z = jnp.moveaxis(out.reshape(5, 4, -1), 1, 2)  # (n, S, C_out)
    assert_close(patches @ w_matrix, z, k)
    grads = tf._filter_gradients(params, lhs, g, w.shape)  # (n, C, *filter)
    want = jax.vmap(lambda xi, gi: jax.vmap(jax.vjp(lambda wi: conv(xi, wi), w)[1])(gi)[0])(lhs, g)
    assert_close(grads, want, s)


def test_patch_factors_contract_to_the_filter_gradients_gram():
    """The contraction over positions equals ``J_w J_wᵀ`` of the per-sample filter gradients."""
    f, params, shape = late_cnn(jnp.float64)
    x = normal(4, (6,) + shape)
    prog = ts.program(f, params, x)
    factors_plan = ts.choose(prog, 6, 6, "structured")
    blocks_plan = ts.Choice((), tuple(range(len(prog.leaf_ids))), tuple(prog.uses))
    leaves = jax.tree_util.tree_leaves(params)
    fa = tf.factors(prog, factors_plan, leaves, prog.consts, x)
    fb = tf.factors(prog, blocks_plan, leaves, prog.consts, x)
    assert sum(d.patches for d in factors_plan.dense) == 2 and fb[0] == []
    assert_close(tf.contract(fa, fa), tf.contract(fb, fb), terms(params))


def test_patch_factors_under_jit_vmap_and_grad():
    """jit equals eager, vmap equals a loop, grad equals central differences, on the patch-factor path.

    Central differences are an approximate method: truncation ``h² |s'''| / 6`` and rounding
    ``ε |s| / h`` with ``h = 1e-5`` are both below ``1e-9`` of the derivative's scale for this smooth
    network, so a relative ``1e-6`` leaves room and still catches a wrong derivative.
    """
    f, params, shape = late_cnn(jnp.float64)
    x = normal(4, (4,) + shape)
    assert ts.explain(f, params, x)["['c1']"] == "dense factors"
    eager = ntk.empirical_ntk(f, params, x)
    assert_close(jax.jit(lambda p, x: ntk.empirical_ntk(f, p, x))(params, x), eager, terms(params))
    xs = jnp.stack([x, 0.5 * x + 0.1])
    assert_close(jax.vmap(lambda x: ntk.empirical_ntk(f, params, x))(xs),
                 jnp.stack([ntk.empirical_ntk(f, params, xi) for xi in xs]), terms(params))
    weights = normal(11, eager.shape)
    direction = jax.tree_util.tree_map(lambda w: jax.random.normal(KEYS[10], w.shape, w.dtype), params)

    def scalar(p):
        return jnp.sum(ntk.empirical_ntk(f, p, x) * weights)

    grads = jax.grad(scalar)(params)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads),
                                                   jax.tree_util.tree_leaves(direction)))
    h = 1e-5
    shifted = [jax.tree_util.tree_map(lambda w, d: w + s * h * d, params, direction) for s in (1, -1)]
    numeric = (scalar(shifted[0]) - scalar(shifted[1])) / (2 * h)
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)
