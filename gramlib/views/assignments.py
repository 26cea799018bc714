"""Otter-Grader assignments of the book's exercises, generated from the chapter notebooks.

For each chapter, :func:`master_notebook` writes an Otter Assign input notebook
(Otter's own format: a ``# ASSIGNMENT CONFIG`` raw cell, then per exercise raw
``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` blocks) from the
chapter itself, and :func:`write_assignment` runs Otter Assign on it. Nothing of an
exercise is written twice: prompt, hint, skeleton, solution and checks are read from
the chapter notebook each time.

* **Questions.** Every ``{exercise}`` of the chapter, in order, becomes question
  ``q1``, ``q2``, ... worth as many points as it has stars (★ = 1, ★★ = 2, ★★★ = 3).
* **Coding exercises** (those with a self-check ``gramlib.views.exercises.<module>.check_...(answer)``)
  are autograded. The student cell is the chapter's skeleton; the solution is the
  definitions (imports, functions) of the chapter's solution cells. Each self-check
  gives two tests, sharing the question's points equally: a *public* test, which is
  the self-check itself (it passes when the check prints ✅; on failure its ❌ report
  is the message), and a *hidden* test (:func:`gramlib.views.grading.agrees_on_fresh_inputs`), which
  calls the answer on inputs the self-check never shows (every float array of the
  check's calls drawn afresh with the same shape and structure, or, when a call has
  no arrays, every integer + 1 and every float × 0.9) and compares it with the
  chapter's solution there: an answer fitted to the public check's numbers, or
  right only at its sizes, passes the public test and fails the hidden one.
* **Derivations and explorations** (no self-check) are manually graded
  (``manual: true``); the solution dropdown's text, and for an exploration its code
  (as a listing: it needs the chapter's runs), is the solution.
* **The student notebook** starts with the chapter's install cell and its imports and
  settings cell (so it opens in Colab as the chapter does), then the cell that
  installs Otter where it is missing and starts ``grader = otter.Notebook(...)``
  (it also writes the public tests next to the notebook, so ``grader.check("q1")``
  works in Colab, where only the notebook is uploaded), then the other setup cells
  that the exercises need (the dependency slice of :mod:`gramlib.views.cell_slice`),
  not the whole chapter.

Command line (``make assignments`` runs it on every notebook of the book)::

    python -m gramlib assignments --out _build/assignments chapters/01_*.ipynb ...

writes ``<out>/<chapter>/`` with Otter Assign's output: ``student/`` (the student
notebook and its public tests), ``autograder/`` (the solutions notebook, all tests and
the autograder zip for Gradescope or ``otter run``), and ``master/`` (the generated
Otter Assign input). It needs the ``teach`` extra (``pip install -e ".[teach]"``).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import textwrap
from pathlib import Path

from .cell_slice import dependency_slice
from .exercise_cells import Check, Exercise, chapter_exercises, definitions, install_repository
from .student import is_solution, source

#: Stands in the master notebook's Otter cell for the public tests, filled in after Otter Assign.
PUBLIC_TESTS_SLOT = "PUBLIC_TESTS = {}"

_ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")


# -- markdown for Jupyter and Colab -----------------------------------------------------------

def _plain(text: str) -> str:
    """MyST for Jupyter's markdown: roles as plain text (``{eq}`label``` → *label*), citations in brackets."""
    def role(match):
        name, content = match.groups()
        content = re.sub(r"^(.*?)\s*<([^>]*)>$", r"\1", content)  # `text <label>` → text
        return f"[{content}]" if name.startswith("cite") else f"*{content}*"
    return _ROLE.sub(role, text)


