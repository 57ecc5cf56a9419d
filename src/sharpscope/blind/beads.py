"""The PSF measured on an image of sub-resolution beads (``estimate-psf --beads``).

An image of beads smaller than the resolution (100-200 nm fluorescent spheres, or any
sparse field of point-like emitters) shows the PSF once per bead.  :func:`measure_bead_psf`
finds the beads, keeps those that are isolated, unsaturated and shaped like the others,
centres every one at sub-pixel precision and averages them, weighted by their flux.  The
result is what ``restore --psf`` and ``deconvolve --psf`` take: centred on the pixel
``size // 2``, summing to 1.

Steps
    1. Detection: a band-pass copy of the image (Gaussian of 1 px minus Gaussian of
       ``size / 2`` px, so that uneven illumination drops out); its spread (median
       absolute deviation) sets the threshold, ``min_snr`` spreads above its median.
    2. Candidates: local maxima of the band-pass copy above the threshold.  Rejected:
       a crop that leaves the image (``border``), another candidate brighter than 1% of
       this one closer than ``size`` pixels (``neighbour``: its light would enter the
       crop), a peak at the largest value of an integer type (``saturated``).
    3. Centring: the peak's position by a parabola through the log-intensities of its
       3x3 neighbourhood, then, against the first flux-weighted mean, by upsampled phase
       correlation (1/20 px); each crop is moved by a Fourier shift (exact for a
       band-limited PSF) so the bead sits on the centre pixel.
    4. Shape: a crop whose correlation with the mean is below 0.7 times the median
       correlation (a cluster, debris, a bead out of focus) is rejected (``shape``).
    5. Each crop less its own background (a plane fitted to the ring around it out to
       ``size`` pixels, where no neighbour is allowed); the
       flux-weighted mean, less its outer ring's median (residual background), clipped at
       0 and normalised to sum 1.

Examples
--------
>>> import numpy as np
>>> from scipy.ndimage import fourier_shift
>>> from sharpscope.physics.psf import make_psf
>>> h = np.pad(make_psf(fc=0.2, size=33), 40)  # a PSF in a 113 x 113 field
>>> rng = np.random.default_rng(0)
>>> img = np.full((226, 226), 50.0)
>>> for y, x in [(56, 56), (56, 169), (169, 56), (169, 169)]:
...     d = rng.uniform(-0.5, 0.5, 2)
...     bead = np.fft.ifft2(fourier_shift(np.fft.fft2(h), d)).real
...     img[y - 56 : y + 57, x - 56 : x + 57] += 2e4 * bead
>>> est = measure_bead_psf(rng.poisson(img), size=33)
>>> est.psf.shape, int(est.positions.shape[0]), bool(abs(est.psf.sum() - 1) < 1e-5)
((33, 33), 4, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sharpscope.errors import ConfigError, InputError

__all__ = ["BeadPSF", "measure_bead_psf"]

NEIGHBOUR_SHARE = 0.01
"""A neighbour brighter than this share of a bead's peak, within ``size``, rejects it."""

SHAPE_SHARE = 0.7
"""A crop correlating less than this times the median correlation is rejected."""


