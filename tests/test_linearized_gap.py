"""The gap equation of a linearized network (Chapter 5): ``dK_n/dt = −C_n + P_n``.

Ground truths: brute-force twins of a random-features model retrained without each
sample in *weight space* (matrix exponentials of the affine gradient flow, or a
literal gradient-descent loop), with Chapter 3's definitions ``F_i(v) = ∇ℓ(v; z_i)·∇L_S(v)``
and ``(1/n)‖∇ℓ(v_i; z_i)‖²`` evaluated on those weights; and finite differences of
``K_n(t)``. No function-space formula of gramlib enters the references.
"""

import numpy as np
import pytest
from scipy.linalg import expm

from gramlib import effective_gram as eg
from gramlib import gap, gap_ode, kernel_flow
from tests.tolerance import assert_close, cond, talbot_gain, tolerance


def problem(seed, n, outputs, p):
    """Jacobian ``J`` ``(nC, p)`` of a random-features model, targets ``y`` ``(nC,)``, init ``w0``."""
    rng = np.random.default_rng(seed)
    jac = np.tanh(rng.standard_normal((n * outputs, p))) / np.sqrt(p)
    return jac, np.sign(rng.standard_normal(n * outputs)), rng.standard_normal(p)


def flow_weights(jac, y, w0, keep, t, n):
    """Gradient flow of ``(1/2n) Σ_{rows kept} (J w − y)²`` for time ``t``, by the exponential of the affine system."""
    a = (jac * keep[:, None]).T @ jac / n
    b = (jac * keep[:, None]).T @ y / n
    p = len(w0)
    big = np.zeros((p + 1, p + 1))
    big[:p, :p], big[:p, p] = -a, b
    return (expm(big * t) @ np.append(w0, 1.0))[:p]


def descent_weights(jac, y, w0, keep, steps, n, lr):
    w = w0.copy()
    for _ in range(steps):
        w = w - lr * (jac * keep[:, None]).T @ (jac @ w - y) / n
    return w


def brute_force_terms(jac, y, w0, t, outputs, lr=None):
    """(gap, contraction, perturbation) from retrained twins and Chapter 3's definitions."""
    big_n = len(y)
    n = big_n // outputs
    owner = np.repeat(np.arange(n), outputs)
    train = (lambda keep: flow_weights(jac, y, w0, keep, t, n)) if lr is None else \
        (lambda keep: descent_weights(jac, y, w0, keep, t, n, lr))
    w = train(np.ones(big_n))
    r = jac @ w - y
    grad_ls = jac.T @ r / n
    gap_sum = contraction = perturbation = 0.0
    for i in range(n):
        rows = owner == i
        v = train((~rows).astype(float))
        rho = jac[rows] @ v - y[rows]
        g_twin = jac[rows].T @ rho                      # ∇ℓ(v_i; z_i)
        g_run = jac[rows].T @ r[rows]                   # ∇ℓ(w; z_i)
        f_twin = g_twin @ (jac.T @ (jac @ v - y) / n)   # F_i(v_i), with the full ∇L_S
        gap_sum += rho @ rho - r[rows] @ r[rows]
        contraction += f_twin - g_run @ grad_ls
        perturbation += g_twin @ g_twin / n
    return gap_sum / (2 * n), contraction / n, perturbation / n


@pytest.mark.parametrize("outputs", [1, 3])
def test_gap_factors_against_brute_force_twins(outputs):
    jac, y, w0 = problem(1, 5, outputs, 9)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    times = np.array([0.0, 0.7, 6.0, 50.0])
    got = eg.gap_factors(theta, r0, times, outputs=outputs)
    for k, t in enumerate(times):
        want = brute_force_terms(jac, y, w0, t, outputs)
        # gradient flow at t > 0: the 32-node Talbot inversion's own error (≈ 1e-10 relative) bounds it
        np.testing.assert_allclose([got.gap[k], got.contraction[k], got.perturbation[k]], want,
                                   rtol=1e-8, atol=1e-11)
    assert got.gap[0] == 0.0   # no gap, and no contraction at t = 0 (up to rounding of N-term products)
    assert abs(got.contraction[0]) <= tolerance(np.float64, len(y)) * np.abs(got.contraction).max()


