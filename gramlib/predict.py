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

from typing import Any, NamedTuple

import jax
import numpy as np

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
    ``brute_force_loo`` (empty when ``brute_force=0``).
    """

    predicted: float          # (1/2n) Σ ‖ρ_i(T)‖², trajectory (moving-kernel) prediction
    held_out: float           # test loss on the held-out set
    train_loss: float         # L_S(w_T)
    gcv: float                # GCV on the initial kernel
    linearized: float         # LOO loss of the linearized (initial-kernel) model
    ntk_bound: float          # sqrt(2 yᵀ Θ0⁻¹ y / n)
    contraction_free: float   # train loss + Σ_k η ε_k
    loo: np.ndarray
    subset: np.ndarray
    brute_force_loo: np.ndarray
    run: Any                  # the gramlib.train.TrainResult

    @property
    def relative_error(self) -> float:
        """``|L̂ − L_test| / L_test``."""
        return abs(self.predicted - self.held_out) / self.held_out

    @property
    def brute_force(self) -> float:
        """Leave-one-out loss of the retrained twins on the subset (``nan`` without one)."""
        if not len(self.subset):
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
        if len(self.subset) < 2:
            return float("nan")
        return float(np.corrcoef(self.loo[self.subset].ravel(), self.brute_force_loo.ravel())[0, 1])

    def row(self) -> dict:
        """The scalar results as a flat dict (one row of Chapter 7's table)."""
        return {
            "predicted": self.predicted, "held_out": self.held_out,
            "relative_error": self.relative_error, "train_loss": self.train_loss,
            "gcv": self.gcv, "gcv_relative_error": abs(self.gcv - self.held_out) / self.held_out,
            "linearized": self.linearized, "ntk_bound": self.ntk_bound,
            "contraction_free": self.contraction_free,
            "brute_force": self.brute_force, "predicted_on_subset": self.predicted_on_subset,
            "correlation": self.correlation,
        }


def trajectory_loo(run, snapshots=None):
    """Predicted LOO residuals ``ρ(T)`` ``(n, C)``-stacked ``(N,)`` from a :class:`gramlib.train.TrainResult`.

    ``snapshots`` (a divisor of the run's snapshot count ``K``) keeps only
    every ``K/snapshots``-th kernel, each then standing for ``steps/snapshots``
    steps: the error of using fewer kernels, measured on the same run.
    """
    from . import effective_gram

    thetas = run.thetas
    if snapshots is not None:
        k = _checks.integer(snapshots, "snapshots", minimum=1)
        if len(thetas) % k:
            raise ValueError(f"snapshots must divide the run's {len(thetas)} snapshots, got {k}")
        thetas = thetas[:: len(thetas) // k]
    return np.asarray(effective_gram.loo_trajectory(thetas, run.residuals, run.lr, outputs=run.outputs))


def held_out_loss(apply, params, x, y):
    """``(1/2m) Σ_j ‖f(x_j) − y_j‖²`` on a held-out set."""
    r = np.asarray(apply(params, x), dtype=float) - np.asarray(y)
    return 0.5 * float(np.sum(r**2)) / len(r)


def predict_test_loss(model, dataset, *, key, lr=1.0, steps=3000, snapshots=30, brute_force=30,
                      batch_size=None, dtype=None, progress=True) -> Prediction:
    """Train ``model`` on ``dataset`` and predict its test loss from the run (Chapter 7).

    ``model`` is a :class:`gramlib.models.Model`, ``dataset`` a
    :class:`gramlib.data.Dataset`; ``key`` draws the initialization and the
    brute-force subset. Full-batch gradient descent with step ``lr`` for
    ``steps`` steps records ``snapshots`` kernels; the prediction is the
    leave-one-out loss of :func:`trajectory_loo`. Baselines: GCV and the
    linearized LOO loss on the initial kernel ``Θ_0`` (exact gradient descent
    for ``N ≤`` :data:`EXACT_DESCENT_MAX_ROWS`, else gradient flow at
    ``t = lr·steps``), the NTK-norm bound on ``Θ_0``, the contraction-free
    integral, and leave-one-out retraining of ``brute_force`` random samples
    (``0`` to skip). ``dtype`` casts the parameters (default: as initialized).
    """
    from . import baselines, train

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
    rho = trajectory_loo(run)
    n, c = run.n, run.outputs
    theta0, r0 = run.thetas[0], run.residuals[0]
    exact = len(r0) <= EXACT_DESCENT_MAX_ROWS
    linear, _ = baselines.linearized_loss(theta0, r0, steps if exact else lr * steps, outputs=c,
                                          lr=lr if exact else None)
    gcv = baselines.gcv(theta0, r0, steps if exact else lr * steps, outputs=c, lr=lr if exact else None)
    if brute_force:
        subset, bf = baselines.brute_force_loo(model.apply, params, dataset.x_train, dataset.y_train,
                                               lr=lr, steps=steps, size=brute_force, key=k_subset,
                                               progress=progress)
    else:
        subset, bf = np.zeros(0, int), np.zeros((0,) if c == 1 else (0, c))
    loo = rho if c == 1 else rho.reshape(n, c)
    return Prediction(
        predicted=0.5 * float(np.sum(rho**2)) / n,
        held_out=held_out_loss(model.apply, run.params, dataset.x_test, dataset.y_test),
        train_loss=float(run.train_loss[-1]),
        gcv=float(gcv),
        linearized=float(linear),
        ntk_bound=baselines.ntk_norm_bound(theta0, dataset.y_train),
        contraction_free=baselines.contraction_free_loss(run.thetas, run.residuals, lr, outputs=c),
        loo=loo, subset=subset, brute_force_loo=bf, run=run,
    )