@dataclass
class BeadPSF:
    """What :func:`measure_bead_psf` found.

    Attributes
    ----------
    psf : numpy.ndarray
        ``(S, S)`` float32, centred on the pixel ``S // 2``, summing to 1.
    positions : numpy.ndarray
        ``(N, 2)`` sub-pixel centres (row, column) of the beads averaged.
    flux : numpy.ndarray
        ``(N,)`` their background-subtracted flux (image units).
    rejected : dict
        Candidates left out, per reason (``border``, ``neighbour``, ``saturated``, ``shape``).
    fwhm, ee50 : float
        Of the PSF, in pixels (:func:`sharpscope.blind.measures.fwhm`, ``ee50``).
    background : float
        The median of the image (image units); each bead's own background comes from
        the ring around it.
    """

    psf: np.ndarray
    positions: np.ndarray
    flux: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)
    fwhm: float = float("nan")
    ee50: float = float("nan")
    background: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no PSF pixels)."""
        return {
            "psf_size": int(self.psf.shape[-1]),
            "beads": int(len(self.positions)),
            "positions": np.round(self.positions, 3).tolist(),
            "flux": [float(f) for f in self.flux],
            "rejected": dict(self.rejected),
            "fwhm": float(self.fwhm),
            "ee50": float(self.ee50),
            "background": float(self.background),
        }


def _plane(image: Any, axes: str | None) -> np.ndarray:
    try:
        arr = np.asarray(image)
    except Exception:  # noqa: BLE001 - anything numpy cannot take is refused in one line
        raise InputError("the bead image is not an array") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"the bead image must be numeric, got dtype {arr.dtype}")
    if axes is not None and len(axes) == arr.ndim and arr.ndim > 2:
        keep = [i for i, a in enumerate(axes) if a in "YX" or arr.shape[i] > 1]
        arr = arr.reshape([arr.shape[i] for i in keep])
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise InputError(
            f"a bead PSF is measured on one 2-D plane (the in-focus one), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError("the bead image holds NaN or infinite values")
    return arr


def _local_background(x: np.ndarray, y: int, x0: int, half: int, size: int) -> np.ndarray:
    """The background under the crop of half-side ``half`` at (y, x0): a plane fitted to
    the ring around it out to ``size`` pixels (where no neighbour is allowed), clipped to
    the image; the ring's pixels more than 3 spreads above the plane are left out (dim
    beads, hot pixels) and the plane fitted again."""
    h, w = x.shape
    ya, yb, xa, xb = max(y - size, 0), min(y + size + 1, h), max(x0 - size, 0), min(x0 + size + 1, w)
    ry, rx = np.mgrid[ya - y : yb - y, xa - x0 : xb - x0]
    ring = np.maximum(np.abs(ry), np.abs(rx)) > half
    v = x[ya:yb, xa:xb][ring]
    a = np.stack([np.ones_like(v), ry[ring], rx[ring]], axis=1).astype(np.float64)
    keep = np.ones(v.shape, dtype=bool)
    for _ in range(2):
        coef = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
        r = v - a @ coef
        spread = 1.4826 * float(np.median(np.abs(r[keep] - np.median(r[keep])))) or float(np.std(r)) or 1.0
        keep = r < 3.0 * spread
    cy, cx = np.mgrid[-half : half + 1, -half : half + 1]
    return coef[0] + coef[1] * cy + coef[2] * cx


def _parabolic(c: np.ndarray) -> tuple[float, float]:
    """Sub-pixel offset of the maximum of a 3x3 patch (parabola through the logs)."""
    v = np.log(np.maximum(c, 1e-12 * max(float(c.max()), 1e-30)))
    off = []
    for a, m, b in ((v[0, 1], v[1, 1], v[2, 1]), (v[1, 0], v[1, 1], v[1, 2])):
        den = a - 2 * m + b
        off.append(float(np.clip(0.5 * (a - b) / den, -0.5, 0.5)) if den < 0 else 0.0)
    return off[0], off[1]


def _shifted(crop: np.ndarray, dy: float, dx: float, size: int) -> np.ndarray:
    """``crop`` moved by (-dy, -dx) with a Fourier shift, its central ``size`` square."""
    from scipy.ndimage import fourier_shift

    out = np.fft.ifft2(fourier_shift(np.fft.fft2(crop), (-dy, -dx))).real
    m = (crop.shape[0] - size) // 2
    return out[m : m + size, m : m + size]


def measure_bead_psf(
    image: Any,
    size: int = 33,
    axes: str | None = None,
    *,
    min_snr: float = 10.0,
    max_beads: int = 500,
) -> BeadPSF:
    """Measure the 2-D PSF on an image of isolated sub-resolution beads.

    Parameters
    ----------
    image : array_like
        One 2-D plane (the in-focus one of a bead stack); any intensity scale, raw
        camera counts preferred.  Axes of length 1 are dropped.
    size : int
        Side of the PSF (odd, >= 7); beads closer than this to each other or to the
        border are not used.
    axes : str, optional
        Axes of ``image``, to drop its length-1 axes.
    min_snr : float
        Detection threshold, in robust spreads of the smoothed image above its median.
    max_beads : int
        The brightest usable beads averaged at most.

    Returns
    -------
    BeadPSF

    Raises
    ------
    InputError
        Not one 2-D numeric finite plane, smaller than the PSF, or no isolated bead.
    ConfigError
        ``size`` not an odd integer >= 7, bad ``min_snr`` or ``max_beads``.
    """
    from scipy.ndimage import gaussian_filter, maximum_filter
    from skimage.registration import phase_cross_correlation

    from sharpscope.blind.measures import ee50, fwhm

    if not (isinstance(size, (int, np.integer)) and size >= 7 and size % 2 == 1):
        raise ConfigError(f"the PSF size must be an odd integer >= 7, got {size!r}")
    if not (isinstance(min_snr, (int, float)) and np.isfinite(min_snr) and min_snr > 0):
        raise ConfigError(f"min_snr must be a positive number, got {min_snr!r}")
    if not (isinstance(max_beads, (int, np.integer)) and max_beads >= 1):
        raise ConfigError(f"max_beads must be a positive integer, got {max_beads!r}")
    raw = _plane(image, axes)
    x = raw.astype(np.float64)
    h, w = x.shape
    half = size // 2 + 4  # crops a little larger than the PSF: room for the shift
    if min(h, w) < 2 * half + 1:
        raise InputError(f"the bead image ({h}x{w}) is smaller than a {2 * half + 1}-pixel crop around a bead")
    background = float(np.median(x))
    # detection on a band-pass copy: a slowly varying background (uneven illumination) drops out
    s = gaussian_filter(x, 1.0) - gaussian_filter(x, size / 2.0)
    spread = 1.4826 * float(np.median(np.abs(s - np.median(s))))
    if not spread > 0:
        spread = float(np.std(s)) or 1.0
    peaks = (s == maximum_filter(s, size=5)) & (s > np.median(s) + min_snr * spread)
    ys, xs = np.nonzero(peaks)
    heights = s[ys, xs]
    order = np.argsort(-heights)
    ys, xs, heights = ys[order], xs[order], heights[order]
    saturated_at = np.iinfo(raw.dtype).max if raw.dtype.kind in "iu" else None

    rejected = {"border": 0, "neighbour": 0, "saturated": 0, "shape": 0}
    crops, peaks, offsets = [], [], []
    for i, (y, x0) in enumerate(zip(ys, xs, strict=True)):
        if len(crops) >= max_beads:
            break
        if y < half or x0 < half or y >= h - half or x0 >= w - half:
            rejected["border"] += 1
            continue
        near = (np.maximum(np.abs(ys - y), np.abs(xs - x0)) < size) & (heights > NEIGHBOUR_SHARE * heights[i])
        near[i] = False
        if near.any():
            rejected["neighbour"] += 1
            continue
        crop = x[y - half : y + half + 1, x0 - half : x0 + half + 1] - _local_background(x, y, x0, half, size)
        if saturated_at is not None and int(raw[y - 1 : y + 2, x0 - 1 : x0 + 2].max()) >= saturated_at:
            rejected["saturated"] += 1
            continue
        crops.append(crop)
        peaks.append((int(y), int(x0)))
        offsets.append(_parabolic(crop[half - 1 : half + 2, half - 1 : half + 2]))
    if not crops:
        found = len(ys)
        why = ", ".join(f"{k} {v}" for k, v in rejected.items() if v)
        raise InputError(
            f"found no isolated bead ({found} candidate(s) above {min_snr:g} spreads of the "
            f"background{'; rejected: ' + why if why else ''}); give an image of sparse "
            "sub-resolution beads, or a smaller PSF size"
        )

    def mean_of(items: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
        stack = np.stack(items)
        return np.tensordot(weights / weights.sum(), stack, axes=1)

    # the flux of each bead (background-subtracted crop sum), the weights of the mean
    flux = np.array([max(float(c.sum()), 1e-12) for c in crops])
    first = [_shifted(c, dy, dx, 2 * half + 1) for c, (dy, dx) in zip(crops, offsets, strict=True)]
    ref = mean_of([f / f.sum() if f.sum() > 0 else f for f in first], flux)
    # refine: register every crop to the first mean (1/20 px), then measure its shape
    aligned, final, corr = [], [], []
    core = ref[4:-4, 4:-4]
    for c, (dy, dx), f in zip(crops, offsets, first, strict=True):
        shift, _, _ = phase_cross_correlation(ref, f, upsample_factor=20, normalization=None)
        dy, dx = dy - float(shift[0]), dx - float(shift[1])
        a = _shifted(c, dy, dx, size)
        aligned.append(a)
        final.append((dy, dx))
        corr.append(float(np.corrcoef(a.ravel(), core.ravel())[0, 1]))
    corr_a = np.nan_to_num(np.array(corr), nan=0.0)
    good = corr_a >= SHAPE_SHARE * float(np.median(corr_a))
    rejected["shape"] = int((~good).sum())
    keep = np.nonzero(good)[0]
    psf = mean_of([aligned[k] / max(aligned[k].sum(), 1e-12) for k in keep], flux[keep])
    ring = np.ones_like(psf, dtype=bool)
    ring[2:-2, 2:-2] = False
    psf = np.clip(psf - float(np.median(psf[ring])), 0.0, None)
    total = float(psf.sum())
    if not total > 0:
        raise InputError("the averaged beads leave no signal above the background")
    psf = (psf / total).astype(np.float32)
    positions = np.array([np.add(peaks[k], final[k]) for k in keep], dtype=np.float64).reshape(-1, 2)
    return BeadPSF(
        psf=psf, positions=positions, flux=flux[keep], rejected=rejected,
        fwhm=float(fwhm(psf)), ee50=float(ee50(psf)), background=background,
    )
