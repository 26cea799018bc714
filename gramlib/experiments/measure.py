"""How the benchmarks and the appendix "Scaling up" measure: time, peak memory, the machine, CSV rows.

The scripts of ``benchmarks/`` and the cells of the appendix call these functions, so
that a number on the page and a number in ``benchmarks/results/`` are measured the same
way:

* :func:`timing`: one first call (which compiles), then the median and minimum wall
  time of ``repeats`` calls, each ended by ``jax.block_until_ready`` (JAX dispatches
  asynchronously: without it a call returns before the device has finished), and
  their median CPU time, a fairer figure on a shared machine; :func:`timed` times one call;
* :func:`peak_rss` and :func:`in_fresh_process`: the peak resident memory of a process
  (on Linux its high-water mark ``VmHWM`` of ``/proc/self/status``, elsewhere ``ru_maxrss``),
  which includes the interpreter and JAX; a measurement runs in a fresh interpreter so that
  two peaks do not mix;
* :func:`machine`: where and under what load a row was measured; :func:`write_rows` and
  :func:`read_rows`: CSV rows in ``benchmarks/results/``;
* the workloads both measure: :func:`ntk_workload` (the width-512 MLP), :func:`scaling_steps`
  (each step of the analysis at ``n`` samples; :func:`loglog_slope` fits the exponent),
  :func:`ntk_memory` (the tiled NTK's peak memory) and :func:`sharded_differences`
  (several devices against one).

Benchmarks are not tests: nothing here fails on speed.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks, devices
from ..kernels import ntk
from ..mathematics import effective_gram, trajectory_gram
from ..runs import models
from . import results

try:  # Unix only (Linux, macOS): peak memory
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

ROOT = Path(__file__).resolve().parents[2]
"""The repository (where ``benchmarks/`` sits next to ``gramlib/``)."""
RESULTS = ROOT / "benchmarks" / "results"
"""Where the benchmarks write their CSV files and the appendix reads them."""
_MARK = "RESULT"
_CHILD = ("import json, sys\nfrom importlib import import_module\n"
          "fn = getattr(import_module(sys.argv[1]), sys.argv[2])\n"
          f"print({_MARK!r} + json.dumps(fn(*json.loads(sys.argv[3]))), flush=True)\n")


# ----------------------------------------------------------------------------- time

def _check_function(fn):
    if not callable(fn):
        raise TypeError(f"fn must be a function of no arguments, got {type(fn).__name__}")


def timed(fn):
    """``(fn(), seconds)``: the wall time of one call up to ``jax.block_until_ready`` (compilation included)."""
    _check_function(fn)
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def timing(fn, repeats=5):
    """The wall time of ``fn()``: a first call, then ``repeats`` timed calls.

    Returns ``first_call_s`` (the first call, which compiles), ``median_s`` and
    ``min_s`` of the repeated calls, their ``median_cpu_s`` (CPU time of this
    process, all threads) and ``repeats``. Every call ends with
    ``jax.block_until_ready``, so a call is timed to the end of the device's work.
    """
    repeats = _checks.integer(repeats, "repeats", minimum=1)
    _, first = timed(fn)
    runs, cpu = [], []
    for _ in range(repeats):
        start_cpu = time.process_time()
        runs.append(timed(fn)[1])
        cpu.append(time.process_time() - start_cpu)
    return {"first_call_s": first, "median_s": float(np.median(runs)), "min_s": min(runs),
            "median_cpu_s": float(np.median(cpu)), "repeats": repeats}


def loglog_slope(sizes, seconds):
    """The least-squares slope of ``log t`` against ``log n``: the measured exponent of ``t ∝ n^slope``."""
    n = _checks.array(sizes, "sizes", ndim=1)
    t = _checks.array(seconds, "seconds", shape=(len(n),))
    if len(n) < 2 or np.any(n <= 0) or np.any(t <= 0):
        raise ValueError(f"sizes and seconds must hold at least two positive numbers, got {n} and {t}")
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


# ----------------------------------------------------------------------------- memory

def peak_rss():
    """The peak resident memory of this process so far, in bytes.

    On Linux ``VmHWM`` of ``/proc/self/status``: the high-water mark of this program's own
    memory. Not ``ru_maxrss``, which Linux carries across ``exec`` from the process that
    forked it, so that a child of a large process (a long test session) would report its
    parent's peak. Elsewhere ``ru_maxrss`` (macOS: bytes).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    if resource is None:  # pragma: no cover - Windows
        raise RuntimeError("peak_rss needs /proc or the resource module (Linux or macOS)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes, Linux: KiB


def in_fresh_process(fn, *args, env=None, timeout=None):
    """``fn(*args)`` run in a fresh Python interpreter; returns its result.

    ``fn`` must be a module-level function (importable by name) whose arguments and
    result are JSON values; ``env`` adds environment variables (e.g. ``XLA_FLAGS`` or
    ``JAX_PLATFORMS``, which JAX reads when it starts). The child starts in the
    repository, so that ``gramlib`` and ``benchmarks`` import. A failing child raises
    ``RuntimeError`` with the end of its error output.
    """
    _check_function(fn)
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "." in name or "<" in name:
        raise TypeError(f"fn must be a module-level function that a fresh process can import, got {fn!r}")
    try:
        payload = json.dumps(list(args))
    except TypeError as err:
        raise TypeError(f"the arguments of in_fresh_process must be JSON values: {err}") from None
    if env is not None and not isinstance(env, dict):
        raise TypeError(f"env must be a dict of environment variables, got {type(env).__name__}")
    done = subprocess.run([sys.executable, "-c", _CHILD, module, name, payload], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=timeout)
    if done.returncode or _MARK not in done.stdout:
        raise RuntimeError(f"{module}.{name}{tuple(args)} failed in a fresh process:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.split(_MARK)[-1])


def ntk_memory(n, batch_size=None):
    """Wall time and peak memory of the empirical NTK of :func:`ntk_workload` at ``n`` inputs (appendix).

    Meant for :func:`in_fresh_process`, so that the peak is this computation's:
    ``{"wall_s", "peak_rss_bytes", "diag_rel_err"}``, the last a spot check of one
    diagonal entry against the Jacobian contraction. ``batch_size`` (``None``: untiled)
    bounds the work space on top of the ``n² × 4`` bytes of the result.
    """
    n = _checks.integer(n, "n", minimum=1)
    apply, params, x = ntk_workload(n)
    theta, wall = timed(lambda: ntk.empirical_ntk(apply, params, x, batch_size=batch_size))
    peak = peak_rss()
    i = n // 3
    check = float(ntk.empirical_ntk(apply, params, x[i:i + 1], method="jacobian")[0, 0])
    return {"wall_s": wall, "peak_rss_bytes": peak, "diag_rel_err": abs(float(theta[i, i]) - check) / abs(check)}


# ----------------------------------------------------------------------------- workloads

def ntk_workload(n, seed=0):
    """``(apply, params, x)``: a 2-layer width-512 MLP (NTK parameterization) on ``n`` Gaussian inputs of dimension 64, float32."""
    n = _checks.integer(n, "n", minimum=1)
    model = models.mlp(64, width=512, depth=2, dtype=jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (n, 64), jnp.float32)
    return model.apply, model.init(jax.random.PRNGKey(seed)), x


def scaling_steps(n, *, steps=300, snapshots=10, seed=0):
    """The timed steps of the analysis at ``n`` samples: ``{name: function of no arguments}`` (appendix).

    The empirical NTK of :func:`ntk_workload` (traced structure and Jacobian
    contraction, float32); exact leave-one-out residuals ``loo_residuals`` at 10 times
    and ``loo_trajectory`` over ``steps`` steps and ``snapshots`` kernels, and the run's
    effective Gram matrix ``K_traj`` over the same steps and kernels
    (:func:`gramlib.trajectory_gram.trajectory_effective_gram`), on a random Gram matrix
    ``Θ = Φ Φᵀ + 0.1 I`` in float64 (call with ``jax_enable_x64`` on).
    """
    apply, params, x = ntk_workload(n, seed)
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n, n)) / np.sqrt(n)
    theta = phi @ phi.T + 0.1 * np.eye(n)
    r0 = rng.standard_normal(n)
    thetas, residuals = np.stack([theta] * snapshots), rng.standard_normal((steps + 1, n))
    return {
        "NTK, structured": lambda: ntk.empirical_ntk(apply, params, x),
        "NTK, Jacobian": lambda: ntk.empirical_ntk(apply, params, x, method="jacobian"),
        "loo_residuals (10 times)": lambda: effective_gram.loo_residuals(theta, r0, np.logspace(-1, 3, 10)),
        f"loo_trajectory ({steps} steps, M={snapshots})": lambda: effective_gram.loo_trajectory(
            thetas, residuals, 0.5),
        f"K_traj ({steps} steps, M={snapshots})": lambda: trajectory_gram.trajectory_effective_gram(
            thetas, steps, 0.5).k_matrix,
    }


