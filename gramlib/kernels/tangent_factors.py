"""The factors of a network's NTK from its traced structure (Chapter 4, appendix "Scaling up").

:mod:`gramlib.kernels.tangent_structure` traces ``f(params, x)`` once and decides, leaf by
leaf, between dense factors and a Jacobian block (:func:`~gramlib.kernels.tangent_structure.choose`).
This module evaluates that decision on a batch: one forward pass with zero taps at the
uses of the parameters and ``C`` backward passes give the cotangents ``G``; then
:func:`factors` returns ``(X_in, G)`` per dense leaf (for a convolution's filter, its
patches and cotangents, :func:`conv_factors`) and the Jacobian blocks ``J`` of the others,
and :func:`contract` sums ``Θ = Σ_w`` of their Gram matrices.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .tangent_structure import bind, value


def _param_env(prog, leaves, consts):
    """Values of every constant and parameter-derived id (no input needed)."""
    env = dict(zip(prog.leaf_ids, leaves))
    env.update(consts)
    for i in prog.param_nodes:
        node = prog.nodes[i]
        for o, v in zip(node.outs, bind(node, [value(env, r) for r in node.ins])):
            env[o] = v
    return env


def _forward(prog, penv, xi, taps):
    """Outputs ``(C,)`` of one sample with ``taps`` added at the uses; also the uses' input operands."""
    env = dict(penv)
    env[prog.x_id] = xi
    tap_at = {(i, j): t for (i, j, _, _), t in zip(prog.taps, taps)}
    for i in prog.sample_nodes:
        node = prog.nodes[i]
        outs = bind(node, [value(env, r) for r in node.ins])
        for j, (o, v) in enumerate(zip(node.outs, outs)):
            env[o] = v + tap_at[i, j] if (i, j) in tap_at else v
    out = value(env, prog.out_refs[0])
    record = {i: [value(env, r) if prog.kind(r) == "x" else None for r in prog.nodes[i].ins] for i in prog.uses}
    return out.reshape(-1), record


def factors(prog, choice, leaves, consts, x):
    """Per-sample factors of a batch ``x`` ``(n, ...)`` at the weights ``leaves``.

    Returns ``(dense, J)``: ``dense`` holds ``(X_in (n, S, K), G (n, C, S, M))``
    per dense leaf of ``choice`` (for a convolution's filter ``X_in`` are the
    patches at its ``S`` output positions), ``J`` a tuple of Jacobian blocks
    ``J_w`` ``(n, C, P_w)``, one per other leaf (empty if there are none). The
    blocks are kept apart: :func:`contract` sums their Gram matrices, and
    putting them side by side would copy them once more (``benchmarks/bench_cnn_floor.py``).
    """
    penv = _param_env(prog, leaves, consts)
    c = prog.outputs
    jac_leaves = [leaves[i] for i in choice.jacobian_leaves]
    param_refs = [(i, pos) for i in choice.jacobian_uses
                  for pos, r in enumerate(prog.nodes[i].ins) if prog.kind(r) == "p"]

    def operands(ls):
        full = list(leaves)
        for i, w in zip(choice.jacobian_leaves, ls):
            full[i] = w
        env = _param_env(prog, full, consts)
        return [env[prog.nodes[i].ins[pos]] for i, pos in param_refs]

    pvals, param_pullback = jax.vjp(operands, jac_leaves) if param_refs else (None, None)
    tap_index = {(i, j): k for k, (i, j, _, _) in enumerate(prog.taps)}

    def one(xi):
        taps = [jnp.zeros(s, d) for _, _, s, d in prog.taps]
        out, pullback, record = jax.vjp(lambda t: _forward(prog, penv, xi[None], t), taps, has_aux=True)
        eye = jnp.eye(c, dtype=out.dtype)
        cot = jax.vmap(lambda e: pullback(e)[0])(eye)  # per tap: (C, *shape)
        dense = []
        for d in choice.dense:
            xin = record[d.node][1 - d.weight_pos]
            g = cot[tap_index[d.node, 0]]
            if d.patches:  # cut into patches for all samples at once, below
                dense.append((xin, g))
                continue
            dense.append((jnp.transpose(xin, d.x_perm).reshape(d.shared, d.k),
                          jnp.transpose(g, (0,) + tuple(p + 1 for p in d.g_perm)).reshape(c, d.shared, d.m)))
        if not param_refs:
            return dense, None, None
        grads, raw = [], []
        k = 0
        for i in choice.jacobian_uses:
            node = prog.nodes[i]
            positions = [pos for pos, r in enumerate(node.ins) if prog.kind(r) == "p"]
            mine = pvals[k: k + len(positions)]
            k += len(positions)
            known = record[i]

            def apply(*pv, node=node, positions=positions, known=known):
                vals = [known[p] if known[p] is not None else value(penv, node.ins[p]) for p in range(len(node.ins))]
                for p, v in zip(positions, pv):
                    vals[p] = v
                return bind(node, vals)

            outs_cot = []
            for j, o in enumerate(node.outs):
                if (i, j) in tap_index:
                    outs_cot.append(cot[tap_index[i, j]])
                else:
                    outs_cot.append(jnp.zeros((c,) + tuple(prog.avals[o].shape), jax.dtypes.float0))
            if _patches(prog, node, mine[0].dtype):  # all samples at once, below
                grads.append(None)
                raw.append((known[0], outs_cot[0]))
                continue
            _, back = jax.vjp(apply, *mine)
            grads.extend(jax.vmap(lambda *gs: back(list(gs)))(*outs_cot))
        return dense, grads, raw

    dense, grads, raw = jax.vmap(one)(x)
    dense = [conv_factors(prog.nodes[d.node].params, xin, g, prog.avals[prog.nodes[d.node].ins[1]].shape)
             if d.patches else (xin, g) for d, (xin, g) in zip(choice.dense, dense)]
    if grads is None:
        return dense, ()
    raw = iter(raw)
    convs = iter([prog.nodes[i] for i in choice.jacobian_uses
                  if _patches(prog, prog.nodes[i], prog.avals[prog.nodes[i].ins[1]].dtype)])
    grads = [_filter_gradients(next(convs).params, *next(raw), pv.shape) if g is None else g
             for g, pv in zip(grads, pvals)]
    blocks = jax.vmap(jax.vmap(lambda *gv: param_pullback(list(gv))[0]))(*grads)
    return dense, tuple(b.reshape(x.shape[0], c, -1) for b in blocks)


