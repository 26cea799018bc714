"""Benchmark: cost of each step of the analysis against n, with the fitted log-log slope.

Run ``python benchmarks/bench_scaling.py [--sizes 125,250,500,1000]``. Steps: the
empirical NTK of a 2-layer width-512 MLP (float32; structured and Jacobian
contraction), exact LOO residuals ``loo_residuals`` at 10 times (float64) and
``loo_trajectory`` with 300 steps and 10 snapshots (float64). Median of
``--repeats`` calls per size; the slope of ``log time`` against ``log n`` over
the sizes is the measured exponent. Writes ``benchmarks/results/scaling.csv``.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from benchmarks import machine, median_time, write_rows  # noqa: E402
from gramlib import effective_gram, models, ntk  # noqa: E402


def steps(n, key=0):
    """The timed calls at size ``n``: name -> zero-argument function."""
    rng = np.random.default_rng(key)
    model = models.mlp(64, 512, 2, dtype=jnp.float32)
    params = model.init(jax.random.PRNGKey(key))
    x = jnp.asarray(rng.standard_normal((n, 64)), jnp.float32)
    phi = rng.standard_normal((n, n)) / np.sqrt(n)
    theta = phi @ phi.T + 0.1 * np.eye(n)
    r0 = rng.standard_normal(n)
    thetas = np.stack([theta] * 10)
    residuals = rng.standard_normal((301, n))
    return {
        "empirical_ntk (structured)": lambda: ntk.empirical_ntk(model.apply, params, x),
        "empirical_ntk (jacobian)": lambda: ntk.empirical_ntk(model.apply, params, x, method="jacobian"),
        "loo_residuals (10 times)": lambda: effective_gram.loo_residuals(theta, r0, np.logspace(-1, 3, 10)),
        "loo_trajectory (300 steps, K=10)": lambda: effective_gram.loo_trajectory(thetas, residuals, 0.5),
    }


def slope(ns, times):
    """Least-squares slope of ``log t`` against ``log n``."""
    return float(np.polyfit(np.log(ns), np.log(times), 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="125,250,500,1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        for name, fn in steps(n).items():
            rows.append({"step": name, "n": n, **median_time(fn, args.repeats), **machine()})
            print(rows[-1], flush=True)
    for name in steps(4):
        mine = [r for r in rows if r["step"] == name]
        fitted = slope([r["n"] for r in mine], [r["median_s"] for r in mine])
        for r in mine:
            r["fitted_slope"] = round(fitted, 2)
        print(f"{name}: time ~ n^{fitted:.2f}", flush=True)
    write_rows("scaling.csv", rows, args.out)
    return rows


if __name__ == "__main__":
    main()
