"""Chapter 6's experiments: linearized networks on real data and their alignment.

The settings of the chapter (:data:`SCALES`), the linearized networks of each data set
(:func:`chapter_settings`), kernel training on true, random and noisy labels
(:func:`label_run`, :func:`noise_sweep`) beside the real network (:func:`network_losses`),
the sampling error of the two test-loss estimates (:func:`sampling_error`), and
:func:`reproduce_ch6`, which regenerates the chapter's tables (CSV) and figures (PNG);
``python -m gramlib reproduce ch6`` calls it. The chapter calls the same functions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from ..kernels.ntk import empirical_ntk
from ..mathematics.alignment import alignment_curve, AlignmentCurve, effective_grams, random_share_samples
from ..mathematics.effective_gram import effective_gram, loo_residuals
from ..mathematics.kernel_flow import kernel_test_residuals
from ..runs import data
from ..runs.train import gradient_descent, recommended_loop
from ..views.figures import compare_figure, cumulative_figure, plot_noise_sweep, plot_spectra
from ..views.plotting import figure, label
from . import tasks
from .results import in_float64, provenance, write_csv

@dataclasses.dataclass(frozen=True)
class Ch6Scale:
    """The sizes of Chapter 6's experiments at one scale (:data:`SCALES`, :func:`scale_config`).

    Each data set of :func:`chapter_settings` has ``n_train`` training and ``n_test`` held-out
    samples; its networks (:func:`gramlib.experiments.tasks.architecture`) are an MLP of ``width``
    and a CNN of ``channels`` filters. Gradient flow runs to ``T = lr · steps`` (the real networks
    take ``steps`` steps of size ``lr``), seen at ``times`` log-spaced times (:func:`flow_times`).
    """

    n_train: int
    n_test: int
    width: int
    channels: int
    steps: int
    lr: float
    times: int  #: how many times ``t`` of :func:`flow_times` (the last is ``T``)
    noise: tuple[float, ...]  #: the fractions of flipped labels of :func:`noise_sweep`
    fraction: float  #: the bottom share ``b/N`` of eigenvectors the alignment counts
    samples: int  #: random vectors sampled for the random-direction share (:func:`summary_row`)
    batch_size: int | None  #: rows per batch of :func:`gramlib.ntk.empirical_ntk` (``None``: all at once)


#: The sizes of the chapter's experiments, one :class:`Ch6Scale` per scale. ``"default"`` runs on a
#: laptop CPU in about a minute; ``"paper"`` is for a GPU (Colab); ``"smoke"`` is a seconds-long run
#: for the tests.
SCALES = {
    "default": Ch6Scale(n_train=200, n_test=500, width=512, channels=16, steps=3000, lr=1.0,
                        times=5, noise=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
                        fraction=0.1, samples=2000, batch_size=250),
    "paper": Ch6Scale(n_train=1000, n_test=2000, width=2048, channels=64, steps=10000, lr=1.0,
                      times=16, noise=tuple(float(v) for v in np.round(np.linspace(0.0, 0.5, 21), 3)),
                      fraction=0.1, samples=10000, batch_size=250),
    "smoke": Ch6Scale(n_train=40, n_test=60, width=32, channels=4, steps=200, lr=1.0, times=3,
                      noise=(0.0, 0.5), fraction=0.1, samples=200, batch_size=None),
}


def scale_config(scale="default"):
    """The :class:`Ch6Scale` of :data:`SCALES` for ``scale`` (``"default"``, ``"paper"`` or ``"smoke"``)."""
    return tasks.scale_config(SCALES, scale)


class Setting(NamedTuple):
    """A network linearized at its initialization on a dataset (Chapter 6).

    ``theta`` is ``Θ(X, X)`` ``(n, n)``, ``theta_test`` is ``Θ(X*, X)``
    ``(m, n)``, ``f0_train``/``f0_test`` the initial outputs; all float64.
    """

    name: str
    model: object
    params: object
    dataset: object
    theta: np.ndarray
    theta_test: np.ndarray
    f0_train: np.ndarray
    f0_test: np.ndarray


def linearized_setting(name, model, dataset, *, key, batch_size=None):
    """Initialize ``model`` from ``key`` and compute its empirical NTKs on ``dataset`` (binary targets).

    Uses :func:`gramlib.ntk.empirical_ntk` (train × train and test × train).
    The model should be built with ``dtype=jnp.float64`` for the theory checks.
    """

    if np.asarray(dataset.y_train).ndim != 1:
        raise ValueError("dataset must have binary ±1 targets (one output) for Chapter 6's experiments")
    params = model.init(key)
    x, x_test = jnp.asarray(dataset.x_train), jnp.asarray(dataset.x_test)
    theta = np.asarray(empirical_ntk(model.apply, params, x, batch_size=batch_size), dtype=float)
    cross = np.asarray(empirical_ntk(model.apply, params, x_test, x, batch_size=batch_size), dtype=float)
    f0 = np.asarray(model.apply(params, x), dtype=float)
    f0_test = np.asarray(model.apply(params, x_test), dtype=float)
    return Setting(name, model, params, dataset, 0.5 * (theta + theta.T), cross, f0, f0_test)


class LabelRun(NamedTuple):
    """Kernel training of a :class:`Setting` on one set of labels.

    ``curve`` is the :class:`AlignmentCurve`; ``test_loss`` the held-out loss
    ``(1/2m) ‖r*(t)‖²`` of the linearized model at the same times; ``r0`` the initial
    residual ``f0(X) − y``.
    """

    curve: AlignmentCurve
    test_loss: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    r0: np.ndarray


def label_run(setting, grams, y_train, y_test, *, fraction=0.1):
    """Train the linearized model of ``setting`` on targets ``(y_train, y_test)`` by gradient flow.

    ``grams = effective_grams(setting.theta, t)`` fixes the times and is
    shared by every set of labels on the same kernel. Returns a
    :class:`LabelRun`: alignment with ``K_n(t)`` and the held-out test loss of
    :func:`gramlib.kernel_flow.kernel_test_residuals` at the same times.
    """
    r0 = setting.f0_train - _checks.array(y_train, "y_train", shape=setting.f0_train.shape)
    r0_test = setting.f0_test - _checks.array(y_test, "y_test", shape=setting.f0_test.shape)
    curve = alignment_curve(setting.theta, r0, fraction=fraction, grams=grams)
    rt = np.atleast_2d(np.asarray(kernel_test_residuals(setting.theta, setting.theta_test, r0, r0_test,
                                                            grams.times, lr=grams.lr)))
    return LabelRun(curve, 0.5 * np.mean(rt**2, axis=-1), np.asarray(y_train), np.asarray(y_test), r0)


def network_losses(setting, y_train, y_test, *, lr, steps, progress=False):
    """Train the real network of ``setting`` (float32, from the same initialization) by gradient descent.

    Uses :func:`gramlib.train.gradient_descent` for ``steps`` steps of size
    ``lr`` (flow time ``t = lr · steps``). Returns ``(train_loss, test_loss)``,
    both ``(1/2m) Σ (f − y)²`` at the end of training.
    """

    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), setting.params)
    loop = recommended_loop(setting.model.apply, params, setting.dataset.x_train)  # per_step: a CNN on the CPU
    run = gradient_descent(setting.model.apply, params, setting.dataset.x_train, y_train,
                           lr=lr, steps=steps, loop=loop, progress=progress)
    f_test = np.asarray(setting.model.apply(run.params, jnp.asarray(setting.dataset.x_test, jnp.float32)), float)
    return float(run.train_loss[-1]), float(0.5 * np.mean((f_test - np.asarray(y_test)) ** 2))


def flow_times(scale_cfg):
    """The chapter's time grid: ``scale_cfg.times`` log-spaced flow times from 1 to ``T = lr · steps``.

    ``scale_cfg``: a :class:`Ch6Scale`."""
    total = scale_cfg.lr * scale_cfg.steps
    return np.logspace(0.0, np.log10(total), scale_cfg.times)


#: The data sets of Chapter 6 (names of :func:`gramlib.experiments.tasks.dataset`) and their networks.
NETWORKS = {"digits": ("mlp", "cnn"), "mnist1d": ("mlp",), "teacher": ("mlp",)}


def chapter_settings(scale_cfg, *, key, datasets=("digits", "mnist1d"), progress=True):
    """The chapter's linearized networks: an MLP and a CNN on the digits, an MLP on each other dataset.

    Binary parity targets, ``n_train``/``n_test`` from ``scale_cfg``
    (a :class:`Ch6Scale`, :func:`scale_config`); 2-layer tanh MLP of width ``width`` and a 3-layer
    tanh CNN with ``channels`` filters (:func:`gramlib.experiments.tasks.architecture`),
    NTK parameterization, float64. ``datasets`` are names in :data:`NETWORKS`
    (``"digits"``, ``"mnist1d"``, ``"teacher"``). Returns ``{"MLP / digits": Setting, …}``.
    """
    unknown = [name for name in datasets if name not in NETWORKS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; use names of {sorted(NETWORKS)}")
    jobs = []
    for j, name in enumerate(datasets):
        ds, shape = tasks.dataset(name, scale_cfg.n_train, scale_cfg.n_test, key=jax.random.fold_in(key, j))
        jobs += [(f"{arch.upper()} / {tasks.LABELS[name]}", tasks.architecture(arch, shape, 1, scale_cfg, jnp.float64),
                  ds) for arch in NETWORKS[name]]
    out = {}
    for j, (name, model, ds) in enumerate(tqdm(jobs, desc="empirical NTKs", disable=not progress, leave=False)):
        out[name] = linearized_setting(name, model, ds, key=jax.random.fold_in(key, 100 + j),
                                       batch_size=scale_cfg.batch_size)
    return out


class NoiseSweep(NamedTuple):
    """Kernel training of one :class:`Setting` with a fraction ``ν`` of flipped labels, for each ``ν`` in ``levels``.

    ``runs[ν]`` is the :class:`LabelRun`; ``share``, ``test_loss`` and ``predicted`` are, per
    level, the share of ``‖r0‖²`` in the bottom ``k`` of ``K_n(T)``, the held-out loss of the
    linearized model and its leave-one-out prediction at the final time ``T``.
    """

    levels: np.ndarray
    runs: dict
    share: np.ndarray
    test_loss: np.ndarray
    predicted: np.ndarray


def noise_sweep(setting, grams, levels, *, key_train, key_test, fraction=0.1):
    """:func:`label_run` on labels with each fraction in ``levels`` flipped (:func:`gramlib.data.noisy_labels`).

    The training and held-out labels are flipped with ``key_train`` and ``key_test`` (the
    same keys at every level). Returns a :class:`NoiseSweep` (levels rounded to 3 decimals,
    ascending).
    """
    runs = {}
    for nu in levels:
        y_tr = data.noisy_labels(setting.dataset.y_train, nu, key=key_train)
        y_te = data.noisy_labels(setting.dataset.y_test, nu, key=key_test)
        runs[round(float(nu), 3)] = label_run(setting, grams, y_tr, y_te, fraction=fraction)
    order = np.array(sorted(runs))
    return NoiseSweep(order, runs, np.array([runs[nu].curve.share_r0[-1] for nu in order]),
                      np.array([runs[nu].test_loss[-1] for nu in order]),
                      np.array([runs[nu].curve.predicted_test_loss[-1] for nu in order]))


def sampling_error(setting, run, t):
    """The leave-one-out prediction and the held-out loss of ``run`` at time ``t``, with two standard errors each.

    Both are means of per-sample losses, ``(1/2n) Σ_i ρ_i(t)²`` over the ``n`` training
    samples (:func:`gramlib.effective_gram.loo_residuals`) and ``(1/2m) Σ_j r*_j(t)²`` over
    the ``m`` held-out samples (:func:`gramlib.kernel_flow.kernel_test_residuals`);
    ``se_*`` is twice the standard deviation of the per-sample losses over ``√(count)``.
    Returns a dict with ``loo``, ``se_loo``, ``held``, ``se_held``, ``combined``
    (``√(se_loo² + se_held²)``) and ``within`` (``"yes"`` if the two differ by at most ``combined``).

    A rough guide, not a test, for two reasons. The ``n`` leave-one-out losses are not
    independent (two twins share ``n − 2`` training samples), so ``se_loo``, the formula for
    independent samples, only approximates their standard error. And the leave-one-out average
    estimates the expected test loss of training on ``n − 1`` samples, averaged over training sets
    (Chapter 1's leave-one-out identity), not the held-out loss of this training set, so the two
    can differ by more than ``combined`` even when neither is biased.
    """
    rho = np.asarray(loo_residuals(setting.theta, run.r0, t))
    r_test = np.asarray(kernel_test_residuals(setting.theta, setting.theta_test, run.r0,
                                              setting.f0_test - run.y_test, t))
    loo, held = np.mean(0.5 * rho**2), np.mean(0.5 * r_test**2)
    se_loo, se_held = (2 * np.std(0.5 * v**2) / np.sqrt(len(v)) for v in (rho, r_test))
    combined = float(np.hypot(se_loo, se_held))
    return dict(loo=loo, se_loo=se_loo, held=held, se_held=se_held, combined=combined,
                within="yes" if abs(loo - held) <= combined else "no")


class IndefiniteExample(NamedTuple):
    """A Gram matrix ``theta`` whose ``K_n(t)`` (``k_matrix``) has a negative eigenvalue, found at ``seed``."""

    seed: int
    theta: np.ndarray
    t: float
    k_matrix: np.ndarray


def random_gram(seed, n=4):
    """``A Aᵀ`` with Gaussian ``A`` whose columns are scaled by ``e^{2g}``: an ill-conditioned ``n×n`` Gram matrix."""
    rng = np.random.default_rng(_checks.integer(seed, "seed", minimum=0))
    a = rng.normal(size=(n, n)) * np.exp(2 * rng.normal(size=(1, n)))
    return a @ a.T


def indefinite_example(seeds, *, n=4, times=(0.3, 1.0, 3.0, 10.0)):
    """The first of ``seeds`` whose :func:`random_gram` has an indefinite ``K_n(t)`` (Chapter 6).

    ``times`` are in units of ``n / λ_max``; ``K_n(t)`` counts as indefinite when its smallest
    eigenvalue is below ``−1e-6`` times its largest in magnitude. Returns an
    :class:`IndefiniteExample` at the time with the most negative ratio, or ``None``.
    """
    for seed in seeds:
        theta = random_gram(seed, n)
        ts = np.asarray(times) * n / np.linalg.eigvalsh(theta).max()
        k = np.asarray(effective_gram(theta, ts))
        ratios = np.array([vals[0] / np.abs(vals).max() for vals in map(np.linalg.eigvalsh, k)])
        if ratios.min() < -1e-6:
            j = int(np.argmin(ratios))
            return IndefiniteExample(int(seed), theta, float(ts[j]), k[j])
    return None


def simulated_twin_gap(theta, r0, t, *, euler_steps=100_000):
    """``(1/2n) Σ_i (ρ_i(t)² − r_i(t)²)`` by simulating the run and every twin directly (Chapter 6).

    An independent check of ``r0ᵀ K_n(t) r0``: the run ``ṙ = −(1/n) Θ r`` and twin ``i``'s
    ``ṙ^{(i)} = −(1/n) Θ P_{−i} r^{(i)}`` take ``euler_steps`` explicit Euler steps (one matrix
    power each), with no eigendecomposition and no Laplace transform; Euler's relative error
    is of order ``t λ_max / (n · euler_steps)``. One output, small ``n``.
    """
    theta = _checks.square_symmetric(theta, "theta")
    n = theta.shape[0]
    r0 = _checks.array(r0, "r0", shape=(n,))
    t = _checks.positive(t, "t")
    euler_steps = _checks.integer(euler_steps, "euler_steps", minimum=1)
    step = lambda m: np.linalg.matrix_power(np.eye(n) - (t / n / euler_steps) * m, euler_steps)  # noqa: E731
    r_t = step(theta) @ r0
    rho = [(step(theta @ np.diag(np.arange(n) != i)) @ r0)[i] for i in range(n)]
    return float((np.sum(np.square(rho)) - r_t @ r_t) / (2 * n))


def summary_row(setting_name, labels, run, *, key, samples=1000, network=None):
    """One row of the chapter's summary table, at the final time ``T`` of ``run`` (a :class:`LabelRun`).

    Holds the shares of ``‖r0‖²`` and ``‖r(T)‖²`` in the bottom-``k``
    eigenvectors of ``K_n(T)``, the random-vector share (exact ``k/N`` and
    the mean/std of ``samples`` sampled vectors), the gap and the random
    direction's gap, the leave-one-out predicted test loss, the linearized
    model's held-out test loss and, if ``network = (train_loss, test_loss)``
    of the real network is given, those too.
    """
    c = run.curve
    kn = np.asarray(c.eigenvalues[-1])
    # the share of a random direction is rotation invariant: sample it in the eigenbasis of K_n(T)
    sampled = np.asarray(random_share_samples(np.diag(kn), c.k, key=key, samples=samples))
    row = {
        "setting": setting_name, "labels": labels, "n": len(run.y_train), "T": float(c.times[-1]), "k": c.k,
        "share_r0": float(c.share_r0[-1]), "share_rT": float(c.share_rt[-1]),
        "random_share": c.random_share, "random_share_sampled": float(sampled.mean()),
        "random_share_sampled_std": float(sampled.std()),
        "gap": float(c.gap[-1]), "random_gap": float(c.random_gap[-1]),
        "min_eig_over_max": float(kn[0] / np.max(np.abs(kn))),
        "train_loss": float(c.train_loss[-1]), "predicted_test_loss": float(c.predicted_test_loss[-1]),
        "linearized_test_loss": float(run.test_loss[-1]),
    }
    if network is not None:
        row["network_train_loss"], row["network_test_loss"] = (float(v) for v in network)
    return row


@in_float64
def reproduce_ch6(out_dir, scale="default", *, progress=True, command=None):
    """Regenerate Chapter 6's tables (CSV) and figures (PNG) under ``out_dir``.

    For the MLP and CNN on the digits and the MLP on MNIST-1D and on the
    teacher task: ``K_n(t)`` along gradient flow up to ``T = lr · steps``,
    alignment of the true- and random-label residuals, held-out test losses of
    the linearized model and of the real network trained by
    :func:`gramlib.train.gradient_descent`, and a label-noise sweep for the
    MLP on the digits (:func:`noise_sweep`). Writes ``ch6_summary.csv``, ``ch6_curves.csv``,
    ``ch6_label_noise.csv`` (every row with :func:`gramlib.results.provenance`; ``command``:
    the command line to record) and ``ch6_*.png``; returns the list of paths. The theory
    checks run in float64 (the real networks train in float32) and the caller's setting is
    restored. ``python -m gramlib reproduce ch6 [--scale paper]`` calls it.
    """
    cfg, out, extra = scale_config(scale), Path(out_dir), provenance(command)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(0)
    settings = chapter_settings(cfg, key=key, datasets=("digits", "mnist1d", "teacher"), progress=progress)
    times = flow_times(cfg)
    runs, grams_of, summary, curves = {}, {}, [], []
    bar = tqdm(total=2 * len(settings) + 1, desc="Chapter 6", disable=not progress)
    for j, (name, s) in enumerate(settings.items()):
        grams_of[name] = effective_grams(s.theta, times)
        shuffled = data.random_labels(s.dataset, key=jax.random.fold_in(key, 200 + j))
        for labels, ds in (("true", s.dataset), ("random", shuffled)):
            run = label_run(s, grams_of[name], ds.y_train, ds.y_test, fraction=cfg.fraction)
            net = network_losses(s, ds.y_train, ds.y_test, lr=cfg.lr, steps=cfg.steps)
            runs[name, labels] = run
            summary.append({**summary_row(name, labels, run, key=jax.random.fold_in(key, 300 + j),
                                          samples=cfg.samples, network=net), **extra})
            c = run.curve
            curves += [{"setting": name, "labels": labels, "t": float(t), "share_r0": float(c.share_r0[i]),
                        "share_rt": float(c.share_rt[i]), "random_share": c.random_share,
                        "gap": float(c.gap[i]), "random_gap": float(c.random_gap[i]),
                        "min_eig": float(c.eigenvalues[i][0]), "max_eig": float(c.eigenvalues[i][-1]),
                        "train_loss": float(c.train_loss[i]), "predicted_test_loss": float(c.predicted_test_loss[i]),
                        "linearized_test_loss": float(run.test_loss[i]), **extra} for i, t in enumerate(c.times)]
            bar.update()
    sweep = noise_sweep(settings["MLP / digits"], grams_of["MLP / digits"], cfg.noise, fraction=cfg.fraction,
                        key_train=jax.random.fold_in(key, 400), key_test=jax.random.fold_in(key, 401))
    noise_rows = [{"flip_fraction": float(nu), "share_r0": float(share), "random_share": run.curve.random_share,
                   "gap": float(run.curve.gap[-1]), "predicted_test_loss": float(pred),
                   "linearized_test_loss": float(test), **extra}
                  for (nu, run), share, test, pred in zip(sweep.runs.items(), sweep.share, sweep.test_loss,
                                                          sweep.predicted)]
    bar.update()
    bar.close()
    paths = [write_csv(out / "ch6_summary.csv", summary), write_csv(out / "ch6_curves.csv", curves),
             write_csv(out / "ch6_label_noise.csv", noise_rows)]
    return paths + _figures(out, settings, runs, grams_of, times, sweep, cfg.fraction)


def _figures(out, settings, runs, grams_of, times, sweep, fraction):
    figures = []
    fig, axes = figure(2)
    for ax, (name, color) in zip(axes, (("MLP / digits", None), ("CNN / digits", "#D55E00"))):
        plot_spectra(ax, grams_of[name], times=times[[0, len(times) // 2, -1]], color=color)
        label(ax, "rank j / N", "eigenvalue of K_n(t)", name)
    figures.append(("ch6_spectra.png", fig))
    for fname, names in (("ch6_true_vs_random.png", [("MLP / digits", "true"), ("MLP / digits", "random")]),
                         ("ch6_mlp_vs_cnn.png", [("MLP / digits", "true"), ("CNN / digits", "true")]),
                         ("ch6_datasets.png", [(n, "true") for n in settings if n.startswith("MLP")])):
        figures.append((fname, compare_figure({f"{a} ({b})": runs[a, b] for a, b in names}, fraction=fraction)))
    figures.append(("ch6_cumulative.png", cumulative_figure({f"{a} ({b})": r for (a, b), r in runs.items()})))
    fig, ax = figure(1)
    plot_noise_sweep(ax, sweep)
    label(ax, "fraction of flipped labels", "share / loss", "MLP / digits, label noise")
    figures.append(("ch6_label_noise.png", fig))
    for fname, fig in figures:
        fig.savefig(out / fname)
        plt.close(fig)
    return [out / fname for fname, _ in figures]
