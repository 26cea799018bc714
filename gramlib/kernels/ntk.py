"""The empirical neural tangent kernel and the two-time kernel of any JAX function (Chapters 4 and 7).

For a network ``f(params, x)`` the Jacobian ``J = ∂f(X; w)/∂w`` has one row per
(sample, output) pair; the empirical NTK Gram matrix is ``Θ = J Jᵀ``
(Jacot et al. 2018, Chapter 4), and the two-time kernel of a run is
``Θ(t, s) = J(X; w_t) J(X; w_s)ᵀ`` (Chapter 7). :func:`empirical_ntk` computes
them from the traced structure of ``f`` (:mod:`gramlib.tangent_structure`) or
by contracting per-sample Jacobians, in tiles (``batch_size``) or with the
rows of ``x1`` split over the devices of a mesh (``mesh``,
:mod:`gramlib.devices`); :func:`two_time_kernel` keeps the traced factors of
each snapshot. This module holds the kernels only: the linearized dynamics they
drive (``r(t) = e^{−Θt/n} r0`` and its gradient-descent version) are in
:mod:`gramlib.kernel_flow`.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from . import tangent_factors as tf
from . import tangent_structure as ts
from .. import _checks, devices

METHODS = ("auto", "structured", "jacobian")
"""Ways to compute the empirical NTK. ``"auto"`` (the default) traces ``f`` and
takes, leaf by leaf, the cheaper of dense factors and a Jacobian block
(:mod:`gramlib.tangent_structure`); ``"structured"`` takes dense factors
wherever they apply; ``"jacobian"`` contracts per-sample Jacobians of the whole
network from ``jax.jacrev``."""


# ----------------------------------------------------------------------------- empirical NTK

def _sample_jacobian(f, params, x):
    """Per-sample Jacobians, flattened: ``(n*C, P)`` with rows ordered (sample, output)."""
    outputs = int(np.prod(jax.eval_shape(f, params, x[:1]).shape[1:], dtype=int))
    jac = jax.vmap(jax.jacrev(lambda p, xi: f(p, xi[None])[0]), in_axes=(None, 0))(params, x)
    rows = x.shape[0] * outputs
    return jnp.concatenate([leaf.reshape(rows, -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)


def _batches(x, batch_size):
    """``x`` padded (repeating its last row) to whole batches: ``(batches, batch_size, ...)``."""
    return devices.pad_rows(x, batch_size).reshape((-1, batch_size) + x.shape[1:])


@partial(jax.jit, static_argnames=("f", "batch_size"))
def _ntk_jacobian(f, params, x1, x2, batch_size, params2):
    if batch_size is None:
        j1 = _sample_jacobian(f, params, x1)
        j2 = _sample_jacobian(f, params2, x2)
        return j1 @ j2.T
    n1, n2 = x1.shape[0], x2.shape[0]
    b1, b2 = _batches(x1, batch_size), _batches(x2, batch_size)

    def row(xa):
        ja = _sample_jacobian(f, params, xa)
        return lax.map(lambda xb: ja @ _sample_jacobian(f, params2, xb).T, b2)

    tiles = lax.map(row, b1)  # (batches1, batches2, batch*C, batch*C)
    c = tiles.shape[2] // batch_size
    full = tiles.transpose(0, 2, 1, 3).reshape(b1.shape[0] * batch_size * c, b2.shape[0] * batch_size * c)
    return full[: n1 * c, : n2 * c]


_factors = jax.jit(tf.factors, static_argnums=(0, 1))
_contract = jax.jit(tf.contract, static_argnames=("same",))
"""The factors and their contraction are compiled apart: ``benchmarks/bench_cnn_floor.py`` times both ways
(``gramlib`` and ``gramlib, one program``) on its CNN."""


def _plan(f, params, x1, n1, n2, method):
    """The traced program of ``f`` and the per-leaf choice, or ``None`` where tracing cannot help."""
    prog = ts.program(f, params, x1)
    if not prog.input_dependent:
        return None
    return prog, ts.choose(prog, n1, n2, "structured" if method == "structured" else "auto")


def _ntk_traced(f, params, x1, x2, same, params2, method="auto"):
    """``Θ(x1, x2)`` from the traced structure of ``f`` (one jit-compiled call), or the Jacobian contraction."""
    plan = _plan(f, params, x1, x1.shape[0], x2.shape[0], method)
    if plan is None:
        return _ntk_jacobian(f, params, x1, x2, None, params2)
    prog, choice = plan
    fa = _factors(prog, choice, jax.tree_util.tree_leaves(params), prog.consts, x1)
    fb = fa if same else _factors(prog, choice, jax.tree_util.tree_leaves(params2), prog.consts, x2)
    return _contract(fa, fb, same=same)


def _set_rows(out, block, start):
    return lax.dynamic_update_slice_in_dim(out, block, start, 0)


_put_rows = jax.jit(_set_rows, donate_argnums=0)  # in place on concrete arrays (nothing to donate under a transform)


def _ntk_traced_tiled(f, params, x1, x2, batch_size, params2, method="auto"):
    """Tiles of ``batch_size`` samples: factors of ``x2`` tile by tile, then one row tile at a time.

    Peak memory: the result, the factors of ``x2`` (``O(n2 · width)`` for
    dense layers, ``O(n2 C P_w)`` for Jacobian blocks) and one
    ``batch_size × n2`` tile of each Gram matrix.
    """
    plan = _plan(f, params, x1, batch_size, x2.shape[0], method)
    if plan is None:
        return _ntk_jacobian(f, params, x1, x2, batch_size, params2)
    prog, choice = plan
    leaves, leaves2 = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2)

    def tiles(x):
        padded = _batches(x, batch_size)
        return [(b, min(batch_size, x.shape[0] - b * batch_size)) for b in range(padded.shape[0])], padded

    parts2, pad2 = tiles(x2)
    fb = [_factors(prog, choice, leaves2, prog.consts, pad2[b]) for b, _ in parts2]
    fb = jax.tree_util.tree_map(lambda *p: jnp.concatenate(p)[: x2.shape[0]], *fb)
    parts1, pad1 = tiles(x1)
    out = None
    for b, size in parts1:
        block = _contract(_factors(prog, choice, leaves, prog.consts, pad1[b]), fb)
        c = block.shape[0] // batch_size
        if out is None:
            out = jnp.zeros((x1.shape[0] * c, block.shape[1]), block.dtype)
        out = (_set_rows if _checks.is_traced(block) else _put_rows)(out, block[: size * c], b * batch_size * c)
    return out


def _kernel(f, params, x1, x2, same, params2, method, batch_size):
    """``Θ(x1, x2)`` by ``method`` (checked arguments), untiled or in tiles of ``batch_size`` samples."""
    if method == "jacobian":
        return _ntk_jacobian(f, params, x1, x2, batch_size, params2)
    if batch_size is None:
        return _ntk_traced(f, params, x1, x2, same, params2, method)
    return _ntk_traced_tiled(f, params, x1, x2, batch_size, params2, method)


@lru_cache(maxsize=8)
def _row_sharded(f, mesh, method, batch_size):
    """:func:`_kernel` as one jit-compiled call with the rows of ``x1`` split over the ``"samples"`` axis of ``mesh``."""

    def block(params, params2, xa, xb):  # one device: its rows of x1 against all of x2
        return _kernel(f, params, xa, xb, False, params2, method, batch_size)

    return jax.jit(jax.shard_map(block, mesh=mesh, in_specs=(P(), P(), P(devices.AXIS), P()),
                                 out_specs=P(devices.AXIS), check_vma=False))


def _sharded_kernel(f, params, x1, x2, params2, method, batch_size, mesh, outputs):
    """``Θ(x1, x2)`` with ``x1`` padded to a multiple of the row blocks of ``mesh``, the padding dropped."""
    x1p = devices.pad_rows(x1, devices.row_blocks(mesh))
    try:
        run = _row_sharded(f, mesh, method, batch_size)
    except TypeError:  # an unhashable f: compiled anew at every call
        run = _row_sharded.__wrapped__(f, mesh, method, batch_size)
    return run(params, params2, x1p, x2)[: x1.shape[0] * outputs]


def _check_call(f, params, x, name):
    """``f(params, x[:1])`` must trace and return ``(1,)`` or ``(1, C)``; else a ``ValueError`` naming ``name``."""
    try:
        out = jax.eval_shape(f, params, x[:1])
    except Exception as err:
        raise ValueError(f"f(params, {name}) fails for {name} of shape {tuple(x.shape)} "
                         f"(does {name} have the input shape f expects?): {err}") from err
    if not hasattr(out, "shape") or len(out.shape) not in (1, 2) or out.shape[0] != 1:
        raise ValueError(f"f(params, x) must return shape (n,) or (n, C); got "
                         f"{getattr(out, 'shape', type(out).__name__)} for one sample")
    return out


def _check_like(params, other, name):
    """``other`` a tree of arrays with the tree structure and leaf shapes of ``params``; else a ``ValueError``."""
    want, got = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(other)
    if want != got:
        raise ValueError(f"{name} must have the tree structure of the parameters {want}, got {got}")
    _checks.parameters(other, name)
    for (path, w), v in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(other)):
        if np.shape(w) != np.shape(v):
            raise ValueError(f"{name}{jax.tree_util.keystr(path)} must have the shape {np.shape(w)} of the "
                             f"parameters, got {np.shape(v)}")


def _check_batch(x, name):
    """``x`` a finite array with at least one sample along axis 0; else a ``ValueError`` naming ``name``."""
    a = _checks.array(x, name)
    if a.ndim < 1 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch with samples along axis 0, got shape {a.shape}")
    return a


@_checks.public
def empirical_ntk(f, params, x1, x2=None, *, params2=None, batch_size=None, method=None, mesh=None):
    """The empirical NTK Gram matrix ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` of any JAX function (Chapter 4).

    ``f(params, x)`` maps a batch ``x`` of shape ``(n, ...)`` to outputs of shape
    ``(n,)`` or ``(n, C)`` and must treat samples independently (no batch
    statistics); ``params`` is any tree (dicts, lists, tuples) of arrays, and
    ``f`` may be a closure over model objects. The result is ``(n1, n2)`` for
    scalar outputs, else ``(n1*C, n2*C)`` with rows ordered (sample, output),
    matching ``r.reshape(-1)`` for residuals ``r`` of shape ``(n, C)``.
    ``x2=None`` means ``x2 = x1``.

    ``Θ = Σ_w J_w J_wᵀ`` is summed over parameter leaves ``w``. The default
    ``method="auto"`` traces ``f`` once per shape (:mod:`gramlib.tangent_structure`):
    a leaf used as the weight of a dense product ``z = X_in W`` contributes
    ``(X_in X_inᵀ) ⊙ (G Gᵀ)`` (summed over the axes the product shares, with
    ``G = ∂f/∂z`` from ``C`` backward passes), without forming its Jacobian;
    so does a convolution's filter, with its input patches as ``X_in`` and its
    output positions as the shared axes; every other leaf (biases, shared
    weights, …) gets its per-sample Jacobian block by transposing only the
    equations that use it (``G`` summed over broadcast axes for a bias; the
    per-sample filter gradient for a convolution), then ``J_w J_wᵀ``. A flop
    count picks, per dense or convolution leaf, the cheaper of the two
    (Chapter 4, appendix "Scaling up").
    ``method="structured"`` takes dense factors wherever they apply;
    ``method="jacobian"`` contracts per-sample Jacobians of the whole network
    from ``jax.jacrev``. ``batch_size`` tiles both inputs so that only one
    ``batch_size × n2`` tile of the Gram matrices (Jacobian path: two tiles of
    per-sample Jacobians, ``2 * batch_size * C * P`` numbers) is live. The
    computation is jit-compiled and runs in the dtype of ``params`` and ``x``.

    ``params2`` (same tree structure and shapes as ``params``) takes the
    second Jacobian at other weights: ``J(x1; params) J(x2; params2)ᵀ``, the
    two-time kernel ``Θ(t, s) = J(w_t) J(w_s)ᵀ`` of Chapter 7 for
    ``params = w_t``, ``params2 = w_s``.

    ``mesh`` (a :class:`jax.sharding.Mesh` with a ``"samples"`` axis, e.g.
    :func:`gramlib.devices.sample_mesh`) splits the rows of ``x1`` over its
    devices: device ``d`` computes the rows ``Θ(X_d, x2)`` of its share
    ``X_d`` by the same method (``x2`` and the parameters are replicated), and
    the result, equal to the one-device result up to rounding, is sharded by
    rows (appendix "Scaling up"). ``x1`` is padded to a multiple of the
    device count and the padding dropped.

    Works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` in ``params``, ``params2``,
    ``x1`` and ``x2`` (``f``, ``batch_size``, ``method`` and ``mesh`` are static: close over
    them); the inputs are checked for NaN/inf only when concrete.
    """
    if not callable(f):
        raise TypeError(f"f must be a function f(params, x), got {type(f).__name__}")
    method = "auto" if method is None else method
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    a1 = _check_batch(x1, "x1")
    if x2 is not None:
        a2 = _check_batch(x2, "x2")
        if a2.ndim != a1.ndim or a2.shape[1:] != a1.shape[1:]:
            raise ValueError(f"x2 must be a batch shaped like x1 {('n',) + a1.shape[1:]}, got {a2.shape}")
    if batch_size is not None:
        batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    if mesh is not None:
        devices.row_blocks(mesh)
    _checks.parameters(params, "params")
    if params2 is None:
        params2 = params
    else:
        _check_like(params, params2, "params2")
    x1 = jnp.asarray(x1)
    same = x2 is None and params2 is params
    x2 = x1 if x2 is None else jnp.asarray(x2)
    out = _check_call(f, params, x1, "x1")
    if mesh is not None:
        outputs = 1 if len(out.shape) == 1 else out.shape[1]
        return _sharded_kernel(f, params, x1, x2, params2, method, batch_size, mesh, outputs)
    return _kernel(f, params, x1, x2, same, params2, method, batch_size)


@_checks.public
def two_time_kernel(f, weights, x, *, batch_size=None, mesh=None):
    """The two-time kernel ``Θ(t_k, t_l) = J(X; w_k) J(X; w_l)ᵀ`` of a run, as a function of ``(k, l)`` (Chapter 7).

    ``weights`` is a sequence of parameter trees ``w_0, w_1, …`` (e.g. the
    snapshots of :class:`gramlib.train.TrainResult`), ``x`` the training
    inputs. ``Θ(t_k, t_k)`` is the empirical NTK at ``w_k``; for ``k ≠ l`` it
    says how a step taken with the Jacobian of time ``t_l`` moves the outputs
    as seen at time ``t_k``. Returns ``theta(k, l)``, an ``(N, N)`` array.
    Without ``batch_size`` and ``mesh``, the traced factors of each ``w_k``
    (:mod:`gramlib.tangent_structure`) are computed once and kept, so that
    ``m`` weights cost ``m`` factor passes and one contraction per pair; with
    either, each pair is one call of :func:`empirical_ntk` with these options. ``k`` and
    ``l`` are Python integers; the kernel works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``
    in ``weights`` and ``x`` as :func:`empirical_ntk` does.
    """
    if not callable(f):
        raise TypeError(f"f must be a function f(params, x), got {type(f).__name__}")
    weights = list(weights)
    if not weights:
        raise ValueError("weights must hold at least one parameter tree")
    _checks.parameters(weights[0], "weights[0]")
    for i, w in enumerate(weights[1:], start=1):
        _check_like(weights[0], w, f"weights[{i}]")
    _check_batch(x, "x")
    if batch_size is not None:
        batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    if mesh is not None:
        devices.row_blocks(mesh)
    x = jnp.asarray(x)
    _check_call(f, weights[0], x, "x")
    plan = _plan(f, weights[0], x, x.shape[0], x.shape[0], "auto")
    factors = {}

    def theta(k, l):
        for name, i in (("k", k), ("l", l)):
            _checks.integer(i, name, minimum=0)
            if i >= len(weights):
                raise ValueError(f"{name} must index the {len(weights)} weights, got {i}")
        if plan is None or batch_size is not None or mesh is not None:
            return empirical_ntk(f, weights[k], x, params2=weights[l], batch_size=batch_size, mesh=mesh)
        prog, choice = plan
        for i in (k, l):
            if i not in factors:
                factors[i] = _factors(prog, choice, jax.tree_util.tree_leaves(weights[i]), prog.consts, x)
        return _contract(factors[k], factors[l], same=k == l)

    return theta
