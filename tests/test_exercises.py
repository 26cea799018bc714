"""Exercises across the book: the shared self-check reporter, and the rules every chapter follows.

Each chapter's own checks (``gramlib/views/exercises/chNN.py``) are tested with a
correct and a wrong answer in that chapter's test file. Here: the reporter
that all checks print through, and, for every notebook in ``_toc.yml``, at
least three exercises, a solution for each, solutions fully tagged for the
student copies, and coding exercises whose self-checks exist, are used, and
answer a placeholder with "Not answered yet" instead of raising.
"""

import importlib
import importlib.util
import inspect
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gramlib import student
from gramlib.views.exercises import FAIL, PASS, compare, not_answered
from tests import notebook_cells as nc
from tests.book_files import toc_notebooks

NOTEBOOKS = toc_notebooks()
ids = lambda p: p.name  # noqa: E731

FENCE = r"^[ \t]*(?:`{3,}|:{3,})[ \t]*"
EXERCISE = re.compile(FENCE + r"\{exercise(?:-start)?\}[^\n]*\n((?:[ \t]*:[\w-]+:[^\n]*\n)*)", re.MULTILINE)
SOLUTION = re.compile(FENCE + r"\{solution(?:-start)?\}[ \t]*(\S+)", re.MULTILINE)
SOLUTION_START = re.compile(FENCE + r"\{solution-start\}", re.MULTILINE)
SOLUTION_END = re.compile(FENCE + r"\{solution-end\}", re.MULTILINE)
CHECK_REF = re.compile(r"\b(\w+)\.(check_\w+)\s*\(")  # ch01.check_gap(, appendix.check_ntk(


# -- the reporter ---------------------------------------------------------------------------

def test_correct_answer_passes(capsys):
    assert compare([1.0, 2.0], np.array([1.0, 2.0 + 1e-9]), "gap") is True
    out = capsys.readouterr().out
    assert out.startswith(PASS) and "gap: correct" in out


def test_wrong_answer_names_the_worst_entry_and_the_error(capsys):
    assert compare([[1.0, 2.0], [3.0, 5.0]], [[1.0, 2.0], [3.0, 4.0]], "K", hint="Check the diagonal.") is False
    out = capsys.readouterr().out
    assert out.startswith(FAIL)
    assert "1 of 4 entry wrong" in out and "(1, 1)" in out
    assert "got 5, expected 4" in out and "abs error 1.00e+00" in out and "rel error 2.50e-01" in out
    assert out.strip().endswith("Check the diagonal.")


def test_labels_name_the_wrong_entry(capsys):
    assert compare([0.1, 0.5, 0.3], [0.1, 0.2, 0.3], "gap", labels=["n=4", "n=8", "n=16"]) is False
    assert "worst at n=8" in capsys.readouterr().out


def test_tolerances_are_relative_and_absolute(capsys):
    assert compare(1e6 + 0.5, 1e6, "big", rtol=1e-6) is True
    assert compare(1e6 + 2.0, 1e6, "big", rtol=1e-6) is False
    assert compare(1e-12, 0.0, "zero") is True
    assert compare(1e-6, 0.0, "zero") is False
    capsys.readouterr()


@pytest.mark.parametrize("answer, expected_text", [
    (None, "Not answered yet"),
    (Ellipsis, "Not answered yet"),
    ([1.0, 2.0, 3.0], "shape (3,), expected (2,)"),
    ([1.0, np.nan], "entry (1,) is nan"),
    ([np.inf, 1.0], "entry (0,) is inf"),
    ("two numbers", "expected numbers, got str"),
    ([[1.0], [1.0, 2.0]], "expected numbers, got list"),
    (lambda n: n, "expected numbers, got function"),
])
def test_bad_answers_are_explained_not_raised(answer, expected_text, capsys):
    assert compare(answer, [1.0, 2.0], "r", hint="A hint.") is False
    out = capsys.readouterr().out
    assert out.startswith(FAIL) and expected_text in out


def test_not_answered_only_for_placeholders(capsys):
    assert not_answered(None) and not_answered(...)
    assert not not_answered(0) and not not_answered([]) and not not_answered(np.zeros(2))
    assert capsys.readouterr().out.count("Not answered yet") == 2


answers = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(answer=answers)
def test_compare_never_raises_and_returns_a_bool(answer):
    assert compare(answer, [1.0, 2.0], "r") in (True, False)


# -- the rules every chapter follows --------------------------------------------------------

