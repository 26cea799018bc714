"""Reproduce the intermittent hang of Chapter 1's Monte Carlo cell outside any Jupyter kernel.

Found on 2026-12-07 (issue 25): the "stall" of the executed book is not (only) the notebook
kernel. The first cells of Chapter 1, run as a plain Python script, sometimes never return from
``gap.replace_one_samples`` (1000 data sets × 21 trainings of a 10-dimensional linear model by
gradient flow, jit + vmap): every thread of the process waits (Eigen's ``EventCount::CommitWait`` in
the ``tf_foreach`` pool, absl ``CondVar`` in the main thread; gdb ``thread apply all bt``) and the CPU
is idle — a deadlock inside jaxlib's CPU runtime (JAX 0.10.2). The executed build's 120 s cell limit
turns it into a failure that names Chapter 1 and the cell.

Usage::

    python tools/repro_xla_hang.py [--calls 40] [--seconds 20]

calls ``replace_one_samples`` with Chapter 1's setting ``--calls`` times, each with a fresh key, and
exits 1 with the Python stack when one call takes longer than ``--seconds`` (they take about 0.2 s),
0 otherwise. Measured here (2 cores, quiet), runs with a hang within 40 calls: 4 of 6 by default; 1 of 4
with ``JAX_CPU_ENABLE_ASYNC_DISPATCH=false``; 4 of 4 with that and ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"``; 1 of 1 with ``--xla_cpu_use_thunk_runtime=false``; 1 of 3 with ``lax.map``
over the data sets in place of ``vmap``; 4 of 5 with a select (``jnp.where``) in place of the scatter
``X.at[i].set``. Not a fix for any of them.
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
