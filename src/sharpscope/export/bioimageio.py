"""bioimage.io model packages (format 0.5) from sharpscope models.

:func:`export_bioimageio` writes one ``.zip`` that the bioimage.io ecosystem
(``bioimageio.core``, deepImageJ, ilastik, QuPath, the model zoo) can run:

* ``rdf.yaml``: the description.  Input ``raw`` and output ``restored`` have
  the axes ``batch, channel, y, x`` (one channel); ``y`` and ``x`` take any
  size ``min + n * step`` with ``step`` the network's size multiple, and the
  output declares a halo of half the model's tile overlap (the pixels a
  tiling consumer should crop from each side of a block).
* Preprocessing ``scale_range`` with the model's percentiles (``pmin``,
  ``pmax`` of its header) over ``y, x`` of each image, then ``ensure_dtype``
  float32.  There is no postprocessing: no operation of the format inverts a
  per-image percentile scaling, so the output stays in normalised units
  (``0`` is the input's ``pmin`` percentile, ``1`` its ``pmax`` percentile),
  as for the CARE models of the zoo.  ``sharpscope restore`` maps results
  back to the input's intensity units.
* Weights ``pytorch_state_dict`` (the architecture is
  :class:`FullResolution` from the installed ``sharpscope`` library, which
  returns only the full-resolution output of the multi-scale network) and
  ``torchscript`` (traced, needs only PyTorch).  The state dict is a plain
  ``torch.save`` of tensors, the format's requirement; it loads with
  ``weights_only=True``.  The sharpscope model file itself (safetensors) is
  attached, so ``sharpscope restore --model`` can use the package's model.
* ``test_input.npy`` / ``test_output.npy``: an image (simulated from the
  model's training preset unless given) and the model's own output for it,
  computed exactly as a bioimage.io consumer computes it (whole image, no
  tiling).
* ``cover.png`` (input | output), ``README.md`` (what the model does, its
  training data and range, how to validate it, citations) and the licence
  from the model header.

:func:`validate_bioimageio` runs ``bioimageio.core``'s test of a package
(format validation plus reproduction of the test output with every weight
format and inference at several sizes), offline.  It needs the ``export``
extra; :func:`export_bioimageio` runs it before the package takes its final
name unless ``validate=False``.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import yaml
from torch import nn

from sharpscope import __version__
from sharpscope.errors import ConfigError, InputError, ModelFormatError
from sharpscope.io import atomic_write
from sharpscope.restore import Model, check_finite, load_model

__all__ = [
    "WEIGHT_FORMATS",
    "BioimageioExport",
    "FullResolution",
    "export_bioimageio",
    "validate_bioimageio",
]

WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript")
"""Weight formats :func:`export_bioimageio` can write."""

FORMAT_VERSION = "0.5.4"
"""The bioimage.io model format written (0.5.x: read by every current consumer)."""

SCALE_RANGE_EPS = 1e-6
"""``eps`` of the format's ``scale_range``: ``(x - lo) / (hi - lo + eps)``."""

# a traced TorchScript network must match the eager one this closely (normalised units)
TORCHSCRIPT_TOLERANCE = 1e-4

DEFAULT_AUTHORS = ({"name": "sharpscope developers"},)
DEFAULT_TEST_SIZE = 256
DEFAULT_PRESET = "mrbcr-widefield"

CITATIONS = (
    {
        "text": (
            "Li R., Kudryashev M., Yakimovich A. Solving the inverse problem of microscopy "
            "deconvolution with a residual Beylkin-Coifman-Rokhlin neural network "
            "(m-rBCR). arXiv:2407.03239 (2024)."
        ),
        "doi": "10.48550/arXiv.2407.03239",
    },
    {
        "text": (
            "Li R., Yushkevich A., Chu X., Kudryashev M., Yakimovich A. DeBCR: a "
            "sparsity-efficient framework for image enhancement through a deep-learning-based "
            "solution to inverse problems (data and weights of the DeBCR framework on Zenodo)."
        ),
        "doi": "10.5281/zenodo.12626121",
    },
)

INPUT_ID = "raw"
OUTPUT_ID = "restored"
_NAME_ALLOWED = re.compile(r"[^A-Za-z0-9_+\- ()]")
_LICENSE_RE = re.compile(r"^[A-Z0-9][A-Za-z0-9.+-]*$")


