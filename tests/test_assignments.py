"""Otter-Grader assignments (``make assignments``, :mod:`gramlib.views.assignments`).

The assignments of every notebook in ``_toc.yml`` are generated once per session
(Otter Assign without its own grading run), then:

* ``otter run``'s grading (``otter.api.grade_submission``, what ``otter run`` calls for
  each submission, without containers) gives each chapter's solutions notebook full
  marks and the unanswered student notebook zero on every autograded question, and a
  wrong answer in a student notebook loses the question's points with the self-check's
  ❌ report;
* for every self-check of the book, an answer off by 0.1% (a wrong answer the old
  self-check catches) fails both the public and the hidden test of its question, and an
  answer hard-wired to the check's own problem passes the public test but not the hidden one;
* a chapter and its assignment do not drift apart: the questions are the chapter's
  exercises in order (read with the regular expressions of ``tests/test_exercises.py``),
  with points from the stars, autograded exactly where the chapter calls a self-check,
  and every self-check the chapter calls is a test of its assignment.

Cost: one kernel per graded notebook (17 in all, a few seconds each).
"""

import importlib
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from gramlib.views import assignments, exercise_cells, grading
from gramlib.views.exercises import FAIL
from tests import notebook_cells as nc
from tests.book_files import ROOT, toc_notebooks
from tests.tolerance import tolerance
from tests.test_exercises import check_calls, exercises

otter = pytest.importorskip("otter", reason='Otter-Grader is the "teach" extra: pip install -e ".[teach]"')
from otter.api import grade_submission  # noqa: E402
from otter.test_files import ExceptionTestFile  # noqa: E402

# Otter 7.0.0 grading under pandas 3 (a deprecation inside otter.run, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop")
NOTEBOOKS = toc_notebooks()
ids = lambda p: p.name  # noqa: E731
STARS = re.compile(r"\{exercise\}[ \t]*(★+)")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Every chapter's assignment, generated once: {notebook name: assignment folder}."""
    out = tmp_path_factory.mktemp("assignments")
    macros = assignments.math_macros(ROOT / "_config.yml")
    return {p.name: assignments.write_assignment(p, out, run_tests=False, macros=macros) for p in NOTEBOOKS}


def grade(notebook: Path, folder: Path):
    return grade_submission(str(notebook), str(assignments.autograder_zip(folder)), quiet=True)


def autograded(folder: Path) -> dict:
    """{question: points} of the autograded questions, read from the autograder's test files."""
    out = {}
    for path in sorted((folder / "autograder" / "tests").glob("q*.py")):
        out[path.stem] = float(re.search(r"^points = (\S+)$", path.read_text(), re.MULTILINE).group(1))
    return out


def master_questions(folder: Path, name: str) -> list[dict]:
    import yaml

    master = nc.read(folder / "master" / name)
    return [yaml.safe_load(nc.source(c).split("\n", 1)[1]) for c in master["cells"]
            if c["cell_type"] == "raw" and nc.source(c).startswith("# BEGIN QUESTION")]


# -- grading with otter run ---------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_solutions_get_full_marks_and_the_student_notebook_zero(path, built):
    folder = built[path.name]
    points = autograded(folder)
    assert points, f"{path.name}: no autograded question"
    solved = grade(folder / "autograder" / path.name, folder)
    for question, result in solved.results.items():
        failed = [r.message for r in result.test_case_results if not r.passed]
        assert result.score == result.possible == points[question], f"{path.name} {question}: {failed}"
    assert solved.total == solved.possible == sum(points.values())
    blank = grade(folder / "student" / path.name, folder)
    assert set(blank.results) == set(points)
    assert {q: r.score for q, r in blank.results.items()} == {q: 0 for q in points}
    assert blank.possible == sum(points.values())


def test_a_wrong_answer_loses_the_points_with_the_self_checks_report(built, tmp_path):
    """Chapter 1's question 2 answered with a classic slip (the residual squared once, not per step)."""
    name = "01_the_generalization_gap.ipynb"
    if name not in built:
        pytest.skip(f"{name} is not in _toc.yml")
    folder = built[name]
    nb = nc.read(folder / "student" / name)
    cell = next(c for c in nb["cells"] if nc.source(c).startswith("def my_gd_gap"))
    cell["source"] = ("from math import comb\n\n\ndef my_gd_gap(n, steps, lr):\n"
                      "    return sum(comb(n, k) / 2**n * (1 - lr * k / n) ** steps * (0.5 - k / n) "
                      "for k in range(n + 1))\n")
    submission = tmp_path / name
    submission.write_text(json.dumps(nb), encoding="utf-8")
    result = grade(submission, folder).results["q2"]
    assert result.score == 0 and result.possible == 2
    public = next(r for r in result.test_case_results if not r.test_case.hidden)
    assert not public.passed and FAIL in public.message and "two-point gap under gradient descent" in public.message


