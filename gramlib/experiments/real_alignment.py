"""Alignment of a trained network's residual with its run's effective Gram matrix ``K_traj`` (Chapter 6).

Chapter 6 measures alignment on linearized networks, whose kernel is frozen. A real run
moves its kernel; :func:`gramlib.mathematics.trajectory_gram.trajectory_effective_gram`
turns the run's kernel snapshots into ``K_traj``, and :func:`run_alignment` trains the
network, builds ``K_traj`` and measures how ``‖r0‖²`` sits in its bottom eigenvectors, beside
the network's measured train and held-out losses. :func:`reproduce_ch6_runs` does so for
every trained network of Chapter 6's comparison (:data:`SCALES`): true against random labels,
MLP against CNN on the same digits, data set against data set, over several seeds
(``python -m gramlib reproduce ch6-runs``, ``results/ch6/ch6_runs.csv``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from ..mathematics.alignment import bottom_count, cumulative_share, trajectory_alignment, TrajectoryAlignment
from ..mathematics.kernel_flow import residual_loss
from ..runs.predict import held_out_loss, trajectory_loo
from ..runs import data
from ..runs.train import gradient_descent, recommended_loop
from . import tasks
from .results import fingerprint, in_float64, provenance, ResultTable, run_job


class RunAlignment(NamedTuple):
    """How the initial residual of a real run sits in the eigenbasis of its ``K_traj``.

    ``share_r0``: the share of ``‖r0‖²`` in the bottom ``k`` eigenvectors of ``K_traj``
    (``random_share = k/N`` for a random direction); ``gap = r0ᵀ K_traj r0`` and
    ``random_gap = ‖r0‖² tr K_traj / N``; ``predicted``: the leave-one-out loss
    ``(1/2n)‖R_traj r0‖²`` of the run read as a linear model with a moving kernel;
    ``trajectory``: Chapter 7's one-time prediction from the run's real residuals;
    ``train_loss`` and ``test_loss``: the network's, measured; ``eigenvalues``: of ``K_traj``;
    ``during``: the shares of ``‖r0‖²`` and of the real ``‖r(t)‖²`` in the bottom of ``K_traj(t)``
    at every snapshot time (:func:`gramlib.mathematics.alignment.trajectory_alignment`).
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
    during: TrajectoryAlignment


def run_alignment(model, params, dataset, y_train, y_test, *, lr, steps, snapshots, fraction=0.1, during=8,
                  progress=False):
    """Train ``model`` from ``params`` on ``(dataset.x_train, y_train)`` and measure alignment with ``K_traj``.

    Full-batch gradient descent with step ``lr`` for ``steps`` steps records ``snapshots``
    kernels (:func:`gramlib.train.gradient_descent`, the loop :func:`gramlib.train.recommended_loop`
    picks); ``K_traj`` is built from them; ``k = round(fraction · N)``. Targets ``y_train``,
    ``y_test`` of one output (e.g. true or random labels of the same inputs). ``during``: at how
    many snapshot times, spread evenly on a log scale from the first to the last, the shares
    during training are measured (each costs one ``K_traj`` of the run's first snapshots).
    Returns a :class:`RunAlignment`.
    """
    y_train = _checks.array(y_train, "y_train", ndim=1, shape=(len(dataset.x_train),))
    y_test = _checks.array(y_test, "y_test", ndim=1, shape=(len(dataset.x_test),))
    snapshots = _checks.integer(snapshots, "snapshots", minimum=1)
    during = _checks.integer(during, "during", minimum=1)
    prefixes = np.unique(np.round(np.geomspace(1, snapshots, during)).astype(int))
    x = jnp.asarray(dataset.x_train)
    run = gradient_descent(model.apply, params, x, y_train, lr=lr, steps=steps, snapshots=snapshots,
                           loop=recommended_loop(model.apply, params, x), progress=progress)
    # the last prefix is the whole run, so during.last is the run's K_traj (T): built once
    shares = trajectory_alignment(run.thetas, run.residuals, run.lr, outputs=run.outputs, fraction=fraction,
                                  prefixes=prefixes)
    traj = shares.last
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
        trajectory=residual_loss(trajectory_loo(run).rho, run.n),
        train_loss=float(run.train_loss[-1]),
        test_loss=held_out_loss(model.apply, run.params, jnp.asarray(dataset.x_test), y_test),
        eigenvalues=vals,
        during=shares,
    )


