"""The differential equation of the generalization gap, measured on replace-one twins (Chapter 3).

For a training set ``S``, an index ``i`` and a fresh sample ``z'``, let ``w`` train
on ``S`` and ``u`` on ``S⁽ⁱ⁾`` (``z_i`` replaced by ``z'``), from the same ``w0``.
The replace-one identity of Chapter 1 says ``Δ_n(t) = E[D_i(t)]`` with
``D_i = ℓ(u; z_i) − ℓ(w; z_i)``. Under gradient flow, exactly,

    dD_i/dt = −[F_i(u) − F_i(w)] + (1/n)[‖∇ℓ(u; z_i)‖² − ∇ℓ(u; z_i)·∇ℓ(u; z')],
    F_i(w) = ∇ℓ(w; z_i)·∇L_S(w),

and averaging gives ``dΔ/dt = −c̄_n Δ + ε̄_n`` with ``c̄_n = E[F_i(u) − F_i(w)] / Δ``
and ``ε̄_n`` the mean of the second bracket. Gradient descent with step ``η``
satisfies the same identity in forward-Euler form plus a second-order Taylor
remainder: ``D_{k+1} − D_k = η[−(F_i(u_k) − F_i(w_k)) + ε_k] + O(η²)``. So the
ODE integrated by forward Euler with the measured factors reproduces the
measured replace-one gap up to a time-discretization error ``O(η)`` at fixed
time ``t = kη`` (exactly zero in the limit of gradient flow).

The population is a finite pool ``Q`` of samples (e.g. all shipped digits);
``S`` and ``z'`` are drawn i.i.d. (with replacement) from it, so the population
loss ``L(w)`` is the exact average over ``Q`` and the directly measured gap
``L(w_S) − L_S(w_S)`` has no test-sample noise, only Monte Carlo noise over
datasets.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .gap import interval
from .twins import gradient_step, per_sample_losses


class ReplaceOnePairs(NamedTuple):
    """Indices into the pool for ``M`` replace-one twin pairs.

    ``train (M, n)``: the training set ``S`` of each pair; ``i (M,)``: the
    replaced position; ``new (M,)``: the fresh sample ``z'``; ``cov (M, m)``:
    the samples used to estimate the gradient covariance.
    """

    train: np.ndarray
    i: np.ndarray
    new: np.ndarray
    cov: np.ndarray


class GapFactors(NamedTuple):
    """Per-pair measurements along gradient descent (``M`` pairs, steps ``k = 0..K``).

    ``gap`` is ``D_i(t_k)``, ``contraction`` is ``F_i(u_k) − F_i(w_k)``,
    ``perturbation`` is ``(1/n)[‖∇ℓ(u_k; z_i)‖² − ∇ℓ(u_k; z_i)·∇ℓ(u_k; z')]`` and
    ``self_term`` the part of the contraction that comes from ``z_i``'s own term in ``∇L_S``,
    ``(1/n)[‖∇ℓ(u_k; z_i)‖² − ‖∇ℓ(w_k; z_i)‖²]`` (Chapter 3: ``F_i(v) = (1/n)‖∇ℓ(v; z_i)‖²`` plus the
    pull of the ``n − 1`` shared samples, so ``contraction − self_term`` is the shared-data part), all
    of shape ``(M, K + 1)``. At ``record_steps`` (every ``record_every`` steps):
    ``train_loss`` ``L_S(w)``, ``population_loss`` ``L(w)`` (pool average) and
    ``trace_cov`` ``(1/n) tr Cov_z[∇ℓ(w; z)]``, shapes ``(M, R)``.
    """

    lr: float
    n: int
    gap: np.ndarray
    contraction: np.ndarray
    perturbation: np.ndarray
    record_steps: np.ndarray
    train_loss: np.ndarray
    population_loss: np.ndarray
    trace_cov: np.ndarray
    self_term: np.ndarray

    @property
    def t(self):
        """Training times ``t_k = k η`` of the per-step arrays."""
        return self.lr * np.arange(self.gap.shape[1])


def sample_replace_one(key, pool_size, n, num_pairs, cov_size=128):
    """Draw ``num_pairs`` replace-one pairs from a pool of ``pool_size`` samples (i.i.d., with replacement)."""
    pool_size = _checks.integer(pool_size, "pool_size", minimum=2)
    n = _checks.integer(n, "n", minimum=2)
    num_pairs = _checks.integer(num_pairs, "num_pairs", minimum=1)
    cov_size = _checks.integer(cov_size, "cov_size", minimum=2)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return ReplaceOnePairs(
        train=np.asarray(jax.random.randint(k1, (num_pairs, n), 0, pool_size)),
        i=np.asarray(jax.random.randint(k2, (num_pairs,), 0, n)),
        new=np.asarray(jax.random.randint(k3, (num_pairs,), 0, pool_size)),
        cov=np.asarray(jax.random.randint(k4, (num_pairs, cov_size), 0, pool_size)),
    )


def _trace_cov(apply, params, x, y, n):
    def one(xj, yj):
        return jax.grad(lambda p: per_sample_losses(apply, p, xj[None], yj[None])[0])(params)

    g = jax.vmap(one)(x, y)
    flat = jax.vmap(lambda tree: ravel_pytree(tree)[0])(g)
    centered = flat - flat.mean(axis=0)
    return jnp.sum(centered**2) / (x.shape[0] - 1) / n


_trace_cov_jit = jax.jit(_trace_cov, static_argnums=(0, 4))


def trace_gradient_covariance(apply, params, x, y, n):
    """``(1/n) tr Cov_z[∇ℓ(w; z)]``, unbiased from the per-sample gradients (``vmap``) at the rows of ``x``.

    ``tr Cov = (1/(m−1)) Σ_j ‖∇ℓ(w; z_j) − ḡ‖²`` over the ``m`` rows. Chapter 3
    compares it with the perturbation factor ``ε̄_n``.
    """
    xa = _checks.array(x, "x", ndim=2)
    ya = _checks.array(y, "y", ndim=(1, 2))
    if ya.shape[0] != xa.shape[0] or xa.shape[0] < 2:
        raise ValueError(f"x and y need the same number (>= 2) of rows, got {xa.shape} and {ya.shape}")
    n = _checks.integer(n, "n", minimum=1)
    return _trace_cov_jit(apply, params, jnp.asarray(xa), jnp.asarray(ya), n)


def _pair_core(apply, every, params0, x_pool, y_pool, train, i, new, cov, lr, num_segments):
    theta0, unravel = ravel_pytree(params0)
    x, y = x_pool[train], y_pool[train]
    n = x.shape[0]
    xi, yi, xn, yn = x[i][None], y[i][None], x_pool[new][None], y_pool[new][None]
    x_twin, y_twin = x.at[i].set(x_pool[new]), y.at[i].set(y_pool[new])
    ones = jnp.ones((n,), theta0.dtype)

    def flat_apply(theta, xs):
        return apply(unravel(theta), xs)

    def loss(theta, xs, ys):
        return jnp.mean(per_sample_losses(flat_apply, theta, xs, ys))

    grad = jax.grad(loss)

    def factors(w, u):
        w_next, _, g_s_w = gradient_step(flat_apply, w, x, y, ones, lr)
        u_next, _, g_tw_u = gradient_step(flat_apply, u, x_twin, y_twin, ones, lr)
        g_w_i, g_w_new = grad(w, xi, yi), grad(w, xn, yn)
        g_u_i, g_u_new = grad(u, xi, yi), grad(u, xn, yn)
        g_s_u = g_tw_u + (g_u_i - g_u_new) / n  # ∇L_S(u) from the twin's own gradient
        g_tw_w = g_s_w + (g_w_new - g_w_i) / n  # ∇L_{S⁽ⁱ⁾}(w)
        # u is w's replace-one twin (z_i -> z'), and w is u's (z' -> z_i): two samples per pair.
        forward = jnp.stack([
            loss(u, xi, yi) - loss(w, xi, yi),
            g_u_i @ g_s_u - g_w_i @ g_s_w,
            (g_u_i @ g_u_i - g_u_i @ g_u_new) / n,
            (g_u_i @ g_u_i - g_w_i @ g_w_i) / n,
        ])
        backward = jnp.stack([
            loss(w, xn, yn) - loss(u, xn, yn),
            g_w_new @ g_tw_w - g_u_new @ g_tw_u,
            (g_w_new @ g_w_new - g_w_new @ g_w_i) / n,
            (g_w_new @ g_w_new - g_u_new @ g_u_new) / n,
        ])
        return jnp.stack([forward, backward], 1), (w_next, u_next)

    def step(carry, _):
        out, nxt = factors(*carry)
        return nxt, out

    def segment(carry, _):
        carry, per_step = jax.lax.scan(step, carry, None, length=every)
        rec = jnp.stack([
            jnp.stack([jnp.mean(per_sample_losses(apply, unravel(v), xs, ys)),
                       jnp.mean(per_sample_losses(apply, unravel(v), x_pool, y_pool)),
                       _trace_cov(apply, unravel(v), x_pool[cov], y_pool[cov], n)])
            for v, xs, ys in ((carry[0], x, y), (carry[1], x_twin, y_twin))
        ]).mean(axis=0)
        return carry, (per_step, rec)

    last, (per_step, rec) = jax.lax.scan(segment, (theta0, theta0), None, length=num_segments)
    final, _ = factors(*last)
    per_step = jnp.concatenate([per_step.reshape(-1, 4, 2), final[None]], axis=0)
    return jnp.moveaxis(per_step, 0, -1), rec.T


@partial(jax.jit, static_argnums=(0, 1, 10))
def _pairs_jit(apply, every, params0, x_pool, y_pool, train, i, new, cov, lr, num_segments):
    core = partial(_pair_core, apply, every, params0, x_pool, y_pool)
    return jax.vmap(lambda a, b, c, d: core(a, b, c, d, lr, num_segments))(train, i, new, cov)


def replace_one_factors(apply, params0, x_pool, y_pool, pairs, *, lr, steps, record_every):
    """Train every replace-one pair of ``pairs`` by gradient descent and measure the gap equation's terms.

    ``x_pool (N, d)``, ``y_pool (N,)`` or ``(N, C)`` is the population; ``pairs`` a
    :class:`ReplaceOnePairs`. Both twins of every pair start from ``params0``
    and take ``steps`` full-batch steps of size ``lr`` (``steps`` a multiple of
    ``record_every``; each step is :func:`gramlib.twins.gradient_step`, whose gradients
    the factors reuse). All pairs are trained in one ``vmap``; to bound the memory of the per-step
    arrays, or to watch progress, train them in chunks (:func:`gramlib.train.train_replace_one_pairs`) and
    join the parts (:func:`join_factors`). Returns :class:`GapFactors`.
    """
    xp = _checks.array(x_pool, "x_pool", ndim=2)
    yp = _checks.array(y_pool, "y_pool", ndim=(1, 2))
    if yp.shape[0] != xp.shape[0]:
        raise ValueError(f"x_pool and y_pool must have the same number of rows, got {xp.shape} and {yp.shape}")
    if not isinstance(pairs, ReplaceOnePairs):
        raise TypeError("pairs must be a ReplaceOnePairs (see sample_replace_one)")
    train = _checks.array(pairs.train, "pairs.train", ndim=2, dtype_kind="")
    m, n = train.shape
    idx = [train, _checks.array(pairs.i, "pairs.i", shape=(m,), dtype_kind=""),
           _checks.array(pairs.new, "pairs.new", shape=(m,), dtype_kind=""),
           _checks.array(pairs.cov, "pairs.cov", ndim=2, dtype_kind="")]
    if idx[3].shape[0] != m or idx[3].shape[1] < 2:
        raise ValueError(f"pairs.cov must have shape ({m}, >= 2), got {idx[3].shape}")
    for name, a in zip(("train", "new", "cov"), (idx[0], idx[2], idx[3])):
        if a.size and (a.min() < 0 or a.max() >= xp.shape[0]):
            raise ValueError(f"pairs.{name} must index the pool [0, {xp.shape[0]})")
    if idx[1].min() < 0 or idx[1].max() >= n:
        raise ValueError(f"pairs.i must be positions in [0, {n})")
    lr = _checks.positive(lr, "lr")
    steps = _checks.integer(steps, "steps", minimum=1)
    every = _checks.integer(record_every, "record_every", minimum=1)
    if steps % every:
        raise ValueError(f"steps ({steps}) must be a multiple of record_every ({every})")
    per_step, rec = (np.asarray(a) for a in _pairs_jit(apply, every, params0, jnp.asarray(xp), jnp.asarray(yp),
                                                         *(jnp.asarray(v) for v in idx), lr, steps // every))
    per_step = per_step.mean(axis=2)  # average the pair's two replace-one samples
    return GapFactors(lr=lr, n=n, gap=per_step[:, 0], contraction=per_step[:, 1],
                      perturbation=per_step[:, 2], record_steps=every * np.arange(1, steps // every + 1),
                      train_loss=rec[:, 0], population_loss=rec[:, 1], trace_cov=rec[:, 2],
                      self_term=per_step[:, 3])


def join_factors(parts):
    """The :class:`GapFactors` of several sets of pairs trained alike, as one (pairs stacked in order).

    Each part must share ``lr``, ``n`` and ``record_steps``; a ``ValueError`` says which does not.
    """
    parts = list(parts)
    if not parts or not all(isinstance(p, GapFactors) for p in parts):
        raise TypeError("parts must be a non-empty sequence of GapFactors (see replace_one_factors)")
    first = parts[0]
    for k, p in enumerate(parts[1:], start=1):
        if p.lr != first.lr or p.n != first.n or not np.array_equal(p.record_steps, first.record_steps):
            raise ValueError(f"part {k} was trained differently from part 0 (lr, n or record steps): "
                             f"({p.lr}, {p.n}, {len(p.record_steps)} records) against "
                             f"({first.lr}, {first.n}, {len(first.record_steps)})")
    stacked = {f: np.concatenate([getattr(p, f) for p in parts])
               for f in ("gap", "contraction", "perturbation", "train_loss", "population_loss", "trace_cov",
                         "self_term")}
    return first._replace(**stacked)


@_checks.public
def integrate_gap_ode(cbar, epsbar, dt, *, method="euler"):
    """Solve ``dΔ/dt = −c̄_n Δ + ε̄_n``, ``Δ(0) = 0``, from factor values on a time grid (Chapter 3).

    ``cbar`` and ``epsbar`` hold ``K`` values at ``t_0 = 0 < t_1 < …``; ``dt`` is
    the constant step ``t_{k+1} − t_k`` or an array of the ``K − 1`` steps.

    ``method="euler"`` (forward Euler): ``Δ_{k+1} = (1 − dt c̄_k) Δ_k + dt ε̄_k``, i.e. the
    discrete solution formula ``Δ_K = Σ_{k<K} dt ε̄_k Π_{k<j<K} (1 − dt c̄_j)``, which tends to
    ``∫₀ᵀ exp(−∫ₛᵀ c̄_n) ε̄_n(s) ds`` as ``dt → 0``. It is the form gradient descent
    itself obeys (see the module docstring); the last factor value is not used.

    ``method="trapezoid"`` (the implicit trapezoid rule, second order and stable for any step):
    ``Δ_{k+1} (1 + dt c̄_{k+1}/2) = Δ_k (1 − dt c̄_k/2) + dt (ε̄_k + ε̄_{k+1})/2``, for factors of
    gradient flow sampled on any grid (Chapter 5 integrates the factors of ``K_n`` this way).
    ``c̄_0`` multiplies ``Δ_0 = 0`` and is never used (it may be ``nan``, as ``0/0`` at ``t = 0``).

    ``cbar = 0`` gives the contraction-free integral ``∫ ε̄_n``. Returns ``Δ_0..Δ_{K−1}`` (length ``K``),
    a float64 NumPy array. Evaluated on the host from measured factors: it repairs ``c̄_0`` and
    checks the steps on their values, so traced arguments raise a ``TypeError``.
    """
    _checks.host_only("integrate_gap_ode", cbar=cbar, epsbar=epsbar, dt=dt)
    c = np.array(_checks.array(cbar, "cbar", ndim=1, finite=False), dtype=float)
    e = _checks.array(epsbar, "epsbar", shape=(c.shape[0],))
    if method not in ("euler", "trapezoid"):
        raise ValueError(f"method must be 'euler' or 'trapezoid', got {method!r}")
    if not np.all(np.isfinite(c[1:])):
        raise ValueError("cbar must be finite after its first value")
    c[0] = 0.0 if not np.isfinite(c[0]) else c[0]
    if np.ndim(dt) == 0:
        h = np.full(max(c.shape[0] - 1, 0), _checks.positive(dt, "dt"))
    else:
        h = _checks.array(dt, "dt", shape=(c.shape[0] - 1,))
        if np.any(h <= 0):
            raise ValueError("dt must hold positive time steps")
    if method == "euler":
        keep, inject, gain = 1.0 - h * c[:-1], h * e[:-1], np.ones_like(h)
    else:
        keep, inject, gain = 1.0 - h * c[:-1] / 2, h * (e[:-1] + e[1:]) / 2, 1.0 + h * c[1:] / 2

    def step(delta, args):
        k, i, g = args
        nxt = (k * delta + i) / g
        return nxt, nxt

    _, out = jax.lax.scan(step, jnp.zeros((), jnp.result_type(float)),
                          (jnp.asarray(keep), jnp.asarray(inject), jnp.asarray(gain)))
    return np.concatenate([[0.0], np.asarray(out)])


class GapCurves(NamedTuple):
    """Chapter 3's curves from :class:`GapFactors`; ``*_hw`` are 95% Monte Carlo half-widths.

    Per step (``t``): ``cbar`` (0 where the mean replace-one gap is 0) with the
    delta-method half-width ``cbar_hw`` of a ratio of means (``inf`` there),
    ``epsbar``, ``replace_one`` (mean ``D_i``), ``ode`` (the integrated
    equation with ``c̄_n``), ``ode_numerator`` (the same with ``c̄_n Δ``
    replaced by ``E[F_i(u) − F_i(w)]``, a per-pair sum, hence with a band),
    ``contraction_free`` (``∫ ε̄_n``). At ``t_record``: ``measured`` (population
    minus training loss), ``difference_hw`` (95% band of the paired difference
    ``ode_numerator − measured``), ``trace_cov``.
    """

    t: np.ndarray
    cbar: np.ndarray
    cbar_hw: np.ndarray
    epsbar: np.ndarray
    epsbar_hw: np.ndarray
    replace_one: np.ndarray
    replace_one_hw: np.ndarray
    ode: np.ndarray
    ode_numerator: np.ndarray
    ode_numerator_hw: np.ndarray
    contraction_free: np.ndarray
    contraction_free_hw: np.ndarray
    t_record: np.ndarray
    measured: np.ndarray
    measured_hw: np.ndarray
    difference_hw: np.ndarray
    trace_cov: np.ndarray
    trace_cov_hw: np.ndarray


def gap_curves(factors):
    """Estimate ``c̄_n``, ``ε̄_n``, integrate the gap equation and collect the measured gap, with bands.

    Means over the ``M`` pairs and their 95% half-widths ``1.96 σ/√M`` come from
    :func:`gramlib.gap.interval` (Chapter 3).
    """
    if not isinstance(factors, GapFactors):
        raise TypeError("factors must be a GapFactors (see replace_one_factors)")
    dt = factors.lr
    gap, gap_hw = interval(factors.gap)
    contraction, _ = interval(factors.contraction)
    eps, eps_hw = interval(factors.perturbation)
    safe = np.where(gap != 0, gap, 1.0)
    cbar = np.where(gap != 0, contraction / safe, 0.0)
    # ratio of means A/B: Var ≈ Var(a − c̄ b) / (M B²)
    _, cbar_hw = interval(factors.contraction - cbar * factors.gap)
    cbar_hw = np.where(gap != 0, cbar_hw / np.abs(safe), np.inf)
    per_pair = np.concatenate(
        [np.zeros((factors.gap.shape[0], 1)),
         np.cumsum(dt * (factors.perturbation - factors.contraction)[:, :-1], axis=1)], axis=1)
    free = np.concatenate([np.zeros((factors.gap.shape[0], 1)),
                           np.cumsum(dt * factors.perturbation[:, :-1], axis=1)], axis=1)
    numer, numer_hw = interval(per_pair)
    free_mean, free_hw = interval(free)
    measured_pairs = factors.population_loss - factors.train_loss
    measured, measured_hw = interval(measured_pairs)
    _, diff_hw = interval(per_pair[:, factors.record_steps] - measured_pairs)
    tcov, tcov_hw = interval(factors.trace_cov)
    return GapCurves(
        t=factors.t, cbar=cbar, cbar_hw=cbar_hw, epsbar=eps, epsbar_hw=eps_hw, replace_one=gap, replace_one_hw=gap_hw,
        ode=integrate_gap_ode(cbar, eps, dt), ode_numerator=numer, ode_numerator_hw=numer_hw,
        contraction_free=free_mean, contraction_free_hw=free_hw,
        t_record=dt * factors.record_steps, measured=measured, measured_hw=measured_hw,
        difference_hw=diff_hw, trace_cov=tcov, trace_cov_hw=tcov_hw,
    )
