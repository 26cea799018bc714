"""Tests for gramlib.alignment (Chapter 6), each against an independent computation."""

import jax
import numpy as np
import pytest
from jax.scipy.linalg import expm

from gramlib import alignment as al, kernel_flow
from gramlib import data, ntk
from tests.tolerance import assert_close, cond, eigvec_cond, tolerance

F64 = np.float64


def random_psd(rng, n, rank=None, spread=1.0):
    a = rng.normal(size=(n, rank or n)) * np.exp(spread * rng.normal(size=(1, rank or n)))
    return a @ a.T


def brute_force_effective_gram(theta, t, lr=None):
    """``K_n(t) = (1/2n)(R_tᵀR_t − G_tᵀG_t)`` with each leave-one-out row from an explicit matrix exponential.

    Row ``i`` of ``R_t`` is ``e_iᵀ exp(−Θ P_{−i} t/n)`` (flow) or
    ``e_iᵀ (I − (η/n) Θ P_{−i})^t`` (descent): the twin trained without sample
    ``i`` (loss ``(1/n) Σ_{j≠i}``), read at sample ``i``.
    """
    n = theta.shape[0]
    rows = []
    for i in range(n):
        p = np.eye(n)
        p[i, i] = 0.0
        if lr is None:
            m = np.asarray(expm(-theta @ p * (t / n)))
        else:
            m = np.linalg.matrix_power(np.eye(n) - lr / n * theta @ p, int(t))
        rows.append(m[i])
    r = np.array(rows)
    g = np.asarray(expm(-theta * (t / n))) if lr is None else np.linalg.matrix_power(np.eye(n) - lr / n * theta, int(t))
    return (r.T @ r - g.T @ g) / (2 * n)


# ------------------------------------------------------------------ shares
def test_bottom_share_matches_explicit_projection_onto_known_eigenvectors():
    rng = np.random.default_rng(0)
    n = 12
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = rng.permutation(np.linspace(-0.5, 3.0, n))  # distinct, unsorted, one negative
    k_matrix = (q * lam) @ q.T
    r = rng.normal(size=n)
    order = np.argsort(lam)
    for k in (1, 3, 7, n):
        basis = q[:, order[:k]]
        projection = basis @ basis.T
        want = np.sum((projection @ r) ** 2) / np.sum(r ** 2)
        assert float(al.bottom_share(k_matrix, r, k)) == pytest.approx(want, abs=tolerance(F64, n, cond=eigvec_cond(k_matrix)))
    assert float(al.bottom_share(k_matrix, r, n)) == pytest.approx(1.0, abs=tolerance(F64, n))


def test_cumulative_share_is_monotone_ends_at_one_and_stacks():
    rng = np.random.default_rng(1)
    k_matrix = random_psd(rng, 9)
    rs = rng.normal(size=(4, 9))
    cum = np.asarray(al.cumulative_share(k_matrix, rs))
    assert cum.shape == (4, 9)
    assert np.all(np.diff(cum, axis=1) >= -tolerance(F64, 9))
    np.testing.assert_allclose(cum[:, -1], 1.0, atol=tolerance(F64, 9))
    for j in range(4):
        assert_close(cum[j], np.asarray(al.cumulative_share(k_matrix, rs[j])), 9)
    # an eigenvector of the smallest eigenvalue has share 1 from k = 1 on
    lam, vecs = np.linalg.eigh(k_matrix)
    bound = tolerance(F64, 9, cond=eigvec_cond(k_matrix))  # two eigendecompositions' eigenvectors
    assert float(al.bottom_share(k_matrix, vecs[:, 0] * 3.0, 1)) == pytest.approx(1.0, abs=bound)
    assert float(al.bottom_share(k_matrix, vecs[:, -1], 8)) == pytest.approx(0.0, abs=bound)


