"""Networks in plain JAX: each model is a pair ``(init, apply)``.

Two families: the fully connected :func:`mlp` and the convolutional
:func:`cnn` (2-D for images, 1-D for signals such as MNIST-1D).

``init(key) -> params`` (a list of layer dicts) and ``apply(params, x) -> f``
with ``f`` of shape ``(n,)`` for one output or ``(n, C)`` for ``C`` outputs,
the shapes :func:`gramlib.ntk.empirical_ntk` expects. ``apply`` is a plain
function: the empirical NTK finds its layers by tracing it
(:mod:`gramlib.tangent_structure`), as for any network a reader writes.

Parameterizations (see Chapter 4):

* ``"ntk"``: weights ``W ~ N(0, 1)``, layer output ``σ_w W h / sqrt(fan_in) + σ_b b``
  (Jacot et al. 2018); the kernel has a limit as width grows and learning
  rates of order 1 work at every width.
* ``"standard"``: weights ``W ~ N(0, σ_w² / fan_in)``, output ``W h + b``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from .. import _checks

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "erf": jax.scipy.special.erf,
    "gelu": jax.nn.gelu,
    "linear": lambda z: z,
}


class Model(NamedTuple):
    """A network: ``init(key) -> params`` and ``apply(params, x) -> outputs``."""

    init: Callable
    apply: Callable


def _architecture(activation, parameterization, minimum=None, **sizes):
    """Check a model's arguments (every size an integer ``≥ minimum.get(name, 1)``); return the activation."""
    for name, value in sizes.items():
        _checks.integer(value, name, minimum=(minimum or {}).get(name, 1))
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def dense_init(key, fan_in, fan_out, parameterization, sigma_w, dtype):
    """Weights and zero biases of one dense layer."""
    w = jax.random.normal(key, (fan_in, fan_out), dtype)
    if parameterization == "standard":
        w = w * sigma_w / jnp.sqrt(fan_in)
    return {"w": w, "b": jnp.zeros((fan_out,), dtype)}


def dense_apply(layer, h, parameterization, sigma_w, sigma_b):
    """``h W sigma_w / sqrt(fan_in) + sigma_b b`` (NTK) or ``h W + b`` (standard)."""
    if parameterization == "ntk":
        return h @ layer["w"] * (sigma_w / jnp.sqrt(h.shape[-1])) + sigma_b * layer["b"]
    return h @ layer["w"] + layer["b"]


def mlp(in_dim, width=512, depth=2, outputs=1, *, activation="tanh", parameterization="ntk",
        sigma_w=1.0, sigma_b=0.0, dtype=jnp.float32):
    """A fully connected network with ``depth`` layers (``depth - 1`` hidden layers of ``width``).

    ``depth=2`` is the two-layer network ``f(x) = v·σ(W x / sqrt(d)) / sqrt(m)``
    of Chapters 2-7 (NTK parameterization, ``sigma_w = 1``, no bias by default).
    Returns a :class:`Model`; outputs have shape ``(n,)`` if ``outputs == 1``
    else ``(n, outputs)``.
    """
    act = _architecture(activation, parameterization, in_dim=in_dim, width=width, depth=depth, outputs=outputs)
    dims = [in_dim] + [width] * (depth - 1) + [outputs]
    gain = sigma_w

    def init(key):
        keys = jax.random.split(key, depth)
        return [dense_init(k, a, b, parameterization, gain, dtype)
                for k, a, b in zip(keys, dims[:-1], dims[1:])]

    def apply(params, x):
        h = x
        for l, layer in enumerate(params):
            z = dense_apply(layer, h, parameterization, gain, sigma_b)
            h = act(z) if l < depth - 1 else z
        return h[:, 0] if outputs == 1 else h

    return Model(init, apply)


def conv_init(key, window, c_in, c_out, parameterization, sigma_w, dtype):
    """Filters ``window + (c_in, c_out)`` and zero biases of one convolutional layer."""
    w = jax.random.normal(key, tuple(window) + (c_in, c_out), dtype)
    if parameterization == "standard":
        w = w * sigma_w / jnp.sqrt(c_in * math.prod(window))
    return {"w": w, "b": jnp.zeros((c_out,), dtype)}


def conv_apply(layer, h, parameterization, sigma_w, sigma_b):
    """Stride-1 ``SAME`` convolution of ``h`` (``(n, *spatial, c_in)``) with the layer's filters.

    NTK parameterization scales the output by ``sigma_w / sqrt(fan_in)``,
    ``fan_in = c_in × (window size)``, exactly as :func:`dense_apply` does.
    """
    w = layer["w"]
    spatial = "HW" if w.ndim == 4 else "W"
    numbers = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    out = jax.lax.conv_general_dilated(h, w, (1,) * (w.ndim - 2), "SAME", dimension_numbers=numbers)
    if parameterization == "ntk":
        return out * (sigma_w / jnp.sqrt(math.prod(w.shape[:-1]))) + sigma_b * layer["b"]
    return out + layer["b"]


def cnn(input_shape, channels=16, depth=3, outputs=1, *, kernel_size=3, activation="tanh",
        parameterization="ntk", sigma_w=1.0, sigma_b=0.0, dtype=jnp.float32):
    """A convolutional network: ``depth - 1`` convolutions of ``channels`` filters, then a dense readout.

    ``input_shape`` is ``(height, width, in_channels)`` for images (2-D
    convolutions with ``kernel_size × kernel_size`` filters) or
    ``(length, in_channels)`` for signals (1-D convolutions). Every
    convolution has stride 1 and ``SAME`` padding and is followed by the
    activation; the readout is a dense layer on the flattened feature map, so
    the network keeps where in the image a feature was seen. ``apply`` takes
    inputs of shape ``(n, *input_shape)`` or flattened ``(n, prod(input_shape))``
    (the layout of :func:`gramlib.data.split`). Parameterizations as for
    :func:`mlp` (Chapter 4); outputs ``(n,)`` or ``(n, outputs)``.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"input_shape must be (height, width, channels) or (length, channels), got {input_shape}"
        )
    act = _architecture(activation, parameterization, {"depth": 2}, channels=channels, depth=depth,
                        outputs=outputs, kernel_size=kernel_size,
                        **{f"input_shape[{i}]": s for i, s in enumerate(input_shape)})
    window = (kernel_size,) * (len(input_shape) - 1)
    c_ins = [input_shape[-1]] + [channels] * (depth - 2)
    flat = math.prod(input_shape[:-1]) * channels

    def init(key):
        keys = jax.random.split(key, depth)
        convs = [conv_init(k, window, c, channels, parameterization, sigma_w, dtype)
                 for k, c in zip(keys[:-1], c_ins)]
        return convs + [dense_init(keys[-1], flat, outputs, parameterization, sigma_w, dtype)]

    def apply(params, x):
        h = x.reshape((x.shape[0],) + input_shape)
        for layer in params[:-1]:
            h = act(conv_apply(layer, h, parameterization, sigma_w, sigma_b))
        z = dense_apply(params[-1], h.reshape(h.shape[0], -1), parameterization, sigma_w, sigma_b)
        return z[:, 0] if outputs == 1 else z

    return Model(init, apply)
