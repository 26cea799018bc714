"""Predicting the test loss of a real network from its own training run (Chapter 7).

Feature learning moves the kernel, so the prediction follows the run: kernel
snapshots ``Θ(w_k)`` at ``K`` equally spaced steps and the real residuals
``r_k`` at every step feed the matrix recursion of the leave-one-out twins
(:func:`gramlib.effective_gram.loo_trajectory`), and the predicted test loss
is the leave-one-out loss

    L̂ = (1/2n) Σ_i ‖ρ_i(T)‖².

:func:`predict_test_loss` does it all in one call and sets the prediction
beside the held-out test loss and every baseline of :mod:`gramlib.baselines`.
"""

from __future__ import annotations

import csv
import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tqdm.auto import tqdm

from . import _checks

#: Above this many rows ``N = nC`` the linearized baseline uses gradient flow at
#: ``t = η T`` (Talbot contour, ``O(N²)`` per node) instead of exact gradient
#: descent (``O(n N³)``).
EXACT_DESCENT_MAX_ROWS = 1000


class Prediction(NamedTuple):
    """Predicted and measured test losses of one run, with every baseline (Chapter 7).

    Losses are ``½‖f(x) − y‖²`` averaged over samples. ``loo`` holds the
    predicted leave-one-out residuals ``ρ_i`` of all training samples;
    ``subset`` the brute-force indices, with the retrained residuals in
    ``brute_force_loo`` (empty when ``brute_force=0`` or ``retrain=False``).
    """

    predicted: float          # (1/2n) Σ ‖ρ_i(T)‖², trajectory prediction (two-time kernel)
    one_time: float           # the same with the one-time kernel Θ(t_k) only
    held_out: float           # test loss on the held-out set
    train_loss: float         # L_S(w_T)
    gcv: float                # GCV on the initial kernel
    linearized: float         # LOO loss of the linearized (initial-kernel) model
    ntk_bound: float          # sqrt(2 yᵀ Θ0⁻¹ y / n)
    contraction_free: float   # train loss + Σ_k η ε̄_k, perturbation factor at the twins
    loo: np.ndarray
    one_time_loo: np.ndarray
    subset: np.ndarray
    brute_force_loo: np.ndarray
    baseline_dynamics: str    # "descent" or "flow": how GCV and the linearized baseline were computed
    run: Any                  # the gramlib.train.TrainResult
    cross: Any                # the run's two-time kernel (k, l) ↦ Θ(t_k, t_l)

    @property
    def relative_error(self) -> float:
        """``|L̂ − L_test| / L_test``."""
        return abs(self.predicted - self.held_out) / self.held_out

    @property
    def brute_force(self) -> float:
        """Leave-one-out loss of the retrained twins on the subset (``nan`` without retraining)."""
        if not len(self.brute_force_loo):
            return float("nan")
        return 0.5 * float(np.sum(self.brute_force_loo**2)) / len(self.subset)

    @property
    def predicted_on_subset(self) -> float:
        """The trajectory prediction restricted to the brute-force subset, for a like-for-like comparison."""
        if not len(self.subset):
            return float("nan")
        return 0.5 * float(np.sum(self.loo[self.subset] ** 2)) / len(self.subset)

    @property
    def correlation(self) -> float:
        """Pearson correlation of predicted and retrained ``ρ_i`` on the subset (``nan`` without one)."""
        if len(self.brute_force_loo) < 2:
            return float("nan")
        return float(np.corrcoef(self.loo[self.subset].ravel(), self.brute_force_loo.ravel())[0, 1])

    def row(self) -> dict:
        """The scalar results as a flat dict (one row of Chapter 7's table)."""
        return {
            "predicted": self.predicted, "held_out": self.held_out,
            "relative_error": self.relative_error, "one_time": self.one_time,
            "one_time_relative_error": abs(self.one_time - self.held_out) / self.held_out,
            "train_loss": self.train_loss,
            "gcv": self.gcv, "gcv_relative_error": abs(self.gcv - self.held_out) / self.held_out,
            "linearized": self.linearized, "baseline_dynamics": self.baseline_dynamics,
            "ntk_bound": self.ntk_bound,
            "contraction_free": self.contraction_free,
            "brute_force": self.brute_force, "predicted_on_subset": self.predicted_on_subset,
            "one_time_on_subset": (0.5 * float(np.sum(self.one_time_loo[self.subset] ** 2)) / len(self.subset)
                                   if len(self.subset) else float("nan")),
            "correlation": self.correlation,
        }


