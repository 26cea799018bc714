"""Chapter 4's experiments: the empirical NTK at initialization, linearized against real networks.

:func:`spectrum_summary` is a row of the chapter's table of NTK spectra,
:func:`linearization_run` trains one network beside its linearization and
:func:`width_sweep` does it for MLPs of growing width (the chapter's width figure and
table); :func:`first_order_gap` is the trap of the mixed bookkeeping
(``ch04-first-order``) and :func:`held_out_gap` the gap that the linearized model
shows on held-out data.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from ..kernels.ntk import empirical_ntk
from ..mathematics.effective_gram import first_order_loo_residuals
from ..mathematics.kernel_flow import kernel_residuals, kernel_test_residuals
from ..runs import models
from ..runs.train import gradient_descent


def spectrum_summary(theta, params=None, *, outputs=1):
    """The spectrum of an NTK Gram matrix ``Θ = U Λ Uᵀ`` in the units of Chapter 4's time ``t``.

    Direction ``j`` of the linearized residual ``r(t) = e^{−Θt/n} r0`` (``ch04-flow``) is
    learned at ``t ≈ n/λ_j``. Returns a dict with ``trace = tr Θ / n``, ``top = λ_max / n``,
    ``bottom = λ_min / n``, ``fast = n / λ_max``, ``slow = n / λ_min``,
    ``decades = log10(λ_max / λ_min)`` and, when the network's ``params`` are given, the
    number ``p`` of parameters. ``theta`` ``(N, N)`` must be positive definite,
    ``N = n · outputs``.
    """
    theta = np.asarray(_checks.square_symmetric(theta, "theta"), dtype=float)
    outputs = _checks.integer(outputs, "outputs", minimum=1)
    if theta.shape[0] == 0 or theta.shape[0] % outputs:
        raise ValueError(f"theta must have n · outputs rows (outputs={outputs}), got shape {theta.shape}")
    n = theta.shape[0] // outputs
    lam = np.linalg.eigvalsh(theta)
    if lam[0] <= 0:
        raise ValueError(f"theta must be positive definite for its time scales n/λ; smallest eigenvalue {lam[0]:.3g}")
    row = {} if params is None else dict(p=sum(leaf.size for leaf in _param_leaves(params)))
    row.update(trace=np.trace(theta) / n, top=lam[-1] / n, bottom=lam[0] / n,
               slow=n / lam[0], fast=n / lam[-1], decades=np.log10(lam[-1] / lam[0]))
    return row


def _param_leaves(params):
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or not all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves):
        raise TypeError(f"params must be a pytree of arrays (a network's weights), got {type(params).__name__}")
    return leaves


class LinearizationRun(NamedTuple):
    """A network trained by gradient descent beside its linearization at the same initialization.

    ``real`` and ``lin`` ``(steps + 1, N)`` are the residuals ``r_k`` of the network and
    ``r_k^lin = (I − (η/n) Θ_0)^k r_0`` of its linearization; ``error`` is
    ``max_k ‖r_k − r_k^lin‖ / ‖r_0‖`` and ``moved`` is ``‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F``.
    """

    real: np.ndarray
    lin: np.ndarray
    error: float
    moved: float


def _check_key(key):
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and key.shape == ():
        return
    if dtype is None or np.shape(key) != (2,) or np.dtype(dtype) != np.uint32:
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key or PRNGKey), got {key!r}")


def _check_data(x, y):
    x = _checks.array(x, "x", ndim=(2, 3, 4))
    y = _checks.array(y, "y", ndim=(1, 2))
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have one row per input: x has {x.shape[0]} rows, y has {y.shape[0]}")


def linearization_run(model, params, x, y, *, lr, steps, progress=False):
    """Train ``model`` from ``params`` for ``steps`` steps of size ``lr`` and compare with its linearization.

    The network runs with :func:`gramlib.train.gradient_descent`; the linearization is
    ``(I − (η/n) Θ_0)^k r_0`` (``ch04-prop-linear``) with the empirical NTK ``Θ_0`` at
    ``params`` (:func:`gramlib.ntk.empirical_ntk`). Returns a :class:`LinearizationRun`.
    """
    if not hasattr(model, "apply") or not callable(model.apply):
        raise TypeError(f"model must be a gramlib.models.Model (with .apply), got {type(model).__name__}")
    _param_leaves(params)
    _check_data(x, y)
    lr = _checks.positive(lr, "lr")
    steps = _checks.integer(steps, "steps", minimum=1)
    run = gradient_descent(model.apply, params, x, y, lr=lr, steps=steps, progress=progress)
    theta0 = empirical_ntk(model.apply, params, x)
    theta_end = empirical_ntk(model.apply, run.params, x)
    lin = np.asarray(kernel_residuals(theta0, run.residuals[0], np.arange(steps + 1), lr=lr,
                                      outputs=run.outputs))
    error = np.max(np.linalg.norm(run.residuals - lin, axis=1)) / np.linalg.norm(run.residuals[0])
    moved = float(jnp.linalg.norm(theta_end - theta0) / jnp.linalg.norm(theta0))
    return LinearizationRun(run.residuals, lin, error, moved)


def width_sweep(x, y, widths, *, lr, steps, key, depth=2, progress=True):
    """:func:`linearization_run` for tanh MLPs of each width in ``widths`` (NTK parameterization, float64).

    Every network has ``depth`` layers and is initialized from the same ``key``
    (:func:`gramlib.models.mlp`); ``x`` ``(n, d)``, ``y`` ``(n,)``. Returns
    ``{width: LinearizationRun}`` in the order of ``widths`` (Chapter 4's width figure).
    """
    _check_data(x, y)
    if np.asarray(x).ndim != 2:
        raise ValueError(f"x must be a 2-D array (n, d) of MLP inputs, got shape {np.shape(x)}")
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or len(widths) == 0:
        raise TypeError(f"widths must be a non-empty sequence of integers, got {widths!r}")
    widths = [_checks.integer(w, "each width", minimum=1) for w in widths]
    depth = _checks.integer(depth, "depth", minimum=2)
    _check_key(key)
    runs = {}
    for width in tqdm(widths, desc="widths", disable=not progress):
        net = models.mlp(np.shape(x)[1], width=width, depth=depth, dtype=jnp.float64)
        runs[width] = linearization_run(net, net.init(key), x, y, lr=lr, steps=steps)
    return runs


def first_order_gap(theta, r0, t, *, outputs=1):
    """The gap predicted by the mixed bookkeeping (``ch04-first-order``): ``(1/2n) Σ_i (‖ρ^FO_i‖² − ‖r_i‖²)``.

    ``ρ^FO`` are :func:`gramlib.effective_gram.first_order_loo_residuals` and ``r(t) =
    e^{−Θt/n} r0``; by ``ch04-prop-trap`` the prediction tends to zero. ``t`` a scalar or
    1-D array of flow times; returns a float array of the shape of ``t``.
    """
    rho = np.asarray(first_order_loo_residuals(theta, r0, t, outputs=outputs))
    r = np.asarray(kernel_residuals(theta, r0, t, outputs=outputs))
    n = r.shape[-1] // outputs
    return (np.sum(rho**2, axis=-1) - np.sum(r**2, axis=-1)) / (2 * n)


def held_out_gap(theta, theta_test, r0, r0_test, t):
    """Held-out gap of the linearized model: test loss minus training loss, ``½ mean r*(t)² − ½ mean r(t)²``.

    One output: ``theta`` ``(n, n)``, ``theta_test = Θ(X*, X)`` ``(M, n)``, ``r0`` and
    ``r0_test`` the initial residuals; the residuals follow gradient flow
    (:func:`gramlib.kernel_flow.kernel_residuals`, :func:`gramlib.kernel_flow.kernel_test_residuals`).
    Returns a float array of the shape of ``t``.
    """
    r_test = np.asarray(kernel_test_residuals(theta, theta_test, r0, r0_test, t))
    r = np.asarray(kernel_residuals(theta, r0, t))
    return 0.5 * np.mean(r_test**2, axis=-1) - 0.5 * np.mean(r**2, axis=-1)
