"""gramlib.tables: HTML and text rendering of result tables."""

import math

import numpy as np
import pytest

from gramlib import tables


def test_table_renders_html_and_text():
    rows = [{"run": "MLP <true>", "loss": 0.123456, "err": 0.05}, {"run": "CNN", "loss": math.nan, "err": -0.1}]
    t = tables.table(rows, [("run", "run"), ("loss", "held-out loss", ".4f"), ("err", "signed error", "+.1%")],
                     caption="Two runs")
    page = t._repr_html_()
    assert "<caption>Two runs</caption>" in page and "<th>held-out loss</th>" in page
    assert "MLP &lt;true&gt;" in page and "<td>0.1235</td>" in page and "<td>–</td>" in page
    assert "<td>+5.0%</td>" in page and "<td>-10.0%</td>" in page
    text = str(t).splitlines()
    assert text[0] == "Two runs" and text[1].split()[-2:] == ["signed", "error"] and len(text) == 4
    assert len({len(line) for line in text[1:]}) == 1          # aligned columns


def test_sequence_rows_and_callable_formats():
    t = tables.table([(1, 2.0), (3, 4.0)], [(0, "n"), (1, "twice", lambda v: f"{2 * v:g}")])
    assert t.body == [["1", "4"], ["3", "8"]]


def test_bad_input():
    with pytest.raises(ValueError, match="row 1 has no value for column 'b'"):
        tables.table([{"a": 1, "b": 2}, {"a": 3}], [("a", "A"), ("b", "B")])
    with pytest.raises(TypeError, match="column"):
        tables.table([{"a": 1}], ["a"])
    with pytest.raises(ValueError, match="empty"):
        tables.table([{"a": 1}], [])
    with pytest.raises(TypeError, match="caption"):
        tables.table([{"a": 1}], [("a", "A")], caption=3)


def test_glue_returns_the_value_and_checks_the_name():
    assert tables.glue("ch00-value", 0.5) == 0.5
    with pytest.raises(TypeError, match="name"):
        tables.glue("", 1.0)


def test_glue_stores_python_numbers():
    import numpy as np

    value = tables.glue("ch00-numpy", np.float64(0.25))
    assert type(value) is float and value == 0.25


def test_intervals_of_a_mask():
    t = np.arange(10.0)
    mask = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1], bool)
    assert tables.intervals(t, mask) == "[1, 2], [5, 7], [9, 9]"
    assert tables.intervals(t, np.ones(10, bool)) == "[0, 9]"
    assert tables.intervals(t, np.zeros(10, bool)) == "none"
    with pytest.raises(ValueError, match="same length"):
        tables.intervals(t, mask[:3])
