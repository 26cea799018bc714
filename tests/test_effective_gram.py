"""Chapter 5: leave-one-out residuals and the effective Gram matrix against brute-force retraining.

The ground truth retrains a random-features model f(x) = J(x) w without each
sample, in parameter space (eigendecomposition of the twin's p×p Hessian, and a
literal gradient-descent loop for small step counts): no function-space formula
of gramlib is involved.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small dense algebra; threads only contend

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gramlib import effective_gram as eg  # noqa: E402
from gramlib import kernel_flow, ntk  # noqa: E402
from tests.tolerance import assert_close, cond, tolerance  # noqa: E402

TIMES = np.array([1.0, 10.0, 100.0, 1e4, np.inf])
LR = 10.0


def random_features(key, n, outputs, p, d=5, duplicate=None):
    """Jacobian rows (n*C, p) of f_c(x) = Σ_j w_j tanh(a_jc·x + b_jc)/sqrt(p), targets, init."""
    rng = np.random.default_rng(key)
    x = rng.standard_normal((n, d))
    if duplicate is not None:
        for i, j in duplicate:
            x[i] = x[j]
    a = rng.standard_normal((p, outputs, d))
    b = rng.standard_normal((p, outputs))
    jac = np.tanh(np.einsum("pcd,nd->ncp", a, x) + b.T[None]) / np.sqrt(p)  # (n, C, p)
    y = np.sign(x[:, :1] + 0.3 * rng.standard_normal((n, outputs)))
    if duplicate is not None:
        for i, j in duplicate:
            y[i] = y[j]
    w0 = rng.standard_normal(p)
    return jac.reshape(n * outputs, p), y.reshape(-1), w0


def brute_force_loo(jac, y, w0, times, outputs, lr=None):
    """Retrain without each sample (loss (1/2n) Σ_{j≠i}, same w0); residual at the left-out sample."""
    big_n, p = jac.shape
    n = big_n // outputs
    r0 = jac @ w0 - y
    out = np.zeros((len(times), big_n))
    for i in range(n):
        rows = np.r_[0:i * outputs, (i + 1) * outputs:big_n]
        own = slice(i * outputs, (i + 1) * outputs)
        hess = jac[rows].T @ jac[rows] / n
        grad0 = jac[rows].T @ r0[rows] / n
        g, v = np.linalg.eigh(hess)
        coef = v.T @ grad0
        tol = tolerance(hess.dtype, p) * g.max()  # the null space: eigenvalues that are zero up to rounding
        for k, t in enumerate(times):
            if np.isinf(t):
                gain = np.where(g > tol, 1.0 / np.where(g > tol, g, 1.0), 0.0)
            elif lr is None:
                gain = np.where(g > 0, -np.expm1(-np.maximum(g, 0) * t) / np.where(g > 0, g, 1.0), t)
            else:
                gain = np.where(np.abs(g) > 0, (1 - (1 - lr * g) ** t) / np.where(np.abs(g) > 0, g, 1.0), lr * t)
            delta = -v @ (gain * coef)
            out[k, own] = r0[own] + jac[own] @ delta
    return out


def literal_descent_loo(jac, y, w0, steps, outputs, lr):
    """Plain gradient-descent loops on every twin (small step counts only)."""
    big_n, p = jac.shape
    n = big_n // outputs
    out = np.zeros(big_n)
    for i in range(n):
        keep = np.ones(big_n, bool)
        keep[i * outputs:(i + 1) * outputs] = False
        w = w0.copy()
        for _ in range(steps):
            w = w - lr / n * jac[keep].T @ (jac[keep] @ w - y[keep])
        out[~keep] = jac[~keep] @ w - y[~keep]
    return out


@pytest.fixture(scope="module", params=[1, 3], ids=["scalar", "3-outputs"])
def problem(request):
    outputs = request.param
    jac, y, w0 = random_features(0, 40, outputs, p=100 if outputs == 1 else 200)
    return jac, y, w0, outputs


@pytest.mark.parametrize("lr", [None, LR], ids=["flow", "descent"])
def test_loo_residuals_match_brute_force(problem, lr):
    jac, y, w0, outputs = problem
    theta, r0 = jac @ jac.T, jac @ w0 - y
    assert 1 < LR * np.linalg.eigvalsh(theta).max() / 40 < 2  # some directions oscillate, stably
    want = brute_force_loo(jac, y, w0, TIMES, outputs, lr)
    got = np.asarray(eg.loo_residuals(theta, r0, TIMES, outputs=outputs, lr=lr))
    err = np.abs(got - want).max(axis=1)
    print(f"\n{'flow' if lr is None else f'descent lr={lr}'}, outputs={outputs}: max abs diff per t "
          + ", ".join(f"{t:g}: {e:.1e}" for t, e in zip(TIMES, err)))
    # exact closed forms (descent; t = ∞) by the rule: p terms per weight, conditioned by Θ; gradient flow at
    # finite t goes through the 32-node Talbot inversion, whose own error (≈ 1e-10 relative, Trefethen,
    # Weideman & Schmelzer 2006) bounds it at 1e-8 of the residuals' scale
    exact = tolerance(np.float64, jac.shape[1], cond=cond(theta)) * np.abs(want).max()
    bound = np.where(np.isinf(TIMES) | (lr is not None), exact, 1e-8 * np.abs(want).max())
    assert np.all(err <= bound), (err, bound)
    assert np.abs(want[-1] - want[0]).max() > 0.1  # the times are genuinely different


def test_brute_force_descent_is_literal_descent(problem):
    jac, y, w0, outputs = problem
    want = brute_force_loo(jac, y, w0, [7.0], outputs, LR)[0]
    assert_close(literal_descent_loo(jac, y, w0, 7, outputs, LR), want, 7 * jac.shape[1], cond=cond(theta_of(jac)))


def theta_of(jac):
    return jac @ jac.T


SMALL = 12  # samples in the small problems (few distinct shapes: fewer compilations)


def test_loo_at_time_zero_and_infinite_closed_form():
    jac, y, w0 = random_features(1, SMALL, 1, p=40)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    np.testing.assert_array_equal(eg.loo_residuals(theta, r0, 0.0), r0)
    inv = np.linalg.inv(theta)
    assert_close(eg.loo_residuals(theta, r0, np.inf), inv @ r0 / np.diag(inv), SMALL, cond=cond(theta))


def test_rank_deficient_theta_limit():
    """p < N: Θ singular without duplicates; t = ∞ is the limit of brute-force retraining."""
    jac, y, w0 = random_features(2, 40, 1, p=20)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    want = brute_force_loo(jac, y, w0, [1e3, np.inf], 1)
    got = np.asarray(eg.loo_residuals(theta, r0, [1e3, np.inf]))
    assert np.abs(got[0] - want[0]).max() < 1e-8 * np.abs(want).max()  # t = 1e3: the Talbot inversion's own error
    assert_close(got[1], want[1], jac.shape[1], cond=cond(theta))  # t = ∞: closed forms on the range of Θ


@pytest.mark.parametrize("outputs", [1, 3])
def test_duplicated_inputs(outputs):
    jac, y, w0 = random_features(3, SMALL, outputs, p=80, duplicate=[(0, 1), (5, 9)])
    theta, r0 = jac @ jac.T, jac @ w0 - y
    assert np.linalg.eigvalsh(theta)[0] < tolerance(theta.dtype, len(theta)) * np.linalg.eigvalsh(theta)[-1]  # singular
    times = np.array([10.0, 1e4, 1e8, np.inf])
    for lr in (None, 1.0):
        got = np.asarray(eg.loo_residuals(theta, r0, times, outputs=outputs, lr=lr))
        assert np.all(np.isfinite(got))
        want = brute_force_loo(jac, y, w0, times[:2], outputs, lr)
        scale = np.abs(want).max()
        if lr is None:  # gradient flow at finite t: the Talbot inversion's own error
            assert np.abs(got[:2] - want).max() < 1e-8 * scale
        else:
            assert_close(got[:2], want, jac.shape[1], cond=cond(theta), scale=scale)
        for i in (0, 1, 5, 9):  # a sample whose twin stays in the data: LOO residual → 0
            block = slice(i * outputs, (i + 1) * outputs)
            assert_close(got[-1, block], 0.0, len(theta), cond=cond(theta), scale=scale)  # t = ∞: exactly 0
            assert np.abs(got[-2, block]).max() < 1e-6  # t = 1e8: decays like exp(−λ_min t / n), not rounding
    np.testing.assert_allclose(got[-1], got[-2], atol=1e-6)  # the limit is continuous (same decay at t = 1e8)


@pytest.mark.parametrize("outputs,lr", [(1, None), (3, None), (3, 1.0)])
def test_effective_gram_is_the_gap_quadratic_form(outputs, lr):
    n = SMALL
    jac, _, w0 = random_features(4, n, outputs, p=60)
    theta = jac @ jac.T
    times = np.array([0.0, 3.0, 300.0, np.inf])
    k = np.asarray(eg.effective_gram(theta, times, outputs=outputs, lr=lr))
    np.testing.assert_array_equal(k[0], 0.0)
    np.testing.assert_array_equal(k, np.swapaxes(k, 1, 2))
    y = np.random.default_rng(5).standard_normal(n * outputs)  # any r0: fresh labels
    r0 = jac @ w0 - y
    rho = brute_force_loo(jac, y, w0, times, outputs, lr)
    r = np.asarray(kernel_flow.kernel_residuals(theta, r0, times, outputs=outputs, lr=lr))
    gap = (np.sum(rho**2, axis=1) - np.sum(r**2, axis=1)) / (2 * n)
    assert np.abs(gap[1:]).min() > 1e-3
    # t = 3, 300 by gradient flow: the Talbot inversion's own error (1e-8 of the gap); else the rule
    # (p terms per weight and N per contraction, conditioned by Θ), relative to the squared residuals' scale
    scale = np.sum(rho**2, axis=1).max() / (2 * n)
    bound = (1e-8 if lr is None else tolerance(np.float64, 60 * n * outputs, cond=cond(theta))) * scale
    np.testing.assert_allclose(np.einsum("i,tij,j->t", r0, k, r0), gap, rtol=0, atol=bound)
    if outputs == 1:  # (fewer compilations: the 3-output cases are covered by the quadratic form)
        np.testing.assert_allclose(eg.predicted_gap(theta, r0, times, lr=lr), gap, rtol=0, atol=bound)
        rho_3 = eg.loo_residuals(theta, r0, 3, lr=lr)  # a scalar time gives one (N,) answer
        assert rho_3.shape == (n,)
        np.testing.assert_allclose(rho_3, rho[1], rtol=0, atol=bound / scale * np.abs(rho[1]).max())


def test_effective_gram_at_infinity_closed_form():
    jac, _, _ = random_features(6, SMALL, 1, p=30)
    theta = jac @ jac.T
    inv = np.linalg.inv(theta)
    dinv2 = np.diag(1.0 / np.diag(inv) ** 2)
    assert_close(eg.effective_gram(theta, np.inf), inv @ dinv2 @ inv / (2 * SMALL), SMALL, cond=cond(theta) ** 2)


@pytest.mark.parametrize("outputs", [1, 3])
def test_loo_trajectory_matches_constant_kernel(outputs):
    jac, y, w0 = random_features(7, SMALL, outputs, p=50)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    steps = 60
    r = np.asarray(kernel_flow.kernel_residuals(theta, r0, np.arange(steps + 1), outputs=outputs, lr=LR))
    got = eg.loo_trajectory(np.stack([theta] * 3), r, LR, outputs=outputs).rho
    want = eg.loo_residuals(theta, r0, steps, outputs=outputs, lr=LR)
    assert_close(got, want, steps * SMALL * outputs, cond=cond(theta))  # a scan of 60 steps vs a closed form


def test_loo_trajectory_with_moving_kernel_matches_twin_runs():
    """Piecewise-constant Θ_k: every twin run literally, r^(i)_{k+1} = r^(i)_k − (η/n) Θ_k P_{-i} r^(i)_k."""
    outputs, n, steps, lr = 3, SMALL, 25, 0.7
    thetas = []
    for key in range(3):
        jac, y, w0 = random_features(10 + key, n, outputs, p=40)
        thetas.append(jac @ jac.T)
    r0 = jac @ w0 - y
    s = steps // 3
    which = [min(k // s, 2) for k in range(steps)]
    r = [r0]
    for k in range(steps):
        r.append(r[-1] - lr / n * thetas[which[k]] @ r[-1])
    want = np.zeros(n * outputs)
    for i in range(n):
        keep = np.ones(n * outputs)
        keep[i * outputs:(i + 1) * outputs] = 0
        twin = r0.copy()
        for k in range(steps):
            twin = twin - lr / n * thetas[which[k]] @ (keep * twin)
        want[i * outputs:(i + 1) * outputs] = twin[i * outputs:(i + 1) * outputs]
    got = eg.loo_trajectory(np.stack(thetas), np.stack(r), lr, outputs=outputs).rho
    assert_close(got, want, steps * n * outputs)  # two orders of the same 25 steps


def test_first_order_trap_decays_but_exact_does_not():
    """First-order LOO (full-data contraction) against an explicit ODE solve; it tends to 0."""
    n, t_end, h = SMALL, 5.0, 2.5e-3
    jac, y, w0 = random_features(8, n, 1, p=30)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    # RK4 on [r; E] with Ė = −(1/n) Θ (E − Diag(r)), ṙ = −(1/n) Θ r
    def field(r, e):
        return -theta @ r / n, -theta @ (e - np.diag(r)) / n
    r, e = r0.copy(), np.zeros((n, n))
    for _ in range(int(t_end / h)):
        k1 = field(r, e)
        k2 = field(r + h / 2 * k1[0], e + h / 2 * k1[1])
        k3 = field(r + h / 2 * k2[0], e + h / 2 * k2[1])
        k4 = field(r + h * k3[0], e + h * k3[1])
        r = r + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        e = e + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    got = np.asarray(eg.first_order_loo_residuals(theta, r0, [t_end, 1e7, np.inf]))
    np.testing.assert_allclose(got[0], r + np.diag(e), atol=1e-9)  # RK4 at h = 2.5e-3: error O(h⁴ λ⁴ t) ≈ 1e-10
    assert np.abs(got[1:]).max() < 1e-6  # decays like exp(−λ_min t / n) at t = 1e7, and 0 at t = ∞
    assert np.abs(eg.loo_residuals(theta, r0, np.inf)).min() > 1e-3


def test_loo_predicted_test_loss_matches_monte_carlo():
    """E_S[(1/2n) Σ ρ_i(t)²] = E_S[test loss of the model trained on n−1 samples] over 200 datasets."""
    n, p, d, datasets, t = SMALL, 60, 3, 200, 10.0
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((p, d)), rng.standard_normal(p)
    teacher = rng.standard_normal(d)

    def features(x):
        return np.tanh(x @ a.T + b) / np.sqrt(p)

    def labels(x):
        return np.sin(x @ teacher) + 0.3 * rng.standard_normal(len(x))

    predicted, measured = [], []
    w0 = np.zeros(p)
    for _ in range(datasets):
        x = rng.standard_normal((n, d))
        y = labels(x)
        jac = features(x)
        rho = np.asarray(eg.loo_residuals(jac @ jac.T, jac @ w0 - y, t))
        predicted.append(np.mean(rho**2) / 2)
        # the (n−1)-sample model: drop the last sample, loss weight 1/n, train for time t
        rest, yr = jac[:-1], y[:-1]
        g, v = np.linalg.eigh(rest.T @ rest / n)
        gain = np.where(g > 1e-14, -np.expm1(-np.maximum(g, 0) * t) / np.maximum(g, 1e-300), t)
        w = w0 - v @ (gain * (v.T @ (rest.T @ (rest @ w0 - yr) / n)))
        xt = rng.standard_normal((400, d))
        measured.append(np.mean((features(xt) @ w - labels(xt)) ** 2) / 2)
    diff = np.array(predicted) - np.array(measured)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(datasets)
    print(f"\nLOO-predicted {np.mean(predicted):.4f}, MC test loss {np.mean(measured):.4f}, "
          f"difference {diff.mean():+.4f} ± {half:.4f} (95%)")
    assert abs(diff.mean()) <= half
    assert half < 0.1 * np.mean(measured)  # the interval is informative


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda th, r: eg.loo_residuals(th[:, :-1], r, 1.0), "theta"),
        (lambda th, r: eg.loo_residuals(th + np.triu(th, 1), r, 1.0), "theta"),
        (lambda th, r: eg.loo_residuals(th, r[:-1], 1.0), "r0"),
        (lambda th, r: eg.loo_residuals(th, r, 1.0, outputs=5), "outputs"),
        (lambda th, r: eg.loo_residuals(th[:1, :1], r[:1], 1.0), "theta"),
        (lambda th, r: eg.loo_residuals(th, r, -1.0), "t"),
        (lambda th, r: eg.loo_residuals(th, r, [1.0, np.nan]), "t"),
        (lambda th, r: eg.loo_residuals(np.where(th > 0.5, np.nan, th), r, 1.0), "theta"),
        (lambda th, r: eg.loo_residuals(th, np.r_[r[:-1], np.inf], 1.0), "r0"),
        (lambda th, r: eg.loo_residuals(th, r, 3, lr=0.0), "lr"),
        (lambda th, r: eg.loo_residuals(th, r, 3, lr=-1.0), "lr"),
        (lambda th, r: eg.loo_residuals(th, r, 2.5, lr=1.0), "t"),
        (lambda th, r: eg.loo_residuals(th, r, np.inf, lr=1e6), "lr"),
        (lambda th, r: eg.loo_residuals(-th, r, 1.0), "theta"),
        (lambda th, r: eg.effective_gram(th, -2.0), "t"),
        (lambda th, r: eg.effective_gram(th[:5], 1.0), "theta"),
        (lambda th, r: eg.loo_trajectory(th[None], np.stack([r, r]), 0.0), "lr"),
        (lambda th, r: eg.loo_trajectory(th[None], np.stack([r, r])[:, :-1], 1.0), "residuals"),
        (lambda th, r: eg.loo_trajectory(th[None, :, :-1], np.stack([r, r]), 1.0), "thetas"),
        (lambda th, r: eg.loo_trajectory(th[None], np.stack([r, r]), 1.0, outputs=7), "outputs"),
        (lambda th, r: kernel_flow.kernel_residuals(th, r[:3], 1.0), "r0"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(call, name):
    jac, y, w0 = random_features(9, SMALL, 1, p=20)
    theta, r0 = jac @ jac.T, jac @ w0 - y
    with pytest.raises(ValueError, match=name):
        call(theta, r0)


def test_chapter5_exercise_checks(capsys):
    from gramlib.views.exercises import ch05

    def limit(theta, r0):
        inv = np.linalg.inv(theta)
        return inv @ r0 / np.diag(inv)

    def loo(theta, r0, lr, steps, weight=None):
        n = len(r0)
        out = np.zeros(n)
        for i in range(n):
            keep = np.ones(n)
            keep[i] = 0
            r = r0.copy()
            for _ in range(steps):
                r = r - lr / (weight or n) * theta @ (keep * r)
            out[i] = r[i]
        return out

    def k_inf(theta):
        inv = np.linalg.inv(theta)
        return inv @ np.diag(np.diag(inv) ** -2.0) @ inv / (2 * len(theta))

    assert ch05.check_loo_limit(limit)
    assert not ch05.check_loo_limit(lambda theta, r0: np.linalg.solve(theta, r0))
    assert ch05.check_loo_descent(loo)
    assert not ch05.check_loo_descent(lambda theta, r0, lr, steps: loo(theta, r0, lr, steps, len(r0) - 1))
    assert ch05.check_effective_gram_infinity(k_inf)
    assert not ch05.check_effective_gram_infinity(lambda theta: 2 * k_inf(theta))
    assert not ch05.check_loo_limit(None)
    assert "Not answered" in capsys.readouterr().out
