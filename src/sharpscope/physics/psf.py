"""Point-spread functions from a pupil: Zernike-parameterised and from optics.

The model is scalar Fourier optics (see ``docs/physics.md``)::

    h(x) = | F[ P(f) exp(-2 pi i (phi(f) + z kz(f))) ](x) |^2,   normalised to sum 1

with ``F[g](x) = sum_f g(f) exp(-2 pi i f . x)``, the pupil ``P`` the disc
``|f| <= fc`` (``fc`` in cycles/pixel), the aberration ``phi = sum_k c_k Z_k(f / fc)``
in waves (Noll-indexed, RMS-normalised Zernike polynomials, see
:mod:`sharpscope.physics.zernike`) and, for 3-D stacks, the angular-spectrum
defocus ``kz(f) = sqrt(kb^2 - |f|^2)`` with ``kb = n * pixel / wavelength``.  The
pupil's ``x`` runs along the image columns (``X``) and its ``y`` along the rows
(``Y``); the PSF centre is the pixel ``size // 2``.  These are the conventions of deepinv's
``DiffractionBlurGenerator`` (same coefficients and ``fc`` give the same PSF).

Implementation: the pupil is sampled on a grid of normalised coordinates
``u = f / fc`` with ``R`` samples per pupil radius and an anti-aliased rim; the
field is evaluated only on the requested output pixels with two small matrix
products (a pruned 2-D DFT), so every sample of a batch can have its own ``fc``
and nothing is wasted on pixels that are cropped away.  ``R`` is chosen so that
the periodic replicas of the PSF (period ``R / fc`` pixels) stay far from the
output window, taking the spread caused by the aberrations and the defocus into
account.  Everything is plain torch and differentiable in the coefficients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from sharpscope.errors import ConfigError
from sharpscope.physics.zernike import wavefront, zernike, zernike_xy

__all__ = [
    "cutoff_frequency",
    "pupil_psf",
    "widefield_psf",
    "confocal_psf",
    "make_psf",
    "otf",
    "psf_figure",
]

#: minimum number of pupil samples per pupil radius
MIN_PUPIL_SAMPLES = 48
_SAMPLE_STEP = 8  # R is rounded up to a multiple of this (fewer cache entries)
_MAX_PUPIL_SAMPLES = 1024


# --------------------------------------------------------------------------- helpers
def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return v


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) < 1:
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    return int(size)


def _check_fc(fc: float) -> float:
    fc = _positive("fc (cut-off frequency)", fc)
    if fc > 0.5:
        raise ConfigError(
            f"cut-off frequency fc={fc:.4g} cycles/pixel is above 0.5: the pupil does not fit"
            " the pixel grid (use smaller pixels or a lower NA)"
        )
    return fc


def cutoff_frequency(na: float, wavelength: float, pixel_size: float) -> float:
    """Coherent cut-off frequency ``fc = NA * pixel / wavelength`` in cycles/pixel.

    Parameters
    ----------
    na : float
        Numerical aperture.
    wavelength : float
        Wavelength in nm.
    pixel_size : float
        Pixel size in the sample plane in um.

    Examples
    --------
    >>> round(cutoff_frequency(1.0, 500.0, 0.1), 6)
    0.2
    """
    na = _positive("NA", na)
    wavelength = _positive("wavelength", wavelength)
    pixel_size = _positive("pixel size", pixel_size)
    return na * pixel_size * 1000.0 / wavelength


def _coefficients(zernike_coeffs: Any, dtype: torch.dtype) -> torch.Tensor:
    if zernike_coeffs is None:
        return torch.zeros(0, dtype=dtype)
    if isinstance(zernike_coeffs, torch.Tensor):
        t = zernike_coeffs.to(dtype)
    else:
        try:
            arr = np.asarray(zernike_coeffs, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError("Zernike coefficients must be numbers") from None
        t = torch.as_tensor(arr, dtype=dtype)
    if t.ndim != 1:
        raise ConfigError("Zernike coefficients must be a flat list of numbers")
    if not bool(torch.isfinite(t).all()):
        raise ConfigError("Zernike coefficients must be finite numbers")
    return t


# --------------------------------------------------------------------------- pupil grid
@lru_cache(maxsize=32)
def _grid_np(samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalised pupil coordinates ``u`` (M,), radius, azimuth and rim weights (M, M)."""
    u = np.arange(-samples, samples + 1, dtype=np.float64) / samples
    # deepinv's convention: pupil x along the image columns (X), y along the rows (Y)
    ux, uy = np.meshgrid(u, u, indexing="xy")
    rho = np.hypot(ux, uy)
    angle = np.arctan2(uy, ux)
    # anti-aliased rim: a linear ramp one sample wide centred on rho = 1 (the fraction
    # of each sample's cell inside the disc for a locally straight edge)
    weight = np.clip((1.0 - rho) * samples + 0.5, 0.0, 1.0)
    return u, rho, angle, weight


