"""Datasets for the book: shipped, generated, and downloaded.

Every loader returns a :class:`Dataset` of train and test arrays. Inputs are
normalized as documented per loader; targets are ``±1`` for binary tasks
(``task="parity"`` etc.) or one-hot rows for ``C`` classes.

Shipped data lives in the repository's ``data/`` folder and is listed, with its
source, license and sha256, in ``data/MANIFEST.json``; every load verifies the
checksum.

Loaders: :func:`digits` (shipped), :func:`mnist1d` (generated offline, an
equivalent of Greydanus 2020), :func:`teacher` (labels from a random network),
:func:`images` (MNIST, Fashion-MNIST, CIFAR-10: downloaded once into
``data/cache/``, see :func:`fetch`), and :func:`random_labels` for any of them.
Class subsets and binary tasks through ``classes`` and ``task`` (:func:`split`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from . import models
from .. import _checks


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
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def manifest() -> dict:
    """The entries of ``data/MANIFEST.json`` (file name -> source, license, sha256)."""
    with open(data_dir() / "MANIFEST.json") as fh:
        return {entry["file"]: entry for entry in json.load(fh)["files"]}


def sha256(path) -> str:
    """The sha256 hex digest of a file."""
    return _digest(path, "sha256")


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
    x = _checks.array(x, "x")
    labels = _checks.array(labels, "labels", ndim=1, dtype_kind="iu")
    if x.ndim == 0 or len(x) != len(labels):
        raise ValueError(f"x must hold one input per label: x has shape {x.shape}, labels has {len(labels)} entries")
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


def random_labels(dataset, *, key):
    """The same inputs with every target replaced by an independent random label.

    Binary ``±1`` targets become fair coin flips; one-hot targets a uniformly
    random class. Train and test targets are both redrawn, so the held-out loss
    measures what a network that memorized noise predicts on fresh noise
    (Zhang et al. 2017).
    """
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

#: Ten 1-D "digit" templates of 12 points each, one per class: bumps, dips,
#: ramps and steps drawn in the spirit of Greydanus (2020)'s MNIST-1D templates.
MNIST1D_TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],        # 0: one wide bump up
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],      # 1: drop, then a slow climb
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],    # 2: up, then down past the baseline
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],          # 3: two bumps up
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],        # 4: ramp down, then a step back
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],            # 5: plateau down, then a bump up
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],        # 6: one wide dip
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],      # 7: jump up, then a slow descent
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],          # 8: two dips
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],          # 9: one dip, then a small one
    ]
)


def mnist1d_templates():
    """The templates standardized per class and shifted to start at 0 (so zero padding is continuous)."""
    t = MNIST1D_TEMPLATES - MNIST1D_TEMPLATES.mean(axis=1, keepdims=True)
    t = t / t.std(axis=1, keepdims=True)
    return t - t[:, :1]


def mnist1d_raw(n, *, key, length=40, padding=(36, 60), scale=0.4, max_translation=48,
                shear=0.75, corr_noise=0.25, iid_noise=0.02):
    """``n`` MNIST-1D signals of ``length`` points and their labels 0..9.

    An equivalent of the generator of Greydanus (2020) (the ``mnist1d``
    package), written for this book: each signal is a class template (see
    :data:`MNIST1D_TEMPLATES`) placed at a random position in a zero-padded
    window of ``12 + p`` points, ``p`` uniform in ``padding``; stretched
    horizontally by a factor ``1 + scale·u``, ``u ~ U(-1, 1)``; circularly
    shifted by up to ``max_translation`` points; resampled to ``length``
    points by linear interpolation; then a linear ramp of slope
    ``shear·U(-1, 1)`` across the window, correlated noise (white noise
    smoothed by a Gaussian filter of width 2 points, times ``corr_noise``) and
    i.i.d. Gaussian noise of scale ``iid_noise`` are added. Defaults are those
    of the original data set. Fully determined by ``key``.
    """
    _checks.integer(n, "n", minimum=1)
    _checks.integer(length, "length", minimum=2)
    lo, hi = padding
    _checks.integer(lo, "padding[0]", minimum=0)
    _checks.integer(hi, "padding[1]", minimum=lo)
    keys = jax.random.split(key, 8)
    labels = np.asarray(jax.random.randint(keys[0], (n,), 0, 10))
    pad = np.asarray(jax.random.randint(keys[1], (n,), lo, hi + 1)).astype(float)
    left = np.floor(np.asarray(jax.random.uniform(keys[2], (n,))) * pad)
    stretch = 1.0 + scale * np.asarray(jax.random.uniform(keys[3], (n,), minval=-1.0, maxval=1.0))
    shift = np.asarray(jax.random.randint(keys[4], (n,), -max_translation, max_translation + 1))
    slope = shear * np.asarray(jax.random.uniform(keys[5], (n,), minval=-1.0, maxval=1.0))
    white = np.asarray(jax.random.normal(keys[6], (n, length)))
    iid = iid_noise * np.asarray(jax.random.normal(keys[7], (n, length)))

    templates = mnist1d_templates()
    m = templates.shape[1]
    window = m + pad                                        # padded length per sample
    grid = np.linspace(0.0, 1.0, length)[None, :] * (window[:, None] - 1)
    pos = np.mod(grid - shift[:, None], window[:, None])    # circular translation
    u = (pos - left[:, None] - (m - 1) / 2) / stretch[:, None] + (m - 1) / 2
    inside = (u >= 0) & (u <= m - 1)
    i0 = np.clip(np.floor(u).astype(int), 0, m - 2)
    frac = np.clip(u - i0, 0.0, 1.0)
    t = templates[labels]
    rows = np.arange(n)[:, None]
    signal = np.where(inside, (1 - frac) * t[rows, i0] + frac * t[rows, i0 + 1], 0.0)

    taps = np.arange(-6, 7)
    gauss = np.exp(-0.5 * (taps / 2.0) ** 2)
    gauss /= np.sqrt(np.sum(gauss**2))                      # unit variance after smoothing
    padded = np.pad(white, ((0, 0), (6, 6)))
    smooth = sum(g * padded[:, k : k + length] for k, g in enumerate(gauss))
    ramp = slope[:, None] * np.linspace(-1.0, 1.0, length)[None, :]
    return signal + ramp + corr_noise * smooth + iid, labels


def mnist1d(n_train=300, n_test=1000, *, key, task="parity", classes=None, **generator):
    """MNIST-1D (:func:`mnist1d_raw`) as a :class:`Dataset` of signals ``(n, 40)``.

    Drawn fresh from ``key`` (``n_train + n_test`` signals, more when
    ``classes`` drops some); ``generator`` keywords go to :func:`mnist1d_raw`.
    Inputs standardized as in :func:`split`.
    """
    k_gen, k_split = jax.random.split(key)
    _checks.integer(n_train, "n_train", minimum=2)
    _checks.integer(n_test, "n_test", minimum=1)
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

    _checks.integer(n_train, "n_train", minimum=2)
    _checks.integer(n_test, "n_test", minimum=1)
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


# --- downloaded image data sets (paper scale) ----------------------------------------

def downloads(dataset):
    """The files of a downloadable data set, from ``data/MANIFEST.json``'s ``downloads`` list.

    Each entry holds ``file``, ``url`` and the official ``md5`` published with
    the data (the checksums torchvision also verifies).
    """
    with open(data_dir() / "MANIFEST.json") as fh:
        entries = [e for e in json.load(fh).get("downloads", []) if e["dataset"] == dataset]
    if not entries:
        raise ValueError(f"no downloadable data set named {dataset!r} in data/MANIFEST.json")
    return entries


def cache_dir() -> Path:
    """Where downloads are kept: ``$GRAMLIB_CACHE`` if set, else ``data/cache/`` (git-ignored)."""
    env = os.environ.get("GRAMLIB_CACHE")
    return Path(env) if env else data_dir() / "cache"


def _digest(path, algorithm):
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(dataset):
    """Local paths of a data set's files, downloading each once and verifying it every time.

    On first download the file's md5 must equal the official one in the
    manifest; its sha256 is then written beside it (``<file>.sha256``) and
    every later load checks the file against that sha256. The sha256 of the
    official files is not recorded in the repository: the md5 published with
    the data is the reference, and the sha256 file guards the cache. Offline,
    a missing file raises ``RuntimeError`` saying where to put it by hand.
    """

    folder = cache_dir() / dataset
    paths = []
    for entry in downloads(dataset):
        path = folder / entry["file"]
        stamp = path.with_name(path.name + ".sha256")
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            part = path.with_name(path.name + ".part")
            try:
                with urllib.request.urlopen(entry["url"], timeout=60) as src, open(part, "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        dst.write(chunk)
            except (urllib.error.URLError, OSError) as err:
                part.unlink(missing_ok=True)
                raise RuntimeError(
                    f"could not download {entry['url']} ({err}). Are you offline? Download it by hand "
                    f"and place it at {path}; it is checked against its official md5 {entry['md5']}."
                ) from None
            got = _digest(part, "md5")
            if got != entry["md5"]:
                part.unlink()
                raise ValueError(f"{entry['url']} downloaded with md5 {got}, expected {entry['md5']}")
            part.rename(path)
            stamp.unlink(missing_ok=True)
        if not stamp.exists():
            got = _digest(path, "md5")
            if got != entry["md5"]:
                raise ValueError(f"{path} has md5 {got}, expected the official {entry['md5']}; delete it")
            stamp.write_text(_digest(path, "sha256") + "\n")
        if _digest(path, "sha256") != stamp.read_text().strip():
            raise ValueError(f"{path} no longer matches its sha256 in {stamp}; delete both to download again")
        paths.append(path)
    return paths


def read_idx(path):
    """The array stored in a gzipped IDX file (the MNIST format: magic, dims, big-endian data)."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] not in dtypes:
        raise ValueError(f"{path} is not an IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtypes[raw[2]], offset=4 + 4 * ndim).reshape(shape)


def read_cifar(path):
    """Images ``(n, 32, 32, 3)`` and labels of every batch in the CIFAR-10 python archive.

    Training batches first, then the test batch (the archive's own split).
    """

    batches = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name.startswith(("data_batch", "test_batch")):
                batches[name] = pickle.load(tar.extractfile(member), encoding="bytes")
    if not batches:
        raise ValueError(f"{path} holds no CIFAR-10 batches")
    order = sorted(batches, key=lambda s: (s.startswith("test"), s))
    x = np.concatenate([np.asarray(batches[b][b"data"], np.uint8) for b in order])
    y = np.concatenate([np.asarray(batches[b][b"labels"]) for b in order])
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(int)


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
    one-hot over the 10 classes).
    """
    x, labels = images_raw(dataset)
    return split(x, labels, n_train, n_test, key=key, task=task, classes=classes, flatten=flatten)
