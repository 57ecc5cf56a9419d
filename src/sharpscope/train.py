"""Training: configuration, loss, the training loop, checkpoints and resume.

The entry point is :func:`train`, driven by a validated :class:`TrainConfig`
(loaded from YAML with :func:`load_config`; command-line flags override it).

Loss
    For every output scale ``s`` of the network (full resolution first),
    ``MSE(z_s, gt_s) + fft_weight * mean |FFT(z_s) - FFT(gt_s)|``, summed over
    the scales (:func:`restoration_loss`).  ``gt_s`` is made from the full
    resolution target exactly as the network makes its coarse inputs (strided
    decimation or block means, the network's ``decimation`` attribute).
    ``fft_mode='2d'`` (default) is a true 2-D DFT over (H, W); ``'1d-width'``
    reproduces the published DeBCR code, whose ``rfft2d`` on NHWC tensors is a
    1-D DFT along the image width only.  See :func:`fft_loss` for the
    normalisation.

Checkpoints
    ``OUT/model.safetensors`` is the best model so far (by validation PSNR or
    loss), a regular sharpscope model file whose header carries the validated
    training configuration; it is only ever replaced by a better one.
    ``OUT/last.ckpt.safetensors`` is the resumable state: weights, Adam state
    (tensors, flattened with names), torch/numpy/python RNG states, GradScaler
    state, the step, the data position and the early-stopping book-keeping --
    tensors in safetensors, everything else JSON in its metadata; no pickle.
    Every file is written atomically.

Determinism
    Sample ``i`` of the training stream is a pure function of ``(seed, i)``
    (:mod:`sharpscope.data`), the learning rate a pure function of the step,
    and the validation set is drawn once.  On the CPU, a run resumed from a
    checkpoint ends with bit-identical weights to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from sharpscope.errors import ConfigError, InputError, SharpscopeError

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_VERSION",
    "DEFAULT_PRESET",
    "LOG_NAME",
    "MODEL_NAME",
    "AugmentConfig",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "DEVICE_DEFAULTS",
    "TrainResult",
    "fft_loss",
    "load_checkpoint",
    "load_config",
    "lr_at",
    "restoration_loss",
    "train",
    "with_device_defaults",
]

CONFIG_VERSION = 1
DEFAULT_PRESET = "mrbcr-widefield"
MODEL_NAME = "model.safetensors"
CHECKPOINT_NAME = "last.ckpt.safetensors"
LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
CONFIG_NAME = "config.yaml"
CHECKPOINT_KEY = "sharpscope_checkpoint"
CHECKPOINT_FORMAT = "sharpscope-checkpoint"
LOG_COLUMNS = ("step", "loss", "val_loss", "val_psnr", "lr", "time")

# fields that may differ between a checkpoint and the config that resumes it:
# they do not change the weights the run produces
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "patience",
        "val_every",
        "checkpoint_every",
        "device",
        "amp",
        "num_workers",
        "max_minutes",
        "out",
        "name",
        "description",
        "license",
        "tile_size",
        "tile_overlap",
        "plot",
        "threads",
    }
)


# =========================================================================== config


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Network to train.

    Attributes
    ----------
    arch : {'mrbcr', 'srbcr', 'bcr', 'unet', 'dncnn'}
        Architecture name in :data:`sharpscope.models.registry.ARCHITECTURES`.
    hparams : dict
        Constructor arguments (empty: the published/default ones).
    init : str or None
        Start from the weights of this model (a model file, a training output
        folder or a model name, as :func:`sharpscope.load_model` takes) instead
        of a random initialisation: fine-tuning.  Where the config sets no
        ``arch`` / ``hparams``, the init model's are used; where it does, they
        must match.
    """

    arch: Literal["mrbcr", "srbcr", "bcr", "unet", "dncnn"] = "mrbcr"
    hparams: dict[str, Any] = Field(default_factory=dict)
    init: str | None = Field(None, min_length=1)


class DataConfig(_Section):
    """Where the training pairs come from (exactly one of ``simulate`` / ``path``).

    Attributes
    ----------
    simulate : str or None
        A simulator preset (:data:`sharpscope.simulate.PRESETS`); the default
        when no ``path`` is given.
    path : str or None
        An ``.npz`` (DeBCR layout or written by ``sharpscope prepare``) or a
        folder with ``low/`` and ``gt/`` sub-folders of TIFFs matched by name.
    gt : str or None
        Folder of target TIFFs when ``path`` is the folder of low TIFFs.
    val_path : str or None
        Separate validation pairs (npz or folder); default: the ``val`` split of
        a prepared npz, else a held-out share of ``path``.
    val_fraction : float
        Share held out for validation when the data has no validation split
        (whole files of a folder; the trailing block of a DeBCR npz).
    normalize : {'auto', 'image', 'dataset', 'none'}
        Normalisation of npz data (see :class:`sharpscope.data.PairedNpzDataset`);
        TIFF folders are always normalised per whole file, simulated pairs come
        normalised from the simulator.
    pmin, pmax : float
        Percentiles of the whole-image normalisation, recorded in the model
        header so prediction normalises the same way.
    """

    simulate: str | None = None
    path: str | None = None
    gt: str | None = None
    val_path: str | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    normalize: Literal["auto", "image", "dataset", "none"] = "auto"
    pmin: float = Field(1.0, ge=0.0, le=100.0)
    pmax: float = Field(99.8, ge=0.0, le=100.0)

    @model_validator(mode="before")
    @classmethod
    def _default_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("simulate") is None and data.get("path") is None:
            data = {**data, "simulate": DEFAULT_PRESET}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.simulate is not None and self.path is not None:
            raise ValueError("give either simulate (a preset) or path (paired data), not both")
        if self.gt is not None and self.path is None:
            raise ValueError("gt needs path (the folder of low images)")
        if not self.pmin < self.pmax:
            raise ValueError(f"pmin ({self.pmin}) must be smaller than pmax ({self.pmax})")
        return self

    @field_validator("simulate")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            from sharpscope.simulate import PRESETS
        except ImportError:  # pragma: no cover - simulator missing
            return v
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r} (known: {', '.join(sorted(PRESETS))})")
        return v


class AugmentConfig(_Section):
    """Augmentation applied identically to low and gt (see :class:`sharpscope.data.Augment`)."""

    flips: bool = True
    rot90: bool = True
    jitter: float = Field(0.0, ge=0.0, lt=1.0)


