"""The exercises of a chapter notebook as data: prompt, grade, hint, skeletons, self-checks and solutions.

:func:`chapter_exercises` reads every ``{exercise}`` of a chapter (MyST, with sphinx-exercise's
``{solution}`` and gated ``{solution-start}`` blocks) and what belongs to it in the cells that follow;
:mod:`gramlib.views.assignments` turns them into Otter-Grader questions. Nothing of an exercise is
written twice: the chapter is the only copy.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from .student import is_solution, source

#: Points of an exercise from its grade: ★ = 1, ★★ = 2, ★★★ = 3.
POINTS_PER_STAR = 1

_OPEN = re.compile(r"^[ \t]*(`{3,}|:{3,})[ \t]*\{([\w:-]+)\}[ \t]*(.*)$")
_OPTION = re.compile(r"^[ \t]*:([\w-]+):[ \t]*(.*)$")
# ``gramlib.views.exercises.ch01.check_gap(my_gap)`` or ``ch01.check_gap(my_gap)``
_CHECK = re.compile(r"(?:gramlib\.views\.exercises\.)?\b(\w+)\.(check_\w+)\s*\(\s*([^)]*?)\s*\)")


@dataclass
class Check:
    """A self-check call of the chapter: ``gramlib.views.exercises.<module>.<function>(<answer>)``."""

    module: str
    function: str
    answer: str


@dataclass
class Exercise:
    """One ``{exercise}`` of a chapter and what belongs to it there."""

    label: str
    title: str
    stars: int
    prompt: str  # the exercise's text (MyST)
    hint: str = ""
    skeletons: list = field(default_factory=list)  # untagged code cells for the answer
    checks: list = field(default_factory=list)  # Check
    solution_text: list = field(default_factory=list)  # markdown of the solution
    solution_code: list = field(default_factory=list)  # code cells of the solution

    @property
    def points(self) -> int:
        return POINTS_PER_STAR * self.stars

    @property
    def autograded(self) -> bool:
        return bool(self.checks)


def _blocks(text: str):
    """The top-level directive blocks of a markdown text: ``(name, argument, options, body)``."""
    lines, i = text.split("\n"), 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, name, argument = opening.groups()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            raise ValueError(f"a {{{name}}} block opened with {fence} is never closed")
        options, j = {}, i + 1
        while j < end and _OPTION.match(lines[j]):
            key, value = _OPTION.match(lines[j]).groups()
            options[key] = value.strip()
            j += 1
        yield name, argument.strip(), options, "\n".join(lines[j:end]).strip("\n")
        i = end + 1


def _without_directives(text: str) -> str:
    """Markdown of a gated solution's cell without its ``{solution-start}``/``{solution-end}`` fences."""
    lines, kept, i = text.split("\n"), [], 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if opening and opening.group(2) in ("solution-start", "solution-end"):
            fence = opening.group(1)
            closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
            i = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), len(lines) - 1) + 1
            continue
        kept.append(lines[i])
        i += 1
    return "\n".join(kept).strip()


def _stars(title: str) -> tuple[int, str]:
    match = re.match(r"^(★+)\s*(.*)$", title)
    if not match:
        raise ValueError(f"exercise title {title!r} does not start with its grade (★, ★★ or ★★★)")
    return len(match.group(1)), match.group(2)


def chapter_exercises(nb: dict) -> list[Exercise]:
    """The exercises of a chapter notebook (as JSON), with their hints, skeletons, checks and solutions.

    Raises ``ValueError`` for an exercise without a label or grade, a solution or hint
    of no known exercise, or a self-check whose answer is not a plain name.
    """
    found: dict[str, Exercise] = {}
    current = gated = None
    for cell in nb["cells"]:
        text = source(cell)
        if cell["cell_type"] == "markdown":
            if is_solution(cell):
                for name, argument, _, _ in _blocks(text):
                    if name == "solution-start":
                        gated = found.get(argument)
                        if gated is None:
                            raise ValueError(f"a solution of unknown exercise {argument!r}")
                body = _without_directives(text)
                if gated is None:
                    raise ValueError(f"a cell tagged 'solution' outside a {{solution-start}} block: {text[:60]!r}")
                if body:
                    gated.solution_text.append(body)
                if any(name == "solution-end" for name, *_ in _blocks(text)):
                    gated = None
                continue
            blocks = list(_blocks(text))
            if not blocks and text.strip():
                current = None  # prose after the exercises (summary, notes) ends the last one
            for name, argument, options, body in blocks:
                if name == "exercise":
                    if "label" not in options:
                        raise ValueError(f"exercise {argument!r} has no :label:")
                    stars, title = _stars(argument)
                    current = found[options["label"]] = Exercise(options["label"], title, stars, body)
                elif name == "solution":
                    if argument not in found:
                        raise ValueError(f"a solution of unknown exercise {argument!r}")
                    found[argument].solution_text.append(body)
                elif name == "admonition" and argument.lower().startswith("hint"):
                    if current is None:
                        raise ValueError("a hint outside an exercise")
                    current.hint = body
        elif cell["cell_type"] == "code":
            if is_solution(cell):
                if gated is None:
                    raise ValueError("a code cell tagged 'solution' outside a {solution-start} block")
                gated.solution_code.append(text)
            elif current is not None:
                calls = _CHECK.findall(text)
                if not calls:
                    current.skeletons.append(text)
                for module, function, answer in calls:
                    if not answer.isidentifier():
                        raise ValueError(f"{module}.{function}({answer}): the answer must be a plain name")
                    current.checks.append(Check(module, function, answer))
    return list(found.values())


def definitions(code: str) -> str:
    """The imports, functions and classes of a cell (in its own words), without the other statements."""
    lines = code.split("\n")
    kept = []
    for node in ast.parse(code).body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            kept.append("\n".join(lines[start - 1:node.end_lineno]))
    return "\n\n\n".join(kept)


def install_repository(nb: dict) -> str:
    """The repository that the chapter's install cell clones (its ``REPO = "..."``)."""
    match = re.search(r'REPO\s*=\s*"([^"]+)"', source(next(c for c in nb["cells"] if c["cell_type"] == "code")))
    if not match:
        raise ValueError("the first code cell of the chapter is not its install cell (no REPO = \"...\")")
    return match.group(1)
