"""The tolerance rule of :mod:`tests.tolerance` against sums computed in several orders."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.tolerance import C, assert_close, tolerance


def orders(x):
    """The sum of ``x`` in its own dtype in four orders: sequential, reversed, sorted, and XLA's reduction."""
    return [np.cumsum(x)[-1], np.cumsum(x[::-1])[-1], np.cumsum(np.sort(x))[-1],
            np.asarray(jax.jit(jnp.sum)(jnp.asarray(x)))]


def test_the_rule_scales_with_the_dtype_the_size_and_the_condition_number():
    assert tolerance(jnp.float64) == C * np.finfo(np.float64).eps
    assert tolerance(np.float32, 10) == pytest.approx(tolerance(np.float64, 10) * 2.0 ** 29)
    assert tolerance(np.float64, 300) == pytest.approx(300 * tolerance(np.float64))
    assert tolerance(np.float64, 30, cond=50.0) == pytest.approx(50 * tolerance(np.float64, 30))
    assert tolerance(np.zeros(2, np.float32).dtype) == tolerance(jnp.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [10, 1000, 100_000])
def test_the_rule_bounds_a_sum_in_any_order_and_is_not_absurdly_loose(dtype, n):
    rng = np.random.default_rng(n)
    worst = 0.0
    for _ in range(5):
        x = rng.uniform(0.0, 1.0, n).astype(dtype)  # terms of one sign: Σ|x| = |Σ x|
        exact = math.fsum(x.astype(np.float64))
        sums = [float(s) for s in orders(x)]
        rel = max(abs(a - b) for a in sums for b in sums + [exact]) / exact
        assert rel <= tolerance(dtype, n), (rel, tolerance(dtype, n))
        worst = max(worst, rel)
        z = rng.standard_normal(n).astype(dtype)  # zero-mean terms, compared normwise as the docstring says
        zs = orders(z)
        for a in zs:
            assert_close(a, zs[0], n, scale=float(np.sum(np.abs(z))) / math.sqrt(n))
    if n >= 1000:  # enough terms for rounding to show: the bound is loose by the √n of worst vs typical, no more
        assert 0 < worst and tolerance(dtype, n) < 10 * C * math.sqrt(n) * worst, (worst, tolerance(dtype, n))


def test_assert_close_fails_beyond_the_bound_and_names_it():
    want = np.linspace(1.0, 2.0, 50)
    assert_close(want * (1 + 0.9 * tolerance(np.float64, 50)), want, 50)
    with pytest.raises(AssertionError, match=r"tolerance\(float64, size=50"):
        assert_close(want * (1 + 2.1 * tolerance(np.float64, 50)), want, 50)
    assert_close(want.astype(np.float32), want, 50)  # the less precise dtype sets the bound
    with pytest.raises(AssertionError):
        assert_close(want.astype(np.float32), want, 50, dtype=np.float64)
    assert_close(np.zeros(3), np.zeros(3))
    with pytest.raises(AssertionError):
        assert_close(np.full(3, 1e-300), np.zeros(3))


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(TypeError, match="floating dtype"):
        tolerance(np.int32)
    with pytest.raises(ValueError, match="size"):
        tolerance(np.float64, 0)
    with pytest.raises(ValueError, match="cond"):
        tolerance(np.float64, 3, cond=0.5)
