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

from gramlib import models, ntk
from benchmarks import machine, median_time, write_rows  # noqa: E402

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    mlp = models.mlp(64, width=512, depth=2, dtype=jnp.float32)
    cnn = models.cnn((8, 8, 1), channels=16, depth=3, dtype=jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (args.n, 64), jnp.float32)
    variants = [("MLP 64-512-1", mlp, "default", {}), ("MLP 64-512-1", mlp, "jacobian", {"method": "jacobian"}),
                ("MLP 64-512-1", mlp, "default, batch_size=250", {"batch_size": 250}),
                ("MLP 64-512-1", mlp, "jacobian, batch_size=250", {"method": "jacobian", "batch_size": 250}),
                ("CNN 8x8x1 3x3 16ch depth 3", cnn, "default", {}),
                ("CNN 8x8x1 3x3 16ch depth 3", cnn, "jacobian", {"method": "jacobian"})]
    rows, reference, previous = [], None, None
    for label, model, name, kw in variants:
        params = model.init(jax.random.PRNGKey(0))
        if model is not previous:
            reference, previous = None, model
        out = jax.block_until_ready(ntk.empirical_ntk(model.apply, params, x, **kw))
        reference = out if reference is None else reference
        timing = median_time(lambda: ntk.empirical_ntk(model.apply, params, x, **kw), args.repeats)
        rows.append({"benchmark": f"empirical_ntk {label}, n={args.n}, float32, {name}", **machine(), **timing,
                     "max_rel_diff_to_default": float(jnp.max(jnp.abs(out - reference)) / jnp.max(jnp.abs(reference)))})
        print(rows[-1])
    write_rows("ntk.csv", rows)

if __name__ == "__main__":
    main()