def exercises(nb):
    """Labels of the exercises, in order."""
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for options in EXERCISE.findall(nc.source(cell)):
                label = re.search(r":label:\s*(\S+)", options)
                found.append(label.group(1) if label else None)
    return found


def solutions(nb):
    return [m for c in nb["cells"] if c["cell_type"] == "markdown" for m in SOLUTION.findall(nc.source(c))]


def chapter_prefix(path):
    match = re.match(r"(\d\d)_", path.name)
    return f"ch{match.group(1)}" if match else None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_at_least_three_exercises_each_with_a_solution(path):
    nb = nc.read(path)
    labels = exercises(nb)
    assert len(labels) >= 3, f"{path.name}: {len(labels)} exercise blocks, the book asks for at least 3"
    assert None not in labels, f"{path.name}: every exercise needs a :label: (its solution refers to it)"
    assert len(set(labels)) == len(labels), f"{path.name}: duplicate exercise labels {labels}"
    prefix = chapter_prefix(path)
    if prefix:
        bad = [lab for lab in labels if not lab.startswith(prefix + "-")]
        assert not bad, f"{path.name}: exercise labels must start with {prefix}-: {bad}"
    solved = solutions(nb)
    missing = [lab for lab in labels if lab not in solved]
    assert not missing, f"{path.name}: exercises without a solution: {missing}"
    orphans = [lab for lab in solved if lab not in labels]
    assert not orphans, f"{path.name}: solutions of unknown exercises: {orphans}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_cell_of_a_solution_is_tagged(path):
    nb = nc.read(path)
    assert student.untagged_solutions(nb) == [], f"{path.name}: untagged cells hold solutions"
    inside, problems = False, []
    for i, cell in enumerate(nb["cells"]):
        text = nc.source(cell) if cell["cell_type"] == "markdown" else ""
        if SOLUTION_START.search(text):
            if inside:
                problems.append(f"cell {i}: solution-start inside an open solution")
            inside = True
        if inside and not student.is_solution(cell):
            problems.append(f"cell {i} ({cell['cell_type']}) lies inside a gated solution but is not tagged 'solution'")
        if SOLUTION_END.search(text):
            if not inside:
                problems.append(f"cell {i}: solution-end without solution-start")
            inside = False
    if inside:
        problems.append("a solution-start has no solution-end")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def exercise_module(name):
    """``gramlib.views.exercises.<name>`` if it exists, else None."""
    if importlib.util.find_spec(f"gramlib.views.exercises.{name}") is None:
        return None
    return importlib.import_module(f"gramlib.views.exercises.{name}")


def check_calls(nb):
    """(module, function) of every self-check that an untagged cell calls."""
    return {(m, f) for c in nc.code_cells(nb) if not student.is_solution(c)
            for m, f in CHECK_REF.findall(nc.source(c)) if exercise_module(m)}


def own_checks(module):
    return {n for n, f in vars(module).items()
            if n.startswith("check_") and inspect.isfunction(f) and f.__module__ == module.__name__}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_coding_exercises_have_self_checks(path):
    calls = check_calls(nc.read(path))
    assert calls, f"{path.name}: no untagged cell calls a self-check (gramlib.views.exercises.<module>.check_...)"
    for module, func in sorted(calls):
        assert callable(getattr(exercise_module(module), func, None)), \
            f"{path.name}: gramlib.views.exercises.{module} has no {func}"
    for name in {m for m, _ in calls} | {chapter_prefix(path)} - {None}:
        module = exercise_module(name)
        unused = own_checks(module) - {f for m, f in calls if m == name} if module else set()
        assert not unused, f"{path.name}: checks in gramlib.views.exercises.{name} never called: {sorted(unused)}"


def chapter_checks():
    modules = {m for path in NOTEBOOKS for m, _ in check_calls(nc.read(path))}
    return sorted((m, n) for m in modules for n in own_checks(exercise_module(m)))


@pytest.mark.parametrize("module, name", chapter_checks(), ids=lambda v: v)
def test_a_check_answers_a_placeholder_or_nonsense_without_raising(module, name, capsys):
    check = getattr(importlib.import_module(f"gramlib.views.exercises.{module}"), name)
    required = [p for p in inspect.signature(check).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(required) == 1, f"{module}.{name} must take the answer as its only required argument"
    for placeholder in (None, ...):
        assert check(placeholder) is False
        assert "Not answered yet" in capsys.readouterr().out
    for wrong in (lambda *args, **kwargs: None, "text", 0.0):  # a skeleton that returns None, nonsense
        assert check(wrong) is False
        assert FAIL in capsys.readouterr().out