@results.in_float64
def sharded_differences(n=30):
    """The empirical NTK and the leave-one-out residuals on all devices against one (appendix).

    A width-64 MLP on ``n`` inputs of dimension 8, float64; the leave-one-out residuals of
    gradient flow at ``t = 10``. Returns ``{"devices", "ntk", "loo"}``, the last two the
    largest absolute differences. Run it in a fresh process with several simulated CPU
    devices: ``in_fresh_process(sharded_differences, env={"XLA_FLAGS":
    "--xla_force_host_platform_device_count=4"})``.
    """
    n = _checks.integer(n, "n", minimum=1)
    mesh = devices.sample_mesh()
    model = models.mlp(8, 64, 2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (n, 8), jnp.float64)
    one = ntk.empirical_ntk(model.apply, params, x)
    many = ntk.empirical_ntk(model.apply, params, x, mesh=mesh)
    r0, t = np.random.default_rng(0).standard_normal(n), np.array([10.0])
    loo_one = effective_gram.loo_residuals(one, r0, t)
    loo_many = effective_gram.loo_residuals(one, r0, t, mesh=mesh)
    return {"devices": len(jax.devices()), "ntk": float(jnp.max(jnp.abs(many - one))),
            "loo": float(jnp.max(jnp.abs(loo_many - loo_one)))}


