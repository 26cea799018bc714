"""Twin trajectories: two gradient-descent runs whose datasets differ in one sample (Chapter 2).

Both twins start from the same parameters ``w0``. The main run ``w`` trains on
``S = (z_1..z_n)``; the twin ``u`` trains on

* ``S∖i`` (leave-one-out twin): the loss ``(1/n) Σ_{j≠i} ℓ(u; z_j)`` — the
  sample's term is dropped, the normalization ``1/n`` is kept, so that the two
  losses differ by exactly one term;
* ``S⁽ⁱ⁾`` (replace-one twin): ``z_i`` replaced by a fresh ``z'``.

With the shared loss ``L_{−i}(w) = (1/n) Σ_{j≠i} ℓ(w; z_j)`` and
``δ = u − w``, one gradient-descent step of size ``η`` gives, exactly,

    δ_{k+1} − δ_k = −η [∇L_{−i}(u_k) − ∇L_{−i}(w_k)] + η p_k,
    p_k = (1/n) [∇ℓ(w_k; z_i) − a ∇ℓ(u_k; z')]          (a = 0: leave-one-out, a = 1: replace-one)

and, to first order in ``δ``, ``∇L_{−i}(u) − ∇L_{−i}(w) = H_{−i}(w) δ + O(‖δ‖²)``:
the perturbation equation ``δ̇ = −H_{−i} δ + p + O(‖δ‖²)`` of Chapter 2.
The **contraction** along ``δ`` is the Rayleigh quotient
``δᵀ H_{−i}(w) δ / ‖δ‖²``, computed with Hessian-vector products (forward-over-
reverse differentiation), never with a dense Hessian; the **secant**
contraction ``δᵀ[∇L_{−i}(u) − ∇L_{−i}(w)] / ‖δ‖²`` is its exact, finite-``δ``
counterpart, and the **perturbation** is ``p`` (its norm and its component
along ``δ``). For the leave-one-out twin ``p = (1/n) ∇ℓ(w; z_i)``.

Parameters are flattened with :func:`jax.flatten_util.ravel_pytree`, so any
model ``apply(params, x)`` with a pytree of parameters works. Losses are the
book's squared loss ``ℓ(w; z) = ½‖f(x; w) − y‖²``. Every twin of the book (Chapters 2, 3
and 7) takes its steps with :func:`gradient_step` on the per-sample-weighted loss
:func:`weighted_loss`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from .. import _checks


class TwinRecord(NamedTuple):
    """What :func:`twin_trajectories` records at each requested step (leading axis: steps).

    ``delta`` is the flattened ``δ = u − w``; ``rayleigh`` is
    ``δᵀH_{−i}(w)δ/‖δ‖²``; ``secant`` is ``δᵀ[∇L_{−i}(u) − ∇L_{−i}(w)]/‖δ‖²``;
    ``perturbation_norm`` is ``‖p‖`` and ``perturbation_along`` is ``p·δ/‖δ‖``;
    ``loss_w``/``loss_u`` are ``ℓ(w; z_i)`` and ``ℓ(u; z_i)``; ``train_loss`` is
    ``L_S(w)``. Quotients by ``‖δ‖`` are reported as 0 where ``δ = 0``.
    """

    steps: np.ndarray
    delta: jnp.ndarray
    delta_norm: jnp.ndarray
    rayleigh: jnp.ndarray
    secant: jnp.ndarray
    perturbation_norm: jnp.ndarray
    perturbation_along: jnp.ndarray
    loss_w: jnp.ndarray
    loss_u: jnp.ndarray
    train_loss: jnp.ndarray


def _half_squares(r):
    """``½‖r_j‖²`` for every row ``j`` of the residuals ``r`` (``(n,)`` or ``(n, C)``)."""
    return 0.5 * jnp.sum(jnp.reshape(r, (r.shape[0], -1)) ** 2, axis=1)


def per_sample_losses(apply, params, x, y):
    """``ℓ(w; z_j) = ½‖f(x_j; w) − y_j‖²`` for every row ``j`` (shape ``(n,)``)."""
    return _half_squares(apply(params, x) - y)


def weighted_loss(apply, params, x, y, weights):
    """``L_m(w) = (1/2n) Σ_j m_j ‖f(x_j; w) − y_j‖² = (1/n) Σ_j m_j ℓ(w; z_j)`` and the stacked residual.

    The loss that every gradient-descent twin of the book trains on (Chapters 2, 3 and 7):
    ``m = 1`` gives the training loss ``L_S``; ``m = 1 − e_i`` the loss of ``S∖i`` with the
    per-sample weight ``1/n`` of the full run kept (the leave-one-out twin); ``L_S`` on the
    data with row ``i`` replaced is the replace-one twin's. ``weights`` has shape ``(n,)``.
    Returns ``(L_m(w), r)`` with ``r = (f(X; w) − Y).reshape(-1)``, rows ordered
    (sample, output). Shapes are checked here, also under ``jit``; values are checked by the
    public trainers that call it.
    """
    n = jnp.shape(x)[0]
    if jnp.shape(y)[:1] != (n,) or jnp.shape(weights) != (n,):
        raise ValueError(f"x, y and weights must have one row per sample: got shapes {jnp.shape(x)}, "
                         f"{jnp.shape(y)} and {jnp.shape(weights)}")
    r = apply(params, x) - y
    if r.shape != jnp.shape(y):
        raise ValueError(f"apply(params, x) - y has shape {r.shape}, expected the shape {jnp.shape(y)} of y "
                         f"(outputs (n,) for y of shape (n,), (n, C) for (n, C))")
    return jnp.sum(weights * _half_squares(r)) / n, r.reshape(-1)


def gradient_step(apply, params, x, y, weights, lr):
    """One gradient-descent step on :func:`weighted_loss`: ``w_{k+1} = w_k − η ∇L_m(w_k)`` (Chapters 2, 3, 7).

    The one step behind every trainer of twins in the book: :func:`twin_trajectories`
    (Chapter 2), :func:`gramlib.gap_ode.replace_one_factors` (Chapter 3) and
    :func:`gramlib.train.gradient_descent` / :func:`gramlib.train.retrain_without`
    (Chapter 7). ``params`` is any pytree (a flat vector, or a network's layers); ``lr`` the
    step ``η``, checked to be positive unless it is traced. Returns ``(w_{k+1}, r_k, ∇L_m(w_k))``:
    the new parameters, the stacked residual before the step and the gradient (Chapter 3's
    factors reuse it).
    """
    if not isinstance(lr, jax.core.Tracer):
        _checks.positive(lr, "lr")
    (_, r), g = jax.value_and_grad(weighted_loss, argnums=1, has_aux=True)(apply, params, x, y, weights)
    return jax.tree_util.tree_map(lambda w, d: w - lr * d, params, g), r, g


def flat_loss(apply, unravel, x, y, weights, n):
    """``θ ↦ (1/n) Σ_j a_j ℓ(unravel(θ); z_j)`` as a function of the flat parameter vector."""
    return lambda theta: jnp.sum(weights * per_sample_losses(apply, unravel(theta), x, y)) / n


def hessian_vector_product(loss, theta, v):
    """``∇²loss(θ) v`` by forward-over-reverse differentiation (``jax.jvp`` of ``jax.grad``)."""
    return jax.jvp(jax.grad(loss), (theta,), (v,))[1]


def _safe_ratio(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _shared_weights(n, i, dtype):
    return jnp.ones((n,), dtype).at[i].set(0.0)


def _rayleigh(apply, params, x, y, i, v):
    theta, unravel = ravel_pytree(params)
    n = x.shape[0]
    shared = flat_loss(apply, unravel, x, y, _shared_weights(n, i, theta.dtype), n)
    return _safe_ratio(v @ hessian_vector_product(shared, theta, v), v @ v)


@_checks.public
def rayleigh_quotient(apply, params, x, y, i, v):
    """``vᵀ H_{−i}(w) v / ‖v‖²`` with ``H_{−i} = (1/n) Σ_{j≠i} ∇²ℓ(w; z_j)``, by Hessian-vector products.

    ``v`` is a flat vector of the size of ``ravel_pytree(params)[0]``; ``i`` is
    the left-out index (pass ``i = None`` for the full-data Hessian ``H``).
    Chapter 2.
    """
    x, y = _check_data(x, y)
    theta, _ = ravel_pytree(params)
    _checks.array(v, "v", shape=(theta.shape[0],))
    n = x.shape[0]
    if i is None:
        return _rayleigh_full(apply, params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(v))
    _check_index(i, n)
    return _rayleigh_jit(apply, params, jnp.asarray(x), jnp.asarray(y), int(i), jnp.asarray(v))


_rayleigh_jit = jax.jit(_rayleigh, static_argnums=0)


@partial(jax.jit, static_argnums=0)
def _rayleigh_full(apply, params, x, y, v):
    theta, unravel = ravel_pytree(params)
    n = x.shape[0]
    full = flat_loss(apply, unravel, x, y, jnp.ones((n,), theta.dtype), n)
    return _safe_ratio(v @ hessian_vector_product(full, theta, v), v @ v)


def _twin_core(apply, params0, x, y, i, x_new, y_new, a, lr, segments):
    """Train both twins with ``lax.scan`` over recording segments; see :func:`twin_trajectories`."""
    theta0, unravel = ravel_pytree(params0)
    n = x.shape[0]
    dtype = theta0.dtype
    ones = jnp.ones((n,), dtype)
    shared_w = _shared_weights(n, i, dtype)
    x_twin = x.at[i].set(x_new)
    y_twin = y.at[i].set(y_new)
    twin_w = shared_w.at[i].set(a)
    loss_shared = flat_loss(apply, unravel, x, y, shared_w, n)
    xi, yi = x[i][None], y[i][None]
    xn, yn = x_new[None], y_new[None]

    def flat_apply(theta, xs):
        return apply(unravel(theta), xs)

    def sample_loss(theta, xs, ys):
        return per_sample_losses(flat_apply, theta, xs, ys)[0]

    grad_sample, grad_shared = jax.grad(sample_loss), jax.grad(loss_shared)

    def gd(_, carry):
        w, u = carry
        return (gradient_step(flat_apply, w, x, y, ones, lr)[0],
                gradient_step(flat_apply, u, x_twin, y_twin, twin_w, lr)[0])

    def segment(carry, length):
        w, u = jax.lax.fori_loop(0, length, gd, carry)
        delta = u - w
        sq = delta @ delta
        norm = jnp.sqrt(sq)
        p = (grad_sample(w, xi, yi) - a * grad_sample(u, xn, yn)) / n
        record = dict(
            delta=delta,
            delta_norm=norm,
            rayleigh=_safe_ratio(delta @ hessian_vector_product(loss_shared, w, delta), sq),
            secant=_safe_ratio(delta @ (grad_shared(u) - grad_shared(w)), sq),
            perturbation_norm=jnp.sqrt(p @ p),
            perturbation_along=_safe_ratio(p @ delta, norm),
            loss_w=sample_loss(w, xi, yi),
            loss_u=sample_loss(u, xi, yi),
            train_loss=weighted_loss(flat_apply, w, x, y, ones)[0],
        )
        return (w, u), record

    _, rec = jax.lax.scan(segment, (theta0, theta0), segments)
    return rec


_twin_jit = jax.jit(_twin_core, static_argnums=0)
_twin_batch_jit = jax.jit(
    jax.vmap(_twin_core, in_axes=(None, None, 0, 0, 0, 0, 0, None, None, None)), static_argnums=0
)


def _check_data(x, y, batch=False):
    lead = 1 if batch else 0
    xa = _checks.array(x, "x", ndim=2 + lead)
    ya = _checks.array(y, "y", ndim=(1 + lead, 2 + lead))
    if ya.shape[: 1 + lead] != xa.shape[: 1 + lead]:
        raise ValueError(f"x and y must have the same leading dimension(s), got {xa.shape} and {ya.shape}")
    if xa.shape[lead] < 2:
        raise ValueError(f"the training set needs at least 2 samples, got {xa.shape[lead]}")
    return xa, ya


def _check_index(i, n):
    i = _checks.integer(i, "i", minimum=0)
    if i >= n:
        raise ValueError(f"i must be a sample index in [0, {n}), got {i}")
    return i


def _check_record_at(record_at):
    steps, _ = _checks.times(record_at, "record_at", allow_inf=False, integer_steps=True)
    steps = steps.astype(np.int64)
    if np.any(steps < 1) or np.any(np.diff(steps) <= 0):
        raise ValueError(f"record_at must be strictly increasing step counts >= 1, got {steps}")
    return steps, np.diff(np.concatenate([[0], steps]))


def _replacement(x, y, replacement, batch):
    """The twin's new sample ``(x', y')`` and its weight ``a`` (0 for the leave-one-out twin)."""
    if replacement is None:
        return jnp.take(x, 0, axis=batch), jnp.take(y, 0, axis=batch), 0.0  # unused (weight 0); x may be traced
    if not isinstance(replacement, (tuple, list)) or len(replacement) != 2:
        raise TypeError("replacement must be None (leave-one-out twin) or a pair (x_new, y_new)")
    xn = _checks.array(replacement[0], "replacement x_new", shape=x.shape[:batch] + x.shape[batch + 1:])
    yn = _checks.array(replacement[1], "replacement y_new", shape=y.shape[:batch] + y.shape[batch + 1:])
    return xn, yn, 1.0


@_checks.public
def twin_trajectories(apply, params0, x, y, i, *, lr, record_at, replacement=None):
    """Train ``w`` on ``S`` and its twin ``u`` on ``S∖i`` (or ``S⁽ⁱ⁾``) from ``params0``; record the forces.

    Full-batch gradient descent with step ``lr`` (time ``t = k·lr``), run with
    ``lax.scan``. ``replacement=(x_new, y_new)`` makes the replace-one twin
    (``z_i → z'``); the default ``None`` makes the leave-one-out twin.
    ``record_at`` lists the strictly increasing steps (``>= 1``) at which the
    :class:`TwinRecord` fields are recorded. Chapter 2. Works under ``jax.jit``, ``jax.vmap``
    and forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) in ``params0``, ``x``, ``y``
    and ``lr`` (``i``, ``record_at`` and ``apply`` static); reverse mode (``jax.grad``) is not
    available: the steps between records run in a ``fori_loop`` of data-dependent length.
    """
    x, y = _check_data(x, y)
    i = _check_index(i, x.shape[0])
    steps, segments = _check_record_at(record_at)
    lr = _checks.positive(lr, "lr")
    xn, yn, a = _replacement(x, y, replacement, 0)
    rec = _twin_jit(apply, params0, jnp.asarray(x), jnp.asarray(y), i, jnp.asarray(xn),
                    jnp.asarray(yn), a, lr, jnp.asarray(segments))
    return TwinRecord(steps=steps, **rec)


@_checks.public
def many_twin_trajectories(apply, params0, x, y, i, *, lr, record_at, replacement=None):
    """:func:`twin_trajectories` for a batch of twin pairs at once (``vmap``), from one shared ``params0``.

    ``x`` has shape ``(B, n, d)``, ``y`` ``(B, n)`` or ``(B, n, C)``, ``i`` ``(B,)``;
    ``replacement`` is ``None`` or ``(x_new (B, d), y_new (B,) or (B, C))``.
    Every field of the returned :class:`TwinRecord` (but ``steps``) gets a
    leading batch axis. Transformations as :func:`twin_trajectories` (``i`` may be traced here:
    its range is checked on concrete values only).
    """
    x, y = _check_data(x, y, batch=True)
    ia = _checks.array(i, "i", shape=(x.shape[0],), dtype_kind="")
    if _checks.concrete(ia, "index") and (np.any(ia < 0) or np.any(ia >= x.shape[1])):
        raise ValueError(f"every i must be a sample index in [0, {x.shape[1]}), got {ia}")
    steps, segments = _check_record_at(record_at)
    lr = _checks.positive(lr, "lr")
    xn, yn, a = _replacement(x, y, replacement, 1)
    rec = _twin_batch_jit(apply, params0, jnp.asarray(x), jnp.asarray(y), jnp.asarray(ia),
                          jnp.asarray(xn), jnp.asarray(yn), a, lr, jnp.asarray(segments))
    return TwinRecord(steps=steps, **rec)
