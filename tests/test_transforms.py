"""The public functions of the mathematics and the kernels under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

Tested the way JAX tests itself: ``jit`` equals eager, ``vmap`` equals a Python loop, and the
directional derivative from ``grad`` equals central finite differences (float64). Options that
pick shapes or formulas (times, ``outputs``, ``k``, ``method``, the network ``f``) are closed
over, as the docstrings say. Functions the mathematics cannot transform raise a clear error.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib import _checks
from gramlib.kernels import ntk
from gramlib.mathematics import (alignment, bounds, effective_gram as eg, gap, gap_ode, kernel_flow,
                                 leave_one_out, linearized_gap, trajectory, trajectory_gram, twins)
from tests.tolerance import assert_close, eigvec_cond, talbot_gain

N = 6  # samples of the kernel problems (one output; OUT2 below has two)
T = np.array([0.0, 0.7, 3.0, np.inf])  # flow times: the t = 0, Talbot and t = inf branches
STEPS = np.array([0.0, 2.0, 5.0])  # descent steps


def _sym_psd(key, n, shift=0.3):
    a = jax.random.normal(key, (n, n + 2), jnp.float64)
    return a @ a.T / (n + 2) + shift * jnp.eye(n)


KEYS = jax.random.split(jax.random.key(2026), 8)
THETA = _sym_psd(KEYS[0], N)
THETA2 = _sym_psd(KEYS[1], 2 * N)  # two outputs per sample
R0 = jax.random.normal(KEYS[2], (N,), jnp.float64)
R02 = jax.random.normal(KEYS[3], (2 * N,), jnp.float64)
THETA_TEST = jax.random.normal(KEYS[4], (3, N), jnp.float64) * 0.3
R0_TEST = jax.random.normal(KEYS[5], (3,), jnp.float64)
SNAPSHOTS = jnp.stack([THETA, _sym_psd(KEYS[6], N)])
RESIDUALS = jax.random.normal(KEYS[7], (7, N), jnp.float64)  # 6 steps of a run


def _mlp(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


PARAMS = {"w1": jax.random.normal(KEYS[0], (3, 5), jnp.float64) / 2, "b1": jnp.full((5,), 0.1),
          "w2": jax.random.normal(KEYS[1], (5, 2), jnp.float64) / 2}
X = jax.random.normal(KEYS[2], (4, 3), jnp.float64)
Y = jnp.sin(X[:, :2])
V = jax.random.normal(KEYS[3], (3 * 5 + 5 + 5 * 2,), jnp.float64)  # a direction in the flat parameters


class Case(NamedTuple):
    name: str
    fn: Callable  # fn(*args) -> one array
    args: tuple  # the arguments that are traced (pytrees of float64 arrays)
    symmetric: tuple = ()  # indices of arguments that must stay symmetric (Gram matrices)
    cond: float = 1.0  # condition number of the computation (tests/tolerance.py)
    reverse: bool = True  # reverse mode (jax.grad) available; else the derivative is taken by jax.jvp


_EIG = eigvec_cond(THETA)
_EIG2 = eigvec_cond(THETA2)
_LOO = _EIG * talbot_gain()
_SNAP = max(eigvec_cond(SNAPSHOTS[0]), eigvec_cond(SNAPSHOTS[1]))

CASES = [
    Case("factorize", lambda th: kernel_flow.factorize(th).eigenvalues, (THETA,), (0,), _EIG),
    Case("kernel_residuals", lambda th, r: kernel_flow.kernel_residuals(th, r, T), (THETA, R0), (0,), _EIG),
    Case("kernel_residuals(lr)", lambda th, r, lr: kernel_flow.kernel_residuals(th, r, STEPS, lr=lr),
         (THETA, R0, jnp.asarray(0.5)), (0,), _EIG),
    Case("kernel_residuals(t traced)", lambda th, t: kernel_flow.kernel_residuals(th, R0, t),
         (THETA, jnp.asarray([0.5, 2.0])), (0,), _EIG),
    Case("kernel_test_residuals", lambda th, tt, r: kernel_flow.kernel_test_residuals(th, tt, r, R0_TEST, T),
         (THETA, THETA_TEST, R0), (0,), _EIG),
    Case("own_blocks", lambda th, v: kernel_flow.own_blocks(th, v, outputs=2), (THETA2, R02[:, None]), (0,)),
    Case("residual_loss", lambda r: kernel_flow.residual_loss(r, N), (RESIDUALS,)),
    Case("loo_residuals", lambda th, r: leave_one_out.loo_residuals(th, r, T), (THETA, R0), (0,), _LOO),
    # t = inf with outputs > 1 is left out: its limit diagonalizes each sample's null-space block, 0 for an
    # invertible Θ, and the derivative of a degenerate eigendecomposition is NaN (see loo_residuals)
    Case("loo_residuals(outputs=2)", lambda th, r: leave_one_out.loo_residuals(th, r, T[:3], outputs=2),
         (THETA2, R02), (0,), _EIG2 * talbot_gain()),
    Case("loo_residuals(lr)", lambda th, r, lr: leave_one_out.loo_residuals(th, r, STEPS, lr=lr),
         (THETA, R0, jnp.asarray(0.5)), (0,), _EIG),
    Case("loo_rates", lambda th, r: leave_one_out.loo_rates(th, r, T), (THETA, R0), (0,), _LOO),
    Case("first_order_loo_residuals", lambda th, r: leave_one_out.first_order_loo_residuals(th, r, T),
         (THETA, R0), (0,), _LOO),
    Case("effective_gram", lambda th: eg.effective_gram(th, T), (THETA,), (0,), _LOO),
    Case("effective_gram(lr)", lambda th: eg.effective_gram(th, STEPS, lr=0.5), (THETA,), (0,), _EIG),
    Case("predicted_gap", lambda th, r: eg.predicted_gap(th, r, T), (THETA, R0), (0,), _LOO),
    Case("gap_factors", lambda th, r: jnp.stack(linearized_gap.gap_factors(th, r, T[:3])), (THETA, R0), (0,), _LOO),
    Case("gap_factor_matrices", lambda th: jnp.stack(linearized_gap.gap_factor_matrices(th, T[1:3])),
         (THETA,), (0,), _LOO),
    Case("perturbation_factor", lambda th, r: linearized_gap.perturbation_factor(th, r), (THETA, R0), (0,)),
    Case("in_sample_covariance", lambda th, r: linearized_gap.in_sample_covariance(th, r), (THETA, R0), (0,)),
    Case("loo_trajectory", lambda th, res, lr: trajectory.loo_trajectory(th, res, lr).rho,
         (SNAPSHOTS, RESIDUALS, jnp.asarray(0.3)), (0,), _SNAP),
    Case("trajectory_effective_gram", lambda th, lr: trajectory_gram.trajectory_effective_gram(th, 6, lr).k_matrix,
         (SNAPSHOTS, jnp.asarray(0.3)), (0,), _SNAP),
    Case("spectrum", lambda th: alignment.spectrum(th)[0], (THETA,), (0,), _EIG),
    Case("cumulative_share", lambda th, r: alignment.cumulative_share(th, r), (THETA, R0), (0,), _EIG),
    Case("bottom_share", lambda th, r: alignment.bottom_share(th, r, 2), (THETA, R0), (0,), _EIG),
    Case("gap_components", lambda th, r: alignment.gap_components(th, r)[1], (THETA, R0), (0,), _EIG),
    Case("random_gap_expected", lambda th, s: alignment.random_gap_expected(th, s), (THETA, jnp.asarray(1.5)), (0,)),
    Case("alignment_curve", lambda th, r: alignment.alignment_curve(th, r, T[1:]).predicted_test_loss,
         (THETA, R0), (0,), _LOO),
    Case("trajectory_alignment", lambda th, res: alignment.trajectory_alignment(th, res, 0.3).share_r0,
         (SNAPSHOTS, RESIDUALS), (0,), _SNAP),
    Case("linear_gradient_flow", lambda x, y: gap.linear_gradient_flow(x, y, T), (RESIDUALS[:, :3], R0[:1].repeat(7)),
         (), 1e3),
    Case("linear_gradient_descent", lambda x, y: gap.linear_gradient_descent(x, y, STEPS, 0.2),
         (RESIDUALS[:, :3], RESIDUALS[:, 4]), (), 1e3),
    Case("interval", lambda s: gap.interval(s).half_width, (RESIDUALS,)),
    *[Case(f"empirical_ntk({method}, batch_size={bs})",
           lambda p, x, method=method, bs=bs: ntk.empirical_ntk(_mlp, p, x, method=method, batch_size=bs),
           (PARAMS, X)) for method in ntk.METHODS for bs in (None, 3)],
    Case("empirical_ntk(x2, params2)", lambda p, x: ntk.empirical_ntk(_mlp, p, x, x[:2] + 1.0, params2=PARAMS),
         (PARAMS, X)),
    Case("two_time_kernel", lambda p, x: ntk.two_time_kernel(_mlp, [PARAMS, p], x)(1, 0), (PARAMS, X)),
    Case("per_sample_losses", lambda p, x, y: twins.per_sample_losses(_mlp, p, x, y), (PARAMS, X, Y)),
    Case("gradient_step", lambda p, x, y: twins.gradient_step(_mlp, p, x, y, jnp.ones(4), 0.1)[0]["w1"],
         (PARAMS, X, Y)),
    Case("rayleigh_quotient", lambda p, x, y, v: twins.rayleigh_quotient(_mlp, p, x, y, 1, v), (PARAMS, X, Y, V)),
    Case("twin_trajectories", lambda p, x, y: twins.twin_trajectories(_mlp, p, x, y, 1, lr=0.2, record_at=[1, 3]).delta,
         (PARAMS, X, Y), reverse=False),
    Case("many_twin_trajectories", lambda p, x, y: twins.many_twin_trajectories(
        _mlp, p, jnp.stack([x, x[::-1]]), jnp.stack([y, y]), np.array([0, 2]), lr=0.2, record_at=[2]).loss_u,
         (PARAMS, X, Y), reverse=False),
    Case("trace_gradient_covariance", lambda p, x, y: gap_ode.trace_gradient_covariance(_mlp, p, x, y, 4),
         (PARAMS, X, Y)),
]


def _size(case):
    return max(int(np.size(case.fn(*case.args))), N * N)


def _perturbation(case, key):
    """A direction for every argument: symmetric where the argument is a Gram matrix."""
    leaves, tree = jax.tree_util.tree_flatten(case.args)
    keys = jax.random.split(key, len(leaves))
    out = [jax.random.normal(k, jnp.shape(a), jnp.float64) for k, a in zip(keys, leaves)]
    out = jax.tree_util.tree_unflatten(tree, out)
    return tuple((d + jnp.swapaxes(d, -1, -2)) / 2 if i in case.symmetric else d for i, d in enumerate(out))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jit_equals_eager(case):
    want = case.fn(*case.args)
    got = jax.jit(case.fn)(*case.args)
    assert np.shape(got) == np.shape(want)
    assert_close(got, want, _size(case), cond=case.cond)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_vmap_equals_loop(case):
    """Batch every argument over two problems (the second one moved along a valid direction)."""
    step = _perturbation(case, jax.random.key(1))
    second = jax.tree_util.tree_map(lambda a, d: a + 0.05 * d * (jnp.max(jnp.abs(a)) + 1e-3), case.args, step)
    batched = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), case.args, second)
    got = jax.vmap(case.fn)(*batched)
    want = jnp.stack([case.fn(*case.args), case.fn(*second)])
    assert_close(got, want, _size(case), cond=case.cond)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_grad_equals_finite_differences(case):
    """``⟨∇s, v⟩ = (s(x + hv) − s(x − hv)) / 2h`` for ``s = Σ w ⊙ f`` and a random (valid) direction ``v``.

    Central differences are an approximate method (tests/tolerance.py): truncation ``h² |s'''| / 6``
    and rounding ``ε |s| / h``; with ``h = 1e-5 · scale`` both are below ``1e-9`` of the derivative's
    scale on these smooth problems, so a relative ``1e-6`` leaves room and still catches a wrong
    derivative (off by O(1)).
    """
    weights = jax.random.normal(jax.random.key(3), jnp.shape(case.fn(*case.args)), jnp.float64)

    def scalar(*args):
        return jnp.sum(jnp.nan_to_num(case.fn(*args)) * weights)

    direction = _perturbation(case, jax.random.key(4))
    scale = jax.tree_util.tree_map(lambda a: jnp.max(jnp.abs(a)) + 1e-3, case.args)
    direction = jax.tree_util.tree_map(lambda d, s: d * s, direction, scale)
    if case.reverse:
        grads = jax.grad(scalar, argnums=tuple(range(len(case.args))))(*case.args)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads),
                                                       jax.tree_util.tree_leaves(direction)))
    else:
        analytic = jax.jvp(scalar, case.args, direction)[1]
    h = 1e-5
    plus = jax.tree_util.tree_map(lambda a, d: a + h * d, case.args, direction)
    minus = jax.tree_util.tree_map(lambda a, d: a - h * d, case.args, direction)
    numeric = (scalar(*plus) - scalar(*minus)) / (2 * h)
    assert np.isfinite(float(analytic))
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6,
                               atol=1e-6 * float(jnp.sum(jnp.abs(case.fn(*case.args) * weights))))


# ----------------------------------------------------------------------------- what cannot be transformed

def test_ntk_norm_bound_refuses_tracers_clearly():
    """Its pseudo-inverse keeps the eigenvalues above a numerical rank: a choice on the values."""
    bounds.ntk_norm_bound(THETA, R0)  # concrete: fine
    for transform in (jax.jit, jax.grad):
        with pytest.raises(TypeError, match="ntk_norm_bound cannot run under jax.jit"):
            transform(bounds.ntk_norm_bound)(THETA, R0)


def test_stability_bound_refuses_tracers_clearly():
    with pytest.raises(TypeError, match="stability_bound cannot run under"):
        jax.jit(lambda v: bounds.stability_bound(1.0, v, np.array([0.0, 1.0]), 4))(jnp.ones(2))


def test_integrate_gap_ode_refuses_tracers_clearly():
    with pytest.raises(TypeError, match="integrate_gap_ode cannot run under"):
        jax.jit(lambda c: gap_ode.integrate_gap_ode(c, c, 0.1))(jnp.ones(3))


def test_twin_trajectories_has_no_reverse_mode_as_documented():
    """Its steps between records run in a fori_loop of data-dependent length: jax.jvp works, jax.grad does not."""
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        jax.grad(lambda p: jnp.sum(twins.twin_trajectories(_mlp, p, X, Y, 1, lr=0.2, record_at=[1, 3]).delta))(PARAMS)


def test_times_that_pick_the_formula_must_be_concrete():
    with pytest.raises(TypeError, match="t must be concrete.*close over t"):
        jax.jit(lambda t: leave_one_out.loo_residuals(THETA, R0, t))(1.0)
    with pytest.raises(TypeError, match="t must be concrete"):
        jax.jit(lambda t: eg.effective_gram(THETA, t))(jnp.ones(2))


def test_static_integers_must_be_concrete():
    with pytest.raises(TypeError, match="n must be a concrete integer.*static"):
        jax.jit(lambda n: kernel_flow.residual_loss(R0, n))(N)


def test_structure_is_checked_under_jit():
    """Shapes and dtypes are checked on tracers too, with the messages of the concrete checks."""
    with pytest.raises(ValueError, match="theta must be a square matrix"):
        jax.jit(lambda th: kernel_flow.kernel_residuals(th, R0, 1.0))(THETA[:, :4])
    with pytest.raises(ValueError, match="r0 must have 6 rows"):
        jax.jit(lambda r: leave_one_out.loo_residuals(THETA, r, 1.0))(R0[:4])
    with pytest.raises(ValueError, match="outputs=4 must divide the size of theta"):
        jax.jit(lambda th: kernel_flow.kernel_residuals(th, R0, 1.0, outputs=4))(THETA)


def test_values_are_checked_on_concrete_arrays_only():
    """NaN is refused eagerly; under jit the values are unknown and flow through (as in jax.scipy)."""
    bad = THETA.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="theta contains 1 NaN"):
        kernel_flow.kernel_residuals(bad, R0, 1.0)
    assert np.isnan(np.asarray(jax.jit(lambda th: kernel_flow.kernel_residuals(th, R0, 1.0))(bad))).any()
    asym = THETA.at[0, 1].add(1.0)
    with pytest.raises(ValueError, match="theta must be symmetric"):
        leave_one_out.loo_residuals(asym, R0, 1.0)


def test_value_checks_run_once_per_public_call(monkeypatch):
    """Inside one public call an array's values are checked once; every call checks again."""
    calls = []
    real = _checks._symmetric

    def recording(a, name, *args):
        calls.append(name)
        return real(a, name, *args)

    monkeypatch.setattr(_checks, "_symmetric", recording)
    alignment.bottom_share(THETA, R0, 2)  # checks k_matrix, then calls cumulative_share on it
    assert calls == ["k_matrix"]
    alignment.bottom_share(THETA, R0, 2)
    assert calls == ["k_matrix"] * 2
    with pytest.raises(ValueError, match="r must be nonzero"):  # nothing is skipped that was not checked
        alignment.bottom_share(THETA, jnp.zeros(N), 2)
