"""Reproduce the hang of Chapter 1's Monte Carlo cell with jaxlib 0.10.x, outside any Jupyter kernel.

Found on 2026-12-07 (issue 25): the "stall" of the executed book was not (only) the notebook kernel.
The first cells of Chapter 1, run as a plain Python script, sometimes never returned from
``gap.replace_one_samples`` (1000 data sets × 21 trainings of a 10-dimensional linear model by
gradient flow, jit + vmap, two batched ``eigh`` per call). The cause, from gdb
(``thread apply all bt``): jaxlib 0.10.0–0.10.2 split a batched LAPACK call (``eigh``, ``solve``,
Cholesky) into tasks on XLA's intra-op thread pool and block the calling pool thread until they finish
(``jax::ParallelBatchMap`` → ``BlockingCounter::Wait``); when as many batched LAPACK calls run at once
as the pool has threads (two on a 2-core machine), no thread is left to run the tasks, and the process
waits for good with the CPU idle. jaxlib 0.9.2 has no ``ParallelBatchMap``; ``constraints.txt`` pins it
and ``pyproject.toml`` excludes 0.10.0–0.10.2.

Usage::

    python tools/repro_xla_hang.py [--calls 40] [--seconds 20]

calls ``replace_one_samples`` with Chapter 1's setting ``--calls`` times, each with a fresh key, and
exits 1 with the Python stack when one call takes longer than ``--seconds`` (they take about 0.2 s),
0 otherwise. Measured here (2 cores, quiet), runs with a hang within 40 calls: jaxlib 0.10.2, 3 of 6 by
default and 4 of 4 with ``JAX_CPU_ENABLE_ASYNC_DISPATCH=false XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``;
0.10.1, 3 of 12 (and 0 of 4 with those settings); 0.10.0, 1 of 6; 0.9.2, 0 of 16 (7 of them with those
settings); 0.8.3, 0 of 6.
"""

from __future__ import annotations

import argparse
import faulthandler
import sys

import jax
import numpy as np

from gramlib import gap


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    d, n, noise = 10, 20, 0.5
    task = gap.gaussian_task(np.random.default_rng(0).normal(size=d) / np.sqrt(d), noise)
    train = gap.gradient_flow(np.append(np.geomspace(0.05, 100.0, 14), np.inf))
    for call in range(args.calls):
        faulthandler.dump_traceback_later(args.seconds, exit=True, file=sys.stderr)  # exit code 1 on a hang
        gap.replace_one_samples(jax.random.PRNGKey(100 + call), task.sample, train, n, 1000)
        faulthandler.cancel_dump_traceback_later()
    print(f"{args.calls} calls, none hung")
    return 0


if __name__ == "__main__":
    sys.exit(main())