def math_macros(config: Path) -> str:
    """The book's LaTeX macros (``_config.yml``) as ``\\newcommand`` lines for a markdown cell."""
    import yaml  # PyYAML comes with jupyter-book and otter-grader

    settings = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    macros = settings.get("sphinx", {}).get("config", {}).get("mathjax3_config", {}).get("tex", {}).get("macros", {})
    lines = []
    for name, body in macros.items():
        if isinstance(body, list):
            lines.append(f"\\newcommand{{\\{name}}}[{body[1]}]{{{body[0]}}}")
        else:
            lines.append(f"\\newcommand{{\\{name}}}{{{body}}}")
    return "$" + "\n".join(lines) + "$" if lines else ""


# -- the Otter Assign input -------------------------------------------------------------------

def _raw(text):
    return {"cell_type": "raw", "metadata": {}, "source": text}


def _markdown(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(text, tags=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)} if tags else {}, "source": text,
            "outputs": [], "execution_count": None}


def _prompt_cell(number: int, ex: Exercise) -> str:
    kind = "autograded" if ex.autograded else "graded by hand"
    points = f"{ex.points} point{'s' if ex.points > 1 else ''}"
    text = (f"### Question {number}: {ex.title} ({'★' * ex.stars}, {points}, {kind})\n\n"
            f"*Exercise `{ex.label}` of the chapter.*\n\n{_plain(ex.prompt)}")
    if not ex.autograded and ex.solution_code:
        text += ("\n\n*An exploration: work in the code cell below, or in the chapter notebook where it uses the "
                 "chapter's data and runs, and write your findings in the answer cell.*")
    if ex.hint:
        text += f"\n\n<details><summary>Hint</summary>\n\n{_plain(ex.hint)}\n\n</details>"
    return text


def _public_test(check: Check) -> str:
    return textwrap.dedent(f"""\
        def test_{check.function}({check.answer}):
            from gramlib.views.grading import passes
            from gramlib.views.exercises import {check.module}
            passes({check.module}.{check.function}, {check.answer})
        """)


def _hidden_test(check: Check, reference: str) -> str:
    return textwrap.dedent(f"""\
        # HIDDEN
        def test_{check.function}_fresh_inputs(env):
            from gramlib.views.grading import agrees_on_fresh_inputs
            from gramlib.views.exercises import {check.module}
            agrees_on_fresh_inputs({check.module}.{check.function}, env, {check.answer!r}, REFERENCE)
        """).replace("REFERENCE", repr(reference))


def _solution_cell(ex: Exercise, reference: str) -> str:
    skeleton = "\n\n".join(ex.skeletons).strip() or \
        "\n".join(f"{c.answer} = None  # your code here" for c in ex.checks)
    quote = '"""' if '"""' not in skeleton else "'''"
    if quote in skeleton:
        raise ValueError(f"{ex.label}: the skeleton holds both kinds of triple quotes")
    return (f"# BEGIN SOLUTION NO PROMPT\n{reference}\n# END SOLUTION\n"
            f"{quote} # BEGIN PROMPT\n{skeleton}\n{quote} # END PROMPT")


def _otter_cell(notebook_name: str, otter_version: str) -> str:
    return textwrap.dedent(f"""\
        # Otter-Grader: installed where it is missing (e.g. in Colab). The public tests are written next to
        # this notebook when they are not there yet, so that grader.check("q1") works wherever it runs.
        import importlib.util, os, subprocess, sys
        if importlib.util.find_spec("otter") is None:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "otter-grader=={otter_version}"], check=True)
        {PUBLIC_TESTS_SLOT}
        os.makedirs("tests", exist_ok=True)
        for _name, _text in PUBLIC_TESTS.items():
            if not os.path.exists(os.path.join("tests", _name)):
                with open(os.path.join("tests", _name), "w", encoding="utf-8") as _file:
                    _file.write(_text)
        import otter
        grader = otter.Notebook({notebook_name!r}, tests_dir="tests")""")


