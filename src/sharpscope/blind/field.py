"""PSF identification over an image's field of view.

The image is cut into ``R x C`` tiles (one by default).  Each tile is covered
by overlapping patches of the identifier's patch size (half a patch apart, at
most ``max_patches`` per tile, evenly spread); every patch gets a *structure
score* (:func:`structure_score`), and only patches with enough structure are
given to the identifier.  A tile's PSF is the pixel-wise median of its valid
patches' PSFs (renormalised to sum 1), its Zernike coefficients and cut-off
the medians of theirs.  A tile none of whose patches has structure (blank
background, a flat or smoothly varying region) is *flagged* and *filled*:
its PSF is the mean of the PSFs of the nearest tiles that were identified
(nearest in grid steps), and its confidence is 0.  An image without any
structured patch raises :class:`~sharpscope.errors.InputError`: a blank image
never yields a confident PSF.

Structure criterion
-------------------
For a patch ``p`` with mean ``m``, the Hann-windowed periodogram
``P(f) = |F[(p - m) w]|^2 / sum(w^2)`` has expectation ``N`` (the white
noise's variance) at every frequency where the patch holds no signal.  ``N``
is the larger of the image's Poisson-Gaussian noise model at ``m``
(:func:`sharpscope.estimate.estimate_noise`) and the patch's own mean
periodogram beyond ``max(0.5, 2 fc)`` cycles/pixel (the corners of the
spectrum, outside the reach ``2 fc`` of the incoherent OTF, hold only noise),
so that a wrong global noise model cannot make a blank patch look
structured.  The score measures the excess power over the band where the OTF
is strong: with ``M`` frequencies in the band ``0.04 <= |f| <= fc`` (``fc``
the given cut-off, else the image's own estimate, else 0.25; at least 0.08), the score is
``s = sqrt(M / c) * (mean_band P(f) / N - 1)``, the number of standard
deviations by which the band's power stands above what noise alone gives.
(Pure noise's periodogram values have a relative standard deviation of 1;
the Hann window correlates neighbouring frequencies, which multiplies the
variance of their mean by ``c = (1 + 2 (2/3)**2 + 2 (1/6)**2)**2 = 3.78``
in 2-D.)  Pure noise scores 0 +- 1 (measured: standard deviation 0.9-1.1, the
largest of 200 blank patches 2.9), textured patches tens to thousands.
Frequencies below 0.04 cycles/pixel (slow illumination gradients) are left
out.  A patch is valid when ``s >= min_structure`` (default 5).  The noise variance is floored at
``(1e-4 * image range)**2`` so that noiseless images are judged too.

Confidence
----------
Per tile, ``confidence = (n_valid / n_patches) * max(0, 1 - spread)`` where
``spread`` is the median relative L2 distance between the valid patches'
PSFs and the tile's combined PSF (how much they agree); 0 for filled tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sharpscope.errors import ConfigError, InputError
from sharpscope.estimate import NoiseEstimate

__all__ = [
    "PSFEstimate",
    "eigen_psfs",
    "estimate_psf",
    "load_psf_identifier",
    "resolve_fc",
    "structure_score",
]

#: lowest frequency (cycles/pixel) of the structure passband
LOW_FREQUENCY = 0.04
#: default threshold of the structure score
MIN_STRUCTURE = 5.0
# variance factor of a mean of Hann-windowed periodogram values (correlated neighbours), 2-D
_HANN_VARIANCE = (1.0 + 2.0 * (2.0 / 3.0) ** 2 + 2.0 * (1.0 / 6.0) ** 2) ** 2
_MIN_SIDE = 32
_MAX_PLANES = 8
_RANGE_FLOOR = 1e-4


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class PSFEstimate:
    """What :func:`estimate_psf` found.

    Per-tile arrays have the grid's shape ``(R, C)`` first (``(1, 1)``
    without a grid).

    Attributes
    ----------
    psfs : numpy.ndarray
        ``(R, C, S, S)`` float32, each summing to 1, centre at ``S // 2``.
    grid : tuple of int or None
        ``(R, C)``, or None for a single PSF.
    centers : numpy.ndarray
        ``(R, C, 2)`` tile centres (row, column) in pixels of the image;
        the nodes of :class:`sharpscope.physics.blur.SpaceVaryingBlur`.
    bounds : numpy.ndarray
        ``(R, C, 4)`` int tile extents ``y0, y1, x0, x1``.
    zernike : numpy.ndarray
        ``(R, C, K)`` coefficients (waves RMS) for Noll indices ``noll``.
    noll : tuple of int
        Noll indices of ``zernike`` (empty for an identifier without them).
    fc : numpy.ndarray
        ``(R, C)`` cut-off frequency (given, or estimated by the identifier).
    fwhm, ee50 : numpy.ndarray
        ``(R, C)`` in pixels (:func:`sharpscope.blind.measures.fwhm`, ``ee50``).
    structure : numpy.ndarray
        ``(R, C)`` the largest structure score of the tile's patches.
    n_patches, n_valid : numpy.ndarray
        ``(R, C)`` patches looked at, and those with enough structure.
    filled : numpy.ndarray
        ``(R, C)`` bool: no valid patch, the PSF was filled from neighbours.
    confidence : numpy.ndarray
        ``(R, C)`` in [0, 1] (see the module notes).
    noise : NoiseEstimate
        The image's noise model (:func:`sharpscope.estimate.estimate_noise`).
    noise_identifier : tuple of float
        The identifier's median ``(Poisson gain, Gaussian sigma)`` over valid patches.
    fc_given : bool
        Whether ``fc`` was given (else it is the identifier's estimate).
    theta_max : float or None
        The aberration bound given to the identifier.
    patch_size : int
        Side of the patches.
    min_structure : float
        The structure threshold used.
    patches : dict
        Per patch: ``origin`` ``(N, 2)``, ``tile`` ``(N, 2)``, ``score`` ``(N,)``,
        ``valid`` ``(N,)``.
    """

    psfs: np.ndarray
    grid: tuple[int, int] | None
    centers: np.ndarray
    bounds: np.ndarray
    zernike: np.ndarray
    noll: tuple[int, ...]
    fc: np.ndarray
    fwhm: np.ndarray
    ee50: np.ndarray
    structure: np.ndarray
    n_patches: np.ndarray
    n_valid: np.ndarray
    filled: np.ndarray
    confidence: np.ndarray
    noise: NoiseEstimate
    noise_identifier: tuple[float, float]
    fc_given: bool
    theta_max: float | None
    patch_size: int
    min_structure: float
    patches: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def psf(self) -> np.ndarray:
        """The single PSF ``(S, S)`` (no grid), else the grid ``(R, C, S, S)``."""
        return self.psfs[0, 0] if self.grid is None else self.psfs

    def stack(self) -> np.ndarray:
        """The PSFs as ``(R * C, S, S)``, row-major tile order."""
        return self.psfs.reshape(-1, *self.psfs.shape[-2:])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no PSF pixels); per-tile values in row-major lists.

        Examples
        --------
        >>> import numpy as np
        >>> from sharpscope.blind.classical import BlindRLIdentifier
        >>> blocks = np.kron(np.random.default_rng(1).random((8, 8)), np.ones((8, 8)))
        >>> img = np.random.default_rng(0).poisson(50 * blocks)
        >>> est = estimate_psf(img, fc=0.2, identifier=BlindRLIdentifier(64, 9, outer=1))
        >>> sorted(est.to_dict())[:4]
        ['bounds', 'centers', 'confidence', 'ee50']
        """

        def flat(a: np.ndarray) -> list:
            a = np.asarray(a)
            return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:]).tolist()

        return {
            "grid": list(self.grid) if self.grid else None,
            "psf_size": int(self.psfs.shape[-1]),
            "patch_size": int(self.patch_size),
            "centers": flat(self.centers),
            "bounds": flat(self.bounds),
            "noll": list(self.noll),
            "zernike": flat(self.zernike),
            "fc": flat(self.fc),
            "fc_given": bool(self.fc_given),
            "theta_max": self.theta_max,
            "fwhm": flat(self.fwhm),
            "ee50": flat(self.ee50),
            "structure": flat(self.structure),
            "n_patches": flat(self.n_patches),
            "n_valid": flat(self.n_valid),
            "filled": flat(self.filled),
            "confidence": flat(self.confidence),
            "min_structure": float(self.min_structure),
            "noise": {
                "gain": float(self.noise.gain),
                "sigma": float(self.noise.sigma),
                "offset": float(self.noise.offset),
            },
            "noise_identifier": {
                "gain": float(self.noise_identifier[0]),
                "sigma": float(self.noise_identifier[1]),
            },
        }


