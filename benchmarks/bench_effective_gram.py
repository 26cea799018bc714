"""Benchmark: exact LOO residuals for n = 2000 samples at 50 times (issue 4, Chapter 5).

Run ``python benchmarks/bench_effective_gram.py [--n 2000] [--repeats 5]``. Times the
whole public call ``loo_residuals(theta, r0, t)`` (one eigendecomposition, then a
32-node Talbot contour per time) in float64, after one warm-up call that also
compiles; prints the median wall time (and the process CPU time, a fairer figure
on a shared machine) and writes ``benchmarks/results/effective_gram.csv`` with the
machine load (1-minute load average and core count) next to each row.
"""

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from gramlib import effective_gram, ntk  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def random_gram(n, key=0):
    """A random-features Gram matrix ``Θ = Φ Φᵀ`` (tanh features, p = 1.5 n) and residual."""
    rng = np.random.default_rng(key)
    x = rng.standard_normal((n, 20))
    w = rng.standard_normal((20, int(1.5 * n)))
    phi = np.tanh(x @ w / np.sqrt(20)) / np.sqrt(w.shape[1])
    return phi @ phi.T, rng.standard_normal(n)


def timed(fn, repeats):
    """Wall time of a first (compiling) call, then wall and process CPU times of ``repeats`` calls."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    runs, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return first, runs, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--times", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    theta, r0 = random_gram(args.n)
    times = np.logspace(-1, 5, args.times)
    rows = []
    for name, fn in [
        ("eigh only", lambda: ntk.spectrum(theta)[0]),
        (f"loo_residuals n={args.n} x {args.times} times", lambda: effective_gram.loo_residuals(theta, r0, times)),
    ]:
        load = os.getloadavg()[0]
        first, runs, cpu = timed(fn, args.repeats)
        rows.append({"benchmark": name, "first_call_s": round(first, 3), "median_s": round(float(np.median(runs)), 3),
                     "min_s": round(min(runs), 3), "median_cpu_s": round(float(np.median(cpu)), 3),
                     "repeats": args.repeats, "load_1min": round(load, 2),
                     "cores": os.cpu_count(), "machine": platform.node(), "device": str(jax.devices()[0])})
        print(rows[-1])
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "effective_gram.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
