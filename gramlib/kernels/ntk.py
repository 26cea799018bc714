"""The empirical neural tangent kernel and the linearized residual dynamics (Chapter 4).

For a network ``f(params, x)`` the Jacobian ``J = ∂f(X; w)/∂w`` has one row per
(sample, output) pair; the empirical NTK Gram matrix is ``Θ = J Jᵀ``
(Jacot et al. 2018). Linearizing ``f`` around its initialization and training
on ``L_S = (1/2n) Σ_i ‖f(x_i) − y_i‖²`` gives the residual dynamics

    gradient flow      ṙ = −(1/n) Θ r          ⇒  r(t) = e^{−Θt/n} r0,
    gradient descent   r_{k+1} = (I − (η/n) Θ) r_k  ⇒  r_k = (I − (η/n) Θ)^k r0,

computed here through one eigendecomposition ``Θ = U Λ Uᵀ``
(:func:`kernel_residuals`). The spectral helpers of this module are shared with
:mod:`gramlib.effective_gram` (Chapter 5).
"""

from __future__ import annotations

from functools import partial

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from . import tangent_structure as ts
from .. import _checks

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


def _pad_batches(x, batch_size):
    """Pad ``x`` (repeating its last row) to whole batches: ``(batches, batch_size, ...)``."""
    n = x.shape[0]
    pad = (-n) % batch_size
    if pad:
        x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
    return x.reshape((-1, batch_size) + x.shape[1:])


@partial(jax.jit, static_argnames=("f", "batch_size"))
def _ntk_jacobian(f, params, x1, x2, batch_size, params2):
    if batch_size is None:
        j1 = _sample_jacobian(f, params, x1)
        j2 = _sample_jacobian(f, params2, x2)
        return j1 @ j2.T
    n1, n2 = x1.shape[0], x2.shape[0]
    b1, b2 = _pad_batches(x1, batch_size), _pad_batches(x2, batch_size)

    def row(xa):
        ja = _sample_jacobian(f, params, xa)
        return lax.map(lambda xb: ja @ _sample_jacobian(f, params2, xb).T, b2)

    tiles = lax.map(row, b1)  # (batches1, batches2, batch*C, batch*C)
    c = tiles.shape[2] // batch_size
    full = tiles.transpose(0, 2, 1, 3).reshape(b1.shape[0] * batch_size * c, b2.shape[0] * batch_size * c)
    return full[: n1 * c, : n2 * c]


@partial(jax.jit, static_argnames=("prog", "choice", "same"))
def _ntk_traced_jit(prog, choice, leaves, consts, x1, x2, same, leaves2):
    fa = ts.factors(prog, choice, leaves, consts, x1)
    return ts.contract(fa, fa if same else ts.factors(prog, choice, leaves2, consts, x2), same)


_factors = jax.jit(ts.factors, static_argnums=(0, 1))
_contract = jax.jit(ts.contract, static_argnames=("same",))


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
    return _ntk_traced_jit(prog, choice, jax.tree_util.tree_leaves(params), prog.consts, x1, x2, same,
                           jax.tree_util.tree_leaves(params2))


@partial(jax.jit, donate_argnums=0)
def _put_rows(out, block, start):
    return lax.dynamic_update_slice_in_dim(out, block, start, 0)


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
        padded = _pad_batches(x, batch_size)
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
        out = _put_rows(out, block[: size * c], b * batch_size * c)
    return out


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