# --------------------------------------------------------------------------- options
def resolve_fc(
    fc: float | None = None,
    na: float | None = None,
    wavelength: float | None = None,
    pixel_size: float | None = None,
    file_pixel_size: float | None = None,
) -> float | None:
    """The cut-off from ``fc`` or from the optics (NA, wavelength in nm, pixel in um).

    ``file_pixel_size`` (the image file's own X pixel size, um) stands in for a
    missing ``pixel_size`` when NA and wavelength are given.

    Raises
    ------
    ConfigError
        Both given, the optics incomplete, or a value out of range.

    Examples
    --------
    >>> round(resolve_fc(na=1.0, wavelength=500, pixel_size=0.1), 4)
    0.2
    >>> resolve_fc() is None
    True
    """
    if pixel_size is None and na is not None and wavelength is not None:
        pixel_size = file_pixel_size
    optics = {"NA": na, "wavelength": wavelength, "pixel size": pixel_size}
    given = [k for k, v in optics.items() if v is not None]
    if fc is not None and given:
        raise ConfigError("give either fc or the optics (NA, wavelength, pixel size), not both")
    if given and len(given) != 3:
        missing = ", ".join(k for k, v in optics.items() if v is None)
        raise ConfigError(f"the optics need NA, wavelength and pixel size (missing: {missing})")
    if given:
        from sharpscope.physics.psf import cutoff_frequency

        fc = cutoff_frequency(float(na), float(wavelength), float(pixel_size))  # type: ignore[arg-type]
    if fc is None:
        return None
    try:
        value = float(fc)
    except (TypeError, ValueError):
        raise ConfigError(f"fc must be a number, got {fc!r}") from None
    if not (math.isfinite(value) and 0 < value <= 0.5):
        raise ConfigError(f"cut-off frequency fc must be in (0, 0.5] cycles/pixel, got {value:.4g}")
    return value


