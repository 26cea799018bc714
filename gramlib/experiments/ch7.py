"""Chapter 7's experiments: the table of predictions, its noise floor and its limits.

The settings (:data:`SCALES`), the data sets and networks of the table, and the
``reproduce`` commands (``python -m gramlib reproduce ch7 | ch7-noise | ch7-limits``)
that write the CSV tables and figures under ``results/``, resumably (:mod:`gramlib.results`:
a rerun keeps the rows already computed with the same settings and computes only the others).
The per-run pieces that the chapter also calls on its live runs are :func:`snapshot_rows`
and :func:`noise_floor`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import jax
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from ..runs import data
from ..runs.predict import frozen_kernel_losses, predict_test_loss, trajectory_loo
from ..runs.train import recommended_loop
from ..views import plotting
from ..views.figures import plot_predicted_vs_heldout, plot_snapshot_error
from . import tasks
from .results import fingerprint, in_float64, provenance, ResultTable, run_job, write_csv

#: The settings of Chapter 7. ``"default"``: the CPU-scale table of the book
#: (3 data sets × 2 architectures × 3 seeds, binary ±1 targets, n = 300,
#: 1000 held-out samples). ``"paper"``: 10-class one-hot subsets of MNIST,
#: Fashion-MNIST and CIFAR-10 with more samples (a GPU, e.g. Colab, and a
#: download of the data are needed). ``"smoke"``: a seconds-long run of the
#: same pipeline for tests.
SCALES = {
    "default": dict(datasets=("digits", "mnist1d", "teacher"), n_train=300, n_test=1000, task="parity",
                    width=512, channels=16, lr=1.0, steps=3000, snapshots=30, brute_force=30,
                    seeds=(0, 1, 2), random_label_seeds=(0,), snapshot_counts=(1, 2, 3, 5, 10, 15, 30),
                    noise_splits=20),
    "paper": dict(datasets=("mnist", "fashion_mnist", "cifar10"), n_train=500, n_test=2000, task="onehot",
                  width=512, channels=32, lr=1.0, steps=1000, snapshots=20, brute_force=20,
                  seeds=(0, 1, 2), random_label_seeds=(0,), snapshot_counts=(1, 2, 5, 10, 20),
                  noise_splits=10),
    "smoke": dict(datasets=("digits", "mnist1d", "teacher"), n_train=40, n_test=100, task="parity",
                  width=32, channels=4, lr=1.0, steps=40, snapshots=4, brute_force=4,
                  seeds=(0,), random_label_seeds=(0,), snapshot_counts=(1, 2, 4), noise_splits=3),
}


#: The settings that determine a row of the table, the snapshots and the limits (their fingerprint
#: is the row's ``settings`` column; ``retrain`` is added to it).
RUN_SETTINGS = ("n_train", "n_test", "task", "width", "channels", "lr", "steps", "snapshots", "brute_force")
#: The settings that determine a row of the noise floor.
NOISE_SETTINGS = ("n_train", "n_test", "task", "width", "channels", "lr", "steps", "noise_splits")


def scale_config(scale="default"):
    """The settings of :data:`SCALES` for ``scale`` (``"default"``, ``"paper"`` or ``"smoke"``)."""
    return tasks.scale_config(SCALES, scale)


def _fingerprint(setting, names, **more):
    return fingerprint({**{k: setting[k] for k in names}, **more})


def _loss(rho, n):
    return 0.5 * float(np.sum(np.asarray(rho) ** 2)) / n


def snapshot_rows(prediction, counts):
    """The prediction of one run recomputed from fewer kernel snapshots, one row per count ``M`` in ``counts``.

    ``prediction`` is a :class:`gramlib.predict.Prediction`; each row holds ``snapshots = M``,
    ``predicted`` (two-time kernel) and ``one_time`` (one-time kernel), the leave-one-out
    losses ``(1/2n) Σ_i ‖ρ_i‖²`` of :func:`gramlib.predict.trajectory_loo` with every
    ``(K/M)``-th snapshot, the held-out loss and both relative errors (Chapter 7, Limits).
    """
    rows = []
    for k in counts:
        pred = _loss(trajectory_loo(prediction.run, k, cross=prediction.cross), prediction.run.n)
        one = _loss(trajectory_loo(prediction.run, k), prediction.run.n)
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


def noise_floor(name, setting, *, splits, arch="mlp", model=None, first_seed=1000):
    """The sampling noise of leave-one-out on data set ``name``: ``splits`` fresh splits and initializations.

    Split ``s`` (seed ``first_seed + s``) draws its data and initialization from
    ``PRNGKey(seed)``; :func:`gramlib.predict.frozen_kernel_losses` gives the exact
    leave-one-out loss and the held-out loss of the linearized network after gradient flow
    for ``time = η T`` (``setting["lr"] · setting["steps"]``). ``model`` defaults to the
    ``arch`` network of ``setting`` (:func:`gramlib.experiments.tasks.architecture`, float64).
    Returns a :class:`NoiseFloor` (Chapter 7, "How close can a leave-one-out estimate be?").
    """
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    pairs = []
    for seed in range(first_seed, first_seed + splits):
        k_data, k_run = jax.random.split(jax.random.PRNGKey(seed))
        ds, shape = tasks.dataset(name, setting["n_train"], setting["n_test"], key=k_data, task=setting["task"])
        if model is None:
            model = tasks.architecture(arch, shape, tasks.outputs(ds), setting, np.float64)
        pairs.append(frozen_kernel_losses(model, ds, key=k_run, time=setting["lr"] * setting["steps"]))
    loo, held = np.array(pairs).T
    return NoiseFloor(loo, held, np.abs(loo - held) / held)


def _restrict(setting, scale, archs, datasets, seeds):
    archs = tuple(archs)
    if not archs or set(archs) - {"mlp", "cnn"}:
        raise ValueError(f"archs must be a non-empty subset of ('mlp', 'cnn'), got {archs}")
    for option, value, keys in (("datasets", datasets, ("datasets",)),
                                ("seeds", seeds, ("seeds", "random_label_seeds"))):
        if value is None:
            continue
        allowed = sorted(set().union(*(setting[k] for k in keys)))
        if not value or set(value) - set(allowed):
            raise ValueError(f"{option} must be a non-empty subset of {allowed} at scale {scale!r}, got {value}")
        for k in keys:
            setting[k] = tuple(v for v in setting[k] if v in set(value))
    return setting, archs


def _output_folder(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


@in_float64
def reproduce_ch7(out_dir="results", scale="default", *, archs=("mlp", "cnn"), datasets=None, seeds=None,
                  retrain=True, progress=True, command=None):
    """Regenerate Chapter 7's tables (CSV) and figures (PNG) under ``out_dir``, resumably.

    ``ch7_table.csv``: one row per run (data set, architecture, true or random
    labels, seed) with the prediction, the held-out loss and every baseline;
    ``ch7_summary.csv``: per cell, the means over seeds and the mean relative
    errors; ``ch7_snapshots.csv``: the prediction with fewer kernel
    snapshots (:func:`snapshot_rows`); ``ch7_predicted_vs_heldout.png`` and ``ch7_snapshots.png``.
    ``archs``, ``datasets`` and ``seeds`` restrict the runs to those
    architectures, data sets and seeds (``None``: all of the scale's; a
    random-label run is kept if its seed is kept); ``retrain=False`` skips the
    brute-force retraining but still reports the predictions on the subsets it
    would retrain (their ``brute_force`` and ``correlation`` are then empty).
    Each row records its ``settings`` fingerprint and :func:`gramlib.results.provenance`
    (``command``: the command line to record, default this process's); a run already in
    the table with the same settings is not computed again, and every finished run is
    written at once. Runs in float64 (the caller's setting is restored). Returns the
    summary rows. The limits are :func:`reproduce_ch7_limits`.
    """
    setting, archs = _restrict(scale_config(scale), scale, archs, datasets, seeds)
    out = _output_folder(out_dir)
    settings = _fingerprint(setting, RUN_SETTINGS, retrain=bool(retrain))
    extra = provenance(command)
    table = ResultTable(out / "ch7_table.csv", ("dataset", "arch", "labels", "seed", "settings"))
    snaps = ResultTable(out / "ch7_snapshots.csv", ("dataset", "arch", "seed", "snapshots", "settings"))
    keys = [{"dataset": name, "arch": arch, "labels": labels, "seed": seed, "settings": settings}
            for name in setting["datasets"] for arch in archs
            for labels, seeds in (("true", setting["seeds"]), ("random", setting["random_label_seeds"]))
            for seed in seeds]
    model_of = {}  # one model object per cell, so that compiled code is reused across seeds

    def compute(key):
        name, arch, labels, seed = key["dataset"], key["arch"], key["labels"], key["seed"]
        k_data, k_run, k_labels = jax.random.split(jax.random.PRNGKey(seed), 3)
        ds, shape = tasks.dataset(name, setting["n_train"], setting["n_test"], key=k_data, task=setting["task"])
        if labels == "random":
            ds = data.random_labels(ds, key=k_labels)
        if (name, arch) not in model_of:
            model_of[name, arch] = tasks.architecture(arch, shape, tasks.outputs(ds), setting, np.float64)
        model = model_of[name, arch]
        loop = recommended_loop(model.apply, model.init(k_run), ds.x_train)  # per_step: a CNN on the CPU
        start = time.time()
        p = predict_test_loss(model, ds, key=k_run, lr=setting["lr"], steps=setting["steps"],
                              snapshots=setting["snapshots"], brute_force=setting["brute_force"],
                              retrain=retrain, loop=loop, progress=progress)
        seconds = time.time() - start
        if labels == "true":  # the snapshot rows first: a run counts as done once its table row is written
            for row in snapshot_rows(p, setting["snapshot_counts"]):
                snaps.put({"dataset": name, "arch": arch, "seed": seed, **row, "settings": settings, **extra})
        if progress:
            print(f"{name:8s} {arch} {labels:6s} seed {seed}: predicted {p.predicted:.4f} held-out "
                  f"{p.held_out:.4f} GCV {p.gcv:.4f} corr {p.correlation:.4f} ({seconds:.0f} s)", flush=True)
        return {**p.row(), "loop": loop, "seconds": seconds}

    rows = run_job(table, keys, compute, extra=extra)
    true_runs = {(k["dataset"], k["arch"], k["seed"]) for k in keys if k["labels"] == "true"}
    snap_rows = [s for s in snaps.rows if s.get("settings") == settings
                 and (s["dataset"], s["arch"], s["seed"]) in true_runs
                 and s["snapshots"] in setting["snapshot_counts"]]
    summary = [{**c, "settings": settings, **extra} for c in summarize(rows)]
    write_csv(out / "ch7_summary.csv", summary)
    figures(rows, snap_rows, out)
    return summary


@in_float64
def reproduce_ch7_limits(out_dir="results", scale="default", *, retrain=True, progress=True, command=None):
    """Chapter 7's limits: a 4-layer ReLU MLP on the digits at ``η/2, η, 2η`` (strong feature learning).

    Writes ``ch7_limits.csv``: per learning rate, the prediction (two-time and
    one-time), the held-out loss, every baseline, and on the retrained subset
    the mean of ``|ρ_i^pred| / |ρ_i^brute|`` for both recursions (empty with
    ``retrain=False``, which skips the retraining, as in :func:`reproduce_ch7`).
    The retraining is a GPU job: the deep network has 17 times the parameters
    of the table's MLP. Resumable and with provenance like :func:`reproduce_ch7`.
    Returns the rows.
    """
    setting = scale_config(scale)
    if setting["task"] != "parity":
        raise ValueError(f"the limits run on the digits' parity task; scale {scale!r} has task {setting['task']!r}")
    out = _output_folder(out_dir)
    settings = _fingerprint(setting, RUN_SETTINGS, retrain=bool(retrain))
    ds, shape = tasks.dataset("digits", setting["n_train"], setting["n_test"], key=jax.random.PRNGKey(0))
    deep = tasks.architecture_deep_relu(shape, setting, np.float64)

    def compute(key):
        try:
            p = predict_test_loss(deep, ds, key=jax.random.PRNGKey(1), lr=key["lr"], steps=setting["steps"],
                                  snapshots=setting["snapshots"], brute_force=setting["brute_force"],
                                  retrain=retrain, progress=progress)
        except FloatingPointError:
            return {"diverged": True}
        bf = np.abs(p.brute_force_loo) if len(p.brute_force_loo) else np.nan
        return {"diverged": False, **p.row(),
                "loo_ratio_to_brute_force": float(np.mean(np.abs(p.loo[p.subset]) / bf)),
                "one_time_ratio_to_brute_force": float(np.mean(np.abs(p.one_time_loo[p.subset]) / bf))}

    keys = [{"dataset": "digits", "arch": "mlp4-relu", "lr": lr, "settings": settings}
            for lr in (setting["lr"] / 2, setting["lr"], 2 * setting["lr"])]
    table = ResultTable(out / "ch7_limits.csv", ("dataset", "arch", "lr", "settings"))
    return run_job(table, keys, compute, extra=provenance(command))


@in_float64
def reproduce_ch7_noise(out_dir="results", scale="default", *, archs=("mlp", "cnn"), progress=True, command=None):
    """The sampling noise of leave-one-out at the scale of Chapter 7's table: ``ch7_noise.csv``.

    For each data set and architecture, :func:`noise_floor` over ``noise_splits``
    fresh splits (seeds 1000, 1001, …, disjoint from the table's). One row
    per cell: the means of the exact leave-one-out and held-out losses, the mean, median
    and 90th percentile of ``|LOO − held-out| / held-out``, and the share of splits above
    10%. Resumable and with provenance like :func:`reproduce_ch7`. Returns the rows.
    """
    setting = scale_config(scale)
    setting, archs = _restrict(setting, scale, archs, None, None)
    out = _output_folder(out_dir)
    settings = _fingerprint(setting, NOISE_SETTINGS)

    def compute(key):
        f = noise_floor(key["dataset"], setting, splits=setting["noise_splits"], arch=key["arch"])
        return {"splits": len(f.loo), "loo": float(f.loo.mean()), "held_out": float(f.held_out.mean()),
                "mean_relative_error": float(f.relative.mean()),
                "median_relative_error": float(np.median(f.relative)),
                "p90_relative_error": float(np.quantile(f.relative, 0.9)),
                "share_above_10pct": float(np.mean(f.relative > 0.10))}

    keys = [{"dataset": name, "arch": arch, "settings": settings} for name in setting["datasets"] for arch in archs]
    table = ResultTable(out / "ch7_noise.csv", ("dataset", "arch", "settings"))
    return run_job(table, tqdm(keys, desc="noise floor", disable=not progress), compute,
                   extra=provenance(command))


def summarize(rows):
    """Per (data set, architecture): means over seeds of the true-label runs, and the random-label means."""
    cells = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for arch in ("mlp", "cnn"):
            true = [r for r in rows if (r["dataset"], r["arch"], r["labels"]) == (name, arch, "true")]
            rand = [r for r in rows if (r["dataset"], r["arch"], r["labels"]) == (name, arch, "random")]
            if not true:
                continue
            mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else float("nan")  # noqa: E731
            cells.append({
                "dataset": name, "arch": arch, "runs": len(true),
                "predicted": mean(true, "predicted"), "held_out": mean(true, "held_out"),
                "relative_error": mean(true, "relative_error"), "one_time": mean(true, "one_time"),
                "one_time_relative_error": mean(true, "one_time_relative_error"), "gcv": mean(true, "gcv"),
                "gcv_relative_error": mean(true, "gcv_relative_error"),
                "linearized": mean(true, "linearized"), "ntk_bound": mean(true, "ntk_bound"),
                "contraction_free": mean(true, "contraction_free"), "brute_force": mean(true, "brute_force"),
                "predicted_on_subset": mean(true, "predicted_on_subset"),
                "min_correlation": float(np.min([r["correlation"] for r in true])),
                "random_predicted": mean(rand, "predicted"), "random_held_out": mean(rand, "held_out"),
            })
    return cells


def figures(rows, snaps, out):
    """``ch7_predicted_vs_heldout.png`` (all runs, with the diagonal) and ``ch7_snapshots.png``."""
    fig, ax = plotting.figure(1, height=4.2)
    plot_predicted_vs_heldout(ax, rows)
    fig.savefig(out / "ch7_predicted_vs_heldout.png")
    plt.close(fig)
    if snaps:
        fig, ax = plotting.figure(1, height=3.4)
        plot_snapshot_error(ax, snaps)
        fig.savefig(out / "ch7_snapshots.png")
        plt.close(fig)
