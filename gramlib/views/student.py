"""Student copies of the chapter notebooks: the exercises without their solutions.

A solution is either a ``{solution}`` dropdown in a markdown cell (prose
solutions; it may share its cell with the exercise) or, for solutions with
code, the cells from a ``{solution-start}`` markdown cell to the matching
``{solution-end}`` cell, every one of them tagged ``solution``. A student copy
is the notebook without the tagged cells and without the ``{solution}``
blocks, all outputs cleared; the exercise skeletons and the self-check cells
(``gramlib.views.exercises.chNN``) stay, so a student fills in the skeleton and runs
the check.

Command line (``make student`` runs it on every notebook of the book)::

    python -m gramlib student --out _build/student chapters/01_*.ipynb ...

Each copy keeps its chapter's file name.
"""

from __future__ import annotations

import argparse
import copy as _copy
import json
import re
from pathlib import Path

SOLUTION_TAG = "solution"
# A gated-solution directive, MyST backtick or colon fence: ```{solution-start} / :::{solution-end}
_GATED_DIRECTIVE = re.compile(r"^\s*(`{3,}|:{3,})\s*\{solution-(start|end)\}", re.MULTILINE)
_SOLUTION_OPEN = re.compile(r"^[ \t]*(`{3,}|:{3,})[ \t]*\{solution\}")


def source(cell) -> str:
    """A cell's source as one string (notebook JSON may store it as a list of lines)."""
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def is_solution(cell) -> bool:
    """Whether a cell belongs to a solution (it carries the ``solution`` tag)."""
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def untagged_solutions(nb: dict) -> list[int]:
    """Indices of untagged cells holding ``{solution-start}`` or ``{solution-end}``."""
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "markdown" and not is_solution(c) and _GATED_DIRECTIVE.search(source(c))]


def strip_solutions(text: str) -> str:
    """Markdown without its ``{solution}`` blocks (from the opening fence to its closing fence).

    Raises ``ValueError`` for a block that is never closed.
    """
    lines, kept, i = text.split("\n"), [], 0
    while i < len(lines):
        opening = _SOLUTION_OPEN.match(lines[i])
        if not opening:
            kept.append(lines[i])
            i += 1
            continue
        fence = opening.group(1)
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            raise ValueError(f"a {{solution}} block opened with {fence} is never closed")
        i = end + 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")


def student_copy(nb: dict) -> dict:
    """The notebook (as JSON) without its solutions, outputs and execution counts cleared.

    Raises ``ValueError`` when a ``{solution-start}``/``{solution-end}`` cell is
    not tagged: its solution's code cells would then stay in the copy.
    """
    leaks = untagged_solutions(nb)
    if leaks:
        raise ValueError(f"cells {leaks} start or end a solution but are not tagged {SOLUTION_TAG!r}")
    copy = _copy.deepcopy(nb)
    cells = []
    for cell in copy["cells"]:
        if is_solution(cell):
            continue
        if cell["cell_type"] == "markdown":
            text = strip_solutions(source(cell))
            if text != source(cell):
                if not text.strip():
                    continue
                cell["source"] = text
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    copy["cells"] = cells
    return copy


def write_student_copies(notebooks, out) -> list[Path]:
    """Write the student copy of each notebook to ``out``, keeping file names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, notebooks):
        try:
            copy = student_copy(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        target = out / path.name
        target.write_text(json.dumps(copy, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gramlib student", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="chapter notebooks (default: chapters/*.ipynb)")
    parser.add_argument("--out", type=Path, default=Path("_build/student"), help="output folder")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(Path("chapters").glob("*.ipynb"))
    if not notebooks:
        parser.error("no notebooks given and none in chapters/")
    for target in write_student_copies(notebooks, args.out):
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
