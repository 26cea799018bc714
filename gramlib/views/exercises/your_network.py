"""Self-checks for the exercises of the appendix "Bring your own network".

The check tries a student's adapter on an Equinox model of its own (Equinox is in the book's
``test`` extra, not a dependency of gramlib: it is imported when the check runs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import FAIL, compare, not_answered
from ...kernels import ntk


def adapter_problem(seed=0):
    """An Equinox MLP ``5 → 6 → 6 → 2`` (tanh) acting on one sample, and a batch of 7 inputs."""
    import equinox as eqx

    key_model, key_x = jax.random.split(jax.random.PRNGKey(seed))
    model = eqx.nn.MLP(5, 2, 6, 2, activation=jnp.tanh, key=key_model)
    x = jax.random.normal(key_x, (7, 5), jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))[0].dtype)
    return model, x


def adapter_reference(model, x):
    """The model's outputs ``(n, 2)`` by ``jax.vmap``, ``J Jᵀ`` from ``jax.jacrev`` over all its arrays (rows
    ordered (sample, output)) and the number of parameters."""
    import equinox as eqx

    def outputs(arrays):
        return jax.vmap(eqx.combine(arrays, eqx.filter(model, eqx.is_array, inverse=True)))(x)

    arrays = eqx.filter(model, eqx.is_array)
    jac = jax.jacrev(outputs)(arrays)
    flat = jnp.concatenate([j.reshape(x.shape[0] * 2, -1) for j in jax.tree_util.tree_leaves(jac)], axis=1)
    return np.asarray(outputs(arrays)), np.asarray(flat @ flat.T), flat.shape[1]


def check_equinox_adapter(answer) -> bool:
    """``answer(model)`` must return ``(apply, params)`` for any Equinox model acting on one sample.

    ``params`` must hold the model's arrays (the parameters), ``apply(params, x)`` the model's outputs for
    a batch ``x``, and ``gramlib.empirical_ntk(apply, params, x)`` the NTK over all the model's arrays.
    """
    if not_answered(answer):
        return False
    if not callable(answer):
        print(f"{FAIL} make_adapter must be a function of the model, got {type(answer).__name__}.")
        return False
    try:
        model, x = adapter_problem()
    except ImportError:
        print(f"{FAIL} this check needs Equinox: pip install equinox")
        return False
    want_out, want_ntk, count = adapter_reference(model, x)
    hint = "Split with eqx.partition(model, eqx.is_array) and map eqx.combine(params, static) over the batch."
    try:
        result = answer(model)
        if not_answered(result):
            return False
        apply, params = result
        sizes = [np.size(w) for w in jax.tree_util.tree_leaves(params)]
        got_out = np.asarray(apply(params, x), dtype=float)
    except Exception as err:  # a student's bug must not stop the notebook
        print(f"{FAIL} your adapter raised {type(err).__name__}: {err}. {hint}")
        return False
    if sum(sizes) != count:
        print(f"{FAIL} params hold {sum(sizes)} numbers, the model has {count} parameters. {hint}")
        return False
    if not compare(got_out, want_out, "apply(params, x)", rtol=1e-5, atol=1e-8, hint=hint):
        return False
    try:
        got_ntk = ntk.empirical_ntk(apply, params, x)
    except Exception as err:
        print(f"{FAIL} gramlib.empirical_ntk(apply, params, x) raised {type(err).__name__}: {err}. {hint}")
        return False
    return compare(got_ntk, want_ntk, "empirical NTK of your adapter", rtol=1e-5, atol=1e-8, hint=hint)

