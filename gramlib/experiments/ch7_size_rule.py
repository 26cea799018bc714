"""Chapter 7's leave-one-out estimate to a tolerance, against all ``n`` retrained twins (``reproduce ch7-size-rule``).

For each setting of :data:`gramlib.experiments.ch7_estimators.SCALES` (``"default"``, ``"validation"``,
``"smoke"``) and of :data:`HOLDOUT` (``"holdout"``) the run is trained as in :func:`~gramlib.experiments.ch7_estimators.estimator_row` (the same
seed: the same data, initialization and pilot subset) and estimated by
:func:`gramlib.loo_estimate.estimate_loo_loss_within` with :data:`TOLERANCE`: a pilot on the setting's
``size`` twins, its snapshot check, the subset-size rule (:func:`gramlib.loo_estimate.loo_size`) and the
final estimate. When the snapshot bias alone fills the tolerance, the run is trained again with the
snapshots the check asks for (:func:`snapshots_for`) and the procedure repeated once, as a reader
would. Every twin is then retrained (:func:`gramlib.train.retrain_without`, timed in the same process)
for the exact leave-one-out loss.

The table goes to ``results/ch7-estimators/ch7_size_rule.csv``, one row per setting, resumable and
with provenance (:mod:`gramlib.experiments.results`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..runs.loo_estimate import estimate_loo_loss_within, stderr_at
from . import ch7_estimators, tasks
from .ch7_estimators import EstimatorSetting
from .results import fingerprint, in_float64, keyed_rows, provenance, ResultTable, run_job

#: The tolerance of the estimate's interval: ``estimate ± 2 total_stderr`` within ``± TOLERANCE × estimate``.
TOLERANCE = 0.03

#: Networks the rule was not made from: fixed after the ``"default"`` and ``"validation"`` rows of this
#: table had been computed and before any of these ran (the rule's own validation).
HOLDOUT = (
    EstimatorSetting("digits-tanh-d3-n200", "digits", "parity", "mlp", 200, depth=3, lr=0.75),
    EstimatorSetting("mnist-4v9-relu-d2-n150", "mnist10k", (4, 9), "mlp", 150, depth=2, activation="relu", lr=1.0),
    EstimatorSetting("teacher-relu-d3-n200", "teacher", "sign", "mlp", 200, depth=3, activation="relu", lr=0.5),
    EstimatorSetting("mnist1d-relu-d2-n150", "mnist1d", "parity", "mlp", 150, depth=2, activation="relu", lr=0.75),
    EstimatorSetting("digits-cnn-d2-n80", "digits", "parity", "cnn", 80, depth=2, lr=0.5, steps=500, snapshots=20),
)

#: The scales of this table: those of :data:`gramlib.experiments.ch7_estimators.SCALES` that hold
#: settings as first trained (``"rerun"`` is what this procedure does by itself), and ``"holdout"``
#: (:data:`HOLDOUT`).
SCALES = ("default", "validation", "holdout", "smoke")


def scale_config(scale="default"):
    """The settings of ``scale`` (one of :data:`SCALES`), a tuple of
    :class:`~gramlib.experiments.ch7_estimators.EstimatorSetting`; ``ValueError`` on another name."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return HOLDOUT if scale == "holdout" else ch7_estimators.scale_config(scale)


#: The yes/no columns of ``ch7_size_rule.csv``.
FLAGS = ("retrained_run", "reachable", "within", "inside")


def snapshots_for(needed, steps):
    """The fewest snapshots, at least ``needed``, that divide ``steps`` and are even (the snapshot check halves
    them); ``steps`` itself (if even) when no smaller count does. ``ValueError`` when none does."""
    for m in range(max(2, int(needed)), steps + 1):
        if steps % m == 0 and m % 2 == 0:
            return m
    raise ValueError(f"no even divisor of steps ({steps}) is at least {needed}")


