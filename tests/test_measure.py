"""The measurements of the benchmarks and the appendix: timing, peak memory, CSV rows, fresh processes."""

import os
import time

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from gramlib import measure
from tests.tolerance import assert_close, tolerance

ALLOCATION = 512 * 2**20  # bytes: more than the transient peak of importing JAX


def allocate(nbytes):
    """Touch ``nbytes`` of memory (run in a fresh process): the resident memory before, the peak after."""
    with open("/proc/self/statm") as fh:  # Linux: resident pages, second field
        resident = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    block = np.ones(nbytes // 8)  # float64: written, so resident
    return {"resident_before": resident, "peak_after": measure.peak_rss(), "sum": float(block.sum())}


def test_timing_of_a_sleep():
    calls = []

    def nap():
        calls.append(1)
        time.sleep(0.05)
        return jnp.zeros(2)

    t = measure.timing(nap, repeats=3)
    assert len(calls) == 4 and t["repeats"] == 3  # one first call, then three timed ones
    assert 0.05 <= t["min_s"] <= t["median_s"] < 0.5
    assert t["first_call_s"] >= 0.05
    assert t["median_cpu_s"] < 0.04  # asleep: little CPU time
    value, seconds = measure.timed(nap)
    assert seconds >= 0.05 and value.shape == (2,)


def test_timing_waits_for_the_device():
    x = jnp.ones((300, 300))
    square = jax.jit(lambda a: a @ a)  # compiled by the first call only
    t = measure.timing(lambda: square(x), repeats=2)
    assert t["median_s"] > 0 and t["first_call_s"] >= t["min_s"]


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident memory from /proc (Linux)")
def test_peak_memory_of_a_known_allocation():
    result = measure.in_fresh_process(allocate, ALLOCATION)
    assert result["sum"] == ALLOCATION // 8
    grown = result["peak_after"] - result["resident_before"]  # the allocation exceeds any earlier peak
    assert 0.95 * ALLOCATION <= grown <= 1.1 * ALLOCATION, grown / ALLOCATION
    assert measure.peak_rss() > 10 * 2**20  # this process: an interpreter with JAX


def test_fresh_process_reports_failures_and_refuses_what_it_cannot_run():
    with pytest.raises(RuntimeError, match="ValueError"):
        measure.in_fresh_process(measure.loglog_slope, [1], [1])
    with pytest.raises(TypeError, match="module-level"):
        measure.in_fresh_process(lambda: 1)
    with pytest.raises(TypeError, match="JSON"):
        measure.in_fresh_process(allocate, np.ones(2))
    with pytest.raises(TypeError, match="env"):
        measure.in_fresh_process(allocate, 8, env=["XLA_FLAGS"])
    with pytest.raises(TypeError, match="fn must be a function"):
        measure.timing(3.0)
    with pytest.raises(ValueError, match="repeats"):
        measure.timing(lambda: 0, repeats=0)


def test_loglog_slope():
    n = np.array([100, 200, 400, 800])
    # a least-squares fit of 4 exact points, log n from 4.6 to 6.7: conditioned by the spread of log n
    rule = tolerance(np.float64, 4, cond=np.log(n).max() / np.ptp(np.log(n)))
    assert measure.loglog_slope(n, 3e-9 * n**3) == pytest.approx(3.0, rel=rule)
    assert measure.loglog_slope(n, 0.5 * n**2.0) == pytest.approx(2.0, rel=rule)
    with pytest.raises(ValueError, match="positive"):
        measure.loglog_slope([1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="seconds"):
        measure.loglog_slope([1, 2, 3], [1.0, 2.0])


def test_csv_round_trip(tmp_path):
    rows = [{"benchmark": "a", "median_s": 0.125, "n": 10}, {"benchmark": "b", "median_s": 2.5, "extra": "x"}]
    path = measure.write_rows("bench.csv", rows, tmp_path / "results")
    assert path == tmp_path / "results" / "bench.csv"
    back = measure.read_rows("bench.csv", numbers=("median_s", "n"), directory=tmp_path / "results")
    assert [r["benchmark"] for r in back] == ["a", "b"]
    assert [r["median_s"] for r in back] == [0.125, 2.5]
    assert back[0]["n"] == 10.0 and np.isnan(back[1]["n"])  # a missing cell reads as NaN
    assert back[0]["extra"] == "" and back[1]["extra"] == "x"
    assert measure.read_rows("absent.csv", directory=tmp_path) is None
    assert measure.result_path("absent.csv", directory=tmp_path) is None
    with pytest.raises(ValueError, match="name"):
        measure.write_rows("bench.txt", rows, tmp_path)


def test_machine_describes_the_device():
    row = measure.machine()
    assert row["cores"] >= 1 and row["device_kind"] == jax.devices()[0].device_kind
    assert set(row) == {"load_1min", "cores", "machine", "device", "device_kind", "jax"}


def test_workloads():
    apply, params, x = measure.ntk_workload(5)
    assert x.shape == (5, 64) and x.dtype == jnp.float32 and apply(params, x).shape == (5,)
    steps = measure.scaling_steps(8, steps=4, snapshots=2)
    assert list(steps) == ["NTK, structured", "NTK, Jacobian", "loo_residuals (10 times)",
                           "loo_trajectory (4 steps, M=2)", "K_traj (4 steps, M=2)"]
    size = ravel_pytree(measure.ntk_workload(8)[1])[0].size  # float32, an entry sums over the parameters
    assert_close(steps["NTK, structured"](), steps["NTK, Jacobian"](), size)
    with pytest.raises(ValueError, match="n"):
        measure.ntk_workload(0)


def test_ntk_memory_in_a_fresh_process():
    tiled = measure.in_fresh_process(measure.ntk_memory, 60, 16, env={"JAX_PLATFORMS": "cpu"})
    size = ravel_pytree(measure.ntk_workload(1)[1])[0].size  # float32, an entry sums over the parameters
    assert tiled["diag_rel_err"] <= tolerance(np.float32, size) and tiled["wall_s"] > 0
    assert tiled["peak_rss_bytes"] > 50 * 2**20  # the interpreter and JAX
