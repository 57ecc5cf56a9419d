"""Measures of a PSF and of a PSF estimate.

:func:`fwhm`
    Full width at half maximum of a 2-D PSF as the diameter of the disc whose
    area equals the area above half the peak (measured on a 4x Fourier
    up-sampled copy, so it is meaningful below one pixel of resolution and
    for asymmetric PSFs).
:func:`ee50`
    Radius (pixels) of the disc around the PSF's centroid that holds half of
    its energy (50 % encircled energy).
:func:`relative_l2`, :func:`psf_snr`
    ``||h_hat - h|| / ||h||`` and the Deep-blur measure
    ``-20 log10(||h_hat - h|| / ||h||)`` in dB (Debarnot and Weiss, 2024).
:func:`reblur_psnr`
    PSNR of ``h_hat * x`` against ``h * x`` for an image ``x`` on [0, 1] (the
    blind-deconvolution poster's second measure).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sharpscope.errors import InputError

__all__ = ["ee50", "fwhm", "psf_snr", "reblur_psnr", "relative_l2"]

_UPSAMPLE = 4


def _psf2d(psf: Any) -> np.ndarray:
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise InputError(f"expected a 2-D PSF, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or not p.sum() > 0:
        raise InputError("PSF must be finite with a positive sum")
    return np.clip(p, 0.0, None) / p.sum()


def _upsample(p: np.ndarray, factor: int) -> np.ndarray:
    """Band-limited (zero-padded spectrum) interpolation of ``p`` by ``factor``."""
    ny, nx = p.shape
    spec = np.fft.fftshift(np.fft.fft2(p))
    big = np.zeros((ny * factor, nx * factor), dtype=complex)
    # the zero frequency goes to the middle of the big spectrum (index N // 2 for even and odd n)
    y0, x0 = (ny * factor) // 2 - ny // 2, (nx * factor) // 2 - nx // 2
    big[y0 : y0 + ny, x0 : x0 + nx] = spec
    return np.real(np.fft.ifft2(np.fft.ifftshift(big))) * factor * factor


def fwhm(psf: Any) -> float:
    """Full width at half maximum (pixels), as an equivalent-disc diameter.

    Parameters
    ----------
    psf : array_like
        2-D PSF (any normalisation).

    Returns
    -------
    float
        ``2 sqrt(A / pi)`` with ``A`` the area (pixels) where the up-sampled
        PSF is at least half its maximum.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.arange(-16, 17)
    >>> g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 2.0**2))
    >>> round(fwhm(g), 1)  # 2 sqrt(2 ln 2) sigma = 4.71
    4.7
    """
    p = _psf2d(psf)
    up = _upsample(p, _UPSAMPLE)
    area = float(np.count_nonzero(up >= 0.5 * up.max())) / _UPSAMPLE**2
    return 2.0 * math.sqrt(area / math.pi)


def ee50(psf: Any) -> float:
    """Radius (pixels) holding 50 % of the PSF's energy, around its centroid.

    Measured on the 4x up-sampled PSF (as :func:`fwhm`).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.arange(-16, 17)
    >>> g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 2.0**2))
    >>> round(ee50(g), 1)  # sigma sqrt(2 ln 2) = 2.35 for a Gaussian
    2.4
    """
    p = np.clip(_upsample(_psf2d(psf), _UPSAMPLE), 0.0, None)
    p /= p.sum()
    yy, xx = np.indices(p.shape, dtype=np.float64) / _UPSAMPLE
    cy, cx = float((p * yy).sum()), float((p * xx).sum())
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    cum = np.cumsum(p.ravel()[order])
    k = int(np.searchsorted(cum, 0.5))
    if k == 0:
        return float(r[order[0]])
    # linear interpolation between the two radii that bracket one half
    r0, r1 = r[order[k - 1]], r[order[k]]
    c0, c1 = cum[k - 1], cum[k]
    t = (0.5 - c0) / max(c1 - c0, 1e-300)
    return float(r0 + t * (r1 - r0))


def relative_l2(estimate: Any, truth: Any) -> float:
    """``||estimate - truth|| / ||truth||`` (both normalised to sum 1 first).

    Examples
    --------
    >>> import numpy as np
    >>> h = np.ones((3, 3)) / 9
    >>> relative_l2(h, h)
    0.0
    """
    a, b = _psf2d(estimate), _psf2d(truth)
    if a.shape != b.shape:
        raise InputError(f"PSF shapes differ: {a.shape} and {b.shape}")
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def psf_snr(estimate: Any, truth: Any) -> float:
    """Deep-blur's PSF SNR ``-20 log10(||h_hat - h|| / ||h||)`` in dB.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.ones((3, 3)) / 9
    >>> e = h + np.array([[0, 0, 0], [0, 0.04, 0], [0, 0, 0]])  # renormalised inside
    >>> round(psf_snr(e, h), 1)
    19.3
    """
    return float(-20.0 * math.log10(max(relative_l2(estimate, truth), 1e-12)))


def reblur_psnr(estimate: Any, truth: Any, image: Any) -> float:
    """PSNR (dB, peak 1) of ``estimate * image`` against ``truth * image``.

    ``image`` should lie on [0, 1]; both blurs are circular (FFT).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> h = np.ones((3, 3)) / 9
    >>> reblur_psnr(h, h, x) > 100
    True
    """
    from sharpscope.physics.blur import fft_convolve

    a, b = _psf2d(estimate), _psf2d(truth)
    x = np.asarray(image, dtype=np.float64)
    ya = fft_convolve(x, a, boundary="circular")
    yb = fft_convolve(x, b, boundary="circular")
    mse = float(np.mean((ya - yb) ** 2))
    return float(10.0 * math.log10(1.0 / max(mse, 1e-30)))