def _check_theta_max(theta_max: Any) -> float | None:
    if theta_max is None:
        return None
    try:
        value = float(theta_max)
    except (TypeError, ValueError):
        raise ConfigError(f"theta_max must be a number, got {theta_max!r}") from None
    if not (math.isfinite(value) and 0 <= value <= 2.0):
        raise ConfigError(f"theta_max must be in [0, 2] waves, got {value:.4g}")
    return value


def _check_grid(grid: Any) -> tuple[int, int] | None:
    if grid is None:
        return None
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        grid = (grid, grid)
    try:
        r, c = (int(v) for v in grid)
        ok = all(float(v) == int(v) for v in grid)
    except (TypeError, ValueError):
        raise ConfigError(f"grid must be two positive integers (rows, columns), got {grid!r}") from None
    if not ok or r < 1 or c < 1 or r > 64 or c > 64:
        raise ConfigError(f"grid must be two integers between 1 and 64, got {grid!r}")
    return r, c


def load_psf_identifier(identifier: Any = None) -> Any:
    """An identifier object: the bundled network (None), a name or file, ``'blind-rl'``, or as is.

    Examples
    --------
    >>> load_psf_identifier("blind-rl").psf_size
    33
    """
    if identifier is None or isinstance(identifier, str):
        if identifier == "blind-rl":
            from sharpscope.blind.classical import BlindRLIdentifier

            return BlindRLIdentifier()
        try:
            from sharpscope.models.psfnet import load_identifier
        except ImportError:
            raise InputError(
                "no PSF identification network in this sharpscope (sharpscope.models.psfnet);"
                " use identifier='blind-rl'"
            ) from None
        return load_identifier(identifier or "psfid-2d")
    if not callable(getattr(identifier, "predict", None)):
        raise ConfigError("identifier must have a predict(patches, fc, theta_max) method")
    return identifier


