"""Benchmark: leave-one-out along a real run (loo_trajectory) against brute-force retraining.

Run ``python benchmarks/bench_loo_vs_retraining.py [--n 500] [--subset 10]``. On the
digits MLP (parity targets, width 512, NTK parameterization, float64) one
gradient-descent run records the residuals at every step and ``--snapshots``
kernels; :func:`gramlib.effective_gram.loo_trajectory` then predicts all ``n``
leave-one-out residuals. Brute force retrains without each of ``--subset``
random samples (timed, then extrapolated linearly to all ``n``). Writes
``benchmarks/results/loo_vs_retraining.csv``: the times, the speed-up and the
predicted against retrained LOO loss on the same subset.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from gramlib import baselines, data, effective_gram, measure, models, ntk, train  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--subset", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    args = parser.parse_args(argv)
    ds = data.digits(args.n, 200, key=jax.random.PRNGKey(0))
    model = models.mlp(ds.x_train.shape[1], 512, 2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(1))
    where = measure.machine()
    run, t_run = measure.timed(lambda: train.gradient_descent(
        model.apply, params, ds.x_train, ds.y_train, lr=args.lr, steps=args.steps, snapshots=args.snapshots,
        progress=False))
    measure.timed(lambda: ntk.empirical_ntk(model.apply, params, ds.x_train))  # compile
    _, t_kernel = measure.timed(lambda: ntk.empirical_ntk(model.apply, params, ds.x_train))  # one snapshot
    _, t_loo_first = measure.timed(lambda: effective_gram.loo_trajectory(run.thetas, run.residuals, run.lr))
    (rho, _, _), t_loo = measure.timed(lambda: effective_gram.loo_trajectory(run.thetas, run.residuals, run.lr))
    rho = np.asarray(rho)
    (subset, bf), t_brute = measure.timed(lambda: baselines.brute_force_loo(
        model.apply, params, ds.x_train, ds.y_train, lr=args.lr, steps=args.steps, size=args.subset,
        key=jax.random.PRNGKey(2), progress=False))
    brute_all = t_brute / args.subset * args.n
    predicted = 0.5 * float(np.mean(rho[subset] ** 2))
    retrained = 0.5 * float(np.mean(np.asarray(bf) ** 2))
    # The prediction's own cost: the kernel snapshots (timed once above, times K) and loo_trajectory;
    # the training run itself is needed by both approaches.
    t_pred = t_kernel * args.snapshots + t_loo
    row = {"benchmark": f"LOO digits MLP n={args.n} steps={args.steps} K={args.snapshots}",
           "train_run_s": round(t_run, 2), "ntk_snapshot_s": round(t_kernel, 3), "loo_trajectory_s": round(t_loo, 3),
           "loo_trajectory_first_call_s": round(t_loo_first, 3),
           "prediction_s": round(t_pred, 2), "brute_force_subset": args.subset,
           "brute_force_subset_s": round(t_brute, 2), "brute_force_all_extrapolated_s": round(brute_all, 1),
           "speedup_vs_prediction": round(brute_all / t_pred, 1),
           "speedup_incl_training_run": round(brute_all / (t_pred + t_run), 1),
           "predicted_loo_loss_subset": predicted, "retrained_loo_loss_subset": retrained,
           "relative_difference": abs(predicted - retrained) / retrained,
           "max_abs_rho_difference": float(np.max(np.abs(rho[subset] - np.asarray(bf)))),
           "predicted_loo_loss_all": 0.5 * float(np.mean(rho**2)), **where}
    print(row, flush=True)
    measure.write_rows("loo_vs_retraining.csv", [row])
    return row


if __name__ == "__main__":
    main()
