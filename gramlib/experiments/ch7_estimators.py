"""Chapter 7's leave-one-out estimators against all ``n`` retrained twins (``reproduce ch7-estimators``).

For each setting of :data:`SCALES` (a data set, a network, a step ``η``, ``n`` small enough that every
twin can be retrained) one run is trained and its leave-one-out loss is estimated by every estimator
a researcher would use, each timed, against the exact leave-one-out loss of all ``n`` retrained twins
(:func:`gramlib.train.retrain_without`):

* the book's estimate (:func:`gramlib.loo_estimate.estimate_loo_loss`, stratified design, ``size`` twins
  re-linearized) with its standard error, the same with a uniform subset, and the snapshot check
  (:func:`gramlib.loo_estimate.snapshot_check`) with its Richardson-extrapolated estimate and standard error;
* the two-time prediction alone and the re-linearized twins of all ``n`` samples (what the estimate is
  unbiased for), with the sampling error of both designs simulated over many subsets of those twins;
* GCV and the frozen-kernel (initial NTK) leave-one-out (:mod:`gramlib.baselines`);
* influence functions (Koh & Liang 2017, full Hessian, damping :data:`INFLUENCE_DAMPING`), the
  infinitesimal jackknife and the Newton-step approximate leave-one-out (Gauss–Newton, damping
  ``1/(ηT)``, the ridge that early-stopped gradient descent resembles).

The table goes to ``results/ch7-estimators/ch7_estimators.csv``, one row per setting, resumable and
with provenance (:mod:`gramlib.experiments.results`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ..runs import baselines, models, train
from ..runs.loo_estimate import control_variate, estimate_loo_loss, loo_strata, snapshot_check, total_stderr
from ..runs.predict import held_out_loss
from ..kernels import ntk
from ..mathematics.kernel_flow import residual_loss
from . import tasks
from .results import fingerprint, in_float64, keyed_rows, provenance, ResultTable, run_job

#: The damping of the influence functions (added to the full Hessian of the final training loss).
INFLUENCE_DAMPING = 0.01

#: How many subsets the sampling error of each design is simulated over.
SIMULATED_SUBSETS = 2000


@dataclasses.dataclass(frozen=True)
class EstimatorSetting:
    """One setting of the estimators' table: one network trained on one data set, all ``n`` twins retrained.

    All its fields make the row's ``settings`` fingerprint (:func:`setting_keys`).
    """

    name: str  #: the row's name in ``ch7_estimators.csv``
    dataset: str  #: a data set of :func:`gramlib.experiments.tasks.dataset`
    task: object  #: its task (``"parity"``, ``"sign"``, a pair of classes, …)
    arch: str  #: ``"mlp"`` or ``"cnn"``
    n: int  #: training samples (every one of them has its twin retrained)
    width: int = 128  #: the MLP's width (unused by a CNN)
    depth: int = 2  #: layers
    activation: str = "tanh"  #: the nonlinearity
    lr: float = 1.0  #: the step ``η``
    steps: int = 1000  #: gradient steps
    snapshots: int = 40  #: kernel snapshots recorded along the run
    size: int = 30  #: twins re-linearized by the estimate (:func:`gramlib.loo_estimate.estimate_loo_loss`)
    channels: int = 8  #: the CNN's filters (unused by an MLP)


#: The settings, a tuple of :class:`EstimatorSetting` per scale: ``"default"`` (2 CPU cores, about 45
#: minutes with every twin retrained), ``"validation"`` (networks chosen after the interval of
#: :func:`gramlib.loo_estimate.total_stderr` was fixed on ``"default"``'s rows, to test it on settings it was
#: not made from; about 30 minutes), ``"rerun"`` (the default setting the snapshot check flags, trained again
#: with the snapshots the check asked for) and ``"smoke"`` (seconds, for the tests).
SCALES = {
    "default": (
        EstimatorSetting("digits-relu-d3-n75", "digits", "parity", "mlp", 75, depth=3, activation="relu", lr=0.5),
        EstimatorSetting("digits-relu-d3-n150", "digits", "parity", "mlp", 150, depth=3, activation="relu", lr=0.5),
        EstimatorSetting("digits-relu-d3-n300", "digits", "parity", "mlp", 300, depth=3, activation="relu", lr=0.5),
        EstimatorSetting("digits-cnn-n60", "digits", "parity", "cnn", 60, depth=3, lr=0.5, steps=500, snapshots=20,
                         channels=8),
        EstimatorSetting("teacher-relu-d4-n150", "teacher", "sign", "mlp", 150, depth=4, activation="relu", lr=1.0),
        EstimatorSetting("mnist-4v9-tanh-n150", "mnist10k", (4, 9), "mlp", 150, width=128),
        EstimatorSetting("mnist1d-relu-d3-n150", "mnist1d", "parity", "mlp", 150, depth=3, activation="relu", lr=1.0),
        EstimatorSetting("digits-tanh-n150", "digits", "parity", "mlp", 150, width=256),
    ),
    "validation": (
        EstimatorSetting("digits-relu-d2-n150", "digits", "parity", "mlp", 150, depth=2, activation="relu", lr=1.0),
        EstimatorSetting("teacher-tanh-d3-n150", "teacher", "sign", "mlp", 150, depth=3, lr=0.75),
        EstimatorSetting("mnist-3v5-relu-d3-n150", "mnist10k", (3, 5), "mlp", 150, depth=3, activation="relu",
                         lr=0.5),
        EstimatorSetting("mnist1d-tanh-d2-n150", "mnist1d", "parity", "mlp", 150, width=256),
        EstimatorSetting("teacher-cnn-n60", "teacher", "sign", "cnn", 60, depth=3, lr=0.5, steps=500, snapshots=20),
        EstimatorSetting("digits-relu-d4-n200", "digits", "parity", "mlp", 200, depth=4, activation="relu", lr=0.5),
    ),
    "rerun": (
        EstimatorSetting("teacher-relu-d4-n150-m200", "teacher", "sign", "mlp", 150, depth=4, activation="relu",
                         lr=1.0, snapshots=200),
    ),
    "smoke": (
        EstimatorSetting("digits-relu-smoke", "digits", "parity", "mlp", 16, width=16, depth=3, activation="relu",
                         lr=0.5, steps=20, snapshots=4, size=6),
        EstimatorSetting("teacher-cnn-smoke", "teacher", "sign", "cnn", 12, depth=2, lr=0.5, steps=8, snapshots=2,
                         size=4, channels=2),
    ),
}

#: Held-out samples per setting (for the held-out loss beside the estimates).
N_TEST = 500


def scale_config(scale="default"):
    """The settings of :data:`SCALES` for ``scale`` (``"default"``, ``"validation"``, ``"rerun"`` or ``"smoke"``), a tuple of
    :class:`EstimatorSetting`; a ``ValueError`` naming the scales on another name."""
    return tasks.scale_config(SCALES, scale)


def _model(setting, shape, outputs):
    if setting.arch == "mlp":
        return models.mlp(math.prod(shape), setting.width, setting.depth, outputs,
                          activation=setting.activation, dtype=np.float64)
    return models.cnn(shape, setting.channels, setting.depth, outputs, activation=setting.activation,
                      dtype=np.float64)


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def simulate_designs(two_time_losses, corrections, size, *, draws=SIMULATED_SUBSETS, seed=0):
    """The sampling error of each design, from the corrections ``d_i`` of all ``n`` samples.

    For ``"stratified"`` and ``"uniform"`` (:func:`gramlib.loo_estimate.loo_strata` with the size measure of
    :func:`gramlib.loo_estimate.estimate_loo_loss`), ``draws`` subsets are drawn (uniform without replacement
    in each stratum, NumPy generator ``seed``) and combined by :func:`gramlib.loo_estimate.control_variate`;
    against the mean of ``ℓ_i + d_i`` (what the estimate is unbiased for) it returns, per design, the
    relative rms error (``{design}_rms``), the share of draws within ±3% (``{design}_within3``) and the share
    whose ±2 standard errors cover it (``{design}_coverage``).
    """
    ell = np.asarray(two_time_losses, dtype=float)
    d = np.asarray(corrections, dtype=float)
    truth = float(np.mean(ell + d))
    rng = np.random.default_rng(seed)
    out = {}
    for design in ("stratified", "uniform"):
        certain, groups, counts = loo_strata(ell + np.mean(ell), size, design)
        errors, covered = [], []
        for _ in range(draws):
            picks = [certain] + [rng.choice(g, k, replace=False) for g, k in zip(groups, counts)]
            weights = [np.ones(len(certain))] + [np.full(k, len(g) / k) for g, k in zip(groups, counts)]
            strata = [np.full(len(certain), -1)] + [np.full(k, h) for h, k in enumerate(counts)]
            idx = np.concatenate(picks).astype(int)
            est, se = control_variate(ell, d[idx], np.concatenate(weights), np.concatenate(strata))
            errors.append(est / truth - 1)
            covered.append(abs(est - truth) <= 2 * se)
        errors = np.asarray(errors)
        out[f"{design}_rms"] = float(np.sqrt(np.mean(errors ** 2)))
        out[f"{design}_within3"] = float(np.mean(np.abs(errors) <= 0.03))
        out[f"{design}_coverage"] = float(np.mean(covered))
    return out


class TrainedSetting(NamedTuple):
    """A setting's network, data and run (:func:`trained_setting`); ``keys``: the keys of its two subsets."""

    model: models.Model
    data: object
    params: object
    run: train.TrainResult
    loop: str
    train_seconds: float
    keys: tuple


