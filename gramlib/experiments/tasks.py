"""The data sets, networks and scales that Chapters 6 and 7 share, looked up by name."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..runs import data, models

#: The input shape each data set's CNN needs, and the label the chapters print.
SHAPES = {"digits": (8, 8, 1), "mnist1d": (40, 1), "teacher": (32, 1), "mnist10k": (28, 28, 1), "mnist": (28, 28, 1),
          "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
LABELS = {"digits": "digits", "mnist1d": "MNIST-1D", "teacher": "teacher", "mnist10k": "MNIST", "mnist": "MNIST",
          "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def scale_config(scales, scale):
    """``scales[scale]`` (a frozen settings object, shared: change it with :func:`dataclasses.replace`),
    or a ``ValueError`` naming the scales there are."""
    if scale not in scales:
        raise ValueError(f"scale must be one of {sorted(scales)}, got {scale!r}")
    return scales[scale]


def dataset(name, n_train, n_test, *, key, task="parity"):
    """A data set of Chapters 6–7 by name, with the input shape its CNN needs: ``(Dataset, shape)``.

    ``"digits"`` (at most as many held-out samples as the 1797 digits leave), ``"mnist1d"``,
    ``"teacher"`` (its own ±1 target; ``task`` does not apply), ``"mnist10k"`` (the 10,000
    real MNIST digits shipped in ``data/``, :func:`gramlib.data.mnist`), or an image set of
    :func:`gramlib.data.images`, downloaded once (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``).
    """
    if name not in SHAPES:
        raise ValueError(f"unknown dataset {name!r}; use one of {sorted(SHAPES)}")
    if name == "digits":
        ds = data.digits(n_train, min(n_test, len(data.digits_raw()[1]) - n_train), key=key, task=task)
    elif name == "mnist1d":
        ds = data.mnist1d(n_train, n_test, key=key, task=task)
    elif name == "teacher":
        ds = data.teacher(n_train, n_test, key=key)
    elif name == "mnist10k":
        ds = data.mnist(n_train, n_test, key=key, task=task)
    else:
        ds = data.images(name, n_train, n_test, key=key, task=task)
    return ds, SHAPES[name]


def outputs(ds):
    """The number of network outputs a data set's targets need (1 for ±1 targets)."""
    return 1 if ds.y_train.ndim == 1 else ds.y_train.shape[1]


def architecture(name, input_shape, n_outputs, setting, dtype):
    """The MLP (2 layers, tanh, width ``setting.width``) or CNN (2 convolutions of
    ``setting.channels`` filters + readout, tanh) of Chapters 6–7, NTK parameterization.

    ``setting``: any settings with ``width`` and ``channels`` (:class:`gramlib.experiments.ch6.Ch6Scale`,
    :class:`gramlib.experiments.ch7.RunSetting`, :class:`gramlib.experiments.real_alignment.AlignmentScale`)."""
    if name == "mlp":
        return models.mlp(math.prod(input_shape), setting.width, 2, n_outputs, dtype=dtype)
    if name == "cnn":
        return models.cnn(input_shape, setting.channels, 3, n_outputs, dtype=dtype)
    raise ValueError(f"architecture must be 'mlp' or 'cnn', got {name!r}")


def output_folder(out_dir):
    """``out_dir`` as a :class:`~pathlib.Path`, created with its parents if missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def centered_outputs(model, ds, key):
    """The split ``ds`` for the network ``f(x; w) − f(x; w_0)``, centered at its initialization (Chapter 7).

    Gradient descent on ``f(x; w) − f(x; w_0)`` with targets ``y`` is gradient descent on
    ``f(x; w)`` with targets ``y + f(x; w_0)``: the same residuals
    ``r = f(x; w) − f(x; w_0) − y`` (zero outputs at initialization, ``r_0 = −Y``), the same
    Jacobian and Gram matrix, the same losses on both sets. So the centered network is trained and
    predicted as ``model`` on a split whose targets, training and held-out, are shifted by
    ``model``'s outputs at ``w_0 = model.init(key)``; ``labels_*`` are kept. Pass the ``key`` the
    run initializes with.
    """
    if not isinstance(ds, data.Dataset):
        raise TypeError(f"ds must be a gramlib.data.Dataset, got {type(ds).__name__}")
    params = model.init(key)
    f0_train, f0_test = (np.asarray(model.apply(params, x)).reshape(np.shape(y))
                         for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)))
    return ds._replace(y_train=ds.y_train + f0_train, y_test=ds.y_test + f0_test)