@lru_cache(maxsize=64)
def _basis_np(samples: int, noll_start: int, count: int) -> np.ndarray:
    """Zernike polynomials ``noll_start .. noll_start+count-1`` on the grid, (K, M*M)."""
    _, rho, angle, _ = _grid_np(samples)
    out = np.empty((count, rho.size), dtype=np.float64)
    for k in range(count):
        out[k] = zernike(noll_start + k, rho, angle).ravel()
    return out


@lru_cache(maxsize=128)
def _grid_t(samples: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    u, _, _, weight = _grid_np(samples)
    return (
        torch.as_tensor(u, dtype=dtype, device=device),
        torch.as_tensor(weight, dtype=dtype, device=device),
    )


@lru_cache(maxsize=128)
def _basis_t(
    samples: int, noll_start: int, count: int, dtype: torch.dtype, device: str
) -> torch.Tensor:
    return torch.as_tensor(_basis_np(samples, noll_start, count), dtype=dtype, device=device)


@lru_cache(maxsize=64)
def _gradient_basis(noll_start: int, count: int) -> torch.Tensor:
    """Gradients of the Zernike polynomials at points of the unit disc, (K, 2 * G)."""
    r = np.linspace(0.0, 1.0, 17)[:, None]
    t = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)[None, :]
    x = (r * np.cos(t)).ravel()
    y = (r * np.sin(t)).ravel()
    h = 1e-6
    out = np.empty((count, 2 * x.size), dtype=np.float64)
    for k in range(count):
        j = noll_start + k
        gx = (zernike_xy(j, x + h, y) - zernike_xy(j, x - h, y)) / (2 * h)
        gy = (zernike_xy(j, x, y + h) - zernike_xy(j, x, y - h)) / (2 * h)
        out[k] = np.concatenate([gx, gy])
    return torch.as_tensor(out)


def _auto_samples(fc_max: float, extent: int, spread_waves: float) -> int:
    """Pupil samples per radius so that replicas (period R/fc px) clear the window.

    ``spread_waves`` bounds the wavefront slope in waves per unit normalised radius; the
    geometric spread of the PSF is ``spread_waves / fc`` pixels.
    """
    need = 2.0 * fc_max * extent + 2.0 * spread_waves
    samples = max(MIN_PUPIL_SAMPLES, int(math.ceil(need)))
    samples = _SAMPLE_STEP * int(math.ceil(samples / _SAMPLE_STEP))
    if samples > _MAX_PUPIL_SAMPLES:
        raise ConfigError(
            "the requested PSF is too large or too strongly aberrated/defocused to sample"
            f" (needs {samples} pupil samples per radius, limit {_MAX_PUPIL_SAMPLES})"
        )
    return samples


def _zernike_spread(theta: torch.Tensor, noll_start: int) -> float:
    """Largest wavefront slope (waves per unit pupil radius) over a batch of coefficients."""
    if theta.numel() == 0:
        return 0.0
    coeffs = theta.detach().to("cpu", torch.float64).reshape(-1, theta.shape[-1])
    grads = coeffs @ _gradient_basis(noll_start, theta.shape[-1])  # (B, 2G)
    half = grads.shape[-1] // 2
    slope = torch.sqrt(grads[:, :half].square() + grads[:, half:].square())
    return float(slope.max())