def test_spectrum_is_ascending_and_reconstructs_the_matrix():
    rng = np.random.default_rng(2)
    k_matrix = random_psd(rng, 7) - 2.0 * np.eye(7)
    vals, vecs = (np.asarray(v) for v in al.spectrum(k_matrix))
    assert np.all(np.diff(vals) >= 0)
    assert_close((vecs * vals) @ vecs.T, k_matrix, 7)
    assert_close(vecs.T @ vecs, np.eye(7), 7)


def test_random_share_expectation_and_spread_match_sampling():
    rng = np.random.default_rng(3)
    n, k, samples = 40, 6, 20000
    k_matrix = random_psd(rng, n)
    mean, std = al.random_share_expected(n, k)
    assert mean == k / n
    shares = np.asarray(al.random_share_samples(k_matrix, k, key=jax.random.PRNGKey(0), samples=samples))
    assert shares.shape == (samples,)
    assert np.all((shares >= 0) & (shares <= 1))
    assert abs(shares.mean() - mean) < 4 * std / np.sqrt(samples)
    assert shares.std() == pytest.approx(std, rel=0.05)  # Monte Carlo: a std from 20000 samples is within ±1.5% (3σ)
    # independent sampler: uniform directions from numpy, share in a fixed k-dim coordinate subspace
    u = rng.normal(size=(samples, n))
    direct = np.sum(u[:, :k] ** 2, axis=1) / np.sum(u ** 2, axis=1)
    assert abs(direct.mean() - mean) < 4 * std / np.sqrt(samples)
    assert direct.std() == pytest.approx(std, rel=0.05)  # the same Monte Carlo bound


def test_gap_components_sum_to_the_quadratic_form_and_random_gap_is_trace_over_n():
    rng = np.random.default_rng(4)
    n = 15
    k_matrix = random_psd(rng, n) / n
    r0 = rng.normal(size=n)
    vals, comps = (np.asarray(v) for v in al.gap_components(k_matrix, r0))
    assert comps.sum() == pytest.approx(r0 @ k_matrix @ r0, rel=tolerance(F64, n * n))  # PSD: no cancellation
    assert_close(vals, np.linalg.eigvalsh(k_matrix), n)
    norm = float(np.linalg.norm(r0))
    u = rng.normal(size=(40000, n))
    u *= norm / np.linalg.norm(u, axis=1, keepdims=True)
    quad = np.einsum("si,ij,sj->s", u, k_matrix, u)
    expected = al.random_gap_expected(k_matrix, norm)
    assert abs(quad.mean() - expected) < 4 * quad.std() / np.sqrt(len(quad))


# ------------------------------------------------------------------ kernel training
def test_linearized_test_residuals_match_training_in_parameter_space():
    """A linear model f(x) = φ(x)·w trained from w0: its test residuals, computed directly."""
    rng = np.random.default_rng(6)
    n, p, m = 10, 6, 7  # p < n: Θ is singular, interpolation impossible
    phi, phi_test = rng.normal(size=(n, p)), rng.normal(size=(m, p))
    y, y_test, w0 = rng.normal(size=n), rng.normal(size=m), rng.normal(size=p)
    theta, cross = phi @ phi.T, phi_test @ phi.T
    r0, r0_test = phi @ w0 - y, phi_test @ w0 - y_test
    hess = phi.T @ phi / n
    rule = tolerance(F64, n * p, cond=cond(theta))  # weight space (p) against function space (n), on Θ's range
    for t in (0.5, 7.0):  # flow: w(t) = w* + exp(−Ht)(w0 − w*) solved via the ODE's closed form
        w_star = np.linalg.lstsq(phi, y, rcond=None)[0]
        w = w_star + np.asarray(expm(-hess * t)) @ (w0 - w_star)
        got = float(np.asarray(kernel_flow.kernel_test_residuals(theta, cross, r0, r0_test, t))[0])
        assert got == pytest.approx(phi_test[0] @ w - y_test[0], abs=rule * np.abs(r0_test).max())
    # t = ∞: the least-squares solution reached from w0
    w_inf = w0 - np.linalg.pinv(phi) @ r0
    assert_close(np.asarray(kernel_flow.kernel_test_residuals(theta, cross, r0, r0_test, np.inf)),
                 phi_test @ w_inf - y_test, n * p, cond=cond(theta))
    lr = 1.5 * n / np.linalg.eigvalsh(theta).max()
    w, want = w0.copy(), []
    for _ in range(30):
        want.append(phi_test @ w - y_test)
        w = w - lr * phi.T @ (phi @ w - y) / n
    got = np.asarray(kernel_flow.kernel_test_residuals(theta, cross, r0, r0_test, np.arange(30), lr=lr))
    assert_close(got, np.array(want), 30 * n * p, cond=cond(theta))


