"""Alignment of the residual with the effective Gram matrix (Chapter 6).

The predicted generalization gap after training for a time ``t`` is the
quadratic form ``r0ᵀ K_n(t) r0`` (Chapter 5). Writing the effective Gram
matrix in its eigenbasis, ``K_n(t) = Σ_j λ_j v_j v_jᵀ`` with
``λ_1 ≤ … ≤ λ_N``, splits the gap into eigen-components

    r0ᵀ K_n r0 = Σ_j λ_j c_j²,    c_j = v_jᵀ r0,

so the gap is small when ``‖r0‖²`` sits in the eigenvectors with small
``λ_j``. This module measures that:

* :func:`spectrum` — the eigenvalues (ascending) and eigenvectors of ``K_n``;
* :func:`cumulative_share` / :func:`bottom_share` — the share
  ``Σ_{j≤k} c_j² / ‖r‖²`` of ``‖r‖²`` in the bottom-``k`` eigenvectors;
* :func:`random_share_expected` / :func:`random_share_samples` — the same share
  for a random vector of equal norm, whose direction is uniform on the sphere:
  exactly ``k/N`` in expectation (and ``Beta(k/2, (N−k)/2)`` distributed);
* :func:`gap_components` and :func:`random_gap_expected` — the eigen-components
  of the gap, and the gap ``‖r0‖² tr(K_n)/N`` a random direction would give;
* :func:`effective_grams` and :func:`alignment_curve` — all of the above along
  a kernel-training run (``r(t)`` from :func:`gramlib.ntk.kernel_residuals`,
  ``K_n(t)`` from :func:`gramlib.effective_gram.effective_gram`, computed once
  per kernel and shared by every set of labels);
* :func:`gramlib.ntk.kernel_test_residuals` — the held-out residuals of the linearized
  (kernel) model, so that each alignment can be paired with a test loss.

``K_n(t)`` need not be positive semi-definite at finite ``t`` (Chapter 6 shows
an example; ``K_n(0) = 0`` and ``K_n(∞)`` are PSD): "bottom" means smallest
algebraic eigenvalue. When eigenvalues repeat, the bottom-``k`` subspace is
only defined up to a rotation inside the repeated eigenspace; the shares are
then those of the eigenvectors ``numpy``/``jax`` return.

The chapter's experiments (:func:`chapter_settings`, :func:`label_run`,
:func:`network_losses`, the ``plot_*`` figures) and
``reproduce_ch6(out_dir)``, which regenerates the chapter's tables (CSV) and figures
(PNG); ``python -m gramlib reproduce ch6`` calls it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from .effective_gram import effective_gram
from .ntk import kernel_problem, kernel_residuals, kernel_test_residuals


# ---------------------------------------------------------------- validation
def _gram(k_matrix, name="k_matrix"):
    a = _checks.square_symmetric(k_matrix, name)
    if a.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    return a


def _residual(r, n_dim, name="r"):
    a = _checks.array(r, name, ndim=(1, 2))
    if a.shape[-1] != n_dim:
        raise ValueError(f"{name} must have last dimension {n_dim} (the size of the Gram matrix), got shape {a.shape}")
    norms = np.sqrt(np.sum(np.abs(a) ** 2, axis=-1))
    if np.any(norms == 0):
        raise ValueError(f"{name} must be nonzero: the share of ‖{name}‖² is undefined for a zero vector")
    return a


def _bottom_k(k, n_dim):
    _checks.integer(k, "k", minimum=1)
    if k > n_dim:
        raise ValueError(f"k must be at most N = {n_dim} (the size of the Gram matrix), got {k}")
    return int(k)


# ---------------------------------------------------------------- kernels
@jax.jit
def _eigh(k_matrix):
    return jnp.linalg.eigh(0.5 * (k_matrix + k_matrix.T))


@jax.jit
def _cumulative_share(eigenvectors, r):
    c2 = jnp.square(r @ eigenvectors)  # (..., N): squared coordinates c_j² in the eigenbasis
    return jnp.cumsum(c2, axis=-1) / jnp.sum(c2, axis=-1, keepdims=True)


# ---------------------------------------------------------------- public API
def spectrum(k_matrix):
    """Eigenvalues ``λ_1 ≤ … ≤ λ_N`` and orthonormal eigenvectors (columns) of a symmetric matrix.

    For ``K_n(t)`` (Chapter 6) or ``Θ``. Returns ``(eigenvalues (N,), eigenvectors (N, N))``.
    """
    a = _gram(k_matrix)
    return _eigh(jnp.asarray(a))


def cumulative_share(k_matrix, r):
    """The share of ``‖r‖²`` in the bottom-``k`` eigenvectors of ``k_matrix``, for every ``k = 1..N``.

    ``s_k = Σ_{j≤k} (v_jᵀ r)² / ‖r‖²`` with eigenvalues ascending, so
    ``s_N = 1``. ``r`` is ``(N,)`` or a stack ``(T, N)``; returns the same shape.
    A random direction gives ``E s_k = k/N`` (:func:`random_share_expected`).
    """
    a = _gram(k_matrix)
    r = _residual(r, a.shape[0])
    _, vecs = _eigh(jnp.asarray(a))
    return _cumulative_share(vecs, jnp.asarray(r, dtype=vecs.dtype))


def bottom_share(k_matrix, r, k):
    """``Σ_{j≤k} (v_jᵀ r)² / ‖r‖²``: the fraction of ``‖r‖²`` in the ``k`` eigenvectors of smallest eigenvalue.

    Equal to ``‖P_k r‖² / ‖r‖²`` with ``P_k`` the orthogonal projection onto
    their span. Returns a scalar, or ``(T,)`` for ``r`` of shape ``(T, N)``.
    """
    a = _gram(k_matrix)
    k = _bottom_k(k, a.shape[0])
    return cumulative_share(a, r)[..., k - 1]


def random_share_expected(n_dim, k):
    """``E ‖P_k u‖² / ‖u‖² = k/N`` for ``u`` uniform on the sphere and ``P_k`` any rank-``k`` projection.

    Proof: by symmetry each of the ``N`` squared coordinates of ``u/‖u‖`` in an
    orthonormal basis has the same mean, and they sum to 1. Also returns the
    exact standard deviation: the share is ``Beta(k/2, (N−k)/2)``, with variance
    ``2 (k/N)(1 − k/N) / (N + 2)``. Returns ``(mean, std)``.
    """
    n_dim = _checks.integer(n_dim, "n_dim", minimum=1)
    k = _bottom_k(k, n_dim)
    p = k / n_dim
    return p, float(np.sqrt(2.0 * p * (1.0 - p) / (n_dim + 2)))


def random_share_samples(k_matrix, k, *, key, samples=1000):
    """Shares of ``‖u‖²`` in the bottom-``k`` eigenvectors of ``k_matrix`` for random ``u``.

    ``u`` has i.i.d. Gaussian entries, so its direction is uniform on the
    sphere; the share does not depend on ``‖u‖``, so this is also the share of
    a random vector of the same norm as a residual. Returns ``(samples,)``;
    their mean estimates ``k/N``.
    """
    a = _gram(k_matrix)
    k = _bottom_k(k, a.shape[0])
    samples = _checks.integer(samples, "samples", minimum=1)
    _, vecs = _eigh(jnp.asarray(a))
    u = jax.random.normal(key, (samples, a.shape[0]), vecs.dtype)
    return _cumulative_share(vecs, u)[:, k - 1]


def gap_components(k_matrix, r0):
    """The eigen-components of the predicted gap ``r0ᵀ K r0 = Σ_j λ_j (v_jᵀ r0)²``.

    Returns ``(eigenvalues (N,), components (N,))`` with eigenvalues ascending
    and ``components[j] = λ_j (v_jᵀ r0)²``; their sum is the quadratic form.
    """
    a = _gram(k_matrix)
    r0 = _checks.array(r0, "r0", shape=(a.shape[0],))
    vals, vecs = _eigh(jnp.asarray(a))
    return vals, vals * jnp.square(jnp.asarray(r0, vecs.dtype) @ vecs)


def random_gap_expected(k_matrix, norm):
    """``E uᵀ K u = ‖u‖² tr(K) / N`` for ``u`` of norm ``norm`` and uniformly random direction.

    The gap a residual of that norm would give if it were not aligned with
    ``K`` at all (``E u uᵀ = (‖u‖²/N) I``).
    """
    a = _gram(k_matrix)
    norm = _checks.positive(norm, "norm", allow_zero=True)
    return norm ** 2 * float(np.trace(a)) / a.shape[0]


class AlignmentCurve(NamedTuple):
    """Alignment along a kernel-training run (leading axis: the times ``t``).

    ``eigenvalues[j]`` is the spectrum of ``K_n(t_j)`` (ascending);
    ``share_r0``/``share_rt`` are the shares of ``‖r0‖²`` and ``‖r(t)‖²`` in its
    bottom-``k`` eigenvectors; ``cumulative_r0[j]`` is the whole cumulative
    share curve of ``r0`` (:func:`cumulative_share`); ``random_share`` is
    ``k/N``; ``gap`` is ``r0ᵀ K_n(t) r0`` and ``random_gap`` the gap
    ``‖r0‖² tr K_n(t)/N`` of a random direction of the same norm;
    ``train_loss`` is ``‖r(t)‖²/(2n)`` and ``predicted_test_loss`` the
    leave-one-out prediction ``train_loss + gap = (1/2n) Σ_i ‖ρ_i(t)‖²``.
    """

    times: np.ndarray
    k: int
    eigenvalues: np.ndarray
    share_r0: np.ndarray
    share_rt: np.ndarray
    cumulative_r0: np.ndarray
    random_share: float
    gap: np.ndarray
    random_gap: np.ndarray
    train_loss: np.ndarray
    predicted_test_loss: np.ndarray


def bottom_count(n_dim, fraction):
    """``k = max(1, round(fraction · N))``: the number of eigenvectors in the bottom ``fraction``."""
    n_dim = _checks.integer(n_dim, "n_dim", minimum=1)
    fraction = _checks.positive(fraction, "fraction")
    if fraction > 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * n_dim)))


class EffectiveGrams(NamedTuple):
    """``K_n(t)`` at several times with their spectra (eigenvalues ascending), computed once per kernel."""

    times: np.ndarray
    k_matrices: jnp.ndarray
    eigenvalues: jnp.ndarray
    eigenvectors: jnp.ndarray
    outputs: int
    lr: float | None


@jax.jit
def _batched_eigh(k_matrices):
    return jax.vmap(jnp.linalg.eigh)(k_matrices)


def effective_grams(theta, t, *, outputs=1, lr=None):
    """``K_n(t_j)`` for each time (:func:`gramlib.effective_gram.effective_gram`) and their spectra.

    One call per kernel; :func:`alignment_curve` then measures any number of
    residuals (true labels, random labels, label noise) against it.
    ``t = 0`` is refused: ``K_n(0) = 0`` has no preferred eigenvectors.
    """
    _, _, times, _, _, lr = kernel_problem(theta, None, t, outputs, lr)
    if np.any(times == 0):
        raise ValueError("t must be > 0: K_n(0) = 0 has no preferred eigenvectors")
    kn = effective_gram(theta, times, outputs=outputs, lr=lr)  # (T, N, N): times is an array
    vals, vecs = _batched_eigh(kn)
    return EffectiveGrams(times, kn, vals, vecs, outputs, lr)


def alignment_curve(theta, r0, t=None, *, fraction=0.1, outputs=1, lr=None, grams=None):
    """How ``r0`` and ``r(t)`` sit in the eigenbasis of ``K_n(t)`` along kernel training.

    For each time ``t_j > 0`` (flow time, or steps when ``lr`` is given):
    ``K_n(t_j)``, its spectrum, the shares of ``‖r0‖²`` and ``‖r(t_j)‖²`` in
    its bottom ``k = round(fraction · N)`` eigenvectors, the gap
    ``r0ᵀ K_n r0`` and what a random direction would give. ``t = ∞`` (flow) is
    the limit ``K_n(∞)`` of Chapter 5, where ``share_rt`` is NaN if
    ``r(∞) = 0``. Pass ``grams = effective_grams(theta, t, ...)`` (then ``t``,
    ``outputs`` and ``lr`` are taken from it) to measure several residuals
    (true and random labels) against one computation of ``K_n``. Returns an
    :class:`AlignmentCurve`.
    """
    if grams is None:
        grams = effective_grams(theta, t, outputs=outputs, lr=lr)
    elif not isinstance(grams, EffectiveGrams):
        raise TypeError(f"grams must come from effective_grams(), got {type(grams).__name__}")
    times, outputs, lr = grams.times, grams.outputs, grams.lr
    theta, r0, _, _, n, _ = kernel_problem(theta, r0, times, outputs, lr)
    n_dim = theta.shape[0]
    if grams.k_matrices.shape[1] != n_dim:
        raise ValueError(f"grams are for N = {grams.k_matrices.shape[1]}, theta has N = {n_dim}")
    _residual(r0, n_dim, "r0")
    k = bottom_count(n_dim, fraction)
    kn, vals, vecs = grams.k_matrices, grams.eigenvalues, grams.eigenvectors
    rt = jnp.atleast_2d(kernel_residuals(theta, r0, times, outputs=outputs, lr=lr))
    shares = np.asarray(_cumulative_share(vecs, r0[None, None, :])[:, 0])  # (T, N)
    rt_norm = jnp.sum(rt ** 2, axis=-1)
    ct = jnp.square(jnp.einsum("ti,tij->tj", rt, vecs))
    shares_t = jnp.where(rt_norm > 0, jnp.sum(ct[:, :k], axis=-1) / jnp.where(rt_norm > 0, rt_norm, 1.0), jnp.nan)
    gaps = np.asarray(jnp.einsum("i,tij,j->t", r0, kn, r0))
    rand = np.asarray(jnp.sum(r0 ** 2) * jnp.trace(kn, axis1=1, axis2=2) / n_dim)
    train = np.asarray(rt_norm) / (2 * n)
    return AlignmentCurve(times, k, np.asarray(vals), shares[:, k - 1], np.asarray(shares_t), shares, k / n_dim,
                          gaps, rand, train, train + gaps)


# ---------------------------------------------------------------- the chapter's experiments
#: Sizes of the chapter's experiments. ``"default"`` runs on a laptop CPU in about a
#: minute; ``"paper"`` is for a GPU (Colab); ``"smoke"`` is a seconds-long run for the tests.
SCALES = {
    "default": dict(n_train=200, n_test=500, width=512, channels=16, steps=3000, lr=1.0,
                    times=5, noise=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
                    fraction=0.1, samples=2000, batch_size=250),
    "paper": dict(n_train=1000, n_test=2000, width=2048, channels=64, steps=10000, lr=1.0,
                  times=16, noise=tuple(np.round(np.linspace(0.0, 0.5, 21), 3)),
                  fraction=0.1, samples=10000, batch_size=250),
    "smoke": dict(n_train=40, n_test=60, width=32, channels=4, steps=200, lr=1.0, times=3,
                  noise=(0.0, 0.5), fraction=0.1, samples=200, batch_size=None),
}


def scale_config(scale="default"):
    """The sizes of :data:`SCALES` for ``scale`` (``"default"`` or ``"paper"``)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    return dict(SCALES[scale])


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
    from .ntk import empirical_ntk

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
    ``(1/2m) ‖r*(t)‖²`` of the linearized model at the same times.
    """

    curve: AlignmentCurve
    test_loss: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def label_run(setting, grams, y_train, y_test, *, fraction=0.1):
    """Train the linearized model of ``setting`` on targets ``(y_train, y_test)`` by gradient flow.

    ``grams = effective_grams(setting.theta, t)`` fixes the times and is
    shared by every set of labels on the same kernel. Returns a
    :class:`LabelRun`: alignment with ``K_n(t)`` and the held-out test loss of
    :func:`gramlib.ntk.kernel_test_residuals` at the same times.
    """
    r0 = setting.f0_train - _checks.array(y_train, "y_train", shape=setting.f0_train.shape)
    r0_test = setting.f0_test - _checks.array(y_test, "y_test", shape=setting.f0_test.shape)
    curve = alignment_curve(setting.theta, r0, fraction=fraction, grams=grams)
    rt = np.atleast_2d(np.asarray(kernel_test_residuals(setting.theta, setting.theta_test, r0, r0_test,
                                                            grams.times, lr=grams.lr)))
    return LabelRun(curve, 0.5 * np.mean(rt**2, axis=-1), np.asarray(y_train), np.asarray(y_test))


def network_losses(setting, y_train, y_test, *, lr, steps, progress=False):
    """Train the real network of ``setting`` (float32, from the same initialization) by gradient descent.

    Uses :func:`gramlib.train.gradient_descent` for ``steps`` steps of size
    ``lr`` (flow time ``t = lr · steps``). Returns ``(train_loss, test_loss)``,
    both ``(1/2m) Σ (f − y)²`` at the end of training.
    """
    from .train import gradient_descent

    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), setting.params)
    run = gradient_descent(setting.model.apply, params, setting.dataset.x_train, y_train,
                           lr=lr, steps=steps, progress=progress)
    f_test = np.asarray(setting.model.apply(run.params, jnp.asarray(setting.dataset.x_test, jnp.float32)), float)
    return float(run.train_loss[-1]), float(0.5 * np.mean((f_test - np.asarray(y_test)) ** 2))


def flow_times(scale_cfg):
    """The chapter's time grid: ``scale_cfg["times"]`` log-spaced flow times from 1 to ``T = lr · steps``."""
    total = scale_cfg["lr"] * scale_cfg["steps"]
    return np.logspace(0.0, np.log10(total), scale_cfg["times"])