def _field(
    phase: torch.Tensor | None,
    fc: torch.Tensor,
    positions: torch.Tensor,
    samples: int,
    batch: int,
) -> torch.Tensor:
    """Complex field ``(B, S, S)`` at pixel offsets ``positions`` (rows and columns).

    ``phase`` is ``(B, M, M)`` in waves (or None for a flat wavefront), ``fc`` ``(B,)``
    or ``(1,)`` in cycles/pixel.
    """
    real = positions.dtype
    u, weight = _grid_t(samples, real, str(positions.device))
    if phase is None:
        pupil = torch.complex(weight, torch.zeros_like(weight)).expand(batch, -1, -1)
    else:
        angle = (-2.0 * math.pi) * phase
        pupil = torch.complex(weight * torch.cos(angle), weight * torch.sin(angle))
    # DFT matrices exp(-2 pi i x f), f = fc * u, one per sample when fc varies
    arg = (-2.0 * math.pi) * positions[None, :, None] * (fc[:, None, None] * u[None, None, :])
    dft = torch.complex(torch.cos(arg), torch.sin(arg))  # (B or 1, S, M)
    return dft @ pupil @ dft.transpose(-1, -2)


def _intensity(field: torch.Tensor) -> torch.Tensor:
    return field.real.square() + field.imag.square()


