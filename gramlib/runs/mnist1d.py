"""The MNIST-1D generator (Greydanus 2020), re-implemented offline (Chapters 6–7).

Ten one-dimensional templates, one per class, padded, scaled, sheared, translated and
noised into signals of ``length`` points: :func:`mnist1d_raw`. The data set with its
splits and tasks is :func:`gramlib.runs.data.mnist1d`.
"""

from __future__ import annotations

import jax
import numpy as np

from .. import _checks


#: Ten 1-D "digit" templates of 12 points each, one per class: bumps, dips,
#: ramps and steps drawn in the spirit of Greydanus (2020)'s MNIST-1D templates.
MNIST1D_TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],        # 0: one wide bump up
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],      # 1: drop, then a slow climb
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],    # 2: up, then down past the baseline
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],          # 3: two bumps up
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],        # 4: ramp down, then a step back
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],            # 5: plateau down, then a bump up
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],        # 6: one wide dip
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],      # 7: jump up, then a slow descent
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],          # 8: two dips
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],          # 9: one dip, then a small one
    ]
)


def mnist1d_templates():
    """The templates standardized per class and shifted to start at 0 (so zero padding is continuous)."""
    t = MNIST1D_TEMPLATES - MNIST1D_TEMPLATES.mean(axis=1, keepdims=True)
    t = t / t.std(axis=1, keepdims=True)
    return t - t[:, :1]


def mnist1d_raw(n, *, key, length=40, padding=(36, 60), scale=0.4, max_translation=48,
                shear=0.75, corr_noise=0.25, iid_noise=0.02):
    """``n`` MNIST-1D signals of ``length`` points and their labels 0..9.

    An equivalent of the generator of Greydanus (2020) (the ``mnist1d``
    package), written for this book: each signal is a class template (see
    :data:`MNIST1D_TEMPLATES`) placed at a random position in a zero-padded
    window of ``12 + p`` points, ``p`` uniform in ``padding``; stretched
    horizontally by a factor ``1 + scale·u``, ``u ~ U(-1, 1)``; circularly
    shifted by up to ``max_translation`` points; resampled to ``length``
    points by linear interpolation; then a linear ramp of slope
    ``shear·U(-1, 1)`` across the window, correlated noise (white noise
    smoothed by a Gaussian filter of width 2 points, times ``corr_noise``) and
    i.i.d. Gaussian noise of scale ``iid_noise`` are added. Defaults are those
    of the original data set. Fully determined by ``key``.
    """
    _checks.integer(n, "n", minimum=1)
    _checks.integer(length, "length", minimum=2)
    _checks.integer(max_translation, "max_translation", minimum=0)
    if np.ndim(padding) != 1 or len(padding) != 2:
        raise ValueError(f"padding must be a pair (lo, hi) of paddings, got {padding!r}")
    lo, hi = padding
    _checks.integer(lo, "padding[0]", minimum=0)
    _checks.integer(hi, "padding[1]", minimum=lo)
    for name, value in (("scale", scale), ("shear", shear), ("corr_noise", corr_noise), ("iid_noise", iid_noise)):
        _checks.positive(value, name, allow_zero=True)
    if scale >= 1:
        raise ValueError(f"scale must be below 1 (a stretch factor 1 + scale·u, u in (-1, 1)), got {scale}")
    keys = jax.random.split(key, 8)
    labels = np.asarray(jax.random.randint(keys[0], (n,), 0, 10))
    pad = np.asarray(jax.random.randint(keys[1], (n,), lo, hi + 1)).astype(float)
    left = np.floor(np.asarray(jax.random.uniform(keys[2], (n,))) * pad)
    stretch = 1.0 + scale * np.asarray(jax.random.uniform(keys[3], (n,), minval=-1.0, maxval=1.0))
    shift = np.asarray(jax.random.randint(keys[4], (n,), -max_translation, max_translation + 1))
    slope = shear * np.asarray(jax.random.uniform(keys[5], (n,), minval=-1.0, maxval=1.0))
    white = np.asarray(jax.random.normal(keys[6], (n, length)))
    iid = iid_noise * np.asarray(jax.random.normal(keys[7], (n, length)))

    templates = mnist1d_templates()
    m = templates.shape[1]
    window = m + pad                                        # padded length per sample
    grid = np.linspace(0.0, 1.0, length)[None, :] * (window[:, None] - 1)
    pos = np.mod(grid - shift[:, None], window[:, None])    # circular translation
    u = (pos - left[:, None] - (m - 1) / 2) / stretch[:, None] + (m - 1) / 2
    inside = (u >= 0) & (u <= m - 1)
    i0 = np.clip(np.floor(u).astype(int), 0, m - 2)
    frac = np.clip(u - i0, 0.0, 1.0)
    t = templates[labels]
    rows = np.arange(n)[:, None]
    signal = np.where(inside, (1 - frac) * t[rows, i0] + frac * t[rows, i0 + 1], 0.0)

    taps = np.arange(-6, 7)
    gauss = np.exp(-0.5 * (taps / 2.0) ** 2)
    gauss /= np.sqrt(np.sum(gauss**2))                      # unit variance after smoothing
    padded = np.pad(white, ((0, 0), (6, 6)))
    smooth = sum(g * padded[:, k : k + length] for k, g in enumerate(gauss))
    ramp = slope[:, None] * np.linspace(-1.0, 1.0, length)[None, :]
    return signal + ramp + corr_noise * smooth + iid, labels