# ------------------------------------------------------------------ is K_n positive semi-definite?
def test_effective_gram_at_infinity_is_psd_but_finite_times_need_not_be():
    rng = np.random.default_rng(13)  # seed found by a search (Chapter 6): an ill-conditioned 4×4 Θ
    n = 4
    a = rng.normal(size=(n, n)) * np.exp(rng.normal(size=(1, n)) * 2)
    theta = a @ a.T
    lam_max = np.linalg.eigvalsh(theta).max()
    # K(∞) = (1/2n) Θ⁻¹ D⁻² Θ⁻¹ is a congruence of a positive diagonal matrix: PSD (well-conditioned Θ here)
    good = random_psd(np.random.default_rng(0), n) + np.eye(n)
    inv = np.linalg.inv(good)
    k_inf = inv @ np.diag(1 / np.diag(inv) ** 2) @ inv / (2 * n)
    assert np.linalg.eigvalsh(k_inf).min() > 0
    # expm of ‖Θ P t/n‖ ≈ 60 cond(Θ) (its condition number), then two inverses of Θ in K(∞); e^{−60} is negligible
    assert_close(brute_force_effective_gram(good, 60 * n / np.linalg.eigvalsh(good).min()), k_inf, n,
                 cond=60 * cond(good) ** 3)
    # gradient flow at t = 10 n/λ_max: a (small) negative eigenvalue, confirmed by a direct simulation
    t = 10 * n / lam_max
    k_t = brute_force_effective_gram(theta, t)
    vals, vecs = np.linalg.eigh(k_t)
    assert vals[0] < -1e-6 * vals[-1]  # a margin of 1e6 times the rounding of an 4×4 eigh (tolerance ~1e-14)
    r0 = vecs[:, 0]
    r_t = np.asarray(expm(-theta * t / n)) @ r0
    rho = []
    for i in range(n):  # the twin without sample i, by small explicit Euler steps of ṙ = −(1/n) Θ P_{−i} r
        p = np.eye(n)
        p[i, i] = 0
        m = np.linalg.matrix_power(np.eye(n) - (t / n / 200000) * theta @ p, 200000)
        rho.append((m @ r0)[i])
    gap = (np.sum(np.square(rho)) - r_t @ r_t) / (2 * n)
    assert gap < 0 and gap == pytest.approx(vals[0], rel=1e-3)  # explicit Euler: error O(step) ≈ 1e-4 relative
    # gradient descent with oscillating steps (η λ_max / n > 1): clearly indefinite
    k_gd = brute_force_effective_gram(theta, 7, lr=1.8 * n / lam_max)
    vals_gd = np.linalg.eigvalsh(k_gd)
    assert vals_gd[0] < -1e-3 * vals_gd[-1]


