"""Full-batch gradient descent that records what Chapter 7 needs.

:func:`gradient_descent` runs ``w_{k+1} = w_k − η ∇L_S(w_k)`` with
``L_S(w) = (1/2n) Σ_i ‖f(x_i; w) − y_i‖²`` inside ``jax.lax.scan`` (chunks of
steps between progress-bar updates; a convolutional model on the CPU takes one
compiled step per call instead, see ``_loop_free``), and records

* the residual ``r_k = f(X; w_k) − Y`` (stacked as ``r.reshape(-1)``, rows
  ordered (sample, output)) at every step ``k = 0..steps``, and
* the empirical NTK ``Θ(w_k) = J Jᵀ`` (:func:`gramlib.ntk.empirical_ntk`) at
  ``K`` equally spaced snapshot steps ``k = 0, s, 2s, …`` with ``s = steps / K``,
  the layout :func:`gramlib.effective_gram.loo_trajectory` integrates (snapshot
  ``j`` stands for steps ``[j s, (j+1) s)``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from ..kernels import ntk
from ..kernels.tangent_structure import uses_primitive


class TrainResult(NamedTuple):
    """What a gradient-descent run leaves behind (Chapter 7).

    ``residuals`` ``(steps + 1, N)``, ``N = n × outputs``; ``thetas``
    ``(K, N, N)`` taken at ``snapshot_steps`` (``K = 0``: none); ``weights``
    the ``K`` parameter trees at ``snapshot_steps`` followed by the final
    ``params`` (for the two-time kernel, :func:`gramlib.ntk.two_time_kernel`).
    """

    params: Any
    residuals: np.ndarray
    thetas: np.ndarray
    snapshot_steps: np.ndarray
    lr: float
    outputs: int
    weights: tuple = ()

    @property
    def steps(self) -> int:
        """Number of gradient steps taken."""
        return len(self.residuals) - 1

    @property
    def n(self) -> int:
        """Number of training samples."""
        return self.residuals.shape[1] // self.outputs

    @property
    def train_loss(self) -> np.ndarray:
        """``L_S(w_k) = (1/2n) ‖r_k‖²`` at every step ``k = 0..steps``."""
        return 0.5 * np.sum(self.residuals**2, axis=1) / self.n


def loss(apply, params, x, y):
    """``L(w) = (1/2n) Σ_i ‖f(x_i; w) − y_i‖²`` and the stacked residual ``r = (f(X; w) − Y).reshape(-1)``."""
    r = (apply(params, x) - y).reshape(-1)
    return 0.5 * jnp.sum(r**2) / x.shape[0], r


LOOP_FREE_ON_CPU = True
"""On the CPU, step networks with convolutions one compiled call at a time (:func:`_loop_free`); ``False``
keeps every network inside ``lax.scan`` (the appendix "Scaling up" times both)."""


def _loop_free(apply, params, x):
    """Whether ``apply`` takes its steps one compiled call at a time instead of inside a ``lax.scan`` loop.

    XLA's CPU backend runs a convolution inside a loop body about 4 times
    slower than outside one (jax-ml/jax issue 12868; measured on Chapter 7's
    digits CNN by ``benchmarks/bench_train_steps.py``), and unrolling the loop
    costs compile time that grows with its length. So on the CPU a network
    whose traced computation contains a convolution (``conv_general_dilated``,
    found by :func:`gramlib.tangent_structure.uses_primitive`, for a model of
    :mod:`gramlib.models` or any other function) takes one compiled step per call.
    """
    if not LOOP_FREE_ON_CPU or jax.default_backend() != "cpu":
        return False

    return uses_primitive(apply, params, x, "conv_general_dilated")


def _steps(apply, length, record, params, x, y, lr, mask):
    """``length`` gradient steps on ``(1/2n) Σ_j mask_j ‖f(x_j) − y_j‖²`` in one ``lax.scan`` (no loop for one step).

    Returns the new params and, if ``record``, the residual before each step.
    """

    def masked(q):
        r = (apply(q, x) - y).reshape(x.shape[0], -1)
        return 0.5 * jnp.sum(mask[:, None] * r**2) / x.shape[0], r.reshape(-1)

    def step(p, _):
        (_, r), g = jax.value_and_grad(masked, has_aux=True)(p)
        return jax.tree_util.tree_map(lambda w, d: w - lr * d, p, g), (r if record else None)

    if length == 1:  # no loop at all (a length-1 scan is still a loop, which _loop_free models avoid)
        params, r = step(params, None)
        return params, (r[None] if record else None)
    return jax.lax.scan(step, params, None, length=length)


_steps_jit = jax.jit(_steps, static_argnums=(0, 1, 2))
_twins_jit = jax.jit(jax.vmap(_steps, in_axes=(None, None, None, 0, None, None, None, 0)),
                     static_argnums=(0, 1, 2))


def _chunk(steps_jit, loop_free, apply, length, record, params, *args):
    """``length`` steps of ``steps_jit`` (:data:`_steps_jit` or :data:`_twins_jit`): one ``lax.scan``, or
    for a :func:`_loop_free` model ``length`` calls of one step. Returns the params and the residuals."""
    if not loop_free:
        return steps_jit(apply, length, record, params, *args)
    recorded = []
    for _ in range(length):
        params, r = steps_jit(apply, 1, record, params, *args)
        recorded.append(r)
    return params, (jnp.concatenate(recorded, axis=-2) if record else None)


def gradient_descent(apply: Callable, params, x, y, *, lr, steps, snapshots=0, chunk=100,
                     batch_size=None, progress=True) -> TrainResult:
    """Train ``apply(params, x)`` by full-batch gradient descent and record the run.

    ``lr`` is the step ``η``; ``steps`` the number of steps; ``snapshots`` the
    number ``K`` of kernel snapshots (``steps`` must be a multiple of ``K``);
    ``chunk`` the number of steps per ``lax.scan`` call between progress-bar
    updates; ``batch_size`` tiles :func:`gramlib.ntk.empirical_ntk`. Targets
    ``y`` are ``(n,)`` or ``(n, C)`` like the model's outputs. Returns a
    :class:`TrainResult`.
    """
    x = _checks.array(x, "x", ndim=(2, 3, 4))
    y = _checks.array(y, "y", ndim=(1, 2))
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have one row per input: x has {x.shape[0]}, y has {y.shape[0]}")
    lr = _checks.positive(lr, "lr")
    steps = _checks.integer(steps, "steps", minimum=1)
    snapshots = _checks.integer(snapshots, "snapshots", minimum=0)
    chunk = _checks.integer(chunk, "chunk", minimum=1)
    if snapshots and steps % snapshots:
        raise ValueError(f"steps ({steps}) must be a multiple of snapshots ({snapshots})")
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    outputs = 1 if y.ndim == 1 else y.shape[1]
    mask = jnp.ones((x.shape[0],), dtype)
    segment = steps // snapshots if snapshots else steps
    loop_free = _loop_free(apply, params, x)
    thetas, residuals, weights = [], [], []
    with tqdm(total=steps, desc="gradient descent", disable=not progress, leave=False) as bar:
        for start in range(0, steps, segment):
            if snapshots:

                thetas.append(np.asarray(ntk.empirical_ntk(apply, params, x, batch_size=batch_size)))
                weights.append(params)
            done = 0
            while done < segment:
                length = min(chunk, segment - done)
                params, rs = _chunk(_steps_jit, loop_free, apply, length, True, params, x, y, lr, mask)
                residuals.append(np.asarray(rs))
                done += length
                bar.update(length)
    residuals.append(np.asarray(loss(apply, params, x, y)[1])[None])
    residuals = np.concatenate(residuals).astype(float)
    if not np.all(np.isfinite(residuals)):
        raise FloatingPointError(f"gradient descent diverged (lr = {lr} is too large for this model)")
    n_theta = residuals.shape[1]
    thetas = np.stack(thetas) if thetas else np.zeros((0, n_theta, n_theta))
    weights = tuple(weights + [params]) if snapshots else ()
    return TrainResult(params, residuals, thetas, np.arange(snapshots) * segment, lr, outputs, weights)


def retrain_without(apply, params, x, y, drop, *, lr, steps, chunk=100, progress=True):
    """Brute-force leave-one-out: for each index ``i`` in ``drop``, rerun gradient descent without sample ``i``.

    All retrainings start from the same ``params`` and run together in a
    ``vmap`` over 0/1 sample masks ``m^{(i)}`` (zero at ``i``; a
    :func:`_loop_free` model runs its twins one at a time, since XLA's CPU
    backend also convolves slowly with weights batched by ``vmap``): twin ``i``
    minimizes ``(1/2n) Σ_j m_j^{(i)} ‖f(x_j; w) − y_j‖²``, the loss of ``S∖i``
    with the same per-sample weight ``1/n`` as the full run — the twin of
    Chapter 5's matrix ODE. Returns the left-out residuals
    ``ρ_i = f_{S∖i}(x_i) − y_i`` after ``steps`` steps, shape ``(len(drop),)``
    or ``(len(drop), C)``.
    """
    x = _checks.array(x, "x", ndim=(2, 3, 4))
    y = _checks.array(y, "y", ndim=(1, 2))
    drop = np.asarray(drop)
    if drop.ndim != 1 or drop.dtype.kind not in "iu" or np.any((drop < 0) | (drop >= len(x))):
        raise ValueError(f"drop must be a 1-D array of sample indices in [0, {len(x)}), got {drop}")
    lr = _checks.positive(lr, "lr")
    steps = _checks.integer(steps, "steps", minimum=1)
    chunk = _checks.integer(chunk, "chunk", minimum=1)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    masks = 1.0 - jax.nn.one_hot(jnp.asarray(drop), x.shape[0], dtype=dtype)
    loop_free = _loop_free(apply, params, x)
    groups = [slice(i, i + 1) for i in range(len(drop))] if loop_free else [slice(None)]
    left_out = []
    with tqdm(total=steps * len(groups), desc=f"leave-one-out retraining ({len(drop)} twins)",
              disable=not progress, leave=False) as bar:
        for group in groups:
            size = len(drop[group])
            twins = jax.tree_util.tree_map(lambda w: jnp.broadcast_to(w, (size,) + w.shape), params)
            for start in range(0, steps, chunk):
                length = min(chunk, steps - start)
                twins, _ = _chunk(_twins_jit, loop_free, apply, length, False, twins, x, y, lr, masks[group])
                bar.update(length)
            left_out.append(jax.vmap(lambda p, i: apply(p, x[i][None])[0])(twins, jnp.asarray(drop[group])))
    return np.asarray(jnp.concatenate(left_out) - y[jnp.asarray(drop)], dtype=float)
