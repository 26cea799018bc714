"""Benchmark: peak memory of the tiled empirical NTK against batch_size, and n = 20000 for the MLP.

Run ``python benchmarks/bench_ntk_memory.py [--n 20000] [--sizes 500,1000,2000,4000]``.
Each measurement runs in a fresh subprocess (so that peaks do not mix) and
reports its own peak resident memory (``ru_maxrss``, the number
``/usr/bin/time -v`` prints as "Maximum resident set size"), together with the wall
time and the size of the result itself (``n² × 4`` bytes in float32). Model: a
2-layer width-512 MLP on inputs of dimension 64, float32. Writes
``benchmarks/results/ntk_memory.csv``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import machine, write_rows

CHILD = """
import json, resource, sys, time
import jax, jax.numpy as jnp
from gramlib import models, ntk
n, batch = int(sys.argv[1]), (None if sys.argv[2].lower() == "none" else int(sys.argv[2]))
model = models.mlp(64, width=512, depth=2, dtype=jnp.float32)
params = model.init(jax.random.PRNGKey(0))
x = jax.random.normal(jax.random.PRNGKey(1), (n, 64), jnp.float32)
start = time.perf_counter()
theta = jax.block_until_ready(ntk.empirical_ntk(model.apply, params, x, batch_size=batch))
wall = time.perf_counter() - start
i = n // 3
check = float(ntk.empirical_ntk(model.apply, params, x[i:i + 1], method="jacobian")[0, 0])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # this process's peak RSS (Linux: KiB)
print("RESULT" + json.dumps({"wall_s": wall, "peak": peak, "diag_rel_err": abs(float(theta[i, i]) - check) / abs(check)}))
"""


def measure(n, batch):
    """Peak RSS (bytes), wall time and a spot check of one run in a fresh process."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(n), str(batch)], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    total = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.split("RESULT")[-1])
    return {"n": n, "batch_size": batch, "peak_rss_gb": round(result["peak"] / 1e9, 3),
            "result_gb": round(n * n * 4 / 1e9, 3), "ntk_wall_s": round(result["wall_s"], 2),
            "process_wall_s": round(total, 2), "diag_rel_err_vs_jacobian": result["diag_rel_err"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--n-sweep", type=int, default=4000)
    parser.add_argument("--sizes", default="250,500,1000,2000,none")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes.split(","):
        batch = None if size == "none" else int(size)
        rows.append({"benchmark": f"empirical_ntk MLP 64-512-1 n={args.n_sweep} float32", **machine(),
                     **measure(args.n_sweep, batch)})
        print(rows[-1], flush=True)
    rows.append({"benchmark": f"empirical_ntk MLP 64-512-1 n={args.n} float32 tiled", **machine(),
                 **measure(args.n, 1000)})
    print(rows[-1], flush=True)
    write_rows("ntk_memory.csv", rows, args.out)
    return rows


if __name__ == "__main__":
    main()
