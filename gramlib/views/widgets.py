"""Interactive explorers: sliders in Jupyter and Colab, a default figure on the website.

``explorer(draw, n=(2, 64, 2, 16), ...)`` first calls ``draw`` with the
default values, so the static website shows that figure, then (in a live
kernel with ipywidgets) shows sliders that redraw it. Each control is a
tuple ``(min, max, step, default)`` for a slider, or a list of choices for a
drop-down (the first is the default): ``width=[16, 64, 256, 1024]`` is four
choices, ``width=(16, 1024, 16, 64)`` a slider.
"""

from __future__ import annotations

import ipywidgets
import matplotlib.pyplot as plt
from IPython.display import display


def _control(name, spec):
    if isinstance(spec, tuple) and len(spec) == 4 and all(isinstance(v, (int, float)) for v in spec):
        lo, hi, step, default = spec
        if not (lo <= default <= hi and step > 0):
            raise ValueError(f"control {name!r}: need min <= default <= max and step > 0, got {spec!r}")
        cls = ipywidgets.IntSlider if all(isinstance(v, int) for v in spec) else ipywidgets.FloatSlider
        return cls(min=lo, max=hi, step=step, value=default, description=name, continuous_update=False)
    if isinstance(spec, list) and spec:
        return ipywidgets.Dropdown(options=spec, value=spec[0], description=name)
    raise ValueError(f"control {name!r} must be a tuple (min, max, step, default) or a list of choices, got {spec!r}")


def explorer(draw, *, static=True, **controls):
    """Draw the default figure, then attach sliders that call ``draw(**values)`` again.

    ``static=True``: the default figure is a cell output of its own, the one the website
    shows. ``static=False``: it is drawn inside the widget only, for a chapter whose cell
    before the explorer shows the default figure as a numbered, captioned figure (a
    caption applies to every output of its cell, so the widgets must not share it).
    """
    widgets = {name: _control(name, spec) for name, spec in controls.items()}
    defaults = {name: w.value for name, w in widgets.items()}
    out = ipywidgets.Output()

    def redraw(_change=None):
        with out:
            out.clear_output(wait=True)
            draw(**{name: w.value for name, w in widgets.items()})
            plt.show()

    if static:
        draw(**defaults)  # the static figure the website shows
        plt.show()
    else:
        with out:
            draw(**defaults)
            plt.show()
    for w in widgets.values():  # redraw only on change: no duplicate figure at start
        w.observe(redraw, names="value")
    ui = ipywidgets.HBox(list(widgets.values()), layout=ipywidgets.Layout(flex_flow="row wrap"))
    display(ui, out)
    return widgets
