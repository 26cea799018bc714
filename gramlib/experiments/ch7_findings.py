"""Chapter 7's committed results: merging the result folders, and the findings read from them.

The table of Chapter 7 was computed in four folders of ``results/`` (``results/README.md``
says which command made which): the MLP cells with retrained twins (``results/``), the CNN
cells without retraining (``no-retrain/``), the teacher CNN of seed 0 retrained on the CPU
(``cnn-retrained/``) and every cell with the one-time kernel and retrained twins on a GPU
(``gpu-one-time/``). :func:`committed_table` merges them, after checking that the runs are
the same; :func:`committed_limits` does the same for the limits; :func:`twin_errors` and
:func:`findings` compute the comparisons the chapter states.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .ch7 import summarize
from .results import read_table

#: Two copies of a run agree when the numbers they share differ by at most this, relatively.
SAME_RUN_RTOL = 1e-6
#: The data sets of the committed table, in the chapter's order.
DATASETS = ("digits", "mnist1d", "teacher")


def run_key(row):
    """``(dataset, arch, labels, seed)``: the run a row of a table belongs to."""
    return row["dataset"], row["arch"], row["labels"], row["seed"]


def _same_run(what, run, mine, theirs, folder):
    """One check that two folders hold the same run: ``mine`` against the GPU's ``theirs``, to :data:`SAME_RUN_RTOL`."""
    gap = abs(mine - theirs)
    if not gap <= SAME_RUN_RTOL * abs(theirs):
        raise ValueError(f"not the same run: {' '.join(map(str, run))}: {what} is {mine!r} in {folder} but "
                         f"{theirs!r} in gpu-one-time/ (relative difference {gap / abs(theirs):.2e}, "
                         f"at most {SAME_RUN_RTOL:g} allowed)")
    return f"{' '.join(map(str, run))}: {what} {mine:.10g} in {folder}, {theirs:.10g} on the GPU " \
           f"(relative difference {gap / abs(theirs):.1e})"


class CommittedTable(NamedTuple):
    """Chapter 7's table, merged from the committed result folders.

    ``rows``: the runs of ``results/ch7_table.csv`` and ``no-retrain/ch7_table.csv`` with
    ``brute_force`` and ``one_time_on_subset`` taken from the GPU run; ``summary``: their
    per-cell means (:func:`gramlib.ch7.summarize`); ``gpu``: the GPU rows by
    :func:`run_key`; ``cnn_retrained``: the CNN runs retrained on the CPU; ``checks``: one
    line per check that two folders hold the same run.
    """

    rows: list
    summary: list
    gpu: dict
    cnn_retrained: list
    checks: list


def committed_table(results_dir):
    """Merge Chapter 7's result folders under ``results_dir`` into one table (:class:`CommittedTable`).

    Before a number is taken from ``gpu-one-time/``, the run is checked to be the same one:
    a run retrained on the CPU must have the GPU's retrained leave-one-out loss
    (``brute_force``), a run without retraining its one-time prediction on the retrained
    subset (``one_time_on_subset`` against the GPU's ``predicted_on_subset``, which was the
    one-time recursion), both to :data:`SAME_RUN_RTOL`. The merged rows then carry the GPU's
    ``brute_force`` and one-time ``predicted_on_subset`` (as ``one_time_on_subset``).
    Raises ``ValueError`` when a run is missing from the GPU files or differs.
    """
    root = Path(results_dir)
    gpu = {run_key(r): r for r in read_table(root / "gpu-one-time" / "ch7_table.csv")}
    rows, checks = [], []

    def gpu_row(r, folder):
        if run_key(r) not in gpu:
            raise ValueError(f"the run {' '.join(map(str, run_key(r)))} of {folder} is not in gpu-one-time/")
        return gpu[run_key(r)]

    for folder in ("results/", "no-retrain/"):
        for r in read_table(root / folder.replace("results/", "") / "ch7_table.csv"):
            g = gpu_row(r, folder)
            if math.isnan(r["brute_force"]):
                checks.append(_same_run("one-time prediction on the retrained subset", run_key(r),
                                        r["one_time_on_subset"], g["predicted_on_subset"], folder))
            else:
                checks.append(_same_run("retrained leave-one-out loss", run_key(r), r["brute_force"],
                                        g["brute_force"], folder))
            rows.append({**r, "brute_force": g["brute_force"], "one_time_on_subset": g["predicted_on_subset"]})
    cnn = read_table(root / "cnn-retrained" / "ch7_table.csv")
    for r in cnn:
        checks.append(_same_run("retrained leave-one-out loss", run_key(r), r["brute_force"],
                                gpu_row(r, "cnn-retrained/")["brute_force"], "cnn-retrained/"))
    return CommittedTable(rows, summarize(rows), gpu, cnn, checks)


