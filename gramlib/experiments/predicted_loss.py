"""Chapter 7's one-call report: train a network, predict its test loss, and set every baseline beside it.

:func:`predict_test_loss` composes the pieces of the lower layers: the run
(:func:`gramlib.train.gradient_descent`), its leave-one-out predictor
(:func:`gramlib.predictor.loo_predictor`: the two-time and one-time recursions and the twins read out
through the network), the baselines on the initial kernel and the brute-force retraining
(:mod:`gramlib.baselines`), and the held-out loss. A researcher with a run of their own uses the
predictor directly; the chapter uses this report, a :class:`Prediction`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import numpy as np

from .. import _checks
from ..mathematics import kernel_flow
from ..runs import baselines, train
from ..runs.predict import held_out_loss
from ..runs.predictor import loo_predictor

#: Above this many rows ``N = nC`` the linearized baseline uses gradient flow at
#: ``t = η T`` (Talbot contour, ``O(N²)`` per node) instead of exact gradient
#: descent (``O(n N³)``).
EXACT_DESCENT_MAX_ROWS = 1000


class Prediction(NamedTuple):
    """Predicted and measured test losses of one run, with every baseline (Chapter 7).

    Losses are ``½‖f(x) − y‖²`` averaged over samples. ``loo`` holds the
    predicted leave-one-out residuals ``ρ_i`` of all training samples;
    ``subset`` the brute-force indices, with the retrained residuals in
    ``brute_force_loo`` (empty when ``brute_force=0`` or ``retrain=False``), and with
    ``readout=True`` the twins of the subset read out through the network in ``readout_loo`` and
    re-linearized at every snapshot in ``relinearized_loo`` (:func:`gramlib.predict.twin_readout`; empty otherwise).
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
    predictor: Any            # its gramlib.predictor.LooPredictor (two-time kernel, recursions), for more questions
    readout_loo: np.ndarray = np.zeros(0)  # twin_readout on the subset (readout=True)
    relinearized_loo: np.ndarray = np.zeros(0)  # twin_readout(relinearize=True) on the subset (readout=True)
    seconds: Mapping = MappingProxyType({})  # wall-clock seconds of the retraining and the re-linearized twins

    @property
    def relative_error(self) -> float:
        """``|L̂ − L_test| / L_test``."""
        return abs(self.predicted - self.held_out) / self.held_out

    @property
    def brute_force(self) -> float:
        """Leave-one-out loss of the retrained twins on the subset (``nan`` without retraining)."""
        if not len(self.brute_force_loo):
            return float("nan")
        return kernel_flow.residual_loss(self.brute_force_loo.ravel(), len(self.subset))

    @property
    def predicted_on_subset(self) -> float:
        """The trajectory prediction restricted to the brute-force subset, for a like-for-like comparison."""
        if not len(self.subset):
            return float("nan")
        return kernel_flow.residual_loss(self.loo[self.subset].ravel(), len(self.subset))

    @property
    def correlation(self) -> float:
        """Pearson correlation of predicted and retrained ``ρ_i`` on the subset (``nan`` without one)."""
        if len(self.brute_force_loo) < 2:
            return float("nan")
        return float(np.corrcoef(self.loo[self.subset].ravel(), self.brute_force_loo.ravel())[0, 1])

    @property
    def readout_on_subset(self) -> float:
        """The leave-one-out loss of the twins read out through the network (``nan`` without ``readout_loo``)."""
        return self._on_subset(self.readout_loo)

    @property
    def relinearized_on_subset(self) -> float:
        """The leave-one-out loss of the re-linearized twins (``nan`` without ``relinearized_loo``)."""
        return self._on_subset(self.relinearized_loo)

    def _on_subset(self, rho) -> float:
        return kernel_flow.residual_loss(rho.ravel(), len(self.subset)) if len(rho) else float("nan")

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
            "one_time_on_subset": (kernel_flow.residual_loss(self.one_time_loo[self.subset].ravel(), len(self.subset))
                                   if len(self.subset) else float("nan")),
            "correlation": self.correlation,
        }


def initialization_key(key):
    """The key :func:`predict_test_loss` draws the initialization ``w_0 = model.init(·)`` with, from its ``key``.

    ``jax.random.split(key)[0]``; the second half draws the brute-force subset. A split prepared for the
    run's own ``w_0`` (Chapter 7's centered cell, :func:`gramlib.ch7.centered_split`) is prepared with it.
    """
    return jax.random.split(key)[0]


