"""Closed forms of the effective Gram matrix: the analytic anchors of Chapter 5.

Two results for one output and gradient flow, each tested against the general code of
:mod:`gramlib.mathematics.effective_gram`:

* :func:`exchangeable_effective_gram` — ``K_n(t)`` of an exchangeable Gram matrix
  ``Θ = aI + b11ᵀ`` (all samples alike), ``Θ = I`` included (``a = 1, b = 0``). With
  ``J = 11ᵀ/n``, ``Q = I − J``, ``μ = a + (n−1)b`` (the eigenvalue of ``Θ_{−i}`` along ``1``) and
  ``β(t) = b (1 − e^{−μt/n}) / μ``, the leave-one-out map is ``R_t = (1+β) Q + (1 − (n−1)β) J``
  and the run's ``Φ_t = e^{−at/n} Q + e^{−(a+nb)t/n} J``, so ::

      K_n(t) = (1/2n) [((1+β)² − e^{−2at/n}) Q + ((1 − (n−1)β)² − e^{−2(a+nb)t/n}) J]

  (``ch05-exchangeable``). For ``Θ = I``, ``K_n(t) = (1 − e^{−2t/n}) I / (2n)``, and
  ``K_n(∞) = (1/2n) c² Θ⁻²`` with ``c = a(a+nb)/(a+(n−1)b) = 1/[Θ⁻¹]_ii``.
* :func:`ntk_norm_bounds` — ``r0ᵀ K_n(∞) r0`` against the NTK norm ``r0ᵀ Θ⁻¹ r0`` (``ch05-ntk-norm``):
  ``λ_min² / λ_max · r0ᵀΘ⁻¹r0 ≤ 2n · r0ᵀ K_n(∞) r0 ≤ (max_i Θ_ii)² / λ_min · r0ᵀΘ⁻¹r0``, both equalities
  for ``Θ = cI``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .. import _checks


def exchangeable_effective_gram(n, a, b, t):
    """``K_n(t)`` of the exchangeable Gram matrix ``Θ = aI + b11ᵀ`` under gradient flow (Chapter 5).

    ``n`` (≥ 2) samples, one output; ``a > 0`` and ``a + nb > 0`` (``Θ`` positive definite);
    ``t ≥ 0`` a scalar time, ``inf`` allowed. Returns the ``(n, n)`` matrix of the module's
    closed form, a differentiable function of ``a``, ``b`` and a finite ``t``.
    """
    n = _checks.integer(n, "n", minimum=2)
    a = _checks.positive(a, "a")
    t = _checks.positive(t, "t", allow_zero=True, allow_inf=True)
    if isinstance(b, (bool, str, bytes)) or np.ndim(b) != 0 \
            or np.dtype(b.dtype if hasattr(b, "dtype") else np.asarray(b).dtype).kind not in "fiu":
        raise TypeError(f"b must be a real number, got {b!r}")
    b = jnp.asarray(b, dtype=jnp.result_type(float, b))
    if _concrete(b) and not float(a + n * b) > 0:
        raise ValueError(f"a + n·b must be > 0 for a positive definite Θ = aI + b11ᵀ, got a = {a}, "
                         f"b = {float(b)}, n = {n}")
    mu = a + (n - 1) * b
    scale = jnp.asarray(t, b.dtype) / n
    beta = b * -jnp.expm1(-mu * scale) / mu
    q_coef = (1 + beta) ** 2 - jnp.exp(-2 * a * scale)
    j_coef = (1 - (n - 1) * beta) ** 2 - jnp.exp(-2 * (a + n * b) * scale)
    j = jnp.full((n, n), 1.0 / n, dtype=b.dtype)
    return (q_coef * (jnp.eye(n, dtype=b.dtype) - j) + j_coef * j) / (2 * n)


def _concrete(x):
    try:
        float(x)
    except Exception:
        return False
    return True


class NtkNormBounds(NamedTuple):
    """``lower ≤ r0ᵀ K_n(∞) r0 ≤ upper`` from the NTK norm ``ntk_norm = r0ᵀ Θ⁻¹ r0`` (:func:`ntk_norm_bounds`)."""

    ntk_norm: float
    lower: float
    upper: float


def ntk_norm_bounds(theta, r0):
    """Bounds on ``r0ᵀ K_n(∞) r0`` by the NTK norm ``r0ᵀ Θ⁻¹ r0`` (Chapter 5, ``ch05-ntk-norm``).

    For a positive definite ``Θ`` (``(n, n)``, one output) and ``r0`` ``(n,)``:
    ``2n · r0ᵀ K_n(∞) r0 = Σ_i [Θ⁻¹r0]_i² / [Θ⁻¹]_ii²``, and ``1/Θ_ii ≤ [Θ⁻¹]_ii ≤ 1/λ_min`` with
    ``λ_min r0ᵀΘ⁻²r0 ≤ r0ᵀΘ⁻¹r0 ≤ λ_max r0ᵀΘ⁻²r0`` give
    ``lower = λ_min² / λ_max · r0ᵀΘ⁻¹r0 / 2n`` and ``upper = (max_i Θ_ii)² / λ_min · r0ᵀΘ⁻¹r0 / 2n``.
    With ``f(X; w0) = 0``, ``r0 = −y`` and ``r0ᵀΘ⁻¹r0 = yᵀΘ⁻¹y``. Returns :class:`NtkNormBounds`.
    """
    theta = _checks.square_symmetric(theta, "theta")
    n = theta.shape[0]
    r0 = _checks.array(r0, "r0", shape=(n,))
    dtype = jnp.result_type(float, theta.dtype, r0.dtype)
    theta, r0 = jnp.asarray(theta, dtype), jnp.asarray(r0, dtype)
    lam = jnp.linalg.eigvalsh(theta)
    if _concrete(lam[0]) and not float(lam[0]) > 0:
        raise ValueError(f"theta must be positive definite, got smallest eigenvalue {float(lam[0]):.3g}")
    norm = r0 @ jnp.linalg.solve(theta, r0)
    lower = lam[0] ** 2 / lam[-1] * norm / (2 * n)
    upper = jnp.max(jnp.diag(theta)) ** 2 / lam[0] * norm / (2 * n)
    return NtkNormBounds(norm, lower, upper)
