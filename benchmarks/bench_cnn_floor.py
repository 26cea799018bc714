"""Benchmark: how close gramlib's CNN eNTK is to the floor of any Jacobian-contraction method, beside the peer.

Run ``python -m benchmarks.bench_cnn_floor [--processes 7] [--repeats 7] [--rounds 2]``. On the peer
benchmark's ``cnn`` workload (``benchmarks/peer_workloads.py``: three 3×3 convolutions of 16 channels on 8×8
inputs, a dense read-out, float32, ``n = 1000``), times in one process, alternately, ``--rounds`` times each
(best median kept):

* ``gramlib``: :func:`gramlib.ntk.empirical_ntk` (``method="auto"``), which compiles the factors and their
  contraction as two programs; ``gramlib, one program``: the same two steps compiled as one;
* ``floor: per-sample gradients``: ``vmap(grad)`` of the network over the samples, the per-sample Jacobian
  ``J`` ``(n, p)`` that any Jacobian contraction needs (conv filters have more positions than a patch
  contraction can save: ``S² (F + C_out) > F C_out`` for every filter here);
* ``floor: J Jᵀ``: the Gram matrix of a random ``(n, p)`` matrix of the network's parameter count,
  all of it (``a @ a.T``) and its upper block triangle (:func:`gramlib.tangent_factors._gram`);

then the peer, neural-tangents' Jacobian contraction in its own environment (:mod:`benchmarks.bench_peer`).
The sum of the two floors over the peer's time is the ratio no method that forms ``J`` from XLA's
operations can beat on this machine. Times vary from one process to the next (compilation, the machine's
load), the peer's as well, so the whole measurement is repeated in ``--processes`` fresh processes, each
paired with its own run of the peer; a row holds one process's case. Writes
``benchmarks/results/cnn_floor.csv``.
"""

import argparse
import importlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from benchmarks import bench_peer, peer_workloads
from gramlib import measure, ntk
from gramlib.kernels import tangent_factors


def cases(n):
    """``label -> callable`` of the workload, the per-sample gradients and the Gram matrix alone."""
    f, params, x = peer_workloads.workload("cnn", "float32", n=n)
    count = sum(w.size for w in jax.tree_util.tree_leaves(params))
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, count)), jnp.float32)
    grads = jax.jit(jax.vmap(jax.grad(lambda p, xi: f(p, xi[None])[0]), (None, 0)))
    full = jax.jit(lambda m: m @ m.T)
    upper = jax.jit(lambda m: tangent_factors._gram(m, m, True))
    prog, choice = ntk._plan(f, params, x, n, n, "auto")
    leaves = jax.tree_util.tree_leaves(params)
    fused = jax.jit(lambda ls, xs: (lambda fa: tangent_factors.contract(fa, fa, True))(
        tangent_factors.factors(prog, choice, ls, prog.consts, xs)))
    return count, {"gramlib": lambda: ntk.empirical_ntk(f, params, x),
                   "gramlib, one program": lambda: fused(leaves, x),
                   "floor: per-sample gradients": lambda: grads(params, x),
                   "floor: J J^T (a @ a.T)": lambda: full(a),
                   "floor: J J^T (upper blocks)": lambda: upper(a)}


def one_process(n, repeats, rounds):
    """``{label: seconds}`` of :func:`cases` (best median of ``rounds``), and the parameter count, in this process."""
    count, fns = cases(n)
    best = {}
    for _ in range(rounds):
        for label, fn in fns.items():
            t = measure.timing(fn, repeats)["median_s"]
            best[label] = min(best.get(label, t), t)
    best["floor: gradients + cheaper Gram"] = best["floor: per-sample gradients"] + min(
        best["floor: J J^T (a @ a.T)"], best["floor: J J^T (upper blocks)"])
    return {"parameters": int(count), "seconds": best}


def _importable(fn):
    """``fn`` as the fresh process imports it (under ``python -m`` this module runs as ``__main__``)."""
    return getattr(importlib.import_module("benchmarks.bench_cnn_floor"), fn.__name__)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=peer_workloads.N)
    parser.add_argument("--processes", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-make", action="store_true", help="do not make .peer-venv when it is missing")
    args = parser.parse_args(argv)
    ok, status = bench_peer.peer_environment(make=not args.no_make)
    print("peer:", status, flush=True)
    rows = []
    for process in tqdm(range(args.processes), desc="processes"):
        mine = measure.in_fresh_process(_importable(one_process), args.n, args.repeats, args.rounds)
        peer = bench_peer.run_peer("cnn", "float32", args.repeats, args.n)["median_s"] if ok else None
        for label, t in mine["seconds"].items():
            rows.append({"workload": "cnn", "dtype": "float32", "n": args.n, "parameters": mine["parameters"],
                         "process": process, "case": label, "median_s": round(t, 5),
                         "peer_median_s": round(peer, 5) if peer else None,
                         "ratio_over_peer": round(t / peer, 3) if peer else None, **measure.machine()})
            print(rows[-1], flush=True)
    print("wrote", measure.write_rows("cnn_floor.csv", rows))


if __name__ == "__main__":
    main()
