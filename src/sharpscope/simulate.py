"""Simulated training pairs: presets of the sampling distribution and the dataset.

A training pair is drawn from a *preset* (the distribution ``mu`` of the
optics, the noise and the specimen) as follows; every step uses one
:class:`torch.Generator` seeded from ``(seed, index)``, so sample ``index`` of
a stream is a pure function of the seed and its index::

    x      = specimen (procedural, or a crop of a user image), in [0, 1],
             rendered on a canvas larger than the patch by the PSF half-size
    h      = imaging PSF drawn from the preset (optics or Zernike pupil)
    clean  = k * (h * x)           k = peak / max(h * x): the exposure
    low    = sensor(clean + b)     Poisson gain, Gaussian read noise, optional
                                   quantisation and salt-and-pepper (noise.sensor)
    gt     = k * (t * x) + b       t = narrow Gaussian target PSF (sigma 0.6 px)

then both are cropped to the patch and normalised with the *same* affine map,
the one that sends the 1st and 99.8th percentiles of ``low`` to 0 and 1 (what
:func:`sharpscope.normalize.percentiles` does at inference time).  ``low`` and
``gt`` are therefore photometrically consistent: ``E[low]`` is ``gt`` blurred by
``h`` (up to the narrow target blur), with the same background ``b`` and the
same scale.  The target is the specimen as seen by an ideal instrument with a
1.4 px FWHM: band-limited and reachable, rather than the infinitely sharp
object.

Presets
-------
``'mrbcr-widefield'`` (:class:`OpticsPreset`)
    The m-rBCR paper's simulation: NA ~ U[0.4, 1.0], excitation ~ U[450, 490] nm,
    emission ~ U[excitation, 600] nm (a Stokes shift is never negative),
    refractive index 1.33; widefield (pinhole 1000 um, i.e. open) or confocal
    (pinhole 0.1 um) with probability 1/2 each; Gaussian sigma ~ U[0.01, 0.05]
    and Poisson gain ~ U[0.01, 0.05] on the [0, 1] image scale.  An open
    pinhole is simulated as the widefield *emission* PSF
    (:func:`sharpscope.physics.psf.widefield_psf` at the emission wavelength),
    which is what a camera records.  The pixel size is Nyquist-based:
    ``pixel = s * emission / (4 NA)`` with the sampling factor ``s ~ U[0.5, 1]``
    (``s = 1`` is exactly Nyquist, i.e. ``fc = NA * pixel / emission = 0.25``;
    ``s = 0.5`` is 2x oversampled), so ``fc`` spans [0.125, 0.25] as in the
    poster.  3-D stacks use ``z_step = min(r * pixel, emission / (2 n (1 - cos a)))``
    with ``r ~ U[1, 3]`` and ``sin a = NA / n``: a z-step of 1-3 pixels, never
    coarser than axial Nyquist (as in typical acquisitions, which oversample
    axially at low NA).
``'poster-zernike'`` (:class:`ZernikePreset`)
    The blind-deconvolution poster: ``fc ~ U[0.125, 0.25]``, Zernike
    coefficients for Noll indices 4-11 (defocus, astigmatism x2, coma x2,
    trefoil x2, primary spherical; the same set as deepinv's default)
    ``theta_k ~ U[-theta_max, theta_max]`` waves RMS with ``theta_max ~ U[0, 0.2]``
    drawn per sample, 16-bit quantisation, salt-and-pepper ``s = 1e-5``.  The
    poster leaves the noise ranges open; we use a log-uniform Poisson gain in
    [0.002, 0.05] (20 to 500 photons at the brightest pixel) and a Gaussian
    sigma ~ U[0.001, 0.03].  In 3-D the pupil is propagated as a widefield
    stack with NA 1.0, n 1.33 and 520 nm (so that ``fc`` is honoured).

Both presets draw the specimen kind from {mixed 0.4, filaments 0.2, nuclei
0.15, membranes 0.1, puncta 0.15} with a log-uniform density in [0.5, 2],
a peak (exposure) ~ U[0.6, 1] and a background ~ U[0, 0.05].

``'fluorescence-broad'`` (:class:`MicroscopePreset`, 2-D) covers what fluorescence
microscopes produce (see docs/physics.md), and ``'fluorescence-mix'``
(:class:`MixturePreset`) draws 65% of its pairs from it and 35% from
``'mrbcr-widefield'``: the re-training distribution of the bundled model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from sharpscope.errors import ConfigError, InputError
from sharpscope.physics import specimens
from sharpscope.physics.blur import Convolution
from sharpscope.physics.noise import sensor
from sharpscope.runtime import check_memory

__all__ = [
    "PRESETS",
    "CameraNoise",
    "MicroscopePreset",
    "NoiseModel",
    "OpticsPreset",
    "Preset",
    "SimulatedPairs",
    "SpecimenModel",
    "ZernikePreset",
    "bead_image",
    "get_preset",
    "sample_seed",
    "simulate_dataset",
    "simulate_pair",
    "write_dataset",
]

Range = tuple[float, float]


# --------------------------------------------------------------------------- drawing helpers
def _u(g: torch.Generator, r: Range) -> float:
    lo, hi = float(r[0]), float(r[1])
    if hi == lo:
        return lo
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _logu(g: torch.Generator, r: Range) -> float:
    lo, hi = float(r[0]), float(r[1])
    if hi == lo:
        return lo
    return math.exp(_u(g, (math.log(lo), math.log(hi))))


def _check_range(name: str, r: Range, positive: bool = False) -> None:
    if len(r) != 2 or not float(r[0]) <= float(r[1]):
        raise ConfigError(f"{name} must be a (low, high) pair with low <= high, got {r}")
    if positive and float(r[0]) <= 0:
        raise ConfigError(f"{name} must be positive, got {r}")


def sample_seed(seed: int, index: int) -> int:
    """The 63-bit seed of sample ``index`` of the stream ``seed``.

    Mixes both numbers with :class:`numpy.random.SeedSequence`, so nearby
    seeds and indices give unrelated streams.

    Examples
    --------
    >>> from sharpscope.simulate import sample_seed
    >>> sample_seed(0, 1) == sample_seed(0, 1) != sample_seed(1, 0)
    True
    """
    if int(seed) < 0 or int(index) < 0:
        raise ConfigError("seed and index must be non-negative integers")
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


# --------------------------------------------------------------------------- preset parts
@dataclass(frozen=True)
class NoiseModel:
    """Ranges of the sensor parameters (see :func:`sharpscope.physics.noise.sensor`).

    Attributes
    ----------
    gain : (float, float)
        Range of the Poisson gain ``gamma`` (variance = gamma x mean) on the
        image scale where the clean image peaks at ``peak``.
    gain_log : bool
        Draw the gain log-uniformly instead of uniformly.
    sigma : (float, float)
        Range of the Gaussian read-noise standard deviation.
    background : (float, float)
        Range of the constant background added before photon counting.
    peak : (float, float)
        Range of the maximum of the clean blurred image (the exposure).
    bits : int or None
        Quantisation bits over [0, 1] (None: no quantisation).
    salt_pepper : float or None
        Salt-and-pepper probability (None: none).
    """

    gain: Range = (0.01, 0.05)
    gain_log: bool = False
    sigma: Range = (0.01, 0.05)
    background: Range = (0.0, 0.05)
    peak: Range = (0.6, 1.0)
    bits: int | None = None
    salt_pepper: float | None = None

    def __post_init__(self) -> None:
        _check_range("gain", self.gain)
        _check_range("sigma", self.sigma)
        _check_range("background", self.background)
        _check_range("peak", self.peak, positive=True)
        if self.gain_log and float(self.gain[0]) <= 0:
            raise ConfigError("a log-uniform gain range must be positive")

    def draw(self, g: torch.Generator) -> dict[str, Any]:
        gain = _logu(g, self.gain) if self.gain_log else _u(g, self.gain)
        return {
            "gain": gain,
            "sigma": _u(g, self.sigma),
            "background": _u(g, self.background),
            "peak": _u(g, self.peak),
            "bits": 0 if self.bits is None else int(self.bits),
            "salt_pepper": 0.0 if self.salt_pepper is None else float(self.salt_pepper),
        }

    def apply(self, clean: torch.Tensor, d: dict[str, Any], g: torch.Generator) -> torch.Tensor:
        """Degrade ``clean`` with the drawn parameters ``d`` (:func:`~sharpscope.physics.noise.sensor`)."""
        return sensor(
            clean,
            background=d["background"],
            gain=d["gain"],
            sigma=d["sigma"],
            bits=d["bits"] or None,
            salt_pepper=d["salt_pepper"] or None,
            generator=g,
        )


@dataclass(frozen=True)
class CameraNoise:
    """Ranges of a scientific camera's parameters (see :func:`sharpscope.physics.noise.camera`).

    Intensities are in units where the clean blurred image peaks at ``peak``.

    Attributes
    ----------
    photons : (float, float)
        Log-uniform range of the photo-electrons per unit intensity.
    read_noise : (float, float)
        Range of the read noise in electrons.
    conversion : (float, float)
        Log-uniform range of the electrons per ADU (raised per sample where needed so
        that the brightest pixel does not saturate the ADC).
    offset : (float, float)
        Range of the camera offset in ADU.
    bits : tuple of int
        ADC depths drawn with equal odds.
    hot_probability : float
        Probability that an image has hot pixels at all.
    hot_pixels : (float, float)
        Log-uniform range of the fraction of hot pixels in such an image.
    background : (float, float)
        Range of the constant background (autofluorescence, stray light) in
        intensity units, added before photon counting.
    peak : (float, float)
        Range of the maximum of the clean blurred image (the exposure).
    """

    photons: Range = (5.0, 1000.0)
    read_noise: Range = (0.7, 3.0)
    conversion: Range = (0.3, 3.0)
    offset: Range = (0.0, 400.0)
    bits: tuple[int, ...] = (12, 16)
    hot_probability: float = 0.5
    hot_pixels: Range = (1e-5, 1e-4)
    background: Range = (0.0, 0.3)
    peak: Range = (0.3, 1.0)

    def __post_init__(self) -> None:
        _check_range("photons", self.photons, positive=True)
        _check_range("read_noise", self.read_noise)
        _check_range("conversion", self.conversion, positive=True)
        _check_range("offset", self.offset)
        _check_range("hot_pixels", self.hot_pixels, positive=True)
        _check_range("background", self.background)
        _check_range("peak", self.peak, positive=True)
        if not self.bits or any(int(b) < 8 or int(b) > 32 for b in self.bits):
            raise ConfigError("bits must be a non-empty tuple of ADC depths in [8, 32]")
        if not 0 <= self.hot_probability <= 1:
            raise ConfigError("hot_probability must be in [0, 1]")

    def draw(self, g: torch.Generator) -> dict[str, Any]:
        photons = _logu(g, self.photons)
        read = _u(g, self.read_noise)
        offset = _u(g, self.offset)
        bits = int(self.bits[int(torch.randint(len(self.bits), (), generator=g))])
        background = _u(g, self.background)
        peak = _u(g, self.peak)
        # a sensible exposure: the brightest pixel stays below 80 % of the ADC's range
        need = (peak + background) * photons / (0.8 * (2**bits - 1) - offset)
        conversion = _logu(g, (max(self.conversion[0], need), max(self.conversion[1], need)))
        hot = float(torch.rand((), generator=g, dtype=torch.float64)) < self.hot_probability
        hot_fraction = _logu(g, self.hot_pixels)
        return {
            "photons": photons,
            "read_noise": read,
            "conversion": conversion,
            "offset": offset,
            "bits": bits,
            "hot_pixels": hot_fraction if hot else 0.0,
            "background": background,
            "peak": peak,
            # the equivalent Poisson-Gaussian parameters on the intensity scale
            "gain": 1.0 / photons,
            "sigma": read / photons,
        }

    def apply(self, clean: torch.Tensor, d: dict[str, Any], g: torch.Generator) -> torch.Tensor:
        """Degrade ``clean`` with the drawn parameters ``d``."""
        from sharpscope.physics.noise import camera

        return camera(
            clean + d["background"],
            photons=d["photons"],
            read_noise=d["read_noise"],
            conversion=d["conversion"],
            offset=d["offset"],
            bits=d["bits"],
            hot_pixels=d["hot_pixels"],
            generator=g,
        )


_DEFAULT_KINDS = (
    ("mixed", 0.4),
    ("filaments", 0.2),
    ("nuclei", 0.15),
    ("membranes", 0.1),
    ("puncta", 0.15),
)


@dataclass(frozen=True)
class SpecimenModel:
    """Distribution of the procedural specimens.

    Attributes
    ----------
    kinds : tuple of (str, float)
        Specimen kinds (see :mod:`sharpscope.physics.specimens`) and their
        probabilities (normalised).
    density : (float, float)
        Log-uniform range of the density multiplier.
    """

    kinds: tuple[tuple[str, float], ...] = _DEFAULT_KINDS
    density: Range = (0.5, 2.0)

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ConfigError("at least one specimen kind is needed")
        for kind, weight in self.kinds:
            if kind not in specimens.KINDS:
                raise ConfigError(f"unknown specimen kind {kind!r}")
            if weight < 0:
                raise ConfigError("specimen kind weights must be non-negative")
        if sum(w for _, w in self.kinds) <= 0:
            raise ConfigError("specimen kind weights must not all be zero")
        _check_range("density", self.density, positive=True)

    def draw(self, g: torch.Generator) -> tuple[str, float]:
        weights = torch.tensor([w for _, w in self.kinds], dtype=torch.float64)
        i = int(torch.multinomial(weights / weights.sum(), 1, generator=g))
        return self.kinds[i][0], _logu(g, self.density)


@dataclass(frozen=True)
class Preset:
    """Common part of a simulation preset.

    Attributes
    ----------
    name, description : str
        Identification.
    specimen : SpecimenModel
        The ground-truth distribution.
    noise : NoiseModel
        The sensor distribution.
    psf_size : int
        Lateral size of the imaging PSF (odd).
    target_sigma : float
        Lateral sigma (px) of the Gaussian target PSF that defines ``gt``.
    target_sigma_z : float
        Axial sigma of the target PSF in voxels (3-D only).
    normalize : (float, float) or None
        Percentiles of ``low`` mapped to 0 and 1 (applied to ``low`` and ``gt``
        alike); None keeps the raw scale (clean image peaking at ``peak``).
    depth : int
        Number of slices of a 3-D patch when the patch size is a single int.
    haze_probability : float
        Probability of an out-of-focus layer: a second specimen, blurred by a wide
        Gaussian (sigma drawn from ``haze_sigma`` px) and scaled to a fraction
        ``haze`` of the in-focus image's peak, added to both ``low`` (before the
        noise) and ``gt``: structure from other planes that a 2-D restoration must
        keep as it is, not sharpen nor remove.
    haze, haze_sigma : (float, float)
        Ranges of the layer's relative brightness and blur.
    granularity_probability : float
        Probability that a procedural specimen is modulated by fine granular texture
        (``x * max(0, 1 + a * n)`` with ``n`` a unit-variance random field of
        correlation length ``granularity_length`` px and ``a`` drawn from
        ``granularity``), in ``low`` and ``gt`` alike: real specimens carry structure
        down to the pixel (vesicles, dots, label clusters) that a restoration must keep
        where the photon count resolves it, not smooth away as noise.
    granularity, granularity_length : (float, float)
        Ranges of the modulation's amplitude and (log-uniform) correlation length.
    """

    name: str = "custom"
    description: str = ""
    specimen: SpecimenModel = field(default_factory=SpecimenModel)
    noise: NoiseModel | CameraNoise = field(default_factory=NoiseModel)
    psf_size: int = 33
    target_sigma: float = 0.6
    target_sigma_z: float = 0.6
    normalize: Range | None = (1.0, 99.8)
    depth: int = 16
    haze_probability: float = 0.0
    haze: Range = (0.0, 0.0)
    haze_sigma: Range = (4.0, 16.0)
    granularity_probability: float = 0.0
    granularity: Range = (0.0, 0.0)
    granularity_length: Range = (0.5, 2.0)

    def __post_init__(self) -> None:
        if not 0 <= self.haze_probability <= 1:
            raise ConfigError("haze_probability must be in [0, 1]")
        if not 0 <= self.granularity_probability <= 1:
            raise ConfigError("granularity_probability must be in [0, 1]")
        _check_range("granularity", self.granularity)
        _check_range("granularity_length", self.granularity_length, positive=True)
        _check_range("haze", self.haze)
        _check_range("haze_sigma", self.haze_sigma, positive=True)
        if int(self.psf_size) < 3 or int(self.psf_size) % 2 == 0:
            raise ConfigError(f"psf_size must be odd and >= 3, got {self.psf_size}")
        if self.target_sigma < 0 or self.target_sigma_z < 0:
            raise ConfigError("target sigmas must be non-negative")
        if self.normalize is not None and not 0 <= self.normalize[0] < self.normalize[1] <= 100:
            raise ConfigError(f"normalize must be (pmin, pmax) percentiles, got {self.normalize}")
        if int(self.depth) < 1:
            raise ConfigError("depth must be positive")

    def draw_psf(
        self, g: torch.Generator, ndim: int, depth: int
    ) -> tuple[torch.Tensor, dict[str, Any], float]:
        """Draw an imaging PSF; return ``(psf, params, voxel_aspect)``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible description (class name included)."""
        d = dataclasses.asdict(self)
        d["type"] = type(self).__name__
        return d


def _psf_planes(depth: int) -> int:
    return depth if depth % 2 == 1 else depth + 1


def _axial_nyquist(na: float, wavelength_um: float, n: float) -> float:
    cos_a = math.sqrt(max(0.0, 1.0 - (na / n) ** 2))
    return wavelength_um / (2.0 * n * (1.0 - cos_a))


def _optics_psf(
    confocal: bool,
    na: float,
    ex: float,
    em: float,
    pixel: float,
    n: float,
    pinhole: float,
    recorded_z_step: float,
    **kw: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Widefield or confocal PSF of drawn optics, and the parameters recorded for it.

    ``kw`` goes to the PSF function (``size``, ``zernike``, ``z_planes``, ``z_step``).
    """
    from sharpscope.physics.psf import confocal_psf, widefield_psf

    if confocal:
        psf = confocal_psf(na, ex, em, pixel, pinhole, refractive_index=n, **kw)
    else:
        psf = widefield_psf(na, em, pixel, refractive_index=n, **kw)
    params = {
        "modality": "confocal" if confocal else "widefield",
        "na": na,
        "wavelength_ex": ex,
        "wavelength_em": em,
        "refractive_index": n,
        "pinhole": pinhole,
        "pixel_size": pixel,
        "z_step": recorded_z_step,
        "fc": na * pixel * 1000.0 / em,
    }
    return psf, params


