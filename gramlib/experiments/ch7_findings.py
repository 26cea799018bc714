"""Chapter 7's committed results: the table over many splits, its limits, and the findings read from them.

The table is one folder written by one command, ``python -m gramlib reproduce ch7``
(``results/ch7/``): :func:`protocol_table` reads it, checks that every run is there once and
says where it was computed, and summarizes it per cell (:func:`gramlib.experiments.ch7_summary.summarize`);
:func:`findings` computes the comparisons the chapter states, and :func:`floor_differences` sets the
prediction's error against that of exact leave-one-out split by split. The limits (ReLU networks over
learning rate, width and depth, with retrained twins) are one folder written by
``python -m gramlib reproduce ch7-limits`` (``results/ch7-limits/``), read by :func:`committed_limits`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..mathematics.gap import interval
from .ch7 import limit_runs, scale_config, table_runs
from .ch7_settings import limit_grid
from .ch7_summary import summarize
from .results import read_table

#: The columns of :func:`gramlib.results.provenance` that every committed row must carry.
PROVENANCE = ("command", "platform", "cpu_count", "jax_backend", "device_kind", "commit", "jax_version")


def missing_provenance(row):
    """The columns of :data:`PROVENANCE` that ``row`` lacks or leaves empty (``nan``)."""
    return [c for c in PROVENANCE
            if c not in row or row[c] == "" or (isinstance(row[c], float) and math.isnan(row[c]))]


def run_id(row):
    """``(dataset, arch, labels, seed)``: the run a row of a table belongs to."""
    return row["dataset"], row["arch"], row["labels"], row["seed"]


class ProtocolTable(NamedTuple):
    """Chapter 7's table as committed: ``rows`` (one per run), ``summary`` (per cell,
    :func:`gramlib.experiments.ch7_summary.summarize`), ``snapshots`` (the rows of ``ch7_snapshots.csv``),
    ``machines`` (per ``(dataset, arch)`` cell, the set of ``(device_kind, cpu_count, commit)``
    its rows were computed with) and ``missing`` (per cell, the number of runs of the scale's
    protocol, :func:`gramlib.experiments.ch7.table_runs`, that the table does not hold yet)."""

    rows: list
    summary: list
    snapshots: list
    machines: dict
    missing: dict


def protocol_table(folder, scale="default"):
    """Read the table that ``reproduce ch7`` wrote to ``folder`` at ``scale`` (:class:`ProtocolTable`).

    Raises ``ValueError`` when a row lacks its provenance (:data:`PROVENANCE`), a run appears
    twice (two settings of the same run in one folder: keep one), a row is not a run of the
    scale's protocol with its settings, or a row with retrained twins lacks the re-linearized ones.
    """
    folder = Path(folder)
    rows = read_table(folder / "ch7_table.csv")
    seen = set()
    for r in rows:
        missing = missing_provenance(r)
        if missing:
            raise ValueError(f"the run {' '.join(map(str, run_id(r)))} in {folder} lacks its provenance {missing}")
        if run_id(r) in seen:
            raise ValueError(f"the run {' '.join(map(str, run_id(r)))} appears twice in {folder} "
                             "(two settings of one run); keep one")
        seen.add(run_id(r))
    runs = table_runs(scale_config(scale), ("mlp", "cnn"))  # every seed of the protocol
    protocol = {run_id(run): run["settings"] for run in runs}
    for r in rows:
        if protocol.get(run_id(r)) != r["settings"]:
            raise ValueError(f"the run {' '.join(map(str, run_id(r)))} in {folder} is not a run of the {scale!r} "
                             f"protocol with its settings (settings {r['settings']!r})")
    for r in rows:
        if not math.isnan(r["brute_force"]) and math.isnan(r.get("relinearized_on_subset", math.nan)):
            raise ValueError(f"the run {' '.join(map(str, run_id(r)))} in {folder} has retrained twins but not the "
                             "re-linearized ones (ch7.twin_columns); compute it again")
    order = {run_id(run): i for i, run in enumerate(runs)}
    rows.sort(key=lambda r: order[run_id(r)])  # the protocol's order, whichever process wrote a row first
    missing = {}
    for run in set(protocol) - seen:
        missing[run[:2]] = missing.get(run[:2], 0) + 1
    machines = {}
    for r in rows:
        machines.setdefault((r["dataset"], r["arch"]), set()).add((r["device_kind"], r["cpu_count"], r["commit"]))
    return ProtocolTable(rows, summarize(rows), read_table(folder / "ch7_snapshots.csv"), machines, missing)


def committed_limits(folder, scale="default"):
    """Chapter 7's limits as ``reproduce ch7-limits`` wrote them to ``folder`` (``results/ch7-limits``).

    Raises ``ValueError`` when a row lacks its provenance (:data:`PROVENANCE`) or is not a run
    of :func:`gramlib.experiments.ch7.limit_runs` with its twins retrained, or when a run of
    the grid is missing. Returns one row per run in the grid's order: ``width``, ``depth``,
    ``lr``, ``diverged``, ``held_out``, ``predicted`` (all ``n`` twins), ``one_time``, the twins' loss
    ``bf``, the two-time prediction on the twins' subset ``predicted_on_subset``,
    the relative errors against the twins on their subset of the two-time prediction
    (``two_err``), the one-time prediction (``one_err``) and the first-order twins read out
    through the network (``readout_err``) and re-linearized at every snapshot (``relinearized_err``,
    both :func:`gramlib.predict.twin_readout`), the per-sample correlations ``correlation``
    (two-time), ``readout_correlation`` and ``relinearized_correlation``, ``bf_held = bf / held_out``,
    and the seconds of the retraining and of the re-linearized twins (``retrain_seconds``,
    ``relinearized_seconds``).
    """
    folder = Path(folder)
    net = lambda r: (r["width"], r["depth"], r["lr"], r["settings"])  # noqa: E731
    setting = scale_config(scale)
    limit_grid(setting, scale)  # first: a scale without a limit grid is refused before any file is read
    grid = [net(run) for run in limit_runs(setting, retrain=True)]
    table = read_table(folder / "ch7_limits.csv")
    for r in table:
        missing = missing_provenance(r)
        if missing:
            raise ValueError(f"the limits run {net(r)[:3]} in {folder} lacks its provenance {missing}")
        if net(r) not in grid:
            raise ValueError(f"the limits run {net(r)[:3]} in {folder} is not a run of the {scale!r} grid with "
                             f"retrained twins (settings {r['settings']!r})")
    by_net = {net(r): r for r in table}
    absent = [run[:3] for run in grid if run not in by_net]
    if absent:
        raise ValueError(f"{folder} lacks the limits runs (width, depth, lr) {absent}")
    rows = []
    for run in grid:
        r = by_net[run]
        row = {"width": r["width"], "depth": r["depth"], "lr": r["lr"], "diverged": bool(r["diverged"])}
        if not row["diverged"]:
            bf = r["brute_force"]
            row.update(held_out=r["held_out"], predicted=r["predicted"], one_time=r["one_time"], bf=bf,
                       predicted_on_subset=r["predicted_on_subset"],
                       two_err=r["predicted_on_subset"] / bf - 1, one_err=r["one_time_on_subset"] / bf - 1,
                       readout_err=r["readout_on_subset"] / bf - 1, correlation=r["correlation"],
                       readout_correlation=r["readout_correlation"],
                       relinearized_err=r["relinearized_on_subset"] / bf - 1,
                       relinearized_correlation=r["relinearized_correlation"], bf_held=bf / r["held_out"],
                       retrain_seconds=r["retrain_seconds"], relinearized_seconds=r["relinearized_seconds"])
        rows.append(row)
    return rows


class Findings(NamedTuple):
    """The comparisons Chapter 7 states about its table; every dict is keyed by cell ``(dataset, arch)``.

    Against the held-out loss, for the cells with two splits or more: ``covers[cell]`` (the 95% interval of the prediction's signed
    error contains 0), ``miss[cell]`` (by how much it misses 0: ``|error| − error_half``, 0
    when it covers), and the same for exact leave-one-out of the linearized network on the same
    splits (``floor_covers``, ``floor_miss``); how the two compare split by split is
    :func:`floor_differences`. Against the twins: ``twin_within[cell]`` (``|twin_error| ≤ tolerance``),
    ``lowest_correlation`` over all retrained runs, ``one_time_further`` (cells where the one-time
    kernel is further from the twins than the two-time). Baselines: ``gcv_worse`` (cells where
    GCV's mean signed error is further from 0 than the prediction's). Random labels:
    ``learned[cell]``, the random-label held-out loss over the true one (cells with a random-label run).
    """

    covers: dict
    miss: dict
    floor_covers: dict
    floor_miss: dict
    twin_within: dict
    lowest_correlation: float
    one_time_further: list
    gcv_worse: list
    learned: dict


def _miss(mean, half):
    return max(0.0, abs(mean) - half) if not math.isnan(half) else math.nan


def findings(summary, tolerance=0.03):
    """Every comparison Chapter 7 states, from the per-cell ``summary`` of :func:`protocol_table` (:class:`Findings`)."""
    cells = {(c["dataset"], c["arch"]): c for c in summary}
    twinned = {k: c for k, c in cells.items() if c["retrained"]}
    spread = {k: c for k, c in cells.items() if not math.isnan(c["error_half"])}  # two splits or more
    return Findings(
        covers={k: abs(c["error"]) <= c["error_half"] for k, c in spread.items()},
        miss={k: _miss(c["error"], c["error_half"]) for k, c in spread.items()},
        floor_covers={k: abs(c["floor"]) <= c["floor_half"] for k, c in spread.items()},
        floor_miss={k: _miss(c["floor"], c["floor_half"]) for k, c in spread.items()},
        twin_within={k: abs(c["twin_error"]) <= tolerance for k, c in twinned.items()},
        lowest_correlation=min((c["min_correlation"] for c in twinned.values()), default=math.nan),
        one_time_further=[k for k, c in twinned.items() if abs(c["one_time_twin_error"]) > abs(c["twin_error"])],
        gcv_worse=[k for k, c in cells.items() if abs(c["gcv_error"]) > abs(c["error"])],
        learned={k: c["learned"] for k, c in cells.items() if not math.isnan(c["learned"])},
    )


class PairedDifference(NamedTuple):
    """The prediction's signed error minus that of exact leave-one-out on the same splits (:func:`floor_differences`).

    ``mean`` and ``half`` (the half-width of its 95% Student-t interval over the splits, ``nan``
    with one split) of the per-split difference, ``splits`` their number and ``correlation`` the
    correlation of the two signed errors over the splits (``nan`` with fewer than three).
    """

    mean: float
    half: float
    splits: int
    correlation: float


def floor_differences(rows):
    """Per cell ``(dataset, arch)``: the prediction's error against exact leave-one-out, paired by split.

    ``rows``: the table's rows (:attr:`ProtocolTable.rows`); over the true-label runs of each cell,
    the difference ``(L̂ − L_test)/L_test − (L_loo − L_lin)/L_lin`` per split, where the first term is
    the prediction's signed error against the held-out loss of the trained network (``predicted``,
    ``held_out``) and the second that of the exact leave-one-out of the linearized network against
    its own held-out loss on the same split (``exact_loo``, ``linearized_held_out``: the noise floor).
    Both errors are measured on the same data and tend to move together from split to split, so the
    paired difference tests their difference more sharply than two separate intervals do. Returns
    :class:`PairedDifference` per cell, in the order of the rows.
    """
    out = {}
    for cell in dict.fromkeys((r["dataset"], r["arch"]) for r in rows):
        true = [r for r in rows if (r["dataset"], r["arch"]) == cell and r["labels"] == "true"]
        if not true:
            continue
        error = np.array([r["predicted"] / r["held_out"] - 1 for r in true])
        floor = np.array([r["exact_loo"] / r["linearized_held_out"] - 1 for r in true])
        diff = error - floor
        if len(diff) > 1:
            est = interval(diff, student=True)
            mean, half = float(est.mean), float(est.half_width)
        else:
            mean, half = float(diff[0]), math.nan
        corr = float(np.corrcoef(error, floor)[0, 1]) if len(diff) > 2 else math.nan
        out[cell] = PairedDifference(mean, half, len(diff), corr)
    return out


class SnapshotConvergence(NamedTuple):
    """How the prediction of each run converges as the number of kernel snapshots ``M`` grows.

    ``counts``: the ``M`` of ``ch7_snapshots.csv``, ascending (first, ..., ``m_a``, ``m_b``,
    ``m_last``); ``rise[arch, column]``: per run of that architecture, the relative rise of
    ``column`` (``"predicted"``: two-time, ``"one_time"``) from the first to the last ``M``;
    ``last_rise``: per run, the two-time rise from ``m_b`` to ``m_last``; ``law``: the ratio
    of the last two rises for an error ``c/M``, ``(1/m_a − 1/m_b) / (1/m_b − 1/m_last)``;
    ``measured``: that ratio per run; ``left``: per run, keyed ``(dataset, arch, seed)``, ``c/m_last``
    relative to the prediction at ``m_last``, what ``M = m_last`` still misses under the ``c/M`` law;
    ``monotone``: whether the two-time prediction rises with ``M`` in every run;
    ``two_time_fall`` and ``one_time_fall``: the largest relative fall of the two-time and of the
    one-time prediction from one ``M`` to the next over all runs (0 when it rises everywhere).
    """

    counts: list
    rise: dict
    last_rise: list
    law: float
    measured: list
    left: dict
    monotone: bool
    two_time_fall: float
    one_time_fall: float


def snapshot_convergence(snaps):
    """:class:`SnapshotConvergence` of the rows of ``ch7_snapshots.csv`` (at least three counts ``M`` per run)."""
    by_run = {}
    for s in snaps:
        by_run.setdefault((s["dataset"], s["arch"], s["seed"]), {})[s["snapshots"]] = s
    counts = sorted({s["snapshots"] for s in snaps})
    if len(counts) < 3:
        raise ValueError(f"the snapshot rows need at least three counts M, got {counts}")
    m_first, m_a, m_b, m_last = counts[0], counts[-3], counts[-2], counts[-1]
    def fall(column):
        return max([0.0] + [1 - d[b][column] / d[a][column] for d in by_run.values() for a, b in zip(counts, counts[1:])])

    rise = {(arch, column): [d[m_last][column] / d[m_first][column] - 1 for (_, a, _), d in by_run.items() if a == arch]
            for arch in ("mlp", "cnn") for column in ("predicted", "one_time")}
    return SnapshotConvergence(
        counts=counts, rise=rise,
        last_rise=[d[m_last]["predicted"] / d[m_b]["predicted"] - 1 for d in by_run.values()],
        law=(1 / m_a - 1 / m_b) / (1 / m_b - 1 / m_last),
        measured=[(d[m_b]["predicted"] - d[m_a]["predicted"]) / (d[m_last]["predicted"] - d[m_b]["predicted"])
                  for d in by_run.values()],
        left={run: (d[m_last]["predicted"] - d[m_b]["predicted"]) / (1 / m_b - 1 / m_last) / m_last
              / d[m_last]["predicted"] for run, d in by_run.items()},
        monotone=all(d[a]["predicted"] < d[b]["predicted"] for d in by_run.values() for a, b in zip(counts, counts[1:])),
        two_time_fall=fall("predicted"), one_time_fall=fall("one_time"))