# ------------------------------------------------------------------ alignment curve (uses gramlib.effective_gram)
def test_alignment_curve_matches_brute_force_effective_gram():
    rng = np.random.default_rng(7)
    n = 9
    theta = random_psd(rng, n, spread=0.5)
    r0 = rng.normal(size=n)
    ts = np.array([0.5, 4.0, 40.0])
    curve = al.alignment_curve(theta, r0, ts, fraction=1 / 3)
    assert curve.k == 3 and curve.random_share == pytest.approx(1 / 3, rel=tolerance(F64))
    for j, t in enumerate(ts):
        # gradient flow at finite t: K_n(t) comes from the 32-node Talbot inversion, whose own error (≈ 1e-10
        # relative) bounds the eigenvalues, shares and gap at 1e-10 to 1e-8; the train loss is exact (the rule,
        # the expm conditioned by ‖Θ t/n‖)
        k_t = brute_force_effective_gram(theta, t)
        vals, vecs = np.linalg.eigh(k_t)
        np.testing.assert_allclose(curve.eigenvalues[j], vals, atol=1e-10)
        basis = vecs[:, :3]
        assert curve.share_r0[j] == pytest.approx(np.sum((basis.T @ r0) ** 2) / (r0 @ r0), abs=1e-8)
        r_t = np.asarray(expm(-theta * t / n)) @ r0
        assert curve.share_rt[j] == pytest.approx(np.sum((basis.T @ r_t) ** 2) / (r_t @ r_t), abs=1e-8)
        assert curve.gap[j] == pytest.approx(r0 @ k_t @ r0, rel=1e-8)
        assert curve.random_gap[j] == pytest.approx((r0 @ r0) * np.trace(k_t) / n, rel=1e-8)
        expm_cond = max(1.0, np.linalg.eigvalsh(theta).max() * t / n)
        assert curve.train_loss[j] == pytest.approx(r_t @ r_t / (2 * n), rel=tolerance(F64, n, cond=expm_cond))
    # the same spectra reused for another residual, and gradient descent
    grams = al.effective_grams(theta, ts)
    other = rng.normal(size=n)
    reused = al.alignment_curve(theta, other, grams=grams, fraction=1 / 3)
    assert_close(reused.gap, al.alignment_curve(theta, other, ts, fraction=1 / 3).gap, n * n)
    lr = 0.9 * n / np.linalg.eigvalsh(theta).max()
    curve = al.alignment_curve(theta, r0, [3, 20], fraction=0.5, lr=lr)
    k_t = brute_force_effective_gram(theta, 20, lr=lr)
    # descent: exact closed forms against 20 explicit matrix products (n terms each), conditioned by Θ
    rule = tolerance(F64, 20 * n, cond=cond(theta))
    assert curve.gap[1] == pytest.approx(r0 @ k_t @ r0, abs=rule * np.abs(k_t).max() * (r0 @ r0))
    assert curve.train_loss[1] == pytest.approx(np.sum((np.linalg.matrix_power(np.eye(n) - lr / n * theta, 20) @ r0) ** 2)
                                                / (2 * n), rel=rule)


def test_two_outputs_leave_out_both_rows_of_a_sample():
    rng = np.random.default_rng(9)
    n, c = 5, 2
    theta = random_psd(rng, n * c)
    r0 = rng.normal(size=n * c)
    t = 3.0
    rows = []
    for i in range(n):  # twin without sample i: delete its c rows
        p = np.eye(n * c)
        p[i * c:(i + 1) * c, i * c:(i + 1) * c] = 0.0
        rows.append(np.asarray(expm(-theta @ p * (t / n)))[i * c:(i + 1) * c])
    r_map = np.concatenate(rows)
    g = np.asarray(expm(-theta * (t / n)))
    k_t = (r_map.T @ r_map - g @ g) / (2 * n)
    curve = al.alignment_curve(theta, r0, [t], fraction=0.3, outputs=c)
    assert curve.k == 3
    assert curve.gap[0] == pytest.approx(r0 @ k_t @ r0, rel=1e-8)  # the Talbot inversion's own error
    expm_cond = max(1.0, np.linalg.eigvalsh(theta).max() * t / n)
    assert curve.train_loss[0] == pytest.approx(np.sum((g @ r0) ** 2) / (2 * n), rel=tolerance(F64, n * c, cond=expm_cond))
    basis = np.linalg.eigh(k_t)[1][:, :3]
    assert curve.share_r0[0] == pytest.approx(np.sum((basis.T @ r0) ** 2) / (r0 @ r0), abs=1e-8)