def trained_setting(setting, *, seed=0, snapshots=None, progress=False) -> TrainedSetting:
    """Draw a setting's data and initialization from ``PRNGKey(seed)`` and train its run, timed.

    ``snapshots``: the run's kernel snapshots (``None``: the setting's). The same ``seed`` gives the
    same data, initialization and subset keys, whatever ``snapshots`` is.
    """
    k_data, k_init, k_subset, k_uniform = jax.random.split(jax.random.PRNGKey(seed), 4)
    ds, shape = tasks.dataset(setting.dataset, setting.n, N_TEST, key=k_data, task=setting.task)
    model = _model(setting, shape, tasks.outputs(ds))
    params = model.init(k_init)
    loop = train.recommended_loop(model.apply, params, ds.x_train)
    run, seconds = _timed(train.gradient_descent, model.apply, params, ds.x_train, ds.y_train, lr=setting.lr,
                          steps=setting.steps, snapshots=setting.snapshots if snapshots is None else snapshots,
                          loop=loop, progress=progress)
    return TrainedSetting(model, ds, params, run, loop, seconds, (k_subset, k_uniform))


def exact_loo_loss(setting, trained, *, progress=False):
    """The exact leave-one-out loss of a trained setting, mean ``½‖ρ_i‖²`` over all ``n`` twins retrained
    (:func:`gramlib.train.retrain_without` from the run's initialization), and its seconds."""
    ds = trained.data
    twins, seconds = _timed(train.retrain_without, trained.model.apply, trained.params, ds.x_train, ds.y_train,
                            np.arange(setting.n), lr=setting.lr, steps=setting.steps, loop=trained.loop,
                            progress=progress)
    return 0.5 * float(np.sum(np.asarray(twins) ** 2)) / setting.n, seconds


