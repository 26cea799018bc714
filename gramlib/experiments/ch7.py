"""Chapter 7's experiments: the table of predictions, its noise floor and its limits.

The settings (:data:`SCALES`), the data sets and networks of the table, and the
``reproduce`` commands (``python -m gramlib reproduce ch7 | ch7-noise | ch7-limits``)
that write the CSV tables and figures under ``results/``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from ..runs import data, models
from ..runs.predict import frozen_kernel_losses, predict_test_loss, trajectory_loo
from ..views import plotting
from ..views.figures import plot_predicted_vs_heldout, plot_snapshot_error
from .results import write_csv

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


def dataset(name, n_train, n_test, *, key, task="parity"):
    """A Chapter 7 data set by name, with the input shape its CNN needs."""

    if name == "digits":
        return data.digits(n_train, n_test, key=key, task=task), (8, 8, 1)
    if name == "mnist1d":
        return data.mnist1d(n_train, n_test, key=key, task=task), (40, 1)
    if name == "teacher":
        return data.teacher(n_train, n_test, key=key), (32, 1)
    ds = data.images(name, n_train, n_test, key=key, task=task)
    return ds, ((32, 32, 3) if name == "cifar10" else (28, 28, 1))


def architecture(name, input_shape, outputs, setting, dtype):
    """The MLP (2 layers, tanh) or CNN (2 convolutions + readout, tanh) of Chapter 7, NTK parameterization."""

    if name == "mlp":
        return models.mlp(math.prod(input_shape), setting["width"], 2, outputs, dtype=dtype)
    return models.cnn(input_shape, setting["channels"], 3, outputs, dtype=dtype)


def architecture_deep_relu(input_shape, setting, dtype):
    """The strong-feature-learning network of Chapter 7's limits: a 4-layer ReLU MLP."""

    return models.mlp(math.prod(input_shape), setting["width"], 4, 1, activation="relu", dtype=dtype)


def _loss(rho, n):
    return 0.5 * float(np.sum(np.asarray(rho) ** 2)) / n