def trajectory_loo(run, snapshots=None, *, cross=None, path=False):
    """Predicted LOO residuals ``ρ(T)`` ``(n, C)``-stacked ``(N,)`` from a :class:`gramlib.train.TrainResult`.

    ``cross``: the run's two-time kernel ``(k, l) ↦ Θ(t_k, t_l)`` over its
    ``K`` snapshots and the final weights (:func:`gramlib.ntk.two_time_kernel`
    of ``run.weights``), the prediction of Chapter 7; ``None`` uses the
    one-time kernel ``Θ(t_k)`` only (the matrix ODE with ``Θ`` piecewise
    constant). ``snapshots`` (a divisor of ``K``) keeps only every
    ``K/snapshots``-th snapshot, each then standing for ``steps/snapshots``
    steps: the error of using fewer kernels, measured on the same run.
    ``path=True`` also returns the twins' ``ρ(k)`` at every step ``(steps, N)``.
    """
    from . import effective_gram

    thetas, stride = run.thetas, 1
    if snapshots is not None:
        k = _checks.integer(snapshots, "snapshots", minimum=1)
        if len(thetas) % k:
            raise ValueError(f"snapshots must divide the run's {len(thetas)} snapshots, got {k}")
        stride = len(thetas) // k
        thetas = thetas[::stride]
    if cross is not None and stride > 1:
        full = cross
        cross = lambda k, l: full(k * stride if k < len(thetas) else len(run.thetas), l * stride)  # noqa: E731
    out = effective_gram.loo_trajectory(thetas, run.residuals, run.lr, outputs=run.outputs, cross=cross, path=path)
    return tuple(np.asarray(o) for o in out) if path else np.asarray(out)


def held_out_loss(apply, params, x, y):
    """``(1/2m) Σ_j ‖f(x_j) − y_j‖²`` on a held-out set."""
    r = np.asarray(apply(params, x), dtype=float) - np.asarray(y)
    return 0.5 * float(np.sum(r**2)) / len(r)


