"""Command line of gramlib: ``python -m gramlib <command>`` (or the ``gramlib`` script).

Commands:

``student``
    write student copies of chapter notebooks (see :mod:`gramlib.student`).
``assignments``
    write an Otter-Grader assignment of each chapter's exercises (student notebook, autograder zip,
    solutions; see :mod:`gramlib.views.assignments`; needs the ``teach`` extra).
``reproduce ch6|ch6-runs|ch7|ch7-limits|ch7-estimators|ch7-size-rule``
    regenerate a chapter's tables (CSV) and figures (PNG) under ``results/`` (``ch6-runs``:
    the alignment of trained networks with their runs' ``K_traj``, in ``results/ch6/``; ``ch7``: the
    table over many splits, in ``results/ch7/``; ``ch7-limits``: ReLU networks over learning
    rate, width and depth with retrained twins, in ``results/ch7-limits/``; ``ch7-estimators``: every
    leave-one-out estimator against all n retrained twins, in ``results/ch7-estimators/``, ``--settings``
    to run some of them; ``ch7-size-rule``: the estimate to ±3% with its subset-size rule against all n
    retrained twins, beside it), with progress bars; options
    ``--scale default|paper|validation|rerun|holdout`` (``paper``: the larger GPU setting; ``validation``
    and ``rerun``, for ``ch7-estimators``: networks that test the estimate's interval, and the setting its
    snapshot check flags, with the snapshots the check asks for; ``validation`` and ``holdout`` for
    ``ch7-size-rule``: those networks, and networks its subset-size rule was not made from), ``--out DIR``,
    for ``ch7``
    ``--archs mlp cnn``, ``--datasets`` (cells) and ``--seeds`` to run part of the table, and
    for ``ch7`` and ``ch7-limits`` ``--no-retrain`` (the predictions on the twins' subsets
    without retraining them). A rerun into the
    same folder keeps the rows already computed with the same settings (see
    :mod:`gramlib.experiments.results`), and every row records the command line, the machine,
    the git commit and the JAX version.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def reproduce(argv) -> None:
    """``reproduce ch6|ch6-runs|ch7|ch7-limits [--scale …] [--out DIR] [--archs mlp cnn] [--no-retrain]``."""
    parser = argparse.ArgumentParser(prog="python -m gramlib reproduce",
                                     description="Regenerate a chapter's tables and figures.")
    parser.add_argument("chapter", choices=["ch6", "ch6-runs", "ch7", "ch7-limits", "ch7-estimators",
                                            "ch7-size-rule"])
    parser.add_argument("--scale", default="default", choices=["default", "paper", "validation", "rerun", "holdout", "smoke"],
                        help="default: the CPU scale of the book; paper: the larger GPU setting; "
                             "validation, rerun (ch7-estimators; validation also ch7-size-rule): networks that test the "
                             "estimate's interval, the flagged setting with the snapshots its check asks for; "
                             "holdout (ch7-size-rule only): networks the subset-size rule was not made from; "
                             "smoke: a seconds-long check of the pipeline")
    parser.add_argument("--out", help="output folder (default: results/ch7, results/ch7-limits, results/ch7-estimators "
                                      "(also for ch7-size-rule), results/ch6 "
                                      "for ch6-runs, results for ch6)")
    parser.add_argument("--archs", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"],
                        help="ch7: the architectures to run (default: both)")
    parser.add_argument("--datasets", nargs="+", help="ch7: only these cells of the table (default: all of the scale's)")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="ch7: only these splits (seeds; default: all of the scale's)")
    parser.add_argument("--settings", nargs="+", help="ch7-estimators: only these settings (by name)")
    parser.add_argument("--no-retrain", dest="retrain", action="store_false",
                        help="ch7, ch7-limits: skip the brute-force retraining (minutes to hours per run on a CPU); "
                             "the predictions on the subsets it would retrain are still reported")
    args = parser.parse_args(argv)
    command = "python -m gramlib reproduce " + shlex.join(argv)  # recorded in every row (provenance)
    if args.chapter == "ch7":
        from gramlib.experiments.ch7 import reproduce_ch7

        reproduce_ch7(args.out or "results/ch7", args.scale, archs=args.archs, datasets=args.datasets,
                      seeds=args.seeds, retrain=args.retrain, command=command)
    elif args.chapter == "ch7-estimators":
        from gramlib.experiments.ch7_estimators import reproduce_ch7_estimators

        reproduce_ch7_estimators(args.out or "results/ch7-estimators", args.scale, names=args.settings,
                                 command=command)
    elif args.chapter == "ch7-size-rule":
        from gramlib.experiments.ch7_size_rule import reproduce_ch7_size_rule

        reproduce_ch7_size_rule(args.out or "results/ch7-estimators", args.scale, command=command)
    elif args.chapter == "ch7-limits":
        from gramlib.experiments.ch7 import reproduce_ch7_limits

        reproduce_ch7_limits(args.out or "results/ch7-limits", args.scale, retrain=args.retrain, command=command)
    elif args.chapter == "ch6-runs":
        from gramlib.experiments.real_alignment import reproduce_ch6_runs

        reproduce_ch6_runs(args.out or "results/ch6", args.scale, command=command)
    else:
        from gramlib.experiments.ch6 import reproduce_ch6

        reproduce_ch6(args.out or "results", args.scale, command=command)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["student"]:
        from gramlib.views import student

        student.main(argv[1:])
    elif argv[:1] == ["assignments"]:
        from gramlib.views import assignments

        assignments.main(argv[1:])
    elif argv[:1] == ["reproduce"]:
        reproduce(argv[1:])
    else:
        sys.exit(__doc__.strip())


if __name__ == "__main__":
    main()
