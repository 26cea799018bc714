"""Benchmark: peak memory of the tiled empirical NTK against batch_size, and n = 20000 for the MLP.

Run ``python benchmarks/bench_ntk_memory.py [--n 20000] [--sizes 500,1000,2000,4000]``.
Each measurement runs in a fresh subprocess (so that peaks do not mix,
:func:`gramlib.measure.in_fresh_process`) and reports its own peak resident
memory (``ru_maxrss``, the number ``/usr/bin/time -v`` prints as "Maximum
resident set size"), together with the wall time and the size of the result
itself (``n² × 4`` bytes in float32): :func:`gramlib.measure.ntk_memory`, the
measurement the appendix makes at smaller ``n``. Model: a 2-layer width-512 MLP
on inputs of dimension 64, float32. Writes ``benchmarks/results/ntk_memory.csv``.
"""

import argparse
import os
import time

from gramlib import measure


def measure_once(n, batch):
    """Peak RSS (GB), wall time and a spot check of one run in a fresh process."""
    start = time.perf_counter()
    result = measure.in_fresh_process(measure.ntk_memory, n, batch,
                                      env={"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})
    total = time.perf_counter() - start
    return {"n": n, "batch_size": batch, "peak_rss_gb": round(result["peak_rss_bytes"] / 1e9, 3),
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
        rows.append({"benchmark": f"empirical_ntk MLP 64-512-1 n={args.n_sweep} float32", **measure.machine(),
                     **measure_once(args.n_sweep, batch)})
        print(rows[-1], flush=True)
    rows.append({"benchmark": f"empirical_ntk MLP 64-512-1 n={args.n} float32 tiled", **measure.machine(),
                 **measure_once(args.n, 1000)})
    print(rows[-1], flush=True)
    measure.write_rows("ntk_memory.csv", rows, args.out)
    return rows


if __name__ == "__main__":
    main()
