"""Input validation shared by every public gramlib function.

Each helper raises ``ValueError`` (wrong value, shape, NaN/inf) or ``TypeError``
(wrong kind of object) with a message that names the argument, says what was
received and what was expected. Checks run on concrete inputs, before any
``jit``-compiled kernel is called, so they never slow down the hot code.
"""

from __future__ import annotations

import numbers

import numpy as np


def array(x, name, *, ndim=None, shape=None, finite=True, dtype_kind="fc"):
    """Return ``x`` as a NumPy view for checking; raise if it is not a valid array.

    ``ndim`` may be an int or a tuple of allowed ints; ``shape`` a tuple whose
    ``None`` entries match any size.
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    try:
        a = np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}") from err
    if a.dtype.kind not in dtype_kind + "iub":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                f"got shape {a.shape}"
            )
    if shape is not None:
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if finite and a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name} contains {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}")
    return a


def square_symmetric(x, name, *, rtol=1e-6, atol=1e-8):
    """Check that ``x`` is a finite, square, symmetric matrix (a Gram matrix)."""
    a = array(x, name, ndim=2)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {a.shape}")
    scale = max(float(np.max(np.abs(a))), 1.0) if a.size else 1.0
    asym = float(np.max(np.abs(a - a.T))) if a.size else 0.0
    if asym > atol + rtol * scale:
        raise ValueError(
            f"{name} must be symmetric (a Gram matrix); max |{name} - {name}.T| = {asym:.3g}"
        )
    return a


def integer(x, name, *, minimum=None):
    """Check that ``x`` is an integer (not a bool), at least ``minimum``.

    0-d integer arrays (NumPy or JAX) count as integers.
    """
    if not isinstance(x, numbers.Integral) and getattr(x, "shape", None) == () \
            and np.asarray(x).dtype.kind in "iu":
        x = int(np.asarray(x))
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {x!r} ({type(x).__name__})")
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {x}")
    return int(x)


def positive(x, name, *, allow_zero=False, allow_inf=False):
    """Check that ``x`` is a real number > 0 (or >= 0); NaN is refused."""
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


def times(t, name="t", *, allow_inf=True, integer_steps=False):
    """Check training times: a scalar or 1-D array, >= 0, no NaN.

    Returns ``(array_of_times, was_scalar)``. With ``integer_steps`` the times
    must be whole numbers of steps.
    """
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
