"""The one tolerance rule for floating-point comparisons in the tests.

Two results of the same computation done in a different order (sharded over devices or not, tiled or
not, a ``scan`` or one step at a time, one output or several, a closed form or a brute-force loop in
the same precision) differ only by rounding. Their relative difference is bounded by ::

    tolerance(dtype, size, cond=κ) = C · ε(dtype) · size · κ

- ``ε(dtype)`` is the machine epsilon of the dtype the results are computed in (``jnp.finfo``):
  2.2e-16 in float64, 1.2e-7 in float32.
- ``size`` is the number of terms a result sums over (``n`` for a sum over samples, ``n·p`` for a
  Gram matrix's entries built from ``p`` parameters, ``n·steps`` for a recursion of ``steps`` steps,
  …). A sum of ``size`` terms in floating point is off by at most ``(size − 1) · ε · Σ|terms|`` in
  the worst case (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2), typically by
  ``√size · ε · Σ|terms|``; the rule takes the worst-case growth, so it holds whatever the order.
- ``κ`` is the condition number of the problem where the result is the solution of one (a solve, an
  inverse, an eigen-decomposition's eigenvectors, a resolvent ``(Θ + sI)⁻¹``): backward-stable
  algorithms give a relative error of at most ``κ`` times the rounding of their input. Leave it 1
  where nothing is solved.
- ``C = 16``: each of the two results can be off by the bound once (×2), and a result usually chains
  a few such reductions (a product, a contraction, an ``exp``/``expm1`` of ≤ 1 ulp each, ×8).

Compare normwise: ``max|a − b| ≤ tolerance(...) · max|b|`` (``assert_allclose(a, b, rtol=0,
atol=tolerance(...) * max|b|)``), or with ``rtol=tolerance(...)`` for quantities of one sign
(a positive gap, a norm, a loss). The worst case ``size · ε`` is rarely attained (random rounding
errors give ``√size · ε``), and that ``√size`` of margin also absorbs the cancellation of random
zero-mean terms (``Σ|terms| ≈ √size · |Σ terms|``). The bound stays 10⁴ to 10⁸ times tighter than
the error of a wrong formula (a missing term, a wrong sign or step) in the tests' problems.

Where the compared quantity can be near zero everywhere (a residual that is driven to zero, a
difference of two runs), the absolute form is ``atol = tolerance(...) * scale``, ``scale`` the size of
what the result is made of (e.g. ``max|r0|``, ``max|Θ|``). :func:`assert_close` is the normwise
comparison with ``scale = max|want|`` unless given.

Comparisons with an independent *approximate* method (Monte Carlo, a numerical Laplace inversion,
finite differences, an ODE solver with its own step size) do not use this rule: their bound follows
from that method's own error, and the test says which in a comment.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

C = 16.0


def tolerance(dtype, size: int = 1, *, cond: float = 1.0) -> float:
    """The relative bound ``C · ε(dtype) · size · cond`` (``C = 16``) for two orders of one computation.

    ``dtype``: a floating dtype (``jnp.float64``, ``np.float32``, an array's ``.dtype``); ``size``: the
    number of terms a result sums over (≥ 1); ``cond``: the problem's condition number (≥ 1) where a
    result solves a linear system or a decomposition, else 1.
    """
    dt = jnp.dtype(dtype)
    if not jnp.issubdtype(dt, jnp.inexact):
        raise TypeError(f"dtype must be a floating dtype, got {dt}")
    if not (np.isfinite(size) and size >= 1):
        raise ValueError(f"size must be a number of terms >= 1, got {size!r}")
    if not (np.isfinite(cond) and cond >= 1):
        raise ValueError(f"cond must be a finite condition number >= 1, got {cond!r}")
    return float(C * jnp.finfo(dt).eps * size * cond)


def assert_close(got, want, size: int = 1, *, cond: float = 1.0, scale: float | None = None, dtype=None):
    """Assert ``max|got − want| ≤ tolerance(dtype, size, cond=cond) · scale`` (normwise).

    ``scale`` defaults to ``max|want|`` (at least the smallest normal number, so an exact zero compares
    exactly); ``dtype`` defaults to the less precise of the two arrays' floating dtypes.
    """
    got, want = np.asarray(got), np.asarray(want)
    if dtype is None:
        kinds = [a.dtype for a in (got, want) if jnp.issubdtype(a.dtype, jnp.inexact)]
        dtype = max(kinds, key=lambda d: jnp.finfo(d).eps) if kinds else np.float64
    if scale is None:
        scale = max(float(np.max(np.abs(want), initial=0.0)), float(jnp.finfo(dtype).tiny))
    bound = tolerance(dtype, size, cond=cond) * scale
    np.testing.assert_allclose(got, want, rtol=0, atol=bound,
                               err_msg=f"normwise bound {bound:.3g} = tolerance({jnp.dtype(dtype).name}, "
                                       f"size={size}, cond={cond:.3g}) * scale {scale:.3g}")


def talbot_gain() -> float:
    """The condition number of gramlib's Talbot inversion, for ``cond`` where a result is one (Chapter 5).

    ``f(t) ≈ Re Σ_k w_k F(z_k)`` sums terms much larger than ``f``: relative rounding errors of the
    transform ``F`` reach ``f`` multiplied by ``Σ_k |w_k F(z_k)| / |f(t)|``. For ``F(z) = 1/z``
    (``f = 1``) that is ``Σ_k |w_k / z_k|``, independent of ``t`` (about 54 for 32 nodes).
    """
    from gramlib.mathematics.leave_one_out import talbot_contour

    z, w = talbot_contour(jnp.ones(1, jnp.float64))
    return float(jnp.sum(jnp.abs(w / z)))


def cond(matrix) -> float:
    """The condition number ``λ_max / λ_min`` of a symmetric positive semidefinite matrix on its range.

    Eigenvalues up to ``tolerance(dtype, N) · λ_max`` are the null space (rounding of exact zeros),
    the way a pseudo-inverse treats them; for an invertible matrix this is ``np.linalg.cond``.
    """
    m = np.asarray(matrix)
    lam = np.linalg.eigvalsh(m)
    top = float(lam[-1])
    kept = lam[lam > tolerance(m.dtype, m.shape[0]) * top]
    return top / float(kept[0])


def eigvec_cond(matrix) -> float:
    """The condition number of a symmetric matrix's eigenvectors: ``max|λ| / min_k (λ_{k+1} − λ_k)``.

    A perturbation ``E`` turns an eigenvector by about ``‖E‖ / gap`` (Davis–Kahan), so rounding of relative
    size ``ε`` moves it by ``ε · max|λ| / gap``; ``cond`` for results built from eigenvectors.
    """
    lam = np.linalg.eigvalsh(np.asarray(matrix))
    return float(np.abs(lam).max() / np.diff(lam).min())


def recursion_growth(thetas, lr, n, steps) -> float:
    """How much ``steps`` gradient-descent steps ``I − (lr/n) Θ_k`` can amplify a rounding error:
    ``max(1, max_k ‖I − (lr/n) Θ_k‖₂^steps)``, the ``cond`` of a recursion's result."""
    norms = [np.linalg.norm(np.eye(len(th)) - lr / n * np.asarray(th), 2) for th in np.asarray(thetas)]
    return float(max(1.0, max(norms) ** steps))
