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


def _parameterization(parameterization):
    """Check ``parameterization`` is ``"ntk"`` or ``"standard"``."""
    if not isinstance(parameterization, str) or parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")


def _scales(sigma_w, sigma_b=0.0):
    """Check the scales ``σ_w > 0`` and ``σ_b ≥ 0`` (unless traced, e.g. differentiated)."""
    if not isinstance(sigma_w, jax.core.Tracer):
        _checks.positive(sigma_w, "sigma_w")
    if not isinstance(sigma_b, jax.core.Tracer):
        _checks.positive(sigma_b, "sigma_b", allow_zero=True)


def _float_dtype(dtype):
    """Check that ``dtype`` is a floating-point dtype; return it as a ``jnp.dtype``."""
    try:
        out = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be a floating-point dtype such as jnp.float32, got {dtype!r}") from err
    if not jnp.issubdtype(out, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype such as jnp.float32, got {out}")
    return out


def _key(key):
    """Check that ``key`` is a PRNG key (``jax.random.PRNGKey(seed)`` or ``jax.random.key(seed)``)."""
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    if not typed and (dtype != jnp.uint32 or shape != (2,)):
        raise TypeError(f"key must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
                        f"got {type(key).__name__} {dtype} {shape}")


def _values(x, name):
    """Check that ``x`` holds finite numbers, unless it is traced (under ``jit``, ``grad``, ``vmap``)."""
    if not isinstance(x, jax.core.Tracer):
        _checks.array(x, name)


def _layer(layer, window_dims):
    """Check a layer ``{"w": (*window, fan_in, fan_out) or (fan_in, fan_out), "b": (fan_out,)}``.

    ``window_dims`` are the allowed numbers of dimensions of ``w``; returns the shape of ``w``.
    """
    if not isinstance(layer, dict) or set(layer) != {"w", "b"}:
        raise TypeError(f"layer must be a dict with keys 'w' and 'b', got {type(layer).__name__}")
    shape = tuple(jnp.shape(layer["w"]))
    if len(shape) not in window_dims:
        raise ValueError(f"layer['w'] must have {' or '.join(map(str, window_dims))} dimensions, got shape {shape}")
    if tuple(jnp.shape(layer["b"])) != shape[-1:]:
        raise ValueError(f"layer['b'] must have shape {shape[-1:]}, got {tuple(jnp.shape(layer['b']))}")
    return shape


def _architecture(activation, parameterization, sigma_w, sigma_b, dtype, minimum=None, **sizes):
    """Check a model's arguments (every size an integer ``≥ minimum.get(name, 1)``); return the activation."""
    for name, value in sizes.items():
        _checks.integer(value, name, minimum=(minimum or {}).get(name, 1))
    _parameterization(parameterization)
    _scales(sigma_w, sigma_b)
    _float_dtype(dtype)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def dense_init(key, fan_in, fan_out, parameterization, sigma_w, dtype):
    """One dense layer: weights ``(fan_in, fan_out)``, ``N(0, 1)`` (NTK) or ``N(0, σ_w²/fan_in)``
    (standard), and zero biases (Chapter 4)."""
    _key(key)
    fan_in = _checks.integer(fan_in, "fan_in", minimum=1)
    fan_out = _checks.integer(fan_out, "fan_out", minimum=1)
    _parameterization(parameterization)
    _scales(sigma_w)
    return _dense_init(key, fan_in, fan_out, parameterization, sigma_w, _float_dtype(dtype))


def _dense_init(key, fan_in, fan_out, parameterization, sigma_w, dtype):
    w = jax.random.normal(key, (fan_in, fan_out), dtype)
    if parameterization == "standard":
        w = w * sigma_w / jnp.sqrt(fan_in)
    return {"w": w, "b": jnp.zeros((fan_out,), dtype)}


def dense_apply(layer, h, parameterization, sigma_w, sigma_b):
    """``h W σ_w / sqrt(fan_in) + σ_b b`` (NTK) or ``h W + b`` (standard), ``h`` ``(..., fan_in)`` (Chapter 4).

    Checks shapes (also under ``jit``) and, unless ``h`` is traced, that ``h`` is finite.
    """
    shape = _layer(layer, (2,))
    _values(h, "h")
    if jnp.ndim(h) < 1 or jnp.shape(h)[-1] != shape[0]:
        raise ValueError(f"h must have shape (..., {shape[0]}) to match layer['w'] {shape}, got {jnp.shape(h)}")
    _parameterization(parameterization)
    _scales(sigma_w, sigma_b)
    return _dense(layer, h, parameterization, sigma_w, sigma_b)


def _dense(layer, h, parameterization, sigma_w, sigma_b):
    if parameterization == "ntk":
        return h @ layer["w"] * (sigma_w / jnp.sqrt(h.shape[-1])) + sigma_b * layer["b"]
    return h @ layer["w"] + layer["b"]


def _network(params, depth):
    """Check that ``params`` is a list (or tuple) of ``depth`` layer dicts ``{"w", "b"}``."""
    length = len(params) if isinstance(params, (list, tuple)) else None
    if length != depth:
        raise ValueError(f"params must be a list of {depth} layers (as init returns), got "
                         f"{type(params).__name__} of length {length}")


def mlp(in_dim, width=512, depth=2, outputs=1, *, activation="tanh", parameterization="ntk",
        sigma_w=1.0, sigma_b=0.0, dtype=jnp.float32):
    """A fully connected network with ``depth`` layers (``depth - 1`` hidden layers of ``width``).

    ``depth=2`` is the two-layer network ``f(x) = v·σ(W x / sqrt(d)) / sqrt(m)``
    of Chapters 2-7 (NTK parameterization, ``sigma_w = 1``, no bias by default).
    Returns a :class:`Model`; ``apply`` takes inputs ``(n, in_dim)`` and gives
    outputs of shape ``(n,)`` if ``outputs == 1`` else ``(n, outputs)``.
    """
    act = _architecture(activation, parameterization, sigma_w, sigma_b, dtype, in_dim=in_dim, width=width,
                        depth=depth, outputs=outputs)
    dims = [in_dim] + [width] * (depth - 1) + [outputs]

    def init(key):
        _key(key)
        keys = jax.random.split(key, depth)
        return [_dense_init(k, a, b, parameterization, sigma_w, dtype)
                for k, a, b in zip(keys, dims[:-1], dims[1:])]

    def apply(params, x):
        _network(params, depth)
        _values(x, "x")
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != in_dim:
            raise ValueError(f"x must have shape (n, {in_dim}), got {jnp.shape(x)}")
        h = x
        for l, layer in enumerate(params):
            z = _dense(layer, h, parameterization, sigma_w, sigma_b)
            h = act(z) if l < depth - 1 else z
        return h[:, 0] if outputs == 1 else h

    return Model(init, apply)


def conv_init(key, window, c_in, c_out, parameterization, sigma_w, dtype):
    """Filters ``window + (c_in, c_out)``, ``N(0, 1)`` (NTK) or ``N(0, σ_w²/fan_in)`` (standard), and zero biases.

    ``window`` is the filter size, ``(k,)`` for 1-D or ``(k_1, k_2)`` for 2-D convolutions;
    ``fan_in = c_in × (window size)`` (Chapter 4).
    """
    _key(key)
    window = tuple(window) if isinstance(window, (tuple, list)) else window
    if not isinstance(window, tuple) or len(window) not in (1, 2):
        raise ValueError(f"window must be a tuple of 1 or 2 filter sizes, got {window!r}")
    window = tuple(_checks.integer(k, "window size", minimum=1) for k in window)
    c_in = _checks.integer(c_in, "c_in", minimum=1)
    c_out = _checks.integer(c_out, "c_out", minimum=1)
    _parameterization(parameterization)
    _scales(sigma_w)
    return _conv_init(key, window, c_in, c_out, parameterization, sigma_w, _float_dtype(dtype))


def _conv_init(key, window, c_in, c_out, parameterization, sigma_w, dtype):
    w = jax.random.normal(key, tuple(window) + (c_in, c_out), dtype)
    if parameterization == "standard":
        w = w * sigma_w / jnp.sqrt(c_in * math.prod(window))
    return {"w": w, "b": jnp.zeros((c_out,), dtype)}


def conv_apply(layer, h, parameterization, sigma_w, sigma_b):
    """Stride-1 ``SAME`` convolution of ``h`` (``(n, *spatial, c_in)``) with the layer's filters (Chapter 4).

    NTK parameterization scales the output by ``sigma_w / sqrt(fan_in)``,
    ``fan_in = c_in × (window size)``, exactly as :func:`dense_apply` does.
    """
    shape = _layer(layer, (3, 4))
    _values(h, "h")
    if jnp.ndim(h) != len(shape) or jnp.shape(h)[-1] != shape[-2]:
        raise ValueError(f"h must have shape (n, {', '.join(['...'] * (len(shape) - 2))}, {shape[-2]}) to match "
                         f"layer['w'] {shape}, got {jnp.shape(h)}")
    _parameterization(parameterization)
    _scales(sigma_w, sigma_b)
    return _conv(layer, h, parameterization, sigma_w, sigma_b)


def _conv(layer, h, parameterization, sigma_w, sigma_b):
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
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (2, 3):
        raise ValueError(
            f"input_shape must be (height, width, channels) or (length, channels), got {input_shape!r}"
        )
    input_shape = tuple(input_shape)
    act = _architecture(activation, parameterization, sigma_w, sigma_b, dtype, {"depth": 2}, channels=channels,
                        depth=depth, outputs=outputs, kernel_size=kernel_size,
                        **{f"input_shape[{i}]": s for i, s in enumerate(input_shape)})
    window = (kernel_size,) * (len(input_shape) - 1)
    c_ins = [input_shape[-1]] + [channels] * (depth - 2)
    flat = math.prod(input_shape[:-1]) * channels

    def init(key):
        _key(key)
        keys = jax.random.split(key, depth)
        convs = [_conv_init(k, window, c, channels, parameterization, sigma_w, dtype)
                 for k, c in zip(keys[:-1], c_ins)]
        return convs + [_dense_init(keys[-1], flat, outputs, parameterization, sigma_w, dtype)]

    def apply(params, x):
        _network(params, depth)
        _values(x, "x")
        if jnp.ndim(x) < 2 or tuple(jnp.shape(x)[1:]) not in (input_shape, (math.prod(input_shape),)):
            raise ValueError(f"x must have shape (n, {', '.join(map(str, input_shape))}) or "
                             f"(n, {math.prod(input_shape)}), got {jnp.shape(x)}")
        h = x.reshape((x.shape[0],) + input_shape)
        for layer in params[:-1]:
            h = act(_conv(layer, h, parameterization, sigma_w, sigma_b))
        z = _dense(params[-1], h.reshape(h.shape[0], -1), parameterization, sigma_w, sigma_b)
        return z[:, 0] if outputs == 1 else z

    return Model(init, apply)
