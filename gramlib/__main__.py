"""Command line of gramlib: ``python -m gramlib <command>`` (or the ``gramlib`` script).

Commands:

``student``
    write student copies of chapter notebooks (see :mod:`gramlib.student`).
``reproduce ch6|ch7|ch7-noise|ch7-limits``
    regenerate a chapter's tables (CSV) and figures (PNG) under ``results/``, with progress
    bars (``ch7-noise``: the sampling noise of leave-one-out at the scale of Chapter 7's
    table; ``ch7-limits``: a deep ReLU network at three learning rates); options ``--scale default|paper`` (``paper``: the larger GPU setting),
    ``--out DIR``, for ``ch7`` and ``ch7-noise`` ``--archs mlp cnn``, and for ``ch7`` and
    ``ch7-limits`` ``--no-retrain`` (the predictions on the brute-force subsets without retraining them);
    ``ch7`` also takes ``--datasets`` and ``--seeds`` to run part of the table. A rerun into the
    same folder keeps the rows already computed with the same settings (see
    :mod:`gramlib.experiments.results`), and every row records the command line, the machine,
    the git commit and the JAX version.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def reproduce(argv) -> None:
    """``reproduce ch6|ch7|ch7-noise|ch7-limits [--scale …] [--out results] [--archs mlp cnn] [--no-retrain]``."""
    parser = argparse.ArgumentParser(prog="python -m gramlib reproduce",
                                     description="Regenerate a chapter's tables and figures.")
    parser.add_argument("chapter", choices=["ch6", "ch7", "ch7-noise", "ch7-limits"])
    parser.add_argument("--scale", default="default", choices=["default", "paper", "smoke"],
                        help="default: the CPU scale of the book; paper: the larger GPU setting; "
                             "smoke: a seconds-long check of the pipeline")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    parser.add_argument("--archs", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"],
                        help="ch7 and ch7-noise: the architectures to run (default: both)")
    parser.add_argument("--datasets", nargs="+", help="ch7: only these data sets (default: all of the scale's)")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="ch7: only these seeds (default: all of the scale's; random labels too if their seed)")
    parser.add_argument("--no-retrain", dest="retrain", action="store_false",
                        help="ch7, ch7-limits: skip the brute-force retraining (hours per run on a CPU); "
                             "the predictions on the subsets it would retrain are still reported")
    args = parser.parse_args(argv)
    command = "python -m gramlib reproduce " + shlex.join(argv)  # recorded in every row (provenance)
    if args.chapter == "ch7":
        from gramlib.experiments.ch7 import reproduce_ch7

        reproduce_ch7(args.out, args.scale, archs=args.archs, datasets=args.datasets, seeds=args.seeds,
                      retrain=args.retrain, command=command)
    elif args.chapter == "ch7-noise":
        from gramlib.experiments.ch7 import reproduce_ch7_noise

        reproduce_ch7_noise(args.out, args.scale, archs=args.archs, command=command)
    elif args.chapter == "ch7-limits":
        from gramlib.experiments.ch7 import reproduce_ch7_limits

        reproduce_ch7_limits(args.out, args.scale, retrain=args.retrain, command=command)
    else:
        from gramlib.experiments.ch6 import reproduce_ch6

        reproduce_ch6(args.out, args.scale, command=command)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["student"]:
        from gramlib.views import student

        student.main(argv[1:])
    elif argv[:1] == ["reproduce"]:
        reproduce(argv[1:])
    else:
        sys.exit(__doc__.strip())


if __name__ == "__main__":
    main()