class FullResolution(nn.Module):
    """A sharpscope network that returns only its full-resolution output.

    The restoration networks return a tuple of per-scale outputs, full
    resolution first; bioimage.io consumers expect one output tensor.  This
    is the ``pytorch_state_dict`` architecture of exported packages (the
    state dict's names are the network's, prefixed with ``network.``).

    Parameters
    ----------
    architecture : str
        Key of :data:`sharpscope.models.registry.ARCHITECTURES`.
    hparams : dict, optional
        Constructor arguments of the architecture (the model header's
        ``hparams``).

    Examples
    --------
    >>> import torch
    >>> net = FullResolution("mrbcr", {"channels": 8, "dense_layers": 2})
    >>> net(torch.zeros(1, 1, 16, 16)).shape
    torch.Size([1, 1, 16, 16])
    """

    def __init__(self, architecture: str, hparams: Mapping[str, Any] | None = None):
        super().__init__()
        from sharpscope.models.registry import build_network

        self.network = build_network(architecture, **dict(hparams or {}))

    @property
    def size_multiple(self) -> int:
        """H and W of inputs must be divisible by this."""
        return int(getattr(self.network, "size_multiple", 1) or 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the single-input call: a noise-conditioned network estimates its noise from x
        return self.network(x)[0]


@dataclass
class BioimageioExport:
    """What :func:`export_bioimageio` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The package (``.zip``).
    model : str
        Name of the exported sharpscope model.
    weights : tuple of str
        Weight formats in the package.
    min_size, step, halo : int
        Input sizes ``min_size + n * step`` (y and x) and the output halo.
    test_shape : tuple of int
        Shape of the test input (batch, channel, y, x).
    status : str or None
        ``'passed'`` or ``'failed'`` from ``bioimageio.core``'s test, None when
        not validated.
    files : list of str
        The files inside the package.
    """

    path: Path
    model: str
    weights: tuple[str, ...]
    min_size: int
    step: int
    halo: int
    test_shape: tuple[int, ...]
    status: str | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what ``sharpscope export-bioimageio --json`` prints)."""
        return {
            "path": str(self.path),
            "model": self.model,
            "weights": list(self.weights),
            "min_size": self.min_size,
            "step": self.step,
            "halo": self.halo,
            "test_shape": list(self.test_shape),
            "status": self.status,
            "files": list(self.files),
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_name(model: Model, name: str | None) -> str:
    text = name if name is not None else f"sharpscope {model.name} ({model.architecture})"
    clean = _NAME_ALLOWED.sub("-", str(text)).strip()
    if len(clean) < 5 or len(clean) > 128:
        raise ConfigError(
            f"package name {text!r} must have 5 to 128 characters (letters, digits, "
            "spaces and _+-())"
        )
    return clean


def _license_id(model: Model, license: str | None, check_list: bool = False) -> str:
    text = license if license is not None else str(getattr(model.header, "license", "") or "")
    token = text.strip().split()[0] if text.strip() else ""
    if not token:
        raise ConfigError(
            f"model {model.name!r} records no licence in its header; pass --license with an "
            "SPDX identifier (e.g. --license CC-BY-4.0)"
        )
    known = _spdx_ids() if check_list else frozenset()  # bioimageio.spec imports in seconds
    if not _LICENSE_RE.match(token) or (known and token not in known):
        raise ConfigError(
            f"licence {token!r} is not an SPDX identifier (e.g. BSD-3-Clause, CC-BY-4.0); "
            "pass --license"
        )
    return token


def _spdx_ids() -> frozenset[str]:
    """The SPDX licence identifiers bioimage.io accepts (empty when bioimageio.spec is absent)."""
    try:
        from typing import get_args

        from bioimageio.spec._internal._generated_spdx_license_literals import LicenseId
    except ImportError:
        return frozenset()
    return frozenset(get_args(LicenseId))


def _authors(model: Model, authors: Sequence[str | Mapping[str, str]] | None) -> list[dict]:
    if authors is None:
        if getattr(model, "path", None) is not None and _is_bundled(model.path):
            return [dict(a) for a in DEFAULT_AUTHORS]
        raise ConfigError(
            "pass --author NAME (the people to contact about this model; repeat it for "
            "several authors)"
        )
    out = []
    for a in authors:
        entry = {"name": a} if isinstance(a, str) else dict(a)
        name = str(entry.get("name", "")).strip()
        if not name or "/" in name:
            raise ConfigError(f"author name {name!r} must be non-empty and contain no '/'")
        entry["name"] = name
        out.append(entry)
    if not out:
        raise ConfigError("at least one author is needed (--author NAME)")
    return out


def _is_bundled(path: Path) -> bool:
    from sharpscope.models.store import bundled_dir

    try:
        return Path(path).resolve().parent == bundled_dir().resolve()
    except OSError:
        return False


def _geometry(model: Model) -> tuple[int, int, int]:
    """``(min_size, step, halo)`` of the y and x axes."""
    step = max(1, model.size_multiple)
    _, overlap = model.tile
    halo = max(0, int(overlap) // 2)
    smallest = max(64, 2 * halo + 32)
    min_size = int(math.ceil(smallest / step) * step)
    return min_size, step, halo


def _test_image(
    model: Model, image: np.ndarray | None, size: int, seed: int, min_size: int, step: int
) -> np.ndarray:
    """The 2-D float32 test input, cropped to a valid size."""
    if image is None:
        from sharpscope.simulate import simulate_dataset

        if size < min_size:
            raise ConfigError(f"the test image size must be at least {min_size}, got {size}")
        training = getattr(model.header, "training", None) or {}
        data = training.get("data") if isinstance(training, dict) else None
        preset = (data or {}).get("simulate") if isinstance(data, dict) else None
        try:
            sample = simulate_dataset(preset or DEFAULT_PRESET, n=1, size=size, seed=seed)
        except Exception:  # a preset this version no longer knows: the default one
            sample = simulate_dataset(DEFAULT_PRESET, n=1, size=size, seed=seed)
        image = sample["low"][0]
    arr = np.asarray(image)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float32)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InputError(
            f"the test image must be one 2-D plane (Y, X), got shape {np.shape(image)}"
        )
    check_finite(arr)
    h, w = arr.shape
    if min(h, w) < min_size:
        raise InputError(
            f"the test image is {h}x{w}; the package needs at least {min_size}x{min_size}"
        )
    hh = min_size + (h - min_size) // step * step
    ww = min_size + (w - min_size) // step * step
    y0, x0 = (h - hh) // 2, (w - ww) // 2
    out = np.ascontiguousarray(arr[y0 : y0 + hh, x0 : x0 + ww], dtype=np.float32)
    check_finite(out)
    return out


def _scale_range(x: np.ndarray, pmin: float, pmax: float) -> np.ndarray:
    """bioimage.io's ``scale_range`` over y, x (linear percentiles), as float32."""
    lo, hi = np.percentile(x, [pmin, pmax])
    return ((x - lo) / (hi - lo + SCALE_RANGE_EPS)).astype(np.float32)