# --------------------------------------------------------------------------- image
def _planes(image: Any, axes: str | None) -> tuple[np.ndarray, str]:
    from sharpscope.io import guess_axes, validate_axes

    arr = np.asarray(image)
    if arr.dtype == bool or arr.dtype.kind not in "uif":
        raise InputError(f"image must be a real-valued numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError("image is empty")
    if arr.ndim < 2:
        raise InputError(f"an image needs at least 2 dimensions (Y, X), got shape {arr.shape}")
    ax = guess_axes(arr.ndim) if axes is None else validate_axes(axes, arr.ndim, require="YX")
    order = [i for i, a in enumerate(ax) if a not in "YX"] + [ax.index("Y"), ax.index("X")]
    work = np.transpose(arr, order)
    h, w = work.shape[-2:]
    if min(h, w) < _MIN_SIDE:
        raise InputError(
            f"image is too small to identify a PSF ({h} x {w}; at least {_MIN_SIDE} x {_MIN_SIDE})"
        )
    planes = work.reshape(-1, h, w)
    if len(planes) > _MAX_PLANES:
        planes = planes[np.linspace(0, len(planes) - 1, _MAX_PLANES).round().astype(int)]
    planes = planes.astype(np.float32)
    if not np.all(np.isfinite(planes)):
        raise InputError("image contains NaN or Inf values")
    return planes, ax


def structure_score(
    patches: Any, noise: NoiseEstimate, fc: float | None = None, floor: float = 0.0
) -> np.ndarray:
    """Mean excess power in the passband over the noise, per patch (see the module notes).

    Parameters
    ----------
    patches : array_like
        ``(N, h, w)`` patches in the image's intensity units.
    noise : NoiseEstimate
        The noise model of the image.
    fc : float, optional
        Cut-off frequency; the band ends at ``fc`` (0.25 without).
    floor : float
        Smallest noise variance used.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` scores: about 0 +- 1 for pure noise, large for structure.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> blank = rng.normal(10.0, 1.0, (1, 64, 64))
    >>> from sharpscope.physics.blur import fft_convolve
    >>> from sharpscope.blind.classical import aberration_free_psf
    >>> blocks = np.kron(rng.random((8, 8)), np.ones((8, 8)))
    >>> texture = blank + fft_convolve(5 * blocks, aberration_free_psf(0.2, 17))  # band-limited
    >>> s = structure_score(np.concatenate([blank, texture]), NoiseEstimate(0.0, 1.0))
    >>> bool(abs(s[0]) < 3), bool(s[1] > 50)
    (True, True)
    """
    p = np.asarray(patches, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    n, h, w = p.shape
    mean = p.mean(axis=(1, 2))
    win = np.hanning(h + 2)[1:-1, None] * np.hanning(w + 2)[None, 1:-1]
    spec = np.abs(np.fft.rfft2((p - mean[:, None, None]) * win)) ** 2 / float(np.sum(win**2))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.hypot(fy, fx)
    # the band reaches at least twice the lowest frequency (a very low cut-off estimate)
    top = 0.25 if fc is None else min(max(float(fc), 2 * LOW_FREQUENCY), 0.5)
    band = (radius >= LOW_FREQUENCY) & (radius <= top)
    power = spec[:, band].mean(axis=1)
    var = np.maximum(np.asarray(noise.variance(mean), dtype=np.float64), float(floor))
    corner = radius > max(0.5, 2.0 * top + 0.02)
    if corner.sum() >= 0.05 * radius.size:  # noise-only frequencies: the patch's own floor
        var = np.maximum(var, spec[:, corner].mean(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(var > 0, power / var - 1.0, np.where(power > 0, np.inf, 0.0))
    score = excess * math.sqrt(int(band.sum()) / _HANN_VARIANCE)
    return score.astype(np.float64)


def _starts(a: int, b: int, size: int, length: int, cap: int) -> list[int]:
    """Patch origins covering ``[a, b)`` (half a patch apart, at most ``cap``)."""
    if b - a <= size:
        return [int(np.clip(round((a + b) / 2 - size / 2), 0, length - size))]
    n = min(cap, math.ceil((b - a - size) / (size / 2)) + 1)
    return [int(v) for v in np.round(np.linspace(a, b - size, max(n, 1)))]


def _nearest_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid cells of a ``(R, C, ...)`` array with the mean over the nearest valid cells."""
    r, c = valid.shape
    out = values.copy()
    ii, jj = np.nonzero(valid)
    for i in range(r):
        for j in range(c):
            if valid[i, j]:
                continue
            d = np.hypot(ii - i, jj - j)
            near = d <= d.min() + 1e-9
            out[i, j] = values[ii[near], jj[near]].mean(axis=0)
    return out


# --------------------------------------------------------------------------- main
def estimate_psf(
    image: Any,
    fc: float | None = None,
    theta_max: float | None = None,
    grid: int | tuple[int, int] | None = None,
    axes: str | None = None,
    identifier: Any = None,
    *,
    na: float | None = None,
    wavelength: float | None = None,
    pixel_size: float | None = None,
    min_structure: float = MIN_STRUCTURE,
    max_patches: int = 16,
    batch_size: int = 32,
    progress: Any = None,
) -> PSFEstimate:
    """Estimate the PSF of an image (or a grid of PSFs over its field).

    Parameters
    ----------
    image : array_like
        2-D image, or a stack (its planes are taken as views of the same
        field: patches are pooled over up to 8 evenly chosen planes).  Any
        intensity scale.
    fc : float, optional
        Cut-off frequency in cycles/pixel (``NA * pixel / wavelength``); None:
        unknown (the identifier estimates it).
    theta_max : float, optional
        Bound of the aberration coefficients (waves RMS); None: unknown.
    grid : int or (int, int), optional
        ``(R, C)`` tiles for a spatially varying PSF map; None: one PSF.
    axes : str, optional
        Axes of ``image`` (``STCZYX``); default: the last two are Y, X.
    identifier : object or str, optional
        Anything with ``predict(patches, fc, theta_max)`` returning PSFs,
        Zernike coefficients, fc and noise (the network of
        :mod:`sharpscope.models.psfnet`); a model name or file; ``'blind-rl'``
        for the classical baseline.  Default: the bundled network.
    na, wavelength, pixel_size : float, optional
        The optics instead of ``fc`` (NA, emission wavelength in nm, pixel in um).
    min_structure : float
        Structure score a patch needs (see the module notes).
    max_patches : int
        Patches per tile at most (``<= max_patches`` evenly spread).
    batch_size : int
        Patches per call of the identifier.
    progress : callable, optional
        ``progress(done, total)`` after each batch of patches.

    Returns
    -------
    PSFEstimate

    Raises
    ------
    InputError
        Unusable image (too small, NaN, constant), or no patch with structure.
    ConfigError
        Bad options (fc with the optics, a grid that is not two integers, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.blind.classical import BlindRLIdentifier
    >>> rng = np.random.default_rng(0)
    >>> img = rng.poisson(100 * np.kron(rng.random((12, 12)), np.ones((8, 8)))).astype(np.float32)
    >>> est = estimate_psf(img, fc=0.2, grid=(1, 2), identifier=BlindRLIdentifier(64, 9, outer=1))
    >>> est.psf.shape, est.centers.shape, bool(abs(est.psfs.sum((-2, -1)) - 1).max() < 1e-5)
    ((1, 2, 9, 9), (1, 2, 2), True)
    """
    fc_val = resolve_fc(fc, na, wavelength, pixel_size)
    tmax = _check_theta_max(theta_max)
    grid_rc = _check_grid(grid)
    if not (isinstance(max_patches, (int, np.integer)) and max_patches >= 1):
        raise ConfigError(f"max_patches must be a positive integer, got {max_patches!r}")
    try:
        min_structure = float(min_structure)
    except (TypeError, ValueError):
        raise ConfigError(f"min_structure must be a number, got {min_structure!r}") from None
    planes, _ = _planes(image, axes)
    ident = load_psf_identifier(identifier)
    size = int(getattr(ident, "patch_size", 128))

    from sharpscope.estimate import estimate_cutoff, estimate_noise

    if float(planes.max()) == float(planes.min()):
        raise InputError("image is constant: there is no structure to identify a PSF from")
    noise = estimate_noise(planes)
    lo, hi = np.percentile(planes, [0.1, 99.9])
    floor = (_RANGE_FLOOR * max(float(hi - lo), 1e-30)) ** 2
    band_fc = fc_val
    if band_fc is None:
        try:
            band_fc = float(estimate_cutoff(planes))
        except InputError:
            band_fc = None

    _, h, w = planes.shape
    work = planes
    if h < size or w < size:  # small images: mirrored up to one patch
        py, px = max(0, size - h), max(0, size - w)
        work = np.pad(planes, ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2)), "symmetric")
        oy, ox = py // 2, px // 2
    else:
        oy = ox = 0
    hh, ww = work.shape[-2:]
    r, c = grid_rc or (1, 1)
    ye = np.round(np.linspace(0, h, r + 1)).astype(int)
    xe = np.round(np.linspace(0, w, c + 1)).astype(int)
    per_axis = max(1, int(math.isqrt(int(max_patches))))

    origins, tiles, cuts = [], [], []
    for i in range(r):
        ys = _starts(ye[i] + oy, ye[i + 1] + oy, size, hh, per_axis)
        for j in range(c):
            xs = _starts(xe[j] + ox, xe[j + 1] + ox, size, ww, per_axis)
            cand = [(k, y0, x0) for y0 in ys for x0 in xs for k in range(len(work))]
            if len(cand) > max_patches:
                keep = np.linspace(0, len(cand) - 1, int(max_patches)).round().astype(int)
                cand = [cand[t] for t in keep]
            for k, y0, x0 in cand:
                origins.append((y0 - oy, x0 - ox))
                tiles.append((i, j))
                cuts.append(work[k, y0 : y0 + size, x0 : x0 + size])
    patches = np.stack(cuts).astype(np.float32)
    tiles_a = np.asarray(tiles, dtype=int)
    # the score looks at the image's own pixels (a mirrored margin adds no structure)
    inner = patches[:, oy : oy + min(h, size), ox : ox + min(w, size)]
    score = structure_score(inner, noise, band_fc, floor)
    valid = score >= min_structure
    if not valid.any():
        best = float(np.max(score)) if score.size else 0.0
        raise InputError(
            f"no part of the image has enough structure to identify a PSF (best structure score"
            f" {best:.3g} < {min_structure:g}); is it blank or only noise?"
        )

    # identify the valid patches, in batches
    idx = np.nonzero(valid)[0]
    preds: list[Any] = []
    batch_size = max(1, int(batch_size))
    for start in range(0, len(idx), batch_size):
        sel = idx[start : start + batch_size]
        preds.append(ident.predict(patches[sel], fc=fc_val, theta_max=tmax))
        if progress is not None:
            progress(min(start + batch_size, len(idx)), len(idx))
    psf_p = np.concatenate([np.asarray(p.psf, np.float64) for p in preds])
    zer_p = np.concatenate([np.asarray(p.zernike, np.float64).reshape(len(p.psf), -1) for p in preds])
    fc_p = np.concatenate([np.asarray(p.fc, np.float64).reshape(-1) for p in preds])
    noise_p = np.concatenate([np.asarray(p.noise, np.float64).reshape(-1, 2) for p in preds])
    noll = tuple(int(v) for v in getattr(preds[0], "noll", ()))
    s = psf_p.shape[-1]
    if psf_p.shape[-2] != s or s % 2 == 0:
        raise InputError(f"the identifier returned PSFs of shape {psf_p.shape[1:]}; expected odd squares")

    k = zer_p.shape[1]
    psfs = np.zeros((r, c, s, s))
    zer = np.zeros((r, c, k))
    fcs = np.zeros((r, c))
    conf = np.zeros((r, c))
    struct = np.zeros((r, c))
    n_p = np.zeros((r, c), dtype=int)
    n_v = np.zeros((r, c), dtype=int)
    ok = np.zeros((r, c), dtype=bool)
    vtiles = tiles_a[idx]
    for i in range(r):
        for j in range(c):
            here = (tiles_a[:, 0] == i) & (tiles_a[:, 1] == j)
            n_p[i, j] = int(here.sum())
            n_v[i, j] = int((here & valid).sum())
            struct[i, j] = float(score[here].max()) if here.any() else 0.0
            mine = (vtiles[:, 0] == i) & (vtiles[:, 1] == j)
            if not mine.any():
                continue
            ok[i, j] = True
            stack = np.clip(psf_p[mine], 0.0, None)
            stack /= stack.sum(axis=(1, 2), keepdims=True)
            comb = np.median(stack, axis=0)
            comb = comb / comb.sum()
            psfs[i, j] = comb
            zer[i, j] = np.median(zer_p[mine], axis=0) if k else zer[i, j]
            fcs[i, j] = float(np.median(fc_p[mine]))
            spread = np.median(
                np.linalg.norm((stack - comb).reshape(len(stack), -1), axis=1) / np.linalg.norm(comb)
            )
            conf[i, j] = (n_v[i, j] / max(n_p[i, j], 1)) * max(0.0, 1.0 - float(spread))
    if not ok.all():
        psfs = _nearest_fill(psfs, ok)
        psfs /= psfs.sum(axis=(-2, -1), keepdims=True)
        zer = _nearest_fill(zer, ok)
        fcs = _nearest_fill(fcs, ok)

    from sharpscope.blind.measures import ee50 as ee50_of
    from sharpscope.blind.measures import fwhm as fwhm_of

    fw = np.array([[fwhm_of(psfs[i, j]) for j in range(c)] for i in range(r)])
    ee = np.array([[ee50_of(psfs[i, j]) for j in range(c)] for i in range(r)])
    cy = (np.arange(r) + 0.5) * h / r - 0.5
    cx = (np.arange(c) + 0.5) * w / c - 0.5
    centers = np.stack(np.meshgrid(cy, cx, indexing="ij"), axis=-1)
    bounds = np.stack(
        np.broadcast_arrays(
            ye[:-1, None], ye[1:, None], xe[None, :-1], xe[None, 1:]
        ),
        axis=-1,
    ).astype(int)
    noise_id = np.median(noise_p, axis=0) if len(noise_p) else np.zeros(2)
    return PSFEstimate(
        psfs=psfs.astype(np.float32),
        grid=grid_rc,
        centers=centers,
        bounds=bounds,
        zernike=zer.astype(np.float32),
        noll=noll,
        fc=fcs.astype(np.float32),
        fwhm=fw,
        ee50=ee,
        structure=struct,
        n_patches=n_p,
        n_valid=n_v,
        filled=~ok,
        confidence=conf,
        noise=noise,
        noise_identifier=(float(noise_id[0]), float(noise_id[1])),
        fc_given=fc_val is not None,
        theta_max=tmax,
        patch_size=size,
        min_structure=min_structure,
        patches={
            "origin": np.asarray(origins, dtype=int),
            "tile": tiles_a,
            "score": score,
            "valid": valid,
        },
    )


def eigen_psfs(estimate: PSFEstimate, rank: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Summarise a PSF grid by its mean and leading eigen-PSFs (principal components).

    ``psf(i, j) ~ mean + sum_k coefficients[i, j, k] * components[k]``: with the
    tile weights of :func:`sharpscope.physics.blur.partition_weights` the
    space-varying blur becomes ``rank + 1`` convolutions of coefficient-weighted
    images instead of one per tile.

    Parameters
    ----------
    estimate : PSFEstimate
        A grid from :func:`estimate_psf`.
    rank : int, optional
        Components kept (default: all, up to ``R * C - 1``).

    Returns
    -------
    components : numpy.ndarray
        ``(rank + 1, S, S)``: the mean PSF first (sum 1), then the eigen-PSFs (sum 0).
    coefficients : numpy.ndarray
        ``(R, C, rank + 1)``; the first column is 1.
    explained : float
        Share of the grid's variance around the mean the kept components explain.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.blind.classical import BlindRLIdentifier
    >>> rng = np.random.default_rng(0)
    >>> img = rng.poisson(100 * np.kron(rng.random((12, 12)), np.ones((8, 8)))).astype(np.float32)
    >>> est = estimate_psf(img, fc=0.2, grid=(2, 2), identifier=BlindRLIdentifier(48, 9, outer=1))
    >>> comp, coef, share = eigen_psfs(est)
    >>> recon = np.einsum("ijk,kyx->ijyx", coef, comp)
    >>> bool(np.allclose(recon, est.psfs, atol=1e-6)), round(share, 6)
    (True, 1.0)
    """
    psfs = np.asarray(estimate.psfs, dtype=np.float64)
    r, c, s, _ = psfs.shape
    flat = psfs.reshape(r * c, s * s)
    mean = flat.mean(axis=0)
    dev = flat - mean
    full = max(r * c - 1, 0)
    k = full if rank is None else int(rank)
    if k < 0 or k > full:
        raise ConfigError(f"rank must be between 0 and {full} for a {r}x{c} grid, got {rank!r}")
    if k:
        u, sv, vt = np.linalg.svd(dev, full_matrices=False)
        comps, coefs = vt[:k], u[:, :k] * sv[:k]
        total = float(np.sum(sv**2))
        share = float(np.sum(sv[:k] ** 2) / total) if total > 0 else 1.0
    else:
        comps, coefs = np.zeros((0, s * s)), np.zeros((r * c, 0))
        share = 0.0 if np.any(dev) else 1.0
    components = np.concatenate([mean[None], comps]).reshape(k + 1, s, s)
    coefficients = np.concatenate([np.ones((r * c, 1)), coefs], axis=1).reshape(r, c, k + 1)
    return components.astype(np.float32), coefficients.astype(np.float32), share