def chapter_settings(scale_cfg, *, key, datasets=("digits", "mnist1d"), progress=True):
    """The chapter's linearized networks: an MLP and a CNN on the digits, an MLP on each other dataset.

    Binary parity targets, ``n_train``/``n_test`` from ``scale_cfg``
    (:func:`scale_config`); 2-layer tanh MLP of width ``width`` and a 3-layer
    tanh CNN with ``channels`` filters, NTK parameterization, float64.
    ``datasets`` are names of :mod:`gramlib.data` loaders (``"digits"``,
    ``"mnist1d"``, ``"teacher"``). Returns ``{name: Setting}``.
    """
    from tqdm.auto import tqdm

    from . import data, models

    n, m = scale_cfg["n_train"], scale_cfg["n_test"]
    jobs = []
    for j, name in enumerate(datasets):
        k_data = jax.random.fold_in(key, j)
        if name == "digits":
            ds = data.digits(n, min(m, len(data.digits_raw()[1]) - n), key=k_data)
            jobs.append(("MLP / digits", models.mlp(ds.x_train.shape[1], scale_cfg["width"], 2, dtype=jnp.float64), ds))
            jobs.append(("CNN / digits", models.cnn((8, 8, 1), scale_cfg["channels"], 3, dtype=jnp.float64), ds))
        elif name in ("mnist1d", "teacher"):
            ds = getattr(data, name)(n, m, key=k_data)
            label = {"mnist1d": "MNIST-1D", "teacher": "teacher"}[name]
            jobs.append((f"MLP / {label}", models.mlp(ds.x_train.shape[1], scale_cfg["width"], 2, dtype=jnp.float64), ds))
        else:
            raise ValueError(f"unknown dataset {name!r}; use 'digits', 'mnist1d' or 'teacher'")
    out = {}
    for j, (name, model, ds) in enumerate(tqdm(jobs, desc="empirical NTKs", disable=not progress, leave=False)):
        out[name] = linearized_setting(name, model, ds, key=jax.random.fold_in(key, 100 + j),
                                       batch_size=scale_cfg["batch_size"])
    return out