def _patches(prog, node, dtype):
    """Whether a convolution's filter gradients are built from patches rather than by its batched transpose.

    The transpose of a convolution with respect to its filter, batched over
    samples, is a convolution with one feature group per sample. XLA's CPU
    backend runs it fast in float32 but expands it to a dense block-diagonal
    filter in float64 (measured: 16.5 GB for the 8×8, 16-channel CNN at
    ``n = 1000``); patches and a batched matrix product avoid that.
    """
    p = node.params
    return (node.prim.name == "conv_general_dilated" and prog.kind(node.ins[0]) == "x"
            and prog.kind(node.ins[1]) == "p" and p["feature_group_count"] == 1 and p["batch_group_count"] == 1
            and all(d == 1 for d in p["lhs_dilation"]) and jnp.dtype(dtype) == jnp.float64)


def conv_factors(params, lhs, g, shape):
    """The patch factors ``(P (n, S, F), G (n, C, S, C_out))`` of a convolution's filter, all samples at once.

    ``params`` are the convolution's, ``shape`` its filter's; ``lhs``
    ``(n, ...)`` holds each sample's input to the convolution and ``g``
    ``(n, C, ...)`` the cotangents at its output. ``P_a[s]`` is the patch of
    sample ``a`` read by output position ``s`` (the convolution's own batch
    axis, size 1 unless ``f`` folds more into it, joins the positions), with
    ``F = C_in · window`` features in the filter's (in, window) order, cut by
    strided slices of the padded input; ``G_a,c[s]`` the cotangent of output
    ``c`` there. The convolution is ``z[s] = P[s] W`` with ``W`` the filter
    as an ``(F, C_out)`` matrix, so the filter's term of ``Θ`` is
    ``Σ_{s,t} (P_a[s] · P_b[t]) (G_a,c[s] · G_b,d[t])`` and its per-sample
    gradient ``Σ_s P_a[s] ⊗ G_a,c[s]`` (Chapter 4, appendix "Scaling up").
    """
    dn = params["dimension_numbers"]
    n, c = g.shape[:2]
    window = tuple(shape[d] for d in dn.rhs_spec[2:])
    b, ob = dn.lhs_spec[0], dn.out_spec[0]
    x = jnp.moveaxis(lhs, 0, b)
    x = x.reshape(x.shape[:b] + (-1,) + x.shape[b + 2:])
    x = jnp.transpose(x, dn.lhs_spec)  # (n B, C_in, *spatial)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in params["padding"]])
    g = jnp.moveaxis(g, (0, 1), (ob, ob + 1))
    g = jnp.transpose(g.reshape(g.shape[:ob] + (-1,) + g.shape[ob + 3:]), dn.out_spec)  # (n C B, C_out, *out)
    c_out, out_spatial = g.shape[1], g.shape[2:]
    slices = []
    for offset in np.ndindex(*window):
        start = [0, 0] + [o * r for o, r in zip(offset, params["rhs_dilation"])]
        limit = [x.shape[0], x.shape[1]] + [s + (m - 1) * t + 1 for s, m, t in
                                             zip(start[2:], out_spatial, params["window_strides"])]
        slices.append(jax.lax.slice(x, start, limit, [1, 1] + list(params["window_strides"])))
    patches = jnp.stack(slices, axis=-1)  # (n B, C_in, *out_spatial, window)
    c_in = patches.shape[1]
    patches = jnp.moveaxis(patches, 1, -2).reshape(n, -1, c_in * len(slices))  # (n, S = B · out, F)
    g = g.reshape(n, c, -1, c_out, math.prod(out_spatial))  # (n, C, B, C_out, out)
    g = jnp.moveaxis(g, 3, 4).reshape(n, c, -1, c_out)  # (n, C, S, C_out)
    return patches, g.astype(patches.dtype)


