"""The figures of Chapters 6 and 7, drawn on a given matplotlib axis."""

from __future__ import annotations

from matplotlib import colors as mcolors
from matplotlib import ticker as mticker
import numpy as np

from . import plotting
from .plotting import PALETTE


def plot_spectra(ax, grams, *, label=None, times=None, color=None):
    """Eigenvalues of ``K_n(t)`` against their rank ``j/N``, one line per time (darker = later)."""

    idx = range(len(grams.times)) if times is None else [int(np.argmin(np.abs(grams.times - t))) for t in times]
    idx = list(idx)
    n_dim = grams.eigenvalues.shape[1]
    rank = np.arange(1, n_dim + 1) / n_dim
    base = np.array(mcolors.to_rgb(color or "#0072B2"))
    for pos, j in enumerate(idx):
        shade = 0.25 + 0.75 * (pos + 1) / len(idx)
        ax.plot(rank, np.asarray(grams.eigenvalues[j]), color=1 - shade * (1 - base),
                label=f"{label + ', ' if label else ''}t = {grams.times[j]:.3g}")
    ax.set_yscale("symlog", linthresh=1e-6)
    return ax


def plot_shares(ax, runs, *, band=None):
    """Share of ``‖r0‖²`` (solid) and ``‖r(t)‖²`` (dashed) in the bottom-``b`` eigenvectors of ``K_n(t)``.

    ``runs`` maps a label to a :class:`LabelRun`, an :class:`AlignmentCurve` or, for a trained
    network and its run's ``K_traj(t)``, a :class:`gramlib.alignment.TrajectoryAlignment`;
    the random-vector share ``b/N`` is drawn in black with, if given, ``band =
    (mean, half_width)`` from sampled random vectors.
    """

    curve = None
    for c, (name, run) in zip(PALETTE, runs.items()):
        curve = getattr(run, "curve", run)
        ax.plot(curve.times, curve.share_r0, color=c, marker="o", ms=3, label=f"{name}: r0")
        ax.plot(curve.times, curve.share_rt, color=c, ls="--", label=f"{name}: r(t)")
    ax.axhline(curve.random_share, color="black", lw=1, label=f"random vector: b/N = {curve.random_share:.2f}")
    if band is not None:
        ax.axhspan(band[0] - band[1], band[0] + band[1], color="black", alpha=0.12, lw=0)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    return ax


def plot_cumulative(ax, runs, *, gap=False):
    """Cumulative share of ``‖r0‖²`` (or, with ``gap=True``, of ``r0ᵀK_n r0``) over the eigenvectors of
    ``K_n(T)``, ascending (Chapter 6).

    The diagonal is the expectation for a random vector (``j/N``).
    """

    for c, (name, run) in zip(PALETTE, runs.items()):
        curve = getattr(run, "curve", run)
        cum = curve.cumulative_r0[-1]
        n_dim = cum.size
        if gap:
            share = np.diff(np.concatenate([[0.0], cum]))  # c_j² / ‖r0‖²
            parts = curve.eigenvalues[-1] * share
            cum = np.cumsum(parts) / np.sum(parts)
        ax.plot(np.arange(1, n_dim + 1) / n_dim, cum, color=c, label=name)
    ax.plot([0, 1], [0, 1], color="black", lw=1, ls=":", label="random vector")
    return ax


def plot_test_losses(ax, runs):
    """Held-out test loss of the linearized model (solid) and its leave-one-out prediction (dashed) against ``t``.

    ``runs`` maps a label to a :class:`gramlib.ch6.LabelRun` (Chapter 6).
    """
    for color, (name, run) in zip(PALETTE, runs.items()):
        ax.plot(run.curve.times, run.test_loss, color=color, marker="o", ms=3, label=f"{name}: held-out")
        ax.plot(run.curve.times, run.curve.predicted_test_loss, color=color, ls="--", label=f"{name}: LOO prediction")
    ax.set_xscale("log")
    return ax


def compare_figure(runs, *, fraction, title=None, band=None):
    """Chapter 6's comparison of label runs: the bottom-``k`` shares (:func:`plot_shares`, left) and the
    held-out and predicted test losses (:func:`plot_test_losses`, right). Returns the figure."""
    fig, axes = plotting.figure(2)
    plot_shares(axes[0], runs, band=band)
    plotting.label(axes[0], "training time t", f"share in bottom {fraction:.0%} of K_n(t)", title)
    plot_test_losses(axes[1], runs)
    plotting.label(axes[1], "training time t", "test loss of the linearized model", "held-out and predicted")
    axes[1].legend(fontsize=7)
    return fig


