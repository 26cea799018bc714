"""The float32 path (the default on Colab): dtypes kept, and results equal to float64's within float32 rounding.

Every case of :mod:`tests.test_transforms` is run on float32 copies of its arguments (the tests run
with float64 switched on, so the copies are asked for explicitly). The result keeps float32 — or is
what the function's docstring says: a Python float, or JAX's default float dtype for the closed forms
of linear least squares — and agrees with the float64 result on the same (rounded) arguments within
``tolerance(float32, size, cond)`` (tests/tolerance.py): the float32 computation's own rounding,
amplified by the problem's condition number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_transforms import CASES, _size
from tests.tolerance import assert_close

# cases that close over float64 arrays of their own (mixed precision by construction): the dtype
# of the result follows promotion, not the float32 path
MIXED = {"empirical_ntk(x2, params2)", "two_time_kernel"}
DEFAULT_FLOAT = {"linear_gradient_flow", "linear_gradient_descent"}  # documented: JAX's default float dtype
FLOAT64 = {"residual_loss", "alignment_curve"}  # documented: losses summed in float64 on the host


def _as(dtype, tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in MIXED], ids=lambda c: c.name)
def test_float32_keeps_dtype_and_agrees_with_float64(case):
    args32 = _as(jnp.float32, case.args)
    got = case.fn(*args32)
    want = case.fn(*_as(jnp.float64, args32))  # the same rounded problem, in float64
    if isinstance(got, float):
        pass  # documented: a Python float
    elif case.name in DEFAULT_FLOAT:
        assert got.dtype == jnp.zeros(0, float).dtype
    elif case.name in FLOAT64:
        assert got.dtype == np.float64
    else:
        assert got.dtype == jnp.float32, f"{case.name} returned {got.dtype} for float32 input"
    assert_close(np.asarray(got, np.float64), np.asarray(want), _size(case), cond=case.cond, dtype=jnp.float32)


def test_float32_ntk_pipeline_end_to_end():
    """Θ of a float32 network, then its leave-one-out residuals, all in float32."""
    from gramlib import empirical_ntk, loo_residuals
    from tests.test_transforms import PARAMS, X, _mlp

    p32, x32 = _as(jnp.float32, PARAMS), jnp.asarray(X, jnp.float32)
    theta = empirical_ntk(_mlp, p32, x32) + 0.1 * jnp.eye(8, dtype=jnp.float32)
    assert theta.dtype == jnp.float32
    r0 = jnp.linspace(-1, 1, 8, dtype=jnp.float32)
    rho = loo_residuals(theta, r0, np.array([1.0, np.inf]), outputs=2)
    assert rho.dtype == jnp.float32
    want = loo_residuals(jnp.asarray(theta, jnp.float64), jnp.asarray(r0, jnp.float64), np.array([1.0, np.inf]),
                         outputs=2)
    from tests.tolerance import eigvec_cond, talbot_gain
    assert_close(np.asarray(rho, np.float64), want, 64, cond=eigvec_cond(np.asarray(theta, np.float64)) * talbot_gain(),
                 dtype=jnp.float32)