def test_noisy_labels_flip_the_requested_number_and_are_nested():
    y = np.where(np.arange(40) % 3 == 0, 1.0, -1.0)
    key = jax.random.PRNGKey(3)
    flips = [np.flatnonzero(data.noisy_labels(y, f, key=key) != y) for f in (0.0, 0.1, 0.25, 0.5)]
    assert [len(f) for f in flips] == [0, 4, 10, 20]
    assert set(flips[1]) <= set(flips[2]) <= set(flips[3])
    with pytest.raises(ValueError, match="y"):
        data.noisy_labels(y * 0.5, 0.1, key=key)
    with pytest.raises(ValueError, match="fraction"):
        data.noisy_labels(y, 1.5, key=key)


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise_naming_the_argument():
    rng = np.random.default_rng(8)
    k_matrix = random_psd(rng, 5)
    r = rng.normal(size=5)
    with pytest.raises(ValueError, match="k_matrix"):
        al.bottom_share(k_matrix + np.triu(np.ones((5, 5)), 1), r, 2)  # not symmetric
    with pytest.raises(ValueError, match="k_matrix"):
        al.spectrum(np.ones((5, 4)))
    with pytest.raises(ValueError, match="k_matrix"):
        al.spectrum(np.where(np.eye(5) > 0, np.nan, k_matrix))
    with pytest.raises(ValueError, match="r"):
        al.bottom_share(k_matrix, np.zeros(5), 2)
    with pytest.raises(ValueError, match="r"):
        al.bottom_share(k_matrix, np.ones(4), 2)
    with pytest.raises(ValueError, match="r"):
        al.cumulative_share(k_matrix, np.array([1.0, np.inf, 0, 0, 0]))
    with pytest.raises(ValueError, match="k"):
        al.bottom_share(k_matrix, r, 6)
    with pytest.raises(ValueError, match="k"):
        al.bottom_share(k_matrix, r, 0)
    with pytest.raises(TypeError, match="k"):
        al.bottom_share(k_matrix, r, 2.5)
    with pytest.raises(ValueError, match="norm"):
        al.random_gap_expected(k_matrix, -1.0)
    with pytest.raises(ValueError, match="samples"):
        al.random_share_samples(k_matrix, 2, key=jax.random.PRNGKey(0), samples=0)
    with pytest.raises(ValueError, match="fraction"):
        al.bottom_count(10, 1.5)
    cross, r_test = np.ones((3, 5)), np.ones(3)
    with pytest.raises(ValueError, match="t"):
        kernel_flow.kernel_test_residuals(k_matrix, cross, r, r_test, -1.0)
    with pytest.raises(ValueError, match="t"):
        kernel_flow.kernel_test_residuals(k_matrix, cross, r, r_test, 2.5, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        kernel_flow.kernel_test_residuals(k_matrix, cross, r, r_test, 2, lr=0.0)
    with pytest.raises(ValueError, match="outputs"):
        kernel_flow.kernel_test_residuals(k_matrix, cross, r, r_test, 1.0, outputs=2)
    with pytest.raises(ValueError, match="theta"):
        kernel_flow.kernel_test_residuals(k_matrix - 10 * np.eye(5), cross, r, r_test, 1.0)  # not a Gram matrix
    with pytest.raises(ValueError, match="theta_test"):
        kernel_flow.kernel_test_residuals(k_matrix, np.ones((3, 4)), r, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="r0_test"):
        kernel_flow.kernel_test_residuals(k_matrix, np.ones((3, 5)), r, np.ones(2), 1.0)
    with pytest.raises(ValueError, match="t"):
        al.alignment_curve(k_matrix, r, [0.0, 1.0])
    with pytest.raises(TypeError, match="grams"):
        al.alignment_curve(k_matrix, r, grams=np.eye(5))
    with pytest.raises(ValueError, match="grams"):
        al.alignment_curve(random_psd(rng, 6), rng.normal(size=6), grams=al.effective_grams(k_matrix, [1.0]))
    with pytest.raises(ValueError, match="r0"):
        al.alignment_curve(k_matrix, np.zeros(5), [1.0])


# ------------------------------------------------------------------ exercise self-checks
def test_exercise_checks_accept_correct_and_reject_wrong_answers(capsys):
    from gramlib.views.exercises import ch06

    def share(k_matrix, r, k):
        vecs = np.linalg.eigh(k_matrix)[1]
        return np.sum((vecs[:, :k].T @ r) ** 2) / (r @ r)

    def share_top(k_matrix, r, k):  # wrong: largest eigenvalues
        vecs = np.linalg.eigh(k_matrix)[1]
        return np.sum((vecs[:, -k:].T @ r) ** 2) / (r @ r)

    assert ch06.check_bottom_share(share) is True
    assert ch06.check_bottom_share(share_top) is False
    assert ch06.check_random_gap(lambda k, norm: norm**2 * np.trace(k) / len(k)) is True
    assert ch06.check_random_gap(lambda k, norm: norm * np.trace(k) / len(k)) is False

    def bounds(lam, s, k, norm):
        return norm**2 * (s * lam[0] + (1 - s) * lam[k]), norm**2 * (s * lam[k - 1] + (1 - s) * lam[-1])

    def bounds_off_by_one(lam, s, k, norm):
        return norm**2 * (s * lam[0] + (1 - s) * lam[k - 1]), norm**2 * (s * lam[k] + (1 - s) * lam[-1])

    assert ch06.check_gap_bounds(bounds) is True
    assert ch06.check_gap_bounds(bounds_off_by_one) is False
    assert ch06.check_gap_bounds(lambda *a: 1.0) is False  # wrong shape
    assert ch06.check_bottom_share(lambda *a: 1 / 0) is False  # a raising answer is reported
    out = capsys.readouterr().out
    assert out.count("✅") == 3 and "raised ZeroDivisionError" in out


def test_gap_bounds_from_the_share_hold_and_are_attained():
    rng = np.random.default_rng(10)
    n, k = 10, 3
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.sort(rng.normal(size=n))
    k_matrix = (q * lam) @ q.T
    for _ in range(50):
        r = rng.normal(size=n) * np.exp(2 * rng.normal(size=n))
        s = float(al.bottom_share(k_matrix, r, k))
        gap = r @ k_matrix @ r
        norm2 = r @ r
        slack = tolerance(F64, n * n, cond=eigvec_cond(k_matrix)) * norm2 * np.abs(lam).max()  # rounding of both sides
        assert norm2 * (s * lam[0] + (1 - s) * lam[k]) - slack <= gap <= norm2 * (s * lam[k - 1] + (1 - s) * lam[-1]) + slack
    s = 0.7  # attained: a along v_1 and b along v_{k+1}
    r = np.sqrt(s) * q[:, 0] + np.sqrt(1 - s) * q[:, k]
    assert r @ k_matrix @ r == pytest.approx(s * lam[0] + (1 - s) * lam[k], abs=tolerance(F64, n * n) * np.abs(lam).max())
    assert float(al.bottom_share(k_matrix, r, k)) == pytest.approx(s, abs=tolerance(F64, n, cond=eigvec_cond(k_matrix)))


def test_alignment_curve_is_a_named_tuple_of_host_arrays():
    """A stray ``jax.jit`` on the class made ``isinstance`` raise and returned float32 fields without x64."""
    rng = np.random.default_rng(11)
    j = rng.standard_normal((6, 9))
    curve = al.alignment_curve(j @ j.T, rng.standard_normal(6), np.array([1.0, 10.0]))
    assert isinstance(curve, al.AlignmentCurve) and isinstance(curve, tuple)
    assert curve.share_r0.dtype == np.float64 and curve.k == 1
