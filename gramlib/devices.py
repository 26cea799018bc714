"""Devices and precision: a mesh over the samples, the padding that splits rows evenly, float64.

The computations of the book split naturally over samples, so the devices form
one mesh axis ``"samples"`` (:func:`sample_mesh`) and every device owns a
contiguous block of rows. An array of ``n`` rows is padded to a multiple of
the number of blocks (:func:`pad_rows`, repeating its last row) and the
padding is dropped from the result. On a CPU, several devices can be simulated
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` set before JAX
starts. :func:`float64` runs a block with JAX's 64-bit floats switched on (the
theory checks) and restores the caller's setting. This module sits below every layer of :mod:`gramlib` and imports none.
"""

from __future__ import annotations

import contextlib
import numbers

import jax
import jax.numpy as jnp
import numpy as np

AXIS = "samples"
"""The name of the mesh axis over which rows (samples) are split."""


def sample_mesh(devices=None):
    """A one-axis mesh ``("samples",)`` over ``devices`` (default: all of ``jax.devices()``)."""
    if devices is not None and (isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__")):
        raise TypeError(f"devices must be a list of JAX devices, got {type(devices).__name__}")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must hold at least one JAX device, got an empty list")
    return jax.sharding.Mesh(np.array(devices), (AXIS,))


def row_blocks(mesh):
    """The number of row blocks of ``mesh``: the size of its ``"samples"`` axis.

    ``TypeError`` when ``mesh`` is not a :class:`jax.sharding.Mesh`,
    ``ValueError`` when it has no ``"samples"`` axis (make one with :func:`sample_mesh`).
    """
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. gramlib.devices.sample_mesh()), "
                        f"got {type(mesh).__name__}")
    if AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {AXIS!r} (gramlib.devices.sample_mesh()), "
                         f"got axes {mesh.axis_names}")
    return int(mesh.shape[AXIS])


def pad_rows(x, multiple):
    """``x`` with its last row repeated until its number of rows is a multiple of ``multiple``.

    Returns a JAX array; works inside ``jit`` (the shapes are static).
    The padding rows are copies, so a row-wise computation stays finite on them;
    drop them from its result with ``[: x.shape[0]]``.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, numbers.Integral):
        raise TypeError(f"multiple must be an integer, got {multiple!r} ({type(multiple).__name__})")
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have at least one row (samples along axis 0), got shape {x.shape}")
    pad = (-x.shape[0]) % int(multiple)
    return x if not pad else jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])


@contextlib.contextmanager
def float64():
    """``with float64(): ...`` computes in 64-bit floats and restores the caller's setting afterwards, also on error.

    Works on every JAX the book supports (``jax.enable_x64`` as a context manager is newer than
    the floor in ``pyproject.toml``).
    """
    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)
