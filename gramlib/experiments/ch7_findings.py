"""Chapter 7's committed results: the table over many splits, its limits, and the findings read from them.

The table is one folder written by one command, ``python -m gramlib reproduce ch7``
(``results/ch7/``): :func:`protocol_table` reads it, checks that every run is there once and
says where it was computed, and summarizes it per cell (:func:`gramlib.experiments.ch7.summarize`);
:func:`findings` computes the comparisons the chapter states. The limits (a deep ReLU network at
three learning rates) were computed in two folders, the predictions on a CPU and the retrained
twins on a GPU: :func:`committed_limits` merges them after checking that the runs are the same.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .ch7 import scale_config, summarize, table_keys
from .results import read_table

#: Two copies of a run agree when the numbers they share differ by at most this, relatively.
SAME_RUN_RTOL = 1e-6
#: The columns of :func:`gramlib.results.provenance` that every committed row must carry.
PROVENANCE = ("command", "platform", "cpu_count", "jax_backend", "device_kind", "commit", "jax_version")


def run_key(row):
    """``(dataset, arch, labels, seed)``: the run a row of a table belongs to."""
    return row["dataset"], row["arch"], row["labels"], row["seed"]


class ProtocolTable(NamedTuple):
    """Chapter 7's table as committed: ``rows`` (one per run), ``summary`` (per cell,
    :func:`gramlib.experiments.ch7.summarize`), ``snapshots`` (the rows of ``ch7_snapshots.csv``),
    ``machines`` (per ``(dataset, arch)`` cell, the set of ``(device_kind, cpu_count, commit)``
    its rows were computed with) and ``missing`` (per cell, the number of runs of the scale's
    protocol, :func:`gramlib.experiments.ch7.table_keys`, that the table does not hold yet)."""

    rows: list
    summary: list
    snapshots: list
    machines: dict
    missing: dict


def protocol_table(folder, scale="default"):
    """Read the table that ``reproduce ch7`` wrote to ``folder`` at ``scale`` (:class:`ProtocolTable`).

    Raises ``ValueError`` when a row lacks its provenance (:data:`PROVENANCE`), a run appears
    twice (two settings of the same run in one folder: keep one) or a row is not a run of the
    scale's protocol with its settings.
    """
    folder = Path(folder)
    rows = read_table(folder / "ch7_table.csv")
    seen = set()
    for r in rows:
        missing = [c for c in PROVENANCE if c not in r or r[c] == "" or (isinstance(r[c], float) and math.isnan(r[c]))]
        if missing:
            raise ValueError(f"the run {' '.join(map(str, run_key(r)))} in {folder} lacks its provenance {missing}")
        if run_key(r) in seen:
            raise ValueError(f"the run {' '.join(map(str, run_key(r)))} appears twice in {folder} "
                             "(two settings of one run); keep one")
        seen.add(run_key(r))
    setting = scale_config(scale)
    longest = max(setting["splits"], setting["cnn_splits"], setting["random_label_splits"])
    keys = table_keys(dict(setting, seeds=tuple(range(longest))), ("mlp", "cnn"))
    protocol = {run_key(k): k["settings"] for k in keys}
    for r in rows:
        if protocol.get(run_key(r)) != r["settings"]:
            raise ValueError(f"the run {' '.join(map(str, run_key(r)))} in {folder} is not a run of the {scale!r} "
                             f"protocol with its settings (settings {r['settings']!r})")
    order = {run_key(k): i for i, k in enumerate(keys)}
    rows.sort(key=lambda r: order[run_key(r)])  # the protocol's order, whichever process wrote a row first
    missing = {}
    for key in set(protocol) - seen:
        missing[key[:2]] = missing.get(key[:2], 0) + 1
    machines = {}
    for r in rows:
        machines.setdefault((r["dataset"], r["arch"]), set()).add((r["device_kind"], r["cpu_count"], r["commit"]))
    return ProtocolTable(rows, summarize(rows), read_table(folder / "ch7_snapshots.csv"), machines, missing)


def _same_run(what, run, mine, theirs, folder):
    """One check that two folders hold the same run: ``mine`` against the GPU's ``theirs``, to :data:`SAME_RUN_RTOL`."""
    gap = abs(mine - theirs)
    if not gap <= SAME_RUN_RTOL * abs(theirs):
        raise ValueError(f"not the same run: {' '.join(map(str, run))}: {what} is {mine!r} in {folder} but "
                         f"{theirs!r} in gpu-one-time/ (relative difference {gap / abs(theirs):.2e}, "
                         f"at most {SAME_RUN_RTOL:g} allowed)")
    return f"{' '.join(map(str, run))}: {what} {mine:.10g} in {folder}, {theirs:.10g} on the GPU " \
           f"(relative difference {gap / abs(theirs):.1e})"