# -- every self-check: wrong answers, hard-wired answers -----------------------------------------

def reference_functions(path: Path) -> list[tuple]:
    """(question, check, answer name, chapter's solution, namespace, index of the check in its question)
    for every self-check of a chapter's autograded questions (each check: a public, then a hidden test)."""
    nb = nc.read(path)
    namespace = {}
    codes = [nc.source(c) for c in nc.code_cells(nb)]
    exec(exercise_cells.definitions(codes[1]), namespace)  # the imports of the chapter's imports and settings cell
    out = []
    for number, ex in enumerate(exercise_cells.chapter_exercises(nb), start=1):
        if not ex.autograded:
            continue
        source = "\n\n\n".join(filter(None, map(exercise_cells.definitions, ex.solution_code)))
        exec(source, namespace)
        for index, check in enumerate(ex.checks):
            module = importlib.import_module(f"gramlib.views.exercises.{check.module}")
            out.append((f"q{number}", getattr(module, check.function), check.answer, namespace[check.answer],
                        namespace, index))
    return out


def run_tests_file(folder: Path, question: str, env: dict) -> list:
    tests = ExceptionTestFile.from_file(str(folder / "autograder" / "tests" / f"{question}.py"))
    with redirect_stdout(io.StringIO()):
        tests.run(env)
    return tests.test_case_results


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_a_wrong_answer_fails_the_self_check_and_both_tests(path, built):
    for question, check, name, solution, namespace, index in reference_functions(path):
        def wrong(*args):
            value = solution(*args)
            return [1.001 * np.asarray(v, dtype=float) for v in value] if isinstance(value, tuple) \
                else 1.001 * np.asarray(value, dtype=float)

        public, hidden = run_tests_file(built[path.name], question, dict(namespace, **{name: wrong}))[2 * index:][:2]
        assert not public.test_case.hidden and hidden.test_case.hidden
        # the public test is the self-check: it fails with the check's ❌ report
        assert not public.passed and FAIL in public.message, f"{path.name} {question}: {name} passed the public test"
        assert not hidden.passed, f"{path.name} {question}: {name} passed the hidden test"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_an_answer_fitted_to_the_check_passes_public_tests_only(path, built):
    """An answer that returns the check's expected values for the check's own inputs, and nonsense elsewhere."""
    for question, check, name, solution, namespace, index in reference_functions(path):
        seen = []

        def recorder(*args):
            seen.append((args, solution(*args)))
            return seen[-1][1]

        with redirect_stdout(io.StringIO()):
            assert check(recorder) is True

        def fitted(*args):
            for known, value in seen:
                if len(known) == len(args) and all(_same(a, b) for a, b in zip(known, args)):
                    return value
            return np.zeros_like(np.asarray(seen[0][1], dtype=float))

        public, hidden = run_tests_file(built[path.name], question, dict(namespace, **{name: fitted}))[2 * index:][:2]
        assert public.passed, f"{path.name} {question}: {public.message}"
        assert not hidden.passed, f"{path.name} {question}: the hidden test passed an answer fitted to {check.__name__}"


def _same(a, b) -> bool:
    if callable(a) or isinstance(a, dict):
        return True  # the network and its parameters: the check's own
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all(a == b))


# -- no drift between a chapter and its assignment ---------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_the_assignment_holds_the_chapters_exercises(path, built):
    nb = nc.read(path)
    folder = built[path.name]
    labels = exercises(nb)
    stars = [len(s) for c in nb["cells"] if c["cell_type"] == "markdown" for s in STARS.findall(nc.source(c))]
    questions = master_questions(folder, path.name)
    assert [q["name"] for q in questions] == [f"q{i}" for i in range(1, len(labels) + 1)]
    assert [q["points"] for q in questions] == stars
    student = "\n".join(nc.source(c) for c in nb_cells(folder / "student" / path.name, "markdown"))
    assert re.findall(r"Exercise `([\w-]+)` of the chapter", student) == labels
    # autograded exactly where the chapter calls a self-check, and every self-check is tested
    calls = check_calls(nb)
    tests = {p.stem: p.read_text() for p in (folder / "autograder" / "tests").glob("q*.py")}
    tested = {(m, f) for text in tests.values() for m, f in re.findall(r"\b(\w+)\.(check_\w+)\b", text)}
    assert tested == calls
    manual = {q["name"] for q in questions if q.get("manual")}
    assert manual.isdisjoint(tests) and manual | set(tests) == {q["name"] for q in questions}
    for name, text in tests.items():
        assert text.count("hidden=False") >= 1 and text.count("hidden=True") == text.count("hidden=False")
        public = (folder / "student" / "tests" / f"{name}.py").read_text()
        assert "hidden=True" not in public and "REFERENCE" not in public and "def test_" in public