@dataclasses.dataclass(frozen=True)
class AlignmentScale:
    """One scale of Chapter 6's trained networks (:data:`SCALES`, :func:`reproduce_ch6_runs`).

    Every network is trained on true and on random labels of the same inputs for every seed;
    the fields from ``n_train`` to ``fraction`` make each row's ``settings`` fingerprint.
    """

    #: ``(data set, task, architecture)`` triples (:func:`gramlib.experiments.tasks.dataset`,
    #: :func:`~gramlib.experiments.tasks.architecture`)
    networks: tuple[tuple[str, object, str], ...]
    n_train: int  #: training samples
    n_test: int  #: held-out samples
    width: int  #: the MLP's width
    channels: int  #: the CNN's filters
    lr: float  #: the step of :func:`run_alignment`
    steps: int  #: its steps
    snapshots: int  #: its kernel snapshots
    fraction: float  #: its bottom share ``k/N``
    seeds: tuple[int, ...]  #: the seeds, each a split and an initialization


#: Chapter 6's trained networks, one :class:`AlignmentScale` per scale.
SCALES = {
    "default": AlignmentScale(networks=(("digits", "parity", "mlp"), ("digits", "parity", "cnn"),
                                        ("mnist10k", "parity", "mlp"), ("mnist10k", (4, 9), "mlp")),
                              n_train=200, n_test=1000, width=512, channels=16, lr=1.0, steps=3000, snapshots=30,
                              fraction=0.1, seeds=(0, 1, 2)),
    "smoke": AlignmentScale(networks=(("digits", "parity", "mlp"), ("digits", "parity", "cnn"),
                                      ("mnist10k", (4, 9), "mlp")),
                            n_train=30, n_test=60, width=32, channels=4, lr=1.0, steps=60, snapshots=4, fraction=0.1,
                            seeds=(0, 1)),
}
_RUN_SETTINGS = ("n_train", "n_test", "width", "channels", "lr", "steps", "snapshots", "fraction")


def scale_config(scale="default"):
    """The :class:`AlignmentScale` of :data:`SCALES` for ``scale`` (``"default"`` or ``"smoke"``)."""
    return tasks.scale_config(SCALES, scale)


def network_name(dataset, task, arch):
    """The label of a trained network in Chapter 6's table, e.g. ``"MLP / MNIST 4 vs 9"``."""
    what = "parity" if task == "parity" else f"{task[0]} vs {task[1]}"
    return f"{arch.upper()} / {tasks.LABELS[dataset]} {what}"


def alignment_runs(setting):
    """The rows of ``ch6_runs.csv`` at ``setting`` (an :class:`AlignmentScale`), in order, before they are computed.

    One dict per network, seed and label set (``"true"``, ``"random"``): ``network`` (:func:`network_name`),
    ``labels``, ``seed`` and ``settings``, the fingerprint of the run's settings.
    """
    settings = fingerprint({name: getattr(setting, name) for name in _RUN_SETTINGS})
    return [{"network": network_name(*net), "labels": labels, "seed": seed, "settings": settings}
            for net in setting.networks for seed in setting.seeds for labels in ("true", "random")]


