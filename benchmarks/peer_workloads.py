"""Workloads shared by gramlib and its peer, neural-tangents (``benchmarks/bench_peer.py``).

This file imports only JAX and NumPy and runs on JAX 0.4.30 (the peer's
virtual environment) as well as on gramlib's JAX. Parameters and inputs are
drawn with NumPy from a seed, so that both processes build the same arrays.

* ``mlp``: a two-layer tanh MLP written as a plain function over a dict,
  ``f(x) = tanh(x W / sqrt(d)) v / sqrt(m)`` (NTK parameterization, no bias),
  ``d = 64``, ``m = 512``, scalar output, ``n = 1000``.
* ``cnn``: three 3×3 ``SAME`` convolutions of 16 channels with tanh on 8×8×1
  inputs, a dense read-out, NTK parameterization, scalar output, ``n = 1000``.
* ``cnn-late``: the late layers of a deeper CNN, few positions and many
  channels: a 3×3 ``VALID`` convolution from 4×4×32 inputs to 2×2×64, a
  2×2 ``VALID`` one to 1×1×64, tanh, a dense read-out, NTK parameterization,
  scalar output, ``n = 1000`` (float32 only, :data:`DTYPES`). Its filters
  are where gramlib's patch factors are cheaper than filter gradients.
* ``gramlib-mlp``: the network of ``gramlib.models.mlp(64, 512, 2)`` (weights,
  zero biases scaled by ``sigma_b = 0``), written out for the peer; gramlib
  runs its own ``models.mlp`` with the same arrays.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

N, D, WIDTH, CHANNELS = 1000, 64, 512, 16
WORKLOADS = ("mlp", "cnn", "cnn-late", "gramlib-mlp")
DTYPES = {"cnn-late": ("float32",)}
"""Workloads timed in fewer dtypes than float32 and float64: the peer's Jacobian contraction of ``cnn-late``
transposes its convolutions per sample as grouped convolutions, slow in float64 on XLA's CPU."""
LATE = (32, 64)  # cnn-late: input and hidden channels


def _normal(rng, shape, dtype):
    return jnp.asarray(rng.standard_normal(shape), dtype)


def mlp_f(p, x):
    h = jnp.tanh(x @ p["w"] / math.sqrt(x.shape[-1]))
    return (h @ p["v"] / math.sqrt(h.shape[-1]))[:, 0]


def _conv(h, w):
    return jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def cnn_f(p, x):
    h = x.reshape(x.shape[0], 8, 8, 1)
    for w in p["convs"]:
        h = jnp.tanh(_conv(h, w) / math.sqrt(9 * w.shape[2]))
    h = h.reshape(h.shape[0], -1)
    return (h @ p["out"] / math.sqrt(h.shape[-1]))[:, 0]


def _valid(h, w):
    return jax.lax.conv_general_dilated(h, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def cnn_late_f(p, x):
    h = x.reshape(x.shape[0], 4, 4, LATE[0])
    for w in p["convs"]:
        h = jnp.tanh(_valid(h, w) / math.sqrt(w.shape[0] * w.shape[1] * w.shape[2]))
    h = h.reshape(h.shape[0], -1)
    return (h @ p["out"] / math.sqrt(h.shape[-1]))[:, 0]


def gramlib_mlp_f(p, x):
    """``gramlib.models.mlp(64, 512, 2)`` (NTK parameterization, sigma_w = 1, sigma_b = 0) written out."""
    h = jnp.tanh(x @ p[0]["w"] / math.sqrt(x.shape[-1]) + 0.0 * p[0]["b"])
    return (h @ p[1]["w"] / math.sqrt(h.shape[-1]) + 0.0 * p[1]["b"])[:, 0]


def workload(name, dtype, seed=0, n=N):
    """``(f, params, x)`` of workload ``name`` in ``dtype`` (``"float32"`` or ``"float64"``), ``n`` inputs."""
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(dtype)
    if name == "mlp":
        params = {"w": _normal(rng, (D, WIDTH), dtype), "v": _normal(rng, (WIDTH, 1), dtype)}
        return mlp_f, params, _normal(rng, (n, D), dtype)
    if name == "cnn":
        convs = [_normal(rng, (3, 3, c, CHANNELS), dtype) for c in (1, CHANNELS, CHANNELS)]
        params = {"convs": convs, "out": _normal(rng, (64 * CHANNELS, 1), dtype)}
        return cnn_f, params, _normal(rng, (n, 64), dtype)
    if name == "cnn-late":
        c_in, c = LATE
        params = {"convs": [_normal(rng, (3, 3, c_in, c), dtype), _normal(rng, (2, 2, c, c), dtype)],
                  "out": _normal(rng, (c, 1), dtype)}
        return cnn_late_f, params, _normal(rng, (n, 16 * c_in), dtype)
    if name == "gramlib-mlp":
        params = [{"w": _normal(rng, (D, WIDTH), dtype), "b": jnp.zeros((WIDTH,), dtype)},
                  {"w": _normal(rng, (WIDTH, 1), dtype), "b": jnp.zeros((1,), dtype)}]
        return gramlib_mlp_f, params, _normal(rng, (n, D), dtype)
    raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")


def summary(theta):
    """A few numbers of ``Θ`` that both processes print, to check they computed the same matrix."""
    theta = np.asarray(theta, np.float64)
    return {"trace": float(np.trace(theta)), "sum": float(theta.sum()), "corner": theta[:3, :3].ravel().tolist()}
