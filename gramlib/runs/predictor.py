"""A run's leave-one-out predictor: the expensive state built once, the questions answered from it (Chapter 7).

:func:`gramlib.predicted_loss.predict_test_loss` is the one-call convenience of the chapter: it trains,
predicts with this predictor, runs the baselines and retrains (the experiments layer composes them). A
researcher with a run of their own wants the other shape, the one of
neural-tangents' ``gradient_descent_mse → predict_fn``: build the costly objects of one run once — the
two-time kernel ``Θ(t_k, t_l)`` (:func:`gramlib.ntk.two_time_kernel`) and the forces of the two-time
recursion — and ask for any leave-one-out quantity afterwards::

    run = gramlib.gradient_descent(apply, params, x, y, lr=1.0, steps=1000, snapshots=20)
    loo = gramlib.loo_predictor(apply, run, x)
    loo.two_time_loss(), loo.one_time_loss()                 # all n samples, eqs. ch07-recursion, ch07-one-time
    loo.relinearized([3, 17, 42])                            # twins re-linearized at every snapshot
    est = loo.estimate(size=30, key=jax.random.PRNGKey(0))   # all n samples, eq. ch07-estimate
    loo.snapshot_check(est)                                  # enough snapshots?

Every method delegates to the tested function of :mod:`gramlib.runs.predict` that computes it, with the
predictor's kernel and forces; the predictor holds them (for a width-512 MLP on 300 samples about a hundred
MiB), so drop it when done.
"""

from __future__ import annotations

from ..kernels import ntk
from ..mathematics.kernel_flow import residual_loss
from . import loo_estimate, predict
from .train import TrainResult


class LooPredictor:
    """The leave-one-out questions about one gradient-descent run (:func:`loo_predictor` builds it).

    Attributes: ``apply``, ``run`` (a :class:`gramlib.train.TrainResult` with its kernel snapshots and
    weights), ``x`` (its training inputs) and ``cross`` (its two-time kernel, ``(k, l) ↦ Θ(t_k, t_l)``).
    The two-time residuals and forces are computed on first use and kept.
    """

    def __init__(self, apply, run, x, cross):
        self.apply, self.run, self.x, self.cross = apply, run, x, cross
        self._two_time = None

    def _recursion(self):
        if self._two_time is None:
            self._two_time = predict.trajectory_loo(self.run, cross=self.cross)
        return self._two_time

    def twin_residuals(self):
        """The two-time recursion of every twin, a :class:`gramlib.trajectory.TwinResiduals`: ``rho``, the
        ``path`` of every step and the segment ``forces`` (:func:`gramlib.predict.trajectory_loo`), kept."""
        return self._recursion()

    def two_time(self, snapshots=None):
        """The two-time prediction's leave-one-out residuals ``ρ_i(T)`` of all ``n`` samples, ``(N,)`` stacked
        (:func:`gramlib.predict.trajectory_loo` with the run's two-time kernel, eq. ``ch07-recursion``);
        ``snapshots`` (a divisor of the run's ``K``) recomputes them from every ``K/snapshots``-th snapshot."""
        if snapshots is None or snapshots == len(self.run.thetas):
            return self._recursion().rho
        return predict.trajectory_loo(self.run, snapshots, cross=self.cross).rho

    def two_time_loss(self, snapshots=None):
        """The trajectory prediction ``L̂ = (1/2n) Σ_i ‖ρ_i(T)‖²`` (definition ``ch07-def-prediction``), from
        ``snapshots`` of the run's snapshots as in :meth:`two_time`."""
        return residual_loss(self.two_time(snapshots), self.run.n)

    def one_time(self, snapshots=None):
        """The one-time recursion's ``ρ_i(T)``, ``(N,)`` (eq. ``ch07-one-time``: the kernel of each snapshot only),
        from ``snapshots`` of the run's snapshots as in :meth:`two_time`."""
        return predict.trajectory_loo(self.run, snapshots).rho

    def one_time_loss(self, snapshots=None):
        """``(1/2n) Σ_i ‖ρ_i(T)‖²`` of the one-time recursion."""
        return residual_loss(self.one_time(snapshots), self.run.n)

    def readout(self, subset):
        """The twins of ``subset`` read out through the network, first order (:func:`gramlib.predict.twin_readout`)."""
        return predict.twin_readout(self.apply, self.run, self.x, self._recursion().forces, subset)

    def relinearized(self, subset, *, rule="heun"):
        """The twins of ``subset`` re-linearized at every snapshot (eq. ``ch07-remainder``,
        :func:`gramlib.predict.twin_readout` with ``relinearize=True``)."""
        return predict.twin_readout(self.apply, self.run, self.x, self._recursion().forces, subset, relinearize=True,
                                    rule=rule)

    def estimate(self, *, size, key, design="stratified", rule="heun"):
        """The leave-one-out loss of all ``n`` samples, eq. ``ch07-estimate`` (:func:`gramlib.loo_estimate.estimate_loo_loss`)."""
        return loo_estimate.estimate_loo_loss(self.apply, self.run, self.x, size=size, key=key, design=design,
                                         cross=self.cross, rule=rule)

    def estimate_within(self, *, key, tolerance=0.03, pilot=30, design="stratified", rule="heun"):
        """The leave-one-out loss of all ``n`` samples to ``tolerance``: pilot, snapshot check, subset-size rule and
        final estimate (:func:`gramlib.loo_estimate.estimate_loo_loss_within`)."""
        return loo_estimate.estimate_loo_loss_within(self.apply, self.run, self.x, key=key, tolerance=tolerance,
                                                     pilot=pilot, design=design, cross=self.cross, rule=rule)

    def snapshot_check(self, estimate, *, target=0.01, rule="heun"):
        """Whether the run's snapshots suffice for ``estimate`` (:func:`gramlib.loo_estimate.snapshot_check`)."""
        return loo_estimate.snapshot_check(self.apply, self.run, self.x, estimate, cross=self.cross, target=target,
                                      rule=rule)


def loo_predictor(apply, run, x, *, batch_size=None, mesh=None) -> LooPredictor:
    """Build the leave-one-out predictor of a run: its two-time kernel once, the rest on demand (Chapter 7).

    ``apply(params, x)``: the network; ``run``: its :class:`gramlib.train.TrainResult` from
    :func:`gramlib.train.gradient_descent` with ``snapshots > 0``; ``x``: the run's ``n`` training inputs.
    ``batch_size`` and ``mesh`` as in :func:`gramlib.ntk.two_time_kernel`. Returns a :class:`LooPredictor`.
    """
    if not callable(apply):
        raise TypeError(f"apply must be a function apply(params, x), got {type(apply).__name__}")
    if not isinstance(run, TrainResult):
        raise TypeError(f"run must be the TrainResult of gramlib.train.gradient_descent, got {type(run).__name__}")
    x = predict.checked_snapshot_run(run, x)
    cross = ntk.two_time_kernel(apply, run.weights, x, batch_size=batch_size, mesh=mesh)
    return LooPredictor(apply, run, x, cross)