def cumulative_figure(runs):
    """Where ``r0`` lies in ``K_n(T)`` and where the gap comes from: :func:`plot_cumulative` of ``‖r0‖²`` (left)
    and of ``r0ᵀK_n r0`` (right). Returns the figure."""
    fig, axes = plotting.figure(2)
    plot_cumulative(axes[0], runs)
    plotting.label(axes[0], "rank j / N", "cumulative share of ‖r0‖²", "where r0 lies in K_n(T)")
    plot_cumulative(axes[1], runs, gap=True)
    plotting.label(axes[1], "rank j / N", "cumulative share of r0ᵀK_n r0", "where the gap comes from")
    return fig


def plot_noise_sweep(ax, sweep):
    """Over the label-noise levels ``ν`` of a :class:`gramlib.ch6.NoiseSweep`: the share of ``‖r0‖²`` at ``T``,
    the held-out test loss and its leave-one-out prediction."""
    ax.plot(sweep.levels, sweep.share, marker="o", label="share of ‖r0‖² at T")
    ax.plot(sweep.levels, sweep.test_loss, marker="s", label="held-out test loss")
    ax.plot(sweep.levels, sweep.predicted, ls="--", label="LOO prediction")
    return ax


def plot_predicted_vs_heldout(ax, rows):
    """Predicted against held-out test loss for every run (filled: true labels, hollow: random), with the diagonal."""

    colors = dict(zip(dict.fromkeys(r["dataset"] for r in rows), plotting.PALETTE))
    for r in rows:
        ax.scatter(r["held_out"], r["predicted"], marker="o" if r["arch"] == "mlp" else "s",
                   facecolors=colors[r["dataset"]] if r["labels"] == "true" else "none",
                   edgecolors=colors[r["dataset"]], s=36)
    lo = min(min(r["held_out"], r["predicted"]) for r in rows) * 0.8
    hi = max(max(r["held_out"], r["predicted"]) for r in rows) * 1.25
    ax.plot([lo, hi], [lo, hi], color=plotting.COLORS["black"], lw=1, label="predicted = held-out")
    for name, c in colors.items():
        ax.scatter([], [], color=c, label=name)
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="gray", label="MLP (hollow: random labels)")
    ax.scatter([], [], marker="s", facecolors="gray", edgecolors="gray", label="CNN")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plotting.label(ax, "held-out test loss", "predicted test loss (trajectory LOO)",
                   "Predicted against held-out test loss, every run")


def plot_snapshot_error(ax, snaps):
    """Mean relative error against the number of kernel snapshots, per cell (dashed: one-time kernel)."""

    cells = dict.fromkeys((s["dataset"], s["arch"]) for s in snaps)
    ks = sorted({s["snapshots"] for s in snaps})
    keys = [("relative_error", "-")] + ([("one_time_relative_error", "--")] if "one_time_relative_error" in snaps[0]
                                       else [])
    for (name, arch), c in zip(cells, plotting.PALETTE):
        for key, style in keys:
            err = [np.mean([s[key] for s in snaps
                            if (s["dataset"], s["arch"], s["snapshots"]) == (name, arch, k)]) for k in ks]
            ax.plot(ks, err, marker="o", ls=style, color=c,
                    label=f"{name} {arch.upper()}" if style == "-" else None)
    ax.set_xscale("log")
    plotting.label(ax, "number of kernel snapshots M", "mean relative error",
                   "Error against the number of snapshots (dashed: one-time)")


def plot_limits(axes, rows, *, width, depth, lr, band=0.03):
    """Chapter 7's limits: the error against the retrained twins over η, width and depth.

    ``rows``: :func:`gramlib.experiments.ch7_findings.committed_limits`; ``axes``: three axes,
    for the learning rate at ``width`` and ``depth``, the width at ``depth`` and ``lr``, and the
    depth at ``width`` and ``lr``. Each shows ``(L̂ − L_twins)/L_twins`` of the two-time and
    one-time predictions, of the first-order twins read out through the network and of the twins
    re-linearized at every snapshot, with a ``±band`` strip.
    """
    kept = [r for r in rows if not r["diverged"]]
    sweeps = (("lr", "learning rate η", lambda r: r["width"] == width and r["depth"] == depth),
              ("width", "width", lambda r: r["depth"] == depth and r["lr"] == lr),
              ("depth", "depth (layers)", lambda r: r["width"] == width and r["lr"] == lr))
    for ax, (column, name, chosen) in zip(axes, sweeps):
        pts = sorted((r for r in kept if chosen(r)), key=lambda r: r[column])
        xs = [r[column] for r in pts]
        ax.axhspan(-band, band, color=PALETTE[2], alpha=0.15, lw=0)
        ax.axhline(0, color="0.3", lw=0.8)
        for key, label, style in (("two_err", "two-time", "-o"), ("one_err", "one-time", "--x"),
                                  ("readout_err", "read out through the network", ":s"),
                                  ("relinearized_err", "re-linearized at every snapshot", "-.d")):
            ax.plot(xs, [r[key] for r in pts], style, label=label)
        if column != "depth":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=None))
        plotting.label(ax, name, "error against the twins", legend=False)
    axes[0].figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8,
                          bbox_to_anchor=(0.5, 0.98))