def master_notebook(nb: dict, name: str, *, macros: str = "", otter_version: str = "7.0.0") -> dict:
    """The Otter Assign input notebook of a chapter (as JSON); ``name``: the assignment's notebook stem.

    Cells: the assignment config, the chapter's title, its install cell and its
    imports and settings cell, the Otter cell, the setup cells the exercises need,
    then one question per exercise (see the module's docstring). Raises
    ``ValueError`` where the chapter's exercises cannot be read (see
    :func:`gramlib.views.exercise_cells.chapter_exercises`) or the chapter has none.
    """
    exercises = chapter_exercises(nb)
    if not exercises:
        raise ValueError("the notebook has no {exercise} blocks")
    cells = nb["cells"]
    codes = [c for c in cells if c["cell_type"] == "code" and not is_solution(c)]
    if len(codes) < 2:
        raise ValueError("the notebook needs an install cell and an imports and settings cell before its exercises")
    references = {ex.label: "\n\n\n".join(filter(None, map(definitions, ex.solution_code)))
                  for ex in exercises if ex.autograded}
    missing = [label for label, reference in references.items() if not reference]
    if missing:
        raise ValueError(f"coding exercises without a function in their solution: {missing}")
    # the setup: the cells before the first exercise that the skeletons and the solutions' definitions need
    skeletons = [text for ex in exercises for text in ex.skeletons]
    first = next((i for i, c in enumerate(codes) if source(c) in skeletons), len(codes))
    targets = skeletons + list(references.values())
    sources = [source(c) for c in codes[:first]] + targets
    order = dependency_slice(sources, range(first, len(sources))) if targets else [0, 1]
    setup = [k for k in order if 1 < k < first]
    title = next((source(c).split("\n")[0] for c in cells if c["cell_type"] == "markdown"), f"# {name}")
    config = {
        "name": name,
        "requirements": ["gramlib @ git+" + install_repository(nb)],
        "init_cell": False,
        "check_all_cell": True,
        "export_cell": {"pdf": False},
        "generate": {"pdf": False, "show_stdout": True},
        "tests": {"files": True, "ok_format": False},
        "show_question_points": False,
    }
    import yaml

    out = [_raw("# ASSIGNMENT CONFIG\n" + yaml.safe_dump(config, sort_keys=False).strip())]
    out.append(_markdown(
        f"{title.replace('# ', '# Assignment: ', 1)}\n\n"
        f"The exercises of this chapter of *The Effective Gram Matrix*, as an Otter-Grader assignment: fill "
        f"in each answer cell and run the `grader.check(...)` cell below it. Autograded questions also "
        f"have hidden tests, run when your submission is graded; questions graded by hand are read by your "
        f"instructor. Run the first cells first (they install what is missing, e.g. in Colab)."
        + (f"\n\n{macros}" if macros else "")))
    out.append(_code(source(codes[0])))
    out.append(_code(source(codes[1])))
    out.append(_code(_otter_cell(f"{name}.ipynb", otter_version)))
    out.extend(_code(source(codes[k])) for k in setup)
    for number, ex in enumerate(exercises, start=1):
        question = {"name": f"q{number}", "points": ex.points}
        if not ex.autograded:
            question["manual"] = True
        out.append(_raw("# BEGIN QUESTION\n" + yaml.safe_dump(question, sort_keys=False).strip()))
        out.append(_markdown(_prompt_cell(number, ex)))
        out.append(_raw("# BEGIN SOLUTION"))
        if ex.autograded:
            out.append(_code(_solution_cell(ex, references[ex.label])))
            out.append(_raw("# END SOLUTION"))
            out.append(_raw("# BEGIN TESTS"))
            for check in ex.checks:
                out.append(_code(_public_test(check)))
                out.append(_code(_hidden_test(check, references[ex.label])))
            out.append(_raw("# END TESTS"))
        else:
            if ex.solution_code:  # an exploration: room for code and for the findings
                out[-1:] = [_raw("# BEGIN PROMPT"), _code("# your exploration here"),
                            _markdown("_Type your findings here, replacing this text._"), _raw("# END PROMPT"),
                            out[-1]]
            text = "\n\n".join(_plain(t) for t in ex.solution_text)
            listing = "\n\n".join(f"```python\n{c.strip()}\n```" for c in ex.solution_code)
            out.append(_markdown(f"**Solution.** {text}" + (f"\n\n{listing}" if listing else "")))
            out.append(_raw("# END SOLUTION"))
        out.append(_raw("# END QUESTION"))
    for number, cell in enumerate(out):
        cell["id"] = f"{name[:40]}-{number}"
    master = copy.deepcopy({k: v for k, v in nb.items() if k != "cells"})
    master["cells"] = out
    master["nbformat"], master["nbformat_minor"] = 4, 5
    master.setdefault("metadata", {})["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}
    return master


# -- Otter Assign -----------------------------------------------------------------------------

def write_assignment(chapter: Path, out: Path, *, run_tests: bool = True, macros: str = "") -> Path:
    """Generate the Otter Assign input of ``chapter`` and run Otter Assign on it into ``out/<stem>/``.

    ``run_tests``: Otter Assign grades the solutions notebook with the autograder
    and fails unless every test passes. Returns the assignment's folder.
    """
    from importlib.metadata import version

    from otter.assign import main as otter_assign
    from otter.utils import chdir

    chapter, out = Path(chapter), Path(out)
    nb = json.loads(chapter.read_text(encoding="utf-8"))
    try:
        master = master_notebook(nb, chapter.stem, macros=macros, otter_version=version("otter-grader"))
    except ValueError as err:
        raise ValueError(f"{chapter}: {err}") from None
    folder = out / chapter.stem
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "master").mkdir(parents=True)
    master_path = folder / "master" / chapter.name
    master_path.write_text(json.dumps(master, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    with chdir(folder / "master"):  # Otter Assign writes relative to the master's folder
        otter_assign(chapter.name, "..", no_pdfs=True, no_run_tests=not run_tests)
    _embed_public_tests(folder / "student" / chapter.name, folder / "student" / "tests")
    return folder


def _embed_public_tests(notebook: Path, tests: Path) -> None:
    """Put the public tests into the student notebook's Otter cell (Colab uploads the notebook alone)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    public = {p.name: p.read_text(encoding="utf-8") for p in sorted(tests.glob("*.py"))}
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and PUBLIC_TESTS_SLOT in source(c))
    cell["source"] = source(cell).replace(PUBLIC_TESTS_SLOT, "PUBLIC_TESTS = " + json.dumps(public, indent=1))
    notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def autograder_zip(folder: Path) -> Path:
    """The autograder zip that Otter Assign wrote into an assignment's folder."""
    zips = sorted((Path(folder) / "autograder").glob("*.zip"))
    if len(zips) != 1:
        raise FileNotFoundError(f"expected one autograder zip in {folder}/autograder, found {len(zips)}")
    return zips[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gramlib assignments", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter notebooks (default: chapters/*.ipynb)")
    parser.add_argument("--out", type=Path, default=Path("_build/assignments"), help="output folder")
    parser.add_argument("--config", type=Path, default=Path("_config.yml"),
                        help="the book's _config.yml, for its LaTeX macros (default: ./_config.yml)")
    parser.add_argument("--no-run-tests", dest="run_tests", action="store_false",
                        help="skip Otter Assign's grading of the solutions (faster)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(Path("chapters").glob("*.ipynb"))
    if not notebooks:
        parser.error("no notebooks given and none in chapters/")
    try:
        import otter  # noqa: F401
    except ModuleNotFoundError:
        parser.error('Otter-Grader is missing: pip install -e ".[teach]" (make assignments installs it)')
    macros = math_macros(args.config) if args.config.exists() else ""
    for path in notebooks:
        folder = write_assignment(path, args.out, run_tests=args.run_tests, macros=macros)
        print(f"wrote {folder}: student/{path.name}, autograder/{autograder_zip(folder).name}")


if __name__ == "__main__":
    main()
