"""Interactive explorers (``gramlib.widgets.explorer``): headless machinery and the chapters' widgets.

For every notebook in ``_toc.yml`` that calls ``explorer``, the cells up to
its explorers (with exactly the earlier cells they need, see
``tests.notebook_cells``) run in a fresh kernel; each explorer must show its
default figure (what the website shows), and after moving each control one
step from its default (every choice of a drop-down), then back, the callback
(the chapter's draw function: its gramlib computation and the figure) must
take under 0.5 s of the kernel's CPU time. CPU time, not wall time: on a
shared machine the wall time of the same update varies several-fold with the
load. The whole update, with matplotlib's rendering of the inline PNG, is
printed beside it (``pytest -s``); rendering is matplotlib's cost, the same
for every figure of its size.
"""

import json
import re
import time

import ipywidgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from gramlib import widgets  # noqa: E402
from tests import notebook_cells as nc  # noqa: E402
from tests.book_files import toc_notebooks  # noqa: E402

LIVE = 0.5  # seconds per update that still feels live
EXPLORER_CALL = re.compile(r"\bexplorer\s*\(")
NOTEBOOKS = [p for p in toc_notebooks()
             if any(EXPLORER_CALL.search(nc.source(c)) for c in nc.code_cells(nc.read(p)))]


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, **values):
        self.calls.append(values)
        plt.close("all")  # the inline backend closes shown figures; Agg does not
        fig, ax = plt.subplots()
        ax.plot([0, values.get("n", 1)], [0, 1])
        return fig


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_explorer_draws_the_default_figure_once(capsys):
    draw = Recorder()
    controls = widgets.explorer(draw, n=(2, 64, 2, 16), noise=(0.0, 1.0, 0.1, 0.3), kind=["mlp", "cnn"])
    assert draw.calls == [{"n": 16, "noise": 0.3, "kind": "mlp"}]
    assert isinstance(controls["n"], ipywidgets.IntSlider)
    assert isinstance(controls["noise"], ipywidgets.FloatSlider)
    assert isinstance(controls["kind"], ipywidgets.Dropdown)
    assert (controls["n"].min, controls["n"].max, controls["n"].step) == (2, 64, 2)
    assert not any(w.continuous_update for w in (controls["n"], controls["noise"]))


def test_each_change_redraws_once_with_all_current_values():
    draw = Recorder()
    controls = widgets.explorer(draw, n=(2, 64, 2, 16), kind=["mlp", "cnn"])
    controls["n"].value = 32
    controls["kind"].value = "cnn"
    controls["kind"].value = "cnn"  # unchanged: no redraw
    assert draw.calls[1:] == [{"n": 32, "kind": "mlp"}, {"n": 32, "kind": "cnn"}]


def test_a_list_of_four_numbers_is_four_choices_not_a_slider():
    draw = Recorder()
    controls = widgets.explorer(draw, n=[16, 64, 256, 1024])
    assert isinstance(controls["n"], ipywidgets.Dropdown) and controls["n"].options == (16, 64, 256, 1024)
    assert draw.calls == [{"n": 16}]


@pytest.mark.parametrize("spec", ["abc", [], 5, None, (1, 2, 3), (0, 10, 1, 11), (0, 10, 0, 5), (0, 1, "x", 2)])
def test_a_bad_control_is_refused(spec):
    with pytest.raises(ValueError, match="control 'n'"):
        widgets.explorer(Recorder(), n=spec)


def test_the_machinery_adds_little_to_a_redraw():
    draw = Recorder()
    controls = widgets.explorer(draw, n=(2, 64, 2, 16))
    start = time.perf_counter()
    for value in range(18, 58, 2):
        controls["n"].value = value
    per_update = (time.perf_counter() - start) / 20
    assert len(draw.calls) == 21
    assert per_update < LIVE / 5, f"{per_update:.3f} s per update for a one-line figure"


