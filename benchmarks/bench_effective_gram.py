"""Benchmark: exact LOO residuals for n = 2000 samples at 50 times (issue 4, Chapter 5).

Run ``python benchmarks/bench_effective_gram.py [--n 2000] [--repeats 5]``. Times the
whole public call ``loo_residuals(theta, r0, t)`` (one eigendecomposition, then a
32-node Talbot contour per time) in float64, after one warm-up call that also
compiles; prints the median wall time (and the process CPU time, a fairer figure
on a shared machine) and writes ``benchmarks/results/effective_gram.csv`` with the
machine load (1-minute load average and core count) next to each row.
"""

import argparse

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from gramlib import effective_gram, kernel_flow, measure  # noqa: E402


def random_gram(n, key=0):
    """A random-features Gram matrix ``Θ = Φ Φᵀ`` (tanh features, p = 1.5 n) and residual."""
    rng = np.random.default_rng(key)
    x = rng.standard_normal((n, 20))
    w = rng.standard_normal((20, int(1.5 * n)))
    phi = np.tanh(x @ w / np.sqrt(20)) / np.sqrt(w.shape[1])
    return phi @ phi.T, rng.standard_normal(n)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--times", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="folder of effective_gram.csv (default benchmarks/results)")
    args = parser.parse_args(argv)
    theta, r0 = random_gram(args.n)
    times = np.logspace(-1, 5, args.times)
    rows = []
    for name, fn in [
        ("eigendecomposition only (factorize)", lambda: kernel_flow.factorize(theta)),
        (f"loo_residuals n={args.n} x {args.times} times", lambda: effective_gram.loo_residuals(theta, r0, times)),
    ]:
        rows.append({"benchmark": name, **measure.machine(), **measure.timing(fn, args.repeats)})
        print(rows[-1])
    measure.write_rows("effective_gram.csv", rows, args.out)


if __name__ == "__main__":
    main()