def _in_float64(fn):
    """Run ``fn`` with JAX's float64 switched on and restore the caller's setting afterwards."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = bool(jax.config.jax_enable_x64)
        jax.config.update("jax_enable_x64", True)
        try:
            return fn(*args, **kwargs)
        finally:
            jax.config.update("jax_enable_x64", before)

    return wrapper


@_in_float64
def reproduce_ch7(out_dir="results", scale="default", *, archs=("mlp", "cnn"), datasets=None, seeds=None,
                  retrain=True, progress=True):
    """Regenerate Chapter 7's tables (CSV) and figures (PNG) under ``out_dir``.

    ``ch7_table.csv``: one row per run (data set, architecture, true or random
    labels, seed) with the prediction, the held-out loss and every baseline;
    ``ch7_summary.csv``: per cell, the means over seeds and the mean relative
    errors; ``ch7_snapshots.csv``: the prediction with fewer kernel
    snapshots; ``ch7_predicted_vs_heldout.png`` and ``ch7_snapshots.png``.
    ``archs``, ``datasets`` and ``seeds`` restrict the runs to those
    architectures, data sets and seeds (``None``: all of the scale's; a
    random-label run is kept if its seed is kept); ``retrain=False`` skips the
    brute-force retraining but still reports the predictions on the subsets it
    would retrain (their ``brute_force`` and ``correlation`` are then empty).
    Runs in float64. Returns the summary rows. The limits are
    :func:`reproduce_ch7_limits`.
    """

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    archs = tuple(archs)
    if not archs or set(archs) - {"mlp", "cnn"}:
        raise ValueError(f"archs must be a non-empty subset of ('mlp', 'cnn'), got {archs}")
    setting = dict(SCALES[scale])
    for option, value, keys in (("datasets", datasets, ("datasets",)),
                                ("seeds", seeds, ("seeds", "random_label_seeds"))):
        if value is None:
            continue
        allowed = sorted(set().union(*(setting[k] for k in keys)))
        if not value or set(value) - set(allowed):
            raise ValueError(f"{option} must be a non-empty subset of {allowed} at scale {scale!r}, got {value}")
        for k in keys:
            setting[k] = tuple(v for v in setting[k] if v in set(value))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.float64
    rows, snaps = [], []
    for name in setting["datasets"]:
        for arch in archs:
            model = None  # one model object per cell, so that compiled code is reused across seeds
            for labels, seeds in (("true", setting["seeds"]), ("random", setting["random_label_seeds"])):
                for seed in seeds:
                    k_data, k_run, k_labels = jax.random.split(jax.random.PRNGKey(seed), 3)
                    ds, shape = dataset(name, setting["n_train"], setting["n_test"], key=k_data,
                                        task=setting["task"])
                    if labels == "random":
                        ds = data.random_labels(ds, key=k_labels)
                    outputs = 1 if ds.y_train.ndim == 1 else ds.y_train.shape[1]
                    if model is None:
                        model = architecture(arch, shape, outputs, setting, dtype)
                    start = time.time()
                    p = predict_test_loss(model, ds, key=k_run, lr=setting["lr"], steps=setting["steps"],
                                          snapshots=setting["snapshots"],
                                          brute_force=setting["brute_force"], retrain=retrain,
                                          progress=progress)
                    row = {"dataset": name, "arch": arch, "labels": labels, "seed": seed, **p.row(),
                           "seconds": time.time() - start}
                    rows.append(row)
                    write_csv(out / "ch7_table.csv", rows)
                    if labels == "true":
                        for k in setting["snapshot_counts"]:
                            pred = _loss(trajectory_loo(p.run, k, cross=p.cross), p.run.n)
                            one = _loss(trajectory_loo(p.run, k), p.run.n)
                            snaps.append({"dataset": name, "arch": arch, "seed": seed, "snapshots": k,
                                          "predicted": pred, "one_time": one, "held_out": p.held_out,
                                          "relative_error": abs(pred - p.held_out) / p.held_out,
                                          "one_time_relative_error": abs(one - p.held_out) / p.held_out})
                        write_csv(out / "ch7_snapshots.csv", snaps)
                    if progress:
                        print(f"{name:8s} {arch} {labels:6s} seed {seed}: predicted {p.predicted:.4f} "
                              f"held-out {p.held_out:.4f} GCV {p.gcv:.4f} corr {p.correlation:.4f} "
                              f"({row['seconds']:.0f} s)", flush=True)
    summary = summarize(rows)
    write_csv(out / "ch7_summary.csv", summary)
    figures(rows, snaps, out)
    return summary


@_in_float64
def reproduce_ch7_limits(out_dir="results", scale="default", *, retrain=True, progress=True):
    """Chapter 7's limits: a 4-layer ReLU MLP on the digits at ``η/2, η, 2η`` (strong feature learning).

    Writes ``ch7_limits.csv``: per learning rate, the prediction (two-time and
    one-time), the held-out loss, every baseline, and on the retrained subset
    the mean of ``|ρ_i^pred| / |ρ_i^brute|`` for both recursions (empty with
    ``retrain=False``, which skips the retraining, as in :func:`reproduce_ch7`).
    The retraining is a GPU job: the deep network has 17 times the parameters
    of the table's MLP. Returns the rows.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    setting = SCALES[scale]
    if setting["task"] != "parity":
        raise ValueError(f"the limits run on the digits' parity task; scale {scale!r} has task {setting['task']!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds, shape = dataset("digits", setting["n_train"], setting["n_test"], key=jax.random.PRNGKey(0))
    deep = architecture_deep_relu(shape, setting, np.float64)
    limits = []
    for lr in (setting["lr"] / 2, setting["lr"], 2 * setting["lr"]):
        try:
            p = predict_test_loss(deep, ds, key=jax.random.PRNGKey(1), lr=lr, steps=setting["steps"],
                                  snapshots=setting["snapshots"], brute_force=setting["brute_force"],
                                  retrain=retrain, progress=progress)
        except FloatingPointError:
            limits.append({"dataset": "digits", "arch": "mlp4-relu", "lr": lr, "diverged": True})
            continue
        bf = np.abs(p.brute_force_loo) if len(p.brute_force_loo) else np.nan
        limits.append({"dataset": "digits", "arch": "mlp4-relu", "lr": lr, "diverged": False, **p.row(),
                       "loo_ratio_to_brute_force": float(np.mean(np.abs(p.loo[p.subset]) / bf)),
                       "one_time_ratio_to_brute_force": float(np.mean(np.abs(p.one_time_loo[p.subset]) / bf))})
        write_csv(out / "ch7_limits.csv", limits)
    return limits


@_in_float64
def reproduce_ch7_noise(out_dir="results", scale="default", *, archs=("mlp", "cnn"), progress=True):
    """The sampling noise of leave-one-out at the scale of Chapter 7's table: ``ch7_noise.csv``.

    For each data set and architecture, ``noise_splits`` fresh splits (seeds
    1000, 1001, …, disjoint from the table's) and initializations: the exact
    leave-one-out loss and the held-out loss of the linearized network
    (:func:`frozen_kernel_losses`, gradient flow for ``time = η T``). One row
    per cell: their means, the mean, median and 90th percentile of
    ``|LOO − held-out| / held-out``, and the share of splits above 10%.
    Returns the rows.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    setting = SCALES[scale]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    cells = [(name, arch) for name in setting["datasets"] for arch in archs]
    for name, arch in tqdm(cells, desc="noise floor", disable=not progress):
        model, pairs = None, []
        for seed in range(1000, 1000 + setting["noise_splits"]):
            k_data, k_run = jax.random.split(jax.random.PRNGKey(seed))
            ds, shape = dataset(name, setting["n_train"], setting["n_test"], key=k_data, task=setting["task"])
            if model is None:
                outputs = 1 if ds.y_train.ndim == 1 else ds.y_train.shape[1]
                model = architecture(arch, shape, outputs, setting, np.float64)
            pairs.append(frozen_kernel_losses(model, ds, key=k_run, time=setting["lr"] * setting["steps"]))
        loo, held = np.array(pairs).T
        rel = np.abs(loo - held) / held
        rows.append({"dataset": name, "arch": arch, "splits": len(loo), "loo": float(loo.mean()),
                     "held_out": float(held.mean()), "mean_relative_error": float(rel.mean()),
                     "median_relative_error": float(np.median(rel)),
                     "p90_relative_error": float(np.quantile(rel, 0.9)),
                     "share_above_10pct": float(np.mean(rel > 0.10))})
        write_csv(out / "ch7_noise.csv", rows)
    return rows


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
