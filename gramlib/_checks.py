"""Input validation shared by every public gramlib function, in two tiers (as ``jax.scipy`` does).

Each helper raises ``ValueError`` (wrong value, shape, NaN/inf) or ``TypeError``
(wrong kind of object) with a message that names the argument, says what was
received and what was expected.

* **Structure** — type, dtype, number of dimensions, shape, and static options
  (integers, method names, times that pick a formula) — is checked on anything,
  tracers included: it reads ``jnp.shape`` and ``.dtype`` only, never the values.
* **Values** — finiteness, symmetry, definiteness, signs — are checked only on
  concrete arrays (under ``jax.jit``, ``jax.vmap`` or ``jax.grad`` they are unknown),
  and only once per public call: inside the outermost call of a function decorated with
  :func:`public`, an array (the same object) whose values were checked is not checked
  again by the public functions it calls, so ``x`` passed down through ten of them is
  copied to the host and scanned once. Nothing is skipped that was not checked.
"""

from __future__ import annotations

import functools
import numbers
import threading

import jax
import numpy as np

_STATE = threading.local()


def public(fn):
    """Mark ``fn`` as a public entry point: its outermost call checks the values of each array once."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        outermost = getattr(_STATE, "checked", None) is None
        if outermost:
            _STATE.checked = {}
        try:
            return fn(*args, **kwargs)
        finally:
            if outermost:
                _STATE.checked = None

    return wrapper


def _first_time(kind, *objects):
    """Whether the values of ``objects`` (one array and its views) still need the check ``kind`` in this call.

    Records them as checked; outside a :func:`public` call every check runs. The objects are
    kept alive until the call returns, so their ids cannot be reused meanwhile.
    """
    checked = getattr(_STATE, "checked", None)
    if checked is None:
        return True
    if any((kind, id(o)) in checked for o in objects):
        return False
    for o in objects:
        checked[(kind, id(o))] = o
    return True


def is_traced(x):
    """Whether ``x`` (or any leaf of it) is a JAX tracer, i.e. its values are unknown at this point."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def concrete(x, kind="values"):
    """Whether the values of ``x`` are known here and the value check ``kind`` has not run on it in this call."""
    return not is_traced(x) and _first_time(kind, x)