def estimator_row(setting, *, seed=0, progress=False):
    """One setting's row: every estimator, its value, error against all ``n`` retrained twins, and seconds.

    ``setting``: an :class:`EstimatorSetting`. ``PRNGKey(seed)`` draws the data, the initialization and
    the subsets. Column ``exact``: the mean ``½‖ρ_i‖²`` of the ``n`` retrained twins; ``{estimator}_error``: ``estimator / exact − 1``;
    ``{estimator}_seconds``: wall-clock seconds; ``time_ratio``: the estimate's seconds over those of
    retraining all twins (``time_ratio_with_run`` adds the training run with its kernel snapshots).
    """
    trained = trained_setting(setting, seed=seed, progress=progress)
    model, ds, _, run, loop, train_seconds = trained[:6]
    k_subset, k_uniform = trained.keys
    x, y, n, lr, steps = ds.x_train, ds.y_train, setting.n, setting.lr, setting.steps
    est = estimate_loo_loss(model.apply, run, x, size=setting.size, key=k_subset)
    uniform = estimate_loo_loss(model.apply, run, x, size=setting.size, key=k_uniform, design="uniform")
    check, check_seconds = _timed(snapshot_check, model.apply, run, x, est)
    every, every_seconds = _timed(estimate_loo_loss, model.apply, run, x, size=n, key=k_subset)
    exact, exact_seconds = exact_loo_loss(setting, trained, progress=progress)
    theta0, r0 = run.thetas[0], run.residuals[0]
    gcv, gcv_seconds = _timed(baselines.gcv, theta0, r0, steps, lr=lr, outputs=run.outputs)
    (frozen, _), frozen_seconds = _timed(baselines.linearized_loss, theta0, r0, steps, lr=lr, outputs=run.outputs)
    influence, influence_seconds = _timed(baselines.influence_loo, model.apply, run.params, x, y,
                                          damping=INFLUENCE_DAMPING)
    start = time.perf_counter()
    theta_end = ntk.empirical_ntk(model.apply, run.params, x)
    damping = 1.0 / (lr * steps)
    jackknife = baselines.infinitesimal_jackknife(theta_end, run.residuals[-1], damping=damping, outputs=run.outputs)
    alo = baselines.approximate_loo(theta_end, run.residuals[-1], damping=damping, outputs=run.outputs)
    alo_seconds = time.perf_counter() - start

    def loss(rho):
        return residual_loss(np.asarray(rho).reshape(-1), n)

    ell = 0.5 * np.sum(np.asarray(est.two_time_loo).reshape(n, -1) ** 2, axis=1)
    row = {"exact": exact, "exact_seconds": exact_seconds,
           "estimate": est.estimate, "stderr": est.stderr, "inside": abs(est.estimate - exact) <= 2 * est.stderr,
           "estimate_error": est.estimate / exact - 1, "estimate_seconds": est.seconds["total"],
           "estimate_relinearize_seconds": est.seconds["relinearized"],
           "time_ratio": est.seconds["total"] / exact_seconds,
           "time_ratio_with_run": (est.seconds["total"] + train_seconds) / exact_seconds,
           "uniform": uniform.estimate, "uniform_stderr": uniform.stderr,
           "uniform_inside": abs(uniform.estimate - exact) <= 2 * uniform.stderr,
           "uniform_error": uniform.estimate / exact - 1, "uniform_seconds": uniform.seconds["total"],
           "two_time": est.two_time, "two_time_error": est.two_time / exact - 1,
           "two_time_seconds": est.seconds["two_time"],
           "relinearized_all": every.estimate, "relinearized_all_error": every.estimate / exact - 1,
           "relinearized_all_seconds": every_seconds,
           **simulate_designs(ell, every.corrections, setting.size),
           "snapshot_shortfall": check.shortfall, "snapshots_needed": check.needed,
           "extrapolated": check.extrapolated, "extrapolated_stderr": check.extrapolated_stderr,
           "extrapolated_inside": abs(check.extrapolated - exact) <= 2 * check.extrapolated_stderr,
           "extrapolated_error": check.extrapolated / exact - 1,
           "snapshot_check_seconds": check_seconds,
           "gcv": float(gcv), "gcv_error": float(gcv) / exact - 1, "gcv_seconds": gcv_seconds,
           "frozen": float(frozen), "frozen_error": float(frozen) / exact - 1, "frozen_seconds": frozen_seconds,
           "influence": loss(influence), "influence_error": loss(influence) / exact - 1,
           "influence_seconds": influence_seconds,
           "jackknife": loss(jackknife), "jackknife_error": loss(jackknife) / exact - 1,
           "alo": loss(alo), "alo_error": loss(alo) / exact - 1, "alo_seconds": alo_seconds,
           "train_loss": float(run.train_loss[-1]),
           "held_out": held_out_loss(model.apply, run.params, ds.x_test, ds.y_test),
           "train_seconds": train_seconds, "loop": loop}
    if progress:
        print(f"{setting.name}: exact {exact:.4f} ({exact_seconds:.0f} s) | estimate {est.estimate:.4f} ± "
              f"{est.stderr:.4f} ({100 * row['estimate_error']:+.1f}%, {est.seconds['total']:.0f} s, ratio "
              f"{row['time_ratio']:.3f}) | two-time {100 * row['two_time_error']:+.1f}% | all re-linearized "
              f"{100 * row['relinearized_all_error']:+.1f}% | influence {100 * row['influence_error']:+.1f}% | "
              f"ALO {100 * row['alo_error']:+.1f}% | GCV {100 * row['gcv_error']:+.1f}%", flush=True)
    return row


