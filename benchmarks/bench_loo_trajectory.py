"""Benchmark: loo_trajectory for N = 1000 rows and 3000 steps, float64.

Run ``python -m benchmarks.bench_loo_trajectory [--n 1000] [--steps 3000] [--case C K ...]``.
Each case ``C K`` has ``N / C`` samples of ``C`` outputs and ``K`` kernel snapshots; the
default cases are ``1 30`` (one output, Chapter 7's 30 snapshots) and ``10 1`` (the longest
segment of Chapter 7's 10-class cell: one snapshot for all 3000 steps, as in its snapshot rows).
Random Gram snapshots ``Θ_k = Φ_k Φ_kᵀ`` and random residuals; times the public
call (median of ``--repeats``). Exactness is checked in the same run against an
independent closed form: with a constant kernel and residuals that follow the
kernel dynamics, ``loo_trajectory`` must equal ``loo_residuals(..., lr=lr)``
(exact gradient-descent LOO through the spectrum of ``Θ`` without each sample),
at ``--check-n`` samples. Writes ``benchmarks/results/loo_trajectory.csv``.
"""

import argparse

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from gramlib import effective_gram, kernel_flow, measure  # noqa: E402


def snapshots(n, count, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        phi = rng.standard_normal((n, n // 2)) / np.sqrt(n // 2)
        out.append(phi @ phi.T)
    return np.stack(out), rng


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--case", nargs=2, type=int, action="append", metavar=("C", "K"),
                        help="outputs C and snapshots K (repeatable; default: 1 30 and 10 1)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--check-n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for outputs, count in args.case or [(1, 30), (10, 1)]:
        thetas, rng = snapshots(args.n, count)
        residuals = rng.standard_normal((args.steps + 1, args.n))
        lr = 0.5
        name = f"loo_trajectory N={args.n} C={outputs} steps={args.steps} K={count} float64"
        rows.append({"benchmark": name, **measure.machine(),
                     **measure.timing(lambda: effective_gram.loo_trajectory(thetas, residuals, lr, outputs=outputs),
                                      args.repeats)})
        print(rows[-1], flush=True)
    theta, rng = snapshots(args.check_n, 1, seed=1)
    r0 = rng.standard_normal(args.check_n)
    r = np.asarray(kernel_flow.kernel_residuals(theta[0], r0, np.arange(args.steps + 1), lr=lr))
    got = np.asarray(effective_gram.loo_trajectory(theta, r, lr).rho)  # one segment of all the steps, in chunks
    want = np.asarray(effective_gram.loo_residuals(theta[0], r0, args.steps, lr=lr))
    check = {"check": f"constant kernel N={args.check_n}: vs loo_residuals(lr) closed form",
             "max_abs_diff": float(np.max(np.abs(got - want))), "max_abs_value": float(np.max(np.abs(want)))}
    print(check, flush=True)
    rows = [{**row, **check} for row in rows]
    measure.write_rows("loo_trajectory.csv", rows, args.out)
    return rows


if __name__ == "__main__":
    main()