def nb_cells(path: Path, kind: str) -> list:
    return [c for c in nc.read(path)["cells"] if c["cell_type"] == kind]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_the_student_notebook_opens_like_the_chapter_and_shows_no_solution(path, built):
    nb = nc.read(path)
    folder = built[path.name]
    student = nc.read(folder / "student" / path.name)
    codes = [nc.source(c) for c in nc.code_cells(student)]
    chapter_codes = [nc.source(c) for c in nc.code_cells(nb)]
    assert codes[:2] == chapter_codes[:2], "the install cell, then the imports and settings cell"
    assert "grader = otter.Notebook(" in codes[2] and '"q' in codes[2], "the Otter cell, with the public tests"
    assert any(c.startswith('grader.check("q') for c in codes)
    for ex in exercise_cells.chapter_exercises(nb):
        for code in ex.solution_code:
            for text in exercise_cells.definitions(code).split("\n\n\n"):
                if text.strip():
                    assert text not in "\n".join(codes), f"{path.name}: a solution of {ex.label} is in the student notebook"
        for skeleton in ex.skeletons:
            assert skeleton.strip() in codes, f"{path.name}: the skeleton of {ex.label} is missing"
    # a slice, not the chapter: besides the skeletons, only cells from before the exercises that they need
    exs = exercise_cells.chapter_exercises(nb)
    skeletons = [s for ex in exs for s in ex.skeletons]
    first = min(chapter_codes.index(s) for s in skeletons)
    targets = skeletons + [exercise_cells.definitions(c) for ex in exs if ex.autograded for c in ex.solution_code]
    needed = {chapter_codes[k] for k in nc.dependency_slice(chapter_codes[:first] + targets,
                                                            range(first, first + len(targets))) if k < first}
    copied = [c for c in codes if c in chapter_codes and c not in skeletons]
    assert set(copied) <= needed | set(chapter_codes[:2]), f"{path.name}: chapter cells the exercises do not need"


# -- the pieces -----------------------------------------------------------------------------------

