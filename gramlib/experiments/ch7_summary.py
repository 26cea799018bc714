"""Chapter 7's table summarized per cell, and its figures (``reproduce ch7`` writes both; the chapter reads them).

:func:`summarize` turns the rows of ``ch7_table.csv`` into one row per cell (the prediction's signed
error over the splits with its interval, the noise floor, the baselines, the retrained twins);
:func:`summarize_centering` does the same for ``ch7_centering.csv``; :func:`figures` draws the table's two
figures. :mod:`gramlib.experiments.ch7_findings` reads the committed folder through them.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from ..mathematics.gap import interval
from ..views import plotting
from ..views.figures import plot_predicted_vs_heldout, plot_snapshot_error


def _signed(rows, estimate, reference):
    """``(estimate − reference) / reference`` per row, as an array."""
    return np.array([r[estimate] / r[reference] - 1 for r in rows])


def _mean_and_half(values):
    """The mean of ``values`` and the half-width of its 95% Student-t interval (``nan`` with fewer than 2 values)."""
    if len(values) < 2:
        return (float(np.mean(values)) if len(values) else math.nan), math.nan
    est = interval(np.asarray(values, dtype=float), student=True)
    return float(est.mean), float(est.half_width)


def summarize(rows):
    """Per cell (data set, architecture): Chapter 7's protocol over the cell's splits.

    Over the true-label runs (``splits``): the mean held-out and predicted losses; the
    prediction's signed relative error ``(L̂ − L_test)/L_test`` (``error``, with the
    half-width ``error_half`` of its 95% Student-t interval over the splits, :func:`gramlib.gap.interval`) and its mean
    absolute value (``abs_error``); the same for the exact leave-one-out of the linearized
    network on the same splits against its own held-out loss (``floor``, ``floor_half``,
    ``abs_floor``), for the one-time kernel (``one_time_error``), GCV (``gcv_error``) and the
    linearized network's LOO (``linearized_error``), each against the run's held-out loss. On
    the retrained runs (``retrained``): the prediction on the twins' subset against the twins,
    ``(L̂_subset − L_twins)/L_twins``, signed (``twin_error``, ``twin_error_half``) and absolute
    (``twin_abs_error``), the one-time kernel's (``one_time_twin_error``) and the lowest
    per-sample correlation (``min_correlation``); the same for the twins read out through the
    network (``readout_twin_error``) and re-linearized at every snapshot
    (``relinearized_twin_error``, ``relinearized_twin_error_half``,
    ``min_relinearized_correlation``; :func:`gramlib.experiments.ch7.twin_columns`), and the smallest ratio of the
    seconds of the retraining to those of the re-linearization (``relinearized_speedup``). Random labels: the mean held-out and predicted
    losses and ``learned``, the random-label held-out loss over the true one.
    """
    cells = []
    for name, arch in dict.fromkeys((r["dataset"], r["arch"]) for r in rows):
        true = [r for r in rows if (r["dataset"], r["arch"], r["labels"]) == (name, arch, "true")]
        rand = [r for r in rows if (r["dataset"], r["arch"], r["labels"]) == (name, arch, "random")]
        twins = [r for r in true if not math.isnan(r["brute_force"])]
        if not true:
            continue
        error, floor = _signed(true, "predicted", "held_out"), _signed(true, "exact_loo", "linearized_held_out")
        twin = _signed(twins, "predicted_on_subset", "brute_force")
        mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else math.nan  # noqa: E731
        cell = {"dataset": name, "arch": arch, "splits": len(true),
                "held_out": mean(true, "held_out"), "predicted": mean(true, "predicted")}
        cell["error"], cell["error_half"] = _mean_and_half(error)
        cell["abs_error"] = float(np.mean(np.abs(error)))
        cell["floor"], cell["floor_half"] = _mean_and_half(floor)
        cell["abs_floor"] = float(np.mean(np.abs(floor)))
        for key, column in (("one_time_error", "one_time"), ("gcv_error", "gcv"), ("linearized_error", "linearized")):
            cell[key] = float(np.mean(_signed(true, column, "held_out")))
        cell["retrained"] = len(twins)
        cell["twin_error"], cell["twin_error_half"] = _mean_and_half(twin)
        cell["twin_abs_error"] = float(np.mean(np.abs(twin))) if len(twins) else math.nan
        cell["one_time_twin_error"] = (float(np.mean(_signed(twins, "one_time_on_subset", "brute_force")))
                                       if twins else math.nan)
        cell["min_correlation"] = float(np.min([r["correlation"] for r in twins])) if twins else math.nan
        cell["readout_twin_error"] = float(np.mean(_signed(twins, "readout_on_subset", "brute_force"))) \
            if twins else math.nan
        cell["relinearized_twin_error"], cell["relinearized_twin_error_half"] = _mean_and_half(
            _signed(twins, "relinearized_on_subset", "brute_force"))
        cell["min_relinearized_correlation"] = (float(np.min([r["relinearized_correlation"] for r in twins]))
                                                if twins else math.nan)
        cell["relinearized_speedup"] = (float(np.min([r["retrain_seconds"] / r["relinearized_seconds"]
                                                      for r in twins])) if twins else math.nan)
        cell["random_held_out"], cell["random_predicted"] = mean(rand, "held_out"), mean(rand, "predicted")
        cell["learned"] = cell["random_held_out"] / cell["held_out"]
        cells.append(cell)
    return cells


def summarize_centering(rows, centering):
    """Per re-centered cell: the noise floor and the prediction with the table's centering and re-centered.

    ``rows``: the table's rows; ``centering``: the rows of ``ch7_centering.csv``. On the splits
    that have both, mean and 95% Student-t half-width of signed errors ``(estimate − held-out)/held-out``:
    of the exact leave-one-out of the linearized network with the inputs centered by the training
    mean (``floor``, ``floor_half``: the table's ``exact_loo``, ``linearized_held_out``) and by the
    held-out mean (``recentered``, ``recentered_half``), and of the prediction of the trained
    network, the same two ways (``error``, ``error_half``: the table's ``predicted``, ``held_out``;
    ``recentered_error``, ``recentered_error_half``); all from :func:`gramlib.experiments.ch7.recentered_run`.
    """
    table = {(r["dataset"], r["seed"], r["settings"]): r for r in rows
             if r["arch"] == "mlp" and r["labels"] == "true"}
    cells = []
    for name in dict.fromkeys(c["dataset"] for c in centering):
        pairs = [(table[c["dataset"], c["seed"], c["settings"]], c) for c in centering
                 if c["dataset"] == name and (c["dataset"], c["seed"], c["settings"]) in table]
        if not pairs:
            continue
        cell = {"dataset": name, "splits": len(pairs)}
        ours, recentered = [t for t, _ in pairs], [c for _, c in pairs]
        for prefix, sources, estimate, reference in (
                ("floor", ours, "exact_loo", "linearized_held_out"),
                ("recentered", recentered, "exact_loo_recentered", "linearized_held_out_recentered"),
                ("error", ours, "predicted", "held_out"),
                ("recentered_error", recentered, "predicted_recentered", "held_out_recentered")):
            cell[prefix], cell[prefix + "_half"] = _mean_and_half(_signed(sources, estimate, reference))
        cells.append(cell)
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