@in_float64
def reproduce_ch6_runs(out_dir="results/ch6", scale="default", *, progress=True, command=None):
    """Chapter 6 on trained networks: :func:`run_alignment` for every network, label set and seed.

    Seed ``s`` draws the split and the initialization from ``PRNGKey(s)`` and the random labels
    (the same inputs, every label redrawn at random: :func:`gramlib.data.random_labels`) from it; true and
    random labels start from the same weights. Writes ``ch6_runs.csv``, one row per run
    (``network``, ``labels``, ``seed`` and the numbers of :class:`RunAlignment`: all fields but
    ``eigenvalues`` and ``during``), resumably and with provenance like :func:`gramlib.experiments.ch7.reproduce_ch7`.
    Runs in float64. Returns the rows.
    """
    setting = scale_config(scale)
    out = tasks.output_folder(out_dir)
    runs = alignment_runs(setting)
    by_name = {network_name(*net): net for net in setting.networks}
    model_of = {}  # one model object per network, so that compiled code is reused across seeds and labels

    def compute(run):
        name, task, arch = by_name[run["network"]]
        k_data, k_init, k_labels = jax.random.split(jax.random.PRNGKey(run["seed"]), 3)
        ds, shape = tasks.dataset(name, setting.n_train, setting.n_test, key=k_data, task=task)
        if run["labels"] == "random":
            ds = data.random_labels(ds, key=k_labels)
        if run["network"] not in model_of:
            model_of[run["network"]] = tasks.architecture(arch, shape, 1, setting, np.float64)
        model = model_of[run["network"]]
        a = run_alignment(model, model.init(k_init), ds, ds.y_train, ds.y_test, lr=setting.lr,
                          steps=setting.steps, snapshots=setting.snapshots, fraction=setting.fraction)
        return {field: float(v) for field, v in a._asdict().items() if field not in ("eigenvalues", "during")}

    table = ResultTable(out / "ch6_runs.csv", ("network", "labels", "seed", "settings"))
    return run_job(table, tqdm(runs, desc="Chapter 6, trained networks", disable=not progress), compute,
                   extra=provenance(command))


def runs_summary(rows):
    """Per trained network of ``ch6_runs.csv``: the alignment and the test loss, true against random labels.

    For each ``network``: ``seeds`` (with both label sets), the mean share of ``‖r0‖²`` in the
    bottom of ``K_traj`` with true and random labels (``share_true``, ``share_random``; a random
    direction: ``random_share``), the mean held-out losses (``test_true``, ``test_random``),
    ``ordered``: the number of seeds where the true labels have both the larger share and the
    smaller held-out loss, and ``linear_gap``: over all runs of the network, the largest
    ``|(r0ᵀK_traj r0 + L_train) / L̂_traj − 1|``, the quadratic form of the run read as linear
    plus the network's train loss against Chapter 7's prediction from the real residuals.
    """
    out = []
    for network in dict.fromkeys(r["network"] for r in rows):
        by_seed = {}
        for r in rows:
            if r["network"] == network:
                by_seed.setdefault(r["seed"], {})[r["labels"]] = r
        pairs = [p for p in by_seed.values() if {"true", "random"} <= set(p)]
        if not pairs:
            continue
        mean = lambda labels, key: float(np.mean([p[labels][key] for p in pairs]))  # noqa: E731
        runs = [r for p in pairs for r in p.values()]
        out.append({
            "network": network, "seeds": len(pairs), "random_share": pairs[0]["true"]["random_share"],
            "share_true": mean("true", "share_r0"), "share_random": mean("random", "share_r0"),
            "test_true": mean("true", "test_loss"), "test_random": mean("random", "test_loss"),
            "ordered": sum(p["true"]["share_r0"] > p["random"]["share_r0"]
                           and p["true"]["test_loss"] < p["random"]["test_loss"] for p in pairs),
            "linear_gap": max(abs((r["gap"] + r["train_loss"]) / r["trajectory"] - 1) for r in runs),
        })
    return out


def concordant_pairs(summary):
    """Of the pairs of networks in ``summary`` (:func:`runs_summary`), how many order the true-label
    share and held-out loss oppositely (the more aligned network has the smaller loss): ``(concordant, pairs)``."""
    pairs = [(a, b) for i, a in enumerate(summary) for b in summary[i + 1:]]
    return sum((a["share_true"] - b["share_true"]) * (a["test_true"] - b["test_true"]) < 0 for a, b in pairs), len(pairs)
