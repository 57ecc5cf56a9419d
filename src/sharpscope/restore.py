"""Whole-image restoration with a trained network.

:func:`load_model` reads a model file (or a bundled/user model by name) and
returns a :class:`Model`; :meth:`Model.predict` restores a numpy image of any
size and any axes containing ``Y`` and ``X``: the 2-D network runs plane by
plane over every other axis, tile by tile with smooth blending, and the
result is returned in the input's intensity units, shape and axes.
:func:`restore_files` does the same for files, folders and globs.

Normalisation: the header's percentiles (``pmin``, ``pmax``) are computed over
the whole image - over each channel separately when the axes contain ``C``
(channels of different fluorophores have unrelated intensity ranges) - and the
network output is mapped back with the inverse transform.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sharpscope.consistency import (
    AUTO_PSF,
    DEFAULT_STRENGTH,
    NO_PSF,
    THEORY_PSF,
    check_psf,
    data_consistency,
    theoretical_psf,
)
from sharpscope.errors import (
    AxesError,
    ConfigError,
    InputError,
    ModelFormatError,
    RangeWarning,
)
from sharpscope.io import (
    Image,
    guess_axes,
    validate_axes,
)
from sharpscope.normalize import denormalize, normalize, percentiles
from sharpscope.tiling import PreferredOverlap, predict_tiled

__all__ = [
    "Model",
    "check_finite",
    "load_model",
    "optics_condition",
    "optics_from_metadata",
    "resolve_device",
]

DTYPES = ("float32", "input")
DEFAULT_BATCH = 8
# peak CPU memory of m-rBCR (32 channels) per pixel of a tile in a batch: a 4096x4096 restore
# with 512-pixel tiles peaked at 2.8 GB with batches of 8 and 6.6 GB with batches of 64
TILE_BYTES_PER_PIXEL = 300
# the range check estimates noise and resolution on at most this central square of one plane
RANGE_CROP = 512
# the recorded range is the 1st-99th percentile of the training inputs' estimates: an input
# is flagged only when it lies beyond it by more than this factor (the estimators' own spread)
RANGE_TOLERANCE = 1.5


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``'auto'``, ``'cpu'``, ``'cuda'`` (or ``'cuda:N'``) into a torch device.

    Raises
    ------
    ConfigError
        Unknown device, or CUDA requested but not available.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available here")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"invalid device {name!r}") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return dev
    raise ConfigError(f"unknown device {device!r} (use auto, cpu or cuda)")


def check_finite(image: np.ndarray) -> np.ndarray:
    """Reject images a network cannot restore: empty, NaN/Inf, or constant.

    Parameters
    ----------
    image : array_like
        Any shape; integer, float or bool pixels.

    Returns
    -------
    numpy.ndarray
        The image as an array (unchanged).

    Raises
    ------
    InputError
        ``image is empty``, ``image contains N NaN/Inf pixels``,
        ``image is constant`` or an unsupported pixel type.

    Examples
    --------
    >>> import numpy as np
    >>> check_finite(np.array([[0.0, np.nan]]))
    Traceback (most recent call last):
    ...
    sharpscope.errors.InputError: image contains 1 NaN/Inf pixel(s) out of 2
    """
    arr = np.asarray(image)
    if arr.dtype.kind not in "buif":
        raise InputError(f"unsupported pixel type {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"image is empty (shape {arr.shape})")
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"image contains {bad} NaN/Inf pixel(s) out of {arr.size}")
    if arr.min() == arr.max():
        raise InputError(f"image is constant (every pixel is {arr.flat[0]}); nothing to restore")
    return arr


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


class Model:
    """A restoration network with its header.

    Parameters
    ----------
    header : ModelHeader
        The model file's header (normalisation percentiles, tile defaults...).
    network : torch.nn.Module
        Takes (N, 1, H, W) float32 and returns a tuple of per-scale outputs,
        full resolution first; has ``size_multiple``.
    path : pathlib.Path, optional
        Where the model was loaded from.

    Attributes
    ----------
    header : ModelHeader
        Everything the model file says about itself (see
        :class:`sharpscope.models.format.ModelHeader`).
    network : torch.nn.Module
        The plain network, in eval mode.
    path : pathlib.Path or None
        The model file.

    Examples
    --------
    >>> import numpy as np
    >>> model = load_model(device="cpu")  # the bundled default
    >>> model.name, model.architecture
    ('widefield-2d', 'mrbcr')
    >>> model.tile  # default tile size and overlap
    (512, 96)
    >>> sorted(model.training_range)  # recorded in its header
    ['cutoff', 'photons']
    >>> image = np.random.default_rng(0).poisson(50, (64, 80)).astype(np.uint16)
    >>> model.predict(image, warn_range=False).shape
    (64, 80)
    """

    def __init__(self, header: Any, network: nn.Module, path: Path | None = None):
        self.header = header
        self.network = network.eval()
        self.path = path

    def __repr__(self) -> str:
        name = _field(self.header, "name", "?")
        arch = _field(self.header, "architecture", "?")
        return f"Model(name={name!r}, architecture={arch!r})"

    @property
    def uses_optics(self) -> bool:
        """Whether the network takes the optics (cut-off fc, modality) as an input."""
        return bool(getattr(self.network, "optics_input", False))

    def optics(
        self, fc: Any, modality: Any = None, channels: int = 1
    ) -> list[torch.Tensor | None]:
        """The optics condition of each of ``channels`` channels (None: not used).

        ``fc`` and ``modality`` are one value for every channel or one per channel
        (their emission wavelengths differ, so do their cut-offs).  A model that does
        not take the optics ignores them with one ``UserWarning``.
        """
        fcs, mods = _per_channel(fc, channels, "fc"), _per_channel(modality, channels, "modality")
        return [optics_condition(self.network, f, m) for f, m in zip(fcs, mods, strict=True)]

    @property
    def name(self) -> str:
        """The model's name (header ``name``)."""
        return str(_field(self.header, "name", ""))

    @property
    def description(self) -> str:
        """One line on what the model is for (what ``sharpscope models`` shows)."""
        return str(_field(self.header, "description", "") or "")

    @property
    def architecture(self) -> str:
        """Key of the network architecture (``'mrbcr'``, ``'unet'``, ...)."""
        return str(_field(self.header, "architecture", ""))

    @property
    def training_range(self) -> dict[str, tuple[float, float]] | None:
        """The inputs the model was trained on, as :meth:`check_range` measures them.

        ``{'cutoff': (lo, hi), 'photons': (lo, hi)}`` (cycles/pixel; photons
        per unit of normalised intensity) with only the recorded entries, or
        None when the header records no range (older files, imported DeBCR
        weights).
        """
        valid = _field(self.header, "valid_range")
        out = {}
        for key in ("cutoff", "photons"):
            pair = _field(valid, key)
            if pair is not None:
                out[key] = (float(pair[0]), float(pair[1]))
        return out or None

    @property
    def tile(self) -> tuple[int, int]:
        """Default ``(tile size, overlap)`` in pixels, from the header."""
        size, overlap = self._tile_defaults()
        return size, int(overlap)

    @property
    def size_multiple(self) -> int:
        """H and W of network inputs must be divisible by this."""
        return int(getattr(self.network, "size_multiple", 1) or 1)

    @property
    def percentiles(self) -> tuple[float, float]:
        """(pmin, pmax) of the whole-image normalisation, from the header."""
        norm = _field(self.header, "normalization")
        return float(_field(norm, "pmin", 1.0)), float(_field(norm, "pmax", 99.8))

    def check_range(self, image: np.ndarray | Image, axes: str | None = None) -> str | None:
        """Whether an image looks like the model's training inputs (header ``valid_range``).

        The noise (:func:`sharpscope.estimate.estimate_noise`) and the cut-off
        frequency (:func:`sharpscope.estimate.estimate_cutoff`) are estimated
        on the central ``RANGE_CROP`` (512) pixel square of the middle plane
        of each channel, the noise as photons per unit of normalised intensity
        with this model's percentiles of the whole channel, exactly as
        :func:`sharpscope.estimate.calibrate_valid_range` measured the
        training inputs.  An estimate is out of range when it lies beyond the
        recorded range by more than ``RANGE_TOLERANCE`` (1.5x).

        Parameters
        ----------
        image : numpy.ndarray or Image
            As for :meth:`predict`.
        axes : str, optional
            As for :meth:`predict`.

        Returns
        -------
        str or None
            A one-line description of what is out of range (the text of the
            warning :meth:`predict` emits), or None when the image is within
            range or the header records no range.

        Examples
        --------
        >>> model.check_range(image)  # doctest: +SKIP
        "input looks outside the model's training range: estimated 3 photons per unit ..."
        """
        from sharpscope.models.noisemap import crop_slices

        valid = _field(self.header, "valid_range")
        if _field(valid, "cutoff") is None and _field(valid, "photons") is None:
            return None
        if isinstance(image, Image):
            axes = image.axes if axes is None else axes
            image = image.data
        arr = np.asarray(image)
        axes = guess_axes(arr.ndim) if axes is None else validate_axes(axes, arr.ndim)
        pmin, pmax = self.percentiles
        crops = []
        for chan in _channel_planes(arr, axes):
            plane = chan[len(chan) // 2]
            crops.append((plane[crop_slices(*plane.shape, RANGE_CROP)], *_scale(chan, pmin, pmax)))
        return self.range_message(crops)

    def range_message(self, crops: Sequence[tuple[np.ndarray, float, float]]) -> str | None:
        """:meth:`check_range` on what it measures: per channel a crop and its scale.

        Parameters
        ----------
        crops : sequence of (numpy.ndarray, float, float)
            Per channel, the central ``RANGE_CROP`` square of the middle plane and
            the channel's normalisation ``(lo, hi)`` (the intensities this model's
            percentiles of the whole channel map to 0 and 1).  The chunked path
            (:func:`sharpscope.parallel.restore_array`) reads just these.

        Returns
        -------
        str or None
            As for :meth:`check_range`.
        """
        from sharpscope.estimate import estimate_cutoff, estimate_noise, photons_per_unit

        valid = _field(self.header, "valid_range")
        cut_range = _field(valid, "cutoff")
        ph_range = _field(valid, "photons")
        if cut_range is None and ph_range is None:
            return None
        for c, (crop, lo, hi) in enumerate(crops):
            try:
                fc = estimate_cutoff(crop) if cut_range is not None else None
                noise = estimate_noise(crop) if ph_range is not None else None
            except InputError:  # too small or constant: nothing to judge
                continue
            found = []
            if noise is not None:
                photons = photons_per_unit(noise, lo, hi)
                lo_ph, hi_ph = ph_range[0] / RANGE_TOLERANCE, ph_range[1] * RANGE_TOLERANCE
                if not lo_ph <= photons <= hi_ph:
                    found.append(
                        f"{_num(photons)} photons per unit intensity "
                        f"(trained {_num(ph_range[0])}-{_num(ph_range[1])})"
                    )
            if fc is not None and not (
                cut_range[0] / RANGE_TOLERANCE <= fc <= cut_range[1] * RANGE_TOLERANCE
            ):
                found.append(
                    f"cut-off frequency {fc:.3g} cycles/pixel "
                    f"(trained {cut_range[0]:.3g}-{cut_range[1]:.3g})"
                )
            if found:
                where = f" (channel {c})" if len(crops) > 1 else ""
                return (
                    f"input looks outside the model's training range{where}: estimated "
                    f"{' and '.join(found)}; results may be unreliable"
                )
        return None

    def _memory_batch(
        self, requested: int | None, tile: Any, shape: tuple[int, int], dev: torch.device
    ) -> int:
        """Tiles per call that the available memory holds (CPU; GPUs keep the request)."""
        if requested is not None and int(requested) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {requested}")
        if dev.type != "cpu":
            return int(requested or DEFAULT_BATCH)
        from sharpscope.runtime import available_memory, format_bytes

        th, tw = (tile, tile) if isinstance(tile, (int, np.integer)) else tile
        pixels = min(int(th), shape[0] + 2 * self.size_multiple) * min(
            int(tw), shape[1] + 2 * self.size_multiple
        )
        width = max(1.0, float(_field(self.header, "hparams", {}).get("channels", 32)) / 32)
        per_tile = TILE_BYTES_PER_PIXEL * pixels * width
        allowed = max(1, int(0.5 * available_memory() // per_tile))
        if requested is None:
            return min(DEFAULT_BATCH, allowed)
        if int(requested) > allowed:
            warnings.warn(
                f"batch size {requested} needs about {format_bytes(requested * per_tile)} of "
                f"memory; using {allowed} tiles per call",
                RuntimeWarning,
                stacklevel=3,
            )
            return allowed
        return int(requested)

    def predictor(
        self, device: str | torch.device = "auto", precision: str = "float32", backend: str = "auto"
    ) -> Any:
        """The network's fastest correct :class:`~sharpscope.accel.Predictor` on ``device``.

        Cached per network, device and precision (see :mod:`sharpscope.accel`);
        what :meth:`predict` and :meth:`predict_patches` run.

        Examples
        --------
        >>> model = load_model(device="cpu")
        >>> model.predictor("cpu").plan.describe()
        'cpu eager fused channels-last chunks<=65536px float32'
        """
        from sharpscope.accel import predictor

        dev = resolve_device(device)
        return predictor(self.network.to(dev), dev, precision=precision, backend=backend)

    def predict_patches(
        self,
        batch: np.ndarray,
        noise: Sequence[float] | np.ndarray | None = None,
        device: str | torch.device = "auto",
        precision: str = "float32",
        backend: str = "auto",
    ) -> np.ndarray:
        """Run the network on a batch of patches: no normalisation, no tiling.

        Parameters
        ----------
        batch : numpy.ndarray
            ``(N, H, W)`` patches in the network's (normalised) units, H and W
            divisible by :attr:`size_multiple`.
        noise : array_like, optional
            ``(2,)`` or ``(N, 2)`` noise level (Poisson gain, Gaussian sigma) for a
            noise-conditioned network; None lets it estimate the level per patch.
        device, precision, backend
            As for :meth:`predictor`.

        Returns
        -------
        numpy.ndarray
            ``(N, H, W)`` float32, the full-resolution network output.

        Raises
        ------
        InputError
            Not ``(N, H, W)``, or H, W not divisible by the size multiple.

        Examples
        --------
        >>> model = load_model(device="cpu")
        >>> patches = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
        >>> model.predict_patches(patches, device="cpu").shape
        (2, 64, 64)
        """
        arr = np.asarray(batch, dtype=np.float32)
        m = self.size_multiple
        if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] % m or arr.shape[2] % m:
            raise InputError(
                f"predict_patches takes (N, H, W) with H, W divisible by {m}, got shape {arr.shape}"
            )
        run = self.predictor(device, precision=precision, backend=backend)
        x = torch.from_numpy(np.ascontiguousarray(arr))[:, None]
        nz = None if noise is None else torch.as_tensor(np.asarray(noise, dtype=np.float32))
        y = run(x) if nz is None else run(x, nz)
        return y[:, 0].cpu().numpy()

    def _tile_defaults(self) -> tuple[int, int]:
        """Header tile size and overlap; the overlap shrinks to fit a smaller tile."""
        tile = _field(self.header, "tile")
        overlap = PreferredOverlap(int(_field(tile, "overlap", 32)))
        return int(_field(tile, "size", 256)), overlap

    def predict(
        self,
        image: np.ndarray | Image,
        axes: str | None = None,
        tile: int | Sequence[int] | None = None,
        overlap: int | Sequence[int] | None = None,
        batch_size: int | None = None,
        device: str | torch.device = "auto",
        progress: bool = False,
        dtype: str = "float32",
        desc: str | None = None,
        tta: bool = False,
        warn_range: bool = True,
        precision: str = "float32",
        fc: float | Sequence[float] | None = None,
        modality: str | Sequence[str] | None = None,
        psf: np.ndarray | Sequence[np.ndarray] | str | None = AUTO_PSF,
        consistency: float | None = None,
    ) -> np.ndarray:
        """Restore a whole image.

        Parameters
        ----------
        image : numpy.ndarray or Image
            Any number of dimensions >= 2 with a ``Y`` and an ``X`` axis.
        axes : str, optional
            Axes of ``image`` (``STCZYX`` alphabet).  Default: those of an
            :class:`~sharpscope.io.Image`, else the last two dimensions are
            ``Y``, ``X`` (:func:`~sharpscope.io.guess_axes`).
        tile, overlap : int or (int, int), optional
            Tiling; default from the model header.
        batch_size : int, optional
            Tiles per network call.  Default: 8, or fewer when the available
            memory cannot hold 8 tiles' activations (about
            ``TILE_BYTES_PER_PIXEL`` bytes per tile pixel for m-rBCR's 32
            channels, on the CPU); a larger value than memory allows is
            lowered to what fits, with a ``RuntimeWarning``.
        device : {'auto', 'cpu', 'cuda'}
            Where the network runs; ``'auto'`` picks CUDA when available.
        progress : bool
            tqdm progress bar on stderr.
        dtype : {'float32', 'input'}
            ``'input'`` returns the input's dtype (integers rounded and
            clipped to their range).
        desc : str, optional
            Progress bar label.
        tta : bool
            Test-time augmentation: average the network's outputs over the 8
            rotations and mirror images of every tile (8 times the compute;
            +0.3 dB PSNR for the bundled model on simulated data, see
            docs/benchmarks.md).
        warn_range : bool
            When the header records a ``valid_range``, estimate the image's
            noise and resolution first (:meth:`check_range`) and emit one
            :class:`~sharpscope.errors.RangeWarning` if they lie outside it.
        precision : {'float32', 'bfloat16', 'float16'}
            Network arithmetic (:func:`sharpscope.accel.predictor`).  float32 is
            checked to stay within 1e-4 of the plain network's output range;
            bfloat16 (CPUs with native support, or CUDA) and float16 (CUDA) are
            faster but less exact.
        fc : float or sequence of float, optional
            The optics' cut-off ``NA * pixel / emission wavelength`` in cycles per
            pixel (0.25 = Nyquist sampling; :func:`sharpscope.blind.resolve_fc`
            computes it from NA, wavelength and pixel size).  An optics-conditioned
            model (:attr:`uses_optics`, like the bundled ``widefield-2d``) then
            knows how much blur to undo; without it the model judges the blur
            from the image.  Other models ignore it (one ``UserWarning``).  One
            value per channel for an image with a ``C`` axis (their emission
            wavelengths differ), or one for all.
        modality : {'widefield', 'confocal'} or sequence of them, optional
            The microscope type, with ``fc`` (default widefield).
        psf : numpy.ndarray, sequence of them, {'auto', 'theory', 'none'} or None
            The 2-D PSF of the measurement (a measured bead or
            :func:`sharpscope.physics.psf.make_psf` of the optics; one per channel
            or one for all).  Each restored plane is then corrected towards what
            the data show through this PSF (:func:`sharpscope.consistency.data_consistency`):
            the network keeps the frequencies the noise hides, the data take over
            those they resolve.  ``'theory'``: the aberration-free PSF of ``fc``
            and ``modality`` (:func:`sharpscope.consistency.theoretical_psf`).
            ``'auto'`` (default): ``'theory'`` when ``fc`` is given, else no
            correction.  ``'none'`` or None: no correction.
        consistency : float, optional
            Strength of that correction (default
            :data:`sharpscope.consistency.DEFAULT_STRENGTH`; 0 turns it off).
            Needs a PSF (given, or the optics for ``'auto'``).

        Returns
        -------
        numpy.ndarray
            Restored image, same shape and axes as the input.

        Raises
        ------
        InputError
            Empty, constant or non-finite image.
        AxesError
            Axes that do not match the image.
        ConfigError
            Bad tiling, dtype or device options.

        Examples
        --------
        >>> out = model.predict(stack, axes="TZYX", tile=256, overlap=32)  # doctest: +SKIP
        >>> out.shape == stack.shape  # doctest: +SKIP
        True
        """
        if isinstance(image, Image):
            if axes is None:
                axes = image.axes
            image = image.data
        arr = np.asarray(image)
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if dtype == "input" and arr.dtype.kind == "b":
            raise ConfigError("dtype='input' cannot keep a boolean image; use float32")
        if arr.dtype.kind == "b":  # a mask: restore its 0/1 intensities
            arr = arr.astype(np.float32)
        if arr.ndim < 2:
            raise AxesError(f"an image needs at least 2 dimensions (Y, X), got shape {arr.shape}")
        axes = guess_axes(arr.ndim) if axes is None else validate_axes(axes, arr.ndim)
        check_finite(arr)
        if warn_range:
            message = self.check_range(arr, axes)
            if message is not None:
                warnings.warn(message, RangeWarning, stacklevel=2)
        dev = resolve_device(device)
        t_default, o_default = self._tile_defaults()
        tile = t_default if tile is None else tile
        overlap = o_default if overlap is None else overlap

        # (..., Y, X) with every other axis leading; channels first when present
        lead = [a for a in axes if a not in "YX"]
        if "C" in lead:
            lead.remove("C")
            lead.insert(0, "C")
        order = [axes.index(a) for a in [*lead, "Y", "X"]]
        work = np.transpose(arr, order)
        h, w = work.shape[-2:]
        n_chan = work.shape[0] if "C" in axes else 1
        planes = work.reshape(n_chan, -1, h, w)

        pmin, pmax = self.percentiles
        net = self.network.to(dev)
        optics = self.optics(fc, modality, n_chan)
        psfs, strength = _consistency_psfs(psf, consistency, n_chan, fc, modality)
        batch_size = self._memory_batch(batch_size, tile, (h, w), dev)

        out = np.empty(planes.shape, dtype=np.float32)
        for c in range(n_chan):
            chan = planes[c]
            lo, hi = _scale(chan, pmin, pmax)
            normed = normalize(chan, lo, hi)
            fn = network_function(net, normed[len(normed) // 2], tta, precision=precision, optics=optics[c])
            label = desc if n_chan == 1 else f"{desc or 'channel'} {c}"
            restored = predict_tiled(
                fn,
                normed,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                multiple=self.size_multiple,
                progress=progress,
                device=dev,
                desc=label,
            )
            if not np.isfinite(restored).all():
                raise ModelFormatError(
                    f"the network produced {int((~np.isfinite(restored)).sum())} non-finite "
                    "pixels; the model is broken for this input (nothing was written)"
                )
            if psfs is not None and strength > 0:
                restored = np.stack(
                    [data_consistency(y, r, psfs[c], strength=strength) for y, r in zip(normed, restored, strict=True)]
                )
            out[c] = denormalize(restored, lo, hi)

        result = out.reshape(work.shape)
        result = np.transpose(result, np.argsort(order))
        if dtype == "input":
            result = _to_dtype(result, arr.dtype)
        return np.ascontiguousarray(result)


def psf_mode(psf: Any) -> str | None:
    """``'auto'``, ``'theory'`` or ``'none'`` for those ``psf=`` words (None: 'none'),
    None for a PSF given as an array, a list or a file path."""
    if psf is None:
        return NO_PSF
    if isinstance(psf, str) and psf.strip().lower() in (AUTO_PSF, THEORY_PSF, NO_PSF):
        return psf.strip().lower()
    return None


def _consistency_psfs(
    psf: Any, strength: float | None, n_chan: int, fc: Any = None, modality: Any = None
) -> tuple[list[np.ndarray] | None, float]:
    """Per-channel checked PSFs and the strength of the data-consistency step."""
    mode = psf_mode(psf)
    if mode == THEORY_PSF and fc is None:
        raise ConfigError(f"psf={THEORY_PSF!r} needs the optics (fc)")
    if mode == NO_PSF or (mode == AUTO_PSF and fc is None):
        if strength not in (None, 0):
            raise ConfigError("consistency needs a PSF (psf=...), or the optics (fc) for the theoretical one")
        return None, 0.0
    if mode is not None:  # the theoretical PSF of each channel's optics
        fcs, mods = _per_channel(fc, n_chan, "fc"), _per_channel(modality, n_chan, "modality")
        try:
            psf = [theoretical_psf(fc=float(f), modality=m) for f, m in zip(fcs, mods, strict=True)]
        except (TypeError, ValueError):
            raise ConfigError(f"fc must be a number, got {fc!r}") from None
    elif isinstance(psf, str):
        raise ConfigError(f"psf must be an array, {AUTO_PSF!r}, {THEORY_PSF!r} or {NO_PSF!r}, got {psf!r}")
    strength = DEFAULT_STRENGTH if strength is None else float(strength)
    if not (np.isfinite(strength) and strength >= 0):
        raise ConfigError(f"the consistency strength must be >= 0, got {strength}")
    if isinstance(psf, np.ndarray) and psf.ndim == 3 and n_chan > 1 and len(psf) == n_chan:
        psf = list(psf)
    if isinstance(psf, (list, tuple)):
        if len(psf) != n_chan:
            raise ConfigError(f"got {len(psf)} PSFs for {n_chan} channel(s)")
        return [check_psf(h, f"the PSF of channel {i}") for i, h in enumerate(psf)], strength
    return [check_psf(psf)] * n_chan, strength


def network_function(
    net: nn.Module,
    plane: np.ndarray | None = None,
    tta: bool = False,
    noise: Sequence[float] | torch.Tensor | None = None,
    precision: str = "float32",
    fast: bool = True,
    optics: torch.Tensor | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The tile function of a whole image: full-resolution output, optional 8-fold TTA.

    A noise-conditioned network (``net.noise_input``) gets the noise level measured
    once on ``plane`` (the image's normalised reference plane,
    :func:`sharpscope.models.noisemap.image_noise_params`), or ``noise`` when given,
    with every tile, so that all tiles of an image are restored with the same strength.
    ``optics`` (:func:`optics_condition`) is appended to it for an optics-conditioned
    network.
    The network runs through its cached :func:`sharpscope.accel.predictor` on the
    device of its parameters (``fast=False``: the plain module).

    Examples
    --------
    >>> from sharpscope.models.registry import build_network
    >>> fn = network_function(build_network("dncnn", depth=3).eval())
    >>> fn(torch.rand(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    """
    if noise is not None:
        noise = torch.as_tensor(noise, dtype=torch.float32)
    elif getattr(net, "noise_input", False) and plane is not None:
        from sharpscope.models.noisemap import image_noise_params

        noise = image_noise_params(plane)
    if optics is not None:
        if noise is None:
            raise ConfigError("the optics condition needs the noise level or the plane to measure it on")
        noise = torch.cat([noise.reshape(-1)[:2], torch.as_tensor(optics, dtype=torch.float32).reshape(-1)])

    if fast:
        from sharpscope.accel import predictor

        param = next(iter(net.parameters()), None)
        run = predictor(net, param.device if param is not None else "cpu", precision=precision)
    else:

        def run(t: torch.Tensor, n: torch.Tensor | None = None) -> torch.Tensor:
            return net(t)[0] if n is None else net(t, n.to(t.device))[0]

    def call(t: torch.Tensor) -> torch.Tensor:
        return run(t) if noise is None else run(t, noise)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return call(x) if not tta else _dihedral_mean(call, x)

    return fn


def optics_from_metadata(
    metadata: dict[str, Any], pixel_size: dict[str, float], axes: str, shape: Sequence[int]
) -> dict[str, Any] | None:
    """``fc`` and ``modality`` (per channel) from the optics an image file records.

    Needs the objective NA, the X pixel size and one emission wavelength per channel
    (``metadata['optics']``, read from OME-TIFF by :func:`sharpscope.io.read_image`);
    None when any is missing, when a channel was recorded by a modality other than
    widefield or confocal (multiphoton, SIM...), or when a cut-off falls outside
    (0, 0.5] cycles/pixel.  A channel without a recorded mode counts as widefield.

    Examples
    --------
    >>> meta = {"optics": {"na": 1.4, "wavelength_em": [520.0, 610.0], "modality": ["widefield", "confocal"]}}
    >>> optics_from_metadata(meta, {"X": 0.065, "Y": 0.065}, "CYX", (2, 64, 64))
    {'fc': [0.175, 0.1492], 'modality': ['widefield', 'confocal']}
    """
    optics = (metadata or {}).get("optics") or {}
    na, px = optics.get("na"), (pixel_size or {}).get("X")
    waves = list(optics.get("wavelength_em") or [])
    n = int(shape[axes.index("C")]) if "C" in axes else 1
    if na is None or px is None or len(waves) != n or any(w is None for w in waves):
        return None
    modes = list(optics.get("modality") or [None] * n)
    if len(modes) != n or any(m not in (None, "widefield", "confocal") for m in modes):
        return None
    from sharpscope.physics.psf import cutoff_frequency

    fcs = [cutoff_frequency(float(na), float(w), float(px)) for w in waves]
    if not all(0.0 < f <= 0.5 for f in fcs):
        return None
    modes = [m or "widefield" for m in modes]
    if "C" not in axes:
        return {"fc": round(fcs[0], 4), "modality": modes[0]}
    return {"fc": [round(f, 4) for f in fcs], "modality": modes}


def _per_channel(value: Any, n: int, what: str) -> list[Any]:
    """``value`` repeated for ``n`` channels, or its ``n`` entries (one per channel)."""
    if value is None or isinstance(value, (str, int, float, np.floating, np.integer)):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ConfigError(f"{what}: {len(values)} values for {n} channel(s); give one, or one per channel")
    return values


def optics_condition(
    net: nn.Module, fc: float | None, modality: str | None = None
) -> torch.Tensor | None:
    """The optics vector an optics-conditioned network takes, or None.

    None when ``fc`` is None (unknown optics: the network judges the blur from the
    image) or the network takes no optics (then a given ``fc`` is ignored with one
    ``UserWarning``).

    Examples
    --------
    >>> from sharpscope.models.mrbcr import MRBCR
    >>> optics_condition(MRBCR(noise_input=True, optics_input=True), 0.2)
    tensor([1.0000, 0.8000, 0.0000])
    """
    if fc is None:
        if modality is not None and modality not in ("widefield", "confocal"):
            raise ConfigError(f"modality must be 'widefield' or 'confocal', got {modality!r}")
        return None
    from sharpscope.models.mrbcr import optics_vector

    try:
        vec = optics_vector(float(fc), modality)
    except (TypeError, ValueError):
        raise ConfigError(f"fc must be a number, got {fc!r}") from None
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    if not getattr(net, "optics_input", False):
        warnings.warn(
            "this model does not take the optics: its network ignores fc/modality (the default "
            "psf='auto' still corrects through their theoretical PSF)",
            UserWarning,
            stacklevel=3,
        )
        return None
    return vec


def _num(v: float) -> str:
    """A number for a message: 3 significant digits, no exponent below a million."""
    return f"{v:.0f}" if 100 <= abs(v) < 1e6 else f"{v:.3g}"


def _channel_planes(arr: np.ndarray, axes: str) -> list[np.ndarray]:
    """``(planes, Y, X)`` views of each channel (every axis but C, Y, X flattened)."""
    lead = [a for a in axes if a not in "YX"]
    if "C" in lead:
        lead.remove("C")
        lead.insert(0, "C")
    work = np.transpose(arr, [axes.index(a) for a in [*lead, "Y", "X"]])
    h, w = work.shape[-2:]
    n_chan = work.shape[0] if "C" in axes else 1
    return list(work.reshape(n_chan, -1, h, w))


def _dihedral_mean(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Mean of ``fn`` over the 8 rotations / mirrors of ``x``'s last two axes, each undone."""
    dims = (-2, -1)
    total = torch.zeros_like(x)
    for k in range(4):
        for mirror in (False, True):
            t = torch.rot90(x, k, dims)
            t = torch.flip(t, (-1,)) if mirror else t
            y = fn(t)
            y = torch.flip(y, (-1,)) if mirror else y
            total += torch.rot90(y, -k, dims)
    return total / 8


def _scale(x: np.ndarray, pmin: float, pmax: float) -> tuple[float, float]:
    """Percentile range of a whole image, falling back to min/max when degenerate."""
    lo, hi = percentiles(x, pmin, pmax)
    if hi <= lo:  # e.g. a sparse image whose percentiles coincide
        lo, hi = float(np.min(x)), float(np.max(x))
    return lo, hi


def _to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to ``dtype`` with rounding and clipping for integers."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.clip(x, info.min, info.max).astype(dtype)
    raise ConfigError(f"cannot convert the result to {dtype}")


def load_model(name_or_path: str | os.PathLike[str] | None = None, device: str = "auto") -> Model:
    """Load a model file, or a bundled or user model by name.

    Parameters
    ----------
    name_or_path : str or path-like, optional
        A ``.safetensors`` model file, a folder containing
        ``model.safetensors``, or a model name (``sharpscope models`` lists
        them).  ``None`` loads the default model ``widefield-2d``.
    device : {'auto', 'cpu', 'cuda'}
        Where to place the network.

    Returns
    -------
    Model

    Raises
    ------
    ModelFormatError
        Model not found, or a file that fails validation.

    Examples
    --------
    >>> model = load_model("debcr-2D_denoising")  # doctest: +SKIP
    >>> model.network  # doctest: +SKIP
    MRBCR(...)
    """
    from sharpscope.models.format import load_network
    from sharpscope.models.store import DEFAULT_MODEL, resolve_model

    dev = resolve_device(device)
    try:
        path = resolve_model(name_or_path)
    except ModelFormatError as exc:
        if name_or_path is None:
            raise ModelFormatError(
                f"the default model {DEFAULT_MODEL!r} is not installed; pass a model file "
                "or name (--model), e.g. one made by 'sharpscope import-debcr'"
            ) from None
        raise ModelFormatError(str(exc)) from None
    header, network = load_network(path)
    return Model(header, network.to(dev), path=Path(path))