class LossConfig(_Section):
    """Loss options (see :func:`restoration_loss` and :func:`fft_loss`).

    Attributes
    ----------
    fft_weight : float
        Weight of the Fourier term (0.5, published).
    fft_mode : {'2d', '1d-width'}
        True 2-D DFT, or the published variant (1-D DFT along the width).
    fft_norm : {'ortho', 'backward'} or None
        DFT normalisation; None: ``'ortho'`` for ``'2d'`` and ``'backward'``
        (unnormalised, as published) for ``'1d-width'``.
    scale_weights : list of float or None
        Weight per output scale (None: all 1, published).
    """

    fft_weight: float = Field(0.5, ge=0.0)
    fft_mode: Literal["2d", "1d-width"] = "2d"
    fft_norm: Literal["ortho", "backward"] | None = None
    scale_weights: list[float] | None = None

    @field_validator("scale_weights")
    @classmethod
    def _non_negative(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(w < 0 for w in v)):
            raise ValueError("scale_weights must be a non-empty list of non-negative numbers")
        return v


class TrainConfig(_Section):
    """Validated training configuration (pydantic; unknown keys are errors).

    Load one with :func:`load_config`; the validated config is saved inside the
    trained model's header (``training``) and in ``OUT/config.yaml``.

    Attributes
    ----------
    config_version : int
        Layout version of this configuration (1).
    name, description, license : str
        Written into the model header.
    model, data, augment, loss
        Sections, see :class:`ModelConfig`, :class:`DataConfig`,
        :class:`AugmentConfig`, :class:`LossConfig`.
    steps : int or None
        Optimiser steps in total (a resumed run continues to this number).
        None: :data:`DEVICE_DEFAULTS` of the device the run uses (20000 on
        a GPU, 2000 on the CPU).
    batch_size, patch_size : int or None
        Patches per step, and their side (a multiple of the network's
        ``size_multiple``).  None: 16 of 128 x 128 on a GPU, 8 of 64 x 64 on
        the CPU (about 0.5 s per step for m-rBCR on one core, instead of 40 s).
    lr : float
        Adam learning rate (1e-3, published).
    lr_schedule : {'constant', 'cosine'}
        Constant (published) or cosine decay to ``min_lr`` at ``steps``.
    min_lr : float
        End point of the cosine schedule.
    val_every : int
        Validate (and checkpoint) every this many steps, and at the last step.
    val_size : int
        Number of validation patches (at most, for real data).
    patience : int or None
        Stop after this many validations without improvement (None: never).
    monitor : {'val_psnr', 'val_loss'}
        What "best" means for the best checkpoint and early stopping.
    grad_clip : float or None
        Clip the global gradient norm to this value (None: no clipping).
    seed : int
        Seed of the weights' initialisation and of the data streams.
    device : {'auto', 'cpu', 'cuda'}
        Where to train; ``'auto'`` picks CUDA when available.
    amp : bool
        Mixed precision: on CUDA bfloat16 where supported, else float16 with
        loss scaling; on the CPU bfloat16 autocast only where the CPU computes
        bfloat16 natively (:func:`sharpscope.runtime.native_bf16`: AVX512-BF16 or
        AMX; measured 1.6x faster per m-rBCR step on such a CPU), else float32.
        Validation always runs in float32.
    num_workers : int
        DataLoader worker processes (0: load in the main process).
    checkpoint_every : int or None
        Also save the resumable checkpoint every this many steps (it is always
        saved at every validation).
    max_minutes : float or None
        Stop cleanly (with a resumable checkpoint) after this much wall time.
    out : str
        Output folder.
    tile_size, tile_overlap : int
        Default tiling recorded in the model header for prediction.
    plot : bool
        Redraw ``OUT/loss.png`` at every validation.
    threads : int or None
        CPU threads for torch, at most the physical cores (None: torch's
        default).  Bit-exact resume on the
        CPU assumes the same number of threads before and after.

    Examples
    --------
    >>> cfg = TrainConfig(steps=10, model={"arch": "srbcr"})
    >>> cfg.data.simulate, cfg.loss.fft_weight
    ('mrbcr-widefield', 0.5)
    """

    config_version: Literal[1] = CONFIG_VERSION
    name: str = Field("sharpscope-model", min_length=1)
    description: str = ""
    license: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    steps: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    patch_size: int | None = Field(None, ge=8)
    lr: float = Field(1e-3, gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = Field(1e-5, ge=0.0)
    val_every: int = Field(500, gt=0)
    val_size: int = Field(64, gt=0)
    patience: int | None = Field(20, gt=0)
    monitor: Literal["val_psnr", "val_loss"] = "val_psnr"
    grad_clip: float | None = Field(None, gt=0.0)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    num_workers: int = Field(0, ge=0)
    checkpoint_every: int | None = Field(None, gt=0)
    max_minutes: float | None = Field(None, gt=0.0)
    out: str = Field("sharpscope-run", min_length=1)
    tile_size: int = Field(512, ge=8)
    tile_overlap: int = Field(160, ge=0)
    plot: bool = True
    threads: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.tile_overlap >= self.tile_size:
            raise ValueError(
                f"tile_overlap ({self.tile_overlap}) must be smaller than tile_size ({self.tile_size})"
            )
        return self

    def to_yaml(self) -> str:
        """The configuration as YAML text (loadable by :func:`load_config`)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        text = f"unknown key {loc!r}"
    else:
        value = err.get("input")
        shown = ""
        if kind not in ("missing",) and isinstance(value, (int, float, str, bool)) and len(repr(value)) < 60:
            shown = f" (got {value!r})"
        text = f"{loc}: {msg}{shown}" if loc else f"{msg}"
    more = exc.error_count() - 1
    return text + (f" (+{more} more error{'s' if more > 1 else ''})" if more else "")


def _validate(data: Mapping[str, Any], source: str = "") -> TrainConfig:
    try:
        return TrainConfig.model_validate(dict(data))
    except ValidationError as exc:
        where = f" in {source}" if source else ""
        raise ConfigError(f"invalid training config{where}: {_one_line(exc)}") from None


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"invalid training config: {p!r} is not a section")
        cur[p] = nxt = dict(nxt)
        cur = nxt
    cur[parts[-1]] = value


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Load and validate a training configuration.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file (a mapping of the :class:`TrainConfig` fields); None starts
        from the defaults.
    overrides : mapping, optional
        Values that replace those of the file, keyed by field name with dots
        for sections (``{'steps': 100, 'data.path': 'pairs.npz'}``); None
        values are ignored.  Setting ``data.path`` clears ``data.simulate`` and
        vice versa.

    Returns
    -------
    TrainConfig

    Raises
    ------
    ConfigError
        Unreadable or invalid YAML, unknown keys or bad values (one line naming
        the field).

    Examples
    --------
    >>> load_config(overrides={"steps": 50, "model.arch": "dncnn"}).model.arch
    'dncnn'
    """
    data: dict[str, Any] = {}
    source = ""
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"invalid YAML in {p}{where}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"invalid training config in {p}: expected a mapping of keys, got {type(loaded).__name__}")
        data = loaded
    data = json.loads(json.dumps(data, default=str))  # plain, detached copy
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, key, value)
        if key == "data.path":
            _set_dotted(data, "data.simulate", None)
        elif key == "data.simulate":
            _set_dotted(data, "data.path", None)
            _set_dotted(data, "data.gt", None)
    return _validate(data, source)


