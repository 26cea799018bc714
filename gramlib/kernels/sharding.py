"""Gram matrices and leave-one-out residuals over several devices (appendix "Scaling up").

Both computations split naturally over samples, so the devices form one mesh
axis ``"samples"`` (:func:`sample_mesh`) and every device owns a contiguous
block of rows:

* :func:`sharded_ntk`: device ``d`` computes the rows ``Θ(X_d, X2)`` of the
  empirical NTK for its share ``X_d`` of ``x1`` (``x2`` and the parameters are
  replicated), with the same kernels as :func:`gramlib.ntk.empirical_ntk`.
* :func:`sharded_loo_residuals`: the eigendecomposition ``Θ = U Λ Uᵀ`` is
  computed once (``O(N³)``, not sharded) and replicated; device ``d`` then
  evaluates the Talbot inversion of ``ρ̂_i(z) = (z [R(z)]_ii)^{-1} [R(z) r0]_i``
  (Chapter 5) for its samples only, from its rows of ``U``: the ``O(N²)`` work
  per contour node and time is divided by the number of devices.

Inputs are padded to a multiple of the device count (repeating the last
sample) and the padding is dropped from the result, which equals the
one-device result up to floating-point rounding. On a CPU, several devices can
be simulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` set
before JAX starts.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from .. import _checks
from ..mathematics.effective_gram import _CHUNK_ELEMENTS, _loo_limit, TALBOT_NODES, talbot_sum
from ..mathematics.kernel_flow import kernel_problem, spectrum
from .ntk import _ntk_traced

AXIS = "samples"


def sample_mesh(devices=None):
    """A one-axis mesh ``("samples",)`` over ``devices`` (default: all of ``jax.devices()``)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return jax.sharding.Mesh(np.array(devices), (AXIS,))


def _pad_rows(x, multiple):
    pad = (-x.shape[0]) % multiple
    return x if not pad else jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])


def sharded_ntk(f, params, x1, x2=None, *, mesh=None):
    """The empirical NTK ``Θ(x1, x2)`` with the rows of ``x1`` split over the devices of ``mesh``.

    Same contract as :func:`gramlib.ntk.empirical_ntk` (shape ``(n1 C, n2 C)``,
    rows ordered (sample, output); the traced structure of ``f``, dense
    factors or Jacobian blocks per leaf, :mod:`gramlib.tangent_structure`). Each device holds
    its ``(n1/devices) C × n2 C`` block of rows; the result is a global array
    sharded by rows.
    """
    if not callable(f):
        raise TypeError(f"f must be a function f(params, x), got {type(f).__name__}")
    a1 = _checks.array(x1, "x1")
    if a1.ndim < 1 or a1.shape[0] == 0:
        raise ValueError(f"x1 must be a non-empty batch with samples along axis 0, got shape {a1.shape}")
    a2 = a1 if x2 is None else _checks.array(x2, "x2")
    if a2.shape[1:] != a1.shape[1:] or a2.shape[0] == 0:
        raise ValueError(f"x2 must be a non-empty batch shaped like x1 {('n',) + a1.shape[1:]}, got {a2.shape}")
    mesh = sample_mesh() if mesh is None else mesh
    devices = mesh.devices.size
    out = jax.eval_shape(f, params, jnp.asarray(x1[:1]))
    if out.ndim not in (1, 2) or out.shape[0] != 1:
        raise ValueError(f"f(params, x) must return shape (n,) or (n, C); got {out.shape} for one sample")
    c = 1 if out.ndim == 1 else out.shape[1]
    x1p = _pad_rows(jnp.asarray(x1), devices)
    x2 = jnp.asarray(a2 if x2 is not None else x1)

    def block(p, xa, xb):  # the traced structure of f (Jacobian contraction where tracing cannot help)
        return _ntk_traced(f, p, xa, xb, False, p)

    run = jax.jit(jax.shard_map(block, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P(AXIS),
                                check_vma=False))
    return run(params, x1p, x2)[: a1.shape[0] * c]


def sharded_loo_residuals(theta, r0, t, *, outputs=1, mesh=None):
    """:func:`gramlib.effective_gram.loo_residuals` (gradient flow) with the samples split over devices.

    ``ρ_i(t)`` for ``t`` a number or a 1-D array of times (``0`` and ``inf``
    allowed). The spectrum of ``theta`` is computed once and replicated; each
    device inverts the Laplace transform for its own samples. Gradient
    descent (``lr``) is not sharded: use :func:`gramlib.effective_gram.loo_residuals`.
    Returns ``(N,)`` or ``(len(t), N)``.
    """
    theta, r0, times, scalar, n, _ = kernel_problem(theta, r0, t, outputs, None)
    mesh = sample_mesh() if mesh is None else mesh
    devices = mesh.devices.size
    lam, u, tol = spectrum(theta)
    times = np.asarray(times, dtype=float)
    out = np.zeros((times.size, r0.shape[0]), np.dtype(theta.dtype))
    out[times == 0] = np.asarray(r0)
    inf = np.isinf(times)
    if inf.any():
        out[inf] = np.asarray(_loo_limit(lam, u, r0[:, None], tol, n, outputs))[:, 0]
    middle = (times > 0) & ~inf
    if middle.any():
        t_mid = jnp.asarray(times[middle], theta.dtype)
        share = -(-n // devices)  # samples per device, padded
        u_rows = _pad_rows(u.reshape(n, outputs, -1), share * devices).reshape(share * devices * outputs, -1)
        a = u.T @ r0[:, None]
        chunk = int(min(max(1, _CHUNK_ELEMENTS // theta.shape[0]), t_mid.size * (TALBOT_NODES // 2)))
        local = partial(talbot_sum, n=n, outputs=outputs, first_order=False, chunk=chunk)
        run = jax.jit(jax.shard_map(lambda lam, u_local, a, t: local(lam, u_local, a, t), mesh=mesh,
                                    in_specs=(P(), P(AXIS), P(), P()), out_specs=P(None, AXIS),
                                    check_vma=False))
        done = run(lam, u_rows, a, t_mid)[:, : r0.shape[0], 0]
        out[middle] = np.asarray(done)
    out = jnp.asarray(out)
    return out[0] if scalar else out
