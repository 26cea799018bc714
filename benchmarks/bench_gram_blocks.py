"""Benchmark: the row blocks of a symmetric Gram matrix ``A Aᵀ`` (``gramlib.kernels.tangent_factors._gram``).

Run ``python -m benchmarks.bench_gram_blocks [--repeats 7] [--rounds 3]``. For three shapes of ``A``
(float32, the Jacobian sizes of the CNN benchmarks), times ``A @ A.T`` and the upper block triangle with
``parts`` row blocks (``parts (parts + 1) / 2`` products), alternately, ``--rounds`` times each; a row holds
the median of the per-round medians. The fastest block count across the shapes is
``tangent_factors._SYMMETRIC_PARTS``. Writes ``benchmarks/results/gram_blocks.csv``.
"""

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from gramlib import measure
from gramlib.kernels import tangent_factors

SHAPES = ((1000, 4752), (2000, 2304), (500, 8000))
PARTS = (2, 4, 6, 8, 12)


def blocked(parts):
    """``A ↦ A Aᵀ`` from ``parts`` row blocks, jit-compiled (the block count is read at trace time)."""
    def gram(a):
        saved, tangent_factors._SYMMETRIC_PARTS = tangent_factors._SYMMETRIC_PARTS, parts
        try:
            return tangent_factors._gram(a, a, True)
        finally:
            tangent_factors._SYMMETRIC_PARTS = saved
    return jax.jit(gram)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for n, k in SHAPES:
        a = jnp.asarray(np.random.default_rng(0).standard_normal((n, k)), jnp.float32)
        full = jax.jit(lambda m: m @ m.T)
        fns = {"a @ a.T": full, **{f"{p} parts": blocked(p) for p in PARTS}}
        reference = full(a)
        for label, fn in fns.items():  # compiled and checked before timing
            np.testing.assert_allclose(fn(a), reference, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(reference))))
        medians = {label: [] for label in fns}
        for _ in range(args.rounds):
            for label, fn in fns.items():
                medians[label].append(measure.timing(lambda fn=fn: fn(a), args.repeats)["median_s"])
        for label, ts in medians.items():
            row = {"n": n, "columns": k, "case": label, "median_s": round(statistics.median(ts), 5),
                   "current": label == f"{tangent_factors._SYMMETRIC_PARTS} parts", **measure.machine()}
            rows.append(row)
            print(row, flush=True)
    print("wrote", measure.write_rows("gram_blocks.csv", rows))


if __name__ == "__main__":
    main()