def size_rule_row(setting, *, seed=0, progress=False):
    """One setting's row: the estimate to :data:`TOLERANCE`, each stage's numbers, and all ``n`` twins retrained.

    Columns: ``first_snapshots`` and ``snapshots`` (the run's snapshots at first and at the end),
    ``retrained_run`` (whether the run was trained again with more); of the last round, ``pilot``,
    ``pilot_stderr``, ``bias`` (``L_∞ − L(M)``), ``snapshots_needed``, ``reachable``, ``size`` (the
    twins of the final estimate), ``estimate``, ``stderr``, ``total_stderr``, ``within`` (its interval
    within ``± TOLERANCE``); ``exact`` (mean ``½‖ρ_i‖²`` of the ``n`` retrained twins), ``error``
    (``estimate / exact − 1``), ``inside`` (``|estimate − exact| ≤ 2 total_stderr``); ``seconds`` (every
    round of the procedure and the run trained again, not the first run), ``exact_seconds`` and
    ``time_ratio`` (their quotient).
    """
    trained = ch7_estimators.trained_setting(setting, seed=seed, progress=progress)
    model, x, run, key = trained.model, trained.data.x_train, trained.run, trained.keys[0]
    result = estimate_loo_loss_within(model.apply, run, x, key=key, tolerance=TOLERANCE, pilot=setting.size)
    seconds = result.seconds
    if not result.size.reachable:
        more = snapshots_for(result.check.needed, setting.steps)
        again = ch7_estimators.trained_setting(setting, seed=seed, snapshots=more, progress=progress)
        run = again.run
        result = estimate_loo_loss_within(model.apply, run, x, key=key, tolerance=TOLERANCE, pilot=setting.size)
        seconds += again.train_seconds + result.seconds
    exact, exact_seconds = ch7_estimators.exact_loo_loss(setting, trained, progress=progress)
    final = result.estimate
    row = {"first_snapshots": setting.snapshots, "snapshots": len(run.thetas),
           "retrained_run": len(run.thetas) != setting.snapshots,
           "pilot": result.pilot.estimate, "pilot_stderr": result.pilot.stderr,
           "bias": result.check.bias, "snapshots_needed": result.check.needed,
           "reachable": result.size.reachable, "size": len(final.indices),
           "estimate": final.estimate, "stderr": final.stderr, "total_stderr": result.total_stderr,
           "within": result.within, "exact": exact, "error": final.estimate / exact - 1,
           "inside": abs(final.estimate - exact) <= 2 * result.total_stderr,
           "seconds": seconds, "exact_seconds": exact_seconds, "time_ratio": seconds / exact_seconds}
    if progress:
        print(f"{setting.name}: M = {row['snapshots']}, {row['size']} twins, estimate {final.estimate:.4f} ± "
              f"{2 * result.total_stderr:.4f} ({100 * row['error']:+.1f}% from {exact:.4f}), time ratio "
              f"{row['time_ratio']:.2f}", flush=True)
    return row


def setting_keys(scale="default"):
    """The key of each setting of ``scale`` in ``ch7_size_rule.csv``: its name, ``n`` and ``settings`` fingerprint
    (the setting with :data:`TOLERANCE`)."""
    return [{"name": s.name, "n": s.n, "settings": fingerprint({**dataclasses.asdict(s), "tolerance": TOLERANCE})}
            for s in scale_config(scale)]


def committed_rows(folder, scale="default"):
    """The rows of ``folder/ch7_size_rule.csv`` computed with ``scale``'s settings, in the scale's order, their
    yes/no columns as ``bool``, with ``predicted_stderr``: the standard error the rule's law predicted for
    the final subset (:func:`gramlib.loo_estimate.stderr_at`); a setting not in the file is left out, a row without its provenance raises
    ``ValueError``."""
    pilot = {s.name: s.size for s in scale_config(scale)}
    rows = keyed_rows(Path(folder) / "ch7_size_rule.csv", setting_keys(scale))
    for r in rows:
        r["predicted_stderr"] = stderr_at(r["pilot_stderr"], pilot[r["name"]], int(r["size"]), int(r["n"]))
        for c in FLAGS:
            r[c] = r[c] is True or r[c] == "True"
    return rows


@in_float64
def reproduce_ch7_size_rule(out_dir="results/ch7-estimators", scale="default", *, progress=True, command=None):
    """Write ``ch7_size_rule.csv`` under ``out_dir``: :func:`size_rule_row` for every setting of ``scale``,
    resumably (a row already in the table is not computed again), with provenance. Returns the rows."""
    keys = setting_keys(scale)
    by_name = {s.name: s for s in scale_config(scale)}
    table = ResultTable(tasks.output_folder(out_dir) / "ch7_size_rule.csv", ("name", "settings"))
    return run_job(table, keys, lambda key: size_rule_row(by_name[key["name"]], progress=progress),
                   extra=provenance(command))
