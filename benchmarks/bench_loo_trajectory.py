"""Benchmark: loo_trajectory for N = 1000, 3000 steps, 30 kernel snapshots, float64.

Run ``python benchmarks/bench_loo_trajectory.py [--n 1000] [--steps 3000] [--snapshots 30]``.
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
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--snapshots", type=int, default=30)
    parser.add_argument("--check-n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    thetas, rng = snapshots(args.n, args.snapshots)
    residuals = rng.standard_normal((args.steps + 1, args.n))
    lr = 0.5
    row = {"benchmark": f"loo_trajectory N={args.n} steps={args.steps} K={args.snapshots} float64", **measure.machine(),
           **measure.timing(lambda: effective_gram.loo_trajectory(thetas, residuals, lr), args.repeats)}
    theta, rng = snapshots(args.check_n, 1, seed=1)
    r0 = rng.standard_normal(args.check_n)
    r = np.asarray(kernel_flow.kernel_residuals(theta[0], r0, np.arange(args.steps + 1), lr=lr))
    got = np.asarray(effective_gram.loo_trajectory(np.repeat(theta, args.snapshots, axis=0), r, lr))
    want = np.asarray(effective_gram.loo_residuals(theta[0], r0, args.steps, lr=lr))
    row["check"] = f"constant kernel N={args.check_n}: vs loo_residuals(lr) closed form"
    row["max_abs_diff"] = float(np.max(np.abs(got - want)))
    row["max_abs_value"] = float(np.max(np.abs(want)))
    print(row, flush=True)
    measure.write_rows("loo_trajectory.csv", [row], args.out)
    return row


if __name__ == "__main__":
    main()