def predict_test_loss(model, dataset, *, key, lr=1.0, steps=3000, snapshots=30, brute_force=30,
                      retrain=True, batch_size=None, dtype=None, progress=True) -> Prediction:
    """Train ``model`` on ``dataset`` and predict its test loss from the run (Chapter 7).

    ``model`` is a :class:`gramlib.models.Model`, ``dataset`` a
    :class:`gramlib.data.Dataset`; ``key`` draws the initialization and the
    brute-force subset. Full-batch gradient descent with step ``lr`` for
    ``steps`` steps records ``snapshots`` kernels; the prediction is the
    leave-one-out loss of :func:`trajectory_loo` with the run's two-time
    kernel, ``one_time`` the same with the one-time kernel. Baselines: GCV and the
    linearized LOO loss on the initial kernel ``Θ_0`` (exact gradient descent
    for ``N ≤`` :data:`EXACT_DESCENT_MAX_ROWS`, else gradient flow at
    ``t = lr·steps``), the NTK-norm bound on ``Θ_0``, the contraction-free
    integral, and leave-one-out retraining of ``brute_force`` random samples
    (``0`` to skip; ``retrain=False`` draws the same subset and reports the
    prediction on it without retraining, for runs whose twins were retrained
    elsewhere). ``dtype`` casts the parameters (default: as initialized).
    """
    from . import baselines, ntk, train

    steps = _checks.integer(steps, "steps", minimum=1)
    snapshots = _checks.integer(snapshots, "snapshots", minimum=1)
    brute_force = _checks.integer(brute_force, "brute_force", minimum=0)
    k_init, k_subset = jax.random.split(key)
    params = model.init(k_init)
    if dtype is not None:
        params = jax.tree_util.tree_map(lambda w: w.astype(dtype), params)
    run = train.gradient_descent(model.apply, params, dataset.x_train, dataset.y_train, lr=lr,
                                 steps=steps, snapshots=snapshots, batch_size=batch_size,
                                 progress=progress)
    cross = ntk.two_time_kernel(model.apply, run.weights, dataset.x_train, batch_size=batch_size)
    rho, rho_path = trajectory_loo(run, cross=cross, path=True)
    one_time = trajectory_loo(run)
    n, c = run.n, run.outputs
    theta0, r0 = run.thetas[0], run.residuals[0]
    exact = len(r0) <= EXACT_DESCENT_MAX_ROWS
    linear, _ = baselines.linearized_loss(theta0, r0, steps if exact else lr * steps, outputs=c,
                                          lr=lr if exact else None)
    gcv = baselines.gcv(theta0, r0, steps if exact else lr * steps, outputs=c, lr=lr if exact else None)
    subset, bf = np.zeros(0, int), np.zeros((0,) if c == 1 else (0, c))
    if brute_force and retrain:
        subset, bf = baselines.brute_force_loo(model.apply, params, dataset.x_train, dataset.y_train,
                                               lr=lr, steps=steps, size=brute_force, key=k_subset,
                                               progress=progress)
    elif brute_force:
        subset = baselines.brute_force_subset(k_subset, n, brute_force)
    loo = rho if c == 1 else rho.reshape(n, c)
    return Prediction(
        predicted=0.5 * float(np.sum(rho**2)) / n,
        one_time=0.5 * float(np.sum(one_time**2)) / n,
        held_out=held_out_loss(model.apply, run.params, dataset.x_test, dataset.y_test),
        train_loss=float(run.train_loss[-1]),
        gcv=float(gcv),
        linearized=float(linear),
        ntk_bound=baselines.ntk_norm_bound(theta0, dataset.y_train),
        baseline_dynamics="descent" if exact else "flow",
        contraction_free=baselines.contraction_free_loss(run.thetas, run.residuals, rho_path, lr, outputs=c),
        loo=loo, one_time_loo=one_time if c == 1 else one_time.reshape(n, c), subset=subset,
        brute_force_loo=bf, run=run, cross=cross,
    )


def frozen_kernel_losses(model, dataset, *, key, time):
    """Exact leave-one-out loss and held-out loss of the linearized network on one split (Chapter 7).

    The network linearized at its initialization ``w_0`` (drawn with ``key``)
    is kernel regression with the frozen NTK ``Θ_0``. Trained by gradient
    flow for ``time`` (``η T`` for ``T`` steps of size ``η``), its
    leave-one-out loss is exact (:func:`gramlib.baselines.linearized_loss`)
    and so is its test residual
    ``r_test = r0_test − Θ_0(X_test, X) Θ_0⁻¹ (I − e^{−Θ_0 t/n}) r0``
    (:func:`gramlib.ntk.kernel_test_residuals`). Their difference over many
    splits is the sampling noise of leave-one-out itself, with no
    approximation in the predictor. Returns ``(loo, held_out)``.
    """
    from . import baselines, ntk

    time = _checks.positive(time, "time")
    params = model.init(key)
    x, xt = jnp.asarray(dataset.x_train), jnp.asarray(dataset.x_test)
    r0 = (np.asarray(model.apply(params, x)) - dataset.y_train).reshape(-1)
    r0_test = (np.asarray(model.apply(params, xt)) - dataset.y_test).reshape(-1)
    outputs = len(r0) // len(x)
    theta = ntk.empirical_ntk(model.apply, params, x)
    theta_test = ntk.empirical_ntk(model.apply, params, xt, x)
    loo, _ = baselines.linearized_loss(theta, r0, time, outputs=outputs)
    r_test = np.asarray(ntk.kernel_test_residuals(theta, theta_test, r0, r0_test, time, outputs=outputs))
    return float(loo), 0.5 * float(np.sum(r_test**2)) / len(xt)


# ----------------------------------------------------------------------------- Chapter 7's table