def _array_like(x, name):
    """``x`` itself if it is a JAX array or tracer (nothing is copied), else ``np.asarray(x)``."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return x
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}") from err


def parameters(params, name):
    """Every leaf of the tree ``params`` an array of numbers; a ``ValueError`` for an empty tree.

    Not checked for NaN (a diverged run's weights still have an NTK).
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if not flat:
        raise ValueError(f"{name} must hold at least one array")
    for path, w in flat:
        array(w, f"{name}{jax.tree_util.keystr(path)}", finite=False)


def array(x, name, *, ndim=None, shape=None, finite=True, dtype_kind="fc"):
    """Check that ``x`` is an array of numbers of the given structure; return it for further checks.

    ``ndim`` may be an int or a tuple of allowed ints; ``shape`` a tuple whose ``None``
    entries match any size. Returns a NumPy view of a concrete ``x`` (as before) and a
    tracer unchanged. ``finite`` (a value check) runs on concrete arrays only.
    """
    a = _array_like(x, name)
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        raise TypeError(f"{name} is a PRNG key ({a.dtype}), random state rather than numbers: keep it out of the "
                        f"arrays you pass (for a Flax nnx module: graphdef, params, rest = "
                        f"nnx.split(model, nnx.Param, ...))")
    dtype = np.dtype(a.dtype)
    if dtype.kind not in dtype_kind + "iub":
        raise TypeError(f"{name} must hold numbers, got dtype {dtype}")
    a_shape = tuple(np.shape(a))
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(a_shape) not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                f"got shape {a_shape}"
            )
    if shape is not None:
        if len(a_shape) != len(shape) or any(s is not None and s != d for s, d in zip(shape, a_shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {a_shape}")
    if isinstance(a, jax.core.Tracer):
        return a
    a = np.asarray(a)
    if finite and a.dtype.kind in "fc" and _first_time("finite", x, a):
        _finite(a, name)
    return a


def _finite(a, name):
    """The value check of :func:`array`: no NaN or infinite entry in the concrete array ``a``."""
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name} contains {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}")


def square_symmetric(x, name, *, rtol=1e-6, atol=1e-8):
    """Check that ``x`` is a square matrix; if concrete, also finite and symmetric (a Gram matrix)."""
    a = array(x, name, ndim=2)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {a.shape}")
    if not isinstance(a, jax.core.Tracer) and _first_time("symmetric", x, a):
        _symmetric(a, name, rtol, atol)
    return a


def _symmetric(a, name, rtol, atol):
    """The value check of :func:`square_symmetric` on a concrete square matrix ``a``."""
    scale = max(float(np.max(np.abs(a))), 1.0) if a.size else 1.0
    asym = float(np.max(np.abs(a - a.T))) if a.size else 0.0
    if asym > atol + rtol * scale:
        raise ValueError(
            f"{name} must be symmetric (a Gram matrix); max |{name} - {name}.T| = {asym:.3g}"
        )


def integer(x, name, *, minimum=None):
    """Check that ``x`` is an integer (not a bool), at least ``minimum``: a static option.

    0-d integer arrays (NumPy or JAX) count as integers. A tracer is refused: the value
    decides shapes or formulas, so under ``jax.jit`` it must be closed over or static.
    """
    if isinstance(x, jax.core.Tracer):
        raise TypeError(f"{name} must be a concrete integer (it sets shapes or picks a formula); under jax.jit "
                        f"close over it or mark it static, got a traced value")
    if not isinstance(x, numbers.Integral) and getattr(x, "shape", None) == () \
            and np.asarray(x).dtype.kind in "iu":
        x = int(np.asarray(x))
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {x!r} ({type(x).__name__})")
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {x}")
    return int(x)


def positive(x, name, *, allow_zero=False, allow_inf=False):
    """Check that ``x`` is a real number > 0 (or >= 0); NaN is refused.

    Returns a float; a traced real scalar (e.g. a learning rate under ``jax.grad``) is
    returned unchanged after its shape and dtype are checked.
    """
    if isinstance(x, jax.core.Tracer):
        if np.shape(x) != () or np.dtype(x.dtype).kind not in "fiu" or np.dtype(x.dtype) == bool:
            raise TypeError(f"{name} must be a real number, got a traced array of shape {np.shape(x)} "
                            f"and dtype {x.dtype}")
        return x
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        try:
            x = float(np.asarray(x).item())
        except Exception:
            raise TypeError(f"{name} must be a real number, got {type(x).__name__}") from None
    x = float(x)
    if np.isnan(x) or (np.isinf(x) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {x}")
    if x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {x}")
    return x


def times(t, name="t", *, allow_inf=True, integer_steps=False, static=True):
    """Check training times: a scalar or 1-D array, >= 0, no NaN.

    Returns ``(array_of_times, was_scalar)``: a 1-D float NumPy array for concrete ``t``.
    With ``integer_steps`` the times must be whole numbers of steps. ``static`` (the
    default): the values of ``t`` pick the formula (``t = 0``, finite, ``inf``), so a
    traced ``t`` is a ``TypeError`` saying to close over it under ``jax.jit``; with
    ``static=False`` a traced ``t`` is returned as a 1-D array of its own float dtype.
    """
    if isinstance(t, jax.core.Tracer):
        dtype = np.dtype(t.dtype)
        if dtype.kind not in "fiu" or dtype == bool:
            raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {dtype}")
        if t.ndim > 1:
            raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {t.shape}")
        if static:
            raise TypeError(f"{name} must be concrete (its values pick the formula: t = 0, finite or inf); "
                            f"under jax.jit, jax.vmap or jax.grad close over {name} instead of tracing it")
        return jax.numpy.atleast_1d(t).astype(jax.numpy.result_type(float, t.dtype)), t.ndim == 0
    a = np.asarray(t)
    if a.dtype.kind not in "fiu" or a.dtype == bool:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {a.dtype}")
    if a.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {a.shape}")
    af = a.astype(float)
    if np.any(np.isnan(af)):
        raise ValueError(f"{name} must not contain NaN")
    if np.any(af < 0):
        raise ValueError(f"{name} must be >= 0 (a training time), got min {af.min()}")
    if not allow_inf and np.any(np.isinf(af)):
        raise ValueError(f"{name} must be finite")
    if integer_steps and np.any(np.isfinite(af) & (af != np.round(af))):
        raise ValueError(f"{name} must be whole numbers of gradient steps, got {a}")
    return np.atleast_1d(af), a.ndim == 0


def host(x):
    """A concrete result on the host (a Python float for a 0-d array, else a NumPy array); a traced one unchanged.

    Functions that have always returned floats and NumPy arrays keep doing so on concrete
    inputs and return JAX arrays (in the same dtype) under ``jax.jit``, ``jax.vmap`` and
    ``jax.grad``.
    """
    if is_traced(x):
        return x
    return float(x) if np.ndim(x) == 0 else np.asarray(x)


def host_only(function, **arguments):
    """Refuse traced ``arguments`` of a ``function`` that the mathematics cannot transform.

    For functions whose result depends on a discrete, data-dependent choice (a numerical
    rank, a branch to ``inf``) or that evaluate on the host; raises a ``TypeError`` naming
    the function and the traced argument, instead of JAX's tracer-conversion error.
    """
    for name, value in arguments.items():
        if is_traced(value):
            raise TypeError(f"{function} cannot run under jax.jit, jax.vmap or jax.grad: it takes a data-dependent "
                            f"choice on the values of {name} (see its docstring); call it on concrete arrays")