# =========================================================================== loss


def _resolve_norm(mode: str, norm: str | None) -> str:
    if norm is not None:
        return norm
    return "ortho" if mode == "2d" else "backward"


def fft_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mode: Literal["2d", "1d-width"] = "2d",
    norm: Literal["ortho", "backward"] | None = None,
) -> torch.Tensor:
    """Mean magnitude of the difference of the Fourier transforms.

    ``mean |DFT(pred) - DFT(gt)|`` over all frequencies, channels and batch
    elements, computed as ``|DFT(pred - gt)|`` (the DFT is linear) in float32.

    Parameters
    ----------
    pred, gt : torch.Tensor
        (..., H, W) tensors of the same shape.
    mode : {'2d', '1d-width'}
        ``'2d'``: the 2-D DFT over (H, W) (``torch.fft.fft2``).  ``'1d-width'``:
        the 1-D DFT along W of every row (``torch.fft.fft`` on the last axis),
        which is what the published DeBCR code computes (its ``rfft2d`` on NHWC
        tensors with one channel transforms the (W, C=1) plane), all W bins.
    norm : {'ortho', 'backward'} or None
        ``'backward'``: the unnormalised DFT (TensorFlow/NumPy default), whose
        magnitudes grow with the transform size (for white errors of RMS
        ``r``, ``E|X_k| ~ r sqrt(n pi) / 2`` with ``n`` = H*W or W).  ``'ortho'``:
        divided by ``sqrt(n)`` -- unitary, so by Parseval the term measures the
        error on the same scale as the RMS error whatever the patch size.
        None: ``'ortho'`` for ``'2d'``, ``'backward'`` for ``'1d-width'`` (so
        ``mode='1d-width'`` alone reproduces the published loss).

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> x = torch.zeros(1, 1, 4, 4); y = torch.zeros(1, 1, 4, 4); y[..., 0, 0] = 4.0
    >>> float(fft_loss(x, y, norm="backward"))  # |DFT of a delta| = 4 everywhere
    4.0
    >>> float(fft_loss(x, y))  # ortho: 4 / sqrt(16)
    1.0
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    diff = pred.float() - gt.float()
    norm = _resolve_norm(mode, norm)
    if mode == "2d":
        spec = torch.fft.fft2(diff, dim=(-2, -1), norm=norm)
    elif mode == "1d-width":
        spec = torch.fft.fft(diff, dim=-1, norm=norm)
    else:
        raise ValueError(f"unknown fft_mode {mode!r}; use '2d' or '1d-width'")
    return spec.abs().mean()


def _decimate(x: torch.Tensor, factor: int, mode: str) -> torch.Tensor:
    if factor == 1:
        return x
    if mode == "stride":
        return x[..., ::factor, ::factor]
    if mode == "avgpool":
        return torch.nn.functional.avg_pool2d(x, factor)
    raise ValueError(f"unknown decimation {mode!r}")


def restoration_loss(
    outputs: Sequence[torch.Tensor],
    gt: torch.Tensor,
    fft_weight: float = 0.5,
    fft_mode: Literal["2d", "1d-width"] = "2d",
    fft_norm: Literal["ortho", "backward"] | None = None,
    decimation: Literal["stride", "avgpool"] = "stride",
    scale_weights: Sequence[float] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Multi-scale training loss: per scale MSE + ``fft_weight`` * Fourier term, summed.

    Parameters
    ----------
    outputs : sequence of torch.Tensor
        The network's outputs, full resolution first, each (N, 1, h, w) with
        ``h = H / f`` for an integer factor ``f``.
    gt : torch.Tensor
        (N, 1, H, W) full-resolution target.  The target of a coarse output is
        ``gt`` decimated by ``f`` the way the network decimates its input
        (``decimation``: every ``f``-th pixel, or ``f x f`` block means).
    fft_weight, fft_mode, fft_norm
        Weight and form of the Fourier term, see :func:`fft_loss`.
    decimation : {'stride', 'avgpool'}
    scale_weights : sequence of float, optional
        Weight of each scale (default all 1, as published).

    Returns
    -------
    total : torch.Tensor
        The scalar loss.
    per_scale : list of torch.Tensor
        The unweighted loss of each scale (detached).

    Examples
    --------
    >>> gt = torch.rand(2, 1, 8, 8)
    >>> total, parts = restoration_loss((gt, gt[..., ::2, ::2]), gt)
    >>> float(total), len(parts)
    (0.0, 2)
    """
    if not outputs:
        raise ValueError("no network outputs")
    if scale_weights is not None and len(scale_weights) < len(outputs):
        raise ConfigError(
            f"loss.scale_weights has {len(scale_weights)} entries but the network has {len(outputs)} outputs"
        )
    gt = gt.float()
    h, w = gt.shape[-2:]
    total = gt.new_zeros(())
    parts = []
    for i, out in enumerate(outputs):
        out = out.float()
        oh, ow = out.shape[-2:]
        if h % oh or w % ow or h // oh != w // ow:
            raise ValueError(f"output {i} is {oh}x{ow}, not an integer decimation of {h}x{w}")
        target = _decimate(gt, h // oh, decimation)
        loss = torch.mean((out - target) ** 2)
        if fft_weight:
            loss = loss + fft_weight * fft_loss(out, target, fft_mode, fft_norm)
        weight = 1.0 if scale_weights is None else float(scale_weights[i])
        total = total + weight * loss
        parts.append(loss.detach())
    return total, parts


def _adopt_init_architecture(config: TrainConfig) -> TrainConfig:
    """With ``model.init``, take its architecture / hyper-parameters where the config sets none."""
    m = config.model
    if m.init is None or {"arch", "hparams"} <= m.model_fields_set:
        return config
    from sharpscope.models.format import read_header
    from sharpscope.models.store import resolve_model

    header = read_header(resolve_model(m.init))
    fields = {"init": m.init, "arch": m.arch, "hparams": m.hparams}
    if "arch" not in m.model_fields_set:
        fields["arch"] = header.architecture
    if "hparams" not in m.model_fields_set:
        fields["hparams"] = dict(header.hparams)
    try:
        model = ModelConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"model.init {m.init!r}: {_one_line(exc)}") from None
    return config.model_copy(update={"model": model})


