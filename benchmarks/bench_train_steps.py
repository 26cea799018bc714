"""Benchmark: gradient-descent steps of Chapter 7's models, inside a ``lax.scan`` loop or one call per step.

Run ``python benchmarks/bench_train_steps.py [--steps 100] [--repeats 3]``.
Times ``gramlib.train.gradient_descent`` (no snapshots) for ``--steps``
steps of the table's MLP and CNN on the digits (n = 300, float64) twice: as
the library runs it (``train._loop_free``: on the CPU a convolutional model
takes one compiled step per call), and with the same network hidden behind a
plain function, which ``train`` cannot see into and therefore steps inside a
``lax.scan`` loop. Prints
the time per step and writes ``benchmarks/results/train_steps.csv``; the
residuals of the two must agree to rounding.
"""

import argparse

import jax
import numpy as np

from gramlib import predict, train
from benchmarks import machine, median_time, write_rows  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    setting = predict.SCALES["default"]
    ds, shape = predict.dataset("digits", setting["n_train"], setting["n_test"], key=jax.random.PRNGKey(0))
    rows = []
    for arch in ("mlp", "cnn"):
        model = predict.architecture(arch, shape, 1, setting, np.float64)
        params = model.init(jax.random.PRNGKey(1))
        residuals = {}
        for name, apply in (("library", model.apply), ("loop body", lambda p, x: model.apply(p, x))):
            def run():
                out = train.gradient_descent(apply, params, ds.x_train, ds.y_train, lr=setting["lr"],
                                             steps=args.steps, chunk=args.steps, progress=False)
                residuals[name] = out.residuals
                return out.params

            timing = median_time(run, args.repeats)
            per_step = timing["median_s"] / args.steps
            rows.append({"benchmark": f"{args.steps} gradient-descent steps, {arch.upper()}, digits n=300, float64",
                         "variant": name, "one_call_per_step": train._loop_free(apply), **machine(), **timing,
                         "ms_per_step": round(1e3 * per_step, 2)})
            print(f"{arch.upper()} {name:10s}: {1e3 * per_step:7.2f} ms per step "
                  f"(first call {timing['first_call_s']:.1f} s)", flush=True)
        diff = float(np.max(np.abs(residuals["library"] - residuals["loop body"])))
        rows[-1]["max_abs_diff_to_library"] = diff
        print(f"{arch.upper()}: max |difference| of the residuals {diff:.2e}")
    print("wrote", write_rows("train_steps.csv", rows))


if __name__ == "__main__":
    main()
