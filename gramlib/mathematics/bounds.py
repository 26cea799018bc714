"""Bounds on the generalization gap and the example that tests them (Chapter 1).

* :func:`ntk_norm_bound` — the leading term ``√(2 yᵀΘ⁺y / n)`` of the NTK-norm bound of
  Arora et al. (2019), also a baseline of Chapter 7;
* :func:`stability_bound` — the gradient-disagreement stability bound for linear least
  squares under gradient flow;
* the two-orthonormal-point example, exactly: the expected gap (:func:`two_point_gap`), its
  kernel problems (:func:`two_point_problem`) and leave-one-out gap
  (:func:`two_point_loo_gap`, Chapter 5), and the expected bounds
  (:func:`two_point_ntk_bound`, :func:`two_point_stability_bound`).

Every public function validates its input and raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .effective_gram import predicted_gap
from .kernel_flow import factorize, Factorization


@_checks.public
def ntk_norm_bound(theta, y) -> float:
    """Leading term of the NTK-norm bound of Arora et al. (2019): ``√(2 yᵀΘ⁺y / n)`` (Chapters 1 and 7).

    ``theta`` is the ``N×N`` Gram matrix of the training inputs (or its
    :class:`gramlib.kernel_flow.Factorization`), ``y`` the targets stacked like its rows:
    ``(n,)``, or ``(n, C)`` for ``C`` outputs (``N = nC``). Arora et al. assume ``Θ``
    invertible; repeated inputs make it singular. For ``y`` in the range of ``Θ``
    (consistent labels on repeated inputs) ``yᵀΘ⁺y`` is the squared RKHS norm of the
    minimum-norm interpolant, the quantity their proof bounds. A component of ``y`` in the
    null space of ``Θ`` (larger than ``√ε ‖y‖``) means that no function of the kernel's
    span interpolates ``y``: the bound is ``inf``.

    Not transformable (``jax.jit``, ``jax.vmap``, ``jax.grad`` raise a ``TypeError``): the
    pseudo-inverse keeps the eigenvalues above the numerical rank's tolerance and a null-space
    component of ``y`` makes the bound ``inf``, choices made on the values. Returns a Python float.
    """
    _checks.host_only("ntk_norm_bound", theta=theta, y=y)
    ya = _checks.array(y, "y", ndim=(1, 2))
    outputs = None if isinstance(theta, Factorization) else (ya.shape[1] if ya.ndim == 2 and ya.shape[1] else 1)
    fact = factorize(theta, outputs=outputs)
    if ya.size != fact.theta.shape[0] or (ya.ndim == 2 and ya.shape[1] != fact.outputs):
        raise ValueError(f"y must hold {fact.theta.shape[0]} numbers (one per row of theta: shape ({fact.n},) or "
                         f"({fact.n}, {fact.outputs})), got shape {ya.shape}")
    lam, u = np.asarray(fact.eigenvalues), np.asarray(fact.eigenvectors)
    coords = u.T @ ya.reshape(-1)
    keep = lam > fact.tol
    if np.any(np.abs(coords[~keep]) > np.sqrt(np.finfo(lam.dtype).eps) * np.linalg.norm(ya)):
        return float("inf")
    return float(np.sqrt(2.0 * np.sum(coords[keep] ** 2 / lam[keep]) / fact.n))


@_checks.public
def stability_bound(train_grad_sq, disagreement, t, n, *, input_bound=1.0) -> float:
    """Gradient-disagreement stability bound on ``|Δ_n(T)|``, linear least squares, gradient flow.

    ``|Δ_n(T)| ≤ G(T) δ̄(T) + ½ B² δ̄(T)²`` with ``G(T)² = E‖∇ℓ(w_S(T); z_i)‖²``
    (``train_grad_sq``), ``δ̄(T) = (1/n) ∫_0^T √V(s) ds`` (a bound on the twins' distance), ``V(s) = E‖∇ℓ(w_S(s); z') −
    ∇ℓ(w_S(s); z_i)‖²`` given on the grid ``t`` (``disagreement``; ``t[0] = 0``,
    increasing, ``T = t[-1]``, trapezoid rule) and ``B ≥ ‖x‖`` (``input_bound``).
    Derived in Chapter 1 (after Hardt et al. 2016, with the Lipschitz constant replaced
    by the root-mean-square gradient disagreement along the trajectory). Evaluated on the
    host from measured numbers (a Python float); traced arguments raise a ``TypeError``.
    """
    _checks.host_only("stability_bound", train_grad_sq=train_grad_sq, disagreement=disagreement, t=t)
    g2 = _checks.positive(train_grad_sq, "train_grad_sq", allow_zero=True)
    ts, _ = _checks.times(t, "t", allow_inf=False)
    if ts.size < 2 or ts[0] != 0.0 or np.any(np.diff(ts) <= 0):
        raise ValueError(f"t must be an increasing grid of at least 2 times starting at 0, got {ts}")
    v = _checks.array(disagreement, "disagreement", shape=ts.shape)
    if np.any(v < 0):
        raise ValueError("disagreement must be >= 0 (a mean squared norm)")
    n = _checks.integer(n, "n", minimum=2)
    B = _checks.positive(input_bound, "input_bound")
    root = np.sqrt(v)
    D = float(np.sum(0.5 * (root[1:] + root[:-1]) * np.diff(ts))) / n
    return math.sqrt(g2) * D + 0.5 * B**2 * D**2


# --------------------------------------------------------------------------------------
# The two-orthonormal-point example, exactly
# --------------------------------------------------------------------------------------


def _two_point_args(n, targets):
    if isinstance(n, (list, tuple, np.ndarray)):
        na = np.asarray(n)
        if na.ndim != 1 or na.dtype.kind not in "iu":
            raise ValueError(f"n must be an integer or a 1-D array of integers, got {na!r}")
        if na.size == 0 or na.min() < 2:
            raise ValueError(f"n must be >= 2 (the gap needs at least two samples), got {na}")
        ns, scalar_n = na.astype(np.int64), False
    else:
        ns, scalar_n = np.array([_checks.integer(n, "n", minimum=2)]), True
    y = _checks.array(targets, "targets", shape=(2,)).astype(float)
    return ns, scalar_n, float(np.sum(y**2)), y


def _binomial_pmf(n):
    k = np.arange(n + 1)
    logc = math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in k])
    return k, np.exp(logc - n * math.log(2.0))


def two_point_gap(n, t, targets=(1.0, 1.0), *, lr=None):
    """Exact expected gap ``Δ_n(t)`` of the two-orthonormal-point example, from ``w0 = 0``.

    Data uniform on ``{(e_1, y_1), (e_2, y_2)}``; with ``n_j ~ Binomial(n, ½)`` copies of
    ``e_j``, gradient flow gives residual ``−y_j e^{−n_j t/n}`` on ``e_j`` and
    ``Δ_n(t) = Σ_j ½ y_j² E[e^{−2n_j t/n} (½ − n_j/n)]
    = ⅛ (y_1² + y_2²) (1 − e^{−2t/n}) ((1 + e^{−2t/n})/2)^{n−1}``,
    which at ``t = ∞`` is ``¼ (y_1² + y_2²) 2^{−n}`` (only never-seen points contribute).
    With ``lr = η``, ``t`` counts gradient-descent steps ``k`` and the residual is
    ``−y_j (1 − ηn_j/n)^k``; the expectation is the exact finite sum over the binomial.
    ``n``: integer or 1-D integer array; ``t``: scalar or 1-D array. Returns shape
    ``(len(n), len(t))`` with scalar axes dropped.
    """
    ns, scalar_n, ysq, _ = _two_point_args(n, targets)
    if lr is None:
        ts, scalar_t = _checks.times(t, "t")
        a = np.exp(-2.0 * ts[None, :] / ns[:, None])  # e^{−2t/n}, 0 at t = ∞
        out = ysq / 8.0 * (1.0 - a) * ((1.0 + a) / 2.0) ** (ns[:, None] - 1)
    else:
        lr = _checks.positive(lr, "lr")
        ks, scalar_t = _checks.times(t, "t", allow_inf=False, integer_steps=True)
        out = np.empty((ns.size, ks.size))
        for row, m in enumerate(ns):
            k, p = _binomial_pmf(int(m))
            contraction = (1.0 - lr * k / m)[:, None] ** (2 * ks[None, :])
            out[row] = 0.5 * ysq * np.sum(p[:, None] * contraction * (0.5 - k / m)[:, None], axis=0)
    out = out[:, 0] if scalar_t else out
    return out[0] if scalar_n else out


def two_point_problem(points, targets=(1.0, 1.0)):
    """The kernel problem ``(Θ, r0)`` of one two-point training set, for linear regression from ``w0 = 0``.

    ``points[k] ∈ {0, 1}`` says which of ``e_1, e_2`` sample ``k`` is. With
    ``f(x; w) = w·x``, ``Θ_kl = x_k·x_l`` is 1 for two copies of the same point and
    0 otherwise (singular as soon as a point repeats), and ``r0 = −y_{points}``.
    """
    pts = _checks.array(points, "points", ndim=1, dtype_kind="iu")
    if pts.size < 2 or np.any((pts != 0) & (pts != 1)):
        raise ValueError(f"points must be a 1-D array of at least 2 entries in {{0, 1}}, got {pts}")
    y = _checks.array(targets, "targets", shape=(2,)).astype(float)
    return (pts[:, None] == pts[None, :]).astype(float), -y[pts]


def two_point_loo_gap(n, t, targets=(1.0, 1.0)):
    """``E_S[r0ᵀ K_n(t) r0]`` for the two-point example, exactly (Chapter 5 closes Chapter 1's example).

    The expectation over the ``n_1 ~ Binomial(n, ½)`` copies of ``e_1`` is a finite
    sum; each term is :func:`gramlib.effective_gram.predicted_gap` of
    :func:`two_point_problem`, whose kernel is singular when a point repeats. At
    ``t = ∞`` the twin of a point seen twice or more still fits it (``ρ_i = 0``) and
    that of a point seen once never saw it (``ρ_i = −y_j``), so the value is
    ``2^{−n−1}(y_1² + y_2²) = Δ_{n−1}(∞)``, exponentially small like the gap itself.
    ``n`` an integer ``≥ 2``, ``t`` a time (``inf`` allowed); returns a float.
    """

    n = _checks.integer(n, "n", minimum=2)
    t = _checks.positive(t, "t", allow_zero=True, allow_inf=True)
    counts, pmf = _binomial_pmf(n)
    total = 0.0
    for m, weight in zip(counts, pmf):
        theta, r0 = two_point_problem(np.repeat([0, 1], [m, n - m]), targets)
        total += weight * float(predicted_gap(theta, r0, t))
    return total


def two_point_ntk_bound(n, targets=(1.0, 1.0)):
    """``E_S √(2 yᵀΘ⁺y / n)`` for the two-point example (Arora et al. 2019, leading term).

    ``Θ`` is block-constant (``Θ_kl = 1`` when ``x_k = x_l``, else 0), so
    ``yᵀΘ⁺y = Σ_{j seen} y_j²``; both points are seen with probability ``1 − 2^{1−n}``.
    """
    ns, scalar_n, ysq, y = _two_point_args(n, targets)
    both = (1.0 - 2.0 ** (1 - ns)) * np.sqrt(2.0 * ysq / ns)
    one = 2.0 ** (-ns) * (np.sqrt(2.0 * y[0] ** 2 / ns) + np.sqrt(2.0 * y[1] ** 2 / ns))
    out = both + one
    return out[0] if scalar_n else out


def two_point_stability_bound(n, t, targets=(1.0, 1.0), *, nodes=16):
    """The stability bound of :func:`stability_bound` for the two-point example, exactly.

    With ``q(s) = (1 + e^{−2s/n})/2``: ``V(s) = ½(y_1² + y_2²) q(s)^n`` and
    ``G(T)² = ½(y_1² + y_2²) e^{−2T/n} q(T)^{n−1}``; ``δ̄(T) = (1/n) ∫_0^T √V`` by composite
    Gauss–Legendre quadrature (``nodes`` per unit-length panel). ``B = 1``. ``V`` never
    falls below ``½(y_1²+y_2²) 2^{−n}`` (a point unseen), so the bound is ``∞`` at ``t = ∞``.
    """
    ns, scalar_n, ysq, _ = _two_point_args(n, targets)
    ts, scalar_t = _checks.times(t, "t")
    x, wq = np.polynomial.legendre.leggauss(_checks.integer(nodes, "nodes", minimum=2))
    out = np.full((ns.size, ts.size), np.inf)
    for col, T in enumerate(ts):
        if not np.isfinite(T):
            continue
        if T == 0.0:
            out[:, col] = 0.0
            continue
        # quadrature up to `cut`; beyond it q(s)^{n/2} = 2^{-n/2} (1 + O(n e^{-80})): exact tail
        cut = min(T, 40.0 * ns.max())
        edges = np.linspace(0.0, cut, int(math.ceil(cut)) + 1)
        mid, half = (edges[1:] + edges[:-1]) / 2, np.diff(edges) / 2
        s = (mid[:, None] + half[:, None] * x[None, :]).ravel()
        w = (half[:, None] * wq[None, :]).ravel()
        q = (1.0 + np.exp(-2.0 * s[None, :] / ns[:, None])) / 2.0
        integral = np.sum(w * q ** (ns[:, None] / 2.0), axis=1) + (T - cut) * 2.0 ** (-ns / 2.0)
        D = np.sqrt(0.5 * ysq) * integral / ns
        qT = (1.0 + np.exp(-2.0 * T / ns)) / 2.0
        G = np.sqrt(0.5 * ysq * np.exp(-2.0 * T / ns) * qT ** (ns - 1))
        out[:, col] = G * D + 0.5 * D**2
    out = out[:, 0] if scalar_t else out
    return out[0] if scalar_n else out