def _filter_gradients(params, lhs, g, shape):
    """Per-sample filter gradients ``Σ_s P_a[s] ⊗ G_a,c[s]`` ``(n, C, *shape)`` from :func:`conv_factors`.

    One batched product contracts the positions ``s``: the transpose of the
    convolution with respect to its filter, sample by sample.
    """
    dn = params["dimension_numbers"]
    patches, gm = conv_factors(params, lhs, g, shape)
    n, c, _, c_out = gm.shape
    window = tuple(shape[d] for d in dn.rhs_spec[2:])
    grad = jnp.einsum("nsf,ncsk->nckf", patches, gm)  # (n, C, C_out, F)
    grad = grad.reshape((n, c, c_out, shape[dn.rhs_spec[1]]) + window)  # (n, C, out, in, *window): rhs logical order
    perm = tuple(int(a) + 2 for a in np.argsort(dn.rhs_spec))
    return jnp.transpose(grad, (0, 1) + perm).astype(g.dtype)


_SYMMETRIC_PARTS = 6
"""Row blocks of a symmetric Gram matrix ``A Aᵀ``: only the ``parts (parts + 1) / 2`` blocks on and above
the diagonal are multiplied. Measured on 2 cores in float32 (``python -m benchmarks.bench_gram_blocks``,
``benchmarks/results/gram_blocks.csv``): for ``A`` of 1000 × 4752, 17.4 ms against 25.5 ms for ``A @ A.T``
(18.3 ms with 4 parts, 22.0 ms with 8); of 2000 × 2304, 31.1 against 49.8 ms; of 500 × 8000, 8.2 against
10.3 ms (13.8 ms with 8). ``benchmarks/bench_cnn_floor.py`` times it on the CNN's Jacobian. Only for
products of at least ``_SYMMETRIC_FLOPS`` multiply-adds: the blocks cost compile time."""


_SYMMETRIC_FLOPS = 1e9


def _gram(a, b, same):
    """``a bᵀ``; for ``same`` (``b is a``) only the blocks on and above the diagonal are computed."""
    n = a.shape[0]
    if not same or n * n * a.shape[1] < _SYMMETRIC_FLOPS:
        return a @ b.T
    size = -(-n // _SYMMETRIC_PARTS)
    chunks = [a[i: i + size] for i in range(0, n, size)]
    blocks = {(i, j): chunks[i] @ chunks[j].T for i in range(len(chunks)) for j in range(i, len(chunks))}
    return jnp.block([[blocks[i, j] if j >= i else blocks[j, i].T for j in range(len(chunks))]
                      for i in range(len(chunks))])


def contract(fa, fb, same=False):
    """``Θ(a, b)`` ``(na C, nb C)`` from the factors of two batches (rows ordered (sample, output)).

    Dense factors ``(X_in, G)`` contribute ``Σ_{s,t} (X_in,a[s] · X_in,b[t]) (G_a,c[s] · G_b,d[t])``
    (for a convolution's filter: the patch Gram times the cotangent Gram, summed over pairs of positions);
    each Jacobian block ``J_w`` contributes ``J_w,a J_w,bᵀ``. ``same`` (``fb`` are the factors of the
    same batch at the same weights) computes only the upper block triangle of each Gram matrix.
    """
    dense_a, ja = fa
    dense_b, jb = fb
    total = None
    for (xa, ga), (xb, gb) in zip(dense_a, dense_b):
        na, c, s, _ = ga.shape
        nb = gb.shape[0]
        if s == 1:
            term = _gram(xa[:, 0], xb[:, 0], same)[:, None, :, None] * \
                _gram(ga.reshape(na * c, -1), gb.reshape(nb * c, -1), same).reshape(na, c, nb, c)
        else:
            inputs = jnp.einsum("ask,btk->abst", xa, xb)
            term = jnp.einsum("abst,acsm,bdtm->acbd", inputs, ga, gb, optimize=True)
        total = term if total is None else total + term
    for wa, wb in zip(ja, jb):
        na, c, _ = wa.shape
        term = _gram(wa.reshape(na * c, -1), wb.reshape(wb.shape[0] * c, -1), same).reshape(na, c, wb.shape[0], c)
        total = term if total is None else total + term
    na, c, nb, _ = total.shape
    return total.reshape(na * c, nb * c)
