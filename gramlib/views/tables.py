"""Results shown as tables: HTML in notebooks and on the website, aligned text elsewhere.

The chapters print many small tables (one row per run, per width, per time).
Fixed-width text is cut off at the page width on the website; :func:`table`
returns an object that Jupyter and Jupyter Book render as an HTML table, with a
caption and a header that says what each column means and in which unit, and
that still prints as aligned text in a terminal or a test.
"""

from __future__ import annotations

import html
import math
import numbers
from typing import Callable, NamedTuple, Sequence

import numpy as np


class Column(NamedTuple):
    """One column: the key of the value in each row, its header, and a format (spec or function)."""

    key: object
    header: str
    fmt: str | Callable = ""


def _cell(value, fmt) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(float(value)):
        return "–"
    if callable(fmt):
        return str(fmt(value))
    return format(value, fmt) if fmt else str(value)


class Table:
    """A rendered table (see :func:`table`); ``str()`` gives aligned plain text."""

    def __init__(self, header: Sequence[str], body: Sequence[Sequence[str]], caption: str | None = None):
        self.header, self.body, self.caption = list(header), [list(r) for r in body], caption

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.body)
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="gramlib-table">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{rows}</tbody></table>")

    def __str__(self) -> str:
        widths = [max(len(h), *(len(r[j]) for r in self.body)) if self.body else len(h)
                  for j, h in enumerate(self.header)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        out = ([self.caption] if self.caption else []) + [line(self.header)] + [line(r) for r in self.body]
        return "\n".join(out)

    __repr__ = __str__


def table(rows, columns, *, caption=None) -> Table:
    """A table of ``rows`` (dicts, or sequences indexed by position) with the given ``columns``.

    ``columns``: a sequence of :class:`Column` or ``(key, header, fmt)`` tuples;
    ``fmt`` is a format spec (``".4f"``, ``"+.1%"``) or a function of the value.
    NaN shows as a dash. Write units and meanings into the headers, e.g.
    ``("held_out", "held-out loss", ".4f")``.
    """
    cols = []
    for c in columns:
        if isinstance(c, str) or not isinstance(c, (tuple, list)) or not 2 <= len(c) <= 3:
            raise TypeError(f"each column must be a (key, header[, fmt]) tuple, got {c!r}")
        cols.append(Column(*c))
    if not cols:
        raise ValueError("columns must not be empty")
    body = []
    for i, row in enumerate(rows):
        cells = []
        for c in cols:
            try:
                value = row[c.key]
            except (KeyError, IndexError, TypeError) as err:
                raise ValueError(f"row {i} has no value for column {c.key!r} ({c.header})") from err
            cells.append(_cell(value, c.fmt))
        body.append(cells)
    if caption is not None and not isinstance(caption, str):
        raise TypeError(f"caption must be a string, got {type(caption).__name__}")
    return Table([c.header for c in cols], body, caption)


def glue(name: str, value):
    """Store ``value`` under ``name`` for the chapter's prose, ``{glue:text}`name:.3f```; returns ``value``.

    On the book's website MyST-NB substitutes the stored value into the text, so a
    number the prose states is the number the cell computed. Where ``myst_nb`` is
    not installed (e.g. Colab) nothing is stored; print the value in a sentence too.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        value = value.item()  # a Python number: MyST-NB formats its text, not numpy's repr
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - depends on the environment
        return value
    _glue(name, value, display=False)
    return value


def intervals(t, mask) -> str:
    """The stretches of the grid ``t`` on which ``mask`` holds, as text: ``"[0.5, 2], [8, 10]"``, or ``"none"``.

    A stretch runs from the first to the last grid point of a run of ``True`` entries (a table
    cell of Chapter 2: the records at which the contraction wins).
    """
    t = np.asarray(t, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if t.ndim != 1 or mask.shape != t.shape:
        raise ValueError(f"t and mask must be 1-D of the same length, got shapes {t.shape} and {mask.shape}")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return ", ".join(f"[{t[a]:g}, {t[b - 1]:g}]" for a, b in zip(edges[::2], edges[1::2])) or "none"