def committed_limits(results_dir):
    """Chapter 7's limits from ``no-retrain/`` (both recursions) and ``gpu-one-time/`` (retrained twins).

    The two files must hold the same runs: the same learning rates and the same one-time
    prediction on the retrained subset (to :data:`SAME_RUN_RTOL`). Returns ``(rows,
    checks)``; a row per learning rate holds ``lr``, ``held_out``, ``predicted``,
    ``one_time``, the twins' loss ``bf``, the relative errors ``two_err`` and ``one_err`` of
    both recursions on the subset against the twins, and ``bf_held = bf / held_out``.
    """
    root = Path(results_dir)
    gpu = read_table(root / "gpu-one-time" / "ch7_limits.csv")
    cpu = read_table(root / "no-retrain" / "ch7_limits.csv")
    if [r["lr"] for r in cpu] != [g["lr"] for g in gpu]:
        raise ValueError(f"not the same runs: learning rates {[r['lr'] for r in cpu]} in no-retrain/ but "
                         f"{[g['lr'] for g in gpu]} in gpu-one-time/")
    rows, checks = [], []
    for r, g in zip(cpu, gpu):
        checks.append(_same_run("one-time prediction on the retrained subset", ("digits", "mlp4-relu", r["lr"]),
                                r["one_time_on_subset"], g["predicted_on_subset"], "no-retrain/"))
        bf, two, one = g["brute_force"], r["predicted_on_subset"], g["predicted_on_subset"]
        rows.append({"lr": r["lr"], "held_out": r["held_out"], "predicted": r["predicted"], "one_time": r["one_time"],
                     "bf": bf, "two_err": (two - bf) / bf, "one_err": (one - bf) / bf, "bf_held": bf / r["held_out"]})
    return rows, checks


class TwinErrors(NamedTuple):
    """Both recursions against the retrained twins, run by run.

    ``errors[arch, recursion]`` (``recursion``: ``"two-time"`` or ``"one-time"``) is the
    array of ``(L̂_subset − L_twins) / L_twins`` over the runs of that architecture;
    ``rows`` has per run ``run``, the twins' loss ``bf``, ``two``, ``one`` and their
    relative errors ``two_err``, ``one_err``.
    """

    errors: dict
    rows: list


def twin_errors(rows):
    """The leave-one-out loss of both recursions on each run's retrained subset, against the twins."""
    errors = {(arch, name): [] for arch in ("mlp", "cnn") for name in ("two-time", "one-time")}
    twin_rows = []
    for r in rows:
        bf, two, one = r["brute_force"], r["predicted_on_subset"], r["one_time_on_subset"]
        errors[r["arch"], "two-time"].append((two - bf) / bf)
        errors[r["arch"], "one-time"].append((one - bf) / bf)
        twin_rows.append({"run": " ".join(str(v) for v in run_key(r)), "bf": bf, "two": two,
                          "two_err": (two - bf) / bf, "one": one, "one_err": (one - bf) / bf})
    return TwinErrors({key: np.array(v) for key, v in errors.items()}, twin_rows)


class Findings(NamedTuple):
    """The comparisons Chapter 7 states about its table (cells are ``(dataset, arch)``).

    Against the twins: ``twin_errors`` (:class:`TwinErrors`), ``worst_cell`` and its mean
    miss ``worst_cell_miss``, the lowest per-sample correlation of an MLP run
    ``mlp_correlation``, ``cnn_retrained`` (``(labels, correlation)`` of the CNN runs
    retrained on the CPU) and ``recursion_gap[arch]`` (mean ``|one-time − two-time|``
    error). Against the held-out loss: ``error[cell]`` (the prediction's mean relative
    error), ``floor[cell]`` (exact leave-one-out's, ``ch7_noise.csv``), ``at_floor`` and
    ``under_10`` (cells at or below their floor, below 10%), ``teacher_cnn`` (its relative
    error, its twins' and its prediction's offsets ``twins_to_held``, ``prediction_to_twins``),
    ``one_time_closer`` / ``one_time_closer_below`` / ``true_runs`` (counts of runs).
    GCV: ``gcv_error[cell]`` and ``gcv_worse`` (cells where GCV errs more). Random labels:
    ``random_fold[dataset]`` (random/true prediction and held-out ratios) and
    ``true_held[dataset]`` (the true-label held-out losses).
    """

    twin_errors: TwinErrors
    worst_cell: tuple
    worst_cell_miss: float
    mlp_correlation: float
    cnn_retrained: list
    recursion_gap: dict
    error: dict
    floor: dict
    at_floor: list
    under_10: list
    teacher_cnn: dict
    one_time_closer: int
    one_time_closer_below: int
    true_runs: int
    gcv_error: dict
    gcv_worse: list
    random_fold: dict
    true_held: dict


