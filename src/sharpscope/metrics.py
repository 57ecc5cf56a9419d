"""Image-quality metrics: PSNR, SSIM, NRMSE, Fourier ring correlation, entropy, faithfulness.

All functions take numpy arrays (any real dtype), compute in float64 and
return Python floats (or float64 arrays for curves).  ``pred`` is the image
under test, ``gt`` the reference; both must have the same shape.

Conventions
-----------
data range
    :func:`psnr` and :func:`ssim` need the dynamic range ``R`` of the data.
    Pass it explicitly (``data_range=1.0`` for images normalised to [0, 1]);
    when it is ``None`` it is derived from the reference as
    ``R = gt.max() - gt.min()`` (never from the dtype, unlike scikit-image).
    With the same ``data_range`` the values equal scikit-image's
    ``peak_signal_noise_ratio`` and ``structural_similarity`` (default
    settings: 7-pixel uniform window, sample covariance, K1 = 0.01,
    K2 = 0.03, mean over the map without the ``(7 - 1) // 2`` border).
NRMSE
    ``RMSE / (gt.max() - gt.min())`` (DeBCR paper, eq. 6), i.e. scikit-image's
    ``normalized_root_mse(..., normalization='min-max')``.
FRC
    DeBCR paper, eq. 9: per ring ``K_r`` of spatial frequencies,
    ``Re sum F_gt conj(F_pred) / sqrt(sum |F_gt|^2 sum |F_pred|^2)``.  Rings
    are ``1 / max(shape)`` cycles/pixel wide (ring ``i`` holds the
    frequencies whose radius rounds to ``i / max(shape)``) and go up to the
    Nyquist frequency 0.5 cycles/pixel.  For 3-D data the rings are shells
    (Fourier shell correlation, voxels assumed isotropic).  Leading
    non-spatial axes (time, channels, a stack of 2-D planes) are pooled: their
    ring sums are added before the ratio is taken.  The resolution is
    ``1 / f`` at the first frequency ``f`` (after DC, linearly interpolated)
    where the curve drops below the fixed threshold 1/7; if it never does,
    the Nyquist limit (2 pixels) is reported.
entropy
    DeBCR paper, eq. 8, on the 8-bit image: the image is min-max scaled to
    ``0..255`` and rounded to the nearest integer (``floor(255 (x - min) /
    (max - min) + 0.5)``), then ``-sum p_i log2 p_i`` over the 256-bin
    histogram.  A constant image has entropy 0.
affine fit
    CSBDeep-style evaluation: the reference is percentile-normalised
    (``pmin=0.1``, ``pmax=99.9`` by default) and the prediction is mapped by
    the least-squares scale and offset ``a * pred + b`` that best matches it.
    The metrics are then computed between the fitted prediction and the
    normalised reference.
faithfulness
    :func:`intensity_bias` (do the background, the median and the total intensity
    stay where the reference has them?) and :func:`excess_power` (does the image carry
    more power than the reference beyond the optical cut-off, i.e. invented detail?).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.errors import InputError

__all__ = [
    "FRC_THRESHOLD",
    "IntensityBias",
    "affine_fit",
    "entropy",
    "evaluate",
    "excess_power",
    "frc",
    "frc_resolution",
    "intensity_bias",
    "nrmse",
    "plot_frc",
    "psnr",
    "ssim",
    "to_uint8",
]

#: Fixed FRC threshold used for the resolution estimate.
FRC_THRESHOLD = 1.0 / 7.0

_SPATIAL = "ZYX"


# ---------------------------------------------------------------- helpers
def _as_float(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(f"{name} must be a real-valued numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or Inf values")
    return arr


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_float(pred, "pred")
    g = _as_float(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    return p, g


def _range_of(gt: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        r = float(gt.max() - gt.min())
        if r <= 0:
            raise InputError("gt is constant: its data range is 0; pass data_range explicitly")
        return r
    r = float(data_range)
    if not np.isfinite(r) or r <= 0:
        raise InputError(f"data_range must be a positive finite number, got {data_range!r}")
    return r


def _spatial_ndim(ndim: int, spatial_ndim: int | None) -> int:
    if spatial_ndim is None:
        if ndim not in (2, 3):
            raise InputError(
                f"cannot tell the spatial axes of a {ndim}-D array; pass axes (e.g. 'TZYX')"
            )
        return ndim
    if spatial_ndim not in (2, 3) or spatial_ndim > ndim:
        raise InputError(f"spatial_ndim must be 2 or 3 and <= {ndim}, got {spatial_ndim}")
    return spatial_ndim


def _spatial_layout(axes: str | None, ndim: int) -> tuple[list[int], int]:
    """Permutation moving the spatial axes (Z, Y, X order) last, and their count."""
    if axes is None:
        return list(range(ndim)), _spatial_ndim(ndim, None)
    from sharpscope.io import validate_axes

    ax = validate_axes(axes, ndim)
    spatial = [ax.index(c) for c in _SPATIAL if c in ax]
    other = [i for i in range(ndim) if i not in spatial]
    return other + spatial, len(spatial)


# ---------------------------------------------------------------- PSNR / NRMSE
def psnr(pred: Any, gt: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB.

    Parameters
    ----------
    pred, gt : array_like
        Test image and reference, same shape.
    data_range : float, optional
        Dynamic range ``R`` (``MAX`` in the DeBCR paper).  Default:
        ``gt.max() - gt.min()``.

    Returns
    -------
    float
        ``10 log10(R^2 / MSE)``; ``inf`` when the images are identical.

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.full((4, 4), 0.1), np.zeros((4, 4)), data_range=1.0), 6)
    20.0
    """
    p, g = _pair(pred, gt)
    r = _range_of(g, data_range)
    mse = float(np.mean((p - g) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(r * r / mse))


def nrmse(pred: Any, gt: Any) -> float:
    """Root-mean-square error normalised by the reference's range (DeBCR eq. 6).

    Parameters
    ----------
    pred, gt : array_like
        Test image and reference, same shape; ``gt`` must not be constant.

    Returns
    -------
    float
        ``sqrt(mean((pred - gt)^2)) / (gt.max() - gt.min())``.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.array([[0.0, 2.0], [0.0, 2.0]])
    >>> nrmse(gt + 1.0, gt)
    0.5
    """
    p, g = _pair(pred, gt)
    r = _range_of(g, None)
    return float(np.sqrt(np.mean((p - g) ** 2)) / r)


# ---------------------------------------------------------------- SSIM
def _box_valid(x: np.ndarray, win: int, axes: Sequence[int]) -> np.ndarray:
    """Mean over a ``win``-wide box along ``axes``, only where the box fits (no padding)."""
    out = x
    for ax in axes:
        c = np.cumsum(out, axis=ax)
        n = out.shape[ax]
        hi = np.take(c, np.arange(win - 1, n), axis=ax)
        lo = np.take(c, np.arange(-1, n - win), axis=ax)
        # the first window starts at index 0: its "previous" cumulative sum is 0
        idx = [slice(None)] * out.ndim
        idx[ax] = slice(0, 1)
        lo[tuple(idx)] = 0.0
        out = (hi - lo) / win
    return out


def ssim(
    pred: Any,
    gt: Any,
    data_range: float | None = None,
    *,
    win_size: int = 7,
    spatial_ndim: int | None = None,
) -> float:
    """Mean structural similarity (uniform window, as scikit-image's default).

    Parameters
    ----------
    pred, gt : array_like
        Test image and reference, same shape.
    data_range : float, optional
        Dynamic range ``R`` (sets ``C1 = (0.01 R)^2`` and ``C2 = (0.03 R)^2``).
        Default: ``gt.max() - gt.min()``.
    win_size : int
        Odd side length of the uniform window (default 7).
    spatial_ndim : int, optional
        Number of trailing spatial axes (2 or 3) the window slides over;
        leading axes are independent planes/volumes whose SSIM maps are
        averaged together.  Default: all axes (the array must be 2-D or 3-D).

    Returns
    -------
    float
        Mean SSIM over the map without its ``(win_size - 1) // 2`` border;
        equals ``skimage.metrics.structural_similarity(gt, pred,
        data_range=R)`` for 2-D/3-D inputs.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> ssim(x, x, data_range=1.0)
    1.0
    """
    p, g = _pair(pred, gt)
    sd = _spatial_ndim(p.ndim, spatial_ndim)
    win = int(win_size)
    if win < 3 or win % 2 == 0:
        raise InputError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if any(n < win for n in p.shape[-sd:]):
        raise InputError(f"image {p.shape[-sd:]} is smaller than the {win}-pixel SSIM window")
    r = _range_of(g, data_range)
    axes = list(range(p.ndim - sd, p.ndim))
    npix = win**sd
    cov_norm = npix / (npix - 1.0)
    ux = _box_valid(p, win, axes)
    uy = _box_valid(g, win, axes)
    vx = cov_norm * (_box_valid(p * p, win, axes) - ux * ux)
    vy = cov_norm * (_box_valid(g * g, win, axes) - uy * uy)
    vxy = cov_norm * (_box_valid(p * g, win, axes) - ux * uy)
    c1 = (0.01 * r) ** 2
    c2 = (0.03 * r) ** 2
    num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return float(np.mean(num / den))


# ---------------------------------------------------------------- FRC
def frc(pred: Any, gt: Any, *, spatial_ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring (2-D) or shell (3-D) correlation between ``pred`` and ``gt``.

    Parameters
    ----------
    pred, gt : array_like
        Test image and reference, same shape.
    spatial_ndim : int, optional
        Number of trailing spatial axes (2: rings, 3: shells).  Leading axes
        are pooled (ring sums added over them).  Default: all axes (the array
        must be 2-D or 3-D).

    Returns
    -------
    freqs : numpy.ndarray
        Ring centres in cycles/pixel, ``0 .. 0.5`` in steps of ``1 / max(shape)``.
    curve : numpy.ndarray
        Correlation per ring, in ``[-1, 1]`` (0 where a ring has no energy).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> f, c = frc(x, x)
    >>> bool(np.allclose(c, 1.0))
    True
    """
    p, g = _pair(pred, gt)
    sd = _spatial_ndim(p.ndim, spatial_ndim)
    shape = p.shape[-sd:]
    axes = tuple(range(p.ndim - sd, p.ndim))
    fp = np.fft.fftn(p, axes=axes)
    fg = np.fft.fftn(g, axes=axes)
    nmax = max(shape)
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(k * k for k in grids))
    ring = np.floor(radius * nmax + 0.5).astype(np.int64)
    nring = nmax // 2 + 1
    keep = ring < nring
    lead = int(np.prod(p.shape[:-sd], dtype=np.int64))
    fp = fp.reshape((lead, *shape))
    fg = fg.reshape((lead, *shape))
    idx = ring[keep]
    cross = np.zeros(nring)
    pp = np.zeros(nring)
    gg = np.zeros(nring)
    for b in range(lead):
        a, c = fg[b][keep], fp[b][keep]
        cross += np.bincount(idx, weights=(a * np.conj(c)).real, minlength=nring)
        pp += np.bincount(idx, weights=np.abs(c) ** 2, minlength=nring)
        gg += np.bincount(idx, weights=np.abs(a) ** 2, minlength=nring)
    den = np.sqrt(pp * gg)
    curve = np.divide(cross, den, out=np.zeros(nring), where=den > 0)
    freqs = np.arange(nring) / nmax
    return freqs, np.clip(curve, -1.0, 1.0)


def frc_resolution(
    freqs: Any,
    curve: Any,
    threshold: float = FRC_THRESHOLD,
    pixel_size: float | None = None,
) -> float:
    """Resolution at which an FRC curve first drops below ``threshold``.

    Parameters
    ----------
    freqs, curve : array_like
        Output of :func:`frc` (frequencies in cycles/pixel, ascending, DC first).
    threshold : float
        Correlation threshold, 1/7 by default.
    pixel_size : float, optional
        Pixel size (e.g. in um); the result is then in those units instead of pixels.

    Returns
    -------
    float
        ``1 / f_c`` where ``f_c`` is the first crossing after DC (linear
        interpolation between rings), times ``pixel_size`` if given.  When the
        curve never drops below the threshold the Nyquist limit
        ``1 / freqs[-1]`` (2 pixels) is returned.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.linspace(0, 0.5, 11)
    >>> round(frc_resolution(f, 1 - 2 * f), 4)     # crosses 1/7 at f = 3/7
    2.3333
    """
    f = np.asarray(freqs, dtype=np.float64)
    c = np.asarray(curve, dtype=np.float64)
    if f.ndim != 1 or f.shape != c.shape or f.size < 2:
        raise InputError("freqs and curve must be 1-D arrays of the same length (>= 2)")
    below = np.nonzero(c[1:] < threshold)[0]
    if below.size == 0:
        fc = f[-1]
    else:
        i = int(below[0]) + 1
        c0, c1 = c[i - 1], c[i]
        t = 1.0 if c0 == c1 else (c0 - threshold) / (c0 - c1)
        t = min(max(t, 0.0), 1.0)
        fc = f[i - 1] + t * (f[i] - f[i - 1])
    res = float("inf") if fc <= 0 else 1.0 / fc
    if pixel_size is not None:
        res *= float(pixel_size)
    return float(res)


# ---------------------------------------------------------------- entropy
def to_uint8(img: Any) -> np.ndarray:
    """Min-max scale an image to 8 bits: ``floor(255 (x - min) / (max - min) + 0.5)``.

    Parameters
    ----------
    img : array_like
        Any real image; a constant image maps to all zeros.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of the same shape.

    Examples
    --------
    >>> to_uint8([0.0, 0.5, 1.0]).tolist()
    [0, 128, 255]
    """
    x = _as_float(img, "image")
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    q = np.floor((x - lo) * (255.0 / (hi - lo)) + 0.5)
    return np.clip(q, 0, 255).astype(np.uint8)


def entropy(img: Any) -> float:
    """Shannon entropy in bits of the 8-bit image, 256 bins (DeBCR eq. 8).

    Parameters
    ----------
    img : array_like
        Any real image; converted with :func:`to_uint8`.

    Returns
    -------
    float
        ``-sum p_i log2 p_i`` over the 256 grey levels; between 0 (constant
        image) and 8 (all levels equally frequent).

    Examples
    --------
    >>> import numpy as np
    >>> entropy(np.arange(256).reshape(16, 16))
    8.0
    """
    u = to_uint8(img)
    counts = np.bincount(u.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / u.size
    return float(abs(-np.sum(p * np.log2(p))))


# ---------------------------------------------------------------- affine fit
def _affine_fit64(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    pm, gm = pred.mean(), gt.mean()
    dp = pred - pm
    var = float(np.sum(dp * dp))
    scale = float(np.sum(dp * (gt - gm))) / var if var > 0 else 0.0
    return scale * dp + gm


def affine_fit(pred: Any, gt: Any) -> np.ndarray:
    """Least-squares affine map of ``pred`` onto ``gt``: ``a * pred + b``.

    ``a`` and ``b`` minimise ``sum((a * pred + b - gt)^2)`` (closed form:
    ``a = cov(pred, gt) / var(pred)``, ``b = mean(gt) - a mean(pred)``); a
    constant ``pred`` maps to ``mean(gt)``.  :func:`evaluate` with
    ``fit=True`` applies it after percentile-normalising ``gt`` (CSBDeep's
    evaluation protocol).

    Parameters
    ----------
    pred, gt : array_like
        Same shape.

    Returns
    -------
    numpy.ndarray
        The fitted prediction, float32.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.array([0.0, 1.0, 2.0, 3.0])
    >>> affine_fit(10 * gt + 5, gt).tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    p, g = _pair(pred, gt)
    return _affine_fit64(p, g).astype(np.float32)


def _percentile_normalize(gt: np.ndarray, pmin: float, pmax: float) -> np.ndarray:
    lo, hi = np.percentile(gt, [pmin, pmax])
    if hi <= lo:
        lo, hi = float(gt.min()), float(gt.max())
    if hi <= lo:
        raise InputError("gt is constant: it cannot be normalised")
    return (gt - lo) / (hi - lo)


# ---------------------------------------------------------------- evaluate
def evaluate(
    pred: Any,
    gt: Any,
    fit: bool = False,
    pixel_size: float | None = None,
    *,
    axes: str | None = None,
    data_range: float | None = None,
    pmin: float = 0.1,
    pmax: float = 99.9,
    return_frc: bool = False,
) -> dict[str, Any]:
    """All metrics between a restored image and its reference.

    Parameters
    ----------
    pred, gt : array_like
        Restored image and ground truth, same shape.
    fit : bool
        CSBDeep-style evaluation: percentile-normalise ``gt`` (``pmin``,
        ``pmax``) and replace ``pred`` by its least-squares affine fit to it
        (:func:`affine_fit`) before computing the metrics.
    pixel_size : float, optional
        Lateral pixel size in um; adds ``frc_resolution_um``.
    axes : str, optional
        Axes of the arrays (STCZYX alphabet, e.g. ``'TYX'``, ``'ZYX'``).  The
        SSIM window and the FRC rings span the spatial axes (Z, Y, X) only;
        other axes are independent planes.  Default: all axes are spatial
        (2-D or 3-D input).
    data_range : float, optional
        Range for PSNR and SSIM; default ``gt.max() - gt.min()`` (of the
        normalised ``gt`` when ``fit``).
    pmin, pmax : float
        Percentiles for ``fit``.
    return_frc : bool
        Also return the FRC curve under ``'frc_freqs'`` and ``'frc_curve'``
        (numpy arrays, cycles/pixel).

    Returns
    -------
    dict
        ``psnr`` (dB), ``ssim``, ``nrmse``, ``frc_resolution_px`` (pixels at
        the 1/7 threshold), ``frc_resolution_um`` (or ``None``),
        ``entropy_pred``, ``entropy_gt`` (bits), ``data_range`` and ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> gt = rng.random((64, 64))
    >>> m = evaluate(gt + 0.01 * rng.standard_normal(gt.shape), gt)
    >>> sorted(m)[:3]
    ['data_range', 'entropy_gt', 'entropy_pred']
    """
    p, g = _pair(pred, gt)
    perm, sd = _spatial_layout(axes, p.ndim)
    p = np.transpose(p, perm)
    g = np.transpose(g, perm)
    if fit:
        g = _percentile_normalize(g, pmin, pmax)
        p = _affine_fit64(p, g)
    r = _range_of(g, data_range)
    freqs, curve = frc(p, g, spatial_ndim=sd)
    res_px = frc_resolution(freqs, curve)
    out: dict[str, Any] = {
        "psnr": psnr(p, g, data_range=r),
        "ssim": ssim(p, g, data_range=r, spatial_ndim=sd),
        "nrmse": nrmse(p, g),
        "frc_resolution_px": res_px,
        "frc_resolution_um": None if pixel_size is None else res_px * float(pixel_size),
        "entropy_pred": entropy(p),
        "entropy_gt": entropy(g),
        "data_range": r,
        "fit": bool(fit),
    }
    if return_frc:
        out["frc_freqs"] = freqs
        out["frc_curve"] = curve
    return out


# ---------------------------------------------------------------- faithfulness
@dataclass(frozen=True)
class IntensityBias:
    """Intensity biases of an image against its reference, in units of the input's range.

    Attributes
    ----------
    p1, p50 : float
        Bias of the 1st percentile (the background level) and of the median.
    total : float
        Bias of the mean intensity (the total flux divided by the pixel count).
    """

    p1: float
    p50: float
    total: float

    @property
    def max_abs(self) -> float:
        """The largest of the three absolute biases."""
        return max(abs(self.p1), abs(self.p50), abs(self.total))


def intensity_bias(pred: Any, gt: Any, input_range: Any) -> IntensityBias:
    """Bias of the 1st and 50th percentiles and of the mean of ``pred`` relative to ``gt``.

    ``p1 = (P1(pred) - P1(gt)) / R``, ``p50 = (P50(pred) - P50(gt)) / R`` and
    ``total = (mean(pred) - mean(gt)) / R``, with ``Pq`` numpy's (linear) percentile over
    all pixels and ``R`` the input's range.  A restoration that keeps intensities
    faithful has all three near 0; a positive ``p1`` is a raised background, a
    negative ``total`` lost flux.

    Parameters
    ----------
    pred, gt : array_like
        Restored image and reference, same shape and intensity scale.
    input_range : float or array_like
        ``R``: a positive number, or the input image itself, whose 1st-to-99.8th
        percentile spread is used (the range that
        :func:`sharpscope.normalize.percentiles` maps to [0, 1]; it is 1 for an input
        so normalised).

    Returns
    -------
    IntensityBias
        ``p1``, ``p50`` and ``total`` (floats).

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.arange(101.0)
    >>> b = intensity_bias(gt + 5.0, gt, input_range=100.0)
    >>> round(b.p1, 6), round(b.p50, 6), round(b.total, 6)
    (0.05, 0.05, 0.05)
    """
    p, g = _pair(pred, gt)
    if np.ndim(input_range) == 0:
        try:
            r = float(input_range)
        except (TypeError, ValueError):
            raise InputError(
                f"input_range must be a number or an image, got {input_range!r}"
            ) from None
    else:
        lo, hi = np.percentile(_as_float(input_range, "input_range"), [1.0, 99.8])
        r = float(hi - lo)
    if not np.isfinite(r) or r <= 0:
        raise InputError(f"input_range must be positive and finite, got {r!r}")
    pp = np.percentile(p, [1.0, 50.0])
    pg = np.percentile(g, [1.0, 50.0])
    return IntensityBias(
        p1=float((pp[0] - pg[0]) / r),
        p50=float((pp[1] - pg[1]) / r),
        total=float((p.mean() - g.mean()) / r),
    )


def _hann_power(x: np.ndarray, window: bool) -> np.ndarray:
    """``|F((x - m) w)|^2`` with ``w`` a separable periodic Hann window (or 1)."""
    if window:
        w = np.ones(())
        for n in x.shape:
            w = w[..., None] * (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n))
    else:
        w = np.ones(x.shape)
    m = float(np.sum(w * x) / np.sum(w))
    return np.abs(np.fft.fftn((x - m) * w)) ** 2


def excess_power(pred: Any, gt: Any, cutoff: float, *, window: bool = True) -> float:
    """Ratio of the spectral power of ``pred`` to that of ``gt`` beyond a cut-off frequency.

    With ``P_a(f) = |DFT((a - m_a) w)(f)|^2`` (``w`` a separable periodic Hann window,
    ``m_a`` the ``w``-weighted mean of ``a``, so that the mean and the image borders
    leave no power at high frequencies) and ``|f|`` the radial frequency in
    cycles/pixel (:func:`numpy.fft.fftfreq` along every axis)::

        excess_power = sum_{|f| > cutoff} P_pred(f) / sum_{|f| > cutoff} P_gt(f)

    1.0 means the same power as the reference beyond the cut-off; > 1 means invented
    high frequencies (left-over or amplified noise, texture, ringing); < 1 means
    detail lost (over-smoothing).  Choose ``cutoff`` as the optical cut-off, beyond
    which the input holds noise only: for an incoherent widefield system the OTF's
    support, ``2 NA / lambda`` cycles per unit length, i.e. ``2 * fc`` cycles/pixel
    with the coherent ``fc = NA * pixel / lambda`` of
    :func:`sharpscope.physics.psf.cutoff_frequency`.

    Parameters
    ----------
    pred, gt : array_like
        Image under test and reference, same shape (2-D or 3-D; all axes spatial).
    cutoff : float
        Cut-off in cycles/pixel; at least one frequency of the grid must lie beyond it
        (the largest radial frequency is 0.5 sqrt(ndim)).
    window : bool
        Apply the Hann window (default); without it the image is treated as periodic.

    Returns
    -------
    float
        The ratio (``inf`` when ``gt`` has no power beyond the cut-off and ``pred``
        has; 1.0 when neither has).

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.random.default_rng(0).random((32, 32))
    >>> round(excess_power(2 * gt + 1, gt, cutoff=0.25), 6)     # power scales as 2 ** 2
    4.0
    """
    p, g = _pair(pred, gt)
    _spatial_ndim(p.ndim, None)
    c = float(cutoff)
    if not np.isfinite(c) or c < 0:
        raise InputError(f"cutoff must be a non-negative number of cycles/pixel, got {cutoff!r}")
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in p.shape], indexing="ij")
    band = np.sqrt(sum(k * k for k in grids)) > c
    if not band.any():
        raise InputError(
            f"no frequency of a {p.shape} grid lies beyond the cut-off {c} cycles/pixel"
        )
    num = float(np.sum(_hann_power(p, window)[band]))
    den = float(np.sum(_hann_power(g, window)[band]))
    if den == 0.0:
        return 1.0 if num == 0.0 else float("inf")
    return num / den


# ---------------------------------------------------------------- plotting
def plot_frc(
    path: str | Path,
    curves: dict[str, tuple[Any, Any]],
    *,
    threshold: float = FRC_THRESHOLD,
    pixel_size: float | None = None,
) -> Path:
    """Write a PNG of one or more FRC curves with the threshold line.

    Parameters
    ----------
    path : str or Path
        Output PNG, written atomically.
    curves : dict
        Label -> ``(freqs, curve)`` as returned by :func:`frc`.
    threshold : float
        Horizontal line drawn on the plot (1/7 by default).
    pixel_size : float, optional
        When given, a secondary label gives the resolution in um.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> out = plot_frc(os.path.join(tempfile.mkdtemp(), "frc.png"), {"x": frc(x, x)})
    >>> out.suffix
    '.png'
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from sharpscope.io import atomic_write

    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for label, (f, c) in curves.items():
        res = frc_resolution(f, c, threshold, pixel_size)
        unit = "um" if pixel_size is not None else "px"
        ax.plot(f, c, lw=1.5, label=f"{label} ({res:.3g} {unit})")
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    ax.set_xlabel("spatial frequency (cycles/pixel)")
    ax.set_ylabel("FRC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