def _positions(size: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
    return torch.arange(size, dtype=dtype, device=device) - (size // 2)


def _normalise(psf: torch.Tensor, ndim: int) -> torch.Tensor:
    dims = tuple(range(-ndim, 0))
    return psf / psf.sum(dim=dims, keepdim=True)


# --------------------------------------------------------------------------- Zernike PSFs
def pupil_psf(
    theta: torch.Tensor,
    fc: float | torch.Tensor,
    size: int = 33,
    noll_start: int = 4,
    *,
    pupil_samples: int | None = None,
) -> torch.Tensor:
    """Batch of 2-D diffraction PSFs from Zernike coefficients (the poster's eq. 2).

    ``h = |F(P exp(-2 pi i sum_k theta_k Z_k))|^2`` with the pupil ``P`` a disc of
    radius ``fc`` cycles/pixel, cropped to ``size x size`` around the pixel
    ``size // 2`` and normalised to sum 1.  Same conventions as deepinv's
    ``DiffractionBlurGenerator`` (coefficients in waves RMS, Noll indices,
    ``x`` along the columns); differentiable in ``theta`` (and in a tensor ``fc``).

    Parameters
    ----------
    theta : torch.Tensor
        ``(B, K)`` coefficients (waves) for Noll indices ``noll_start .. noll_start+K-1``;
        ``K`` may be 0.  Its dtype (float32/float64) and device are used throughout.
    fc : float or torch.Tensor
        Cut-off frequency in cycles/pixel, ``0 < fc <= 0.5`` (0.25 is the Shannon limit
        of the intensity PSF); a ``(B,)`` tensor gives every PSF its own ``fc``.
    size : int
        Output side length.
    noll_start : int
        Noll index of the first coefficient (4 skips piston and tilts).
    pupil_samples : int, optional
        Pupil samples per radius; chosen automatically (at least 48) when omitted.

    Returns
    -------
    torch.Tensor
        ``(B, size, size)``, each PSF summing to 1.

    Examples
    --------
    >>> import torch
    >>> theta = torch.tensor([[0.0, 0.1, 0.0]])  # Z5 = 0.1 wave RMS oblique astigmatism
    >>> h = pupil_psf(theta, fc=0.2, size=33)
    >>> tuple(h.shape), round(float(h.sum()), 5)
    ((1, 33, 33), 1.0)
    """
    if not isinstance(theta, torch.Tensor):
        theta = torch.as_tensor(np.asarray(theta, dtype=np.float32))
    if theta.ndim != 2:
        raise ConfigError(f"theta must have shape (B, K), got {tuple(theta.shape)}")
    if not theta.is_floating_point():
        theta = theta.to(torch.float32)
    size = _check_size(size)
    if isinstance(noll_start, bool) or int(noll_start) < 1:
        raise ConfigError(f"noll_start must be an integer >= 1, got {noll_start!r}")
    noll_start = int(noll_start)
    batch, count = theta.shape
    dtype, device = theta.dtype, theta.device

    if isinstance(fc, torch.Tensor):
        fc_t = fc.to(dtype=dtype, device=device).reshape(-1)
        if fc_t.numel() not in (1, batch):
            raise ConfigError(f"fc must be a float or have shape ({batch},), got {tuple(fc.shape)}")
        for v in fc_t.detach().cpu().tolist():
            _check_fc(v)
        fc_max = float(fc_t.detach().max())
    else:
        fc_max = _check_fc(fc)
        fc_t = torch.full((1,), fc_max, dtype=dtype, device=device)

    if pupil_samples is None:
        samples = _auto_samples(fc_max, size, _zernike_spread(theta, noll_start))
    else:
        samples = int(pupil_samples)
        if samples < 4:
            raise ConfigError(f"pupil_samples must be >= 4, got {pupil_samples!r}")

    m = 2 * samples + 1
    if count:
        basis = _basis_t(samples, noll_start, count, dtype, str(device))
        phase = (theta @ basis).reshape(batch, m, m)
    else:
        phase = None
    positions = _positions(size, dtype, device)
    psf = _intensity(_field(phase, fc_t, positions, samples, batch))
    return _normalise(psf, 2)


# --------------------------------------------------------------------------- optics
def _check_optics(na: Any, wavelength: Any, pixel_size: Any, refractive_index: Any):
    na = _positive("NA", na)
    wavelength = _positive("wavelength", wavelength)
    pixel_size = _positive("pixel size", pixel_size)
    n = _positive("refractive index", refractive_index)
    if na >= n:
        raise ConfigError(f"NA ({na:g}) must be smaller than the refractive index ({n:g})")
    fc = na * pixel_size * 1000.0 / wavelength
    if fc > 0.5:
        raise ConfigError(
            f"pixel size {pixel_size:g} um is too coarse for NA {na:g} at {wavelength:g} nm"
            f" (fc={fc:.3g} cycles/pixel > 0.5); use pixels below"
            f" {0.5 * wavelength / 1000.0 / na:.3g} um"
        )
    return na, wavelength, pixel_size, n


def _check_stack(z_planes: Any, z_step: Any) -> tuple[int | None, float | None]:
    if z_planes is None and z_step is None:
        return None, None
    if z_planes is None or z_step is None:
        raise ConfigError("a 3-D PSF needs both z_planes and z_step")
    if isinstance(z_planes, bool) or not isinstance(z_planes, (int, np.integer)) or z_planes < 1:
        raise ConfigError(f"z_planes must be a positive integer, got {z_planes!r}")
    return int(z_planes), _positive("z step", z_step)


def _optics_intensity(
    na: float,
    wavelength: float,
    pixel_size: float,
    n: float,
    positions: torch.Tensor,
    z_um: torch.Tensor,
    coeffs: torch.Tensor,
) -> torch.Tensor:
    """Unnormalised intensity ``(Z, S, S)`` of a widefield PSF at ``positions`` (px)."""
    dtype, device = positions.dtype, positions.device
    fc = na * pixel_size * 1000.0 / wavelength
    kb = n * pixel_size * 1000.0 / wavelength
    z_px = z_um.to(dtype) / pixel_size
    planes = z_px.numel()
    defocus_slope = float(z_px.detach().abs().max()) * fc * fc / math.sqrt(kb * kb - fc * fc)
    spread = defocus_slope + _zernike_spread(coeffs.reshape(1, -1), 4)
    samples = _auto_samples(fc, positions.numel(), spread)
    m = 2 * samples + 1
    u, _ = _grid_t(samples, dtype, str(device))
    phase = None
    if coeffs.numel():
        basis = _basis_t(samples, 4, coeffs.numel(), dtype, str(device))
        phase = (coeffs.to(dtype=dtype, device=device) @ basis).reshape(1, m, m)
    if planes > 1 or float(z_px.detach().abs().max()) > 0:
        f2 = (fc * fc) * (u[:, None].square() + u[None, :].square())
        kz = torch.sqrt(torch.clamp(kb * kb - f2, min=0.0)) - kb  # waves per pixel of z
        prop = z_px[:, None, None] * kz[None]
        phase = prop if phase is None else phase + prop
    fc_t = torch.full((1,), fc, dtype=dtype, device=device)
    return _intensity(_field(phase, fc_t, positions, samples, planes))


def _z_positions(z_planes: int | None, z_step: float | None, dtype: torch.dtype) -> torch.Tensor:
    if z_planes is None:
        return torch.zeros(1, dtype=dtype)
    return (torch.arange(z_planes, dtype=dtype) - (z_planes // 2)) * z_step


def widefield_psf(
    na: float,
    wavelength: float,
    pixel_size: float,
    refractive_index: float = 1.33,
    size: int = 33,
    z_planes: int | None = None,
    z_step: float | None = None,
    zernike: Sequence[float] | torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Scalar widefield (emission) PSF from the optics, in 2-D or as a 3-D stack.

    The pupil is the disc ``|f| <= NA / wavelength``; planes of a stack are
    obtained by angular-spectrum propagation of the pupil, i.e. the phase
    ``-2 pi z (sqrt((n / wavelength)^2 - |f|^2) - n / wavelength)``.  Plane
    ``z_planes // 2`` is the focal plane and plane ``k`` lies at
    ``(k - z_planes // 2) * z_step`` um.  A 3-D stack is normalised to sum 1 as a
    whole (so each plane keeps its share of the energy inside the window).

    Parameters
    ----------
    na : float
        Numerical aperture (smaller than ``refractive_index``).
    wavelength : float
        Emission wavelength in nm.
    pixel_size : float
        Lateral pixel size in the sample plane, in um (``fc = NA * pixel / wavelength``
        must not exceed 0.5 cycles/pixel; the Nyquist condition is ``fc <= 0.25``).
    refractive_index : float
        Refractive index of the immersion medium (and sample).
    size : int
        Lateral side length in pixels.
    z_planes, z_step : int and float, optional
        Number of planes and their spacing in um for a 3-D PSF (both or neither).
    zernike : sequence of float, optional
        Aberration coefficients in waves RMS for Noll indices 4, 5, 6, ...

    Returns
    -------
    torch.Tensor
        ``(size, size)`` or ``(z_planes, size, size)``, summing to 1.

    Examples
    --------
    >>> h = widefield_psf(na=1.2, wavelength=520, pixel_size=0.065, size=21)
    >>> tuple(h.shape), int(h.argmax()) == 10 * 21 + 10
    ((21, 21), True)
    >>> widefield_psf(0.8, 520, 0.1, size=17, z_planes=5, z_step=0.3).shape
    torch.Size([5, 17, 17])
    """
    na, wavelength, pixel_size, n = _check_optics(na, wavelength, pixel_size, refractive_index)
    size = _check_size(size)
    z_planes, z_step = _check_stack(z_planes, z_step)
    coeffs = _coefficients(zernike, dtype)
    positions = _positions(size, dtype, "cpu")
    z_um = _z_positions(z_planes, z_step, dtype)
    psf = _optics_intensity(na, wavelength, pixel_size, n, positions, z_um, coeffs)
    psf = psf / psf.sum()
    return psf if z_planes is not None else psf[0]


@lru_cache(maxsize=64)
def _disc_kernel(radius_px: float, half: int) -> np.ndarray:
    """Area fractions of a disc of radius ``radius_px`` on pixels ``-half .. half``."""
    sub = 8
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    grid = np.arange(-half, half + 1, dtype=np.float64)
    fine = (grid[:, None] + offs[None, :]).ravel()
    inside = np.hypot(fine[:, None], fine[None, :]) <= radius_px
    kernel = inside.reshape(grid.size, sub, grid.size, sub).mean(axis=(1, 3))
    if kernel.sum() == 0:  # smaller than the sub-sampling: a point
        kernel[half, half] = 1.0
    return kernel


def _valid_convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'valid' 2-D convolution of ``(Z, L, L)`` with a symmetric ``(K, K)`` kernel (FFT)."""
    length = image.shape[-1]
    k = kernel.shape[-1]
    full = length + k - 1
    spec = torch.fft.rfft2(image, s=(full, full)) * torch.fft.rfft2(kernel, s=(full, full))
    out = torch.fft.irfft2(spec, s=(full, full))
    return out[..., k - 1 : length, k - 1 : length]


def confocal_psf(
    na: float,
    wavelength_ex: float,
    wavelength_em: float,
    pixel_size: float,
    pinhole: float | None,
    refractive_index: float = 1.33,
    size: int = 33,
    z_planes: int | None = None,
    z_step: float | None = None,
    zernike: Sequence[float] | torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Confocal PSF: ``h_ex * (h_em convolved with the back-projected pinhole)``.

    ``h_ex`` and ``h_em`` are scalar widefield PSFs (see :func:`widefield_psf`) at
    the excitation and emission wavelengths; the pinhole is a disc whose
    *diameter* ``pinhole`` is given in um in the sample plane (the physical
    pinhole diameter divided by the magnification between sample and pinhole).
    ``pinhole`` of 0 or None is an ideal point detector (``h_ex * h_em``); a
    pinhole much larger than the PSF (e.g. the m-rBCR paper's 1000 um) detects
    everything and leaves ``h_ex``.  Aberrations are the same optical path
    difference for both beams: ``zernike`` is in waves at the emission wavelength
    and is scaled by ``wavelength_em / wavelength_ex`` for the excitation.

    Parameters
    ----------
    na, pixel_size, refractive_index, size, z_planes, z_step, zernike
        As in :func:`widefield_psf`.
    wavelength_ex, wavelength_em : float
        Excitation and emission wavelengths in nm.
    pinhole : float or None
        Back-projected pinhole diameter in um.

    Returns
    -------
    torch.Tensor
        ``(size, size)`` or ``(z_planes, size, size)``, summing to 1.

    Examples
    --------
    >>> h = confocal_psf(1.2, 488, 520, 0.04, pinhole=0.1, size=25)
    >>> tuple(h.shape), round(float(h.sum()), 5)
    ((25, 25), 1.0)
    """
    na, wavelength_em, pixel_size, n = _check_optics(
        na, wavelength_em, pixel_size, refractive_index
    )
    _check_optics(na, wavelength_ex, pixel_size, n)
    wavelength_ex = float(wavelength_ex)
    size = _check_size(size)
    z_planes, z_step = _check_stack(z_planes, z_step)
    if pinhole is None:
        pinhole = 0.0
    try:
        pinhole = float(pinhole)
    except (TypeError, ValueError):
        raise ConfigError(f"pinhole must be a number, got {pinhole!r}") from None
    if not math.isfinite(pinhole) or pinhole < 0:
        raise ConfigError(f"pinhole must be a non-negative number (um), got {pinhole!r}")
    coeffs = _coefficients(zernike, dtype)
    z_um = _z_positions(z_planes, z_step, dtype)
    positions = _positions(size, dtype, "cpu")

    h_ex = _optics_intensity(
        na, wavelength_ex, pixel_size, n, positions, z_um, coeffs * (wavelength_em / wavelength_ex)
    )
    radius = 0.5 * pinhole / pixel_size  # pixels
    fc_em = na * pixel_size * 1000.0 / wavelength_em
    kb_em = n * pixel_size * 1000.0 / wavelength_em
    defocus_spread = float(z_um.abs().max()) / pixel_size * fc_em / math.sqrt(kb_em**2 - fc_em**2)
    # beyond this radius the disc holds all but ~1% of the emission PSF around every
    # output pixel: the detector sees a constant, which the normalisation removes
    big = size / math.sqrt(2.0) + 10.0 / fc_em + defocus_spread
    if radius >= big:
        h = h_ex
    elif radius * 2 < 1.0 / 8:  # far below a pixel: an ideal point detector
        h = h_ex * _optics_intensity(na, wavelength_em, pixel_size, n, positions, z_um, coeffs)
    else:
        half = int(math.ceil(radius)) + 1
        kernel = torch.as_tensor(_disc_kernel(radius, half), dtype=dtype)
        ext = _positions(size + 2 * half, dtype, "cpu")
        h_em = _optics_intensity(na, wavelength_em, pixel_size, n, ext, z_um, coeffs)
        h = h_ex * _valid_convolve(h_em, kernel).clamp_min(0.0)
    h = h / h.sum()
    return h if z_planes is not None else h[0]


# --------------------------------------------------------------------------- numpy API
def make_psf(
    *,
    na: float | None = None,
    wavelength: float | None = None,
    pixel_size: float | None = None,
    refractive_index: float | None = None,
    z_step: float | None = None,
    z_planes: int | None = None,
    confocal: bool = False,
    pinhole: float | None = None,
    excitation: float | None = None,
    fc: float | None = None,
    zernike: Sequence[float] | None = None,
    size: int = 33,
) -> np.ndarray:
    """PSF as a float32 numpy array; the Python twin of ``sharpscope psf``.

    Give either the optics (``na``, ``wavelength`` (emission, nm), ``pixel_size``
    (um), optionally ``refractive_index`` (default 1.33, water), a z-stack with ``z_step``/``z_planes``,
    ``confocal=True`` with ``pinhole`` (back-projected diameter, um) and
    ``excitation`` (nm, defaults to ``wavelength``)) or a bare cut-off frequency
    ``fc`` in cycles/pixel (2-D only).  ``zernike`` lists aberration
    coefficients in waves RMS from Noll index 4 on.

    Returns
    -------
    numpy.ndarray
        float32 ``(size, size)`` (axes YX) or ``(z_planes, size, size)`` (ZYX), sum 1.

    Examples
    --------
    >>> h = make_psf(na=1.4, wavelength=520, pixel_size=0.065, refractive_index=1.518)
    >>> h.shape, h.dtype
    ((33, 33), dtype('float32'))
    >>> make_psf(fc=0.2, zernike=[0.0, 0.1], size=17).shape
    (17, 17)
    """
    optics = {"na": na, "wavelength": wavelength, "pixel_size": pixel_size}
    given = [k for k, v in optics.items() if v is not None]
    if fc is not None:
        if given:
            raise ConfigError("give either fc or the optics (NA, wavelength, pixel size), not both")
        if z_planes is not None or z_step is not None or confocal or refractive_index is not None:
            raise ConfigError(
                "z-stacks, confocal PSFs and the refractive index need the optics"
                " (NA, wavelength, pixel size) instead of fc"
            )
        if pinhole is not None or excitation is not None:
            raise ConfigError("pinhole and excitation wavelength only apply to a confocal PSF")
        theta = _coefficients(zernike, torch.float32).reshape(1, -1)
        return pupil_psf(theta, _check_fc(fc), size=size)[0].numpy().astype(np.float32)
    if len(given) != 3:
        missing = ", ".join(k for k in optics if optics[k] is None)
        raise ConfigError(f"give fc or all of NA, wavelength and pixel size (missing: {missing})")
    if refractive_index is None:
        refractive_index = 1.33
    if confocal:
        if pinhole is None:
            raise ConfigError("a confocal PSF needs the pinhole diameter (um, back-projected)")
        psf = confocal_psf(
            na,
            excitation if excitation is not None else wavelength,
            wavelength,
            pixel_size,
            pinhole,
            refractive_index=refractive_index,
            size=size,
            z_planes=z_planes,
            z_step=z_step,
            zernike=zernike,
        )
    else:
        if pinhole is not None or excitation is not None:
            raise ConfigError("pinhole and excitation wavelength only apply to a confocal PSF")
        psf = widefield_psf(
            na,
            wavelength,
            pixel_size,
            refractive_index=refractive_index,
            size=size,
            z_planes=z_planes,
            z_step=z_step,
            zernike=zernike,
        )
    return psf.numpy().astype(np.float32)


# --------------------------------------------------------------------------- display
def otf(psf: np.ndarray | torch.Tensor) -> np.ndarray:
    """Modulus of the optical transfer function, centred, normalised to 1 at zero frequency.

    Examples
    --------
    >>> o = otf(make_psf(fc=0.2, size=32))
    >>> o.shape, round(float(o[16, 16]), 6)
    ((32, 32), 1.0)
    """
    arr = psf.detach().cpu().numpy() if isinstance(psf, torch.Tensor) else np.asarray(psf)
    arr = arr.astype(np.float64)
    spec = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(arr))))
    return spec / arr.sum()


def psf_figure(
    psf: np.ndarray,
    pixel_size: float | None = None,
    z_step: float | None = None,
    fc: float | None = None,
    zernike: Sequence[float] | None = None,
    title: str | None = None,
):
    """Figure of a PSF: log-scale PSF (and XZ section), OTF modulus, pupil phase.

    Parameters
    ----------
    psf : numpy.ndarray
        ``(Y, X)`` or ``(Z, Y, X)``.
    pixel_size, z_step : float, optional
        In um; axes are labelled in um (else in pixels).
    fc : float, optional
        Cut-off frequency (cycles/pixel); the OTF support ``2 fc`` is drawn as a circle.
    zernike : sequence of float, optional
        Coefficients from Noll index 4 (waves) for the pupil-phase panel.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Built with the Agg canvas (no display needed).

    Examples
    --------
    >>> fig = psf_figure(make_psf(fc=0.2, size=17), fc=0.2)
    >>> len(fig.axes) >= 3
    True
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    psf = np.asarray(psf, dtype=np.float64)
    is3d = psf.ndim == 3
    unit = "um" if pixel_size else "px"
    px = pixel_size or 1.0
    dz = z_step if (z_step and pixel_size) else 1.0
    ncols = 4 if is3d else 3
    fig = Figure(figsize=(4.0 * ncols, 4.0), layout="constrained")
    axes = fig.subplots(1, ncols)
    peak = psf.max()
    norm = LogNorm(vmin=peak * 1e-4, vmax=peak)
    clipped = np.clip(psf, peak * 1e-4, None)
    section = clipped[psf.shape[0] // 2] if is3d else clipped
    ny, nx = section.shape
    extent = [-(nx // 2) * px - px / 2, (nx - 1 - nx // 2) * px + px / 2]
    extent += [(ny - 1 - ny // 2) * px + px / 2, -(ny // 2) * px - px / 2]
    im = axes[0].imshow(section, norm=norm, cmap="magma", extent=extent)
    axes[0].set_title("PSF, focal plane (log)" if is3d else "PSF (log)")
    axes[0].set_xlabel(f"x ({unit})")
    axes[0].set_ylabel(f"y ({unit})")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    col = 1
    if is3d:
        nz = psf.shape[0]
        xz = clipped[:, ny // 2, :]
        zext = [extent[0], extent[1], (nz - 1 - nz // 2) * dz + dz / 2, -(nz // 2) * dz - dz / 2]
        im = axes[1].imshow(xz, norm=norm, cmap="magma", extent=zext, aspect="auto")
        axes[1].set_title("PSF, XZ section (log)")
        axes[1].set_xlabel(f"x ({unit})")
        axes[1].set_ylabel(f"z ({unit})")
        fig.colorbar(im, ax=axes[1], shrink=0.8)
        col = 2
    # OTF: lateral (2-D) or the kx-kz section of the 3-D OTF
    spectrum = otf(psf)
    funit = "1/um" if pixel_size else "cycles/px"
    if is3d:
        sec = spectrum[:, spectrum.shape[1] // 2, :]
        nzf, nxf = sec.shape
        fx = (np.arange(nxf) - nxf // 2) / nxf / px
        fz = (np.arange(nzf) - nzf // 2) / nzf / dz
        im = axes[col].imshow(
            sec,
            cmap="viridis",
            aspect="auto",
            extent=[fx[0], fx[-1], fz[-1], fz[0]],
            norm=LogNorm(vmin=1e-4, vmax=1.0),
        )
        axes[col].set_title("|OTF|, kx-kz section (log)")
        axes[col].set_ylabel(f"kz ({'1/um' if z_step and pixel_size else 'cycles/plane'})")
    else:
        nyf, nxf = spectrum.shape
        fx = (np.arange(nxf) - nxf // 2) / nxf / px
        fy = (np.arange(nyf) - nyf // 2) / nyf / px
        im = axes[col].imshow(
            spectrum, cmap="viridis", extent=[fx[0], fx[-1], fy[-1], fy[0]], vmin=0, vmax=1
        )
        axes[col].set_title("|OTF|")
        axes[col].set_ylabel(f"ky ({funit})")
        if fc:
            t = np.linspace(0, 2 * np.pi, 200)
            r = 2 * fc / px
            axes[col].plot(r * np.cos(t), r * np.sin(t), "w--", lw=0.8, label="2 fc")
            axes[col].legend(loc="upper right", fontsize=8)
    axes[col].set_xlabel(f"kx ({funit})")
    fig.colorbar(im, ax=axes[col], shrink=0.8)
    # pupil phase
    phase = wavefront(zernike if zernike is not None else [], size=129, noll_start=4)
    lim = max(float(np.nanmax(np.abs(phase))), 1e-3)
    im = axes[col + 1].imshow(
        phase, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=[-1, 1, 1, -1], origin="upper"
    )
    axes[col + 1].set_title("pupil phase (waves)")
    axes[col + 1].set_xlabel("pupil x = f_X / fc (columns)")
    axes[col + 1].set_ylabel("pupil y = f_Y / fc (rows)")
    fig.colorbar(im, ax=axes[col + 1], shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig
