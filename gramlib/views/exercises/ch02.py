"""Self-checks for the exercises of Chapter 2 (two trajectories)."""

from __future__ import annotations

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from ...devices import float64
from . import call_answer, compare, not_answered
from ...mathematics.twins import flat_loss
from ...runs.models import mlp


def _tiny_problem():
    model = mlp(4, 6, 2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(11))
    rng = np.random.default_rng(11)
    x = rng.normal(size=(10, 4))
    y = np.where(x[:, 1] > 0, 1.0, -1.0)
    theta, unravel = ravel_pytree(params)
    i = 3
    weights = jnp.ones(10).at[i].set(0.0)
    dense = np.asarray(jax.jit(jax.hessian(flat_loss(model.apply, unravel, x, y, weights, 10)))(theta))
    return model, params, x, y, i, dense


def check_rayleigh_quotient(my_rayleigh) -> bool:
    """Check ``my_rayleigh(apply, params, x, y, i, v) = vᵀH_{−i}v/‖v‖²`` on a tiny MLP (against a dense Hessian)."""
    if not_answered(my_rayleigh):
        return False
    with float64():
        model, params, x, y, i, dense = _tiny_problem()
        vs = np.random.default_rng(12).normal(size=(2, dense.shape[0]))
        expected = np.array([v @ dense @ v / (v @ v) for v in vs])
        got = call_answer(lambda: [float(my_rayleigh(model.apply, params, x, y, i, v)) for v in vs], "my_rayleigh")
        if got is None:
            return False
    return compare(got, expected, "Rayleigh quotient vᵀH₋ᵢv/‖v‖²", rtol=1e-8, atol=1e-10,
                   hint="H₋ᵢ = (1/n) Σ_{j≠i} ∇²ℓ(w; z_j): drop sample i but keep the 1/n; "
                        "use jax.jvp(jax.grad(loss), (θ,), (v,)).")
