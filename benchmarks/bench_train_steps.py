"""Benchmark: gradient-descent steps of Chapter 7's models, inside a ``lax.scan`` loop or one call per step.

Run ``python benchmarks/bench_train_steps.py [--steps 100] [--twins 30] [--repeats 3]``.
Times ``gramlib.train.gradient_descent`` (no snapshots) for ``--steps``
steps of the table's MLP and CNN on the digits (n = 300, float64), and
``gramlib.train.retrain_without`` for ``--twins`` twins and ``--steps // 10``
steps, twice: as the library runs them (``train._loop_free``: on the CPU a
convolutional model takes one compiled step per call and one twin at a time),
and with the same network hidden behind a plain function, which ``train``
cannot see into and therefore steps inside a ``lax.scan`` loop with all twins
in one ``vmap``. Prints the time per step (per twin and step for the twins)
and writes ``benchmarks/results/train_steps.csv``; the two must agree to rounding.
"""

import argparse

import jax
import numpy as np

from gramlib import ch7, predict, train
from benchmarks import machine, median_time, write_rows  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--twins", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    setting = ch7.SCALES["default"]
    ds, shape = ch7.dataset("digits", setting["n_train"], setting["n_test"], key=jax.random.PRNGKey(0))
    twin_steps = max(args.steps // 10, 1)
    rows = []
    for arch in ("mlp", "cnn"):
        model = ch7.architecture(arch, shape, 1, setting, np.float64)
        params = model.init(jax.random.PRNGKey(1))
        for job, count in (("gradient descent", args.steps), (f"{args.twins} twins", args.twins * twin_steps)):
            out = {}
            for name, apply in (("library", model.apply), ("lax.scan loop", lambda p, x: model.apply(p, x))):
                def run():
                    if job == "gradient descent":
                        result = train.gradient_descent(apply, params, ds.x_train, ds.y_train, lr=setting["lr"],
                                                        steps=args.steps, chunk=args.steps, progress=False)
                        out[name] = result.residuals
                        return result.params
                    out[name] = train.retrain_without(apply, params, ds.x_train, ds.y_train,
                                                      np.arange(args.twins), lr=setting["lr"], steps=twin_steps,
                                                      chunk=twin_steps, progress=False)
                    return out[name]

                timing = median_time(run, args.repeats)
                per_step = timing["median_s"] / count
                rows.append({"benchmark": f"{job}, {arch.upper()}, digits n=300, float64", "variant": name,
                             "one_call_per_step": train._loop_free(apply), **machine(), **timing,
                             "ms_per_step": round(1e3 * per_step, 2)})
                print(f"{arch.upper()} {job:16s} {name:14s}: {1e3 * per_step:8.2f} ms per step "
                      f"(first call {timing['first_call_s']:.1f} s)", flush=True)
            diff = float(np.max(np.abs(out["library"] - out["lax.scan loop"])))
            rows[-1]["max_abs_diff_to_library"] = diff
            print(f"{arch.upper()} {job}: max |difference| {diff:.2e}")
    print("wrote", write_rows("train_steps.csv", rows))


if __name__ == "__main__":
    main()