#: The settings of Chapter 7. ``"default"``: the CPU-scale table of the book
#: (3 data sets × 2 architectures × 3 seeds, binary ±1 targets, n = 300,
#: 1000 held-out samples). ``"paper"``: 10-class one-hot subsets of MNIST,
#: Fashion-MNIST and CIFAR-10 with more samples (a GPU, e.g. Colab, and a
#: download of the data are needed). ``"smoke"``: a seconds-long run of the
#: same pipeline for tests.
SCALES = {
    "default": dict(datasets=("digits", "mnist1d", "teacher"), n_train=300, n_test=1000, task="parity",
                    width=512, channels=16, lr=1.0, steps=3000, snapshots=30, brute_force=30,
                    seeds=(0, 1, 2), random_label_seeds=(0,), snapshot_counts=(1, 2, 3, 5, 10, 15, 30),
                    noise_splits=20),
    "paper": dict(datasets=("mnist", "fashion_mnist", "cifar10"), n_train=500, n_test=2000, task="onehot",
                  width=512, channels=32, lr=1.0, steps=1000, snapshots=20, brute_force=20,
                  seeds=(0, 1, 2), random_label_seeds=(0,), snapshot_counts=(1, 2, 5, 10, 20),
                  noise_splits=10),
    "smoke": dict(datasets=("digits", "mnist1d", "teacher"), n_train=40, n_test=100, task="parity",
                  width=32, channels=4, lr=1.0, steps=40, snapshots=4, brute_force=4,
                  seeds=(0,), random_label_seeds=(0,), snapshot_counts=(1, 2, 4), noise_splits=3),
}


def dataset(name, n_train, n_test, *, key, task="parity"):
    """A Chapter 7 data set by name, with the input shape its CNN needs."""
    from . import data

    if name == "digits":
        return data.digits(n_train, n_test, key=key, task=task), (8, 8, 1)
    if name == "mnist1d":
        return data.mnist1d(n_train, n_test, key=key, task=task), (40, 1)
    if name == "teacher":
        return data.teacher(n_train, n_test, key=key), (32, 1)
    ds = data.images(name, n_train, n_test, key=key, task=task)
    return ds, ((32, 32, 3) if name == "cifar10" else (28, 28, 1))


def architecture(name, input_shape, outputs, setting, dtype):
    """The MLP (2 layers, tanh) or CNN (2 convolutions + readout, tanh) of Chapter 7, NTK parameterization."""
    from . import models

    if name == "mlp":
        return models.mlp(math.prod(input_shape), setting["width"], 2, outputs, dtype=dtype)
    return models.cnn(input_shape, setting["channels"], 3, outputs, dtype=dtype)


def architecture_deep_relu(input_shape, setting, dtype):
    """The strong-feature-learning network of Chapter 7's limits: a 4-layer ReLU MLP."""
    from . import models

    return models.mlp(math.prod(input_shape), setting["width"], 4, 1, activation="relu", dtype=dtype)


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _loss(rho, n):
    return 0.5 * float(np.sum(np.asarray(rho) ** 2)) / n