def setting_keys(scale="default"):
    """The key of each setting of ``scale`` in ``ch7_estimators.csv``: its name, description and ``settings``
    fingerprint (the setting with :data:`INFLUENCE_DAMPING`, :data:`SIMULATED_SUBSETS` and :data:`N_TEST`)."""
    return [{"name": s.name, "dataset": s.dataset, "arch": s.arch, "n": s.n,
             "width": s.width if s.arch == "mlp" else "", "channels": s.channels if s.arch == "cnn" else "",
             "depth": s.depth, "activation": s.activation, "lr": s.lr, "steps": s.steps,
             "snapshots": s.snapshots, "size": s.size,
             "settings": fingerprint({**dataclasses.asdict(s), "influence_damping": INFLUENCE_DAMPING,
                                      "draws": SIMULATED_SUBSETS, "n_test": N_TEST})} for s in scale_config(scale)]


#: The estimators of the table besides the book's, by column prefix, and how the chapter names them.
BASELINES = {"two_time": "two-time prediction", "gcv": "GCV (initial kernel)", "frozen": "frozen kernel",
             "influence": "influence functions", "jackknife": "infinitesimal jackknife", "alo": "approximate LOO"}


def committed_rows(folder, scale="default"):
    """The rows of ``folder/ch7_estimators.csv`` computed with ``scale``'s settings, in the scale's order.

    Each row gains two columns computed from the stored ones: ``total_stderr``, the standard error with
    the snapshot bias (:func:`gramlib.loo_estimate.total_stderr` of ``stderr`` and ``extrapolated −
    estimate``), and ``drawn``, the subset's own draw ``(estimate − relinearized_all) / stderr`` in
    standard errors (what the estimate missed the mean of all ``n`` re-linearized twins by, the part
    no snapshot count removes). A setting not in the file is left out (the command is resumable); a
    row without its provenance (``command``, ``commit``, ``platform``) raises ``ValueError``.
    """
    rows = keyed_rows(Path(folder) / "ch7_estimators.csv", setting_keys(scale))
    for r in rows:
        r["total_stderr"] = total_stderr(r["stderr"], r["extrapolated"] - r["estimate"])
        r["drawn"] = (r["estimate"] - r["relinearized_all"]) / r["stderr"] if r["stderr"] > 0 else 0.0
    return rows


