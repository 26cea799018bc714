"""Chapter 5's analytic anchors against the general code.

The exchangeable closed form of ``K_n(t)`` is compared with ``effective_gram`` (Talbot inversion of
the Laplace-domain formula, a different computation) and with the elementary solution (one matrix
exponential per twin); the NTK-norm bounds with ``predicted_gap`` at ``t = ∞``.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small dense algebra; threads only contend

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.linalg import expm  # noqa: E402

from gramlib import effective_gram as eg  # noqa: E402
from gramlib.mathematics import closed_forms as cf  # noqa: E402
from tests.tolerance import assert_close, tolerance  # noqa: E402

CASES = [(5, 1.0, 0.0), (6, 2.0, 0.5), (7, 1.5, -0.2), (9, 0.3, 1.2)]


def exchangeable(n, a, b):
    return a * np.eye(n) + b * np.ones((n, n))


def elementary_gram(theta, t):
    """K_n(t) from its definition: the twins' maps e_iᵀ exp(−Θ P_{−i} t/n), stacked, and exp(−Θ t/n)."""
    n = len(theta)
    rows = []
    for i in range(n):
        keep = np.eye(n)
        keep[i, i] = 0.0
        rows.append(expm(-theta @ keep * t / n)[i])
    loo_map, run = np.array(rows), expm(-theta * t / n)
    return (loo_map.T @ loo_map - run @ run) / (2 * n)


@pytest.mark.parametrize("n, a, b", CASES)
@pytest.mark.parametrize("t", [0.0, 0.5, 4.0, 40.0])
def test_exchangeable_against_definition(n, a, b, t):
    want = elementary_gram(exchangeable(n, a, b), t)
    # the rule: n² terms per entry of Rᵀ R, expm's relative error grows with the norm of its argument
    # (at most (a + n|b|) t / n), relative to the entries of Rᵀ R / 2n, of order 1/n
    assert_close(cf.exchangeable_effective_gram(n, a, b, t), want, n * n, cond=max(1.0, (a + n * abs(b)) * t / n),
                 scale=1.0 / n)


@pytest.mark.parametrize("n, a, b", CASES)
@pytest.mark.parametrize("t", [1.0, 30.0, np.inf])
def test_exchangeable_against_effective_gram(n, a, b, t):
    got = cf.exchangeable_effective_gram(n, a, b, t)
    want = eg.effective_gram(exchangeable(n, a, b), t)
    # effective_gram inverts a Laplace transform numerically (Talbot, finite t): the contour's own error,
    # 1e-8 of the scale as in test_effective_gram; at t = ∞ the rule, conditioned by Θ squared
    scale = 1.0 / n
    if np.isinf(t):
        assert_close(got, want, n, cond=np.linalg.cond(exchangeable(n, a, b)) ** 2, scale=scale)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * scale)


def test_identity_closed_form():
    n, t = 8, 3.0
    got = cf.exchangeable_effective_gram(n, 1.0, 0.0, t)
    assert_close(got, (1 - np.exp(-2 * t / n)) / (2 * n) * np.eye(n), n)
    assert_close(cf.exchangeable_effective_gram(n, 1.0, 0.0, np.inf), np.eye(n) / (2 * n), n)


@pytest.mark.parametrize("n, a, b", CASES)
def test_exchangeable_limit_is_theta_inverse_squared(n, a, b):
    theta = exchangeable(n, a, b)
    c = a * (a + n * b) / (a + (n - 1) * b)
    inv = np.linalg.inv(theta)
    assert_close(1.0 / np.diag(inv), np.full(n, c), n, cond=np.linalg.cond(theta))  # c = 1/[Θ⁻¹]_ii
    want = c**2 * inv @ inv / (2 * n)
    assert_close(cf.exchangeable_effective_gram(n, a, b, np.inf), want, n, cond=np.linalg.cond(theta) ** 2)


@pytest.mark.parametrize("n, a, b", CASES + [(12, 1.0, -1.0 / 12 + 1e-3)])
def test_exchangeable_is_psd_at_every_time(n, a, b):
    for t in np.geomspace(1e-3, 1e4, 40):
        k = np.asarray(cf.exchangeable_effective_gram(n, a, b, t))
        assert np.linalg.eigvalsh(k)[0] >= -tolerance(k.dtype, n) * np.abs(k).max()


