"""Benchmark: gradient-descent steps of Chapter 7's models, inside a ``lax.scan`` loop or one call per step.

Run ``python -m benchmarks.bench_train_steps [--steps 100] [--twins 30] [--repeats 3] [--out DIR]``.
Times ``gramlib.train.gradient_descent`` (no snapshots) for ``--steps``
steps of the table's MLP and CNN on the digits (n = 300, float64), and
``gramlib.train.retrain_without`` for ``--twins`` twins and ``--steps // 10``
steps, with each of the two loops the caller can choose (``loop="scan"``:
chunks of steps inside one ``lax.scan``, all twins in one ``vmap``;
``loop="per_step"``: one compiled call per step, one twin at a time). Each
row also says which loop ``train.recommended_loop`` names for the network on
this backend. Measured with :mod:`gramlib.measure`. Prints the time per step (per twin and step for the twins) and
writes ``train_steps.csv`` to ``--out`` (default ``benchmarks/results``); the
two loops must agree to rounding.
"""

import argparse

import jax
import numpy as np

from gramlib import ch7, measure, tasks, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--twins", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="directory of train_steps.csv (default benchmarks/results)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    setting = ch7.SCALES["default"]
    cell = setting.cells["digits"]
    ds, shape = tasks.dataset("digits", cell.n_train, setting.n_test, key=jax.random.PRNGKey(0), task=cell.task)
    twin_steps = max(args.steps // 10, 1)
    rows = []
    for arch in ("mlp", "cnn"):
        model = tasks.architecture(arch, shape, 1, setting, np.float64)
        params = model.init(jax.random.PRNGKey(1))
        recommended = train.recommended_loop(model.apply, params, ds.x_train)
        for job, count in (("gradient descent", args.steps), (f"{args.twins} twins", args.twins * twin_steps)):
            out = {}
            for loop in train.LOOPS:
                def run():
                    if job == "gradient descent":
                        result = train.gradient_descent(model.apply, params, ds.x_train, ds.y_train,
                                                        lr=setting.lr, steps=args.steps, chunk=args.steps,
                                                        loop=loop, progress=False)
                        out[loop] = result.residuals
                        return result.params
                    out[loop] = train.retrain_without(model.apply, params, ds.x_train, ds.y_train,
                                                      np.arange(args.twins), lr=setting.lr, steps=twin_steps,
                                                      chunk=twin_steps, loop=loop, progress=False)
                    return out[loop]

                timing = measure.timing(run, args.repeats)
                per_step = timing["median_s"] / count
                rows.append({"benchmark": f"{job}, {arch.upper()}, digits n=300, float64", "loop": loop,
                             "recommended_loop": recommended, **measure.machine(), **timing,
                             "ms_per_step": round(1e3 * per_step, 2)})
                print(f"{arch.upper()} {job:16s} loop={loop:9s}: {1e3 * per_step:8.2f} ms per step "
                      f"(first call {timing['first_call_s']:.1f} s)", flush=True)
            diff = float(np.max(np.abs(out["scan"] - out["per_step"])))
            rows[-1]["max_abs_diff_between_loops"] = diff
            print(f"{arch.upper()} {job}: max |difference| between the loops {diff:.2e}")
    print("wrote", measure.write_rows("train_steps.csv", rows, args.out))


if __name__ == "__main__":
    main()