def repeated_setting(setting, scale="default"):
    """The setting of ``scale`` that ``setting`` trains again: the one equal to it in every field but
    ``name`` and ``snapshots`` (a ``ValueError`` unless exactly one is)."""
    same = [s for s in scale_config(scale)
            if dataclasses.replace(s, name=setting.name, snapshots=setting.snapshots) == setting]
    if len(same) != 1:
        raise ValueError(f"{setting.name} repeats {len(same)} settings of scale {scale!r}, expected one")
    return same[0]


def _flag(value):
    return value is True or value == "True"


def summarize(rows, tolerance=0.03):
    """What the table says: counts, the largest errors, and how the time ratio scales with ``n``.

    Returns a dict: ``settings``; for the book's estimate and its Richardson extrapolation
    (``estimate``, ``extrapolated``): how many settings are within ``±tolerance`` of the exact
    leave-one-out loss (``{e}_within``), how many have it inside ``±2`` standard errors
    (``{e}_inside``), and the largest ``|error|`` (``{e}_max``); ``uniform_inside``; ``total_inside``:
    how many have it inside the estimate ``± 2 total_stderr`` (the column of :func:`committed_rows`); for each of
    :data:`BASELINES` the largest ``|error|`` (``{b}_max``) and how many settings it is within
    ``±tolerance`` (``{b}_within``); the largest time ratio (``max_ratio``) and that at the largest
    ``n`` (``ratio_largest_n``, ``largest_n``); ``ratio_slope``: the slope of ``log ratio`` against
    ``log n`` over the settings that differ only in ``n`` (``nan`` without two such).
    """
    if not rows:
        raise ValueError("summarize needs at least one row of ch7_estimators.csv")
    out = {"settings": len(rows)}
    for e in ("estimate", "extrapolated"):
        err = np.array([r[f"{e}_error"] for r in rows])
        out[f"{e}_within"] = int(np.sum(np.abs(err) <= tolerance))
        out[f"{e}_inside"] = int(sum(_flag(r["inside" if e == "estimate" else f"{e}_inside"]) for r in rows))
        out[f"{e}_max"] = float(np.max(np.abs(err)))
    out["uniform_inside"] = int(sum(_flag(r["uniform_inside"]) for r in rows))
    out["total_inside"] = int(sum(abs(r["estimate"] - r["exact"]) <= 2 * r["total_stderr"] for r in rows))
    for b in BASELINES:
        err = np.abs([r[f"{b}_error"] for r in rows])
        out[f"{b}_max"], out[f"{b}_within"] = float(np.max(err)), int(np.sum(err <= tolerance))
    out["max_ratio"] = float(max(r["time_ratio"] for r in rows))
    largest = max(rows, key=lambda r: r["n"])
    out["largest_n"], out["ratio_largest_n"] = int(largest["n"]), float(largest["time_ratio"])
    shared = ("dataset", "arch", "width", "channels", "depth", "activation", "lr", "steps", "snapshots", "size")
    same = lambda r: tuple(str(r[c]) for c in shared)  # noqa: E731
    series = max(({same(r) for r in rows}), key=lambda k: len({r["n"] for r in rows if same(r) == k}))
    points = sorted((r["n"], r["time_ratio"]) for r in rows if same(r) == series)
    out["ratio_series"] = points
    out["ratio_slope"] = (float(np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)[0])
                          if len({p[0] for p in points}) >= 2 else math.nan)
    return out