def test_exchangeable_jax_transforms():
    f = lambda b, t: cf.exchangeable_effective_gram(5, 1.0, b, t).sum()  # noqa: E731
    b, t, h = 0.3, 2.0, 1e-6
    # central differences: error O(h²) times the third derivative (order 1 here), plus rounding ε/h
    fd = (f(b + h, t) - f(b - h, t)) / (2 * h)
    np.testing.assert_allclose(jax.grad(f)(b, t), fd, rtol=1e-8)
    assert jax.jit(lambda b: cf.exchangeable_effective_gram(5, 1.0, b, 2.0))(0.3).shape == (5, 5)


def test_exchangeable_float32():
    got = cf.exchangeable_effective_gram(6, 2.0, jnp.float32(0.5), 10.0)
    assert got.dtype == jnp.float32
    want = cf.exchangeable_effective_gram(6, 2.0, 0.5, 10.0)
    assert_close(got, want, 6, dtype=jnp.float32)


def test_exchangeable_bad_input():
    with pytest.raises(ValueError, match="a \\+ n·b must be > 0"):
        cf.exchangeable_effective_gram(4, 1.0, -0.5, 1.0)
    with pytest.raises(ValueError, match="n must be at least 2"):
        cf.exchangeable_effective_gram(1, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="a must be > 0"):
        cf.exchangeable_effective_gram(4, 0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        cf.exchangeable_effective_gram(4, 1.0, 0.5, -1.0)
    with pytest.raises(TypeError, match="b must be a real number"):
        cf.exchangeable_effective_gram(4, 1.0, [0.5, 0.1], 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_ntk_norm_bounds_hold(seed):
    rng = np.random.default_rng(seed)
    n = 9
    a = rng.standard_normal((n, n)) * rng.uniform(0.2, 3.0, n)
    theta = a @ a.T + 0.05 * np.eye(n)
    r0 = rng.standard_normal(n)
    bounds = cf.ntk_norm_bounds(theta, r0)
    value = float(eg.predicted_gap(theta, r0, np.inf))
    assert float(bounds.lower) <= value <= float(bounds.upper)
    assert_close(bounds.ntk_norm, r0 @ np.linalg.solve(theta, r0), n, cond=np.linalg.cond(theta))


def test_ntk_norm_bounds_are_equalities_for_a_multiple_of_the_identity():
    n, c = 7, 2.5
    r0 = np.linspace(-1.0, 1.0, n)
    bounds = cf.ntk_norm_bounds(c * np.eye(n), r0)
    value = float(eg.predicted_gap(c * np.eye(n), r0, np.inf))  # = ‖r0‖²/2n
    assert_close(value, r0 @ r0 / (2 * n), n)
    assert_close([bounds.lower, bounds.upper], [value, value], n)


def test_ntk_norm_bounds_bad_input():
    with pytest.raises(ValueError, match="positive definite"):
        cf.ntk_norm_bounds(np.diag([1.0, 0.0, 2.0]), np.ones(3))
    with pytest.raises(ValueError, match="r0 must have shape"):
        cf.ntk_norm_bounds(np.eye(3), np.ones(4))


@pytest.mark.parametrize("copies", [2, 3, 4])
def test_limit_with_copies(copies):
    """ch05-cor-infinity: with c copies of an input, ρ_i(∞) = r0_i − the mean of r0 over the other c − 1 copies."""
    rng = np.random.default_rng(copies)
    n, p = 9, 40
    x = rng.standard_normal((n, 4))
    x[1:copies] = x[0]  # samples 0, …, c − 1 share one input (their labels differ)
    w = rng.standard_normal((p, 4))
    jac = np.tanh(x @ w.T) / np.sqrt(p)
    theta = jac @ jac.T
    r0 = rng.standard_normal(n)
    got = np.asarray(eg.loo_residuals(theta, r0, np.inf))
    group = r0[:copies]
    want = group - (group.sum() - group) / (copies - 1)
    # the limit solves a projected system: conditioned by Θ on its range
    lam = np.linalg.eigvalsh(theta)
    kept = lam[lam > tolerance(theta.dtype, n) * lam[-1]]
    assert_close(got[:copies], want, n * p, cond=kept[-1] / kept[0], scale=np.abs(r0).max())
