"""The settings of Chapter 7's table and its limits: typed, frozen, one instance per scale.

:data:`SCALES` maps each scale (``"default"``, ``"paper"``, ``"smoke"``) to a :class:`TableScale`;
:func:`scale_config` looks one up. A :class:`TableScale` is a :class:`RunSetting` (the settings
that determine one run, whose fingerprint every row of the table stores) with the cells of the
table, how many splits each gets and the grid of the limits (:class:`LimitGrid`).
:mod:`gramlib.experiments.ch7` re-exports every name of this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from . import tasks


class Cell(NamedTuple):
    """A cell of Chapter 7's table: a data set (:func:`gramlib.experiments.tasks.dataset`), its task and ``n``."""

    dataset: str
    task: object
    n_train: int


@dataclasses.dataclass(frozen=True)
class RunSetting:
    """The settings that determine one run of Chapter 7's table and its snapshots.

    Their fingerprint (:data:`RUN_SETTINGS`, with the row's :class:`Cell`, whether its twins are
    retrained and, in a cell of ``centered_cells`` only, ``centered=True``) is the row's
    ``settings`` column.
    """

    n_test: int  #: held-out samples per split
    width: int  #: the MLP's width (2 tanh layers, :func:`gramlib.experiments.tasks.architecture`)
    channels: int  #: the CNN's filters per convolution
    lr: float  #: the step ``η`` of gradient descent
    steps: int  #: the number of steps ``T``
    snapshots: int  #: the kernel snapshots recorded along the run
    brute_force: int  #: how many twins a retrained run retrains (its subset)


#: The names of the fields of :class:`RunSetting`, in order: what a row's fingerprint is made of.
RUN_SETTINGS = tuple(f.name for f in dataclasses.fields(RunSetting))


@dataclasses.dataclass(frozen=True)
class LimitGrid:
    """The grid of Chapter 7's limits (:func:`gramlib.experiments.ch7.reproduce_ch7_limits`).

    A ReLU MLP of ``width`` and ``depth`` layers at every learning rate of ``lrs``, and at the
    table's ``lr`` the same network with each width of ``widths`` and each depth of ``depths``.
    """

    width: int
    depth: int
    lrs: tuple[float, ...]
    widths: tuple[int, ...]
    depths: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TableScale(RunSetting):
    """One scale of Chapter 7's table: its :class:`RunSetting` (the fields above) and its protocol.

    ``splits`` independent splits (data, initialization, retrained subset) per MLP cell,
    ``cnn_splits`` per CNN cell; the twins of the first ``retrain_splits`` splits of the
    ``retrain_cells`` retrained (``cnn_retrain_splits`` for a CNN cell: the twins of the CNNs cost
    tens of minutes per split on 2 CPU cores, ``benchmarks/bench_train_steps.py``); random labels
    on the first ``random_label_splits``; the prediction from fewer snapshots on the first
    ``snapshot_splits``.
    """

    cells: Mapping[str, Cell] = dataclasses.field(hash=False)  #: name -> :class:`Cell`, read-only
    cnn_cells: tuple[str, ...]  #: the cells with a CNN too (small inputs only)
    retrain_cells: tuple[tuple[str, str], ...]  #: ``(cell, architecture)`` pairs whose twins are retrained
    splits: int
    cnn_splits: int
    retrain_splits: int
    cnn_retrain_splits: int
    random_label_splits: int
    snapshot_splits: int
    snapshot_counts: tuple[int, ...]  #: the numbers of snapshots ``M`` of :func:`gramlib.experiments.ch7.snapshot_rows`
    #: the cells whose true-label MLP splits also get the noise floor and the prediction with the inputs
    #: re-centered by the held-out mean (:func:`gramlib.experiments.ch7.recentered_run`)
    recentered_cells: tuple[str, ...]
    #: the cells that train the network centered at its initialization, ``f(x; w) − f(x; w_0)``, on inputs
    #: centered by the held-out mean (:func:`gramlib.experiments.ch7.centered_split`; no snapshot rows)
    centered_cells: tuple[str, ...] = ()
    limits: LimitGrid | None = None  #: the grid of the limits; ``None``: the scale has none
    seeds: tuple[int, ...] | None = None  #: the splits to run (``None``: all of the protocol's)

    def __post_init__(self):
        object.__setattr__(self, "cells", MappingProxyType(dict(self.cells)))