def _in_float64(fn):
    """Run ``fn`` with JAX's float64 switched on and restore the caller's setting afterwards."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = bool(jax.config.jax_enable_x64)
        jax.config.update("jax_enable_x64", True)
        try:
            return fn(*args, **kwargs)
        finally:
            jax.config.update("jax_enable_x64", before)

    return wrapper


@_in_float64
def reproduce_ch7(out_dir="results", scale="default", *, archs=("mlp", "cnn"), datasets=None, seeds=None,
                  retrain=True, progress=True):
    """Regenerate Chapter 7's tables (CSV) and figures (PNG) under ``out_dir``.

    ``ch7_table.csv``: one row per run (data set, architecture, true or random
    labels, seed) with the prediction, the held-out loss and every baseline;
    ``ch7_summary.csv``: per cell, the means over seeds and the mean relative
    errors; ``ch7_snapshots.csv``: the prediction with fewer kernel
    snapshots; ``ch7_predicted_vs_heldout.png`` and ``ch7_snapshots.png``.
    ``archs``, ``datasets`` and ``seeds`` restrict the runs to those
    architectures, data sets and seeds (``None``: all of the scale's; a
    random-label run is kept if its seed is kept); ``retrain=False`` skips the
    brute-force retraining but still reports the predictions on the subsets it
    would retrain (their ``brute_force`` and ``correlation`` are then empty).
    Runs in float64. Returns the summary rows. The limits are
    :func:`reproduce_ch7_limits`.
    """
    from . import data

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    archs = tuple(archs)
    if not archs or set(archs) - {"mlp", "cnn"}:
        raise ValueError(f"archs must be a non-empty subset of ('mlp', 'cnn'), got {archs}")
    setting = dict(SCALES[scale])
    for option, value, keys in (("datasets", datasets, ("datasets",)),
                                ("seeds", seeds, ("seeds", "random_label_seeds"))):
        if value is None:
            continue
        allowed = sorted(set().union(*(setting[k] for k in keys)))
        if not value or set(value) - set(allowed):
            raise ValueError(f"{option} must be a non-empty subset of {allowed} at scale {scale!r}, got {value}")
        for k in keys:
            setting[k] = tuple(v for v in setting[k] if v in set(value))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.float64
    rows, snaps = [], []
    for name in setting["datasets"]:
        for arch in archs:
            model = None  # one model object per cell, so that compiled code is reused across seeds
            for labels, seeds in (("true", setting["seeds"]), ("random", setting["random_label_seeds"])):
                for seed in seeds:
                    k_data, k_run, k_labels = jax.random.split(jax.random.PRNGKey(seed), 3)
                    ds, shape = dataset(name, setting["n_train"], setting["n_test"], key=k_data,
                                        task=setting["task"])
                    if labels == "random":
                        ds = data.random_labels(ds, key=k_labels)
                    outputs = 1 if ds.y_train.ndim == 1 else ds.y_train.shape[1]
                    if model is None:
                        model = architecture(arch, shape, outputs, setting, dtype)
                    start = time.time()
                    p = predict_test_loss(model, ds, key=k_run, lr=setting["lr"], steps=setting["steps"],
                                          snapshots=setting["snapshots"],
                                          brute_force=setting["brute_force"], retrain=retrain,
                                          progress=progress)
                    row = {"dataset": name, "arch": arch, "labels": labels, "seed": seed, **p.row(),
                           "seconds": time.time() - start}
                    rows.append(row)
                    _write_csv(out / "ch7_table.csv", rows)
                    if labels == "true":
                        for k in setting["snapshot_counts"]:
                            pred = _loss(trajectory_loo(p.run, k, cross=p.cross), p.run.n)
                            one = _loss(trajectory_loo(p.run, k), p.run.n)
                            snaps.append({"dataset": name, "arch": arch, "seed": seed, "snapshots": k,
                                          "predicted": pred, "one_time": one, "held_out": p.held_out,
                                          "relative_error": abs(pred - p.held_out) / p.held_out,
                                          "one_time_relative_error": abs(one - p.held_out) / p.held_out})
                        _write_csv(out / "ch7_snapshots.csv", snaps)
                    if progress:
                        print(f"{name:8s} {arch} {labels:6s} seed {seed}: predicted {p.predicted:.4f} "
                              f"held-out {p.held_out:.4f} GCV {p.gcv:.4f} corr {p.correlation:.4f} "
                              f"({row['seconds']:.0f} s)", flush=True)
    summary = summarize(rows)
    _write_csv(out / "ch7_summary.csv", summary)
    figures(rows, snaps, out)
    return summary


@_in_float64
def reproduce_ch7_limits(out_dir="results", scale="default", *, retrain=True, progress=True):
    """Chapter 7's limits: a 4-layer ReLU MLP on the digits at ``η/2, η, 2η`` (strong feature learning).

    Writes ``ch7_limits.csv``: per learning rate, the prediction (two-time and
    one-time), the held-out loss, every baseline, and on the retrained subset
    the mean of ``|ρ_i^pred| / |ρ_i^brute|`` for both recursions (empty with
    ``retrain=False``, which skips the retraining, as in :func:`reproduce_ch7`).
    The retraining is a GPU job: the deep network has 17 times the parameters
    of the table's MLP. Returns the rows.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    setting = SCALES[scale]
    if setting["task"] != "parity":
        raise ValueError(f"the limits run on the digits' parity task; scale {scale!r} has task {setting['task']!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds, shape = dataset("digits", setting["n_train"], setting["n_test"], key=jax.random.PRNGKey(0))
    deep = architecture_deep_relu(shape, setting, np.float64)
    limits = []
    for lr in (setting["lr"] / 2, setting["lr"], 2 * setting["lr"]):
        try:
            p = predict_test_loss(deep, ds, key=jax.random.PRNGKey(1), lr=lr, steps=setting["steps"],
                                  snapshots=setting["snapshots"], brute_force=setting["brute_force"],
                                  retrain=retrain, progress=progress)
        except FloatingPointError:
            limits.append({"dataset": "digits", "arch": "mlp4-relu", "lr": lr, "diverged": True})
            continue
        bf = np.abs(p.brute_force_loo) if len(p.brute_force_loo) else np.nan
        limits.append({"dataset": "digits", "arch": "mlp4-relu", "lr": lr, "diverged": False, **p.row(),
                       "loo_ratio_to_brute_force": float(np.mean(np.abs(p.loo[p.subset]) / bf)),
                       "one_time_ratio_to_brute_force": float(np.mean(np.abs(p.one_time_loo[p.subset]) / bf))})
        _write_csv(out / "ch7_limits.csv", limits)
    return limits


@_in_float64
def reproduce_ch7_noise(out_dir="results", scale="default", *, archs=("mlp", "cnn"), progress=True):
    """The sampling noise of leave-one-out at the scale of Chapter 7's table: ``ch7_noise.csv``.

    For each data set and architecture, ``noise_splits`` fresh splits (seeds
    1000, 1001, …, disjoint from the table's) and initializations: the exact
    leave-one-out loss and the held-out loss of the linearized network
    (:func:`frozen_kernel_losses`, gradient flow for ``time = η T``). One row
    per cell: their means, the mean, median and 90th percentile of
    ``|LOO − held-out| / held-out``, and the share of splits above 10%.
    Returns the rows.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    setting = SCALES[scale]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    cells = [(name, arch) for name in setting["datasets"] for arch in archs]
    for name, arch in tqdm(cells, desc="noise floor", disable=not progress):
        model, pairs = None, []
        for seed in range(1000, 1000 + setting["noise_splits"]):
            k_data, k_run = jax.random.split(jax.random.PRNGKey(seed))
            ds, shape = dataset(name, setting["n_train"], setting["n_test"], key=k_data, task=setting["task"])
            if model is None:
                outputs = 1 if ds.y_train.ndim == 1 else ds.y_train.shape[1]
                model = architecture(arch, shape, outputs, setting, np.float64)
            pairs.append(frozen_kernel_losses(model, ds, key=k_run, time=setting["lr"] * setting["steps"]))
        loo, held = np.array(pairs).T
        rel = np.abs(loo - held) / held
        rows.append({"dataset": name, "arch": arch, "splits": len(loo), "loo": float(loo.mean()),
                     "held_out": float(held.mean()), "mean_relative_error": float(rel.mean()),
                     "median_relative_error": float(np.median(rel)),
                     "p90_relative_error": float(np.quantile(rel, 0.9)),
                     "share_above_10pct": float(np.mean(rel > 0.10))})
        _write_csv(out / "ch7_noise.csv", rows)
    return rows


def summarize(rows):
    """Per (data set, architecture): means over seeds of the true-label runs, and the random-label means."""
    cells = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for arch in ("mlp", "cnn"):
            true = [r for r in rows if (r["dataset"], r["arch"], r["labels"]) == (name, arch, "true")]
            rand = [r for r in rows if (r["dataset"], r["arch"], r["labels"]) == (name, arch, "random")]
            if not true:
                continue
            mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else float("nan")  # noqa: E731
            cells.append({
                "dataset": name, "arch": arch, "runs": len(true),
                "predicted": mean(true, "predicted"), "held_out": mean(true, "held_out"),
                "relative_error": mean(true, "relative_error"), "one_time": mean(true, "one_time"),
                "one_time_relative_error": mean(true, "one_time_relative_error"), "gcv": mean(true, "gcv"),
                "gcv_relative_error": mean(true, "gcv_relative_error"),
                "linearized": mean(true, "linearized"), "ntk_bound": mean(true, "ntk_bound"),
                "contraction_free": mean(true, "contraction_free"), "brute_force": mean(true, "brute_force"),
                "predicted_on_subset": mean(true, "predicted_on_subset"),
                "min_correlation": float(np.min([r["correlation"] for r in true])),
                "random_predicted": mean(rand, "predicted"), "random_held_out": mean(rand, "held_out"),
            })
    return cells


def read_table(path):
    """Rows of a CSV written by :func:`reproduce_ch7`, numbers as floats (``seed`` as int)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    text = {"dataset", "arch", "labels", "diverged", "baseline_dynamics"}
    for r in rows:
        for k, v in r.items():
            if k not in text:
                r[k] = int(v) if k in ("seed", "snapshots", "runs") else float(v)
    return rows


def plot_predicted_vs_heldout(ax, rows):
    """Predicted against held-out test loss for every run (filled: true labels, hollow: random), with the diagonal."""
    from . import plotting

    colors = dict(zip(dict.fromkeys(r["dataset"] for r in rows), plotting.PALETTE))
    for r in rows:
        ax.scatter(r["held_out"], r["predicted"], marker="o" if r["arch"] == "mlp" else "s",
                   facecolors=colors[r["dataset"]] if r["labels"] == "true" else "none",
                   edgecolors=colors[r["dataset"]], s=36)
    lo = min(min(r["held_out"], r["predicted"]) for r in rows) * 0.8
    hi = max(max(r["held_out"], r["predicted"]) for r in rows) * 1.25
    ax.plot([lo, hi], [lo, hi], color=plotting.COLORS["black"], lw=1, label="predicted = held-out")
    for name, c in colors.items():
        ax.scatter([], [], color=c, label=name)
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="gray", label="MLP (hollow: random labels)")
    ax.scatter([], [], marker="s", facecolors="gray", edgecolors="gray", label="CNN")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plotting.label(ax, "held-out test loss", "predicted test loss (trajectory LOO)",
                   "Predicted against held-out test loss, every run")