def test_the_derivative_of_k_n_is_minus_c_n_plus_p_n():
    jac, y, w0 = problem(2, 7, 1, 5)  # p < n: Θ singular, a null space the flow never leaves
    theta = jac @ jac.T
    h = 1e-4
    for t in (0.3, 4.0, 40.0):
        k = eg.effective_gram(theta, np.array([t - h, t + h]))
        m = eg.gap_factor_matrices(theta, t)
        # a central difference with h = 1e-4: error O(h² K''') ≈ 1e-8, plus the Talbot inversion's own error
        np.testing.assert_allclose((k[1] - k[0]) / (2 * h), m.perturbation - m.contraction, atol=1e-8)
        assert_close(m.gap, eg.effective_gram(theta, t), 7, cond=talbot_gain())  # two Talbot sums
        eigenvalues = np.linalg.eigvalsh(m.perturbation)  # P_n is positive semidefinite, up to rounding
        assert eigenvalues.min() >= -tolerance(np.float64, 7, cond=talbot_gain()) * eigenvalues.max()
        r0 = jac @ w0 - y
        f = eg.gap_factors(theta, r0, t)
        assert_close([r0 @ m.gap @ r0, r0 @ m.contraction @ r0, r0 @ m.perturbation @ r0],
                     [f.gap, f.contraction, f.perturbation], 7 * 7, cond=talbot_gain())  # quadratic forms of Talbot sums


def test_at_convergence_the_two_factors_balance():
    jac, y, w0 = problem(3, 6, 2, 20)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    f = eg.gap_factors(theta, r0, np.array([1e5, np.inf]), outputs=2)
    np.testing.assert_allclose(f.contraction, f.perturbation, rtol=1e-8)  # t = 1e5: decayed like e^{−λ_min t/n}
    np.testing.assert_allclose(f.gap[1], float(eg.predicted_gap(theta, r0, np.inf, outputs=2)),
                               rtol=tolerance(np.float64, 12, cond=cond(theta) ** 2))  # two solves with Θ


def test_gradient_descent_exact_step_identity():
    jac, y, w0 = problem(4, 5, 1, 8)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    lr, steps = 1.3, np.array([0, 1, 4, 9])
    f = eg.gap_factors(theta, r0, steps, lr=lr)
    nxt = eg.gap_factors(theta, r0, steps + 1, lr=lr)
    for k, s in enumerate(steps):
        want = brute_force_terms(jac, y, w0, int(s), 1, lr=lr)
        assert_close([f.gap[k], f.contraction[k], f.perturbation[k]], want, max(int(s), 1) * 5 * 8, cond=cond(theta))
    rho = np.asarray(eg.loo_residuals(theta, r0, np.concatenate([steps, steps + 1]), lr=lr))
    from gramlib import ntk
    r = np.asarray(kernel_flow.kernel_residuals(theta, r0, np.concatenate([steps, steps + 1]), lr=lr))
    m = len(steps)
    remainder = (np.sum((rho[m:] - rho[:m]) ** 2, 1) - np.sum((r[m:] - r[:m]) ** 2, 1)) / (2 * len(r0))
    assert_close(nxt.gap - f.gap, lr * (f.perturbation - f.contraction) + remainder, 10 * 5, cond=cond(theta),
                 scale=np.abs(f.gap).max())  # differences of the gaps: their size is the scale


def test_the_integrated_equation_lands_on_r0_k_r0():
    """Chapter 3's solution formula with c̄ = contraction/gap and ε̄, integrated (second order)."""
    jac, y, w0 = problem(5, 8, 1, 30)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    errors = []
    for points in (100, 200, 400):
        t = np.concatenate([[0.0], np.geomspace(1e-3, 200.0, points)])
        f = eg.gap_factors(theta, r0, t)
        cbar = np.divide(f.contraction, f.gap, out=np.full_like(f.gap, np.nan), where=f.gap != 0)
        delta = gap_ode.integrate_gap_ode(cbar, f.perturbation, np.diff(t), method="trapezoid")
        errors.append(abs(delta[-1] - f.gap[-1]) / f.gap[-1])
    assert errors[-1] < 1e-4  # the trapezoid rule's own error (second order), not rounding
    assert 3.0 < errors[0] / errors[1] < 5.0 and 3.0 < errors[1] / errors[2] < 5.0  # second order