def _cover(raw: np.ndarray, restored: np.ndarray, path: Path) -> None:
    """``input | output`` side by side, each scaled to its 0.5-99.5 percentiles, 8-bit PNG."""
    from PIL import Image as PILImage

    def to8(a: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(a, [0.5, 99.5])
        scaled = (a - lo) / max(float(hi - lo), 1e-12)
        return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)

    gap = np.full((raw.shape[0], max(2, raw.shape[1] // 64)), 255, np.uint8)
    panel = np.concatenate([to8(raw), gap, to8(restored)], axis=1)
    PILImage.fromarray(panel).save(path)


def _trace(wrapper: FullResolution, example: torch.Tensor, check: torch.Tensor) -> Any:
    """Trace ``wrapper``; refuse when the trace differs from the network on another input."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        for x in (example, check):
            diff = float((traced(x) - wrapper(x)).abs().max())
            if not diff <= TORCHSCRIPT_TOLERANCE:
                raise ModelFormatError(
                    f"the TorchScript trace of this network differs from it by {diff:.3g} on "
                    f"a {tuple(x.shape[-2:])} input; export without it (--weights "
                    "pytorch_state_dict)"
                )
    return traced


def _licence_text(license_id: str, header_text: str) -> str:
    """The header's licence text when it starts with the identifier, else the identifier."""
    return header_text if header_text.split()[:1] == [license_id] else license_id


def _readme(
    model: Model,
    name: str,
    license_id: str,
    geometry: tuple[int, int, int],
    weights: Sequence[str],
    test_shape: tuple[int, ...],
    validated: bool = False,
) -> str:
    min_size, step, halo = geometry
    pmin, pmax = model.percentiles
    header = model.header
    lines = [
        f"# {name}",
        "",
        model.description or f"A {model.architecture} restoration network.",
        "",
        f"Exported from the sharpscope model `{model.name}` (architecture `{model.architecture}`) "
        f"by sharpscope {__version__}.",
        "",
        "## What it does",
        "",
        "It restores 2-D fluorescence microscopy images: it removes noise and undoes the blur "
        "of the microscope (denoising and deconvolution) in one pass. 3-D stacks and time "
        "series are restored plane by plane."
        + (
            " In sharpscope the network can also be told the optics (the cut-off "
            "NA * pixel / emission wavelength and the modality: `sharpscope restore --na "
            "... --wavelength ...`); this package runs it without them, so it judges the "
            "blur from the image alone."
            if getattr(model.network, "optics_input", False)
            else ""
        ),
        "",
        "## Input and output",
        "",
        f"- Input `{INPUT_ID}`: one channel, axes batch, channel, y, x; y and x of "
        f"{min_size} + n * {step} pixels (any n >= 0), any intensity units.",
        f"- Preprocessing: `scale_range` over y and x of each image, percentiles {pmin:g} and "
        f"{pmax:g} mapped to 0 and 1 (the normalisation the network was trained with).",
        f"- Output `{OUTPUT_ID}`: same shape, in the normalised units (0 and 1 are the input's "
        f"percentiles {pmin:g} and {pmax:g}). To get the input's units back, multiply "
        "by (p_high - p_low) and add p_low; `sharpscope restore` does this for you.",
        f"- Tiling: crop a halo of {halo} pixels from each side of every output block "
        "(half the model's tile overlap).",
        "",
        "## Training",
        "",
        str(getattr(header, "provenance", "") or "No provenance recorded."),
    ]
    rng = model.training_range
    if rng:
        parts = []
        if "photons" in rng:
            lo, hi = rng["photons"]
            parts.append(f"{lo:.3g}-{hi:.3g} photons per unit of normalised intensity")
        if "cutoff" in rng:
            lo, hi = rng["cutoff"]
            parts.append(f"optical cut-off frequency {lo:.3g}-{hi:.3g} cycles/pixel")
        lines += [
            "",
            "Training inputs covered " + " and ".join(parts) + " (estimated on each input by "
            "`sharpscope.estimate`); results on images far outside this range are unreliable, "
            "and `sharpscope restore` warns about them.",
        ]
    lines += [
        "",
        "## Validation",
        "",
        f"The package's test input ({test_shape[-2]}x{test_shape[-1]} pixels) comes with the "
        "model's own output for it; "
        + (
            "`bioimageio.core`'s test reproduced it with every weight format when the package "
            "was exported."
            if validated
            else "`bioimageio.core`'s test (`bioimageio test PACKAGE.zip`) checks that every "
            "weight format reproduces it."
        )
        + " To validate the model quantitatively on your own data, "
        "restore images for which a ground truth exists (for instance long-exposure or "
        "deconvolved acquisitions of the same field) and compare them:",
        "",
        "```",
        "sharpscope restore noisy.tif -o restored.tif --model model.safetensors",
        "sharpscope evaluate restored.tif ground_truth.tif   # PSNR, SSIM, NRMSE, FRC",
        "```",
        "",
        "## Weights",
        "",
    ]
    if "pytorch_state_dict" in weights:
        lines.append(
            "- `pytorch_state_dict`: needs the `sharpscope` Python package (architecture "
            "`sharpscope.export.bioimageio.FullResolution`)."
        )
    if "torchscript" in weights:
        lines.append("- `torchscript`: needs only PyTorch.")
    lines += [
        "- `model.safetensors` (attachment): the sharpscope model file, for "
        "`sharpscope restore --model model.safetensors` after unzipping.",
        "",
        "## Citations",
        "",
        *[f"- {c['text']} doi:{c['doi']}" for c in CITATIONS],
        "",
        "## Licence",
        "",
        _licence_text(license_id, str(getattr(header, "license", "") or "")),
        "",
    ]
    return "\n".join(lines)


def _rdf(
    model: Model,
    *,
    name: str,
    description: str,
    authors: list[dict],
    license_id: str,
    geometry: tuple[int, int, int],
    weights: dict[str, tuple[str, str]],
    files: dict[str, str],
) -> dict[str, Any]:
    min_size, step, halo = geometry
    pmin, pmax = model.percentiles
    space_in = [
        {"type": "space", "id": a, "size": {"min": min_size, "step": step}} for a in ("y", "x")
    ]
    space_out = []
    for a in ("y", "x"):
        axis: dict[str, Any] = {
            "type": "space",
            "id": a,
            "size": {"tensor_id": INPUT_ID, "axis_id": a},
        }
        if halo:
            axis["halo"] = halo
        space_out.append(axis)
    torch_version = torch.__version__.split("+")[0]
    weights_rdf: dict[str, Any] = {}
    if "pytorch_state_dict" in weights:
        src, sha = weights["pytorch_state_dict"]
        weights_rdf["pytorch_state_dict"] = {
            "source": src,
            "sha256": sha,
            "architecture": {
                "callable": "FullResolution",
                "import_from": "sharpscope.export.bioimageio",
                "kwargs": {
                    "architecture": model.architecture,
                    "hparams": dict(getattr(model.header, "hparams", {}) or {}),
                },
            },
            "pytorch_version": torch_version,
        }
    if "torchscript" in weights:
        src, sha = weights["torchscript"]
        entry: dict[str, Any] = {"source": src, "sha256": sha, "pytorch_version": torch_version}
        if "pytorch_state_dict" in weights:
            entry["parent"] = "pytorch_state_dict"
        weights_rdf["torchscript"] = entry
    tags = [
        "denoising",
        "deconvolution",
        "restoration",
        "fluorescence-light-microscopy",
        "2d",
        "pytorch",
        "sharpscope",
        model.architecture,
    ]
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "authors": authors,
        "cite": [dict(c) for c in CITATIONS],
        "license": license_id,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": tags,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "raw fluorescence image, one channel, any intensity units",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": [INPUT_ID]},
                    *space_in,
                ],
                "test_tensor": {"source": "test_input.npy", "sha256": files["test_input.npy"]},
                "sample_tensor": {
                    "source": "sample_input.tif",
                    "sha256": files["sample_input.tif"],
                },
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["y", "x"],
                            "min_percentile": float(pmin),
                            "max_percentile": float(pmax),
                            "eps": SCALE_RANGE_EPS,
                        },
                    },
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": (
                    f"restored image in normalised units: 0 and 1 are the input's "
                    f"percentiles {pmin:g} and {pmax:g}"
                ),
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": [OUTPUT_ID]},
                    *space_out,
                ],
                "test_tensor": {"source": "test_output.npy", "sha256": files["test_output.npy"]},
                "sample_tensor": {
                    "source": "sample_output.tif",
                    "sha256": files["sample_output.tif"],
                },
                "data": {"type": "float32"},
            }
        ],
        "weights": weights_rdf,
        "attachments": [{"source": "model.safetensors", "sha256": files["model.safetensors"]}],
        "config": {
            "sharpscope": {
                "version": __version__,
                "model": model.name,
                "architecture": model.architecture,
                "normalization": {"pmin": float(pmin), "pmax": float(pmax)},
                "tile": {"size": model.tile[0], "overlap": model.tile[1]},
            },
        },
    }