def _load_initial_weights(
    net: nn.Module, source: str, arch: str, hparams: Mapping[str, Any], log: Callable[[str], None]
) -> None:
    """Copy the weights of the model ``source`` into ``net`` (``model.init``)."""
    from sharpscope.models.format import load_network
    from sharpscope.models.store import resolve_model

    path = resolve_model(source)
    header, init_net = load_network(path)
    init_hparams = dict(getattr(init_net, "hparams", header.hparams))
    if header.architecture != arch or init_hparams != dict(hparams):
        raise ConfigError(
            f"model.init {source!r} is {header.architecture} {init_hparams}, not the configured {arch} {dict(hparams)}"
        )
    net.load_state_dict(init_net.state_dict())
    log(f"initial weights from {path}")


DEVICE_DEFAULTS = {
    "cuda": {"steps": 20000, "batch_size": 16, "patch_size": 128},
    "cpu": {"steps": 2000, "batch_size": 8, "patch_size": 64},
}
"""What ``steps``, ``batch_size`` and ``patch_size`` left at None become, by device type."""


def with_device_defaults(config: TrainConfig, device: str | None = None) -> TrainConfig:
    """``config`` with the fields left at None set for the device it trains on.

    Parameters
    ----------
    config : TrainConfig
    device : {'cpu', 'cuda'}, optional
        Default: where ``config.device`` resolves (``'auto'``: CUDA when
        available).

    Examples
    --------
    >>> cfg = with_device_defaults(TrainConfig(), "cpu")
    >>> cfg.steps, cfg.batch_size, cfg.patch_size
    (2000, 8, 64)
    >>> with_device_defaults(TrainConfig(batch_size=4), "cuda").batch_size
    4
    """
    kind = device or _resolve_device(config.device).type
    defaults = DEVICE_DEFAULTS["cuda" if str(kind).startswith("cuda") else "cpu"]
    update = {k: v for k, v in defaults.items() if getattr(config, k) is None}
    return config.model_copy(update=update) if update else config


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate for the update that follows ``step`` completed steps.

    A pure function of the step (so a resumed run needs no scheduler state).

    Examples
    --------
    >>> cfg = TrainConfig(steps=100, lr_schedule="cosine", lr=1e-3, min_lr=0.0)
    >>> lr_at(cfg, 0), round(lr_at(cfg, 50), 6), lr_at(cfg, 100)
    (0.001, 0.0005, 0.0)
    """
    if config.lr_schedule == "constant":
        return config.lr
    steps = config.steps or DEVICE_DEFAULTS["cpu"]["steps"]
    t = min(max(step, 0) / steps, 1.0)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * t))


# =========================================================================== checkpoints


def _to_json(value: Any) -> Any:
    """Make optimiser/scaler bookkeeping JSON-able (tuples -> lists)."""
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s.clone()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64).copy())
    version, pstate, gauss = random.getstate()
    meta = {
        "numpy": {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(pstate), "gauss": gauss},
    }
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"].to(torch.uint8))
    cuda = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k].to(torch.uint8) for k in cuda]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    npm = meta["numpy"]
    np.random.set_state(
        (
            npm["name"],
            tensors["rng/numpy"].numpy().astype(np.uint32),
            npm["pos"],
            npm["has_gauss"],
            npm["cached_gaussian"],
        )
    )
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


def _save_checkpoint(
    path: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    state: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    from sharpscope.io import atomic_write

    tensors: dict[str, torch.Tensor] = {}
    for k, v in net.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu").clone().contiguous()
    osd = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in osd["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = val.detach().to("cpu").clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = _to_json(val)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        **state,
        "optimizer": {"param_groups": _to_json(osd["param_groups"]), "scalars": scalars},
        "scaler": _to_json(scaler.state_dict()) if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
    }
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta)})


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a resumable checkpoint: its tensors and its JSON state.

    Raises
    ------
    InputError
        Missing, corrupt or foreign file.

    Examples
    --------
    >>> tensors, meta = load_checkpoint("run/last.ckpt.safetensors")  # doctest: +SKIP
    >>> meta["step"]  # doctest: +SKIP
    1000
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(CHECKPOINT_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path} is not a readable checkpoint (corrupt or truncated: {reason})") from None
    if raw is None:
        raise InputError(f"{path} is not a sharpscope training checkpoint")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: checkpoint state is not valid JSON ({exc.msg})") from None
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != 1:
        raise InputError(f"{path}: unsupported checkpoint format {meta.get('format')!r} v{meta.get('version')}")
    return tensors, meta


def _restore(
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
) -> None:
    from sharpscope.models.format import check_finite_state

    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    check_finite_state(model_state, "checkpoint")
    try:
        net.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"checkpoint does not match the network: {str(exc).splitlines()[0]}") from None
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, key = k.split("/", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, vals in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(vals)
    groups = []
    for g in meta["optimizer"]["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scaler is not None and scaler.is_enabled() and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    _set_rng_state(tensors, meta["rng"])


# =========================================================================== data


@dataclass
class _Data:
    train: torch.utils.data.Dataset
    val_low: torch.Tensor
    val_gt: torch.Tensor
    description: str
    normalization: tuple[float, float] | None = None


def _split_rows(images: Any, fraction: float, patch_size: int) -> tuple[Any, Any]:
    """Hold out the bottom ``fraction`` of every image (a guard band apart)."""
    from sharpscope.data import PairedImages

    guard = max(1, patch_size // 4)
    tr_l, tr_g, va_l, va_g, tr_n, va_n = [], [], [], [], [], []
    for name, (lo, g) in zip(images.names, (images[i] for i in range(len(images))), strict=True):
        h = lo.shape[0]
        n_val = max(patch_size, int(round(fraction * h)))
        cut = h - n_val
        if cut - guard < patch_size:
            raise InputError(
                f"{name} ({lo.shape[0]}x{lo.shape[1]}) is too small to hold out a validation region "
                f"for patch_size {patch_size}; give data.val_path or more images"
            )
        tr_l.append(lo[: cut - guard])
        tr_g.append(g[: cut - guard])
        va_l.append(lo[cut:])
        va_g.append(g[cut:])
        tr_n.append(f"{name}[top]")
        va_n.append(f"{name}[bottom]")
    return PairedImages(tr_l, tr_g, tr_n), PairedImages(va_l, va_g, va_n)


# training keeps every activation for the backward pass: about 4x the inference peak per pixel
TRAIN_BYTES_PER_PIXEL = 1200


def _check_training_memory(config: TrainConfig, net: nn.Module, device: torch.device) -> None:
    """One-line error when a batch cannot fit in the memory (CPU; GPUs report their own)."""
    from sharpscope.runtime import check_memory

    if device.type != "cpu":
        return
    width = max(1.0, float(getattr(net, "hparams", {}).get("channels", 32)) / 32)
    need = TRAIN_BYTES_PER_PIXEL * width * config.batch_size * config.patch_size**2
    need += (config.val_size + config.batch_size) * 2 * 4 * config.patch_size**2  # the patches
    check_memory(
        need, f"training batches of {config.batch_size} x {config.patch_size}x{config.patch_size}"
    )


def _training_range(val_low: torch.Tensor, norm: tuple[float, float]) -> Any:
    """The model header's ``valid_range``: the estimators run on the validation inputs.

    The validation patches are drawn like the training ones, so the range of their
    estimated noise and cut-off is what the run-time check of ``restore`` compares an
    input with (:func:`sharpscope.estimate.calibrate_valid_range`).
    """
    from sharpscope.estimate import calibrate_valid_range

    images = [p for p in val_low[:, 0].cpu().numpy() if float(p.max()) > float(p.min())]
    if len(images) < 8:  # too few to say anything
        return None
    try:
        return calibrate_valid_range(images, pmin=norm[0], pmax=norm[1])
    except SharpscopeError:
        return None


def _build_data(config: TrainConfig) -> _Data:
    from sharpscope import data as D

    aug = D.Augment(config.augment.flips, config.augment.rot90, config.augment.jitter)
    p = config.patch_size
    dc = config.data
    if dc.simulate is not None:
        train = D.SimulatedPatches(dc.simulate, p, seed=config.seed, stream=0, augment=aug)
        val = D.SimulatedPatches(dc.simulate, p, seed=config.seed, stream=1, augment=None)
        vl, vg = D.stack_samples(val, range(config.val_size))
        return _Data(
            train,
            vl,
            vg,
            f"simulated '{dc.simulate}' pairs (simulator seed {train.simulator_seed} for training, "
            f"{val.simulator_seed} for validation)",
            train.normalization,
        )

    assert dc.path is not None
    kw = {"normalize": dc.normalize, "pmin": dc.pmin, "pmax": dc.pmax}
    norm: tuple[float, float] | None = None
    path = Path(dc.path)
    val_images = None
    if path.is_dir():
        images = D.load_pairs(path, gt=dc.gt, **kw)
        if dc.val_path is None:
            files = sorted({n.split("[", 1)[0] for n in images.names})
            if len(files) >= 2:
                n_val = max(1, int(round(dc.val_fraction * len(files))))
                held = set(np.random.default_rng([config.seed, 7]).permutation(files)[:n_val].tolist())
                is_val = [n.split("[", 1)[0] in held for n in images.names]
                val_images = D.PairedImages(
                    [images.lows[i] for i in range(len(images)) if is_val[i]],
                    [images.gts[i] for i in range(len(images)) if is_val[i]],
                    [images.names[i] for i in range(len(images)) if is_val[i]],
                )
                images = D.PairedImages(
                    [images.lows[i] for i in range(len(images)) if not is_val[i]],
                    [images.gts[i] for i in range(len(images)) if not is_val[i]],
                    [images.names[i] for i in range(len(images)) if not is_val[i]],
                )
            else:
                images, val_images = _split_rows(images, dc.val_fraction, p)
    else:
        npz = D.PairedNpzDataset(path, split=None, **kw)
        if npz.prepared:
            images = npz
            pnorm = npz.metadata.get("normalization") or {}
            if npz.normalization == "none" and "pmin" in pnorm and "pmax" in pnorm:
                # already normalised by `prepare`: prediction must use its percentiles
                norm = (float(pnorm["pmin"]), float(pnorm["pmax"]))
            if dc.val_path is None:
                val_images = D.PairedNpzDataset(path, split="val", **kw)
                if len(val_images) == 0:
                    raise InputError(
                        f"{path.name} has no validation patches; prepare it with a non-zero validation share or give data.val_path"
                    )
        else:
            images = npz
            if dc.val_path is None:
                n = len(npz)
                n_val = max(1, int(round(dc.val_fraction * n)))
                if n - n_val < 1:
                    raise InputError(f"{path.name} holds {n} pair(s): too few to hold out validation data")
                # hold out the trailing block: neighbouring patches of a DeBCR file are
                # usually neighbours in the image, so a block leaks less than a random draw
                val_images = D.PairedImages(npz.lows[n - n_val :], npz.gts[n - n_val :], npz.names[n - n_val :])
                images = D.PairedImages(npz.lows[: n - n_val], npz.gts[: n - n_val], npz.names[: n - n_val])
    if dc.val_path is not None:
        vp = Path(dc.val_path)
        split = "val" if vp.suffix == ".npz" and _is_prepared(vp) else None
        val_images = D.load_pairs(vp, split=split, **kw)
    assert val_images is not None
    train = D.RandomPatches(images, p, seed=config.seed, augment=aug)
    vl, vg = D.fixed_patches(val_images, p, config.val_size)
    return _Data(
        train,
        torch.from_numpy(vl)[:, None],
        torch.from_numpy(vg)[:, None],
        f"{path.name} ({len(images)} training item(s), {len(vl)} validation patches)",
        norm,
    )


def _is_prepared(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as f:
            return "train_low" in f.files
    except (OSError, ValueError):
        return False


# =========================================================================== trainer


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    best_path : Path or None
        ``OUT/model.safetensors``, the best model (None if no validation ran).
    best_val_psnr : float
        Validation PSNR (dB, data range 1) of the best model (nan if none).
    steps_done : int
        Optimiser steps completed, over all sessions.
    log_path : Path
        The CSV log.
    last_path : Path
        The resumable checkpoint.
    best_step : int
        Step of the best model (0 if none).
    best_val_loss : float
        Validation loss of the best model.
    stopped : str
        ``'completed'``, ``'early_stopped'``, ``'interrupted'`` or ``'time_limit'``.
    n_parameters : int
        Parameters of the network.
    """

    best_path: Path | None
    best_val_psnr: float
    steps_done: int
    log_path: Path
    last_path: Path
    best_step: int = 0
    best_val_loss: float = math.nan
    stopped: str = "completed"
    n_parameters: int = 0