def findings(committed, noise):
    """Every comparison Chapter 7 states, from a :class:`CommittedTable` and the rows of ``ch7_noise.csv``."""
    table, cells = committed.rows, {(c["dataset"], c["arch"]): c for c in committed.summary}
    e = twin_errors(table)
    by_cell = {}
    for r in table:
        by_cell.setdefault((r["dataset"], r["arch"]), []).append(r["predicted_on_subset"] / r["brute_force"] - 1)
    worst = max(by_cell, key=lambda k: abs(np.mean(by_cell[k])))
    floor = {(r["dataset"], r["arch"]): r["mean_relative_error"] for r in noise}
    error = {k: c["relative_error"] for k, c in cells.items()}
    tc = cells["teacher", "cnn"]
    true = [r for r in table if r["labels"] == "true"]
    closer = [r for r in true if abs(r["one_time"] - r["held_out"]) < abs(r["predicted"] - r["held_out"])]
    up = {k: (c["random_predicted"] / c["predicted"], c["random_held_out"] / c["held_out"]) for k, c in cells.items()}
    return Findings(
        twin_errors=e, worst_cell=worst, worst_cell_miss=float(np.mean(by_cell[worst])),
        mlp_correlation=min(r["correlation"] for r in table if r["arch"] == "mlp"),
        cnn_retrained=[(r["labels"], r["correlation"]) for r in committed.cnn_retrained],
        recursion_gap={arch: float(np.abs(e.errors[arch, "one-time"] - e.errors[arch, "two-time"]).mean())
                       for arch in ("mlp", "cnn")},
        error=error, floor=floor, at_floor=[k for k in cells if error[k] <= floor[k]],
        under_10=[k for k in cells if error[k] < 0.10],
        teacher_cnn={"relative_error": tc["relative_error"], "twins_to_held": tc["brute_force"] / tc["held_out"] - 1,
                     "prediction_to_twins": float(np.mean([r["predicted_on_subset"] / r["brute_force"] - 1
                                                           for r in true if run_key(r)[:2] == ("teacher", "cnn")])),
                     "largest": tc["relative_error"] == max(error.values())},
        one_time_closer=len(closer),
        one_time_closer_below=sum(r["one_time"] < r["predicted"] and r["predicted"] > r["held_out"] for r in closer),
        true_runs=len(true),
        gcv_error={k: c["gcv_relative_error"] for k, c in cells.items()},
        gcv_worse=[k for k in cells if error[k] < cells[k]["gcv_relative_error"]],
        random_fold={name: [v for k, pair in up.items() if k[0] == name for v in pair] for name in DATASETS},
        true_held={name: [r["held_out"] for r in true if r["dataset"] == name] for name in DATASETS},
    )


class SnapshotConvergence(NamedTuple):
    """How the prediction of each run converges as the number of kernel snapshots ``M`` grows.

    ``counts``: the ``M`` of ``ch7_snapshots.csv``, ascending (first, ..., ``m_a``, ``m_b``,
    ``m_last``); ``rise[arch, key]``: per run of that architecture, the relative rise of
    ``key`` (``"predicted"``: two-time, ``"one_time"``) from the first to the last ``M``;
    ``last_rise``: per run, the two-time rise from ``m_b`` to ``m_last``; ``law``: the ratio
    of the last two rises for an error ``c/M``, ``(1/m_a − 1/m_b) / (1/m_b − 1/m_last)``;
    ``measured``: that ratio per run; ``left``: per run, ``c/m_last`` relative to the
    prediction at ``m_last``, what ``M = m_last`` still misses under the ``c/M`` law;
    ``monotone``: whether both predictions rise with ``M`` in every run.
    """

    counts: list
    rise: dict
    last_rise: list
    law: float
    measured: list
    left: list
    monotone: bool


def snapshot_convergence(snaps):
    """:class:`SnapshotConvergence` of the rows of ``ch7_snapshots.csv`` (at least three counts ``M`` per run)."""
    by_run = {}
    for s in snaps:
        by_run.setdefault((s["dataset"], s["arch"], s["seed"]), {})[s["snapshots"]] = s
    counts = sorted({s["snapshots"] for s in snaps})
    if len(counts) < 3:
        raise ValueError(f"the snapshot rows need at least three counts M, got {counts}")
    m_first, m_a, m_b, m_last = counts[0], counts[-3], counts[-2], counts[-1]
    rise = {(arch, key): [d[m_last][key] / d[m_first][key] - 1 for (_, a, _), d in by_run.items() if a == arch]
            for arch in ("mlp", "cnn") for key in ("predicted", "one_time")}
    return SnapshotConvergence(
        counts=counts, rise=rise,
        last_rise=[d[m_last]["predicted"] / d[m_b]["predicted"] - 1 for d in by_run.values()],
        law=(1 / m_a - 1 / m_b) / (1 / m_b - 1 / m_last),
        measured=[(d[m_b]["predicted"] - d[m_a]["predicted"]) / (d[m_last]["predicted"] - d[m_b]["predicted"])
                  for d in by_run.values()],
        left=[(d[m_last]["predicted"] - d[m_b]["predicted"]) / (1 / m_b - 1 / m_last) / m_last
              / d[m_last]["predicted"] for d in by_run.values()],
        monotone=all(d[a][key] < d[b][key] for d in by_run.values() for key in ("predicted", "one_time")
                     for a, b in zip(counts, counts[1:])))
