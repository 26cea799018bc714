"""Predicting the test loss of a real network from its own training run (Chapter 7).

Feature learning moves the kernel, so the prediction follows the run: kernel
snapshots ``Θ(w_k)`` at ``M`` equally spaced steps and the real residuals
``r_k`` at every step feed the matrix recursion of the leave-one-out twins
(:func:`gramlib.trajectory.loo_trajectory`), and the predicted test loss
is the leave-one-out loss

    L̂ = (1/2n) Σ_i ‖ρ_i(T)‖².

:class:`gramlib.predictor.LooPredictor` holds one run's expensive state and answers the leave-one-out
questions from it; :func:`gramlib.predicted_loss.predict_test_loss` (the experiments layer) does it all in
one call and sets the prediction beside the held-out test loss and every baseline.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from . import baselines
from .. import _checks
from ..kernels import ntk
from ..mathematics import kernel_flow, trajectory


def trajectory_loo(run, snapshots=None, *, cross=None) -> trajectory.TwinResiduals:
    """Predicted LOO residuals of a :class:`gramlib.train.TrainResult`, a :class:`gramlib.trajectory.TwinResiduals`.

    ``rho``: ``ρ(T)``, ``(n, C)``-stacked ``(N,)``; ``path``: the twins' ``ρ(k)`` at every step
    ``(steps, N)``; ``forces``: the segment forces ``(K, N, n)`` of :func:`twin_readout` (with
    ``cross`` only, else ``None``); NumPy arrays.

    ``cross``: the run's two-time kernel ``(k, l) ↦ Θ(t_k, t_l)`` over its
    ``M`` snapshots and the final weights (:func:`gramlib.ntk.two_time_kernel`
    of ``run.weights``), the prediction of Chapter 7; ``None`` uses the
    one-time kernel ``Θ(t_k)`` only (the matrix ODE with ``Θ`` piecewise
    constant). ``snapshots`` (a divisor of ``M``) keeps only every
    ``M/snapshots``-th snapshot, each then standing for ``steps/snapshots``
    steps: the error of using fewer kernels, measured on the same run.
    """

    thetas, stride = run.thetas, 1
    if snapshots is not None:
        k = _checks.integer(snapshots, "snapshots", minimum=1)
        if len(thetas) % k:
            raise ValueError(f"snapshots must divide the run's {len(thetas)} snapshots, got {k}")
        stride = len(thetas) // k
        thetas = thetas[::stride]
    if cross is not None and stride > 1:
        full = cross
        cross = lambda k, l: full(k * stride if k < len(thetas) else len(run.thetas), l * stride)  # noqa: E731
    out = trajectory.loo_trajectory(thetas, run.residuals, run.lr, outputs=run.outputs, cross=cross)
    return trajectory.TwinResiduals(*(None if o is None else np.asarray(o) for o in out))


def _flat(apply, x):
    return lambda w: apply(w, x).reshape(-1)


@partial(jax.jit, static_argnames="apply")
def _pushed(apply, w, x, d):
    """``J(w) δ^{(i)}`` for every twin ``i`` (``d``: parameter trees with a leading twin axis), ``(m, N)``."""
    return jax.vmap(lambda di: jax.jvp(_flat(apply, x), (w,), (di,))[1])(d)


@partial(jax.jit, static_argnames="apply")
def _pulled(apply, w, x, a):
    """``J(w)ᵀ a_i`` for every twin ``i`` (``a``: ``(m, N)``), parameter trees with a leading twin axis."""
    out, vjp = jax.vjp(_flat(apply, x), w)
    return jax.vmap(lambda ai: vjp(ai.astype(out.dtype))[0])(a)


@partial(jax.jit, static_argnames="apply")
def _remainder(apply, w, x, r, keep, d):
    """``s^{(i)} = ∇L_{∖i}(w + δ^{(i)}) − ∇L_{∖i}(w) − (1/n) J(w)ᵀ M_i J(w) δ^{(i)}`` for every twin ``i``.

    ``r`` ``(N,)``: the run's residuals at ``w``, so ``r_j(w + δ) = r_j + f_j(w + δ) − f_j(w)``;
    ``keep`` ``(m, N)``: the 0/1 rows of the samples twin ``i`` trains on (``M_i``).
    """
    f = _flat(apply, x)
    n = x.shape[0]
    f0 = f(w)
    r, keep = r.astype(f0.dtype), keep.astype(f0.dtype)

    def grad_without(k, di):  # ∇L_{∖i}(w + δ) − ∇L_{∖i}(w) = (1/n) [J(w+δ)ᵀ M r(w+δ) − J(w)ᵀ M r]
        moved = jax.tree_util.tree_map(jnp.add, w, di)
        out, vjp_moved = jax.vjp(f, moved)
        return jax.tree_util.tree_map(jnp.subtract, vjp_moved(k * (r + out - f0) / n)[0],
                                      jax.vjp(f, w)[1](k * r / n)[0])

    exact = jax.vmap(grad_without)(keep, d)
    gauss_newton = _pulled(apply, w, x, keep * _pushed(apply, w, x, d) / n)
    return jax.tree_util.tree_map(jnp.subtract, exact, gauss_newton)


@partial(jax.jit, static_argnames=("steps", "n"))
def _correction_segment(theta, start, source, keep, lr, steps, n):
    """One segment of the correction: ``u_{t+1} = u_t − (η/n) Θ M_i u_t − η J s``, ``steps`` times.

    ``u = J δ̃`` (rows: twins) is the correction's output offset under the segment's frozen kernel
    ``Θ``, ``source`` holds ``J s̄``; returns the summed force ``Σ_t −(η/n) M_i u_t``, whose
    ``Jᵀ`` is the correction's Gauss–Newton part of the weight offset.
    """
    def step(carry, _):
        u, total = carry
        force = -(lr / n) * keep * u
        return (u + force @ theta - lr * source, total + force), None

    (_, total), _ = lax.scan(step, (start, jnp.zeros_like(start)), None, length=steps)
    return total


def checked_snapshot_run(run, x):
    """``x`` as an array, after checking that ``run`` holds its kernel snapshots and their weights and that
    ``x`` holds its ``n`` training inputs (the run of :func:`twin_readout`'s callers); ``ValueError`` otherwise."""
    if not len(run.thetas) or len(run.weights) != len(run.thetas) + 1:
        raise ValueError("run must hold its kernel snapshots and their weights (gramlib.train.gradient_descent "
                         "with snapshots > 0)")
    x = _checks.array(x, "x")
    if len(x) != run.n:
        raise ValueError(f"x must hold the run's {run.n} training inputs, got {len(x)} rows")
    return x


def twin_readout(apply, run, x, forces, subset, *, relinearize=False, rule="heun"):
    """The subset's twins read out through the network, first order or re-linearized (Chapter 7, Limits).

    ``run``: a :class:`gramlib.train.TrainResult` with its ``M`` snapshot weights ``w_k`` and the
    final ``w_T``; ``x`` its training inputs; ``forces`` ``(K, N, n)``: the segment forces ``A_l``
    of the two-time recursion (the ``forces`` of :func:`trajectory_loo` with ``cross``). In segment ``k``
    (``s = T/K`` steps, Jacobian ``J_k = J(w_k)`` frozen) the first-order twin ``i`` moves its
    weight offset by ``J_kᵀ a_t`` with ``a_t = −(η/n)(M_i J_k δ − e_i r_i(t))`` (``M_i`` drops
    sample ``i``), so ``δ^{(i)} = Σ_l J_lᵀ A_l[:, i]`` (one vector–Jacobian product per snapshot,
    all twins of ``subset`` at once), and its leave-one-out residual is read out with the network
    itself, ``ρ_i = r_i(T) + f_i(w_T + δ^{(i)}) − f_i(w_T)``, where the two-time prediction uses
    its linearization ``r_i(T) + [J(w_T) δ^{(i)}]_i``.

    ``relinearize=True`` (the book's own) adds, at every step of segment ``k``, the part of the
    twin's gradient that the Gauss–Newton linearization drops,

        ``s_k(δ) = ∇L_{∖i}(w_k + δ) − ∇L_{∖i}(w_k) − (1/n) J_kᵀ M_i J_k δ``

    (the network's curvature and every higher order in ``δ``), held constant over the segment:
    ``δ ← δ + J_kᵀ a_t − η s̄_k``. ``rule="euler"`` takes ``s̄_k = s_k(δ(t_k))``; with a snapshot at
    every step this is the retrained twin itself, step for step. ``rule="heun"`` takes the
    trapezoid ``s̄_k = ½[s_k(δ(t_k)) + s_{k+1}(δ̂(t_{k+1}))]``, ``δ̂`` the segment's end under
    the Euler value (``s_K`` is taken at ``w_T``). Given ``s̄_k`` the correction is linear: its
    output offset ``J_k δ̃`` steps with the snapshot kernel ``Θ_k`` (:func:`_correction_segment`).
    Cost per twin and snapshot: about fifteen forward or backward passes of the network (thirty
    with Heun's rule), against about three per step for retraining, so with ``T/K`` = 100 steps
    per snapshot (Chapter 7) some ten times fewer; measured there 5–10× less time than retraining
    (``results/ch7-limits``). Returns ``(len(subset),)`` for one output, else ``(len(subset), C)``.
    """
    weights = tuple(run.weights)
    count = len(run.thetas)
    if len(weights) != count + 1:
        raise ValueError(f"run must hold its {count} snapshot weights and the final ones, got {len(weights)}")
    if rule not in ("euler", "heun"):
        raise ValueError(f"rule must be 'euler' or 'heun', got {rule!r}")
    n, c = run.n, run.outputs
    x = _checks.array(x, "x")
    if len(x) != n:
        raise ValueError(f"x must hold the run's {n} training inputs, got {len(x)} rows")
    forces = _checks.array(forces, "forces", ndim=3, shape=(count, n * c, n))
    subset = np.asarray(subset)
    if subset.ndim != 1 or subset.dtype.kind not in "iu" or (len(subset) and not 0 <= subset.min() <= subset.max() < n):
        raise ValueError(f"subset must be a 1-d array of sample indices in [0, {n}), got {subset!r}")
    x = jnp.asarray(x)
    add = partial(jax.tree_util.tree_map, jnp.add)
    offsets = jax.tree_util.tree_map(lambda w: jnp.zeros((len(subset),) + w.shape, w.dtype), weights[0])
    if relinearize:
        lr, steps = run.lr, run.steps // count
        keep = jnp.asarray(np.repeat(np.arange(n)[None, :] != subset[:, None], c, axis=1), float)
        residual = [run.residuals[t] for t in run.snapshot_steps] + [run.residuals[-1]]
        correction = offsets  # δ̃, zero at the start

        def advance(k, correction, source):  # δ̃ at the end of segment k under the constant remainder
            total = _correction_segment(jnp.asarray(run.thetas[k]), _pushed(apply, weights[k], x, correction),
                                        _pushed(apply, weights[k], x, source), keep, lr, steps, n)
            return jax.tree_util.tree_map(lambda d, g, q: d + g - lr * steps * q, correction,
                                          _pulled(apply, weights[k], x, total), source)

    for k in range(count):
        first = _pulled(apply, weights[k], x, jnp.asarray(forces[k][:, subset].T))  # J_kᵀ A_k[:, i]
        if relinearize:
            source = _remainder(apply, weights[k], x, residual[k], keep, add(offsets, correction))
            if rule == "heun":
                guess = add(add(offsets, first), advance(k, correction, source))
                after = _remainder(apply, weights[k + 1], x, residual[k + 1], keep, guess)
                source = jax.tree_util.tree_map(lambda a, b: 0.5 * (a + b), source, after)
            correction = advance(k, correction, source)
        offsets = add(offsets, first)
    if relinearize:
        offsets = add(offsets, correction)
    final = weights[-1]
    moved = jax.vmap(lambda d, xi: apply(add(final, d), xi[None])[0])(offsets, x[subset])
    own = np.asarray(moved) - np.asarray(apply(final, x[subset]))
    r_end = np.asarray(run.residuals[-1]).reshape(n, c)[subset]
    return r_end[:, 0] + own if c == 1 else r_end + own


def held_out_loss(apply, params, x, y):
    """``(1/2m) Σ_j ‖f(x_j) − y_j‖²`` on a held-out set."""
    r = np.asarray(apply(params, x), dtype=float) - np.asarray(y)
    return kernel_flow.residual_loss(r.ravel(), len(r))


def frozen_kernel_losses(model, dataset, *, key, t):
    """Exact leave-one-out loss and held-out loss of the linearized network on one split (Chapter 7).

    The network linearized at its initialization ``w_0`` (drawn with ``key``)
    is kernel regression with the frozen NTK ``Θ_0``. Trained by gradient
    flow for the time ``t`` (``η T`` for ``T`` steps of size ``η``), its
    leave-one-out loss is exact (:func:`gramlib.baselines.linearized_loss`)
    and so is its test residual
    ``r_test = r0_test − Θ_0(X_test, X) Θ_0⁻¹ (I − e^{−Θ_0 t/n}) r0``
    (:func:`gramlib.kernel_flow.kernel_test_residuals`). Their difference over many
    splits is the sampling noise of leave-one-out itself, with no
    approximation in the predictor. Returns ``(loo, held_out)``.
    """

    t = _checks.positive(t, "t")
    params = model.init(key)
    x, xt = jnp.asarray(dataset.x_train), jnp.asarray(dataset.x_test)
    r0 = (np.asarray(model.apply(params, x)) - dataset.y_train).reshape(-1)
    r0_test = (np.asarray(model.apply(params, xt)) - dataset.y_test).reshape(-1)
    outputs = len(r0) // len(x)
    theta = kernel_flow.factorize(ntk.empirical_ntk(model.apply, params, x), outputs=outputs)
    theta_test = ntk.empirical_ntk(model.apply, params, xt, x)
    loo, _ = baselines.linearized_loss(theta, r0, t)
    r_test = np.asarray(kernel_flow.kernel_test_residuals(theta, theta_test, r0, r0_test, t))
    return float(loo), kernel_flow.residual_loss(r_test, len(xt))
