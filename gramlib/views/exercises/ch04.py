"""Self-checks for the exercises of Chapter 4 (linearized networks)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...devices import float64
from . import call_answer, compare, not_answered
from ...kernels.ntk import empirical_ntk
from ...mathematics.effective_gram import first_order_loo_residuals
from ...mathematics.kernel_flow import kernel_residuals
from ...runs.models import mlp


def _kernel_problem():
    rng = np.random.default_rng(4)
    jac = rng.standard_normal((8, 12)) / 3
    return jac @ jac.T, rng.standard_normal(8)


def check_kernel_residuals(my_residuals) -> bool:
    """Check ``my_residuals(theta, r0, t) -> e^{−Θt/n} r0`` (gradient flow, ``n = len(r0)``)."""
    if not_answered(my_residuals):
        return False

    theta, r0 = _kernel_problem()
    times = [0.0, 0.5, 3.0, 40.0]
    got = call_answer(lambda: [np.asarray(my_residuals(theta, r0, t), dtype=float) for t in times], "my_residuals")
    if got is None:
        return False
    with float64():  # the reference in float64, whatever the notebook's setting
        want = np.asarray(kernel_residuals(theta, r0, np.array(times)))
    return compare(got, want, "residuals r(t)", rtol=1e-8, atol=1e-10, labels=[f"t={t}" for t in times],
                   hint="Diagonalize Θ = U Λ Uᵀ and apply e^{−λt/n} to the coordinates Uᵀ r0; mind the 1/n.")


def check_first_order(my_first_order) -> bool:
    """Check ``my_first_order(theta, r0, t) -> ρ^FO(t)``, the LOO residuals of the first-order trap.

    ``ρ^FO = r + diag E`` with ``Ė = −(1/n) Θ (E − Diag(r))``, ``ṙ = −(1/n) Θ r``,
    ``E(0) = 0`` (one output), against
    :func:`gramlib.effective_gram.first_order_loo_residuals`.
    """
    if not_answered(my_first_order):
        return False

    theta, r0 = _kernel_problem()
    times = [0.5, 1.5, 3.0]
    got = call_answer(lambda: [np.asarray(my_first_order(theta, r0, t), dtype=float) for t in times],
                      "my_first_order")
    if got is None:
        return False
    with float64():  # the reference in float64, whatever the notebook's setting
        want = np.asarray(first_order_loo_residuals(theta, r0, np.array(times)))
    return compare(got, want, "first-order LOO residuals ρ^FO(t)", rtol=1e-6, atol=1e-8,
                   labels=[f"t={t}" for t in times],
                   hint="Integrate r and E together (e.g. RK4, step 0.01) from r(0) = r0, E(0) = 0; "
                        "the drive is Θ Diag(r), and ρ^FO_i = r_i + E_ii.")


def check_empirical_ntk(my_ntk) -> bool:
    """Check ``my_ntk(apply, params, x) -> J Jᵀ`` (scalar outputs) on a small tanh MLP."""
    if not_answered(my_ntk):
        return False

    with float64():  # the model and the reference in float64, whatever the notebook's setting
        model = mlp(3, width=6, depth=2, dtype=jnp.float64)
        params = model.init(jax.random.PRNGKey(4))
        x = jnp.asarray(np.random.default_rng(4).standard_normal((5, 3)))
        got = call_answer(my_ntk, "my_ntk", model.apply, params, x)
        if got is None:
            return False
        want = empirical_ntk(model.apply, params, x)
    return compare(got, want, "empirical NTK", rtol=1e-8, atol=1e-10,
                   hint="Flatten jax.jacrev(apply)(params, x) leaf by leaf to (n, P_leaf), "
                        "concatenate along the parameter axis, then J @ J.T.")
