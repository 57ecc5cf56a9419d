"""Classical baseline: alternating blind Richardson-Lucy (Fish et al., JOSA A 12, 1995).

The object ``x`` and the PSF ``h`` are updated in turn by Richardson-Lucy steps
of the Poisson likelihood of ``y ~ h * x``::

    h <- h . [x~ * (y / (h * x))] / sum(x)      (restricted to an S x S support, sum 1)
    x <- x . [h~ * (y / (h * x))]               (``~``: flipped, i.e. the adjoint)

``outer`` rounds of ``psf_steps`` PSF updates followed by ``object_steps``
object updates, starting from the flat object ``mean(y)`` and the initial PSF
(the aberration-free pupil PSF of the cut-off ``fc`` when known, else a
Gaussian of the width the cut-off estimated from the image implies).  The
image is mirrored at its borders and the blur is circular on the padded
grid.  This is the textbook alternating scheme with no prior: it is kept as a
baseline for the identification network (``benchmarks/bench_blind.py``) and
as an identifier that needs no weights (:class:`BlindRLIdentifier`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sharpscope.errors import ConfigError, InputError

__all__ = ["BlindRLIdentifier", "aberration_free_psf", "blind_richardson_lucy"]

_EPS = 1e-7


def aberration_free_psf(fc: float, size: int = 33) -> np.ndarray:
    """The diffraction-limited (unaberrated) pupil PSF of cut-off ``fc``, sum 1.

    Examples
    --------
    >>> h = aberration_free_psf(0.2, 17)
    >>> h.shape, round(float(h.sum()), 5), int(h.argmax()) == 8 * 17 + 8
    ((17, 17), 1.0, True)
    """
    from sharpscope.physics.psf import pupil_psf

    theta = torch.zeros(1, 0, dtype=torch.float64)
    return pupil_psf(theta, float(fc), size=int(size))[0].numpy().astype(np.float32)


def _gaussian(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _initial_psf(image: np.ndarray, fc: float | None, size: int) -> np.ndarray:
    if fc is not None:
        return aberration_free_psf(fc, size)
    from sharpscope.estimate import estimate_cutoff

    try:
        fc_est = float(estimate_cutoff(image))
    except InputError:
        fc_est = 0.2
    # the Airy core's standard deviation is about 0.21 wavelength / NA, i.e. 0.21 / fc pixels
    return _gaussian(size, max(0.5, 0.21 / max(fc_est, 1e-3)))


def blind_richardson_lucy(
    image: Any,
    fc: float | None = None,
    psf_size: int = 33,
    *,
    outer: int = 10,
    psf_steps: int = 5,
    object_steps: int = 5,
    initial_psf: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Alternating blind Richardson-Lucy on one 2-D image.

    Parameters
    ----------
    image : array_like
        2-D image, any non-negative intensity scale (negative pixels are clipped).
    fc : float, optional
        Cut-off frequency (cycles/pixel) of the initial, aberration-free PSF.
    psf_size : int
        Side of the (odd) PSF support.
    outer, psf_steps, object_steps : int
        Rounds, and PSF / object updates per round.
    initial_psf : array_like, optional
        Start from this PSF instead (``psf_size`` x ``psf_size``).

    Returns
    -------
    psf : numpy.ndarray
        ``(psf_size, psf_size)`` float32, sum 1, centre at ``psf_size // 2``.
    obj : numpy.ndarray
        The object estimate, the image's shape and units.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.kron(np.random.default_rng(0).random((6, 6)), np.ones((8, 8)))  # blocks
    >>> h, x = blind_richardson_lucy(img, fc=0.2, psf_size=15, outer=2)
    >>> h.shape, round(float(h.sum()), 4), x.shape
    ((15, 15), 1.0, (48, 48))
    """
    y = np.asarray(image, dtype=np.float64)
    if y.ndim != 2:
        raise InputError(f"blind Richardson-Lucy needs a 2-D image, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InputError("image contains NaN or Inf values")
    size = int(psf_size)
    if size < 3 or size % 2 == 0:
        raise ConfigError(f"psf_size must be an odd integer >= 3, got {psf_size!r}")
    for name, v in (("outer", outer), ("psf_steps", psf_steps), ("object_steps", object_steps)):
        if int(v) < 1:
            raise ConfigError(f"{name} must be >= 1, got {v!r}")
    h0 = _initial_psf(y, fc, size) if initial_psf is None else initial_psf
    h0 = np.asarray(h0, dtype=np.float64)
    if h0.shape != (size, size):
        raise ConfigError(f"initial_psf must be {size} x {size}, got {h0.shape}")
    y = np.clip(y, 0.0, None)
    scale = float(y.max())
    if scale <= 0:
        return (h0 / h0.sum()).astype(np.float32), np.zeros_like(y, dtype=np.float32)
    half = size // 2
    pad = [(min(half, n - 1), min(half, n - 1)) for n in y.shape]
    yp = torch.from_numpy(np.pad(y / scale, pad, mode="symmetric"))
    shape = tuple(yp.shape)
    # the PSF lives on the full grid, wrapped around the origin, masked to its support
    support = torch.zeros(shape, dtype=torch.float64)
    hgrid = torch.zeros(shape, dtype=torch.float64)
    idx = [torch.arange(-half, half + 1) % n for n in shape]
    support[idx[0][:, None], idx[1][None, :]] = 1.0
    hgrid[idx[0][:, None], idx[1][None, :]] = torch.from_numpy(h0 / h0.sum())
    x = torch.full(shape, float(yp.mean()), dtype=torch.float64)

    def conv(a: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(a) * fb, s=shape)

    for _ in range(int(outer)):
        fx = torch.fft.rfft2(x)
        for _ in range(int(psf_steps)):
            ratio = yp / conv(hgrid, fx).clamp(min=_EPS)
            corr = conv(ratio, fx.conj())  # x~ * ratio
            hgrid = (hgrid * corr / float(x.sum())) * support
            hgrid = hgrid.clamp(min=0.0)
            hgrid = hgrid / hgrid.sum().clamp(min=1e-300)
        fh = torch.fft.rfft2(hgrid)
        for _ in range(int(object_steps)):
            ratio = yp / conv(x, fh).clamp(min=_EPS)
            x = x * conv(ratio, fh.conj())
    h = hgrid[idx[0][:, None], idx[1][None, :]].numpy()
    crop = tuple(slice(p[0], p[0] + n) for p, n in zip(pad, y.shape, strict=True))
    obj = (x.numpy()[crop] * scale).astype(np.float32)
    return (h / h.sum()).astype(np.float32), obj


@dataclass(frozen=True)
class ClassicalPrediction:
    """What :meth:`BlindRLIdentifier.predict` returns (the fields of ``PSFPrediction``)."""

    psf: np.ndarray
    zernike: np.ndarray
    noll: tuple[int, ...]
    fc: np.ndarray
    noise: np.ndarray


class BlindRLIdentifier:
    """An identifier without weights: alternating blind RL on each patch.

    Same interface as the network's ``PSFIdentifier`` (``predict(patches, fc,
    theta_max)``), so :func:`sharpscope.blind.estimate_psf` can use it
    (``identifier='blind-rl'``).  It returns no Zernike coefficients; the
    noise is the classical estimate of each patch.

    Examples
    --------
    >>> import numpy as np
    >>> ident = BlindRLIdentifier(patch_size=32, psf_size=9, outer=1)
    >>> blocks = np.kron(np.random.default_rng(0).random((2, 4, 4)), np.ones((1, 8, 8)))
    >>> pred = ident.predict(blocks, fc=0.2)
    >>> pred.psf.shape, pred.zernike.shape
    ((2, 9, 9), (2, 0))
    """

    conditioned = True

    def __init__(self, patch_size: int = 128, psf_size: int = 33, **kw: Any) -> None:
        self.patch_size = int(patch_size)
        self.psf_size = int(psf_size)
        self.kw = kw

    def predict(
        self,
        patches: np.ndarray,
        fc: float | np.ndarray | None = None,
        theta_max: float | np.ndarray | None = None,
    ) -> ClassicalPrediction:
        from sharpscope.estimate import estimate_cutoff, estimate_noise

        p = np.asarray(patches, dtype=np.float32)
        n = len(p)
        fcs = np.broadcast_to(np.asarray(np.nan if fc is None else fc, np.float64), (n,))
        psfs, fc_out, noise = [], [], []
        for k in range(n):
            f = None if not math.isfinite(float(fcs[k])) else float(fcs[k])
            if f is None:
                try:
                    f = float(estimate_cutoff(p[k]))
                except InputError:
                    f = 0.2
            h, _ = blind_richardson_lucy(p[k], f, self.psf_size, **self.kw)
            psfs.append(h)
            fc_out.append(f)
            try:
                ne = estimate_noise(p[k])
                noise.append((ne.gain, ne.sigma))
            except InputError:
                noise.append((0.0, 0.0))
        return ClassicalPrediction(
            psf=np.stack(psfs).astype(np.float32),
            zernike=np.zeros((n, 0), np.float32),
            noll=(),
            fc=np.asarray(fc_out, np.float32),
            noise=np.asarray(noise, np.float32).reshape(n, 2),
        )