def test_perturbation_factor_at_the_twin_not_in_sample():
    """The 6-sample problem of issue 12: at t = 50 the run interpolates but the twins do not."""
    jac, y, w0 = problem(6, 6, 1, 40)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    n, t = 6, 50.0
    twins = np.array([(jac[i] @ flow_weights(jac, y, w0, (np.arange(n) != i).astype(float), t, n)) - y[i]
                      for i in range(n)])
    want = sum(theta[i, i] * twins[i] ** 2 for i in range(n)) / n**2
    assert abs(eg.perturbation_factor(theta, twins) - want) <= tolerance(np.float64, n) * want
    assert abs(eg.gap_factors(theta, r0, t).perturbation - want) < 1e-9 * want  # Talbot inversion's own error
    r = jac @ flow_weights(jac, y, w0, np.ones(n), t, n) - y
    assert eg.in_sample_covariance(theta, r) < 1e-2 * want   # the surrogate has decayed with r(t)


@pytest.mark.parametrize("outputs", [1, 3])
def test_in_sample_covariance_is_the_per_sample_gradient_covariance(outputs):
    rng = np.random.default_rng(8)
    n, p = 10, 25
    jac = rng.standard_normal((n, outputs, p))
    theta = jac.reshape(n * outputs, p) @ jac.reshape(n * outputs, p).T
    r = rng.standard_normal((n, outputs))
    grads = np.einsum("icp,ic->ip", jac, r)            # g_i = J_iᵀ r_i
    want = np.trace(np.cov(grads.T, bias=True)) / n
    rule = tolerance(np.float64, n * outputs * p)  # sums over samples, outputs and parameters
    assert abs(eg.in_sample_covariance(theta, r.ravel(), outputs=outputs) - want) <= rule * want
    twin = sum(np.sum(grads[i] ** 2) for i in range(n)) / n**2   # ρ = r: Σ ‖J_iᵀ ρ_i‖² / n²
    assert abs(eg.perturbation_factor(theta, r.ravel(), outputs=outputs) - twin) <= rule * twin


def test_two_point_example_from_k_n():
    """Chapter 1's exact gap of the two-point example, from K_n and duplicated inputs."""
    for n in (3, 5, 12):
        for t in (0.5, 3.0, 40.0):
            assert abs(gap.two_point_loo_gap(n, t) - 2 * gap.two_point_gap(n, t)) < 1e-10  # Talbot's own error
        assert gap.two_point_loo_gap(n, np.inf) == pytest.approx(gap.two_point_gap(n - 1, np.inf),
                                                                rel=tolerance(np.float64, n * n))  # K_n: n² terms
    theta, r0 = gap.two_point_problem(np.array([0, 0, 1]), targets=(1.0, -2.0))
    assert_close(eg.loo_residuals(theta, r0, np.inf), [0.0, 0.0, 2.0], 3, cond=cond(theta))


def test_bad_inputs_raise():
    jac, y, w0 = problem(7, 4, 1, 6)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    with pytest.raises(ValueError, match="rho must have shape"):
        eg.perturbation_factor(theta, r0[:-1])
    with pytest.raises(ValueError, match="rho contains"):
        eg.perturbation_factor(theta, np.full(4, np.nan))
    with pytest.raises(ValueError, match="symmetric"):
        eg.gap_factors(theta + np.triu(np.ones((4, 4)), 1), r0, 1.0)
    with pytest.raises(ValueError, match="t"):
        eg.gap_factors(theta, r0, -1.0)
    with pytest.raises(ValueError, match="r0"):
        eg.gap_factors(theta, r0[:3], 1.0)
    with pytest.raises(ValueError, match="outputs"):
        eg.in_sample_covariance(theta, r0, outputs=3)
    with pytest.raises(ValueError, match="method"):
        gap_ode.integrate_gap_ode(np.ones(3), np.ones(3), 0.1, method="rk4")
