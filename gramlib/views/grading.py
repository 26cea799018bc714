"""What an assignment's tests call when Otter grades a notebook (:mod:`gramlib.views.assignments`).

:func:`passes` is the public test: the chapter's self-check on the answer. :func:`agrees_on_fresh_inputs`
is the hidden test: the answer against the chapter's solution on inputs the self-check never shows
(:func:`fresh_inputs`).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from ..devices import float64
from .exercises import compare

#: The loosest tolerance of the book's self-checks; the hidden tests compare with it.
RTOL, ATOL = 1e-5, 1e-8
#: Seed of the fresh inputs of the hidden tests.
HIDDEN_SEED = 29


def passes(check, answer) -> None:
    """Run a self-check on an answer; raise ``AssertionError`` with the check's report unless it passes."""
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        ok = check(answer)
    if ok is not True:
        raise AssertionError(report.getvalue().strip() or f"{check.__name__} did not pass")


def _is_float_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and np.issubdtype(np.dtype(value.dtype), np.floating) \
        and len(value.shape) >= 1


def fresh_inputs(args: tuple, rng: np.random.Generator) -> tuple:
    """Arguments like ``args`` that the self-check never used.

    Every float array is drawn afresh with its shape: a symmetric square matrix as a
    positive definite ``B Bᵀ/(n+4)`` scaled to the same trace, a sorted vector (≥ 3
    entries) sorted, any other array with the same mean and spread; a list or tuple
    of float arrays entry by entry. Anything else (integers, callables, parameters)
    stays. When ``args`` holds no array, every integer grows by 1 and every float
    shrinks by 10%.
    """
    def fresh(value):
        if isinstance(value, (list, tuple)) and value and all(_is_float_array(v) for v in value):
            return type(value)(fresh(v) for v in value)
        if not _is_float_array(value):
            return value
        a = np.asarray(value, dtype=float)
        if a.ndim == 2 and a.shape[0] == a.shape[1] and np.allclose(a, a.T):
            n = a.shape[0]
            b = rng.standard_normal((n, n + 4))
            new = b @ b.T / (n + 4)
            return new * (abs(np.trace(a)) / np.trace(new) if np.trace(a) else 1.0)
        new = rng.standard_normal(a.shape) * (a.std() or 1.0) + a.mean()
        if a.ndim == 1 and a.size >= 3 and np.all(np.diff(a) >= 0):
            new = np.sort(new)
        return new

    def has_array(value):
        return _is_float_array(value) or (isinstance(value, (list, tuple)) and any(map(has_array, value)))

    if any(map(has_array, args)):
        return tuple(fresh(a) for a in args)
    return tuple(a + 1 if isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                 else 0.9 * a if isinstance(a, (float, np.floating)) else a for a in args)


def agrees_on_fresh_inputs(check, env: dict, name: str, reference: str, seed: int = HIDDEN_SEED) -> None:
    """The hidden test: the answer ``env[name]`` agrees with the chapter's solution on fresh inputs.

    ``reference`` is the source of the chapter's solution (its definitions), run in a
    copy of the notebook's namespace. The self-check is run once with the reference
    in place of the answer to record its calls; each call's arguments are then
    redrawn (:func:`fresh_inputs`, explicit seed), and the answer's value is compared
    with the reference's within ``RTOL``, ``ATOL``. Raises ``AssertionError`` with
    what differs.
    """
    answer = env.get(name)
    if answer is None or answer is Ellipsis or not callable(answer):
        raise AssertionError(f"{name} is not a function yet")
    namespace = dict(env)
    exec(compile(reference, f"<solution of {name}>", "exec"), namespace)  # the chapter's own solution
    solution, calls = namespace[name], []

    def recorder(*args):
        calls.append(args)
        return solution(*args)

    with contextlib.redirect_stdout(io.StringIO()):
        if check(recorder) is not True:
            raise RuntimeError(f"the chapter's solution of {name} does not pass {check.__name__}")
    rng = np.random.default_rng(seed)
    with float64():
        for args in calls:
            args = fresh_inputs(args, rng)
            want = np.asarray(solution(*args), dtype=float)
            try:
                got = answer(*args)
            except Exception as err:  # the student's bug is the test's finding
                raise AssertionError(f"{name} raised {type(err).__name__}: {err} on inputs the check does not use") \
                    from None
            report = io.StringIO()
            with contextlib.redirect_stdout(report):
                ok = compare(got, want, f"{name} on inputs the check does not use", rtol=RTOL, atol=ATOL)
            if not ok:
                raise AssertionError(report.getvalue().strip())
