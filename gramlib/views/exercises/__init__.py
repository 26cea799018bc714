"""Self-checks for the book's coding exercises.

A student calls a chapter's check on their answer, e.g.
``gramlib.views.exercises.ch01.check_two_point_gap(my_gap)``. A check never raises on a
wrong or missing answer: it prints what is wrong (which entry, by how much) and
a hint, and returns ``True`` only for a correct answer. One module per chapter
(``ch01``, ``ch02``, ...) holds that chapter's checks; they all report through
:func:`compare`. Chapter modules are imported on first use, so
``gramlib.views.exercises.ch01.check_...`` works after a plain ``import gramlib``.
"""

from __future__ import annotations

import importlib

import numpy as np

PASS = "✅"
FAIL = "❌"


def not_answered(answer) -> bool:
    """True (and says so) when the exercise's placeholder is still in place."""
    if answer is None or answer is Ellipsis:
        print(f"{FAIL} Not answered yet: replace the placeholder (`...` or `None`) with your code.")
        return True
    return False


def call_answer(func, name, *args):
    """``func(*args)`` as a float array, or ``None`` (and says why) if the student's code raised or returned nothing.

    A skeleton whose body is still ``...`` returns ``None``: reported as not answered.
    """
    try:
        value = func(*args)
        return None if not_answered(value) else np.asarray(value, dtype=float)
    except Exception as err:  # a student's bug must not stop the notebook
        print(f"{FAIL} {name} raised {type(err).__name__}: {err}")
        return None



def call_each(func, name, cases):
    """``[func(*args) for args in cases]`` as float arrays, or ``None`` at the first call that failed (said why)."""
    values = []
    for args in cases:
        value = call_answer(func, name, *args)
        if value is None:
            return None
        values.append(value)
    return values


def compare_call(func, name, args, expected, what, **options) -> bool:
    """:func:`compare` the student's ``func(*args)`` with ``expected``; ``False`` (said why) if the call failed."""
    got = call_answer(func, name, *args)
    return got is not None and compare(got, expected, what, **options)

def compare(answer, expected, name, *, rtol=1e-6, atol=1e-9, hint="", labels=None) -> bool:
    """Compare an array answer with the expected one and explain any difference.

    Reports shape mismatches, NaN/inf, and the worst entry (index, both values,
    absolute and relative error), then the hint. Returns whether all entries
    agree within ``atol + rtol * |expected|``.
    """
    if not_answered(answer):
        return False
    try:
        got = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        print(f"{FAIL} {name}: expected numbers, got {type(answer).__name__}. {hint}")
        return False
    want = np.asarray(expected, dtype=float)
    if got.shape != want.shape:
        print(f"{FAIL} {name}: shape {got.shape}, expected {want.shape}. {hint}")
        return False
    if not np.all(np.isfinite(got)):
        bad = np.argwhere(~np.isfinite(got))[0]
        print(f"{FAIL} {name}: entry {tuple(int(b) for b in bad)} is {got[tuple(bad)]}. {hint}")
        return False
    err = np.abs(got - want)
    tol = atol + rtol * np.abs(want)
    if np.all(err <= tol):
        print(f"{PASS} {name}: correct (max abs error {err.max() if err.size else 0.0:.2e}).")
        return True
    idx = np.unravel_index(np.argmax(err - tol), err.shape) if err.ndim else ()
    where = labels[idx[0]] if labels is not None and idx else (tuple(int(i) for i in idx) or "the value")
    wrong = int(np.sum(err > tol))
    rel = err[idx] / max(abs(want[idx]), 1e-300)
    print(
        f"{FAIL} {name}: {wrong} of {max(err.size, 1)} entr{'y' if wrong == 1 else 'ies'} wrong; worst at {where}: "
        f"got {got[idx]:.6g}, expected {want[idx]:.6g} (abs error {err[idx]:.2e}, rel error {rel:.2e}). {hint}"
    )
    return False


def __getattr__(name):
    if not name.startswith("ch"):
        raise AttributeError(name)
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        raise
    globals()[name] = module
    return module