#: The settings of Chapter 7, one :class:`TableScale` per scale.
#:
#: ``"default"``: the CPU-scale table of the book, six cells: the 8×8 digits' parity, a teacher
#: network's sign, real 28×28 MNIST (:func:`gramlib.data.mnist`, shipped) as parity and 4 against 9
#: (all learned at ``n = 300``: their random-label held-out loss is at least twice the true one), and
#: 10 classes one-hot at ``n = 100``, plain and centered (the 10-class network of ``"mnist-10"`` does
#: worse than predicting zero, the centered one does not; no snapshot rows there: the snapshots are
#: studied on the other cells, and on 2 CPU cores they cost minutes per 10-class split); the CNN on the
#: small inputs of the digits and the teacher. ``"paper"``: 10-class one-hot subsets of the full
#: MNIST, Fashion-MNIST and CIFAR-10 with more samples (a GPU, e.g. Colab, and a download of the data
#: are needed), no limit grid. ``"smoke"``: a seconds-long run of the same pipeline for tests.
SCALES = {
    "default": TableScale(
        cells={"digits": Cell("digits", "parity", 300), "teacher": Cell("teacher", "sign", 300),
               "mnist-parity": Cell("mnist10k", "parity", 300), "mnist-4v9": Cell("mnist10k", (4, 9), 300),
               "mnist-10": Cell("mnist10k", "onehot", 100), "mnist-10-centered": Cell("mnist10k", "onehot", 100)},
        cnn_cells=("digits", "teacher"),
        retrain_cells=tuple((c, "mlp") for c in ("digits", "teacher", "mnist-parity", "mnist-4v9", "mnist-10",
                                                 "mnist-10-centered")) + (("digits", "cnn"), ("teacher", "cnn")),
        centered_cells=("mnist-10-centered",),
        n_test=1000, width=512, channels=16, lr=1.0, steps=3000, snapshots=30, brute_force=10, splits=10,
        cnn_splits=3, retrain_splits=2, cnn_retrain_splits=1, random_label_splits=1, snapshot_splits=3,
        snapshot_counts=(1, 2, 3, 5, 10, 15, 30), recentered_cells=("mnist-10", "mnist-parity"),
        limits=LimitGrid(width=256, depth=3, lrs=(0.25, 0.5, 1.0, 2.0), widths=(128, 512), depths=(2, 4))),
    "paper": TableScale(
        cells={"mnist": Cell("mnist", "onehot", 500), "fashion_mnist": Cell("fashion_mnist", "onehot", 500),
               "cifar10": Cell("cifar10", "onehot", 500)},
        cnn_cells=("mnist", "fashion_mnist", "cifar10"),
        retrain_cells=tuple((c, a) for c in ("mnist", "fashion_mnist", "cifar10") for a in ("mlp", "cnn")),
        n_test=2000, width=512, channels=32, lr=1.0, steps=1000, snapshots=20, brute_force=20, splits=3,
        cnn_splits=3, retrain_splits=1, cnn_retrain_splits=1, random_label_splits=1, snapshot_splits=3,
        snapshot_counts=(1, 2, 5, 10, 20), recentered_cells=("mnist", "fashion_mnist", "cifar10")),
    "smoke": TableScale(
        cells={"digits": Cell("digits", "parity", 40), "teacher": Cell("teacher", "sign", 40),
               "mnist-10": Cell("mnist10k", "onehot", 20)},
        cnn_cells=("digits",),
        retrain_cells=(("digits", "mlp"), ("digits", "cnn"), ("teacher", "mlp"), ("mnist-10", "mlp")),
        n_test=100, width=32, channels=4, lr=1.0, steps=40, snapshots=4, brute_force=4, splits=3, cnn_splits=2,
        retrain_splits=1, cnn_retrain_splits=1, random_label_splits=1, snapshot_splits=2, snapshot_counts=(1, 2, 4),
        recentered_cells=("mnist-10",),
        limits=LimitGrid(width=16, depth=3, lrs=(0.5, 2.0), widths=(8,), depths=(2,))),
}


#: How the chapter names each cell of the table.
CELL_LABELS = {"digits": "digits parity", "teacher": "teacher", "mnist-parity": "MNIST parity",
               "mnist-4v9": "MNIST 4 vs 9", "mnist-10": "MNIST 10 classes",
               "mnist-10-centered": "MNIST 10 classes, centered", "mnist": "MNIST",
               "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def scale_config(scale="default"):
    """The :class:`TableScale` of :data:`SCALES` for ``scale`` (``"default"``, ``"paper"`` or ``"smoke"``)."""
    return tasks.scale_config(SCALES, scale)


def limit_grid(setting, scale=None):
    """The :class:`LimitGrid` of ``setting`` (a :class:`TableScale`), or a ``ValueError`` naming the scales with one."""
    if setting.limits is None:
        having = [name for name, s in SCALES.items() if s.limits is not None]
        what = f"scale {scale!r}" if scale is not None else "this setting"
        raise ValueError(f"{what} has no limit grid; the scales with a limit grid are {having}")
    return setting.limits