@in_float64
def reproduce_ch7_estimators(out_dir="results/ch7-estimators", scale="default", *, names=None, progress=True,
                             command=None):
    """Write ``ch7_estimators.csv`` under ``out_dir``: :func:`estimator_row` for every setting, resumably.

    ``names`` restricts the settings (``None``: all of the scale's). Each row is keyed by its setting's
    ``name`` and the ``settings`` fingerprint of the setting (with :data:`INFLUENCE_DAMPING`,
    :data:`SIMULATED_SUBSETS` and :data:`N_TEST`) and records :func:`gramlib.results.provenance`; a row
    already in the table is not computed again. Runs in float64. Returns the rows.
    """
    settings = scale_config(scale)
    if names is not None:
        unknown = set(names) - {s.name for s in settings}
        if not names or unknown:
            raise ValueError(f"names must be settings of scale {scale!r} ({[s.name for s in settings]}), "
                             f"got {names}")
        settings = [s for s in settings if s.name in set(names)]
    out = tasks.output_folder(out_dir)
    table = ResultTable(out / "ch7_estimators.csv", ("name", "settings"))
    by_name = {s.name: s for s in settings}
    keys = [k for k in setting_keys(scale) if k["name"] in by_name]
    return run_job(table, keys, lambda key: estimator_row(by_name[key["name"]], progress=progress),
                   extra=provenance(command))
