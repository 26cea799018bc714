"""One leave-one-out loss for all ``n`` samples of a run, and whether its snapshots suffice (Chapter 7).

The two-time prediction (:func:`gramlib.predict.trajectory_loo`) covers every sample in one pass but
misses under feature learning; the twins re-linearized at every snapshot
(:func:`gramlib.predict.twin_readout`) come within about a per cent of retraining, at a cost per twin.
:func:`estimate_loo_loss` combines them as a control variate on a stratified subset (eq. ``ch07-estimate``);
:func:`snapshot_check` turns the ``1/M`` law of the snapshots into a check after training, and
:func:`loo_size` the pilot's standard error into the subset size a tolerance needs
(:func:`estimate_loo_loss_within`: pilot, check, rule and final estimate in one call).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import jax
import numpy as np

from .. import _checks
from ..kernels import ntk
from .predict import checked_snapshot_run, trajectory_loo, twin_readout


#: The sampling designs of :func:`estimate_loo_loss`.
DESIGNS = ("stratified", "uniform")


class LooEstimate(NamedTuple):
    """The leave-one-out loss of a run estimated for all ``n`` samples (:func:`estimate_loo_loss`, Chapter 7).

    ``estimate = two_time + (1/n) Σ_{i ∈ indices} weights_i · corrections_i``, ``stderr`` its
    standard error from the subset; ``two_time`` the two-time prediction ``(1/2n) Σ_i ‖ρ_i‖²`` over all
    samples, ``two_time_loo`` its ``ρ_i``; ``indices`` the re-linearized subset (sorted), ``weights``
    their inverse inclusion probabilities ``1/π_i``, ``strata`` the stratum of each (``-1``: taken with
    certainty), ``relinearized_loo`` their re-linearized ``ρ_i`` and ``corrections`` the per-sample
    ``½‖ρ_i^relin‖² − ½‖ρ_i^two-time‖²``; ``seconds``: wall-clock seconds of the two-time prediction,
    the re-linearized twins and the total.
    """

    estimate: float
    stderr: float
    two_time: float
    two_time_loo: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    strata: np.ndarray
    relinearized_loo: np.ndarray
    corrections: np.ndarray
    design: str
    seconds: Mapping


def _checked_design(size, design, n):
    """``size`` as an integer in ``[2, n]`` and ``design`` one of :data:`DESIGNS`, or a ``ValueError`` that says which."""
    size = _checks.integer(size, "size", minimum=2)
    if size > n:
        raise ValueError(f"size must be at most the {n} training samples, got {size}")
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    return size


def loo_strata(measure, size, design="stratified"):
    """The strata of :func:`estimate_loo_loss`'s subset: ``(certain, groups, counts)``.

    ``design="uniform"``: one stratum of all ``n`` samples, ``size`` of them drawn. ``"stratified"``
    (the default): samples whose share ``size · a_i / Σ a`` of the size measure ``a = measure`` reaches 1
    are taken with certainty (``certain``, as long as two draws are left for the rest); the others, in
    decreasing order of ``a``, are cut into ``⌊m/2⌋`` strata of consecutive samples with about equal
    ``Σ a`` (``m``: the draws left), two draws in each (three in the last if ``m`` is odd). With ``a_i``
    proportional to the size of a sample's correction this is Neyman's allocation (each stratum's spread
    about proportional to its mean ``a``), and two draws per stratum keep the variance estimable.
    ``size = n`` takes every sample with certainty. ``groups``: the strata, arrays of sample indices;
    ``counts``: the draws in each.
    """
    a = _checks.array(measure, "measure", ndim=1)
    n = len(a)
    if n < 2 or np.any(a <= 0):
        raise ValueError(f"measure must hold at least 2 positive sizes, got {n} with minimum {a.min() if n else None}")
    size = _checked_design(size, design, n)
    if design == "uniform" or size == n:
        if size == n:
            return np.arange(n), [], []
        return np.zeros(0, int), [np.arange(n)], [size]
    order, m, certain = list(np.argsort(-a, kind="stable")), size, []
    while order and (m >= len(order) or (m - 1 >= 2 and m * a[order[0]] >= a[order].sum())):
        certain.append(order.pop(0))
        m -= 1
    if not order:
        return np.sort(np.asarray(certain, int)), [], []
    rest = np.asarray(order)
    counts = [2] * (m // 2)
    counts[-1] += m % 2
    share = np.cumsum(a[rest]) / a[rest].sum()
    groups, start = [], 0
    for h in range(len(counts) - 1):
        end, after = start + counts[h], sum(counts[h + 1:])
        while end < len(rest) - after and share[end - 1] < (h + 1) / len(counts):
            end += 1
        groups.append(rest[start:end])
        start = end
    groups.append(rest[start:])
    return np.sort(np.asarray(certain, int)), groups, counts


def loo_subset(measure, size, *, key, design="stratified"):
    """Draw :func:`estimate_loo_loss`'s subset: ``(indices, weights, strata)``, sorted by index.

    Within each stratum of :func:`loo_strata` the draws are uniform without replacement (one
    ``jax.random`` key per stratum, split from ``key``); ``weights`` are ``1/π_i = N_h / m_h`` (1 for a
    sample taken with certainty, whose ``strata`` is ``-1``).
    """
    certain, groups, counts = loo_strata(measure, size, design)
    idx, w, s = [certain], [np.ones(len(certain))], [np.full(len(certain), -1)]
    for h, (g, k, sub) in enumerate(zip(groups, counts, jax.random.split(key, max(len(groups), 1)))):
        pick = g[np.asarray(jax.random.choice(sub, len(g), (k,), replace=False))]
        idx.append(pick)
        w.append(np.full(k, len(g) / k))
        s.append(np.full(k, h))
    idx, w, s = (np.concatenate(v) for v in (idx, w, s))
    order = np.argsort(idx)
    return idx[order].astype(int), w[order], s[order].astype(int)


def control_variate(two_time_losses, corrections, weights, strata):
    """The estimate and its standard error: ``(mean ℓ_i + (1/n) Σ_S w_i d_i, stderr)``.

    ``two_time_losses`` ``(n,)``: the two-time ``ℓ_i = ½‖ρ_i‖²`` of every sample; ``corrections``,
    ``weights``, ``strata``: the subset's ``d_i``, ``1/π_i`` and strata (:func:`loo_subset`). Stratified
    sampling without replacement (Horvitz–Thompson): the variance of ``Σ_S w_i d_i`` is estimated
    without bias by ``Σ_h N_h² (1 − m_h/N_h) s_h² / m_h`` (``s_h²``: the sample variance of ``d`` in
    stratum ``h``, ``N_h = m_h w``); samples taken with certainty add nothing.
    """
    ell = _checks.array(two_time_losses, "two_time_losses", ndim=1)
    d = _checks.array(corrections, "corrections", ndim=1)
    w = _checks.array(weights, "weights", ndim=1, shape=(len(d),))
    s = np.asarray(strata)
    if s.shape != d.shape:
        raise ValueError(f"strata must have one entry per correction ({len(d)}), got shape {s.shape}")
    n = len(ell)
    variance = 0.0
    for h in np.unique(s[s >= 0]):
        dh, m = d[s == h], int(np.sum(s == h))
        big = w[s == h][0] * m
        if m < 2:
            raise ValueError(f"stratum {h} holds {m} draw; the variance needs at least 2 per stratum")
        variance += big ** 2 * (1 - m / big) * np.var(dh, ddof=1) / m
    return float(np.mean(ell) + np.sum(w * d) / n), float(np.sqrt(max(variance, 0.0)) / n)


def _two_time(apply, run, x, cross):
    """The two-time prediction of every twin: ``ρ_i`` ``(n, C)``, ``ℓ_i = ½‖ρ_i‖²`` ``(n,)`` and the segment forces."""
    if cross is None:
        cross = ntk.two_time_kernel(apply, run.weights, x)
    rho, _, forces = trajectory_loo(run, cross=cross)
    rho = rho.reshape(run.n, run.outputs)
    return rho, 0.5 * np.sum(rho ** 2, axis=1), forces


def _estimate(apply, run, x, two_time, size, key, design, rule, two_time_seconds, known=None):
    """:func:`estimate_loo_loss` from the two-time prediction ``two_time`` (:func:`_two_time`); the twins of
    ``known`` (a :class:`LooEstimate` of the same run) are taken from it, not re-linearized again."""
    rho, ell, forces = two_time
    c = run.outputs
    start = time.perf_counter()
    indices, weights, strata = loo_subset(ell + np.mean(ell), size, key=key, design=design)
    done = {} if known is None else dict(zip(known.indices.tolist(), np.asarray(known.relinearized_loo).reshape(-1, c)))
    todo = np.array([i for i in indices.tolist() if i not in done], int)
    if len(todo):
        fresh = np.asarray(twin_readout(apply, run, x, forces, todo, relinearize=True, rule=rule)).reshape(-1, c)
        done.update(zip(todo.tolist(), fresh))
    relin = np.stack([done[i] for i in indices.tolist()])
    corrections = 0.5 * np.sum(relin ** 2, axis=1) - ell[indices]
    estimate, stderr = control_variate(ell, corrections, weights, strata)
    seconds = time.perf_counter() - start
    return LooEstimate(estimate=estimate, stderr=stderr, two_time=float(np.mean(ell)),
                       two_time_loo=rho[:, 0] if c == 1 else rho, indices=indices, weights=weights, strata=strata,
                       relinearized_loo=relin[:, 0] if c == 1 else relin, corrections=corrections, design=design,
                       seconds=MappingProxyType({"two_time": two_time_seconds, "relinearized": seconds,
                                                 "total": two_time_seconds + seconds}))


def estimate_loo_loss(apply, run, x, *, size, key, design="stratified", cross=None, rule="heun") -> LooEstimate:
    """One leave-one-out loss for all ``n`` samples of a run: two-time prediction plus a control variate.

    The two-time prediction ``ρ_i`` (:func:`trajectory_loo` with the run's two-time kernel ``cross``,
    computed from ``run.weights`` when ``None``) covers all ``n`` samples in one pass but misses under
    feature learning; the twins re-linearized at every snapshot (:func:`twin_readout` with
    ``relinearize=True``, ``rule``) come within about a per cent of retraining, at a cost per twin. So
    ``size`` twins are re-linearized on a random subset ``S`` and their corrections
    ``d_i = ½‖ρ_i^relin‖² − ½‖ρ_i‖²`` added as a control variate:

        ``L̂ = (1/n) Σ_i ½‖ρ_i‖² + (1/n) Σ_{i ∈ S} d_i / π_i``,

    unbiased for the mean re-linearized loss of all ``n`` twins, with its standard error
    (:func:`control_variate`). ``design="stratified"`` (the default) stratifies by the two-time loss
    with the size measure ``a_i = ½‖ρ_i‖² + mean_j ½‖ρ_j‖²`` (:func:`loo_strata`: the largest two-time
    losses, whose corrections are largest, are taken with certainty or in small strata; the floor keeps
    every sample's ``π_i`` at least about ``size/(2n)``); ``"uniform"`` draws ``size`` samples uniformly
    without replacement. ``size = n`` re-linearizes every twin and returns their mean loss with
    ``stderr = 0``. ``key`` draws the subset. Returns a :class:`LooEstimate`.
    """
    start = time.perf_counter()
    x = checked_snapshot_run(run, x)
    size = _checked_design(size, design, run.n)
    two_time = _two_time(apply, run, x, cross)
    return _estimate(apply, run, x, two_time, size, key, design, rule, time.perf_counter() - start)


class SnapshotCheck(NamedTuple):
    """Whether a run's ``M`` snapshots keep the re-linearized twins within ``target`` of retraining (Chapter 7).

    ``estimate`` and ``coarse``: :func:`estimate_loo_loss`'s estimate from the ``M = snapshots`` and from
    every second snapshot (``coarse_snapshots = M/2``), on the same subset and weights; under the
    ``1/M`` law ``L(M) = L_∞ − c/M`` that Chapter 7 measured, ``extrapolated = 2 L(M) − L(M/2)`` (Richardson)
    is ``L_∞``, with its standard error ``extrapolated_stderr`` (the control variate of the combined
    corrections ``2 d_i(M) − d_i(M/2)`` on the same subset, :func:`control_variate`); ``shortfall =
    (L_∞ − L(M)) / L_∞`` is what ``M`` snapshots leave, ``needed`` the smallest ``M`` with
    ``|shortfall| ≤ target``, and ``enough`` whether the run has them. ``total_stderr``: the
    estimate's standard error with the snapshot bias ``L_∞ − L(M)`` added in quadrature
    (:func:`total_stderr`); ``estimate ± 2 total_stderr`` is the book's interval for the exact
    leave-one-out loss.
    """

    snapshots: int
    coarse_snapshots: int
    estimate: float
    coarse: float
    extrapolated: float
    extrapolated_stderr: float
    shortfall: float
    needed: int
    enough: bool
    total_stderr: float

    @property
    def bias(self) -> float:
        """``L_∞ − L(M)``: what the re-linearized twins still miss at the run's ``M`` snapshots."""
        return self.extrapolated - self.estimate


def total_stderr(stderr, bias):
    """``√(stderr² + bias²)``: the sampling error and the snapshot bias of an estimate, together (Chapter 7).

    ``stderr``: the estimate's standard error over subsets (:class:`LooEstimate`); ``bias``: what the
    re-linearized twins still miss at ``M`` snapshots, ``L_∞ − L(M)`` with ``L_∞ = 2 L(M) − L(M/2)``
    (:attr:`SnapshotCheck.bias`). The two are added in quadrature, as a
    systematic error beside a random one: the bias is itself an estimate, with the subset's noise in
    it, not a known offset to subtract.
    """
    stderr = _checks.positive(stderr, "stderr", allow_zero=True)
    if isinstance(bias, bool) or not isinstance(bias, (int, float, np.number)) or not math.isfinite(bias):
        raise ValueError(f"bias must be a finite number, got {bias!r}")
    return math.hypot(stderr, float(bias))


def _thinned(run, stride):
    """The run with every ``stride``-th snapshot (and its weights) only."""
    return run._replace(thetas=run.thetas[::stride], snapshot_steps=run.snapshot_steps[::stride],
                        weights=tuple(run.weights[:-1][::stride]) + (run.weights[-1],))


def snapshot_check(apply, run, x, estimate, *, cross=None, target=0.01, rule="heun") -> SnapshotCheck:
    """Check after training whether the run's snapshots suffice, and say how many would (Chapter 7).

    ``estimate``: the run's :class:`LooEstimate`. Its subset's twins are re-linearized again from every
    second snapshot (half the cost of the estimate's own twins), and the two estimates give the ``1/M``
    law's constant (:class:`SnapshotCheck`): the shortfall of the re-linearized twins at ``M`` snapshots,
    and the ``M`` that keeps it within ``target`` (default 1%). ``M`` must be even; ``cross`` as in
    :func:`estimate_loo_loss`.
    """
    if not isinstance(estimate, LooEstimate):
        raise TypeError(f"estimate must be the LooEstimate of estimate_loo_loss, got {type(estimate).__name__}")
    target = _checks.positive(target, "target")
    count = len(run.thetas)
    if count < 2 or count % 2:
        raise ValueError(f"the run must have an even number of snapshots (at least 2), got {count}")
    if len(run.weights) != count + 1:
        raise ValueError(f"run must hold its {count} snapshot weights and the final ones, got {len(run.weights)}")
    n, c = run.n, run.outputs
    if cross is None:
        cross = ntk.two_time_kernel(apply, run.weights, x)
    forces = trajectory_loo(run, count // 2, cross=cross).forces
    relin = np.asarray(twin_readout(apply, _thinned(run, 2), x, forces, estimate.indices, relinearize=True,
                                    rule=rule)).reshape(-1, c)
    ell = 0.5 * np.sum(np.asarray(estimate.two_time_loo).reshape(n, c) ** 2, axis=1)
    corrections = 0.5 * np.sum(relin ** 2, axis=1) - ell[estimate.indices]
    coarse, _ = control_variate(ell, corrections, estimate.weights, estimate.strata)
    extrapolated, extrapolated_stderr = control_variate(ell, 2 * estimate.corrections - corrections,
                                                        estimate.weights, estimate.strata)
    shortfall = (extrapolated - estimate.estimate) / extrapolated
    needed = max(1, math.ceil(count * abs(shortfall) / target))
    return SnapshotCheck(snapshots=count, coarse_snapshots=count // 2, estimate=estimate.estimate, coarse=coarse,
                         extrapolated=extrapolated, extrapolated_stderr=extrapolated_stderr, shortfall=shortfall,
                         needed=needed, enough=needed <= count,
                         total_stderr=total_stderr(estimate.stderr, extrapolated - estimate.estimate))


class LooSize(NamedTuple):
    """How many twins :func:`estimate_loo_loss` needs for a tolerance (:func:`loo_size`, Chapter 7).

    ``size``: the subset size (at least the pilot's); ``sampling_stderr``: the standard error the
    subset may have, ``√((τ L̂/2)² − b²)`` (``nan`` when ``reachable`` is false); ``reachable``: whether
    the snapshot bias ``b`` leaves room for sampling, ``|b| < τ L̂/2`` (if not, the run needs the
    snapshots :class:`SnapshotCheck` asks for, not more twins).
    """

    size: int
    sampling_stderr: float
    reachable: bool


def stderr_at(pilot_stderr, pilot_size, size, n):
    """The standard error the law of :func:`loo_size` predicts for ``size`` of ``n`` twins (eq. ``ch07-size``):
    ``s₀ √((1/m − 1/n) / (1/m₀ − 1/n))`` from a pilot of ``m₀ = pilot_size`` twins with standard error ``s₀``."""
    s0 = _checks.positive(pilot_stderr, "pilot_stderr", allow_zero=True)
    n = _checks.integer(n, "n", minimum=2)
    m0 = _checks.integer(pilot_size, "pilot_size", minimum=1)
    m = _checks.integer(size, "size", minimum=1)
    if not m0 < n or m > n:
        raise ValueError(f"pilot_size must be below n ({n}) and size at most n, got {m0} and {m}")
    return s0 * math.sqrt((1 / m - 1 / n) / (1 / m0 - 1 / n))


def loo_size(pilot, check, tolerance=0.03) -> LooSize:
    """The subset size that brings ``2 × total_stderr`` within ``tolerance × L̂`` (Chapter 7, eq. ``ch07-size``).

    ``pilot``: a :class:`LooEstimate` on ``m₀`` twins, standard error ``s₀``; ``check``: its
    :class:`SnapshotCheck` (its ``bias``, ``b = L_∞ − L(M)``). The interval ``L̂ ± 2√(s² + b²)`` is within
    ``±τ L̂`` when the sampling error is at most ``s* = √((τ L̂/2)² − b²)``. Sampling ``m`` of ``n``
    without replacement, the variance falls as ``1/m − 1/n`` (exactly so for a uniform subset, only
    roughly for the strata of :func:`loo_strata`, whose number grows with ``m``: Chapter 7 measured the
    second subsets' standard errors at 0.48 to 1.26 times this prediction), so

        ``s(m)² = s₀² (1/m − 1/n) / (1/m₀ − 1/n)``,  ``m = ⌈1 / (s*² / V + 1/n)⌉``,  ``V = s₀² / (1/m₀ − 1/n)``,

    at least ``m₀`` and at most ``n``: Cochran's sample size for a target standard error with a pilot's
    variance (*Sampling Techniques*, 1977), with the snapshot bias taken out of the budget first. When
    ``|b| ≥ τ L̂/2`` no subset helps and ``reachable`` is false.
    Returns a :class:`LooSize`.
    """
    if not isinstance(pilot, LooEstimate):
        raise TypeError(f"pilot must be the LooEstimate of estimate_loo_loss, got {type(pilot).__name__}")
    if not isinstance(check, SnapshotCheck):
        raise TypeError(f"check must be the SnapshotCheck of snapshot_check, got {type(check).__name__}")
    if check.estimate != pilot.estimate:
        raise ValueError(f"check must be the snapshot check of pilot (its estimate {check.estimate} is not the "
                         f"pilot's {pilot.estimate})")
    tolerance = _checks.positive(tolerance, "tolerance")
    m0, n = len(pilot.indices), len(pilot.two_time_loo)
    half, bias = tolerance * abs(pilot.estimate) / 2, check.bias
    if abs(bias) >= half:
        return LooSize(size=m0, sampling_stderr=math.nan, reachable=False)
    target = math.sqrt(half ** 2 - bias ** 2)
    if pilot.stderr <= target or m0 >= n:
        return LooSize(size=m0, sampling_stderr=target, reachable=True)
    spread = pilot.stderr ** 2 / (1 / m0 - 1 / n)
    size = math.ceil(1 / (target ** 2 / spread + 1 / n))
    return LooSize(size=min(max(size, m0), n), sampling_stderr=target, reachable=True)


class LooEstimateWithin(NamedTuple):
    """The leave-one-out loss of a run to a tolerance (:func:`estimate_loo_loss_within`, Chapter 7).

    ``estimate``: the final :class:`LooEstimate` (the pilot itself when it suffices or when more twins
    cannot help); ``pilot`` and ``check``: the pilot and its :class:`SnapshotCheck`; ``size``: the
    :class:`LooSize` the rule chose; ``total_stderr``: the final estimate's standard error with the
    pilot's snapshot bias (:func:`total_stderr`), so that ``estimate.estimate ± 2 total_stderr`` is
    the interval; ``within``: whether that interval is within ``± tolerance`` of the estimate;
    ``seconds``: wall-clock seconds of the whole procedure.
    """

    estimate: LooEstimate
    pilot: LooEstimate
    check: SnapshotCheck
    size: LooSize
    total_stderr: float
    within: bool
    seconds: float


def estimate_loo_loss_within(apply, run, x, *, key, tolerance=0.03, pilot=30, design="stratified", cross=None,
                             rule="heun") -> LooEstimateWithin:
    """The leave-one-out loss of all ``n`` samples with an interval within ``± tolerance`` (Chapter 7).

    Two stages: a pilot :func:`estimate_loo_loss` on ``pilot`` twins (subset drawn with ``key``) and its
    :func:`snapshot_check`; :func:`loo_size` turns them into the subset size whose interval
    ``L̂ ± 2 total_stderr`` is within ``± tolerance × L̂``; if that is more than the pilot, a second
    subset of that size is drawn (``jax.random.fold_in(key, 1)``) and estimated, the twins it shares
    with the pilot taken from the pilot (the two-time prediction is computed once). The second subset's
    standard error comes from it alone, so it is unbiased although its size was chosen from the pilot;
    when the pilot itself is kept, its standard error both decided that and sizes the interval, which
    makes such intervals somewhat optimistic. The bias term is the pilot's. When the snapshot bias alone
    fills the tolerance, no subset helps: the pilot is returned with ``size.reachable`` false and
    ``check.needed`` says how many snapshots a run needs. Returns a :class:`LooEstimateWithin`.
    """
    start = time.perf_counter()
    x = checked_snapshot_run(run, x)
    tolerance = _checks.positive(tolerance, "tolerance")
    pilot = _checked_design(pilot, design, run.n)
    if cross is None:
        cross = ntk.two_time_kernel(apply, run.weights, x)
    two_time = _two_time(apply, run, x, cross)
    first = _estimate(apply, run, x, two_time, pilot, key, design, rule, time.perf_counter() - start)
    check = snapshot_check(apply, run, x, first, cross=cross, rule=rule)
    size = loo_size(first, check, tolerance)
    final = first
    if size.reachable and size.size > pilot:
        final = _estimate(apply, run, x, two_time, size.size, jax.random.fold_in(key, 1), design, rule,
                          first.seconds["two_time"], known=first)
    total = total_stderr(final.stderr, check.bias)
    return LooEstimateWithin(estimate=final, pilot=first, check=check, size=size, total_stderr=total,
                             within=bool(2 * total <= tolerance * abs(final.estimate)),
                             seconds=time.perf_counter() - start)