def _check_params(params, name):
    """Every leaf of ``params`` an array of numbers (not checked for NaN: a diverged run's weights still have an NTK)."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"{name} must hold at least one array")
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
        _checks.array(w, f"{name}{jax.tree_util.keystr(path)}", finite=False)


def empirical_ntk(f, params, x1, x2=None, *, params2=None, batch_size=None, method=None):
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
    every other leaf (convolution filters, biases, shared weights, …) gets its
    per-sample Jacobian block by transposing only the equations that use it
    (patches times ``G`` for a convolution, ``G`` summed over broadcast axes for
    a bias), then ``J_w J_wᵀ``. A flop count picks, per dense leaf, the
    cheaper of the two (Chapter 4, appendix "Scaling up").
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
    """
    if not callable(f):
        raise TypeError(f"f must be a function f(params, x), got {type(f).__name__}")
    method = "auto" if method is None else method
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    a1 = _checks.array(x1, "x1")
    if a1.ndim < 1 or a1.shape[0] == 0:
        raise ValueError(f"x1 must be a non-empty batch with samples along axis 0, got shape {a1.shape}")
    if x2 is not None:
        a2 = _checks.array(x2, "x2")
        if a2.ndim != a1.ndim or a2.shape[1:] != a1.shape[1:] or a2.shape[0] == 0:
            raise ValueError(f"x2 must be a non-empty batch shaped like x1 {('n',) + a1.shape[1:]}, got {a2.shape}")
    if batch_size is not None:
        batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    _check_params(params, "params")
    if params2 is None:
        params2 = params
    else:
        shapes = [jax.tree_util.tree_structure(params), [np.shape(w) for w in jax.tree_util.tree_leaves(params)]]
        shapes2 = [jax.tree_util.tree_structure(params2), [np.shape(w) for w in jax.tree_util.tree_leaves(params2)]]
        if shapes != shapes2:
            raise ValueError("params2 must have the tree structure and leaf shapes of params")
        _check_params(params2, "params2")
    x1 = jnp.asarray(x1)
    same = x2 is None and params2 is params
    x2 = x1 if x2 is None else jnp.asarray(x2)
    _check_call(f, params, x1, "x1")
    if method == "jacobian":
        return _ntk_jacobian(f, params, x1, x2, batch_size, params2)
    if batch_size is None:
        return _ntk_traced(f, params, x1, x2, same, params2, method)
    return _ntk_traced_tiled(f, params, x1, x2, batch_size, params2, method)


def two_time_kernel(f, weights, x, *, batch_size=None):
    """The two-time kernel ``Θ(t_k, t_l) = J(X; w_k) J(X; w_l)ᵀ`` of a run, as a function of ``(k, l)`` (Chapter 7).

    ``weights`` is a sequence of parameter trees ``w_0, w_1, …`` (e.g. the
    snapshots of :class:`gramlib.train.TrainResult`), ``x`` the training
    inputs. ``Θ(t_k, t_k)`` is the empirical NTK at ``w_k``; for ``k ≠ l`` it
    says how a step taken with the Jacobian of time ``t_l`` moves the outputs
    as seen at time ``t_k``. Returns ``theta(k, l)``, an ``(N, N)`` array.
    Without ``batch_size``, the traced factors of each ``w_k``
    (:mod:`gramlib.tangent_structure`) are computed once and kept, so that
    ``m`` weights cost ``m`` factor passes and one contraction per pair.
    """
    if not callable(f):
        raise TypeError(f"f must be a function f(params, x), got {type(f).__name__}")
    weights = list(weights)
    if not weights:
        raise ValueError("weights must hold at least one parameter tree")
    a = _checks.array(x, "x")
    if a.ndim < 1 or a.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch with samples along axis 0, got shape {a.shape}")
    x = jnp.asarray(x)
    _check_call(f, weights[0], x, "x")
    plan = _plan(f, weights[0], x, x.shape[0], x.shape[0], "auto")
    factors = {}

    def theta(k, l):
        for name, i in (("k", k), ("l", l)):
            _checks.integer(i, name, minimum=0)
            if i >= len(weights):
                raise ValueError(f"{name} must index the {len(weights)} weights, got {i}")
        if plan is None or batch_size is not None:
            return empirical_ntk(f, weights[k], x, params2=weights[l], batch_size=batch_size)
        prog, choice = plan
        for i in (k, l):
            if i not in factors:
                factors[i] = _factors(prog, choice, jax.tree_util.tree_leaves(weights[i]), prog.consts, x)
        return _contract(factors[k], factors[l], same=k == l)

    return theta


# ----------------------------------------------------------------------------- kernel problems