class _StopRequest:
    """SIGINT handler: the first Ctrl-C asks for a clean stop, the second aborts."""

    def __init__(self, log: Callable[[str], None]):
        self.requested = False
        self._log = log
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except ValueError:  # pragma: no cover - not the main interpreter
                self._installed = False
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._log("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops them cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    diffs = []
    for k in keys:
        name = f"{prefix}{k}"
        if name in RESUMABLE_CHANGES:
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and k != "hparams":
            diffs += _config_diff(a, b, f"{name}.")
        elif a != b:
            diffs.append(name)
    return diffs


def _read_log(path: Path, upto: int) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                r = {k: float(row[k]) if row.get(k) not in (None, "") else math.nan for k in LOG_COLUMNS}
            except ValueError:
                continue
            if r["step"] <= upto:
                rows.append(r)
    return rows


def _write_log(path: Path, rows: Sequence[Mapping[str, float]]) -> None:
    from sharpscope.io import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LOG_COLUMNS)
    for r in rows:
        w.writerow(
            [int(r["step"])] + [f"{r[k]:.6g}" if not math.isnan(r[k]) else "" for k in LOG_COLUMNS[1:]]
        )
    with atomic_write(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def _plot(path: Path, rows: Sequence[Mapping[str, float]], title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    from sharpscope.io import atomic_write

    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, [r["loss"] for r in rows], "o-", ms=3, label="training")
    ax1.plot(steps, [r["val_loss"] for r in rows], "o-", ms=3, label="validation")
    if all(r["loss"] > 0 for r in rows) and all(r["val_loss"] > 0 for r in rows):
        ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(steps, [r["val_psnr"] for r in rows], "o-", ms=3, color="C2")
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation PSNR (dB)")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(str(tmp), format="png")


STATUS_SECONDS = 30.0
"""Without a progress bar, a status line (with the ETA) at most this often, plus every validation."""


def format_duration(seconds: float) -> str:
    """``'1h02m'``, ``'4m05s'``, ``'12s'`` (``'?'`` when unknown).

    Examples
    --------
    >>> format_duration(3725), format_duration(245), format_duration(12.4)
    ('1h02m', '4m05s', '12s')
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _default_log(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda msg: None

    def log(msg: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stderr)

    return log


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a network as ``config`` says; resumable, with best and last checkpoints.

    Parameters
    ----------
    config : TrainConfig
        The validated configuration (``config.out`` is the output folder).
    resume : bool
        Continue from ``OUT/last.ckpt.safetensors`` (starting afresh, with a
        message, when there is none).  Without it, an ``OUT`` that already holds
        a run is refused.  A resumed run must keep the settings that shape the
        weights (data, model, loss, lr, batch and patch size, seed...); it may
        change ``steps``, ``patience``, ``val_every``, ``device`` and the other
        fields of :data:`RESUMABLE_CHANGES` (with ``lr_schedule='cosine'`` a new
        ``steps`` also reshapes the remaining schedule).
    progress : bool
        Show a tqdm progress bar and messages on stderr.
    callback : callable, optional
        ``callback(step, logs)`` after every step; ``logs`` has ``'loss'`` and,
        after a validation, ``'val_loss'`` and ``'val_psnr'``.  A
        ``KeyboardInterrupt`` raised in it is handled like Ctrl-C.
    log : callable, optional
        Receives one-line messages (default: stderr when ``progress``).

    Returns
    -------
    TrainResult

    Notes
    -----
    Writes into ``OUT``: ``model.safetensors`` (the best model, loadable with
    :func:`sharpscope.models.format.load_network` and
    :func:`sharpscope.load_model`), ``last.ckpt.safetensors`` (resumable state),
    ``log.csv`` (one row per validation: step, mean training loss since the
    previous validation, val_loss, val_psnr, lr, elapsed seconds),
    ``loss.png`` and ``config.yaml``.

    Validation PSNR is the mean over the validation patches of
    ``10 log10(1 / MSE)`` of the full-resolution output (data range 1, the
    normalised intensity scale).

    A first Ctrl-C (SIGINT) lets the current step finish, saves the resumable
    checkpoint and returns with ``stopped='interrupted'``; a second one aborts.

    Examples
    --------
    >>> cfg = load_config(overrides={"steps": 20, "patch_size": 32, "batch_size": 4,
    ...                              "val_every": 10, "out": "run"})  # doctest: +SKIP
    >>> res = train(cfg)  # doctest: +SKIP
    >>> res.best_path  # doctest: +SKIP
    PosixPath('run/model.safetensors')
    """
    threads = torch.get_num_threads()
    try:
        if config.threads is not None:
            from sharpscope.runtime import set_threads

            set_threads(config.threads)  # never more than the physical cores
        with contextlib.ExitStack() as held:  # the run folder's lock, once _train takes it
            return _train(config, resume, progress, callback, log, held)
    finally:
        torch.set_num_threads(threads)


LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of the run folder ``out`` (one writer per run).

    An advisory ``fcntl.flock`` on ``out/.lock``, released when the block ends or the
    process dies; a second holder gets a one-line :class:`ConfigError` at once.
    Platforms without ``fcntl`` run unlocked.

    Examples
    --------
    >>> import tempfile
    >>> with run_lock(tempfile.mkdtemp()) as lock:
    ...     lock.name
    '.lock'
    """
    path = Path(out) / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    try:
        fh = open(path, "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise ConfigError(f"cannot lock {out}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{out} is in use by another training run; wait for it to end or choose another --out"
            ) from None
        yield path
    finally:
        fh.close()


def _train(
    config: TrainConfig,
    resume: bool,
    progress: bool,
    callback: Callable[[int, dict[str, float]], None] | None,
    log: Callable[[str], None] | None,
    held: contextlib.ExitStack,
) -> TrainResult:
    from sharpscope.models.registry import build_network, count_parameters

    log = log or _default_log(progress)
    config = with_device_defaults(_adopt_init_architecture(config))
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT_NAME
    best_path = out / MODEL_NAME
    log_path = out / LOG_NAME
    cfg_json = config.model_dump(mode="json")

    loaded: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if resume:
        if ckpt_path.is_file():
            loaded = load_checkpoint(ckpt_path)
            diffs = _config_diff(loaded[1]["config"], cfg_json)
            if diffs:
                raise ConfigError(
                    f"cannot resume {ckpt_path}: the config differs from the checkpoint's in {', '.join(diffs)}"
                )
        else:
            log(f"no checkpoint in {out}; starting from scratch")
    elif ckpt_path.exists() or best_path.exists():
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")

    device = _resolve_device(config.device)
    # initial weights and every stream depend on the seed only
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    net = build_network(config.model.arch, **config.model.hparams)
    multiple = int(getattr(net, "size_multiple", 1))
    if config.patch_size % multiple:
        raise ConfigError(
            f"patch_size {config.patch_size} must be a multiple of {multiple} for {config.model.arch}"
        )
    n_params = count_parameters(net)
    decimation = str(getattr(net, "decimation", "stride"))
    hparams = dict(getattr(net, "hparams", config.model.hparams))
    if config.model.init is not None and loaded is None:
        _load_initial_weights(net, config.model.init, config.model.arch, hparams, log)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr_at(config, 0))
    from sharpscope.runtime import native_bf16

    use_amp = bool(config.amp and (device.type == "cuda" or native_bf16()))
    amp_dtype = (
        torch.bfloat16
        if use_amp and (device.type == "cpu" or torch.cuda.is_bf16_supported())
        else torch.float16
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    _check_training_memory(config, net, device)
    data = _build_data(config)
    # the percentiles prediction must use: those the training inputs were normalised with
    norm = data.normalization or (config.data.pmin, config.data.pmax)
    val_low, val_gt = data.val_low.to(device), data.val_gt.to(device)
    valid_range = _training_range(data.val_low, norm)

    step = 0
    best = {"metric": None, "step": 0, "val_psnr": math.nan, "val_loss": math.nan}
    bad = 0
    elapsed_before = 0.0
    stopped = "completed"
    if loaded is not None:
        _restore(loaded[0], loaded[1], net, optimizer, scaler)
        meta = loaded[1]
        step = int(meta["step"])
        best = dict(meta["best"])
        bad = int(meta["bad_validations"])
        elapsed_before = float(meta.get("elapsed", 0.0))
        stopped = str(meta.get("stopped", "completed"))
        log(f"resuming {out} at step {step}")
    rows = _read_log(log_path, step) if loaded is not None else []

    log(
        f"{config.model.arch}: {n_params:,} parameters; device {device.type}"
        + (f" ({'bf16' if amp_dtype == torch.bfloat16 else 'fp16'} mixed precision)" if use_amp else "")
        + f"; data {data.description}; {len(val_low)} validation patches; out {out}"
    )
    out.mkdir(parents=True, exist_ok=True)
    held.enter_context(run_lock(out))
    from sharpscope.io import atomic_write

    with atomic_write(out / CONFIG_NAME) as tmp:
        Path(tmp).write_text(config.to_yaml())

    loss_kw = {
        "fft_weight": config.loss.fft_weight,
        "fft_mode": config.loss.fft_mode,
        "fft_norm": config.loss.fft_norm,
        "decimation": decimation,
        "scale_weights": config.loss.scale_weights,
    }

    def is_better(psnr: float, vloss: float) -> bool:
        value = psnr if config.monitor == "val_psnr" else -vloss
        return best["metric"] is None or value > best["metric"]

    def validate() -> tuple[float, float]:
        net.eval()
        total, psnrs = 0.0, []
        bs = max(1, config.batch_size)
        with torch.no_grad():
            for i in range(0, len(val_low), bs):
                lo, g = val_low[i : i + bs], val_gt[i : i + bs]
                # float32 on the CPU, so that model selection does not depend on the CPU's flags
                with torch.autocast(
                    device_type=device.type, dtype=amp_dtype, enabled=use_amp and device.type == "cuda"
                ):
                    outs = net(lo)
                outs = [o.float() for o in outs]
                loss, _ = restoration_loss(outs, g, **loss_kw)
                total += float(loss) * len(lo)
                mse = torch.mean((outs[0] - g.float()) ** 2, dim=(1, 2, 3)).clamp_min(1e-12)
                psnrs.append(10.0 * torch.log10(1.0 / mse))
        net.train()
        return total / len(val_low), float(torch.cat(psnrs).mean())

    def save_last(reason: str) -> None:
        _save_checkpoint(
            ckpt_path,
            net,
            optimizer,
            scaler,
            {
                "step": step,
                "config": cfg_json,
                "best": best,
                "bad_validations": bad,
                "elapsed": elapsed_before + (time.perf_counter() - t0),
                "stopped": reason,
                "data": _data_position(data.train, step * config.batch_size),
            },
        )

    def save_best(psnr: float) -> None:
        from sharpscope import __version__
        from sharpscope.models.format import ModelHeader, save_model

        header = ModelHeader(
            name=config.name,
            description=config.description or f"{config.model.arch} trained with sharpscope on {data.description}",
            architecture=config.model.arch,
            hparams=hparams,
            normalization={"pmin": norm[0], "pmax": norm[1]},
            tile={"size": config.tile_size, "overlap": config.tile_overlap},
            provenance=(
                f"trained with sharpscope {__version__} (sharpscope train"
                + (f", fine-tuning {config.model.init}" if config.model.init else "")
                + f") on {data.description}; "
                f"best of the validations up to step {step}: validation PSNR {psnr:.2f} dB"
            ),
            license=config.license,
            training=cfg_json,
            valid_range=valid_range,
        )
        save_model(best_path, net, header)

    def result(reason: str) -> TrainResult:
        return TrainResult(
            best_path=best_path if best_path.is_file() and best["metric"] is not None else None,
            best_val_psnr=float(best["val_psnr"]),
            steps_done=step,
            log_path=log_path,
            last_path=ckpt_path,
            best_step=int(best["step"]),
            best_val_loss=float(best["val_loss"]),
            stopped=reason,
            n_parameters=n_params,
        )

    def _keep_last_weights() -> None:
        """After a stop between validations: validate, log and keep the weights if best."""
        nonlocal best
        vloss, vpsnr = validate()
        rows.append(
            {
                "step": step,
                "loss": float(running) / n_running if n_running else math.nan,
                "val_loss": vloss,
                "val_psnr": vpsnr,
                "lr": lr_at(config, step - 1),
                "time": elapsed_before + time.perf_counter() - t0,
            }
        )
        _write_log(log_path, rows)
        if is_better(vpsnr, vloss):
            best = {
                "metric": vpsnr if config.monitor == "val_psnr" else -vloss,
                "step": step,
                "val_psnr": vpsnr,
                "val_loss": vloss,
            }
            save_best(vpsnr)
            log(f"saved the weights of step {step} (validation PSNR {vpsnr:.2f} dB) to {best_path}")

    t0 = time.perf_counter()
    if step >= config.steps or (
        stopped == "early_stopped" and config.patience is not None and bad >= config.patience
    ):
        log(f"{out}: nothing to do (step {step} of {config.steps}, {stopped})")
        return result("early_stopped" if step < config.steps else "completed")

    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(
        data.train,
        batch_size=config.batch_size,
        sampler=range(step * config.batch_size, config.steps * config.batch_size),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=_ignore_sigint if config.num_workers > 0 else None,
    )
    net.train()
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    running = torch.zeros((), device=device)
    n_running = 0
    postfix: dict[str, str] = {}
    reason = "completed"
    in_update = False
    saved = True
    start_step = validated_at = step
    last_status = t0
    batches = iter(loader)
    with _StopRequest(log) as stop:
        try:
            while step < config.steps:
                if stop.requested:
                    reason = "interrupted"
                    break
                if config.max_minutes is not None and time.perf_counter() - t0 > 60.0 * config.max_minutes:
                    reason = "time_limit"
                    break
                try:
                    batch = next(batches)
                except StopIteration:  # pragma: no cover - the sampler covers every step
                    break
                except Exception:
                    if stop.requested:  # a worker died of the same Ctrl-C
                        reason = "interrupted"
                        break
                    raise
                low = batch["low"].to(device, non_blocking=True)
                gt = batch["gt"].to(device, non_blocking=True)
                lr = lr_at(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                    outputs = net(low)
                loss, _ = restoration_loss([o.float() for o in outputs], gt, **loss_kw)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                in_update = True
                scaler.step(optimizer)
                scaler.update()
                step += 1
                in_update = False
                saved = False
                running += loss.detach()
                n_running += 1
                logs: dict[str, float] = {}
                is_val = step % config.val_every == 0 or step == config.steps or step == 1
                sec_per_step = (time.perf_counter() - t0) / max(1, step - start_step)
                eta = format_duration(sec_per_step * (config.steps - step))
                if step % 10 == 0 or is_val:
                    logs["loss"] = float(running) / n_running
                    postfix["loss"] = f"{logs['loss']:.4g}"
                    postfix["eta"] = eta
                    bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if not progress and not is_val and time.perf_counter() - last_status > STATUS_SECONDS:
                    last_status = time.perf_counter()
                    log(
                        f"step {step}/{config.steps}: loss {float(running) / n_running:.4g}, "
                        f"{sec_per_step:.3g} s/step, ETA {eta}"
                    )
                if is_val:
                    train_loss = float(running) / n_running
                    if not math.isfinite(train_loss):
                        raise ConfigError(
                            f"training diverged at step {step} (loss {train_loss}); lower lr or set grad_clip"
                        )
                    running.zero_()
                    n_running = 0
                    vloss, vpsnr = validate()
                    logs.update(loss=train_loss, val_loss=vloss, val_psnr=vpsnr)
                    rows.append(
                        {
                            "step": step,
                            "loss": train_loss,
                            "val_loss": vloss,
                            "val_psnr": vpsnr,
                            "lr": lr,
                            "time": elapsed_before + time.perf_counter() - t0,
                        }
                    )
                    if is_better(vpsnr, vloss):
                        best = {
                            "metric": vpsnr if config.monitor == "val_psnr" else -vloss,
                            "step": step,
                            "val_psnr": vpsnr,
                            "val_loss": vloss,
                        }
                        bad = 0
                        save_best(vpsnr)
                    else:
                        bad += 1
                    postfix.update(val_loss=f"{vloss:.4g}", val_psnr=f"{vpsnr:.2f}", best=f"{best['val_psnr']:.2f}")
                    bar.set_postfix(postfix)
                    validated_at = step
                    if not progress:
                        last_status = time.perf_counter()
                        log(
                            f"step {step}/{config.steps}: loss {train_loss:.4g}, val_loss {vloss:.4g}, "
                            f"val_psnr {vpsnr:.2f} dB (best {best['val_psnr']:.2f}), "
                            f"{sec_per_step:.3g} s/step, ETA {eta}"
                        )
                    _write_log(log_path, rows)
                    if config.plot:
                        _plot(out / PLOT_NAME, rows, f"{config.name} ({config.model.arch})")
                    early = config.patience is not None and bad >= config.patience
                    save_last("early_stopped" if early else "running")
                    saved = True
                    if early:
                        log(f"early stop at step {step}: no improvement in {bad} validations")
                        reason = "early_stopped"
                        if callback is not None:
                            callback(step, logs)
                        break
                elif config.checkpoint_every is not None and step % config.checkpoint_every == 0:
                    save_last("running")
                    saved = True
                if callback is not None:
                    callback(step, logs)
        except KeyboardInterrupt:
            if in_update:
                bar.close()
                log("aborted during an optimiser update; the checkpoint was not updated")
                raise
            reason = "interrupted"
        finally:
            bar.close()
    if reason == "completed" and step < config.steps:  # pragma: no cover - defensive
        reason = "interrupted"
    if reason in ("interrupted", "time_limit") and step > validated_at:
        try:
            _keep_last_weights()
        except KeyboardInterrupt:  # a second Ctrl-C: the checkpoint below still gets saved
            log("validation skipped; the best model stays that of the last validation")
    if reason != "early_stopped" or not saved:
        save_last(reason)
    if reason == "interrupted":
        log(f"interrupted at step {step}; resume with --resume (checkpoint {ckpt_path})")
    elif reason == "time_limit":
        log(f"time limit reached at step {step}; resume with --resume")
    return result(reason)


def _data_position(dataset: Any, index: int) -> dict[str, int]:
    pos = {"sample_index": int(index)}
    if hasattr(dataset, "position"):
        epoch, p = dataset.position(index)
        pos.update(epoch=int(epoch), position=int(p))
    return pos

