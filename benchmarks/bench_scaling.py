"""Benchmark: cost of each step of the analysis against n, with the fitted log-log slope.

Run ``python benchmarks/bench_scaling.py [--sizes 125,250,500,1000]``. Steps
(:func:`gramlib.measure.scaling_steps`, the workloads of the appendix's timing
figure): the empirical NTK of a 2-layer width-512 MLP (float32; structured and
Jacobian contraction), exact LOO residuals ``loo_residuals`` at 10 times
(float64) and ``loo_trajectory`` with 300 steps and 10 snapshots (float64).
Median of ``--repeats`` calls per size; the slope of ``log time`` against
``log n`` over the sizes is the measured exponent
(:func:`gramlib.measure.loglog_slope`). Writes ``benchmarks/results/scaling.csv``.
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

from gramlib import measure  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="125,250,500,1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        for name, fn in measure.scaling_steps(n).items():
            rows.append({"step": name, "n": n, **measure.timing(fn, args.repeats), **measure.machine()})
            print(rows[-1], flush=True)
    for name in dict.fromkeys(r["step"] for r in rows):
        mine = [r for r in rows if r["step"] == name]
        fitted = measure.loglog_slope([r["n"] for r in mine], [r["median_s"] for r in mine])
        for r in mine:
            r["fitted_slope"] = round(fitted, 2)
        print(f"{name}: time ~ n^{fitted:.2f}", flush=True)
    measure.write_rows("scaling.csv", rows, args.out)
    return rows


if __name__ == "__main__":
    main()
