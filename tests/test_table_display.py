"""Every table a chapter builds is shown.

``tables.table(...)`` returns a :class:`gramlib.views.tables.Table`, which Jupyter renders through
``_repr_html_`` only when it is the value of the cell's last expression or is passed to
``display(...)``. Anywhere else in a cell the table is built and thrown away: no output in the
executed notebook, no table and no caption on the website. This static check parses every code
cell of ``chapters/*.ipynb`` that calls ``tables.table(`` and asks, for each call, that it be

- the value of the cell's last statement, an expression not silenced by a trailing ``;``, or
- inside ``display(...)``, or
- assigned to a name that the same cell later passes to ``display(...)`` or ends with.
"""

from __future__ import annotations

import ast
import io
import json
import tokenize

import pytest

from tests.book_files import chapter_notebooks

NOTEBOOKS = chapter_notebooks()


def _python(text: str) -> str:
    """The cell as Python: IPython's magics (``%time``, ``!pip``) turned into calls, as the kernel does."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with the notebook tools
        return text
    return TransformerManager().transform_cell(text)


def _silenced(text: str) -> bool:
    """True when the cell's last token is ``;``: IPython then shows no value for the last expression."""
    last = None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER):
            last = tok
    return last is not None and last.type == tokenize.OP and last.string == ";"


def _is_table_call(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "table"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "tables")


def _is_display_call(node) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "display") or \
        (isinstance(func, ast.Attribute) and func.attr == "display")


def unshown_tables(text: str) -> list[int]:
    """The line numbers (1-based, in the cell) of the ``tables.table(`` calls whose table is never shown."""
    code = _python(text)
    tree = ast.parse(code)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    last = tree.body[-1] if tree.body else None
    shown_last = isinstance(last, ast.Expr) and not _silenced(code)
    displayed = [node for node in ast.walk(tree) if _is_display_call(node)]
    # names the cell shows: passed to display(...) or the value of its last expression
    shown_names = {arg.id for call in displayed for arg in call.args if isinstance(arg, ast.Name)}
    if shown_last and isinstance(last.value, ast.Name):
        shown_names.add(last.value.id)

    missing = []
    for node in ast.walk(tree):
        if not _is_table_call(node):
            continue
        parent = parents.get(node)
        if shown_last and parent is last:
            continue  # the cell's last expression
        up = parent
        while up is not None and not _is_display_call(up):
            up = parents.get(up)
        if up is not None:
            continue  # inside display(...)
        if (isinstance(parent, ast.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name)
                and parent.targets[0].id in shown_names):
            continue  # assigned, then displayed in the same cell
        missing.append(node.lineno)
    return sorted(missing)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_table_is_displayed(path):
    cells = json.loads(path.read_text())["cells"]
    problems = []
    for i, cell in enumerate(cells):
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] != "code" or "tables.table(" not in text:
            continue
        for line in unshown_tables(text):
            problems.append(f"cell {i}, line {line}")
    assert not problems, (
        f"{path.name}: tables.table(...) is neither the cell's last expression nor inside display(...), so the "
        f"table is never shown: {', '.join(problems)}. Wrap it in display(...) or make it the last expression.")


@pytest.mark.parametrize("text, missing", [
    ("tables.table(rows, cols)", []),
    ("x = 1\ntables.table(rows, cols)  # shown\n", []),
    ("tables.table(rows, cols);", [1]),  # a trailing semicolon silences the last expression
    ("display(tables.table(rows, cols))\nprint(1)", []),
    ("if ok:\n    display(tables.table(rows, cols))\nprint(1)", []),
    ("t = tables.table(rows, cols)\nprint(1)\ndisplay(t)", []),
    ("t = tables.table(rows, cols)\nprint(1)\nt", []),
    ("tables.table(rows, cols)\nprint(1)", [1]),
    ("t = tables.table(rows, cols)\nprint(1)", [1]),
    ("x = 1\ntables.table(rows,\n             cols)\ntables.glue('a', 1)", [2]),
    ("%time x = 1\ntables.table(rows, cols)", []),
])
def test_the_check_itself(text, missing):
    assert unshown_tables(text) == missing