def export_bioimageio(
    model: str | os.PathLike[str] | Model | None,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str | Mapping[str, str]] | None = None,
    license: str | None = None,
    test_image: np.ndarray | None = None,
    test_size: int = DEFAULT_TEST_SIZE,
    seed: int = 0,
    weights: Sequence[str] = WEIGHT_FORMATS,
    validate: bool = True,
    overwrite: bool = False,
) -> BioimageioExport:
    """Write a model as a bioimage.io model package (format 0.5, a ``.zip``).

    Parameters
    ----------
    model : str, path-like, Model or None
        A bundled or user model name (``widefield-2d``), a model file, a
        training run folder (its ``model.safetensors``), or a loaded
        :class:`~sharpscope.restore.Model`; None is the default model.
    path : path-like
        Output ``.zip``.  Written atomically: nothing appears under this name
        unless the package is complete (and passed validation).
    name : str, optional
        Package name (default ``'sharpscope <model> (<architecture>)'``);
        characters other than letters, digits, spaces and ``_+-()`` become ``-``.
    description : str, optional
        One paragraph (default: the model header's description).
    authors : sequence of str or dict, optional
        Names (or bioimage.io author dicts with ``name``, ``affiliation``,
        ``orcid``...).  Default for bundled models: the sharpscope developers;
        other models need it.
    license : str, optional
        SPDX licence identifier; default: the first word of the header's
        ``license``.
    test_image : numpy.ndarray, optional
        One 2-D plane for the test tensors and cover (cropped centrally to a
        valid size).  Default: an image simulated from the model's training
        preset (``test_size`` pixels square, ``seed``).
    test_size : int
        Side of the simulated test image (default 256).
    seed : int
        Seed of the simulated test image.
    weights : sequence of {'pytorch_state_dict', 'torchscript'}
        Weight formats to include (default both).
    validate : bool
        Run ``bioimageio.core``'s test on the package before it takes its
        name (:func:`validate_bioimageio`; needs the ``export`` extra) and
        refuse a package that fails.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    BioimageioExport

    Raises
    ------
    ConfigError
        Bad options (suffix, weight format, licence, authors, name), or
        ``validate`` without ``bioimageio.core`` installed.
    InputError
        ``path`` exists and ``overwrite`` is False, or an unusable test image.
    ModelFormatError
        The model cannot be loaded or exported, or the package failed validation.

    Examples
    --------
    >>> result = export_bioimageio("widefield-2d", "widefield-2d.zip", test_size=128,
    ...                            validate=False)
    >>> result.weights, result.min_size, result.step, result.halo
    (('pytorch_state_dict', 'torchscript'), 128, 4, 48)
    >>> "rdf.yaml" in result.files
    True
    """
    dest = Path(path).expanduser()
    if dest.suffix.lower() != ".zip":
        raise ConfigError(f"the package must be a .zip file, got {dest.name!r}")
    if dest.exists() and not overwrite:
        raise InputError(f"{dest} exists; pass --overwrite to replace it")
    if dest.is_dir():
        raise InputError(f"{dest} is a folder; give a .zip file name")
    formats = tuple(dict.fromkeys(weights))
    unknown = [w for w in formats if w not in WEIGHT_FORMATS]
    if unknown or not formats:
        raise ConfigError(
            f"unknown weight format(s) {', '.join(map(repr, unknown)) or '(none given)'} "
            f"(use {', '.join(WEIGHT_FORMATS)})"
        )
    if validate:
        _require_core()
    if int(test_size) < 1:
        raise ConfigError(f"test_size must be positive, got {test_size}")

    loaded = model if isinstance(model, Model) else load_model(model, device="cpu")
    pkg_name = _package_name(loaded, name)
    license_id = _license_id(loaded, license, check_list=validate)
    author_list = _authors(loaded, authors)
    text = description if description is not None else loaded.description
    text = (text or f"sharpscope {loaded.architecture} restoration network").strip()[:1024]
    geometry = _geometry(loaded)
    min_size, step, halo = geometry

    wrapper = FullResolution(loaded.architecture, getattr(loaded.header, "hparams", {}) or {})
    try:
        wrapper.network.load_state_dict(loaded.network.state_dict())
    except RuntimeError as exc:
        raise ModelFormatError(
            f"the network of {loaded.name!r} does not match its header's architecture: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    wrapper = wrapper.to("cpu").eval()

    raw = _test_image(loaded, test_image, int(test_size), int(seed), min_size, step)
    pmin, pmax = loaded.percentiles
    x = torch.from_numpy(_scale_range(raw, pmin, pmax)[None, None])
    with torch.no_grad():
        restored = wrapper(x).numpy().astype(np.float32)
    if not np.isfinite(restored).all():
        raise ModelFormatError("the network produced non-finite pixels on the test image")

    from sharpscope.models.format import save_model

    with tempfile.TemporaryDirectory(prefix="sharpscope-bioimageio-") as tmp:
        root = Path(tmp)
        np.save(root / "test_input.npy", raw[None, None])
        np.save(root / "test_output.npy", restored)
        # the same images as 2-D TIFFs: what a person opens to see an example
        tifffile.imwrite(root / "sample_input.tif", raw)
        tifffile.imwrite(root / "sample_output.tif", restored[0, 0])
        _cover(raw, restored[0, 0], root / "cover.png")
        save_model(root / "model.safetensors", loaded.network, loaded.header)
        weight_files: dict[str, tuple[str, str]] = {}
        if "pytorch_state_dict" in formats:
            torch.save(wrapper.state_dict(), root / "pytorch_state_dict.pt")
            weight_files["pytorch_state_dict"] = (
                "pytorch_state_dict.pt",
                _sha256(root / "pytorch_state_dict.pt"),
            )
        if "torchscript" in formats:
            g = torch.Generator().manual_seed(int(seed) + 1)
            other = torch.rand((2, 1, min_size + step, min_size + 2 * step), generator=g)
            traced = _trace(wrapper, x, other)
            traced.save(str(root / "torchscript.pt"))
            weight_files["torchscript"] = ("torchscript.pt", _sha256(root / "torchscript.pt"))
        hashes = {
            f: _sha256(root / f)
            for f in (
                "test_input.npy",
                "test_output.npy",
                "sample_input.tif",
                "sample_output.tif",
                "model.safetensors",
            )
        }
        (root / "README.md").write_text(
            _readme(
                loaded, pkg_name, license_id, geometry, formats, raw[None, None].shape, validate
            ),
            encoding="utf-8",
        )
        rdf = _rdf(
            loaded,
            name=pkg_name,
            description=text,
            authors=author_list,
            license_id=license_id,
            geometry=geometry,
            weights=weight_files,
            files=hashes,
        )
        (root / "rdf.yaml").write_text(
            yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        names = sorted(p.name for p in root.iterdir())
        status = None
        with atomic_write(dest) as out:
            with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for n in names:
                    zf.write(root / n, n)
            if validate:
                status, problem = _run_test(out)
                if status != "passed":
                    raise ModelFormatError(
                        f"the package failed bioimage.io's test ({problem}); nothing was written"
                    )
    return BioimageioExport(
        path=dest,
        model=loaded.name,
        weights=formats,
        min_size=min_size,
        step=step,
        halo=halo,
        test_shape=tuple(int(s) for s in raw[None, None].shape),
        status=status,
        files=names,
    )


def _require_core() -> None:
    try:
        import bioimageio.core  # noqa: F401
    except ImportError:
        raise ConfigError(
            "validating a bioimage.io package needs bioimageio.core: pip install "
            "'sharpscope[export]' (or skip the check with --no-validate)"
        ) from None


def _run_test(package: Path) -> tuple[str, str]:
    """``bioimageio.core.test_model`` on CPU, quietly; returns (status, first problem)."""
    from bioimageio.core import test_model
    from loguru import logger

    logger.disable("bioimageio")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = test_model(package, devices=["cpu"])
    finally:
        logger.enable("bioimageio")
    problem = ""
    for detail in summary.details:
        if detail.status != "passed" and detail.errors:
            err = detail.errors[0]
            where = ".".join(str(p) for p in err.loc) if err.loc else detail.name
            problem = f"{where}: {str(err.msg).splitlines()[0]}"
            break
    return str(summary.status), problem or "no details"


def validate_bioimageio(package: str | os.PathLike[str]) -> str:
    """Run ``bioimageio.core``'s test of a model package (offline, on the CPU).

    The test validates ``rdf.yaml`` against the format (with file hashes),
    reproduces the test output from the test input with every weight format,
    and runs inference at three sizes and two batch sizes.

    Parameters
    ----------
    package : path-like
        A package ``.zip`` or its ``rdf.yaml``.

    Returns
    -------
    str
        ``'passed'``.

    Raises
    ------
    ConfigError
        ``bioimageio.core`` is not installed (the ``export`` extra).
    InputError
        ``package`` does not exist.
    ModelFormatError
        The package failed; the message names the first problem.

    Examples
    --------
    >>> validate_bioimageio("widefield-2d.zip")  # doctest: +SKIP
    'passed'
    """
    p = Path(package).expanduser()
    if not p.exists():
        raise InputError(f"{p} does not exist")
    _require_core()
    status, problem = _run_test(p)
    if status != "passed":
        raise ModelFormatError(f"{p} failed bioimage.io's test ({problem})")
    return status
