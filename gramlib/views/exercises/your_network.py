"""Self-checks for the exercises of the appendix "Bring your own network".

The check runs a student's function on an Equinox model of its own (Equinox is in the book's
``test`` extra, not a dependency of gramlib: it is imported when the check runs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import FAIL, compare_call, not_answered


def equinox_problem(seed=0):
    """An Equinox MLP ``5 → 6 → 6 → 2`` (tanh) acting on one sample, and a batch ``x`` of 7 inputs."""
    import equinox as eqx

    key_model, key_x = jax.random.split(jax.random.PRNGKey(seed))
    model = eqx.nn.MLP(5, 2, 6, 2, activation=jnp.tanh, key=key_model)
    dtype = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))[0].dtype
    return model, jax.random.normal(key_x, (7, 5), dtype)


def equinox_ntk_reference(model, x):
    """``J Jᵀ`` over all the arrays of ``model``, from ``jax.jacrev`` of ``jax.vmap(model)(x)``.

    Rows ordered (sample, output), as :func:`gramlib.ntk.empirical_ntk` orders them.
    """
    import equinox as eqx

    arrays, static = eqx.partition(model, eqx.is_array)
    jac = jax.jacrev(lambda p: jax.vmap(eqx.combine(p, static))(x))(arrays)
    rows = int(np.prod(jax.eval_shape(jax.vmap(model), x).shape))
    flat = jnp.concatenate([j.reshape(rows, -1) for j in jax.tree_util.tree_leaves(jac)], axis=1)
    return np.asarray(flat @ flat.T)


def check_equinox_ntk(answer) -> bool:
    """``answer(model, x)`` must return the empirical NTK of any Equinox model that acts on one sample.

    The kernel is over all the model's arrays, on the batch ``x``, rows ordered (sample, output): ``(2n, 2n)``
    for the check's MLP with two outputs.
    """
    if not_answered(answer):
        return False
    if not callable(answer):
        print(f"{FAIL} your answer must be a function of (model, x), got {type(answer).__name__}.")
        return False
    try:
        model, x = equinox_problem()
    except ImportError:
        print(f"{FAIL} this check needs Equinox: pip install equinox")
        return False
    return compare_call(answer, "your function", (model, x), equinox_ntk_reference(model, x),
                        "empirical NTK of the Equinox MLP", rtol=1e-5, atol=1e-8,
                        hint="Split with eqx.partition(model, eqx.is_array), write the adapter "
                             "lambda p, x: jax.vmap(eqx.combine(p, static))(x), and pass it to gramlib.empirical_ntk.")
