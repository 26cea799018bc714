"""Alignment of a trained network's residual with its run's effective Gram matrix ``K_traj`` (Chapter 6).

Chapter 6 measures alignment on linearized networks, whose kernel is frozen. A real run
moves its kernel; :func:`gramlib.mathematics.trajectory_gram.trajectory_effective_gram`
turns the run's kernel snapshots into ``K_traj``, and :func:`run_alignment` trains the
network, builds ``K_traj`` and measures how ``‖r0‖²`` sits in its bottom eigenvectors, beside
the network's measured train and held-out losses.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .. import _checks
from ..mathematics.alignment import bottom_count, cumulative_share
from ..mathematics.kernel_flow import residual_loss
from ..mathematics.trajectory_gram import trajectory_effective_gram
from ..runs.predict import held_out_loss, trajectory_loo
from ..runs.train import gradient_descent, recommended_loop


class RunAlignment(NamedTuple):
    """How the initial residual of a real run sits in the eigenbasis of its ``K_traj``.

    ``share_r0``: the share of ``‖r0‖²`` in the bottom ``k`` eigenvectors of ``K_traj``
    (``random_share = k/N`` for a random direction); ``gap = r0ᵀ K_traj r0`` and
    ``random_gap = ‖r0‖² tr K_traj / N``; ``predicted``: the leave-one-out loss
    ``(1/2n)‖R_traj r0‖²`` of the run read as a linear model with a moving kernel;
    ``trajectory``: Chapter 7's one-time prediction from the run's real residuals;
    ``train_loss`` and ``test_loss``: the network's, measured; ``eigenvalues``: of ``K_traj``.
    """

    share_r0: float
    random_share: float
    gap: float
    random_gap: float
    predicted: float
    trajectory: float
    train_loss: float
    test_loss: float
    eigenvalues: np.ndarray


def run_alignment(model, params, dataset, y_train, y_test, *, lr, steps, snapshots, fraction=0.1, progress=False):
    """Train ``model`` from ``params`` on ``(dataset.x_train, y_train)`` and measure alignment with ``K_traj``.

    Full-batch gradient descent with step ``lr`` for ``steps`` steps records ``snapshots``
    kernels (:func:`gramlib.train.gradient_descent`, the loop :func:`gramlib.train.recommended_loop`
    picks); ``K_traj`` is built from them; ``k = round(fraction · N)``. Targets ``y_train``,
    ``y_test`` of one output (e.g. true or random labels of the same inputs). Returns a
    :class:`RunAlignment`.
    """
    y_train = _checks.array(y_train, "y_train", ndim=1, shape=(len(dataset.x_train),))
    y_test = _checks.array(y_test, "y_test", ndim=1, shape=(len(dataset.x_test),))
    snapshots = _checks.integer(snapshots, "snapshots", minimum=1)
    x = jnp.asarray(dataset.x_train)
    run = gradient_descent(model.apply, params, x, y_train, lr=lr, steps=steps, snapshots=snapshots,
                           loop=recommended_loop(model.apply, params, x), progress=progress)
    traj = trajectory_effective_gram(run.thetas, run.steps, run.lr, outputs=run.outputs)
    r0 = run.residuals[0]
    big_n = len(r0)
    k = bottom_count(big_n, fraction)
    vals = np.linalg.eigvalsh(traj.k_matrix)
    return RunAlignment(
        share_r0=float(np.asarray(cumulative_share(traj.k_matrix, r0))[k - 1]),
        random_share=k / big_n,
        gap=float(r0 @ traj.k_matrix @ r0),
        random_gap=float(r0 @ r0 * np.trace(traj.k_matrix) / big_n),
        predicted=residual_loss(traj.loo_map @ r0, run.n),
        trajectory=residual_loss(trajectory_loo(run), run.n),
        train_loss=float(run.train_loss[-1]),
        test_loss=held_out_loss(model.apply, run.params, jnp.asarray(dataset.x_test), y_test),
        eigenvalues=vals,
    )
