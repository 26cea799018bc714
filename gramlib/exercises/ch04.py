"""Self-checks for the exercises of Chapter 4 (linearized networks)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import FAIL, compare, not_answered


def _kernel_problem():
    rng = np.random.default_rng(4)
    jac = rng.standard_normal((8, 12)) / 3
    return jac @ jac.T, rng.standard_normal(8)


def check_kernel_residuals(my_residuals) -> bool:
    """Check ``my_residuals(theta, r0, t) -> e^{−Θt/n} r0`` (gradient flow, ``n = len(r0)``)."""
    if not_answered(my_residuals):
        return False
    from ..ntk import kernel_residuals

    theta, r0 = _kernel_problem()
    times = [0.0, 0.5, 3.0, 40.0]
    try:
        got = np.stack([np.asarray(my_residuals(theta, r0, t), dtype=float) for t in times])
    except Exception as err:  # a student's bug must not stop the notebook
        print(f"{FAIL} my_residuals raised {type(err).__name__}: {err}")
        return False
    want = np.asarray(kernel_residuals(theta, r0, np.array(times)))
    return compare(got, want, "residuals r(t)", rtol=1e-8, atol=1e-10, labels=[f"t={t}" for t in times],
                   hint="Diagonalize Θ = U Λ Uᵀ and apply e^{−λt/n} to the coordinates Uᵀ r0; mind the 1/n.")


def check_first_order_limit(answer) -> bool:
    """Check the late-time value of the first-order (full-data contraction) LOO residuals."""
    if not_answered(answer):
        return False
    return compare(answer, 0.0, "lim_{t→∞} ρ^FO_i(t) for invertible Θ", atol=1e-8,
                   hint="Both r(t) and the full-data-contracted offset e^(i)(t) decay like e^{−Θt/n}.")


def check_empirical_ntk(my_ntk) -> bool:
    """Check ``my_ntk(apply, params, x) -> J Jᵀ`` (scalar outputs) on a small tanh MLP."""
    if not_answered(my_ntk):
        return False
    from ..models import mlp
    from ..ntk import empirical_ntk

    model = mlp(3, width=6, depth=3, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(4))
    x = jnp.asarray(np.random.default_rng(4).standard_normal((5, 3)))
    try:
        got = my_ntk(model.apply, params, x)
    except Exception as err:
        print(f"{FAIL} my_ntk raised {type(err).__name__}: {err}")
        return False
    return compare(got, empirical_ntk(model.apply, params, x), "empirical NTK", rtol=1e-8, atol=1e-10,
                   hint="Flatten jax.jacrev(apply)(params, x) leaf by leaf to (n, P_leaf), "
                        "concatenate along the parameter axis, then J @ J.T.")