def _nb(*cells):
    def cell(kind, text, tags=()):
        base = {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": text}
        return base | ({"outputs": [], "execution_count": None} if kind == "code" else {})
    return {"cells": [cell(*c) for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


INSTALL = 'REPO = "https://example.org/book"\n'
EXERCISE = "```{exercise} ★★ Square it\n:label: ch09-ex-square\nWrite `my_square(x)`.\n```"


def test_exercises_are_read_with_their_pieces():
    nb = _nb(("markdown", "# Chapter 9: Test"), ("code", INSTALL), ("code", "import numpy as np\nn = 3"),
             ("markdown", "## Exercises\n\n```{exercise} ★ Prove it\n:label: ch09-ex-proof\nShow $1 = 1$.\n```\n\n"
                          "````{solution} ch09-ex-proof\n:class: dropdown\nTrivially.\n````\n\n" + EXERCISE +
                          "\n\n```{admonition} Hint\n:class: dropdown\nUse {eq}`ch09-eq-x` and {cite:t}`a2020`.\n```"),
             ("code", "my_square = None"),
             ("markdown", "```{solution-start} ch09-ex-square\n:class: dropdown\n```\nMultiply.", ["solution"]),
             ("code", "def my_square(x):\n    return np.asarray(x) ** 2\n\n\nprint(my_square(n))", ["solution"]),
             ("markdown", "```{solution-end}\n```", ["solution"]),
             ("code", "gramlib.views.exercises.ch09.check_square(my_square)"),
             ("markdown", "## Summary\n\nDone."), ("code", "later = 1"))
    proof, square = exercise_cells.chapter_exercises(nb)
    assert (proof.label, proof.stars, proof.points, proof.autograded) == ("ch09-ex-proof", 1, 1, False)
    assert proof.solution_text == ["Trivially."]
    assert (square.title, square.stars, square.skeletons) == ("Square it", 2, ["my_square = None"])
    assert [(c.module, c.function, c.answer) for c in square.checks] == [("ch09", "check_square", "my_square")]
    assert square.solution_text == ["Multiply."] and len(square.solution_code) == 1
    assert exercise_cells.definitions(square.solution_code[0]) == "def my_square(x):\n    return np.asarray(x) ** 2"
    assert assignments._plain(square.hint) == "Use *ch09-eq-x* and [a2020]."
    master = assignments.master_notebook(nb, "09_test")
    text = "\n".join(nc.source(c) for c in master["cells"])
    assert "print(my_square(n))" not in text and "later = 1" not in text
    assert "# BEGIN QUESTION\nname: q1\npoints: 1\nmanual: true" in text and "name: q2\npoints: 2" in text


@pytest.mark.parametrize("cells, message", [
    ((("markdown", "```{exercise} Square it\n:label: ch09-ex-a\nx\n```"),), "grade"),
    ((("markdown", "```{exercise} ★ Square it\nx\n```"),), "label"),
    ((("markdown", "```{solution} ch09-ex-b\nx\n```"),), "unknown exercise"),
    ((("markdown", EXERCISE), ("code", "ch09.check_square(my_square + 1)")), "plain name"),
    ((("markdown", EXERCISE + "\n```{exercise} ★ Open"),), "never closed"),
])
def test_bad_chapters_are_refused_with_the_reason(cells, message):
    with pytest.raises(ValueError, match=message):
        exercise_cells.chapter_exercises(_nb(*cells))


def test_a_coding_exercise_needs_a_function_in_its_solution():
    nb = _nb(("code", INSTALL), ("code", "import numpy as np"), ("markdown", EXERCISE), ("code", "my_square = None"),
             ("markdown", "```{solution-start} ch09-ex-square\n```", ["solution"]),
             ("code", "my_square = lambda x: x**2", ["solution"]),
             ("markdown", "```{solution-end}\n```", ["solution"]), ("code", "ch09.check_square(my_square)"))
    with pytest.raises(ValueError, match="without a function"):
        assignments.master_notebook(nb, "09_test")


def test_fresh_inputs_keep_shapes_and_structure():
    rng = np.random.default_rng(0)
    b = rng.standard_normal((5, 9))
    theta, r0, lam = b @ b.T, rng.standard_normal(5), np.sort(rng.standard_normal(6))
    apply = lambda p, x: x  # noqa: E731
    args = (theta, r0, lam, [r0, 2 * r0], 3, 0.5, apply, {"w": r0})
    new = grading.fresh_inputs(args, np.random.default_rng(1))
    assert new[0].shape == theta.shape and np.array_equal(new[0], new[0].T)
    assert np.linalg.eigvalsh(new[0]).min() > 0
    assert abs(np.trace(new[0]) - np.trace(theta)) <= tolerance(np.float64, 5 * 9) * np.trace(theta)
    assert new[1].shape == (5,) and not np.allclose(new[1], r0)
    assert np.all(np.diff(new[2]) >= 0) and not np.allclose(new[2], lam)
    assert [v.shape for v in new[3]] == [(5,), (5,)] and not np.allclose(new[3][0], r0)
    assert new[4:] == (3, 0.5, apply, args[7])
    assert grading.fresh_inputs((8, 40, 0.3), rng) == (9, 41, 0.9 * 0.3)


def test_passes_raises_with_the_report():
    def check(answer):
        print(f"{FAIL} wrong by 1")
        return answer == 1

    grading.passes(check, 1)
    with pytest.raises(AssertionError, match="wrong by 1"):
        grading.passes(check, 2)


def test_the_command_line_writes_a_chapters_assignment(tmp_path, built):
    """The command line on one chapter (``make assignments`` runs it on all of them)."""
    from gramlib.__main__ import main

    chapter = next(p for p in NOTEBOOKS if p.name.startswith("03_")) if NOTEBOOKS else None
    if chapter is None:
        pytest.skip("no Chapter 3 in _toc.yml")
    main(["assignments", "--no-run-tests", "--out", str(tmp_path), str(chapter)])
    folder = tmp_path / chapter.stem
    assert (folder / "student" / chapter.name).exists() and assignments.autograder_zip(folder).exists()
    assert nc.read(folder / "master" / chapter.name) == nc.read(built[chapter.name] / "master" / chapter.name)
