"""Self-checks for the exercises of the appendix "Scaling up"."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import compare_call, not_answered


def two_layer_problem(n=12, d=5, m=7, seed=0):
    """A two-layer network ``f(x) = v·tanh(W x / sqrt(d)) / sqrt(m)`` and inputs: ``(x, W, v)`` float64 numpy."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d)), rng.standard_normal(m)


def two_layer_ntk_reference(x, w, v):
    """``J Jᵀ`` from ``jax.jacrev`` of the two-layer network with respect to ``(W, v)``."""
    d, m = x.shape[1], w.shape[0]

    def f(params, x):
        w, v = params
        return jnp.tanh(x @ w.T / np.sqrt(d)) @ v / np.sqrt(m)

    jac = jax.jacrev(f)((jnp.asarray(w), jnp.asarray(v)), jnp.asarray(x))
    flat = jnp.concatenate([j.reshape(x.shape[0], -1) for j in jac], axis=1)
    return np.asarray(flat @ flat.T)


def check_two_layer_ntk(answer) -> bool:
    """``answer(x, W, v)`` must return the ``n×n`` NTK built from Gram matrices only (no Jacobian)."""
    if not_answered(answer):
        return False
    x, w, v = two_layer_problem()
    want = two_layer_ntk_reference(x, w, v)
    return compare_call(answer, "your function", (x, w, v), want, "two-layer NTK", rtol=1e-5, atol=1e-8,
                        hint="Sum two terms: (x_a·x_b/d)(g_a·g_b) for W with g = v ⊙ tanh'(z)/sqrt(m), "
                             "and h_a·h_b/m for v with h = tanh(z).")