def plot_snapshot_error(ax, snaps):
    """Mean relative error against the number of kernel snapshots, per cell (dashed: one-time kernel)."""
    from . import plotting

    cells = dict.fromkeys((s["dataset"], s["arch"]) for s in snaps)
    ks = sorted({s["snapshots"] for s in snaps})
    keys = [("relative_error", "-")] + ([("one_time_relative_error", "--")] if "one_time_relative_error" in snaps[0]
                                       else [])
    for (name, arch), c in zip(cells, plotting.PALETTE):
        for key, style in keys:
            err = [np.mean([s[key] for s in snaps
                            if (s["dataset"], s["arch"], s["snapshots"]) == (name, arch, k)]) for k in ks]
            ax.plot(ks, err, marker="o", ls=style, color=c,
                    label=f"{name} {arch.upper()}" if style == "-" else None)
    ax.set_xscale("log")
    plotting.label(ax, "number of kernel snapshots K", "mean relative error",
                   "Error against the number of snapshots (dashed: one-time)")


def figures(rows, snaps, out):
    """``ch7_predicted_vs_heldout.png`` (all runs, with the diagonal) and ``ch7_snapshots.png``."""
    import matplotlib.pyplot as plt

    from . import plotting

    fig, ax = plotting.figure(1, height=4.2)
    plot_predicted_vs_heldout(ax, rows)
    fig.savefig(out / "ch7_predicted_vs_heldout.png")
    plt.close(fig)
    if snaps:
        fig, ax = plotting.figure(1, height=3.4)
        plot_snapshot_error(ax, snaps)
        fig.savefig(out / "ch7_snapshots.png")
        plt.close(fig)