# ---------------------------------------------------------------- figures (shared by Chapter 6 and the CLI)
def plot_spectra(ax, grams, *, label=None, times=None, color=None):
    """Eigenvalues of ``K_n(t)`` against their rank ``j/N``, one line per time (darker = later)."""
    from matplotlib import colors as mcolors

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
    """Share of ``‖r0‖²`` (solid) and ``‖r(t)‖²`` (dashed) in the bottom-``k`` eigenvectors of ``K_n(t)``.

    ``runs`` maps a label to a :class:`LabelRun` or :class:`AlignmentCurve`;
    the random-vector share ``k/N`` is drawn in black with, if given, ``band =
    (mean, half_width)`` from sampled random vectors.
    """
    from .plotting import PALETTE

    curve = None
    for c, (name, run) in zip(PALETTE, runs.items()):
        curve = getattr(run, "curve", run)
        ax.plot(curve.times, curve.share_r0, color=c, marker="o", ms=3, label=f"{name}: r0")
        ax.plot(curve.times, curve.share_rt, color=c, ls="--", label=f"{name}: r(t)")
    ax.axhline(curve.random_share, color="black", lw=1, label=f"random vector: k/N = {curve.random_share:.2f}")
    if band is not None:
        ax.axhspan(band[0] - band[1], band[0] + band[1], color="black", alpha=0.12, lw=0)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    return ax


