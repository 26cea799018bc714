"""The GPU benchmark of the appendix "Scaling up": one script, about 5 minutes on an H100/H200.

Run on the GPU machine as ``PYTHONPATH=. python3 benchmarks/gpu.py OUT_DIR`` (``--tiny``:
the same parts at toy sizes, to test the script on a CPU). Parts, each timed,
each in its own ``try`` so that one failure does not lose the others:

1. ``empirical_ntk`` of a 2-layer width-512 MLP (float32) at n = 10000, and at
   n = 1000 the structured path against the Jacobian contraction, and the CNN;
2. ``loo_residuals`` at n = 10000, 50 times (float64);
3. ``loo_trajectory`` at N = 1000, 3000 steps, 30 snapshots (float64);
4. one Chapter 7 run at paper scale: MNIST-1D (generated, no download), 10
   classes one-hot, n = 500 (N = 5000 rows), width-512 MLP, 1000 steps, 20
   snapshots, with brute-force retraining of 10 samples.

Writes ``OUT_DIR/gpu.csv`` (one row per measured quantity, in the format the
appendix reads from ``benchmarks/results/gpu.csv``) and ``OUT_DIR/gpu.json``,
and prints a summary. Timings are medians of 3 calls (1 for the float64
eigendecompositions of parts 2 and 3) after a compiling call; part 4 is one run.
"""

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gramlib import data, effective_gram, measure, models, ntk, predicted_loss  # noqa: E402

SIZES = {"full": dict(ntk_n=10000, ntk_small=1000, loo_n=10000, traj_n=1000, traj_steps=3000, traj_k=30,
                      ch7_n=500, ch7_test=2000, ch7_steps=1000, ch7_k=20, ch7_brute=10, repeats=3, big_repeats=1),
         "tiny": dict(ntk_n=300, ntk_small=100, loo_n=200, traj_n=60, traj_steps=60, traj_k=6,
                      ch7_n=30, ch7_test=50, ch7_steps=20, ch7_k=4, ch7_brute=2, repeats=1, big_repeats=1)}


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def part_ntk(s, add):
    apply, params, x = measure.ntk_workload(s["ntk_n"])
    t = measure.timing(lambda: ntk.empirical_ntk(apply, params, x), s["repeats"])
    add("ntk", f"empirical_ntk MLP 64-512-1 float32 n={s['ntk_n']} structured", t["median_s"], "s", t)
    xs = x[: s["ntk_small"]]
    fast = measure.timing(lambda: ntk.empirical_ntk(apply, params, xs), s["repeats"])
    slow = measure.timing(lambda: ntk.empirical_ntk(apply, params, xs, method="jacobian"), s["repeats"])
    a = ntk.empirical_ntk(apply, params, xs)
    b = ntk.empirical_ntk(apply, params, xs, method="jacobian")
    rel = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
    add("ntk", f"empirical_ntk MLP n={s['ntk_small']} structured", fast["median_s"], "s", fast)
    add("ntk", f"empirical_ntk MLP n={s['ntk_small']} jacobian", slow["median_s"], "s", slow)
    add("ntk", f"empirical_ntk MLP n={s['ntk_small']} speed-up", slow["median_s"] / fast["median_s"], "x", {})
    add("ntk", f"empirical_ntk MLP n={s['ntk_small']} max rel diff", rel, "", {})
    cnn = models.cnn((8, 8, 1), 16, 3, dtype=jnp.float32)
    cparams = cnn.init(jax.random.PRNGKey(2))
    xc = jax.random.normal(jax.random.PRNGKey(3), (s["ntk_small"], 64), jnp.float32)
    fast = measure.timing(lambda: ntk.empirical_ntk(cnn.apply, cparams, xc), s["repeats"])
    slow = measure.timing(lambda: ntk.empirical_ntk(cnn.apply, cparams, xc, method="jacobian"), s["repeats"])
    add("ntk", f"empirical_ntk CNN 8x8 16ch n={s['ntk_small']} structured", fast["median_s"], "s", fast)
    add("ntk", f"empirical_ntk CNN 8x8 16ch n={s['ntk_small']} jacobian", slow["median_s"], "s", slow)


