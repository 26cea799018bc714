"""Benchmark: gramlib's empirical NTK against neural-tangents' Jacobian contraction, in one run.

Run ``python -m benchmarks.bench_peer [--repeats 5] [--rounds 2]`` or
``make bench-peer``. The peer, neural-tangents 0.6.5, no longer imports on
current JAX; it runs in its own virtual environment ``.peer-venv`` (JAX
0.4.30), made by ``tools/make_peer_env.sh`` when missing (``--no-make`` to
skip), as a subprocess (``benchmarks/peer_nt.py``) that builds the same
workload from the same seed (``benchmarks/peer_workloads.py``) and prints its
timing as JSON. Per workload and dtype, gramlib and the peer are timed
alternately, ``--rounds`` times each (the best median of each is kept, so that
a burst of load on the machine hurts neither side alone); every row holds
gramlib's time, the peer's, their ratio and the relative difference of the
two kernels' traces (a check that both computed the same matrix). Writes
``benchmarks/results/peer.csv``. When the peer's environment cannot be made,
the rows say so and hold gramlib's times only.
"""

import argparse
import json
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import peer_workloads
from gramlib import measure, models, ntk

ROOT = Path(__file__).resolve().parent.parent
PEER_TIMEOUT_S = 240
SIZES = {("cnn", "float64"): 250}
"""Workloads run at fewer than ``peer_workloads.N`` inputs: the Jacobian contraction of the CNN in float64
(the peer's and gramlib's ``method="jacobian"``) needs about 16.5 GB at ``n = 1000`` (XLA's CPU backend
expands the per-sample filter transposes, grouped convolutions, to dense filters in float64)."""
PEER_PYTHON = ROOT / ".peer-venv" / "bin" / "python"


def peer_environment(make=True):
    """``(ok, message)``: whether the peer's interpreter imports neural-tangents (made first if missing)."""
    def works():
        if not PEER_PYTHON.exists():
            return False
        check = ("import sys; sys.path.insert(0, 'benchmarks'); import peer_nt; peer_nt.import_neural_tangents()")
        return subprocess.run([str(PEER_PYTHON), "-c", check], capture_output=True, cwd=ROOT,
                              env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}).returncode == 0

    if works():
        return True, "neural-tangents in .peer-venv"
    if not make:
        return False, "no peer environment (.peer-venv); run tools/make_peer_env.sh"
    made = subprocess.run(["bash", str(ROOT / "tools" / "make_peer_env.sh"), str(ROOT / ".peer-venv")],
                          capture_output=True, text=True)
    if made.returncode == 0 and works():
        return True, "neural-tangents in .peer-venv (made now)"
    tail = (made.stderr or made.stdout).strip().splitlines()[-1:] or ["unknown error"]
    return False, f"the peer environment could not be made (tools/make_peer_env.sh: {tail[0]})"


def run_peer(name, dtype, repeats, n):
    try:
        out = subprocess.run([str(PEER_PYTHON), str(ROOT / "benchmarks" / "peer_nt.py"), name, dtype, str(repeats),
                              str(n)], capture_output=True, text=True, timeout=PEER_TIMEOUT_S,
                             env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"peer did not finish {name} {dtype} n={n} in {PEER_TIMEOUT_S} s") from None
    if out.returncode:
        raise RuntimeError(f"peer failed on {name} {dtype}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def gramlib_cases(name, dtype, n):
    """``label -> callable`` for gramlib on workload ``name``; the first label is the headline."""
    f, params, x = peer_workloads.workload(name, dtype, n=n)
    if name == "gramlib-mlp":
        model = models.mlp(peer_workloads.D, peer_workloads.WIDTH, 2, dtype=jnp.dtype(dtype))
        return {"gramlib.models.mlp": lambda: ntk.empirical_ntk(model.apply, params, x)}
    cases = {"gramlib (traced, auto)": lambda: ntk.empirical_ntk(f, params, x),
             "gramlib (jacobian)": lambda: ntk.empirical_ntk(f, params, x, method="jacobian")}
    if name == "mlp":  # the same network built with gramlib.models
        model = models.mlp(peer_workloads.D, peer_workloads.WIDTH, 2, dtype=jnp.dtype(dtype))
        mp = [{"w": params["w"], "b": jnp.zeros((peer_workloads.WIDTH,), dtype)},
              {"w": params["v"], "b": jnp.zeros((1,), dtype)}]
        cases["gramlib.models.mlp, same weights"] = lambda: ntk.empirical_ntk(model.apply, mp, x)
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=list(peer_workloads.WORKLOADS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--no-make", action="store_true", help="do not make .peer-venv when it is missing")
    args = parser.parse_args(argv)
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # float64 workloads; float32 arrays stay float32
    try:
        ok, status = peer_environment(make=not args.no_make)
        print("peer:", status, flush=True)
        rows = []
        for name in args.workloads:
            for dtype in [d for d in args.dtypes if d in peer_workloads.DTYPES.get(name, (d,))]:
                n = SIZES.get((name, dtype), peer_workloads.N)
                cases = gramlib_cases(name, dtype, n)
                best, first = {label: None for label in cases}, {}
                peer, peer_error = None, None
                for _ in range(args.rounds):  # alternate: gramlib, then the peer, then again
                    for label, fn in cases.items():
                        t = measure.timing(fn, args.repeats)
                        if best[label] is None:
                            first[label] = t["first_call_s"]  # the compiling call: round 1 only
                        if best[label] is None or t["median_s"] < best[label]["median_s"]:
                            best[label] = t
                    if ok and peer_error is None:
                        try:
                            p = run_peer(name, dtype, args.repeats, n)
                        except RuntimeError as err:
                            peer_error = str(err)
                            continue
                        if peer is None or p["median_s"] < peer["median_s"]:
                            peer = p
                for label, fn in cases.items():
                    theta = np.asarray(fn(), np.float64)
                    row = {"workload": name, "dtype": dtype, "n": n, "gramlib": label,
                           "gramlib_median_s": best[label]["median_s"],
                           "gramlib_first_call_s": first[label]}
                    if peer is not None:
                        row.update({"peer": f"neural-tangents {peer['neural_tangents']} JACOBIAN_CONTRACTION "
                                            f"(jax {peer['jax']})",
                                    "peer_median_s": round(peer["median_s"], 4),
                                    "ratio_gramlib_over_peer": round(best[label]["median_s"] / peer["median_s"], 3),
                                    "trace_rel_diff": float(abs(np.trace(theta) - peer["trace"]) / abs(peer["trace"]))})
                    else:
                        row.update({"peer": peer_error or status})
                    row.update({"rounds": args.rounds, "repeats": args.repeats, **measure.machine()})
                    rows.append(row)
                    print(row, flush=True)
        print("wrote", measure.write_rows("peer.csv", rows))
    finally:
        jax.config.update("jax_enable_x64", x64)


if __name__ == "__main__":
    main()
