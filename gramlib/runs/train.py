"""Full-batch gradient descent that records what Chapter 7 needs.

:func:`gradient_descent` runs ``w_{k+1} = w_k − η ∇L_S(w_k)`` with
``L_S(w) = (1/2n) Σ_i ‖f(x_i; w) − y_i‖²`` (each step is
:func:`gramlib.twins.gradient_step`, the step of every twin in the book), and records

* the residual ``r_k = f(X; w_k) − Y`` (stacked as ``r.reshape(-1)``, rows
  ordered (sample, output)) at every step ``k = 0..steps``, and
* the empirical NTK ``Θ(w_k) = J Jᵀ`` (:func:`gramlib.ntk.empirical_ntk`) at
  ``K`` equally spaced snapshot steps ``k = 0, s, 2s, …`` with ``s = steps / K``,
  the layout :func:`gramlib.effective_gram.loo_trajectory` integrates (snapshot
  ``j`` stands for steps ``[j s, (j+1) s)``).

**The loop is the caller's choice** (``loop=`` of :func:`gradient_descent` and
:func:`retrain_without`; both loops take the same steps, to rounding):

* ``"scan"`` (the default): chunks of ``chunk`` steps inside one compiled
  ``jax.lax.scan``, and all leave-one-out twins in one ``vmap``;
* ``"per_step"``: one compiled call per step, and the twins one at a time.

Choose ``"per_step"`` for a convolutional network on the CPU: XLA's CPU backend runs a
convolution inside a loop body several times slower than outside one (jax-ml/jax issue
12868), and convolutions with weights batched by ``vmap`` are slow there too. Measured by
``benchmarks/bench_train_steps.py`` on Chapter 7's digits CNN (n = 300, float64, 2 CPU
cores, ``benchmarks/results/train_steps.csv``): 43 ms per step one call per step against
225 ms inside ``lax.scan`` (5.3×), and 40 against 449 ms per twin and step for 30 twins
(11×). Unrolling the loop would remove the penalty but costs compile time that grows with
its length. :func:`recommended_loop` names the loop for a network and a backend; nothing
here consults it.
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
from ..mathematics import gap_ode
from ..mathematics.kernel_flow import residual_loss
from ..mathematics.twins import gradient_step

LOOPS = ("scan", "per_step")
"""The training loops :func:`gradient_descent` and :func:`retrain_without` accept (see the module docstring)."""


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
        return residual_loss(self.residuals, self.n)


def recommended_loop(apply: Callable, params, x, *, backend=None) -> str:
    """The ``loop=`` to pass to :func:`gradient_descent` and :func:`retrain_without` for this network.

    ``"per_step"`` on the CPU when the traced computation of ``apply(params, x)`` contains a
    convolution (``conv_general_dilated``, found by
    :func:`gramlib.tangent_structure.uses_primitive`, for a model of :mod:`gramlib.models`
    or any other function), else ``"scan"``; the measurement behind it is in the module
    docstring. ``backend`` defaults to ``jax.default_backend()``. The caller decides: the
    trainers never consult this function.
    """
    x, _ = _check_model(apply, params, x)
    backend = jax.default_backend() if backend is None else backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a JAX backend name such as 'cpu' or 'gpu', got {backend!r}")
    convolves = backend == "cpu" and uses_primitive(apply, params, x, "conv_general_dilated")
    return "per_step" if convolves else "scan"


def _steps(apply, length, record, params, x, y, lr, weights):
    """``length`` steps of :func:`gramlib.twins.gradient_step` on ``(1/2n) Σ_j m_j ‖f(x_j) − y_j‖²``.

    One ``lax.scan``, or no loop at all for one step (a length-1 scan is still a loop).
    Returns the new params and, if ``record``, the residual before each step.
    """

    def step(p, _):
        p, r, _ = gradient_step(apply, p, x, y, weights, lr)
        return p, (r if record else None)

    if length == 1:
        params, r = step(params, None)
        return params, (r[None] if record else None)
    return jax.lax.scan(step, params, None, length=length)


_steps_jit = jax.jit(_steps, static_argnums=(0, 1, 2))
_twins_jit = jax.jit(jax.vmap(_steps, in_axes=(None, None, None, 0, None, None, None, 0)),
                     static_argnums=(0, 1, 2))


def _chunk(steps_jit, per_step, apply, length, record, params, *args):
    """``length`` steps of ``steps_jit`` (:data:`_steps_jit` or :data:`_twins_jit`): one ``lax.scan``, or
    with ``per_step`` ``length`` calls of one step. Returns the params and the residuals."""
    if not per_step:
        return steps_jit(apply, length, record, params, *args)
    recorded = []
    for _ in range(length):
        params, r = steps_jit(apply, 1, record, params, *args)
        recorded.append(r)
    return params, (jnp.concatenate(recorded, axis=-2) if record else None)


def _check_model(apply, params, x):
    """``apply`` callable, ``params`` a non-empty tree of finite float arrays, ``x`` a batch ``apply`` accepts.

    Returns ``x`` (checked) and the shape of ``apply(params, x[:1])``.
    """
    if not callable(apply):
        raise TypeError(f"apply must be a function apply(params, x), got {type(apply).__name__}")
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    if not paths:
        raise ValueError("params must be a tree holding at least one array of weights")
    for path, w in paths:
        _checks.array(w, f"params{jax.tree_util.keystr(path)}", dtype_kind="f")
    x = _checks.array(x, "x", ndim=(2, 3, 4))
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {x.shape}")
    try:
        out = jax.eval_shape(apply, params, x[:1])
    except Exception as err:
        raise ValueError(f"apply(params, x) fails for x of shape {x.shape} (does x have the input shape "
                         f"the model expects?): {err}") from err
    return x, getattr(out, "shape", None)


def _check_run(apply, params, x, y, lr, steps, chunk, loop):
    """Check the arguments shared by :func:`gradient_descent` and :func:`retrain_without`.

    Returns ``x``, ``y`` as JAX arrays of the parameters' dtype, the checked ``lr``,
    ``steps``, ``chunk`` and whether the loop is ``"per_step"``.
    """
    if not isinstance(loop, str) or loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS} (see gramlib.train.recommended_loop), got {loop!r}")
    x, out = _check_model(apply, params, x)
    y = _checks.array(y, "y", ndim=(1, 2))
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have one row per input: x has {x.shape[0]}, y has {y.shape[0]}")
    if out != (1,) + y.shape[1:]:
        raise ValueError(f"apply(params, x) must give one output row per sample shaped like y's rows: "
                         f"y has shape {y.shape}, apply gives {out} for one sample")
    lr = _checks.positive(lr, "lr")
    steps = _checks.integer(steps, "steps", minimum=1)
    chunk = _checks.integer(chunk, "chunk", minimum=1)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype), lr, steps, chunk, loop == "per_step"


def gradient_descent(apply: Callable, params, x, y, *, lr, steps, snapshots=0, chunk=100,
                     batch_size=None, loop="scan", progress=True) -> TrainResult:
    """Train ``apply(params, x)`` by full-batch gradient descent and record the run (Chapter 7).

    ``w_{k+1} = w_k − η ∇L_S(w_k)``, ``L_S(w) = (1/2n) Σ_i ‖f(x_i; w) − y_i‖²``. ``lr`` is
    the step ``η``; ``steps`` the number of steps; ``snapshots`` the number ``K`` of kernel
    snapshots (``steps`` must be a multiple of ``K``); ``chunk`` the number of steps per
    compiled loop between progress-bar updates; ``batch_size`` tiles
    :func:`gramlib.ntk.empirical_ntk`. ``loop`` is ``"scan"`` (the default) or
    ``"per_step"``, one compiled call per step: choose it for a convolutional network on
    the CPU, several times faster there (the module docstring quotes the one measurement;
    :func:`recommended_loop` names the loop). Targets ``y`` are ``(n,)`` or ``(n, C)`` like
    the model's outputs. Returns a :class:`TrainResult`; raises ``FloatingPointError`` if
    the run diverges.
    """
    x, y, lr, steps, chunk, per_step = _check_run(apply, params, x, y, lr, steps, chunk, loop)
    snapshots = _checks.integer(snapshots, "snapshots", minimum=0)
    if snapshots and steps % snapshots:
        raise ValueError(f"steps ({steps}) must be a multiple of snapshots ({snapshots})")
    outputs = 1 if y.ndim == 1 else y.shape[1]
    ones = jnp.ones((x.shape[0],), y.dtype)
    segment = steps // snapshots if snapshots else steps
    thetas, residuals, weights = [], [], []
    with tqdm(total=steps, desc="gradient descent", disable=not progress, leave=False) as bar:
        for start in range(0, steps, segment):
            if snapshots:
                thetas.append(np.asarray(ntk.empirical_ntk(apply, params, x, batch_size=batch_size)))
                weights.append(params)
            done = 0
            while done < segment:
                length = min(chunk, segment - done)
                params, rs = _chunk(_steps_jit, per_step, apply, length, True, params, x, y, lr, ones)
                residuals.append(np.asarray(rs))
                done += length
                bar.update(length)
    residuals.append(np.asarray(apply(params, x) - y).reshape(1, -1))
    residuals = np.concatenate(residuals).astype(float)
    if not np.all(np.isfinite(residuals)):
        raise FloatingPointError(f"gradient descent diverged (lr = {lr} is too large for this model)")
    n_theta = residuals.shape[1]
    thetas = np.stack(thetas) if thetas else np.zeros((0, n_theta, n_theta))
    weights = tuple(weights + [params]) if snapshots else ()
    return TrainResult(params, residuals, thetas, np.arange(snapshots) * segment, lr, outputs, weights)


def retrain_without(apply, params, x, y, drop, *, lr, steps, chunk=100, loop="scan", progress=True):
    """Brute-force leave-one-out: for each index ``i`` in ``drop``, rerun gradient descent without sample ``i``.

    All retrainings start from the same ``params``; twin ``i`` takes the steps of
    :func:`gramlib.twins.gradient_step` on ``(1/2n) Σ_j m_j^{(i)} ‖f(x_j; w) − y_j‖²``
    with the 0/1 mask ``m^{(i)}`` (zero at ``i``): the loss of ``S∖i`` with the same
    per-sample weight ``1/n`` as the full run, the twin of Chapter 5's matrix ODE.
    ``loop="scan"`` runs all twins together in one ``vmap`` inside ``lax.scan``;
    ``loop="per_step"`` runs them one at a time, one compiled call per step (for a
    convolutional network on the CPU, several times faster per twin and step there; the
    module docstring quotes the one measurement). Returns the left-out residuals ``ρ_i = f_{S∖i}(x_i) − y_i`` after ``steps``
    steps, shape ``(len(drop),)`` or ``(len(drop), C)``.
    """
    x, y, lr, steps, chunk, per_step = _check_run(apply, params, x, y, lr, steps, chunk, loop)
    drop = np.asarray(drop)
    if drop.ndim != 1 or drop.size == 0 or drop.dtype.kind not in "iu" or np.any((drop < 0) | (drop >= len(x))):
        raise ValueError(f"drop must be a non-empty 1-D array of sample indices in [0, {len(x)}), got {drop}")
    masks = 1.0 - jax.nn.one_hot(jnp.asarray(drop), x.shape[0], dtype=y.dtype)
    groups = [slice(i, i + 1) for i in range(len(drop))] if per_step else [slice(None)]
    left_out = []
    with tqdm(total=steps * len(groups), desc=f"leave-one-out retraining ({len(drop)} twins)",
              disable=not progress, leave=False) as bar:
        for group in groups:
            size = len(drop[group])
            twins = jax.tree_util.tree_map(lambda w: jnp.broadcast_to(w, (size,) + w.shape), params)
            for start in range(0, steps, chunk):
                length = min(chunk, steps - start)
                twins, _ = _chunk(_twins_jit, per_step, apply, length, False, twins, x, y, lr, masks[group])
                bar.update(length)
            left_out.append(jax.vmap(lambda p, i: apply(p, x[i][None])[0])(twins, jnp.asarray(drop[group])))
    return np.asarray(jnp.concatenate(left_out) - y[jnp.asarray(drop)], dtype=float)


def train_replace_one_pairs(apply, params0, x_pool, y_pool, pairs, *, lr, steps, record_every, chunk=64,
                            progress=True):
    """Train the replace-one pairs of Chapter 3 in chunks of ``chunk`` pairs, with a progress bar.

    :func:`gramlib.gap_ode.replace_one_factors` on ``chunk`` pairs at a time (the chunks bound the
    memory of the per-step arrays; each is one ``vmap`` over its pairs), joined by
    :func:`gramlib.gap_ode.join_factors`: the same :class:`~gramlib.gap_ode.GapFactors` as one call on
    all pairs, to rounding. ``progress=True`` shows a tqdm bar over the chunks.
    """
    if not isinstance(pairs, gap_ode.ReplaceOnePairs):
        raise TypeError(f"pairs must be a ReplaceOnePairs (see gap_ode.sample_replace_one), got {type(pairs).__name__}")
    chunk = _checks.integer(chunk, "chunk", minimum=1)
    starts = range(0, len(pairs.i), chunk)
    if progress:
        starts = tqdm(starts, desc="twin pairs", unit="chunk")
    return gap_ode.join_factors(
        gap_ode.replace_one_factors(apply, params0, x_pool, y_pool,
                                    gap_ode.ReplaceOnePairs(*(v[s:s + chunk] for v in pairs)),
                                    lr=lr, steps=steps, record_every=record_every) for s in starts)