def plot_cumulative(ax, runs, *, gap=False):
    """Cumulative share of ``‖r0‖²`` (or, with ``gap=True``, of ``r0ᵀK_n r0``) over the eigenvectors of ``K_n(T)``, ascending.

    The diagonal is the expectation for a random vector (``j/N``).
    """
    from .plotting import PALETTE

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


# ---------------------------------------------------------------- tables and the command line
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


def write_csv(path, rows):
    """Write a list of dicts (same keys) as a CSV table with a header line."""
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def reproduce_ch6(out_dir, scale="default", *, progress=True):
    """Regenerate Chapter 6's tables (CSV) and figures (PNG) under ``out_dir``.

    For the MLP and CNN on the digits and the MLP on MNIST-1D and on the
    teacher task: ``K_n(t)`` along gradient flow up to ``T = lr · steps``,
    alignment of the true- and random-label residuals, held-out test losses of
    the linearized model and of the real network trained by
    :func:`gramlib.train.gradient_descent`, and a label-noise sweep for the
    MLP on the digits. Writes ``ch6_summary.csv``, ``ch6_curves.csv``,
    ``ch6_label_noise.csv`` and ``ch6_*.png``; returns the list of paths.
    ``python -m gramlib reproduce ch6 [--scale paper]`` calls it.
    """
    from pathlib import Path

    with jax.enable_x64(True):  # the theory checks run in float64 (the real networks train in float32)
        return _reproduce_ch6(Path(out_dir), scale_config(scale), progress)