def committed_limits(results_dir):
    """Chapter 7's limits from ``no-retrain/`` (both recursions) and ``gpu-one-time/`` (retrained twins).

    ``results_dir`` is the folder holding both (``results/ch7-limits``). The two files must
    hold the same runs: the same learning rates and the same one-time prediction on the
    retrained subset (to :data:`SAME_RUN_RTOL`). Returns ``(rows, checks)``; a row per
    learning rate holds ``lr``, ``held_out``, ``predicted``, ``one_time``, the twins' loss
    ``bf``, the relative errors ``two_err`` and ``one_err`` of both recursions on the subset
    against the twins, and ``bf_held = bf / held_out``.
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


class Findings(NamedTuple):
    """The comparisons Chapter 7 states about its table; every dict is keyed by cell ``(dataset, arch)``.

    Against the held-out loss, for the cells with two splits or more: ``covers[cell]`` (the 95% interval of the prediction's signed
    error contains 0), ``miss[cell]`` (by how much it misses 0: ``|error| − error_half``, 0
    when it covers), and the same for exact leave-one-out of the linearized network on the same
    splits (``floor_covers``, ``floor_miss``); ``like_floor`` (cells whose error and floor
    intervals overlap). Against the twins: ``twin_within[cell]`` (``|twin_error| ≤ tolerance``),
    ``lowest_correlation`` over all retrained runs, ``one_time_further`` (cells where the one-time
    kernel is further from the twins than the two-time). Baselines: ``gcv_worse`` (cells where
    GCV's mean signed error is further from 0 than the prediction's). Random labels:
    ``learned[cell]``, the random-label held-out loss over the true one (cells with a random-label run).
    """

    covers: dict
    miss: dict
    floor_covers: dict
    floor_miss: dict
    like_floor: list
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
        like_floor=[k for k, c in spread.items()
                    if abs(c["error"] - c["floor"]) <= c["error_half"] + c["floor_half"]],
        twin_within={k: abs(c["twin_error"]) <= tolerance for k, c in twinned.items()},
        lowest_correlation=min((c["min_correlation"] for c in twinned.values()), default=math.nan),
        one_time_further=[k for k, c in twinned.items() if abs(c["one_time_twin_error"]) > abs(c["twin_error"])],
        gcv_worse=[k for k, c in cells.items() if abs(c["gcv_error"]) > abs(c["error"])],
        learned={k: c["learned"] for k, c in cells.items() if not math.isnan(c["learned"])},
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
    ``monotone``: whether the two-time prediction rises with ``M`` in every run;
    ``two_time_fall`` and ``one_time_fall``: the largest relative fall of the two-time and of the
    one-time prediction from one ``M`` to the next over all runs (0 when it rises everywhere).
    """

    counts: list
    rise: dict
    last_rise: list
    law: float
    measured: list
    left: list
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
    def fall(key):
        return max([0.0] + [1 - d[b][key] / d[a][key] for d in by_run.values() for a, b in zip(counts, counts[1:])])

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
        monotone=all(d[a]["predicted"] < d[b]["predicted"] for d in by_run.values() for a, b in zip(counts, counts[1:])),
        two_time_fall=fall("predicted"), one_time_fall=fall("one_time"))
