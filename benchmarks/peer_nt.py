"""Time neural-tangents' Jacobian contraction on one workload; run in the peer's environment, print JSON.

``.peer-venv/bin/python benchmarks/peer_nt.py WORKLOAD DTYPE REPEATS [N]`` (made by
``tools/make_peer_env.sh``; started by ``benchmarks/bench_peer.py``). Times
``nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0,
implementation=NtkImplementation.JACOBIAN_CONTRACTION)`` under ``jax.jit``:
one compiling call, then the median of ``REPEATS`` calls.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def import_neural_tangents():
    """``import neural_tangents`` without its ``experimental`` TensorFlow bridge.

    neural-tangents 0.6.5 imports ``neural_tangents.experimental`` on import, which
    imports ``jax.experimental.jax2tf`` and with it TensorFlow; ``empirical_ntk_fn``
    uses neither, so an empty module stands in for it and TensorFlow is not installed.
    """
    import types

    sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
    import neural_tangents

    return neural_tangents


def main():
    name, dtype, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else None
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    nt = import_neural_tangents()
    import numpy as np

    import peer_workloads

    f, params, x = peer_workloads.workload(name, dtype, n=n or peer_workloads.N)
    kernel = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0,
                                         implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION))
    start = time.perf_counter()
    theta = jax.block_until_ready(kernel(x, None, params))
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(kernel(x, None, params))
        runs.append(time.perf_counter() - start)
    print(json.dumps({"median_s": float(np.median(runs)), "min_s": min(runs), "first_call_s": first,
                      "jax": jax.__version__, "neural_tangents": nt.__version__,
                      "shape": list(theta.shape), "dtype": str(theta.dtype), **peer_workloads.summary(theta)}))


if __name__ == "__main__":
    main()
