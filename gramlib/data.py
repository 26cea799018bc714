"""Datasets for the book: shipped, generated, and downloaded.

Every loader returns a :class:`Dataset` of train and test arrays. Inputs are
normalized as documented per loader; targets are ``±1`` for binary tasks
(``task="parity"`` etc.) or one-hot rows for ``C`` classes.

Shipped data lives in the repository's ``data/`` folder and is listed, with its
source, license and sha256, in ``data/MANIFEST.json``; every load verifies the
checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from . import _checks


class Dataset(NamedTuple):
    """Train and test arrays; ``labels_*`` are the integer classes behind ``y_*``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray


def data_dir() -> Path:
    """The folder with shipped data and the download cache.

    ``$GRAMLIB_DATA`` if set, else the repository's ``data/`` folder.
    """
    env = os.environ.get("GRAMLIB_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def manifest() -> dict:
    """The entries of ``data/MANIFEST.json`` (file name -> source, license, sha256)."""
    with open(data_dir() / "MANIFEST.json") as fh:
        return {entry["file"]: entry for entry in json.load(fh)["files"]}


def sha256(path) -> str:
    """The sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_path(name: str) -> Path:
    """Path of a shipped file after checking its sha256 against the manifest."""
    path = data_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; it ships with the repository (see data/MANIFEST.json)")
    expected = manifest()[name]["sha256"]
    if sha256(path) != expected:
        raise ValueError(f"{path} does not match its sha256 in data/MANIFEST.json (expected {expected})")
    return path


def digits_raw():
    """The 1797 handwritten 8×8 digits (UCI optdigits test set, as shipped by scikit-learn).

    Returns ``images`` of shape ``(1797, 8, 8)`` with values in ``[0, 1]``
    (the original 0..16 counts divided by 16) and integer ``labels`` 0..9.
    """
    with gzip.open(verified_path("digits.csv.gz"), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    return (table[:, :-1] / 16.0).reshape(-1, 8, 8), table[:, -1].astype(int)


def binary_targets(labels, task="parity"):
    """``±1`` targets from integer labels.

    ``task="parity"``: +1 for even digits, -1 for odd. ``task=(a, b)``: +1 for
    class ``a``, -1 for class ``b`` (other classes must be removed first).
    """
    labels = np.asarray(labels)
    if task == "parity":
        return np.where(labels % 2 == 0, 1.0, -1.0)
    if isinstance(task, tuple) and len(task) == 2:
        if not np.all(np.isin(labels, task)):
            raise ValueError(f"labels must all be in {task} for the binary task {task}")
        return np.where(labels == task[0], 1.0, -1.0)
    raise ValueError(f"task must be 'parity' or a pair of classes, got {task!r}")


def one_hot(labels, num_classes):
    """One-hot rows ``(n, num_classes)`` from integer labels."""
    labels = np.asarray(labels)
    return (labels[:, None] == np.arange(num_classes)[None, :]).astype(float)


def standardize(x_train, x_test):
    """Center by the training mean and scale by the training standard deviation (one scalar).

    After this, the average squared entry of a training input is 1, so
    ``‖x‖² ≈ d``: the scale NTK-parameterized networks expect.
    """
    mean = x_train.mean(axis=0)
    scale = np.sqrt(np.mean((x_train - mean) ** 2))
    return (x_train - mean) / scale, (x_test - mean) / scale


def split(x, labels, n_train, n_test, *, key, task="parity", classes=None, flatten=True):
    """Random train/test split of ``(x, labels)`` into a :class:`Dataset`.

    ``classes`` keeps only those classes first. ``task`` is ``"parity"``, a pair
    of classes (binary ``±1`` targets) or ``"onehot"`` (one column per class
    kept). Inputs are standardized with the training statistics.
    """
    _checks.integer(n_train, "n_train", minimum=2)
    _checks.integer(n_test, "n_test", minimum=1)
    x, labels = np.asarray(x), np.asarray(labels)
    if classes is not None:
        keep = np.isin(labels, classes)
        x, labels = x[keep], labels[keep]
    if n_train + n_test > len(labels):
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} exceeds the {len(labels)} samples available"
        )
    order = np.asarray(jax.random.permutation(key, len(labels)))
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    xs = x.reshape(len(x), -1) if flatten else x
    x_tr, x_te = standardize(xs[tr].astype(float), xs[te].astype(float))
    if task == "onehot":
        kept = np.unique(labels) if classes is None else np.asarray(classes)
        remap = {c: k for k, c in enumerate(kept)}
        y = one_hot(np.array([remap[c] for c in labels]), len(kept))
    else:
        y = binary_targets(labels, task)
    return Dataset(x_tr, y[tr], x_te, y[te], labels[tr], labels[te])


def digits(n_train=300, n_test=None, *, key, task="parity", classes=None, flatten=True):
    """The 8×8 digits as a :class:`Dataset` (inputs flattened to 64 unless ``flatten=False``).

    ``n_test`` defaults to every sample not used for training.
    """
    images, labels = digits_raw()
    available = len(labels) if classes is None else int(np.isin(labels, classes).sum())
    n_test = available - n_train if n_test is None else n_test
    return split(images, labels, n_train, n_test, key=key, task=task, classes=classes, flatten=flatten)