# ----------------------------------------------------------------------------- rows

def machine():
    """Where and under what load a row was measured: load average, cores, host, device, JAX version."""
    device = jax.devices()[0]
    return {"load_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count(), "machine": platform.node(),
            "device": str(device), "device_kind": device.device_kind, "jax": jax.__version__}


def write_rows(name, rows, directory=None):
    """Write ``rows`` (dicts) to ``directory/name`` (default :data:`RESULTS`) as CSV, atomically; returns the path.

    The columns are the keys in order of first appearance (:func:`gramlib.results.write_csv`).
    """
    if not isinstance(name, str) or not name.endswith(".csv") or os.sep in name:
        raise ValueError(f"name must be a file name ending in .csv, got {name!r}")
    directory = Path(RESULTS if directory is None else directory)
    directory.mkdir(parents=True, exist_ok=True)
    return results.write_csv(directory / name, list(rows))


def result_path(name, directory=None):
    """The path of the CSV file ``name`` of the benchmarks, or ``None`` when it is absent.

    Looked up in ``directory`` if given, else in ``benchmarks/results/`` under the
    working directory, its parent and the repository of this package.
    """
    bases = [Path(directory)] if directory is not None else \
        [Path.cwd() / "benchmarks" / "results", Path.cwd().parent / "benchmarks" / "results", RESULTS]
    return next((base / name for base in bases if (base / name).exists()), None)


def read_rows(name, *, numbers=(), directory=None):
    """The rows (dicts of text) of the CSV file ``name`` (:func:`result_path`), or ``None`` when it is absent.

    The columns named in ``numbers`` are read as floats (an empty cell is NaN).
    """
    path = result_path(name, directory)
    if path is None:
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for column in numbers:
            value = row.get(column)
            row[column] = float(value) if value not in ("", None) else float("nan")
    return rows