# Run inside the chapter's kernel: record every explorer and time its draw function,
# then move each control one step and back, timing the draw and the whole update.
RECORD = """
import time as _time, gramlib.views.widgets as _gw
_EXPLORERS, _explorer = [], _gw.explorer
def _recording(draw, **controls):
    _times = []
    def _timed(**values):
        _t, _c = _time.perf_counter(), _time.process_time()
        _fig = draw(**values)
        _times.append((_time.perf_counter() - _t, _time.process_time() - _c))
        return _fig
    _controls = _explorer(_timed, **controls)
    _EXPLORERS.append((_times, _controls))
    return _controls
_gw.explorer = _recording
"""
TIME_UPDATES = """
import json as _json, time as _time, matplotlib.pyplot as _plt
_report = []
for _k, (_times, _controls) in enumerate(_EXPLORERS):
    _report.append({"explorer": _k, "control": "(default figure)", "draw_cpu": _times[0][1],
                    "draw_wall": _times[0][0], "cpu": float("nan"), "wall": float("nan")})
    for _name, _w in _controls.items():
        _default = _w.value
        if hasattr(_w, "options"):
            _steps = [v for v in _w.options if v != _default] + [_default]
        else:
            _next = _default + _w.step if _default + _w.step <= _w.max else _default - _w.step
            _steps = [_next, _default]
        for _v in _steps:
            _t, _c = _time.perf_counter(), _time.process_time()
            _w.value = _v
            _report.append({"explorer": _k, "control": f"{_name}={_v!r}", "draw_cpu": _times[-1][1],
                            "draw_wall": _times[-1][0], "cpu": _time.process_time() - _c,
                            "wall": _time.perf_counter() - _t, "took": _w.value == _v})
        _plt.close("all")
print("REPORT" + _json.dumps(_report))
"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_explorers_show_a_figure_and_update_live(path):
    from gramlib.views.student import is_solution

    cells = [c for c in nc.code_cells(nc.read(path)) if not is_solution(c)]
    codes = [nc.source(c) for c in cells]
    targets = [k for k, code in enumerate(codes) if EXPLORER_CALL.search(code)]
    order = nc.dependency_slice(codes, targets)
    run = [cells[0], {"source": RECORD}] + [cells[k] for k in order[1:]] + [{"source": TIME_UPDATES}]
    executed, seconds = nc.execute(run, cwd=path.parent)
    print(f"{path.name}: ran {len(order)} of {len(cells)} code cells in {seconds:.1f} s")
    shown = executed.cells[2:-1]
    for j, (k, cell) in enumerate(zip(order[1:], shown)):
        if k in targets:  # the default figure: in the explorer's cell, or (static=False) in the cell before it
            near = [cell] if "static=False" not in codes[k] else [cell] + shown[max(0, j - 1):j]
            images = [o for c in near for o in c.outputs if "image/png" in o.get("data", {})]
            assert images, f"{path.name}: the explorer cell {codes[k][:60]!r} shows no figure"
    report = json.loads(nc.stream_text(executed.cells[-1]).split("REPORT", 1)[1])
    assert report, f"{path.name}: no explorer was created"
    for r in report:
        print(f"  explorer {r['explorer']} {r['control']}: callback {r['draw_cpu']:.3f} s CPU "
              f"({r['draw_wall']:.3f} s wall); whole update with PNG rendering {r['cpu']:.3f} s CPU ({r['wall']:.3f} s wall)")
    refused = [r["control"] for r in report if r.get("took") is False]
    assert not refused, f"{path.name}: controls that did not take these values: {refused}"
    slow = [r for r in report if r["draw_cpu"] > LIVE]
    assert not slow, f"{path.name}: callbacks that take more than {LIVE} s of CPU time: {slow}"


def test_at_least_three_chapters_have_explorers():
    assert len(NOTEBOOKS) >= 3, f"explorers in {[p.name for p in NOTEBOOKS]}; the book asks for three chapters"


def test_a_non_static_explorer_draws_inside_the_widget_only():
    draw = Recorder()
    controls = widgets.explorer(draw, static=False, n=(2, 64, 2, 16))
    assert draw.calls == [{"n": 16}] and set(controls) == {"n"}
