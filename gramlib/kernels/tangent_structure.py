"""The structure of a network's tangent map, found by tracing its function (Chapter 4, appendix "Scaling up").

The empirical NTK ``Θ = J Jᵀ`` (rows ordered (sample, output)) is a sum over
parameter leaves, ``Θ = Σ_w J_w J_wᵀ``. Where a leaf ``w`` enters the network
decides how cheaply its term can be computed. This module traces
``f(params, x)`` for one sample with :func:`jax.make_jaxpr`, inlines the calls
of jitted sub-functions, and sorts every equation by what it depends on:
the parameters only, the input only, or both. An equation that takes a
parameter-derived operand and an input-derived one is a *use* of the
parameters; a zero *tap* is added to its output, so that one forward pass and
``C`` backward passes (one per output, all samples at once) give the
cotangents ``G = ∂f/∂z`` at every use. Then, leaf by leaf:

* **dense factors.** A leaf used once, as the weight of a dense product
  ``z = X_in W`` (``dot_general``, possibly after a transpose, reshape or
  dtype conversion of the leaf alone), contributes
  ``Θ_W(a c, b d) = Σ_{s,t} (X_in,a[s] · X_in,b[t]) (G_a,c[s] · G_b,d[t])``,
  the input Gram matrix times the cotangent Gram matrix, summed over the axes
  ``s, t`` that the product shares (none for an MLP: ``(X_in X_inᵀ) ⊙ (G Gᵀ)``;
  positions of a sequence for a dense layer applied per position). Its
  Jacobian is never formed.
* **patch factors.** A convolution is a dense product of its filter with
  the patches of its input: ``z[p] = P_p(X_in) W`` at every output position
  ``p``. A filter leaf used once (through the same aliases) by a
  ``conv_general_dilated`` without feature or batch groups or input dilation
  contributes, with ``P_a`` the ``(positions × C_in·k·k)`` patches of sample
  ``a`` and ``G_a,c`` its ``(positions × C_out)`` cotangents,
  ``Θ_W(a c, b d) = Σ_{p,q} (P_a[p] · P_b[q]) (G_a,c[p] · G_b,d[q])``, the sum
  over ``p, q`` of ``(P_a P_bᵀ) ⊙ (G_a,c G_b,dᵀ)``: the dense factors above
  with the positions as shared axes, and no ``(C_in·k·k × C_out)`` per-sample
  filter gradient is formed.
* **Jacobian blocks from the taps.** Any other leaf (a convolution filter
  whose patch factors cost more, a bias, a scale, a weight shared by
  several uses) gets its per-sample Jacobian block ``J_w`` by transposing
  only the equations that use it: the transpose of a convolution with
  respect to its filter, applied to ``G``, is the per-sample filter
  gradient ``Σ_p P_p(X_in) ⊗ G[p]``; that of a broadcast bias sums ``G`` over the broadcast axes
  (``Θ_b = G Gᵀ`` summed over the shared axes); a shared weight sums its
  uses before the product, which keeps the cross terms
  ``Σ_{u,v} ⟨J_u(a), J_v(b)⟩``. Then ``Θ_w = J_w J_wᵀ``.

A cost model (:func:`choose`) compares, for every dense or convolution leaf, the
flops of the factor products with those of forming and contracting its
Jacobian block, and takes the factors only when they cost less than
:data:`_TIE` (3/4) of the block; near-ties go to the block. The result is exact (the chain rule summed over the direct
uses of every leaf); nothing else is approximated. Functions whose outputs do
not depend on the input at all are refused here and left to the plain
Jacobian contraction by :func:`gramlib.ntk.empirical_ntk`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

try:  # JAX >= 0.4.36 exports these in jax.extend.core
    from jax.extend.core import Literal as _Literal
except ImportError:  # pragma: no cover - older JAX
    from jax.core import Literal as _Literal

_INLINE = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
           "remat": "jaxpr", "checkpoint": "jaxpr", "remat2": "jaxpr"}
"""Call primitives whose body is inlined (custom derivatives and control flow are kept whole)."""

_ALIAS = {"reshape", "transpose", "convert_element_type", "copy", "copy_p", "squeeze", "expand_dims"}
"""Equations that only relabel the entries of one array: ``⟨J_w(a), J_w(b)⟩`` is the same before and after."""

_CACHE_SIZE = 64


class _Lit(NamedTuple):
    value: Any


class Node(NamedTuple):
    """One equation of the flattened program: ``outs = prim.bind(*ins, **params)``."""

    prim: Any
    params: dict
    ins: tuple  # int (a value id) or _Lit
    outs: tuple  # value ids


class DenseUse(NamedTuple):
    """A leaf used once as the weight of a ``dot_general`` or the filter of a convolution; how to lay out its factors.

    ``x_perm`` orders the other operand as (shared axes, contracted axes);
    ``g_perm`` orders the output as (shared axes, weight's free axes);
    ``shared, k, m``: sizes of the shared, contracted and free axes. For a
    convolution (``patches``) the shared axes are the output positions (with
    the convolution's own batch axis), ``k = C_in · window`` the patch
    features and ``m = C_out``; its factors are cut from the input by
    :func:`gramlib.kernels.tangent_factors.conv_factors` (``x_perm``,
    ``g_perm`` unused).
    """

    leaf: int
    node: int
    weight_pos: int
    x_perm: tuple
    g_perm: tuple
    shared: int
    k: int
    m: int
    patches: bool = False


class Program:
    """``f`` traced for one sample, flattened, with every equation sorted (hashable by identity).

    ``kinds[id]`` is ``"c"`` (constant), ``"p"`` (parameters only) or ``"x"``
    (depends on the input). ``uses`` are the nodes with parameter- and
    input-derived operands, ``taps`` their outputs ``(node, out, shape,
    dtype)``, ``dense`` the leaves eligible for dense factors.
    """

    def __init__(self, f, treedef, leaf_avals, x_aval):
        self.treedef = treedef
        self.leaf_avals = leaf_avals

        def single(leaves, xi):
            return f(jax.tree_util.tree_unflatten(treedef, leaves), xi)

        leaves = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in leaf_avals]
        closed = jax.make_jaxpr(single)(leaves, jax.ShapeDtypeStruct(x_aval.shape, x_aval.dtype))
        self.nodes, self.consts, self.avals = [], {}, {}
        self._next = 0
        self.leaf_ids = [self._new(a) for a in closed.jaxpr.invars[: len(leaf_avals)]]
        self.x_id = self._new(closed.jaxpr.invars[-1])
        self.out_refs = self._flatten(closed.jaxpr, closed.consts,
                                      self.leaf_ids + [self.x_id])
        del self._next
        out_aval = self.avals[self.out_refs[0]] if isinstance(self.out_refs[0], int) else None
        self.outputs = 1 if out_aval is None or len(out_aval.shape) < 2 else int(out_aval.shape[1])
        self._classify()

    # --------------------------------------------------------------------- tracing

    def _new(self, var):
        i = self._next
        self._next += 1
        self.avals[i] = var.aval
        return i

    def _flatten(self, jaxpr, consts, in_refs):
        env = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = self._new(v)
            self.consts[env[v]] = c
        for v, r in zip(jaxpr.invars, in_refs):
            env[v] = r

        def read(v):
            return _Lit(v.val) if isinstance(v, _Literal) else env[v]

        for eqn in jaxpr.eqns:
            ins = tuple(read(v) for v in eqn.invars)
            key = _INLINE.get(eqn.primitive.name)
            sub = eqn.params.get(key) if key else None
            if sub is not None:
                inner, inner_consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, ())
                outs = self._flatten(inner, inner_consts, list(ins))
                for v, r in zip(eqn.outvars, outs):
                    env[v] = r
                continue
            outs = tuple(self._new(v) for v in eqn.outvars)
            for v, r in zip(eqn.outvars, outs):
                env[v] = r
            self.nodes.append(Node(eqn.primitive, dict(eqn.params), ins, outs))
        return [read(v) for v in jaxpr.outvars]

    def kind(self, ref):
        return "c" if isinstance(ref, _Lit) else self.kinds[ref]

    def _classify(self):
        kinds = {i: "c" for i in self.consts}
        kinds.update({i: "p" for i in self.leaf_ids})
        kinds[self.x_id] = "x"
        self.kinds = kinds
        self.uses, self.param_nodes, self.sample_nodes = [], [], []
        for i, node in enumerate(self.nodes):
            ks = {self.kind(r) for r in node.ins}
            k = "x" if "x" in ks else "p" if "p" in ks else "c"
            for o in node.outs:
                kinds[o] = k
            if k == "x":
                self.sample_nodes.append(i)
                if "p" in ks:
                    self.uses.append(i)
            else:
                self.param_nodes.append(i)
        self.input_dependent = all(self.kind(r) == "x" for r in self.out_refs)
        self.taps = tuple((i, j, tuple(self.avals[o].shape), self.avals[o].dtype)
                          for i in self.uses for j, o in enumerate(self.nodes[i].outs)
                          if jnp.issubdtype(self.avals[o].dtype, jnp.inexact))
        self.dense = tuple(self._dense_leaves())

    def _dense_leaves(self):
        """Leaves whose only use is the weight operand of one ``dot_general`` (through aliases)."""
        consumers = {}
        for i, node in enumerate(self.nodes):
            for pos, r in enumerate(node.ins):
                if isinstance(r, int):
                    consumers.setdefault(r, []).append((i, pos))
        outputs = {r for r in self.out_refs if isinstance(r, int)}
        for leaf_index, leaf in enumerate(self.leaf_ids):
            ref, ok = leaf, True
            while ok:
                cons = consumers.get(ref, [])
                if ref in outputs or len(cons) != 1:
                    ok = False
                    break
                i, pos = cons[0]
                node = self.nodes[i]
                if node.prim.name in _ALIAS and len([r for r in node.ins if isinstance(r, int)]) == 1:
                    ref = node.outs[0]
                    continue
                break
            if ok and i in self.uses and pos == 1 and self._plain_conv(node):
                yield self._conv_use(leaf_index, i, node)
                continue
            if not ok or node.prim.name != "dot_general" or i not in self.uses or len(node.ins) != 2:
                continue
            other = node.ins[1 - pos]
            if self.kind(other) != "x":
                continue
            (lc, rc), (lb, rb) = node.params["dimension_numbers"]
            if lb or rb:
                continue
            x_shape = tuple(self.avals[other].shape)
            w_shape = tuple(self.avals[ref].shape)
            x_con, w_con = (rc, lc) if pos == 0 else (lc, rc)
            x_free = tuple(d for d in range(len(x_shape)) if d not in x_con)
            w_free = [d for d in range(len(w_shape)) if d not in w_con]
            nx, nw = len(x_free), len(w_free)
            # output axes: (lhs free, rhs free); put them as (x free, w free)
            g_perm = tuple(range(nx)) + tuple(range(nx, nx + nw)) if pos == 1 else \
                tuple(range(nw, nw + nx)) + tuple(range(nw))
            yield DenseUse(leaf_index, i, pos, x_free + tuple(x_con), g_perm,
                           math.prod(x_shape[d] for d in x_free), math.prod(x_shape[d] for d in x_con),
                           math.prod(w_shape[d] for d in w_free))


    def _plain_conv(self, node):
        """A convolution of the input by a parameter operand, without groups or input dilation."""
        if node.prim.name != "conv_general_dilated" or len(node.ins) != 2:
            return False
        p = node.params
        return (self.kind(node.ins[0]) == "x" and self.kind(node.ins[1]) == "p"
                and p["feature_group_count"] == 1 and p["batch_group_count"] == 1
                and all(d == 1 for d in p["lhs_dilation"]))

    def _conv_use(self, leaf_index, i, node):
        """The patch factors' sizes of the filter of convolution ``i``: positions, ``C_in · window``, ``C_out``."""
        dn = node.params["dimension_numbers"]
        w_shape, out_shape = self.avals[node.ins[1]].shape, self.avals[node.outs[0]].shape
        positions = out_shape[dn.out_spec[0]] * math.prod(out_shape[d] for d in dn.out_spec[2:])
        k = w_shape[dn.rhs_spec[1]] * math.prod(w_shape[d] for d in dn.rhs_spec[2:])
        return DenseUse(leaf_index, i, 1, (), (), int(positions), int(k), int(w_shape[dn.rhs_spec[0]]), True)


# ------------------------------------------------------------------------- evaluating one equation

def bind(node, vals):
    """Evaluate one traced equation ``node`` on the values ``vals`` of its inputs; returns its outputs (a list)."""
    bound = node.prim.get_bind_params(node.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    out = node.prim.bind(*subfuns, *vals, **params)
    return list(out) if node.prim.multiple_results else [out]


def value(env, ref):
    """The value of ``ref`` (a literal, or the id of a value computed into ``env``)."""
    return ref.value if isinstance(ref, _Lit) else env[ref]


_TIE = 0.75
"""Dense factors are taken when they cost less than this fraction of the Jacobian block (near-ties go to the block)."""


class Choice(NamedTuple):
    """Which dense leaves use factors (the rest: Jacobian blocks from the taps). Static under ``jit``."""

    dense: tuple  # DenseUse entries taking factors
    jacobian_leaves: tuple  # leaf indices whose Jacobian block is formed
    jacobian_uses: tuple  # node indices whose parameter operands are transposed


def choose(prog, n1, n2, method="auto"):
    """Per leaf, dense factors or the Jacobian block, by their flops (``n1 × n2`` kernel).

    Dense factors cost ``n1 n2 S² (K + C² M + C²)`` (input Gram, cotangent
    Gram, their product over shared axes ``S``); the Jacobian block of the
    same leaf costs ``(n1 + n2) C S K M`` to form and ``n1 n2 C² K M`` to
    contract. Factors must be cheaper by the margin :data:`_TIE`: a Jacobian
    block joins the other blocks in one product. The rule is the same for a
    convolution's filter (appendix "Scaling up"), with ``S`` its output
    positions, ``K = C_in · k · k`` its patch features and ``M = C_out``:
    the patch Gram and cotangent Gram contracted over positions pairs
    (``S² (K + C² M)`` per pair of samples) against the filter gradients
    (``C² K M`` per pair). It takes the patch factors where the positions
    are few and the channels many (``S² ≲ K M / (K/M + C²)``, a late layer
    of a deep network); for small images with few channels
    (``S = 64``, ``K = 144``, ``M = 16``) the filter gradients. In memory the
    factors hold the ``n1 n2 S²`` patch Gram at once, the blocks
    ``(n1 + n2) C K M`` numbers; ``batch_size`` in
    :func:`gramlib.ntk.empirical_ntk` bounds ``n1``. ``method="structured"``
    takes dense and patch factors wherever they apply.
    """
    c = prog.outputs
    dense = []
    for d in prog.dense:
        factors = n1 * n2 * d.shared**2 * (d.k + c * c * d.m + c * c)
        block = (n1 + n2) * c * d.shared * d.k * d.m + n1 * n2 * c * c * d.k * d.m
        if method == "structured" or factors < _TIE * block:
            dense.append(d)
    taken = {d.leaf for d in dense}
    dense_nodes = {d.node for d in dense}
    jac_leaves = tuple(i for i in range(len(prog.leaf_ids)) if i not in taken)
    jac_uses = tuple(i for i in prog.uses if i not in dense_nodes)
    return Choice(tuple(dense), jac_leaves, jac_uses)


# ------------------------------------------------------------------------- cache

_programs: OrderedDict = OrderedDict()


def program(f, params, x):
    """The traced :class:`Program` of ``f`` for the leaf shapes of ``params`` and one sample of ``x`` (cached)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    avals = tuple(jax.ShapeDtypeStruct(np.shape(w), jnp.result_type(w)) for w in leaves)
    x_aval = jax.ShapeDtypeStruct((1,) + tuple(np.shape(x)[1:]), jnp.result_type(x))
    key = (f, treedef, tuple((a.shape, a.dtype) for a in avals), (x_aval.shape, x_aval.dtype))
    try:
        prog = _programs.pop(key)
    except KeyError:
        prog = Program(f, treedef, avals, x_aval)
    except TypeError:  # unhashable f: no caching
        return Program(f, treedef, avals, x_aval)
    _programs[key] = prog
    while len(_programs) > _CACHE_SIZE:
        _programs.popitem(last=False)
    return prog


def uses_primitive(f, params, x, name):
    """Whether the traced computation of ``f(params, x)`` contains the primitive ``name`` (e.g. a convolution)."""
    prog = program(f, params, x)
    return any(node.prim.name == name for node in prog.nodes)


def explain(f, params, x, x2=None, method="auto"):
    """How each parameter leaf's term of the NTK is computed: ``{leaf path: "dense factors" | "Jacobian block"}``."""
    x2 = x if x2 is None else x2
    prog = program(f, params, x)
    choice = choose(prog, np.shape(x)[0], np.shape(x2)[0], method)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    dense = {d.leaf for d in choice.dense}
    return {p: "dense factors" if i in dense else "Jacobian block" for i, p in enumerate(paths)}
