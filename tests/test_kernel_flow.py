"""The factorization ``Θ = U Λ Uᵀ`` computed once and shared by every linearized-dynamics function;
its null-space tolerance on float32 kernels; ``lr`` as a traced argument; the signed power of
gradient descent; and leave-one-out residuals split over devices (``mesh``)."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib import (alignment, baselines, bounds, data, devices, effective_gram, gap, kernel_flow,
                     leave_one_out, linearized_gap, models, predict, predicted_loss)
from tests.simulated_devices import run_on_devices
from tests.tolerance import assert_close, talbot_gain, tolerance

RNG = np.random.default_rng(11)


def problem(n, c=1, p=None):
    """A random Gram matrix of ``n`` samples with ``c`` outputs, an initial residual and test rows."""
    p = p or 2 * n * c
    j = RNG.standard_normal((n * c + 3, p)) / np.sqrt(p)
    theta = j @ j.T
    return theta[: n * c, : n * c], RNG.standard_normal(n * c), theta[n * c:, : n * c], RNG.standard_normal(3)


@pytest.fixture
def eigh_calls(monkeypatch):
    """Count the eigendecompositions of :func:`gramlib.kernel_flow.factorize`."""
    calls = []
    original = kernel_flow._eigh

    def counted(theta):
        calls.append(theta.shape)
        return original(theta)

    monkeypatch.setattr(kernel_flow, "_eigh", counted)
    return calls


CALLS = {  # name: function of (theta, r0, theta_test, r0_test, lr)
    "kernel_residuals": lambda th, r, tt, rt, lr: kernel_flow.kernel_residuals(th, r, [0, 3, 9], lr=lr),
    "kernel_test_residuals": lambda th, r, tt, rt, lr: kernel_flow.kernel_test_residuals(th, tt, r, rt, [2, 7],
                                                                                         lr=lr),
    "loo_residuals": lambda th, r, tt, rt, lr: effective_gram.loo_residuals(th, r, [0, 4, np.inf], lr=lr),
    "predicted_gap": lambda th, r, tt, rt, lr: effective_gram.predicted_gap(th, r, [1, 6], lr=lr),
    "effective_gram": lambda th, r, tt, rt, lr: effective_gram.effective_gram(th, [2, 5], lr=lr),
    "gap_factors": lambda th, r, tt, rt, lr: np.stack(effective_gram.gap_factors(th, r, [0, 3], lr=lr)),
    "gap_factor_matrices": lambda th, r, tt, rt, lr: np.stack(effective_gram.gap_factor_matrices(th, 4, lr=lr)),
    "effective_grams": lambda th, r, tt, rt, lr: alignment.effective_grams(th, [2, 8], lr=lr).k_matrices,
    "alignment_curve": lambda th, r, tt, rt, lr: alignment.alignment_curve(th, r, [2, 8], lr=lr).gap,
    "gcv": lambda th, r, tt, rt, lr: baselines.gcv(th, r, [3, 8], lr=lr),
    "linearized_loss": lambda th, r, tt, rt, lr: baselines.linearized_loss(th, r, 5, lr=lr)[1],
    "first_order_loo_residuals": lambda th, r, tt, rt, lr: effective_gram.first_order_loo_residuals(th, r, [1, 4]),
    "loo_rates": lambda th, r, tt, rt, lr: leave_one_out.loo_rates(th, r, [0, 2, np.inf]),
    "ntk_norm_bound": lambda th, r, tt, rt, lr: bounds.ntk_norm_bound(th, r),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("lr", [None, 0.7])
def test_a_factorization_gives_the_results_of_the_matrix_with_one_eigendecomposition(name, lr, eigh_calls):
    theta, r0, theta_test, r0_test = problem(6)
    call = CALLS[name]
    want = np.asarray(call(theta, r0, theta_test, r0_test, lr))
    fact = kernel_flow.factorize(theta)
    assert isinstance(fact, kernel_flow.Factorization) and (fact.n, fact.outputs) == (6, 1)
    del eigh_calls[:]
    got = np.asarray(call(fact, r0, theta_test, r0_test, lr))
    assert eigh_calls == []  # nothing is decomposed again
    # the same eigendecomposition behind both: rounding of n = 6 terms, conditioned by Θ and the Talbot sum
    assert_close(got, want, 6, cond=np.linalg.cond(theta) * talbot_gain(), scale=max(1.0, np.max(np.abs(want))))


def test_the_matrix_and_its_factorization_agree_with_several_outputs():
    theta, r0, theta_test, _ = problem(5, 3)
    fact = kernel_flow.factorize(theta, outputs=3)
    pairs = [
        (effective_gram.loo_residuals(theta, r0, [0.5, np.inf], outputs=3), effective_gram.loo_residuals(fact, r0, [0.5, np.inf])),
        (effective_gram.effective_gram(theta, 2, outputs=3, lr=0.5), effective_gram.effective_gram(fact, 2, lr=0.5)),
        (baselines.gcv(theta, r0, 4.0, outputs=3), baselines.gcv(fact, r0, 4.0)),
        (bounds.ntk_norm_bound(theta, r0.reshape(5, 3)), bounds.ntk_norm_bound(fact, r0.reshape(5, 3))),
        (bounds.ntk_norm_bound(fact, r0), bounds.ntk_norm_bound(fact, r0.reshape(5, 3))),
    ]
    for want, got in pairs:  # nC = 15 terms, conditioned by Θ and the Talbot sum
        assert_close(got, want, 15, cond=np.linalg.cond(theta) * talbot_gain(), scale=max(1.0, np.max(np.abs(want))))


def test_an_explicit_outputs_must_agree_with_the_factorization():
    theta, r0, _, _ = problem(4, 2)
    fact = kernel_flow.factorize(theta, outputs=2)
    assert kernel_flow.factorize(fact) is fact and kernel_flow.factorize(fact, outputs=2) is fact
    for call in [lambda: effective_gram.loo_residuals(fact, r0, 1.0, outputs=1),
                 lambda: kernel_flow.kernel_residuals(fact, r0, 1.0, outputs=4),
                 lambda: baselines.gcv(fact, r0, 1.0, outputs=1),
                 lambda: kernel_flow.factorize(fact, outputs=1)]:
        with pytest.raises(ValueError, match="outputs"):
            call()
    with pytest.raises(ValueError, match="r0"):
        effective_gram.loo_residuals(fact, r0[:-1], 1.0)
    with pytest.raises(ValueError, match="positive semidefinite"):
        kernel_flow.factorize(-theta)


def test_the_book_calls_decompose_each_kernel_once(eigh_calls):
    theta, r0, _, _ = problem(7)
    alignment.alignment_curve(theta, r0, [1.0, 5.0])
    effective_gram.gap_factors(theta, r0, [0.0, 2.0])
    baselines.linearized_loss(theta, r0, 3.0)
    assert len(eigh_calls) == 3
    del eigh_calls[:]
    ds = data.digits(12, 10, key=jax.random.PRNGKey(0))
    model = models.mlp(64, 16, 1, dtype=jnp.float64)
    p = predicted_loss.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=6, snapshots=2,
                                  brute_force=0, progress=False)
    assert len(eigh_calls) == 1  # Θ_0 once, for GCV, the linearized baseline and the NTK-norm bound
    assert p.ntk_bound == bounds.ntk_norm_bound(p.run.thetas[0], ds.y_train)


# ------------------------------------------------------------------------- null-space tolerance


def ill_conditioned(n, ratio, key):
    """``U diag(λ) Uᵀ`` with ``λ`` log-spaced from 1 down to ``ratio`` (float64)."""
    u, _ = np.linalg.qr(np.random.default_rng(key).standard_normal((n, n)))
    lam = np.logspace(0, np.log10(ratio), n)
    theta = (u * lam) @ u.T
    return (theta + theta.T) / 2


def test_a_well_conditioned_float32_kernel_has_a_finite_ntk_norm_bound():
    """λ_min / λ_max = 2.5e-4 lies between N ε₃₂ (4.8e-5) and the former tolerance 10 N ε₃₂ (4.8e-4)."""
    n = 400
    theta = ill_conditioned(n, 2.5e-4, 3)
    y = np.sign(np.random.default_rng(4).standard_normal(n))
    f64 = bounds.ntk_norm_bound(theta, y)
    f32 = bounds.ntk_norm_bound(theta.astype(np.float32), y)
    cond = 1 / 2.5e-4  # a backward-stable eigh, then a solve: float32 rounding amplified by cond(Θ)
    assert np.isfinite(f32) and abs(f32 - f64) < tolerance(np.float32, cond=cond) * f64, (f32, f64)
    fact = kernel_flow.factorize(theta.astype(np.float32))
    assert fact.eigenvalues.dtype == jnp.float32 and fact.tol == pytest.approx(n * np.finfo(np.float32).eps,
                                                                               rel=tolerance(np.float32))
    assert np.all(np.asarray(fact.eigenvalues) > fact.tol)  # no direction is declared null
    np.testing.assert_allclose(baselines.gcv(fact, y, 50.0), baselines.gcv(theta, y, 50.0),
                               rtol=tolerance(np.float32, cond=cond))


def test_singular_kernels_keep_their_null_space_in_float64():
    """Exactly repeated inputs: the null eigenvalues stay below N ε λ_max, so the bound stays finite on the range."""
    x = RNG.standard_normal((6, 9))
    for m in range(2, 7):
        xs = np.vstack([x[:m], x[:m], x[:1]])
        theta, y = xs @ xs.T, np.concatenate([x[:m, 0], x[:m, 0], x[:1, 0]])
        fact = kernel_flow.factorize(theta)
        assert int(np.sum(np.asarray(fact.eigenvalues) <= fact.tol)) == m + 1
        assert np.isfinite(bounds.ntk_norm_bound(fact, y))
        assert bounds.ntk_norm_bound(fact, y + RNG.standard_normal(y.size)) == np.inf


def test_one_ntk_norm_bound_for_chapters_1_and_7():
    assert gap.ntk_norm_bound is bounds.ntk_norm_bound is baselines.ntk_norm_bound
    theta, r0, _, _ = problem(6)
    assert bounds.ntk_norm_bound(theta, r0) == pytest.approx(np.sqrt(2 * r0 @ np.linalg.solve(theta, r0) / 6),
                                                             rel=tolerance(np.float64, 6, cond=np.linalg.cond(theta)))


# ------------------------------------------------------------------------- lr, traced


def test_a_second_learning_rate_does_not_compile_again():
    theta, r0, theta_test, r0_test = problem(5)
    calls = [
        (kernel_flow._residual_map, lambda lr: kernel_flow.kernel_residuals(theta, r0, [2, 5], lr=lr)),
        (kernel_flow._test_map, lambda lr: kernel_flow.kernel_test_residuals(theta, theta_test, r0, r0_test, 4, lr=lr)),
        (leave_one_out._loo_descent, lambda lr: effective_gram.loo_residuals(theta, r0, [2, 5], lr=lr)),
        (effective_gram._gram_from_maps, lambda lr: effective_gram.effective_gram(theta, [2, 5], lr=lr)),
    ]
    for jitted, call in calls:
        first = np.asarray(call(0.3))
        size = jitted._cache_size()
        second = np.asarray(call(0.45))
        assert jitted._cache_size() == size, jitted
        assert np.max(np.abs(first - second)) > 1e-6  # the new rate is used


def test_descent_power_against_explicit_powers():
    x = np.array([0.0, 1e-12, 0.3, 0.5, 0.9, 1.0, 1.4, 2.0, 2.7])
    for k in [0, 1, 2, 7, 30]:
        power, one_minus = (np.asarray(a) for a in kernel_flow.descent_power(jnp.asarray(x), jnp.full(x.shape, float(k))))
        want = np.array([(1 - v) ** k for v in x])
        rule = tolerance(np.float64, max(k, 1))  # k factors
        np.testing.assert_allclose(power, want, rtol=rule, atol=1e-300)
        np.testing.assert_allclose(one_minus, 1 - want, rtol=rule, atol=rule)  # atol: the 1 in 1 − (1 − x)^k
    tiny = np.asarray(kernel_flow.descent_power(jnp.asarray([1e-12]), jnp.asarray([3.0]))[1])
    x = 1e-12  # 1 − (1 − x)³ = 3x − 3x² + x³ to full relative precision, without cancellation
    assert tiny[0] == pytest.approx(3 * x - 3 * x * x + x ** 3, rel=tolerance(np.float64, 3))


# ------------------------------------------------------------------------- devices

SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from gramlib import devices, effective_gram, leave_one_out
    from tests.tolerance import talbot_gain

    out = {"devices": len(jax.devices())}
    rng = np.random.default_rng(0)
    j = rng.standard_normal((33, 50)) / np.sqrt(50)
    theta, r0 = j @ j.T, rng.standard_normal(33)  # 11 samples: not a multiple of 4 devices
    t = np.array([0.0, 0.5, 10.0, 1e3, np.inf])
    mesh = devices.sample_mesh()
    for c, th, r in [(3, theta, r0), (1, theta[::3, ::3], r0[:11])]:
        one = effective_gram.loo_residuals(th, r, t, outputs=c)
        many = effective_gram.loo_residuals(th, r, t, outputs=c, mesh=mesh)
        out[f"cond_{c}"] = float(np.linalg.cond(th)) * talbot_gain()
        out[f"loo_diff_{c}"] = float(jnp.max(jnp.abs(many - one)) / jnp.max(jnp.abs(one)))
        out[f"loo_moved_{c}"] = float(jnp.max(jnp.abs(one[-1] - r)))
        rate = leave_one_out.loo_rates(th, r, t[1:3], outputs=c)
        out[f"rate_diff_{c}"] = float(jnp.max(jnp.abs(leave_one_out.loo_rates(th, r, t[1:3], outputs=c, mesh=mesh)
                                                      - rate)) / jnp.max(jnp.abs(rate)))
    print("RESULT" + json.dumps(out))
''')


def test_loo_residuals_over_four_devices_equal_one_device():
    """The samples split over 4 simulated CPU devices (a subprocess, so the other tests keep one device)."""
    result = run_on_devices(SCRIPT)
    assert result["devices"] == 4
    for c in [1, 3]:  # equal up to rounding in float64: 11·c terms, conditioned by Θ and the Talbot sum
        bound = tolerance(np.float64, 11 * c, cond=result[f"cond_{c}"])
        for key in [f"loo_diff_{c}", f"rate_diff_{c}"]:
            assert result[key] <= bound, (key, result[key], bound)
    assert result["loo_moved_1"] > 1e-3 and result["loo_moved_3"] > 1e-3  # LOO differs from r0 (not trivial)


def test_mesh_is_checked_and_one_device_mesh_changes_nothing():
    theta, r0, _, _ = problem(5)
    mesh = devices.sample_mesh()
    assert_close(effective_gram.loo_residuals(theta, r0, [0.5, 3.0], mesh=mesh),
                 effective_gram.loo_residuals(theta, r0, [0.5, 3.0]), 5, cond=np.linalg.cond(theta) * talbot_gain())
    with pytest.raises(ValueError, match="lr"):
        effective_gram.loo_residuals(theta, r0, 3, lr=0.5, mesh=mesh)
    with pytest.raises(TypeError, match="mesh"):
        effective_gram.loo_residuals(theta, r0, 3.0, mesh="gpu")
    with pytest.raises(ValueError, match="theta"):
        effective_gram.loo_residuals(np.ones((3, 2)), np.ones(3), 1.0, mesh=mesh)
    with pytest.raises(ValueError, match="v must have shape"):
        kernel_flow.own_blocks(theta, r0)
    assert linearized_gap.gap_factors is effective_gram.gap_factors
