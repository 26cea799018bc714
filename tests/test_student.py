"""Student copies (``make student``): solutions removed, self-checks kept, and the copy still runs.

Cost. Executing every student copy in full would run every notebook a second
time after nbval. Instead:

* statically, for every notebook in ``_toc.yml``: no cell left in the student
  copy uses a name that only a solution cell defines (see ``tests.notebook_cells``);
* dynamically, for every notebook whose solutions contain code: the cells of
  the student copy from the first exercise on are executed, together with
  exactly the earlier cells they need (found by the same name analysis), in a
  fresh kernel. Every self-check cell must then run without raising and report
  a failure (``❌``): the placeholder answer must not pass.

A notebook whose solutions are prose only has a student copy that runs the
same code as the chapter itself, which nbval executes.
"""

import subprocess
import sys

import pytest

from gramlib import student
from gramlib.views.exercises import FAIL, PASS
from tests import notebook_cells as nc
from tests.book_files import ROOT, toc_notebooks

NOTEBOOKS = toc_notebooks()
ids = lambda p: p.name  # noqa: E731


def _nb(*cells):
    def cell(kind, text, tags=()):
        base = {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": text}
        return base | ({"outputs": [{"output_type": "stream", "name": "stdout", "text": "old"}],
                        "execution_count": 3} if kind == "code" else {})
    return {"cells": [cell(*c) for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_student_copy_removes_solution_cells_and_outputs():
    nb = _nb(("markdown", "# Chapter 9: Test"),
             ("code", "answer = None"),
             ("markdown", "```{solution-start} ch09-ex-a\n:class: dropdown\n```", ["solution"]),
             ("code", "answer = 42", ["solution"]),
             ("markdown", "```{solution-end}\n```", ["solution"]),
             ("code", "check(answer)"))
    copy = student.student_copy(nb)
    assert [nc.source(c) for c in copy["cells"]] == ["# Chapter 9: Test", "answer = None", "check(answer)"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in nc.code_cells(copy))
    assert len(nb["cells"]) == 6 and nb["cells"][1]["outputs"], "the original must not change"


@pytest.mark.parametrize("text", [":::{solution-start} ch09-ex-a\n:::", "Some text.\n\n````{solution-end}\n````"])
def test_an_untagged_gated_solution_is_refused(text):
    nb = _nb(("markdown", "# Title"), ("markdown", text))
    assert student.untagged_solutions(nb) == [1]
    with pytest.raises(ValueError, match="cells \\[1\\]"):
        student.student_copy(nb)


def test_prose_solutions_are_cut_out_of_their_cells():
    exercise = "```{exercise} Derive it\n:label: ch09-ex-a\nShow that $x = 1$.\n```"
    solution = "````{solution} ch09-ex-a\n:class: dropdown\nSince\n```python\nx = 1\n```\nit is.\n````"
    nb = _nb(("markdown", f"## Exercises\n\n{exercise}\n\n{solution}\n\nNext."),
             ("markdown", solution),
             ("markdown", ":::{solution} ch09-ex-a\nShort.\n:::"))
    copy = student.student_copy(nb)
    assert [nc.source(c) for c in copy["cells"]] == [f"## Exercises\n\n{exercise}\n\nNext."]
    with pytest.raises(ValueError, match="never closed"):
        student.strip_solutions("```{solution} ch09-ex-a\nno end")


def test_make_student_writes_a_copy_of_every_notebook(tmp_path):
    if not NOTEBOOKS:
        pytest.skip("no notebooks in _toc.yml yet")
    subprocess.run([sys.executable, "-m", "gramlib", "student", "--out", str(tmp_path), *map(str, NOTEBOOKS)],
                   cwd=ROOT, check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in NOTEBOOKS)
    for path in NOTEBOOKS:
        assert nc.read(tmp_path / path.name) == student.student_copy(nc.read(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_student_copy_keeps_everything_but_the_solutions(path):
    nb = nc.read(path)
    copy = student.student_copy(nb)
    kept = [student.strip_solutions(nc.source(c)) if c["cell_type"] == "markdown" else nc.source(c)
            for c in nb["cells"] if not student.is_solution(c)]
    assert [nc.source(c) for c in copy["cells"]] == [k for k in kept if k.strip()]
    assert not any("{solution" in nc.source(c) for c in copy["cells"])
    assert len(copy["cells"]) < len(nb["cells"]), f"{path.name}: the student copy removed nothing"
    checks = [c for c in nc.code_cells(copy) if nc.CHECK_CALL.search(nc.source(c))]
    assert checks, f"{path.name}: the student copy has no self-check cell"


def solution_only_uses(nb) -> list[str]:
    """Uses, in cells the student copy keeps, of names that only solution cells define."""
    codes = nc.code_cells(nb)
    names = [nc.cell_names(nc.source(c)) for c in codes]
    problems = []
    for j, (cell, used) in enumerate(zip(codes, names)):
        if student.is_solution(cell):
            continue
        for name in sorted(used.free):
            binders = [k for k in range(j) if name in names[k].bound | names[k].changed]
            if binders and all(student.is_solution(codes[k]) for k in binders):
                problems.append(f"code cell {j} uses {name!r}, which only solution cell(s) {binders} define")
    return problems


def test_a_name_only_a_solution_defines_is_found():
    nb = _nb(("code", "import numpy as np"), ("code", "answer = None"),
             ("code", "answer = np.ones(3)\nhelper = 2", ["solution"]), ("code", "check(answer, helper)"))
    assert solution_only_uses(nb) == ["code cell 3 uses 'helper', which only solution cell(s) [2] define"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_no_cell_of_the_student_copy_needs_a_solution(path):
    problems = solution_only_uses(nc.read(path))
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_student_copy_executes(path):
    nb = nc.read(path)
    cells = nb["cells"]
    first = next((i for i, c in enumerate(cells) if student.is_solution(c)), None)
    if first is None or not any(c["cell_type"] == "code" and student.is_solution(c) for c in cells):
        pytest.skip(f"{path.name}: no code in its solutions; its student copy runs the chapter's own code (nbval)")
    kept = [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "code" and not student.is_solution(c)]
    codes = [nc.source(c) for _, c in kept]
    targets = [k for k, (i, _) in enumerate(kept) if i > first]
    assert targets, f"{path.name}: no cell after the solutions' start"
    order = nc.dependency_slice(codes, targets)
    executed, seconds = nc.execute([kept[k][1] for k in order], cwd=path.parent)
    print(f"{path.name}: ran {len(order)} of {len(kept)} code cells of the student copy in {seconds:.1f} s")
    for k, cell in zip(order, executed.cells):
        if nc.CHECK_CALL.search(codes[k]) and k in targets:
            text = nc.stream_text(cell)
            assert FAIL in text, f"{path.name}: check cell {codes[k]!r} printed {text!r}, expected a {FAIL} report"
            assert PASS not in text, f"{path.name}: {codes[k]!r} passes without an answer: {text!r}"


def test_name_analysis_of_cells():
    names = nc.cell_names("import numpy as np\nx = np.arange(n)\ny = [v + k for v in x]\nresults.append(y)\n"
                          "def f(a):\n    return a + offset\n%matplotlib inline")
    assert names.free == {"n", "k", "results", "offset"}
    assert names.bound == {"np", "x", "y", "f"} and names.changed == {"results"}
    assert nc.cell_names("x = x + 1").free == {"x"}
    assert nc.cell_names("fig, ax = plt.subplots()\nax.plot(t)").free == {"plt", "t"}


def test_dependency_slice_keeps_what_the_targets_need():
    cells = ["# install", "import numpy as np\nimport jax\njax.config.update('jax_enable_x64', True)",
             "n = 10", "x = np.arange(n)\nresults = []", "heavy = np.linalg.svd(np.ones((n, n)))",
             "fig = plt.figure()\nax = fig.gca()", "results.append(x.sum())", "answer = None",
             "check_it(answer, results)"]
    assert nc.dependency_slice(cells, [8]) == [0, 1, 2, 3, 6, 7, 8]