@dataclass(frozen=True)
class OpticsPreset(Preset):
    """Preset drawing microscope optics (the m-rBCR simulation).

    Attributes
    ----------
    na : (float, float)
        Numerical aperture range.
    wavelength_ex, wavelength_em : (float, float)
        Excitation and emission wavelength ranges in nm; the emission is
        drawn in ``[max(excitation, low), high]``.
    refractive_index : float
        Immersion refractive index.
    confocal_probability : float
        Probability of a confocal PSF (else widefield).
    pinhole_widefield, pinhole_confocal : float
        Pinhole diameters (um, sample plane) recorded for each modality.
    sampling : (float, float)
        Range of the lateral sampling factor ``s``: ``pixel = s * emission / (4 NA)``.
    z_ratio : (float, float)
        Range of ``z_step / pixel`` for 3-D stacks (capped at axial Nyquist).
    """

    na: Range = (0.4, 1.0)
    wavelength_ex: Range = (450.0, 490.0)
    wavelength_em: Range = (450.0, 600.0)
    refractive_index: float = 1.33
    confocal_probability: float = 0.5
    pinhole_widefield: float = 1000.0
    pinhole_confocal: float = 0.1
    sampling: Range = (0.5, 1.0)
    z_ratio: Range = (1.0, 3.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("na", self.na, positive=True)
        _check_range("wavelength_ex", self.wavelength_ex, positive=True)
        _check_range("wavelength_em", self.wavelength_em, positive=True)
        _check_range("sampling", self.sampling, positive=True)
        _check_range("z_ratio", self.z_ratio, positive=True)
        if self.na[1] >= self.refractive_index:
            raise ConfigError("NA must stay below the refractive index")
        if not 0 <= self.confocal_probability <= 1:
            raise ConfigError("confocal_probability must be in [0, 1]")

    def draw_psf(self, g, ndim, depth):

        na = _u(g, self.na)
        ex = _u(g, self.wavelength_ex)
        em = _u(g, (max(ex, self.wavelength_em[0]), max(ex, self.wavelength_em[1])))
        confocal = (
            float(torch.rand((), generator=g, dtype=torch.float64)) < self.confocal_probability
        )
        s = _u(g, self.sampling)
        ratio = _u(g, self.z_ratio)
        n = float(self.refractive_index)
        pixel = s * em / (4.0 * na) / 1000.0  # um
        z_step = min(ratio * pixel, _axial_nyquist(na, em / 1000.0, n)) if ndim == 3 else 0.0
        kw: dict[str, Any] = {"size": int(self.psf_size)}
        if ndim == 3:
            kw.update(z_planes=_psf_planes(depth), z_step=z_step)
        pinhole = self.pinhole_confocal if confocal else self.pinhole_widefield
        psf, params = _optics_psf(confocal, na, ex, em, pixel, n, pinhole, z_step, **kw)
        return psf, params, (z_step / pixel if ndim == 3 else 1.0)


@dataclass(frozen=True)
class ZernikePreset(Preset):
    """Preset drawing Zernike-aberrated pupil PSFs (the blind-deconvolution poster).

    Attributes
    ----------
    fc : (float, float)
        Cut-off frequency range in cycles/pixel (0.25 is the Shannon limit).
    noll_start : int
        Noll index of the first coefficient.
    n_zernike : int
        Number of coefficients (Noll ``noll_start .. noll_start + n_zernike - 1``).
    theta_max : (float, float)
        Range of the per-sample maximum amplitude (waves RMS).
    na, wavelength, refractive_index : float
        Optics used for 3-D stacks only (pixel size = fc * wavelength / NA).
    z_ratio : (float, float)
        Range of ``z_step / pixel`` for 3-D stacks (capped at axial Nyquist).
    """

    fc: Range = (0.125, 0.25)
    noll_start: int = 4
    n_zernike: int = 8
    theta_max: Range = (0.0, 0.2)
    na: float = 1.0
    wavelength: float = 520.0
    refractive_index: float = 1.33
    z_ratio: Range = (1.0, 3.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("fc", self.fc, positive=True)
        _check_range("z_ratio", self.z_ratio, positive=True)
        _check_range("theta_max", self.theta_max)
        if int(self.noll_start) < 1 or int(self.n_zernike) < 0:
            raise ConfigError("noll_start must be >= 1 and n_zernike >= 0")

    def draw_psf(self, g, ndim, depth):
        from sharpscope.physics.psf import pupil_psf, widefield_psf

        fc = _u(g, self.fc)
        tmax = _u(g, self.theta_max)
        theta = (
            2 * torch.rand(1, int(self.n_zernike), generator=g, dtype=torch.float32) - 1
        ) * tmax
        params: dict[str, Any] = {
            "fc": fc,
            "theta_max": tmax,
            "noll_start": int(self.noll_start),
            "zernike": [float(v) for v in theta[0]],
        }
        if ndim == 2:
            psf = pupil_psf(theta, fc, size=int(self.psf_size), noll_start=int(self.noll_start))[0]
            params.update(pixel_size=0.0, z_step=0.0)
            return psf, params, 1.0
        if int(self.noll_start) != 4:
            raise ConfigError("3-D Zernike presets need noll_start = 4")
        pixel = fc * self.wavelength / self.na / 1000.0
        ratio = _u(g, self.z_ratio)
        nyquist = _axial_nyquist(self.na, self.wavelength / 1000.0, self.refractive_index)
        z_step = min(ratio * pixel, nyquist)
        psf = widefield_psf(
            self.na,
            self.wavelength,
            pixel,
            refractive_index=self.refractive_index,
            size=int(self.psf_size),
            z_planes=_psf_planes(depth),
            z_step=z_step,
            zernike=theta[0],
        )
        params.update(pixel_size=pixel, z_step=z_step)
        return psf, params, z_step / pixel


_IMMERSIONS = (
    # (refractive index, NA low, NA high, probability): air, water, oil objectives
    (1.0, 0.25, 0.95, 0.25),
    (1.33, 0.8, 1.2, 0.35),
    (1.518, 1.1, 1.45, 0.4),
)


@dataclass(frozen=True)
class MicroscopePreset(Preset):
    """Preset covering what fluorescence microscopes produce (2-D only).

    Attributes
    ----------
    immersions : tuple of (n, na_low, na_high, probability)
        Objective families: immersion refractive index and its NA range.
    wavelength_em : (float, float)
        Emission wavelength range in nm.
    stokes : (float, float)
        Range of the Stokes shift in nm (excitation = emission - shift).
    confocal_probability : float
        Probability of a confocal PSF (else widefield).
    pinhole_au : (float, float)
        Confocal pinhole diameter range in Airy units (``1 AU = 1.22 lambda_em / NA``).
    sampling : (float, float)
        Log-uniform range of the sampling factor ``s``: ``pixel = s * emission / (4 NA)``
        (``s = 1`` Nyquist, 0.5 twice oversampled, 2 twice undersampled).
    defocus : (float, float)
        Range of the defocus (Noll 4) in waves RMS.
    theta_max : (float, float)
        Range of the per-sample bound of the other aberrations (Noll 5-11, each
        ``U[-theta_max, theta_max]`` waves RMS): mild astigmatism, coma, trefoil, spherical.
    """

    immersions: tuple[tuple[float, float, float, float], ...] = _IMMERSIONS
    wavelength_em: Range = (450.0, 680.0)
    stokes: Range = (15.0, 80.0)
    confocal_probability: float = 0.35
    pinhole_au: Range = (0.5, 1.5)
    sampling: Range = (0.5, 2.0)
    defocus: Range = (-0.25, 0.25)
    theta_max: Range = (0.0, 0.08)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.immersions:
            raise ConfigError("at least one immersion is needed")
        for n, lo, hi, w in self.immersions:
            if not 0 < lo <= hi < n or w < 0:
                raise ConfigError(f"bad immersion {(n, lo, hi, w)}: need 0 < NA <= NA_max < n")
        _check_range("wavelength_em", self.wavelength_em, positive=True)
        _check_range("stokes", self.stokes)
        _check_range("pinhole_au", self.pinhole_au)
        _check_range("sampling", self.sampling, positive=True)
        _check_range("defocus", self.defocus)
        _check_range("theta_max", self.theta_max)
        if self.sampling[1] > 2.0:
            raise ConfigError("sampling above 2 (fc > 0.5 cycles/pixel) is not supported")
        if not 0 <= self.confocal_probability <= 1:
            raise ConfigError("confocal_probability must be in [0, 1]")

    def draw_psf(self, g, ndim, depth):

        if ndim != 2:
            raise ConfigError(f"preset {self.name!r} is 2-D only")
        weights = torch.tensor([w for *_, w in self.immersions], dtype=torch.float64)
        i = int(torch.multinomial(weights / weights.sum(), 1, generator=g))
        n, na_lo, na_hi, _ = self.immersions[i]
        na = _u(g, (na_lo, na_hi))
        em = _u(g, self.wavelength_em)
        ex = em - _u(g, self.stokes)
        s = _logu(g, self.sampling)
        pixel = s * em / (4.0 * na) / 1000.0  # um
        confocal = (
            float(torch.rand((), generator=g, dtype=torch.float64)) < self.confocal_probability
        )
        if confocal:  # the excitation PSF must stay resolvable on the grid (fc_ex <= 0.5)
            pixel = min(pixel, 0.499 * ex / na / 1000.0)
        pinhole = _u(g, self.pinhole_au) * 1.22 * em / na / 1000.0
        defocus = _u(g, self.defocus)
        tmax = _u(g, self.theta_max)
        others = (2 * torch.rand(7, generator=g, dtype=torch.float64) - 1) * tmax
        zernike = torch.cat([torch.tensor([defocus], dtype=torch.float64), others]).float()
        psf, params = _optics_psf(
            confocal, na, ex, em, pixel, n, pinhole if confocal else 0.0, 0.0,
            size=int(self.psf_size), zernike=zernike,
        )
        params.update(defocus=defocus, theta_max=tmax)
        return psf, params, 1.0


@dataclass(frozen=True)
class MixturePreset(Preset):
    """A weighted mixture of other presets: each pair is drawn from one of them.

    The component is chosen per sample from a stream of its own (derived from the
    sample's seed), so the chosen component draws exactly the pair it would draw
    alone with that seed; ``params['component']`` names it.

    Attributes
    ----------
    components : tuple of (str, float)
        Names of registered (non-mixture) presets and their relative weights.
    """

    components: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.components:
            raise ConfigError("a mixture preset needs at least one component")
        for name, weight in self.components:
            if not weight > 0:
                raise ConfigError(f"mixture weight of {name!r} must be positive, got {weight}")

    def parts(self) -> list[Preset]:
        """The component presets, in order."""
        out = []
        for name, _ in self.components:
            part = get_preset(name)
            if isinstance(part, MixturePreset):
                raise ConfigError(f"mixture {self.name!r}: component {name!r} is itself a mixture")
            if part.normalize != self.normalize:
                raise ConfigError(
                    f"mixture {self.name!r}: component {name!r} normalises with {part.normalize}, "
                    f"not {self.normalize}"
                )
            out.append(part)
        return out

    def choose(self, generator: torch.Generator) -> Preset:
        """The component of the sample whose generator is ``generator`` (not advanced)."""
        g = torch.Generator().manual_seed(int(generator.initial_seed()) ^ 0x9E3779B97F4A7C15 % 2**62)
        weights = torch.tensor([w for _, w in self.components], dtype=torch.float64)
        i = int(torch.multinomial(weights / weights.sum(), 1, generator=g))
        return self.parts()[i]

    def draw_psf(self, g, ndim, depth):
        raise ConfigError(f"mixture {self.name!r} draws its PSFs through its components")


_BROAD = MicroscopePreset(
    name="fluorescence-broad",
    description=(
        "what microscopes produce (2-D): air/water/oil objectives NA 0.25-1.45, emission "
        "450-680 nm, widefield or confocal (0.5-1.5 AU), 0.5-2x Nyquist sampling, mild "
        "defocus and aberrations, out-of-focus haze, camera noise 5-1000 photons per unit "
        "intensity with read noise, offset, 12/16-bit ADC and hot pixels; procedural "
        "specimens and natural-image textures"
    ),
    specimen=SpecimenModel(
        kinds=(
            ("mixed", 0.15),
            ("filaments", 0.12),
            ("nuclei", 0.18),
            ("membranes", 0.08),
            ("puncta", 0.12),
            ("texture", 0.35),
        ),
        density=(0.3, 3.0),
    ),
    noise=CameraNoise(),
    haze_probability=0.4,
    haze=(0.05, 0.6),
    haze_sigma=(4.0, 16.0),
)

_BRIGHT = dataclasses.replace(
    _BROAD,
    name="fluorescence-bright",
    description=(
        "fluorescence-granular reaching brighter exposures: 5-4000 photons per unit "
        "intensity (the brightest structures of a well-exposed camera image carry "
        "thousands of photo-electrons) and granular texture in 60% of the procedural "
        "specimens"
    ),
    noise=CameraNoise(photons=(5.0, 4000.0)),
    granularity_probability=0.6,
    granularity=(0.1, 0.6),
    granularity_length=(0.5, 2.0),
)

PRESETS: dict[str, Preset] = {
    "mrbcr-widefield": OpticsPreset(
        name="mrbcr-widefield",
        description=(
            "m-rBCR paper: NA 0.4-1.0, excitation 450-490 nm, emission 450-600 nm, n 1.33, "
            "widefield or confocal (pinhole 0.1 um), Gaussian 0.01-0.05, Poisson gain 0.01-0.05"
        ),
        noise=NoiseModel(gain=(0.01, 0.05), sigma=(0.01, 0.05)),
    ),
    "poster-zernike": ZernikePreset(
        name="poster-zernike",
        description=(
            "blind-deconvolution poster: fc 0.125-0.25, Noll 4-11 with |theta_k| <= theta_max "
            "~ U[0, 0.2] waves, 16-bit, salt-and-pepper 1e-5"
        ),
        noise=NoiseModel(
            gain=(0.002, 0.05), gain_log=True, sigma=(0.001, 0.03), bits=16, salt_pepper=1e-5
        ),
    ),
    "fluorescence-broad": _BROAD,
    "fluorescence-granular": dataclasses.replace(
        _BROAD,
        name="fluorescence-granular",
        description=(
            "fluorescence-broad whose procedural specimens are, half of the time, modulated "
            "by fine granular texture (amplitude 0.1-0.6, correlation 0.5-2 px) kept in the "
            "ground truth: detail down to the pixel that bright images resolve"
        ),
        granularity_probability=0.5,
        granularity=(0.1, 0.6),
        granularity_length=(0.5, 2.0),
    ),
    "fluorescence-bright": _BRIGHT,
    "fluorescence-beaded": dataclasses.replace(
        _BRIGHT,
        name="fluorescence-beaded",
        description=(
            "fluorescence-bright with a stronger, coarser modulation: amplitude 0.2-1.5 "
            "(above 1 the texture breaks a structure into separate beads: vesicles along a "
            "membrane, beaded filaments, punctate stains), correlation 0.5-4 px"
        ),
        granularity=(0.2, 1.5),
        granularity_length=(0.5, 4.0),
    ),
    "fluorescence-mix": MixturePreset(
        name="fluorescence-mix",
        description=(
            "re-training mixture of the bundled model: 65% fluorescence-broad (what microscopes "
            "produce), 35% mrbcr-widefield (the paper's distribution, so that it is not forgotten)"
        ),
        components=(("fluorescence-broad", 0.65), ("mrbcr-widefield", 0.35)),
    ),
    "fluorescence-mix-granular": MixturePreset(
        name="fluorescence-mix-granular",
        description=(
            "fluorescence-mix with granular specimens: 65% fluorescence-granular, 35% "
            "mrbcr-widefield"
        ),
        components=(("fluorescence-granular", 0.65), ("mrbcr-widefield", 0.35)),
    ),
    "fluorescence-mix-bright": MixturePreset(
        name="fluorescence-mix-bright",
        description=(
            "the granular mixture reaching brighter exposures: 70% fluorescence-bright, "
            "30% mrbcr-widefield"
        ),
        components=(("fluorescence-bright", 0.7), ("mrbcr-widefield", 0.3)),
    ),
    "fluorescence-mix-beaded": MixturePreset(
        name="fluorescence-mix-beaded",
        description="the bright mixture with beaded specimens: 70% fluorescence-beaded, 30% mrbcr-widefield",
        components=(("fluorescence-beaded", 0.7), ("mrbcr-widefield", 0.3)),
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    """Look up a preset by name (a :class:`Preset` is returned unchanged).

    Examples
    --------
    >>> from sharpscope.simulate import get_preset
    >>> get_preset("poster-zernike").fc
    (0.125, 0.25)
    """
    if isinstance(preset, Preset):
        return preset
    p = PRESETS.get(str(preset))
    if p is None:
        raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
    return p


# --------------------------------------------------------------------------- one pair
def _patch_shape(patch_size: int | Sequence[int], ndim: int, depth: int) -> tuple[int, ...]:
    if ndim not in (2, 3):
        raise ConfigError(f"ndim must be 2 or 3, got {ndim}")
    if isinstance(patch_size, (int, np.integer)):
        p = int(patch_size)
        shape = (p, p) if ndim == 2 else (int(depth), p, p)
    else:
        shape = tuple(int(s) for s in patch_size)
        if len(shape) != ndim:
            raise ConfigError(f"patch size {shape} does not match ndim={ndim}")
    if min(shape) < 1:
        raise ConfigError(f"patch size must be positive, got {shape}")
    return shape


def _gaussian_kernel(sigmas: Sequence[float]) -> torch.Tensor:
    """Pixel-integrated separable Gaussian, normalised to sum 1 (a delta for sigma 0)."""
    out = torch.ones((), dtype=torch.float64)
    for s in sigmas:
        r = max(1, int(math.ceil(4 * s)))
        v = torch.arange(-r, r + 1, dtype=torch.float64)
        if s <= 0:
            k = (v == 0).to(torch.float64)
        else:
            a = math.sqrt(2.0) * s
            k = torch.erf((v + 0.5) / a) - torch.erf((v - 0.5) / a)
        k = k / k.sum()
        out = out[..., None] * k
    return out.to(torch.float32)


def _haze_layer(
    p: Preset, canvas: tuple[int, ...], g: torch.Generator, top: float, ndim: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """The out-of-focus layer of ``p`` (zero when not drawn) and its parameters."""
    on = float(torch.rand((), generator=g, dtype=torch.float64)) < p.haze_probability
    frac, sigma = _u(g, p.haze), _u(g, p.haze_sigma)
    if not on or frac <= 0 or top <= 0:
        return torch.zeros(canvas), {"haze": 0.0, "haze_sigma": 0.0}
    kind, density = p.specimen.draw(g)
    y = specimens.render_specimen(kind, canvas, g, density=density)
    kernel = _gaussian_kernel([sigma] * ndim)
    if any(k > c for k, c in zip(kernel.shape, canvas, strict=True)):
        kernel = _gaussian_kernel([min(c // 8, sigma) for c in canvas])
    y = Convolution(kernel, "circular").forward(y)
    m = float(y.max())
    if m <= 1e-12:
        return torch.zeros(canvas), {"haze": 0.0, "haze_sigma": 0.0}
    return y * (frac * top / m), {"haze": frac, "haze_sigma": sigma}


def _granular(
    p: Preset, x: torch.Tensor, g: torch.Generator, aspect: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """``x`` modulated by the preset's granular texture (unchanged when not drawn)."""
    on = float(torch.rand((), generator=g, dtype=torch.float64)) < p.granularity_probability
    amp, length = _u(g, p.granularity), _logu(g, p.granularity_length)
    if not on or amp <= 0:
        return x, {"granularity": 0.0, "granularity_length": 0.0}
    spacing = torch.ones(x.ndim, dtype=torch.float64)
    if x.ndim == 3:
        spacing[0] = aspect
    field = specimens._smooth_field(tuple(x.shape), length, spacing, g).to(x.dtype)
    return x * (1 + amp * field).clamp(min=0), {"granularity": amp, "granularity_length": length}


def _user_crop(
    images: Sequence[torch.Tensor], shape: tuple[int, ...], g: torch.Generator
) -> tuple[torch.Tensor, int]:
    i = int(torch.randint(len(images), (), generator=g))
    img = images[i]
    pads = []
    for n, s in zip(reversed(img.shape), reversed(shape), strict=True):
        extra = max(0, s - n)
        pads += [extra // 2, extra - extra // 2]
    if any(pads):
        mode = (
            "reflect"
            if all(p < n for p, n in zip(pads[::2], reversed(img.shape), strict=True))
            else "replicate"
        )
        img = torch.nn.functional.pad(img[None, None], pads, mode=mode)[0, 0]
    sl = []
    for n, s in zip(img.shape, shape, strict=True):
        o = int(torch.randint(n - s + 1, (), generator=g))
        sl.append(slice(o, o + s))
    crop = img[tuple(sl)]
    # random flips of every axis and, for square lateral crops, a transpose
    for ax in range(crop.ndim):
        if bool(torch.rand((), generator=g) < 0.5):
            crop = crop.flip(ax)
    if shape[-1] == shape[-2] and bool(torch.rand((), generator=g) < 0.5):
        crop = crop.transpose(-1, -2)
    return crop.contiguous(), i


def simulate_pair(
    preset: str | Preset,
    shape: tuple[int, ...],
    generator: torch.Generator,
    ground_truth: Sequence[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Draw one training pair (torch tensors) from ``preset``.

    Parameters
    ----------
    preset : str or Preset
        Sampling distribution.
    shape : tuple of int
        Patch shape ``(H, W)`` or ``(Z, H, W)``.
    generator : torch.Generator
        All randomness of this pair.
    ground_truth : sequence of torch.Tensor, optional
        User images in [0, 1] (see :func:`sharpscope.physics.specimens.from_image`)
        to crop the specimen from instead of drawing a procedural one.

    Returns
    -------
    dict
        ``low`` and ``gt`` (``(1, *shape)`` float32), ``psf`` (float32) and
        ``params`` (a flat dict of numbers and strings).

    Examples
    --------
    >>> import torch
    >>> from sharpscope.simulate import simulate_pair
    >>> s = simulate_pair("mrbcr-widefield", (32, 32), torch.Generator().manual_seed(0))
    >>> tuple(s["low"].shape), tuple(s["gt"].shape), s["low"].dtype
    ((1, 32, 32), (1, 32, 32), torch.float32)
    """
    p = get_preset(preset)
    component = None
    if isinstance(p, MixturePreset):
        p = p.choose(generator)
        component = p.name
    ndim = len(shape)
    # independent sub-streams: the specimen drawn for a seed does not depend on the
    # preset's optics or noise draws (same seed -> same specimen under every preset)
    g_spec, g_psf, g_noise = (
        torch.Generator().manual_seed(int(v))
        for v in torch.randint(0, 2**62, (3,), generator=generator)
    )
    psf, params, aspect = p.draw_psf(g_psf, ndim, shape[0] if ndim == 3 else 1)
    psf = psf.to(torch.float32)
    sig = [p.target_sigma] * 2 if ndim == 2 else [p.target_sigma_z] + [p.target_sigma] * 2
    target_psf = _gaussian_kernel(sig)
    margins = [max(a, b) // 2 for a, b in zip(psf.shape, target_psf.shape, strict=True)]
    canvas = tuple(s + 2 * m for s, m in zip(shape, margins, strict=True))
    if ground_truth:
        x, src = _user_crop(ground_truth, canvas, g_spec)
        kind, density = "user", 0.0
        params["source_index"] = src
    else:
        kind, density = p.specimen.draw(g_spec)
        x = specimens.render_specimen(
            kind, canvas, g_spec, density=density, voxel_aspect=float(aspect)
        )
        if p.granularity_probability > 0:
            # its own stream (derived from the specimen seed): presets without it are unchanged
            g_gran = torch.Generator().manual_seed(g_spec.initial_seed() ^ 0x6A09E667F3BCC908)
            x, gran_params = _granular(p, x, g_gran, float(aspect))
            params.update(gran_params)
    noise = p.noise.draw(g_noise)
    # circular convolution on the padded canvas: the wrap-around stays in the margins
    blurred = Convolution(psf, "circular").forward(x)
    target = Convolution(target_psf, "circular").forward(x)
    if p.haze_probability > 0:
        # its own stream (derived from the noise seed), so presets without haze are unchanged
        g_haze = torch.Generator().manual_seed(g_noise.initial_seed() ^ 0x5DEECE66D)
        layer, haze_params = _haze_layer(p, canvas, g_haze, float(blurred.max()), ndim)
        blurred, target = blurred + layer, target + layer
        params.update(haze_params)
    crop = tuple(slice(m, m + s) for s, m in zip(shape, margins, strict=True))
    blurred, target = blurred[crop], target[crop]
    top = float(blurred.max())
    k = noise["peak"] / top if top > 1e-12 else 1.0
    low = p.noise.apply(blurred * k, noise, g_noise)
    gt = target * k + noise["background"]
    lo, hi = 0.0, 1.0
    if p.normalize is not None:
        # the same percentiles as sharpscope.normalize.percentiles (numpy, linear)
        lo, hi = (float(v) for v in np.percentile(low.numpy(), list(p.normalize)))
        scale = max(hi - lo, 1e-6)
        low = (low - lo) / scale
        gt = (gt - lo) / scale
    params.update(kind=kind, density=density, scale=k, norm_lo=lo, norm_hi=hi, **noise)
    if component is not None:
        params["component"] = component
    return {
        "low": low.to(torch.float32)[None].contiguous(),
        "gt": gt.to(torch.float32)[None].contiguous(),
        "psf": psf,
        "params": params,
    }


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def _sample_bytes(p: Preset, shape: tuple[int, ...]) -> int:
    """Generous bound of the working memory of one pair: canvases, spectra, float64 noise."""
    canvas = math.prod(int(s) + int(p.psf_size) for s in shape)
    return 40 * canvas * 8


# --------------------------------------------------------------------------- dataset
class SimulatedPairs(IterableDataset):
    """Infinite stream of simulated ``(low, gt)`` training pairs.

    Sample ``i`` is a pure function of ``(seed, i)`` (see :meth:`sample`), so
    the stream is reproducible and can be resumed exactly.  Iterating yields
    the samples ``start, start + 1, ...``; under a
    :class:`torch.utils.data.DataLoader` with ``W`` workers, worker ``w``
    produces the blocks ``w, w + W, w + 2W, ...`` of ``block_size``
    consecutive indices.  With ``block_size`` equal to the loader's batch
    size, the loader delivers exactly the single-process order (batch ``b``
    holds samples ``start + b * B ... start + (b + 1) * B - 1``), so a trainer
    resumes by passing ``start = batches_done * batch_size``.  Workers never
    produce the same sample.

    Parameters
    ----------
    preset : str or Preset
        Sampling distribution (a name in :data:`PRESETS` or a preset object).
    patch_size : int or tuple of int
        Lateral side (with ``ndim=3`` the depth is ``preset.depth``) or the
        full patch shape.
    seed : int
        Stream seed.
    ndim : {2, 3}
        Dimensionality of the patches.
    start : int
        Index of the first sample.
    block_size : int
        Consecutive indices handled by one worker in turn (see above).
    ground_truth : sequence of arrays, optional
        User images (2-D or 3-D, matching ``ndim``) used as specimens instead
        of procedural ones; each is normalised to [0, 1] with
        :func:`sharpscope.physics.specimens.from_image`.

    Yields
    ------
    dict
        ``low`` and ``gt``: ``(1, *patch)`` float32 tensors on the same
        normalised scale; ``psf``: the imaging PSF; ``params``: the sample's
        parameters (same keys for every sample of a preset, so the default
        collate function batches them).

    Examples
    --------
    >>> from sharpscope.simulate import SimulatedPairs
    >>> ds = SimulatedPairs("mrbcr-widefield", patch_size=32, seed=0)
    >>> s = next(iter(ds))
    >>> tuple(s["low"].shape), bool((s["low"] == ds.sample(0)["low"]).all())
    ((1, 32, 32), True)
    """

    def __init__(
        self,
        preset: str | Preset = "mrbcr-widefield",
        patch_size: int | Sequence[int] = 128,
        seed: int = 0,
        ndim: int = 2,
        start: int = 0,
        block_size: int = 1,
        ground_truth: Sequence[np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.preset = get_preset(preset)
        self.ndim = int(ndim)
        self.shape = _patch_shape(patch_size, self.ndim, self.preset.depth)
        if int(seed) < 0 or int(start) < 0 or int(block_size) < 1:
            raise ConfigError("seed and start must be >= 0 and block_size >= 1")
        self.seed = int(seed)
        self.start = int(start)
        self.block_size = int(block_size)
        check_memory(_sample_bytes(self.preset, self.shape), f"a simulated pair of {_fmt(self.shape)}")
        self.ground_truth: list[torch.Tensor] | None = None
        if ground_truth is not None:
            imgs = []
            for img in ground_truth:
                arr = specimens.from_image(img)
                if arr.ndim != self.ndim:
                    raise InputError(
                        f"ground-truth image of {arr.ndim} dimensions for a {self.ndim}-D simulation"
                    )
                imgs.append(torch.from_numpy(arr))
            if not imgs:
                raise InputError("ground_truth is empty")
            self.ground_truth = imgs

    def sample(self, index: int) -> dict[str, Any]:
        """Sample ``index`` of the stream (a pure function of ``seed`` and ``index``)."""
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        out = simulate_pair(self.preset, self.shape, g, self.ground_truth)
        out["params"]["index"] = int(index)
        return out

    __getitem__ = sample

    def indices(self, worker: int = 0, num_workers: int = 1) -> Iterator[int]:
        """The (infinite) sample indices produced by one worker."""
        b = self.block_size
        block = worker
        while True:
            first = self.start + block * b
            yield from range(first, first + b)
            block += num_workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, count = (0, 1) if info is None else (info.id, info.num_workers)
        # torch's intra-op threads would oversubscribe the cores shared by workers
        if info is not None:
            torch.set_num_threads(1)
        for i in self.indices(worker, count):
            yield self.sample(i)


# --------------------------------------------------------------------------- datasets on disk
def simulate_dataset(
    preset: str | Preset,
    n: int,
    size: int | Sequence[int] = 128,
    seed: int = 0,
    ndim: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Simulate ``n`` pairs into arrays (samples ``0 .. n-1`` of the stream ``seed``).

    Parameters
    ----------
    preset : str or Preset
        Sampling distribution.
    n : int
        Number of pairs.
    size : int or tuple of int
        Patch size (see :class:`SimulatedPairs`).
    seed : int
        Stream seed.
    ndim : {2, 3}
        Dimensionality.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``low``, ``gt``: float32 ``(n, *patch)``; ``psfs``: float32 ``(n, *psf)``;
        ``params``: list of per-sample dicts; ``meta``: the preset, seed,
        size and ndim.

    Examples
    --------
    >>> from sharpscope.simulate import simulate_dataset
    >>> d = simulate_dataset("poster-zernike", n=2, size=32, seed=1)
    >>> d["low"].shape, d["psfs"].shape, len(d["params"])
    ((2, 32, 32), (2, 33, 33), 2)
    """
    if int(n) < 1:
        raise ConfigError(f"n must be positive, got {n}")
    ds = SimulatedPairs(preset, patch_size=size, seed=seed, ndim=ndim)
    psf_voxels = int(ds.preset.psf_size) ** 2 * (_psf_planes(ds.shape[0]) if ndim == 3 else 1)
    result = int(n) * (2 * math.prod(ds.shape) + psf_voxels) * 4
    check_memory(
        2 * result + _sample_bytes(ds.preset, ds.shape), f"{int(n)} simulated pairs of {_fmt(ds.shape)}"
    )
    it = range(int(n))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="simulate", unit="pair")
    low, gt, psfs, params = [], [], [], []
    for i in it:
        s = ds.sample(i)
        low.append(s["low"][0].numpy())
        gt.append(s["gt"][0].numpy())
        psfs.append(s["psf"].numpy())
        params.append(s["params"])
    return {
        "low": np.stack(low).astype(np.float32),
        "gt": np.stack(gt).astype(np.float32),
        "psfs": np.stack(psfs).astype(np.float32),
        "params": params,
        "meta": {
            "preset": ds.preset.to_dict(),
            "seed": int(seed),
            "shape": list(ds.shape),
            "ndim": ds.ndim,
            "n": int(n),
        },
    }


def write_dataset(path: str | os.PathLike[str], data: dict[str, Any]) -> tuple[Path, Path]:
    """Write a simulated dataset in the DeBCR ``npz`` layout plus a JSON file.

    ``path`` ending in ``.npz`` writes that file and ``<stem>.json`` beside
    it; any other path is a directory receiving ``data.npz`` and
    ``params.json``.  The npz holds ``low`` and ``gt`` (``(N, H, W)`` or
    ``(N, Z, H, W)`` float32), ``psf`` (``(N, *psf)``) and a small
    ``__sharpscope__`` entry naming the axes for :func:`sharpscope.io.read_image`;
    the JSON holds the preset, the seed and every sample's parameters.  Both
    are written atomically.

    Parameters
    ----------
    path : path-like
        Destination file (``.npz``) or directory.
    data : dict
        As returned by :func:`simulate_dataset`.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The npz and JSON paths.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from sharpscope.simulate import simulate_dataset, write_dataset
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "sim"
    >>> npz, js = write_dataset(out, simulate_dataset("mrbcr-widefield", 2, 32))
    >>> sorted(k for k in np.load(npz).files if not k.startswith("__")), js.name
    (['gt', 'low', 'psf'], 'params.json')
    """
    from sharpscope.io import NPZ_META_KEY, atomic_write

    for key in ("low", "gt", "psfs", "params"):
        if key not in data:
            raise InputError(f"dataset is missing {key!r}")
    p = Path(path)
    if p.suffix.lower() == ".npz":
        npz_path, json_path = p, p.with_suffix(".json")
    else:
        if p.exists() and not p.is_dir():
            raise InputError(f"{p} exists and is not a directory")
        npz_path, json_path = p / "data.npz", p / "params.json"
    low = np.asarray(data["low"], np.float32)
    psfs = np.asarray(data["psfs"], np.float32)
    axes = "SZYX" if low.ndim == 4 else "SYX"
    # axes for sharpscope.io.read_image (the DeBCR readers ignore this extra entry)
    meta = {
        "low": {"axes": axes},
        "gt": {"axes": axes},
        "psf": {"axes": "S" + "ZYX"[4 - psfs.ndim :]},
    }
    with atomic_write(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                low=low,
                gt=np.asarray(data["gt"], np.float32),
                psf=psfs,
                **{NPZ_META_KEY: np.array(json.dumps(meta))},
            )
    doc = dict(data.get("meta", {}))
    doc["npz"] = npz_path.name
    doc["samples"] = data["params"]
    with atomic_write(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return npz_path, json_path


# --------------------------------------------------------------------------- bead images
def bead_image(
    psf: np.ndarray,
    n: int = 30,
    *,
    flux: Range = (1.5e4, 4.5e4),
    background: float = 100.0,
    shape: tuple[int, int] = (512, 512),
    spacing: int = 45,
    extra: Sequence[tuple[float, float, float]] = (),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D calibration image of sub-resolution beads, and the beads' true centres.

    ``n`` beads at random positions (at least ``spacing`` pixels apart in either axis,
    away from the border) and random sub-pixel offsets: each is ``psf`` moved there by a
    Fourier shift (exact for a band-limited diffraction PSF) times a flux drawn from
    ``flux`` (photons); plus ``extra`` beads ``(row, column, flux)`` placed on whole
    pixels as given (e.g. a close pair); on a ``background`` (photons per pixel), with
    Poisson noise, as uint16 counts (clipped at 65535).  For testing and benchmarking
    :func:`sharpscope.blind.measure_bead_psf`.

    Returns
    -------
    image : numpy.ndarray
        ``shape`` uint16.
    centres : numpy.ndarray
        ``(n, 2)`` true sub-pixel centres (row, column) of the random beads.

    Examples
    --------
    >>> from sharpscope.physics.psf import make_psf
    >>> img, centres = bead_image(make_psf(fc=0.2, size=33), n=4, shape=(256, 256))
    >>> img.dtype, centres.shape
    (dtype('uint16'), (4, 2))
    """
    from scipy.ndimage import fourier_shift

    h = np.asarray(psf, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or h.shape[0] % 2 == 0:
        raise ConfigError(f"the bead PSF must be a square 2-D array of odd side, got shape {h.shape}")
    rng = np.random.default_rng(seed)
    big = np.pad(h, 40)  # room for the shift's wrap-around
    r = big.shape[0] // 2
    img = np.full(shape, float(background))
    if min(shape) <= 2 * r + 1:
        raise ConfigError(f"the bead image must be larger than {2 * r + 1} pixels per side")

    def add(y: int, x: int, d: np.ndarray, f: float) -> None:
        bead = np.fft.ifft2(fourier_shift(np.fft.fft2(big), d)).real
        img[y - r : y + r + 1, x - r : x + r + 1] += f * bead

    def free(y: int, x: int, others, gap: int) -> bool:
        return all(max(abs(y - a), abs(x - b)) > gap for a, b, *_ in others)

    centres: list[tuple[float, float]] = []
    for _ in range(200 * max(n, 1)):
        if len(centres) >= n:
            break
        y, x = (int(v) for v in rng.integers(r, np.array(shape) - r))
        if free(y, x, centres, spacing) and free(y, x, extra, spacing + 15):
            d = rng.uniform(-0.5, 0.5, 2)
            add(y, x, d, float(rng.uniform(*flux)))
            centres.append((y + d[0], x + d[1]))
    if len(centres) < n:
        raise ConfigError(f"{n} beads {spacing} px apart do not fit in {shape[0]}x{shape[1]}")
    for y, x, f in extra:
        add(int(y), int(x), np.zeros(2), float(f))
    counts = rng.poisson(np.clip(img, 0, None))
    return np.minimum(counts, 65535).astype(np.uint16), np.array(centres, dtype=np.float64).reshape(-1, 2)
