"""Benchmarks of gramlib (appendix "Scaling up"): one script per figure, ``python -m benchmarks`` runs all.

Each script times with several repeats and reports the median (plain
``time.perf_counter``; the machine load is recorded next to every row) and
writes a CSV under ``benchmarks/results/``. Benchmarks are not tests: nothing
fails on speed.
"""

import csv
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn, repeats=5):
    """Wall time of a first (compiling) call, then the median and minimum of ``repeats`` calls, and CPU time."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    runs, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"first_call_s": round(first, 4), "median_s": round(float(np.median(runs)), 4),
            "min_s": round(min(runs), 4), "median_cpu_s": round(float(np.median(cpu)), 4), "repeats": repeats}


def machine():
    """Where and under what load a row was measured."""
    return {"load_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count(), "machine": platform.node(),
            "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind}


def write_rows(name, rows, directory=None):
    """Write ``rows`` (dicts) to ``directory/name`` (default ``benchmarks/results``) as CSV; returns the path."""
    directory = Path(directory) if directory is not None else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(directory / name, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return directory / name