def predict_test_loss(model, dataset, *, key, lr=1.0, steps=3000, snapshots=30, brute_force=30,
                      retrain=True, readout=False, batch_size=None, dtype=None, loop="scan",
                      progress=True) -> Prediction:
    """Train ``model`` on ``dataset`` and predict its test loss from the run (Chapter 7).

    ``model`` is a :class:`gramlib.models.Model`, ``dataset`` a
    :class:`gramlib.data.Dataset`; ``key`` draws the initialization and the
    brute-force subset. Full-batch gradient descent with step ``lr`` for
    ``steps`` steps records ``snapshots`` kernels; the prediction is the
    leave-one-out loss of the run's :func:`gramlib.predictor.loo_predictor` (the two-time
    kernel), ``one_time`` the same with the one-time kernel. Baselines: GCV and the
    linearized LOO loss on the initial kernel ``Θ_0`` (exact gradient descent
    for ``N ≤`` :data:`EXACT_DESCENT_MAX_ROWS`, else gradient flow at
    ``t = lr·steps``), the NTK-norm bound on ``Θ_0``, the contraction-free
    integral, and leave-one-out retraining of ``brute_force`` random samples
    (``0`` to skip; ``retrain=False`` draws the same subset and reports the
    prediction on it without retraining, for runs whose twins were retrained
    elsewhere). ``readout=True`` also reads the subset's twins out through the network, first order
    (``readout_loo``) and re-linearized at every snapshot with Heun's rule (``relinearized_loo``;
    :func:`gramlib.predict.twin_readout`). ``dtype`` casts the parameters (default: as initialized). ``loop``
    (``"scan"`` or ``"per_step"``) is how the run and the retrained twins take their
    steps (:func:`gramlib.train.gradient_descent`; :func:`gramlib.train.recommended_loop`
    says which is faster for a network on a backend). The :class:`Prediction` keeps the run's
    predictor (``predictor``), which answers further questions without training again
    (``p.predictor.two_time_loss(snapshots=M)``, ``p.predictor.estimate(...)``) and holds the
    two-time kernel's factors: drop the report when done with it.
    """
    steps = _checks.integer(steps, "steps", minimum=1)
    snapshots = _checks.integer(snapshots, "snapshots", minimum=1)
    brute_force = _checks.integer(brute_force, "brute_force", minimum=0)
    k_init, k_subset = initialization_key(key), jax.random.split(key)[1]
    params = model.init(k_init)
    if dtype is not None:
        params = jax.tree_util.tree_map(lambda w: w.astype(dtype), params)
    run = train.gradient_descent(model.apply, params, dataset.x_train, dataset.y_train, lr=lr,
                                 steps=steps, snapshots=snapshots, batch_size=batch_size,
                                 loop=loop, progress=progress)
    loo = loo_predictor(model.apply, run, dataset.x_train, batch_size=batch_size)
    rho, rho_path = loo.two_time(), loo.twin_residuals().path
    one_time = loo.one_time()
    n, c = run.n, run.outputs
    theta0, r0 = run.thetas[0], run.residuals[0]
    exact = len(r0) <= EXACT_DESCENT_MAX_ROWS
    fact0 = kernel_flow.factorize(theta0, outputs=c)  # Θ_0 decomposed once for GCV, linearized LOO and the bound
    linear, _ = baselines.linearized_loss(fact0, r0, steps if exact else lr * steps, lr=lr if exact else None)
    gcv = baselines.gcv(fact0, r0, steps if exact else lr * steps, lr=lr if exact else None)
    subset, bf = np.zeros(0, int), np.zeros((0,) if c == 1 else (0, c))
    seconds = {}
    if brute_force and retrain:
        start = time.perf_counter()
        subset, bf = baselines.brute_force_loo(model.apply, params, dataset.x_train, dataset.y_train,
                                               lr=lr, steps=steps, size=brute_force, key=k_subset,
                                               loop=loop, progress=progress)
        seconds["retrain"] = time.perf_counter() - start
    elif brute_force:
        subset = baselines.brute_force_subset(k_subset, n, brute_force)
    read = relinearized = np.zeros((0,) if c == 1 else (0, c))
    if readout and len(subset):
        read = loo.readout(subset)
        start = time.perf_counter()
        relinearized = loo.relinearized(subset)
        seconds["relinearized"] = time.perf_counter() - start
    return Prediction(
        predicted=kernel_flow.residual_loss(rho, n),
        one_time=kernel_flow.residual_loss(one_time, n),
        held_out=held_out_loss(model.apply, run.params, dataset.x_test, dataset.y_test),
        train_loss=float(run.train_loss[-1]),
        gcv=float(gcv),
        linearized=float(linear),
        ntk_bound=baselines.ntk_norm_bound(fact0, dataset.y_train),
        baseline_dynamics="descent" if exact else "flow",
        contraction_free=baselines.contraction_free_loss(run.thetas, run.residuals, rho_path, lr, outputs=c),
        loo=rho if c == 1 else rho.reshape(n, c), one_time_loo=one_time if c == 1 else one_time.reshape(n, c),
        subset=subset, brute_force_loo=bf, run=run, predictor=loo, readout_loo=read,
        relinearized_loo=relinearized, seconds=MappingProxyType(seconds),
    )