def part_loo(s, add):
    rng = np.random.default_rng(0)
    n = s["loo_n"]
    phi = jnp.asarray(rng.standard_normal((n, n)) / np.sqrt(n))
    theta = phi @ phi.T + 0.1 * jnp.eye(n)
    r0 = jnp.asarray(rng.standard_normal(n))
    times = np.logspace(-1, 5, 50)
    t = measure.timing(lambda: effective_gram.loo_residuals(theta, r0, times), s["big_repeats"])
    add("loo", f"loo_residuals n={n} x 50 times float64", t["median_s"], "s", t)


def part_trajectory(s, add):
    rng = np.random.default_rng(1)
    n, k = s["traj_n"], s["traj_k"]
    phis = rng.standard_normal((k, n, n // 2)) / np.sqrt(n // 2)
    thetas = np.einsum("kia,kja->kij", phis, phis)
    residuals = rng.standard_normal((s["traj_steps"] + 1, n))
    t = measure.timing(lambda: effective_gram.loo_trajectory(thetas, residuals, 0.5), s["big_repeats"])
    add("trajectory", f"loo_trajectory N={n} steps={s['traj_steps']} K={k} float64", t["median_s"], "s", t)


def part_chapter7(s, add):
    ds = data.mnist1d(s["ch7_n"], s["ch7_test"], key=jax.random.PRNGKey(0), task="onehot")
    model = models.mlp(ds.x_train.shape[1], 512, 2, outputs=10, dtype=jnp.float64)
    pred, total = measure.timed(lambda: predicted_loss.predict_test_loss(
        model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=s["ch7_steps"], snapshots=s["ch7_k"],
        brute_force=s["ch7_brute"], progress=False))
    run = pred.run
    _, t_traj = measure.timed(lambda: effective_gram.loo_trajectory(run.thetas, run.residuals, run.lr, outputs=10))
    label = f"Chapter 7 MNIST-1D onehot C=10 n={s['ch7_n']} MLP-512 steps={s['ch7_steps']} K={s['ch7_k']}"
    add("chapter7", label + " total (train+snapshots+LOO+baselines+brute force)", total, "s", {})
    add("chapter7", label + " loo_trajectory alone (N=nC)", t_traj, "s", {})
    for key, value in pred.row().items():
        add("chapter7", label + " " + key, value, "", {})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    s = SIZES["tiny" if args.tiny else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = jax.devices()[0]
    log("devices:", jax.devices(), "jax", jax.__version__)
    rows, errors = [], {}

    def add(part, quantity, value, unit, timing):
        rows.append({"part": part, "measure": quantity, "value": value, "unit": unit,
                     "first_call_s": timing.get("first_call_s", ""), "repeats": timing.get("repeats", ""),
                     "device": dev.platform, "device_kind": dev.device_kind, "jax": jax.__version__})
        log(f"{quantity}: {value:.4g} {unit}" if isinstance(value, float) else f"{quantity}: {value} {unit}")
        measure.write_rows("gpu.csv", rows, out)  # after every number: a later crash loses nothing

    for name, part in [("ntk", part_ntk), ("loo", part_loo), ("trajectory", part_trajectory),
                       ("chapter7", part_chapter7)]:
        start = time.perf_counter()
        log(f"part {name} ...")
        try:
            part(s, add)
        except Exception as err:  # noqa: BLE001 - report and go on to the next part
            errors[name] = repr(err)
            traceback.print_exc()
        log(f"part {name} done in {time.perf_counter() - start:.1f} s")
    (out / "gpu.json").write_text(json.dumps({"rows": rows, "errors": errors, "device_kind": dev.device_kind},
                                             indent=1, default=str))
    log("summary:", len(rows), "numbers,", len(errors), "failed parts", errors or "")
    return rows, errors


if __name__ == "__main__":
    main()
