"""Benchmark: empirical NTK of a 2-layer width-512 MLP (and a CNN) on 1000 inputs of dimension 64, float32.

Run ``python benchmarks/bench_ntk.py [--repeats 5]``. Times
``gramlib.ntk.empirical_ntk`` (default method) and its plain Jacobian-contraction
path ``method="jacobian"`` in the same run, untiled and tiled
(``batch_size=250``), after one warm-up call that compiles; prints medians and
writes ``benchmarks/results/ntk.csv`` with the machine load next to each row.
"""

import argparse

import jax
import jax.numpy as jnp

from gramlib import measure, models, ntk


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="folder of ntk.csv (default benchmarks/results)")
    args = parser.parse_args(argv)
    mlp_apply, mlp_params, x = measure.ntk_workload(args.n)
    cnn = models.cnn((8, 8, 1), channels=16, depth=3, dtype=jnp.float32)
    mlp, cnn = (mlp_apply, mlp_params), (cnn.apply, cnn.init(jax.random.PRNGKey(0)))
    variants = [("MLP 64-512-1", mlp, "default", {}), ("MLP 64-512-1", mlp, "jacobian", {"method": "jacobian"}),
                ("MLP 64-512-1", mlp, "default, batch_size=250", {"batch_size": 250}),
                ("MLP 64-512-1", mlp, "jacobian, batch_size=250", {"method": "jacobian", "batch_size": 250}),
                ("CNN 8x8x1 3x3 16ch depth 3", cnn, "default", {}),
                ("CNN 8x8x1 3x3 16ch depth 3", cnn, "jacobian", {"method": "jacobian"})]
    rows, reference, previous = [], None, None
    for label, (apply, params), name, kw in variants:
        if label != previous:
            reference, previous = None, label
        out = jax.block_until_ready(ntk.empirical_ntk(apply, params, x, **kw))
        reference = out if reference is None else reference
        timing = measure.timing(lambda: ntk.empirical_ntk(apply, params, x, **kw), args.repeats)
        rows.append({"benchmark": f"empirical_ntk {label}, n={args.n}, float32, {name}", **measure.machine(),
                     **timing,
                     "max_rel_diff_to_default": float(jnp.max(jnp.abs(out - reference)) / jnp.max(jnp.abs(reference)))})
        print(rows[-1])
    measure.write_rows("ntk.csv", rows, args.out)


if __name__ == "__main__":
    main()
