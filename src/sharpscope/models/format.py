"""The sharpscope model file: one ``.safetensors`` file with a JSON header.

The tensors are the network's ``state_dict``; the header (a :class:`ModelHeader`
serialised as JSON) lives in the safetensors metadata under the key
``"sharpscope"``.  It names the architecture and its hyper-parameters (the
coarse-input ``decimation`` of m-rBCR among them), the percentile normalisation
and tiling defaults, and the model's provenance and licence.

Loading never unpickles anything: safetensors holds raw tensors only, and the
header is validated (known architecture, supported format version) before the
network is built from it; the stored tensors must then match that network's
parameters exactly (names, shapes and dtypes).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from sharpscope.errors import ModelFormatError, SharpscopeError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "ModelHeader",
    "Normalization",
    "Tile",
    "ValidRange",
    "load_network",
    "read_header",
    "save_model",
]

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
METADATA_KEY = "sharpscope"


class Normalization(BaseModel):
    """Percentile normalisation over the whole image: ``pmin``/``pmax`` map to 0/1."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    pmin: float = Field(1.0, ge=0.0, le=100.0)
    pmax: float = Field(99.8, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _ordered(self) -> Normalization:
        if not self.pmin < self.pmax:
            raise ValueError(f"pmin ({self.pmin}) must be smaller than pmax ({self.pmax})")
        return self


class Tile(BaseModel):
    """Default tile edge length and overlap (pixels) for whole-image prediction.

    The m-rBCR receptive field spans well over a hundred pixels (its quarter-scale branch
    carries 1x5 and 3x3 stacks), so seams stay below 1e-3 of the output range only with
    large overlaps: 512/160 is the measured safe default (see docs/benchmarks.md).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    size: int = Field(512, ge=1)
    overlap: int = Field(160, ge=0)

    @model_validator(mode="after")
    def _overlap_fits(self) -> Tile:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


Pair = tuple[float, float]


class ValidRange(BaseModel):
    """Where a model's training inputs lay, as measured on each input by :mod:`sharpscope.estimate`.

    Each range is a ``(low, high)`` pair, or None when not recorded.  The
    ranges are calibrated by running the same estimators on the training
    distribution (:func:`sharpscope.estimate.calibrate_valid_range`), so an
    input outside them is unlike anything the model was trained on.

    Attributes
    ----------
    cutoff : (float, float) or None
        :func:`~sharpscope.estimate.estimate_cutoff` of the input image,
        cycles/pixel (``fc = NA * pixel / wavelength``).
    photons : (float, float) or None
        Photons per unit of normalised intensity,
        :func:`~sharpscope.estimate.photons_per_unit` of
        :func:`~sharpscope.estimate.estimate_noise` on the raw input and the
        model's normalisation percentiles ``lo``, ``hi`` of it:
        ``(hi - lo) / gain``.

    Examples
    --------
    >>> ValidRange(cutoff=(0.1, 0.25), photons=(20, 500)).photons
    (20.0, 500.0)
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cutoff: Pair | None = None
    photons: Pair | None = None

    @field_validator("cutoff", "photons")
    @classmethod
    def _ordered_pair(cls, v: Pair | None) -> Pair | None:
        if v is None:
            return v
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or lo > hi:
            raise ValueError(f"range must be finite, non-negative and ordered, got {v}")
        return v


class ModelHeader(BaseModel):
    """Everything about a model file except its weights.

    Attributes
    ----------
    format_version : int
        Version of this header layout (currently 1).
    name : str
        Short name of the model.
    description : str
        One line shown by ``sharpscope models``.
    architecture : str
        Key of :data:`sharpscope.models.registry.ARCHITECTURES`.
    hparams : dict
        Constructor arguments of the architecture.
    normalization : Normalization
        Percentiles (``pmin``, ``pmax``) of the whole-image normalisation.
    tile : Tile
        Default tile ``size`` and ``overlap``.
    provenance : str
        Who made the weights, from what.
    license : str
        Licence of the weights (text or pointer to it).
    training : dict or None
        The validated training configuration, when the model was trained here.
    valid_range : ValidRange or None
        Input noise and resolution the model was trained for (checked at
        run time by :meth:`sharpscope.restore.Model.predict`); None for
        files that do not record it.

    Examples
    --------
    >>> h = ModelHeader(name="demo", architecture="mrbcr")
    >>> h.normalization.pmax, h.tile.size, h.valid_range
    (99.8, 512, None)
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    format_version: int = FORMAT_VERSION
    name: str = Field(min_length=1)
    description: str = ""
    architecture: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    normalization: Normalization = Field(default_factory=Normalization)
    tile: Tile = Field(default_factory=Tile)
    provenance: str = ""
    license: str = ""
    training: dict[str, Any] | None = None
    valid_range: ValidRange | None = None

    @field_validator("format_version")
    @classmethod
    def _supported(cls, v: int) -> int:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"format version {v} is not supported by this sharpscope "
                f"(supported: {', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})"
            )
        return v

    @field_validator("architecture")
    @classmethod
    def _known(cls, v: str) -> str:
        from sharpscope.models.registry import ARCHITECTURES

        if v not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {v!r} (known: {', '.join(sorted(ARCHITECTURES))})"
            )
        return v


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "header"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{more}"


def _as_header(header: ModelHeader | dict) -> ModelHeader:
    if isinstance(header, ModelHeader):
        return header
    try:
        return ModelHeader.model_validate(header)
    except ValidationError as exc:
        raise ModelFormatError(f"invalid model header: {_one_line(exc)}") from None


def _compare(stored: dict, expected: dict, what: str) -> None:
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing:
        raise ModelFormatError(f"{what}: missing tensor {missing[0]!r} ({len(missing)} missing)")
    if extra:
        raise ModelFormatError(f"{what}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected)")
    for key, (shape, dtype) in expected.items():
        s_shape, s_dtype = stored[key]
        if s_shape != shape:
            raise ModelFormatError(f"{what}: tensor {key!r} has shape {s_shape}, expected {shape}")
        if s_dtype != dtype:
            raise ModelFormatError(f"{what}: tensor {key!r} has dtype {s_dtype}, expected {dtype}")


def check_finite_state(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights that hold NaN or infinite values (one-line ModelFormatError)."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelFormatError(f"{what}: tensor {key!r} holds NaN or infinite values")


def _expected_signature(header: ModelHeader, what: str) -> dict:
    from sharpscope.models.registry import network_signature

    try:
        return network_signature(header.architecture, **header.hparams)
    except SharpscopeError as exc:
        raise ModelFormatError(f"{what}: {exc}") from None


def _build(header: ModelHeader, what: str) -> nn.Module:
    from sharpscope.models.registry import build_network

    try:
        return build_network(header.architecture, **header.hparams)
    except SharpscopeError as exc:
        raise ModelFormatError(f"{what}: {exc}") from None


def save_model(path: str | os.PathLike, network: nn.Module, header: ModelHeader | dict) -> Path:
    """Write a network and its header to one ``.safetensors`` file, atomically.

    Parameters
    ----------
    path : str or PathLike
        Output file (parent folders are created).
    network : torch.nn.Module
        The network; its ``state_dict`` must match the network that ``header``
        describes (same tensor names, shapes and dtypes).
    header : ModelHeader or dict
        The header; a dict is validated into a :class:`ModelHeader`.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ModelFormatError
        Invalid header, or weights that do not match it.

    Examples
    --------
    >>> from sharpscope.models.registry import build_network
    >>> net = build_network("srbcr")
    >>> save_model("tiny.safetensors", net, {"name": "tiny", "architecture": "srbcr"})  # doctest: +SKIP
    PosixPath('tiny.safetensors')
    """
    from safetensors.torch import save_file

    from sharpscope.io import atomic_write

    path = Path(path)
    header = _as_header(header)
    what = f"cannot save model {header.name!r}"
    expected = _expected_signature(header, what)
    tensors = {
        k: v.detach().to("cpu").clone().contiguous() for k, v in network.state_dict().items()
    }
    _compare({k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}, expected, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a header without a valid range is written as before it existed (older readers load it)
    exclude = {"valid_range"} if header.valid_range is None else None
    metadata = {METADATA_KEY: header.model_dump_json(exclude=exclude)}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _open(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise ModelFormatError(f"model file not found: {path}")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types (and OSError)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(
            f"{path} is not a valid model file (corrupt or truncated: {reason})"
        ) from None


def _header_from(handle, path: Path) -> ModelHeader:
    metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ModelFormatError(f"{path} is not a sharpscope model (no {METADATA_KEY!r} header)")
    try:
        raw = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: model header is not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ModelFormatError(f"{path}: model header is not a JSON object")
    try:
        return ModelHeader.model_validate(raw)
    except ValidationError as exc:
        raise ModelFormatError(f"{path}: invalid model header: {_one_line(exc)}") from None


def read_header(path: str | os.PathLike) -> ModelHeader:
    """Read and validate the header of a model file without loading its weights.

    Raises
    ------
    ModelFormatError
        Missing, corrupt or non-sharpscope file, or an invalid header.

    Examples
    --------
    >>> read_header("model.safetensors").architecture  # doctest: +SKIP
    'mrbcr'
    """
    path = Path(path)
    with _open(path) as handle:
        return _header_from(handle, path)


def load_network(
    path: str | os.PathLike, kind: str | None = "restoration"
) -> tuple[ModelHeader, nn.Module]:
    """Load a model file: validated header and the network with its weights.

    The header is validated first (JSON, fields, known architecture, supported
    format version); the network is built from it and the stored tensors must
    match its parameters exactly.  Nothing is unpickled.

    Parameters
    ----------
    path : str or PathLike
        A ``.safetensors`` model file.
    kind : {'restoration', 'psf-identification'} or None
        What the network must do (:data:`sharpscope.models.registry.KINDS`): a
        file of another kind is refused before anything is built.  None accepts
        any kind.

    Returns
    -------
    header : ModelHeader
    network : torch.nn.Module
        On the CPU, in eval mode.

    Raises
    ------
    ModelFormatError
        Any problem with the file, its header or its tensors.

    Examples
    --------
    >>> header, net = load_network("model.safetensors")  # doctest: +SKIP
    >>> z0 = net(torch.zeros(1, 1, 64, 64))[0]  # doctest: +SKIP
    """
    path = Path(path)
    with _open(path) as handle:
        header = _header_from(handle, path)
        if kind is not None:
            from sharpscope.models.registry import kind_of

            found = kind_of(header.architecture)
            if found != kind:
                raise ModelFormatError(
                    f"{path} is a {found} model ({header.architecture}), not a {kind} model"
                    + (" (load it with sharpscope.models.psfnet.load_identifier)" if found == "psf-identification" else "")
                )
        what = f"{path} does not match its header"
        # shapes first, from the header on the meta device: a lying header allocates nothing
        expected = _expected_signature(header, f"{path}")
        try:
            keys = list(handle.keys())
            stored = {}
            for k in keys:
                sl = handle.get_slice(k)
                stored[k] = (tuple(sl.get_shape()), _dtype(sl.get_dtype()))
            _compare(stored, expected, what)
            state = {k: handle.get_tensor(k) for k in keys}
        except ModelFormatError:
            raise
        except Exception as exc:  # safetensors errors on a damaged data section
            raise ModelFormatError(f"{path}: cannot read weights ({exc})") from None
    check_finite_state(state, f"{path}")
    net = _build(header, f"{path}")
    net.load_state_dict(state, strict=True)
    net.eval()
    return header, net


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _dtype(name: str) -> torch.dtype | str:
    return _SAFETENSORS_DTYPES.get(name, name)
