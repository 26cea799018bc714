"""The book's figure style: one look for every chapter.

Colours are the Okabe-Ito palette (safe for the common forms of colour
blindness); figures are sized for the book's text width; every axis gets a
label. Chapters call :func:`use_book_style` once and then plain matplotlib.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

#: Okabe & Ito (2008) colour-blind-safe palette, in the order figures use it.
COLORS = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}
PALETTE = [COLORS[k] for k in ("blue", "orange", "green", "vermillion", "sky", "purple", "black")]

#: Width of a full-width figure in inches (the book's text width).
WIDTH = 7.0


def use_book_style():
    """Set matplotlib's defaults to the book's style (idempotent)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (WIDTH, WIDTH * 0.42),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "font.size": 10,
            "axes.titlesize": 10,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "lines.linewidth": 1.8,
            "axes.prop_cycle": mpl.cycler(color=PALETTE),
            "image.cmap": "viridis",
        }
    )


def figure(ncols=1, nrows=1, *, height=None, **kwargs):
    """A figure of the book's width with ``nrows x ncols`` axes."""
    use_book_style()
    height = height if height is not None else WIDTH * 0.42 * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, height), squeeze=False, **kwargs)
    fig.set_layout_engine("constrained")
    return fig, (axes[0, 0] if axes.size == 1 else axes.ravel())


def band(ax, x, mean, half_width, *, label=None, color=None, marker=None, **kwargs):
    """Plot ``mean`` with a shaded band ``mean ± half_width`` (e.g. a 95% interval)."""
    x, mean, half_width = (np.asarray(v, dtype=float) for v in (x, mean, half_width))
    (line,) = ax.plot(x, mean, label=label, color=color, marker=marker, **kwargs)
    ax.fill_between(x, mean - half_width, mean + half_width, color=line.get_color(), alpha=0.2, lw=0)
    return line


def label(ax, xlabel, ylabel, title=None, *, legend=True):
    """Label both axes (with units where there are any), add title and legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()
    return ax
