"""Chapter 7's experiments: the table of predictions over many splits, and its limits.

The settings (:data:`SCALES`: the cells of the table and how many independent splits each
gets; typed in :mod:`gramlib.experiments.ch7_settings`, whose names this module re-exports), the
``reproduce`` commands (``python -m gramlib reproduce ch7 | ch7-limits``) that write the CSV tables
and figures under ``results/ch7/`` and ``results/ch7-limits/``, resumably (:mod:`gramlib.results`: a
rerun keeps the rows already computed with the same settings and computes only the others); the
protocol's summary per cell is :mod:`gramlib.experiments.ch7_summary`. The per-run pieces that the
chapter also calls on its live runs are :func:`snapshot_rows` and :func:`noise_floor`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import MappingProxyType
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from ..runs import data, models
from ..runs.predict import frozen_kernel_losses
from .predicted_loss import initialization_key, predict_test_loss
from ..runs.train import recommended_loop
from . import tasks
# the settings, re-exported: ch7.SCALES, ch7.scale_config(scale), ch7.TableScale, …
from .ch7_settings import (CELL_LABELS, Cell, limit_grid, LimitGrid, RUN_SETTINGS, RunSetting,  # noqa: F401
                           SCALES, scale_config, TableScale)
from .ch7_summary import figures, summarize
from .results import fingerprint, in_float64, provenance, ResultTable, run_job, write_csv


def _fingerprint(setting, names, **more):
    return fingerprint({**{name: getattr(setting, name) for name in names}, **more})


def twin_columns(prediction):
    """The twins of a run made with ``readout=True`` (:func:`gramlib.predicted_loss.predict_test_loss`), as columns.

    On the twins' subset: the leave-one-out loss of the first-order twins read out through the
    network (``readout_on_subset``) and of the twins re-linearized at every snapshot
    (``relinearized_on_subset``; :func:`gramlib.predict.twin_readout`), the per-sample
    correlation of each with the retrained twins (``readout_correlation``,
    ``relinearized_correlation``; ``nan`` without them) and the wall-clock seconds of the
    retraining and of the re-linearization (``retrain_seconds``, ``relinearized_seconds``).
    """
    twins = prediction.brute_force_loo

    def correlation(rho):
        return float(np.corrcoef(rho.ravel(), twins.ravel())[0, 1]) if len(twins) > 1 else math.nan

    return {"readout_on_subset": prediction.readout_on_subset, "readout_correlation": correlation(prediction.readout_loo),
            "relinearized_on_subset": prediction.relinearized_on_subset,
            "relinearized_correlation": correlation(prediction.relinearized_loo),
            **{f"{part}_seconds": t for part, t in prediction.seconds.items()}}


def snapshot_rows(prediction, counts):
    """The prediction of one run recomputed from fewer kernel snapshots, one row per count ``M`` in ``counts``.

    ``prediction`` is a :class:`gramlib.predicted_loss.Prediction`; each row holds ``snapshots = M``,
    ``predicted`` (two-time kernel) and ``one_time`` (one-time kernel), the leave-one-out
    losses ``(1/2n) Σ_i ‖ρ_i‖²`` of its predictor (:class:`gramlib.predictor.LooPredictor`) from ``M`` of
    the run's snapshots (every ``(len(run.thetas)/M)``-th), the held-out loss and both relative errors
    (Chapter 7, Limits).
    """
    rows, loo = [], prediction.predictor
    for k in counts:
        if k == len(prediction.run.thetas):  # every snapshot: the run's own prediction, already computed
            pred, one = prediction.predicted, prediction.one_time
        else:
            pred, one = loo.two_time_loss(k), loo.one_time_loss(k)
        held = prediction.held_out
        rows.append({"snapshots": k, "predicted": pred, "one_time": one, "held_out": held,
                     "relative_error": abs(pred - held) / held, "one_time_relative_error": abs(one - held) / held})
    return rows


class NoiseFloor(NamedTuple):
    """Exact leave-one-out against held-out loss of the frozen-kernel network over fresh splits.

    ``loo`` and ``held_out`` have one entry per split; ``relative`` is
    ``|LOO − held-out| / held-out``.
    """

    loo: np.ndarray
    held_out: np.ndarray
    relative: np.ndarray


def noise_floor(cell, setting, *, splits, arch="mlp", model=None, first_seed=1000):
    """The sampling noise of leave-one-out on ``cell``: ``splits`` fresh splits and initializations.

    ``cell`` is a :class:`Cell` (data set, task, ``n``), ``setting`` a :class:`RunSetting` (or a
    :class:`TableScale`): ``n_test`` held-out samples. Split ``s`` (seed ``first_seed + s``) draws
    its data and initialization from ``PRNGKey(seed)``; :func:`gramlib.predict.frozen_kernel_losses`
    gives the exact leave-one-out loss and the held-out loss of the linearized network after gradient
    flow for ``time = η T`` (``setting.lr · setting.steps``). ``model`` defaults to the
    ``arch`` network of ``setting`` (:func:`gramlib.experiments.tasks.architecture`, float64).
    Returns a :class:`NoiseFloor` (Chapter 7, "How close can a leave-one-out estimate be?").
    """
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    pairs = []
    for seed in range(first_seed, first_seed + splits):
        k_data, k_run = jax.random.split(jax.random.PRNGKey(seed))
        ds, shape = tasks.dataset(cell.dataset, cell.n_train, setting.n_test, key=k_data, task=cell.task)
        if model is None:
            model = tasks.architecture(arch, shape, tasks.outputs(ds), setting, np.float64)
        pairs.append(frozen_kernel_losses(model, ds, key=k_run, t=setting.lr * setting.steps))
    loo, held = np.array(pairs).T
    return NoiseFloor(loo, held, np.abs(loo - held) / held)


def centered_split(model, dataset, *, key):
    """A split of a cell of ``centered_cells``: the network centered at its initialization, leave-one-out clean.

    Two changes to the table's pipeline, both on the split alone. The inputs are centered by the
    held-out mean (:func:`gramlib.data.center_by_held_out`: no training sample in the center, the
    remedy of Chapter 7's preprocessing section), and the network trained is ``f(x; w) − f(x; w_0)``
    with ``w_0 = model.init(key)`` (:func:`gramlib.experiments.tasks.centered_outputs`: ``model`` on
    targets shifted by its initial outputs, the same residuals and Gram matrices), which predicts
    zero before training instead of the noise of its initial outputs.
    """
    return tasks.centered_outputs(model, data.center_by_held_out(dataset), key)


def split_keys(seed):
    """The keys of split ``seed`` of Chapter 7's table: ``(data, initialization, random labels)`` from ``PRNGKey(seed)``."""
    return jax.random.split(jax.random.PRNGKey(seed), 3)


def constant_losses(setting, name, seed):
    """The held-out losses ``½ mean_x ‖c − y‖²`` of constant predictions ``c`` on true-label split ``seed`` of cell ``name``.

    ``zero``: ``c = 0``; ``train_frequencies``: ``c`` the mean training target (for one-hot targets the
    training class frequencies); ``best``: ``c = ȳ``, the mean held-out target, the least held-out loss of any
    constant, ``½ (mean ‖y‖² − ‖ȳ‖²)`` (for one-hot targets ``½ (1 − ‖ȳ‖²)``). The split's data are those
    of :func:`reproduce_ch7` (:func:`split_keys`); a network that does not beat ``best`` does worse than a constant.
    """
    cell = setting.cells[name]
    ds, _ = tasks.dataset(cell.dataset, cell.n_train, setting.n_test, key=split_keys(seed)[0], task=cell.task)
    y = np.asarray(ds.y_test, dtype=float).reshape(len(ds.y_test), -1)
    loss = lambda c: 0.5 * float(np.mean(np.sum((y - c) ** 2, axis=1)))  # noqa: E731
    prior = np.asarray(ds.y_train, dtype=float).reshape(len(ds.y_train), -1).mean(axis=0)
    return {"zero": loss(0.0), "train_frequencies": loss(prior), "best": loss(y.mean(axis=0))}


def recentered_run(model, dataset, setting, *, key, loop="scan", progress=False):
    """One split of Chapter 7 again, with the inputs centered by a mean that holds no training sample.

    :func:`gramlib.data.split` centers the inputs by the mean of the training inputs, which
    contains every left-out sample; with ``n`` small against the input dimension this biases
    leave-one-out upward (Chapter 7, the 10-class cell). Here both sets are shifted by the held-out
    inputs' mean (:func:`gramlib.data.center_by_held_out`) and the split is run again from the same
    initialization ``key``: the noise floor (``exact_loo_recentered``, ``linearized_held_out_recentered``:
    :func:`gramlib.predict.frozen_kernel_losses` at ``time = η T``) and the prediction of the trained
    network with its held-out loss (``predicted_recentered``, ``held_out_recentered``:
    :func:`gramlib.predicted_loss.predict_test_loss` with the step, steps and snapshots of ``setting``, a
    :class:`RunSetting`, no twins).
    """
    shifted = data.center_by_held_out(dataset)
    loo, held = frozen_kernel_losses(model, shifted, key=key, t=setting.lr * setting.steps)
    p = predict_test_loss(model, shifted, key=key, lr=setting.lr, steps=setting.steps,
                          snapshots=setting.snapshots, brute_force=0, loop=loop, progress=progress)
    return {"exact_loo_recentered": loo, "linearized_held_out_recentered": held,
            "predicted_recentered": p.predicted, "held_out_recentered": p.held_out}


def _restrict(setting, scale, archs, datasets, seeds):
    """``(setting restricted to the cells of datasets and to seeds, archs)``: a new :class:`TableScale`."""
    archs = tuple(archs)
    if not archs or set(archs) - {"mlp", "cnn"}:
        raise ValueError(f"archs must be a non-empty subset of ('mlp', 'cnn'), got {archs}")
    cells = setting.cells
    if datasets is not None:
        if not datasets or set(datasets) - set(cells):
            raise ValueError(f"datasets must be a non-empty subset of {sorted(cells)} at scale "
                             f"{scale!r}, got {datasets}")
        cells = MappingProxyType({name: c for name, c in cells.items() if name in set(datasets)})
    allowed = range(max(setting.splits, setting.cnn_splits, setting.random_label_splits))
    if seeds is not None and (not seeds or set(seeds) - set(allowed)):
        raise ValueError(f"seeds must be a non-empty subset of {list(allowed)} at scale {scale!r}, got {seeds}")
    return dataclasses.replace(setting, cells=cells, seeds=None if seeds is None else tuple(seeds)), archs


def table_runs(setting, archs, retrain=True):
    """The runs of Chapter 7's table at ``setting`` (a :class:`TableScale`): one dict per run, in the table's order.

    Per cell of ``setting.cells`` and architecture (the CNN only on ``cnn_cells``): the
    true-label runs of seeds ``0, 1, …`` (``splits`` of them for the MLP, ``cnn_splits`` for
    the CNN), then the random-label runs of the first ``random_label_splits`` seeds; only
    seeds in ``setting.seeds`` (``None``: all). ``retrain`` is true for the true-label runs of the first
    ``retrain_splits`` seeds (``cnn_retrain_splits`` for the CNN) of the cells and architectures in
    ``retrain_cells`` (all false with
    ``retrain=False``); ``settings`` is the row's fingerprint (:data:`RUN_SETTINGS`, the cell,
    ``retrain`` and, for the cells of ``centered_cells``, ``centered=True``), under which the table stores it.
    """
    runs = []
    for name in setting.cells:
        for arch in archs:
            if arch == "cnn" and name not in setting.cnn_cells:
                continue
            count = setting.splits if arch == "mlp" else setting.cnn_splits
            retrained = setting.retrain_splits if arch == "mlp" else setting.cnn_retrain_splits
            for labels, seeds in (("true", range(count)), ("random", range(setting.random_label_splits))):
                twins = retrain and (name, arch) in setting.retrain_cells
                runs += [{"dataset": name, "arch": arch, "labels": labels, "seed": seed,
                          "retrain": bool(twins and labels == "true" and seed < retrained)}
                         for seed in seeds if setting.seeds is None or seed in setting.seeds]
    centered = set(setting.centered_cells)
    return [{**run, "settings": _fingerprint(setting, RUN_SETTINGS, cell=setting.cells[run["dataset"]],
                                             retrain=run["retrain"], **({"centered": True} if run["dataset"] in centered
                                                                        else {}))} for run in runs]


@in_float64
def reproduce_ch7(out_dir="results/ch7", scale="default", *, archs=("mlp", "cnn"), datasets=None, seeds=None,
                  retrain=True, progress=True, command=None):
    """Regenerate Chapter 7's table (CSV) and figures (PNG) under ``out_dir``, resumably.

    Every run (:func:`table_runs`) is one split ``s``: ``PRNGKey(s)`` draws the data, the
    initialization and the subset of twins. Per run, ``ch7_table.csv`` holds the prediction,
    the held-out loss and every baseline (:func:`gramlib.predicted_loss.predict_test_loss`; the twins
    retrained where the run says so, and then also read out and re-linearized, :func:`twin_columns`;
    else only the prediction on their subset), and the exact
    leave-one-out and held-out losses of the network linearized at an initialization on the same
    split (``exact_loo``, ``linearized_held_out``: :func:`gramlib.predict.frozen_kernel_losses`),
    the noise floor of leave-one-out itself. That initialization is ``model.init(k_run)``, drawn from
    the split's key like the run's but not the run's own (the run draws
    ``model.init(initialization_key(k_run))``, :func:`gramlib.predicted_loss.initialization_key`),
    except in ``centered_cells``, where both use the run's.
    ``ch7_summary.csv``: per cell, :func:`gramlib.experiments.ch7_summary.summarize`;
    ``ch7_snapshots.csv``: the true-label predictions of the first ``snapshot_splits`` splits with
    fewer kernel snapshots (:func:`snapshot_rows`), except in ``centered_cells``; ``ch7_centering.csv``: the noise floor and the
    prediction with re-centered inputs (:func:`recentered_run`) on the true-label MLP splits of
    ``recentered_cells``;
    ``ch7_predicted_vs_heldout.png`` and ``ch7_snapshots.png``. The splits of ``centered_cells`` are
    :func:`centered_split`'s.
    ``archs``, ``datasets`` (cell names) and ``seeds`` restrict the runs (``None``: all of the
    scale's); ``retrain=False`` retrains no twins. Each row records its ``settings`` fingerprint
    (the scale's :data:`RUN_SETTINGS`, the row's :class:`Cell` and ``retrain``) and
    :func:`gramlib.results.provenance` (``command``: the command line to record, default this
    process's); a run already in the table with the same settings is not computed again, and
    every finished run is written at once. Runs in float64 (the caller's setting is restored).
    Returns the summary rows. The limits are :func:`reproduce_ch7_limits`.
    """
    full = scale_config(scale)
    setting, archs = _restrict(full, scale, archs, datasets, seeds)
    out = tasks.output_folder(out_dir)
    extra = provenance(command)
    table = ResultTable(out / "ch7_table.csv", ("dataset", "arch", "labels", "seed", "settings"))
    snaps = ResultTable(out / "ch7_snapshots.csv", ("dataset", "arch", "seed", "snapshots", "settings"))
    runs = table_runs(setting, archs, retrain)
    model_of = {}  # one model object per cell, so that compiled code is reused across seeds
    time_ = setting.lr * setting.steps

    def split(name, arch, labels, seed):
        """Split ``seed`` of cell ``name``: data set, model, the run's key and the noise floor's (``w_0``:
        the run's own in a centered cell, :func:`initialization_key`; else ``model.init(k_run)``)."""
        cell = setting.cells[name]
        k_data, k_run, k_labels = split_keys(seed)
        ds, shape = tasks.dataset(cell.dataset, cell.n_train, setting.n_test, key=k_data, task=cell.task)
        if labels == "random":
            ds = data.random_labels(ds, key=k_labels)
        if (name, arch) not in model_of:
            model_of[name, arch] = tasks.architecture(arch, shape, tasks.outputs(ds), setting, np.float64)
        if name in setting.centered_cells:
            k_init = initialization_key(k_run)
            return centered_split(model_of[name, arch], ds, key=k_init), model_of[name, arch], k_run, k_init
        return ds, model_of[name, arch], k_run, k_run

    def compute(run):
        name, arch, labels, seed = run["dataset"], run["arch"], run["labels"], run["seed"]
        ds, model, k_run, k_floor = split(name, arch, labels, seed)
        loop = recommended_loop(model.apply, model.init(k_run), ds.x_train)  # per_step: a CNN on the CPU
        start = time.time()
        p = predict_test_loss(model, ds, key=k_run, lr=setting.lr, steps=setting.steps,
                              snapshots=setting.snapshots, brute_force=setting.brute_force,
                              retrain=run["retrain"], readout=run["retrain"], loop=loop, progress=progress)
        exact_loo, linear_held = frozen_kernel_losses(model, ds, key=k_floor, t=time_)
        seconds = time.time() - start
        if (labels == "true" and seed < setting.snapshot_splits  # first: a run is done once its row is written
                and name not in setting.centered_cells):
            for row in snapshot_rows(p, setting.snapshot_counts):
                snaps.put({"dataset": name, "arch": arch, "seed": seed, **row, "settings": run["settings"], **extra})
        if progress:
            print(f"{name:12s} {arch} {labels:6s} seed {seed}: predicted {p.predicted:.4f} held-out "
                  f"{p.held_out:.4f} | exact LOO {exact_loo:.4f} linearized held-out {linear_held:.4f} | "
                  f"twins {p.brute_force:.4f} on subset {p.predicted_on_subset:.4f} ({seconds:.0f} s)", flush=True)
        return {**p.row(), **(twin_columns(p) if run["retrain"] else {}), "exact_loo": exact_loo,
                "linearized_held_out": linear_held, "loop": loop, "seconds": seconds}

    run_job(table, tqdm(runs, desc="Chapter 7 runs", disable=not progress), compute, extra=extra)

    def recenter(run):
        ds, model, k_run, _ = split(run["dataset"], "mlp", "true", run["seed"])
        return recentered_run(model, ds, setting, key=k_run, loop=recommended_loop(model.apply, model.init(k_run),
                                                                                    ds.x_train), progress=progress)

    centering = ResultTable(out / "ch7_centering.csv", ("dataset", "seed", "settings"))
    recentered = [{"dataset": run["dataset"], "seed": run["seed"], "settings": run["settings"]} for run in runs
                  if run["dataset"] in setting.recentered_cells and run["arch"] == "mlp" and run["labels"] == "true"]
    run_job(centering, tqdm(recentered, desc="Re-centered runs", disable=not progress), recenter, extra=extra)
    # The summary and the figures cover every run of the scale's protocol in the table, also those that
    # another invocation (other --archs, --datasets or --seeds, another process) computed.
    everything = table_runs(full, ("mlp", "cnn"), retrain)
    stored = {table.key(r): r for r in ResultTable(table.path, table.key_columns).rows}
    rows = [stored[table.key(run)] for run in everything if table.key(run) in stored]
    true_runs = {(run["dataset"], run["arch"], run["seed"], run["settings"]) for run in everything
                 if run["labels"] == "true"}
    snap_rows = [s for s in ResultTable(snaps.path, snaps.key_columns).rows
                 if (s["dataset"], s["arch"], s["seed"], s.get("settings")) in true_runs
                 and s["snapshots"] in full.snapshot_counts]
    summary = [{**c, **extra} for c in summarize(rows)]
    write_csv(out / "ch7_summary.csv", summary)
    figures(rows, snap_rows, out)
    return summary


def limit_runs(setting, *, retrain=True):
    """The runs of Chapter 7's limits at ``setting`` (a :class:`TableScale`), one dict per ReLU network and step.

    ``setting.limits`` (a :class:`LimitGrid`; a ``ValueError`` naming the scales with one if it is
    ``None``): a ReLU MLP of ``width`` and ``depth`` layers at every learning rate
    of ``lrs``, and at the table's ``lr`` the same network with each width of ``widths`` and
    each depth of ``depths``. Runs hold ``dataset`` (``"digits"``), ``arch`` (``"mlp-relu"``),
    ``width``, ``depth``, ``lr`` and ``settings`` (the fingerprint of the run settings, the
    digits cell and ``retrain``).
    """
    grid = limit_grid(setting)
    settings = _fingerprint(setting, RUN_SETTINGS, cell=setting.cells["digits"], retrain=bool(retrain))
    nets = [(grid.width, grid.depth, lr) for lr in grid.lrs]
    nets += [(w, grid.depth, setting.lr) for w in grid.widths]
    nets += [(grid.width, d, setting.lr) for d in grid.depths]
    return [{"dataset": "digits", "arch": "mlp-relu", "width": w, "depth": d, "lr": lr, "settings": settings}
            for w, d, lr in nets]


@in_float64
def reproduce_ch7_limits(out_dir="results/ch7-limits", scale="default", *, retrain=True, progress=True,
                         command=None):
    """Chapter 7's limits: ReLU MLPs on the digits over learning rate, width and depth (feature learning).

    The runs of :func:`limit_runs` on the digits' parity cell (split 0, the table's ``n``,
    steps and snapshots). Writes ``ch7_limits.csv``: per run, the prediction (two-time and
    one-time), the held-out loss, every baseline, on the twins' subset the first-order twins
    read out through the network (``readout_on_subset``) and re-linearized at every snapshot
    (``relinearized_on_subset``, :func:`gramlib.predict.twin_readout`), and, with ``retrain=True``, the retrained twins (``brute_force``, ``correlation``) and
    the mean of ``|ρ_i^pred| / |ρ_i^brute|`` for both recursions, and the seconds each took
    (``retrain_seconds``, ``relinearized_seconds``). On 2 CPU cores the default grid
    took 56 minutes beside other jobs, retraining included (``results/README.md``). Resumable and with provenance like
    :func:`reproduce_ch7`. Every run has the same data and ``key=PRNGKey(1)``
    (:func:`gramlib.predicted_loss.predict_test_loss` draws the initialization and the twins' subset
    from it), so every run's twins are the same samples. A scale without a limit grid (``"paper"``)
    raises ``ValueError`` at once.
    Returns the rows.
    """
    setting = scale_config(scale)
    limit_grid(setting, scale)
    cell = setting.cells.get("digits")
    if cell is None or cell.task != "parity":
        raise ValueError(f"the limits run on the digits' parity task, which scale {scale!r} does not have")
    out = tasks.output_folder(out_dir)
    ds, shape = tasks.dataset("digits", cell.n_train, setting.n_test, key=jax.random.PRNGKey(0))

    def compute(run):
        net = models.mlp(math.prod(shape), run["width"], run["depth"], 1, activation="relu", dtype=np.float64)
        try:
            p = predict_test_loss(net, ds, key=jax.random.PRNGKey(1), lr=run["lr"], steps=setting.steps,
                                  snapshots=setting.snapshots, brute_force=setting.brute_force,
                                  retrain=retrain, readout=True, progress=progress)
        except FloatingPointError:
            return {"diverged": True}
        bf = np.abs(p.brute_force_loo) if len(p.brute_force_loo) else np.nan
        return {"diverged": False, **p.row(), **twin_columns(p),
                "loo_ratio_to_brute_force": float(np.mean(np.abs(p.loo[p.subset]) / bf)),
                "one_time_ratio_to_brute_force": float(np.mean(np.abs(p.one_time_loo[p.subset]) / bf))}

    runs = limit_runs(setting, retrain=retrain)
    table = ResultTable(out / "ch7_limits.csv", ("dataset", "arch", "width", "depth", "lr", "settings"))
    return run_job(table, runs, compute, extra=provenance(command))
