"""Typed-in numbers in chapter prose (issue: every number a chapter states comes from code).

:func:`typed_numbers` strips from a markdown cell everything that is not prose
(math, code, roles such as ``{glue:text}`` or ``{cite}``, link targets, labels,
directive options) and returns the decimal numbers, percentages and
scientific-notation numbers left in the text. A number that a chapter states as
a result must come from the computation: a ``{glue:text}`` role, or a sentence
printed by the code cell. Numbers that are definitions or settings (``η = 0.5``)
belong in math (``$\\eta = 0.5$``), which is not scanned, or in the reviewed
allow-list of the chapter, ``tests/prose_numbers/<chapter>.txt`` (one phrase per
line, matched literally in the stripped text).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOW_DIR = Path(__file__).resolve().parent / "prose_numbers"
#: Phrases allowed in every chapter: the confidence level of every interval is a setting.
GLOBAL_ALLOWED = ("95%",)

_FENCE = re.compile(r"^(`{3,}|:{3,})\s*(\{[^}]*\})?.*?$\n(.*?)^\1\s*$", re.M | re.S)
_SUPERSCRIPT = "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?\s?%"                      # percentages
                     r"|(?:\d+(?:\.\d+)?\s?[×x]\s?)?10[" + _SUPERSCRIPT + r"]+"  # 8×10³, 10⁻⁸
                     r"|\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)(?![\w])")  # 0.35, 1e-8


def _strip(text: str) -> str:
    def fence(m):  # keep the prose inside directives, drop code blocks and directive options
        if m.group(2) is None:
            return "\n"
        body = re.sub(r"^:[\w-]+:.*$", "", m.group(3), flags=re.M)
        return "\n" + _strip(body) + "\n"

    text = _FENCE.sub(fence, text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", " ", text)
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", text)           # roles: {cite}`…`, {glue:text}`…`, {eq}`…`
    text = re.sub(r"`[^`\n]*`", " ", text)                      # inline code
    text = re.sub(r"\]\([^)]*\)", "]", text)                     # link targets
    text = re.sub(r"^\([\w-]+\)=\s*$", " ", text, flags=re.M)   # labels
    return text


def typed_numbers(markdown: str, allowed=()) -> list[str]:
    """The typed-in numbers of one markdown text, after removing the ``allowed`` phrases."""
    text = _strip(markdown)
    for phrase in (*GLOBAL_ALLOWED, *allowed):
        text = text.replace(phrase, " ")
    return [m.group(1) for m in _NUMBER.finditer(text)]


def allowed_phrases(stem: str) -> list[str]:
    path = ALLOW_DIR / f"{stem}.txt"
    if not path.exists():
        return []
    lines = [line.rstrip("\n") for line in path.read_text().splitlines()]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def notebook_report(path: Path) -> list[tuple[int, str]]:
    """``(cell index, number)`` for every typed-in number of a chapter notebook."""
    cells = json.loads(Path(path).read_text())["cells"]
    allowed = allowed_phrases(Path(path).stem)
    out = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            out += [(i, n) for n in typed_numbers("".join(cell["source"]), allowed)]
    return out


if __name__ == "__main__":
    for nb in sorted((ROOT / "chapters").glob("*.ipynb")):
        hits = notebook_report(nb)
        print(f"{nb.name}: {len(hits)}", hits[:40])