def _reproduce_ch6(out, cfg, progress):
    from tqdm.auto import tqdm

    from . import data
    from .plotting import figure, label

    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(0)
    settings = chapter_settings(cfg, key=key, datasets=("digits", "mnist1d", "teacher"), progress=progress)
    times = flow_times(cfg)
    runs, grams_of, summary, curves = {}, {}, [], []
    bar = tqdm(total=2 * len(settings) + len(cfg["noise"]), desc="Chapter 6", disable=not progress)
    for j, (name, s) in enumerate(settings.items()):
        grams_of[name] = effective_grams(s.theta, times)
        shuffled = data.random_labels(s.dataset, key=jax.random.fold_in(key, 200 + j))
        for labels, ds in (("true", s.dataset), ("random", shuffled)):
            run = label_run(s, grams_of[name], ds.y_train, ds.y_test, fraction=cfg["fraction"])
            net = network_losses(s, ds.y_train, ds.y_test, lr=cfg["lr"], steps=cfg["steps"])
            runs[name, labels] = run
            summary.append(summary_row(name, labels, run, key=jax.random.fold_in(key, 300 + j),
                                       samples=cfg["samples"], network=net))
            c = run.curve
            for i, t in enumerate(c.times):
                curves.append({"setting": name, "labels": labels, "t": float(t), "share_r0": float(c.share_r0[i]),
                               "share_rt": float(c.share_rt[i]), "random_share": c.random_share,
                               "gap": float(c.gap[i]), "random_gap": float(c.random_gap[i]),
                               "min_eig": float(c.eigenvalues[i][0]), "max_eig": float(c.eigenvalues[i][-1]),
                               "train_loss": float(c.train_loss[i]),
                               "predicted_test_loss": float(c.predicted_test_loss[i]),
                               "linearized_test_loss": float(run.test_loss[i])})
            bar.update()
    base = settings["MLP / digits"]
    noise_rows = []
    for p in cfg["noise"]:
        y_tr = data.noisy_labels(base.dataset.y_train, p, key=jax.random.fold_in(key, 400))
        y_te = data.noisy_labels(base.dataset.y_test, p, key=jax.random.fold_in(key, 401))
        run = label_run(base, grams_of["MLP / digits"], y_tr, y_te, fraction=cfg["fraction"])
        noise_rows.append({"flip_fraction": float(p), "share_r0": float(run.curve.share_r0[-1]),
                           "random_share": run.curve.random_share, "gap": float(run.curve.gap[-1]),
                           "predicted_test_loss": float(run.curve.predicted_test_loss[-1]),
                           "linearized_test_loss": float(run.test_loss[-1])})
        bar.update()
    bar.close()
    paths = [write_csv(out / "ch6_summary.csv", summary), write_csv(out / "ch6_curves.csv", curves),
             write_csv(out / "ch6_label_noise.csv", noise_rows)]

    def save(fig, name):
        fig.savefig(out / name)
        paths.append(out / name)
        import matplotlib.pyplot as plt

        plt.close(fig)

    fig, axes = figure(2)
    plot_spectra(axes[0], grams_of["MLP / digits"], times=times[[0, len(times) // 2, -1]])
    label(axes[0], "rank j / N", "eigenvalue of K_n(t)", "MLP / digits")
    plot_spectra(axes[1], grams_of["CNN / digits"], times=times[[0, len(times) // 2, -1]], color="#D55E00")
    label(axes[1], "rank j / N", "eigenvalue of K_n(t)", "CNN / digits")
    save(fig, "ch6_spectra.png")
    for fname, names in (("ch6_true_vs_random.png", [("MLP / digits", "true"), ("MLP / digits", "random")]),
                         ("ch6_mlp_vs_cnn.png", [("MLP / digits", "true"), ("CNN / digits", "true")]),
                         ("ch6_datasets.png", [(n, "true") for n in settings if n.startswith("MLP")])):
        fig, axes = figure(2)
        sel = {f"{a} ({b})": runs[a, b] for a, b in names}
        plot_shares(axes[0], sel)
        label(axes[0], "training time t", "share in bottom 10% of K_n(t)")
        for (a, b), run in zip(names, sel.values()):
            axes[1].plot(times, run.test_loss, marker="o", ms=3, label=f"{a} ({b}): held-out")
            axes[1].plot(times, run.curve.predicted_test_loss, ls="--", color=axes[1].lines[-1].get_color(),
                         label="leave-one-out prediction")
        axes[1].set_xscale("log")
        label(axes[1], "training time t", "test loss (linearized)")
        save(fig, fname)
    fig, axes = figure(2)
    plot_cumulative(axes[0], {f"{a} ({b})": r for (a, b), r in runs.items()})
    label(axes[0], "rank j / N", "cumulative share of ‖r0‖²")
    plot_cumulative(axes[1], {f"{a} ({b})": r for (a, b), r in runs.items()}, gap=True)
    label(axes[1], "rank j / N", "cumulative share of r0ᵀK_n r0")
    save(fig, "ch6_cumulative.png")
    fig, ax = figure(1)
    p = [r["flip_fraction"] for r in noise_rows]
    ax.plot(p, [r["share_r0"] for r in noise_rows], marker="o", label="share of ‖r0‖² in bottom 10%")
    ax.plot(p, [r["linearized_test_loss"] for r in noise_rows], marker="s", label="held-out test loss")
    ax.plot(p, [r["predicted_test_loss"] for r in noise_rows], ls="--", label="leave-one-out prediction")
    label(ax, "fraction of flipped labels", "share / loss", "MLP / digits, label noise")
    save(fig, "ch6_label_noise.png")
    return paths
