"""Training configuration: the validated :class:`TrainConfig`, YAML loading, defaults.

The configuration is one pydantic model (unknown keys are errors) with sections for
the model, the data, the augmentation, the loss and, for PSF identification, the
``psfid`` section.  ``task`` says what is trained (:mod:`sharpscope.training.tasks`):
``'restoration'`` (the default, the layout every earlier config has) or
``'psf-identification'``.  A config saved with a model reproduces it; a checkpoint's
config is compared with the one resuming it by :func:`config_diff`, with fields that
were added to the schema after the checkpoint was written taken at their defaults.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sharpscope.errors import ConfigError

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_PRESET",
    "DEVICE_DEFAULTS",
    "RESUMABLE_CHANGES",
    "TASKS",
    "AugmentConfig",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "PSFIdConfig",
    "TrainConfig",
    "adopt_init_architecture",
    "config_diff",
    "load_config",
    "lr_at",
    "resolve_device",
    "with_device_defaults",
]

TASKS = ("restoration", "psf-identification")
"""What :func:`sharpscope.training.train` can train (the ``task`` field)."""

CONFIG_VERSION = 1
DEFAULT_PRESET = "mrbcr-widefield"

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
    arch : {'mrbcr', 'srbcr', 'bcr', 'unet', 'dncnn', 'psfnet'}
        Architecture name in :data:`sharpscope.models.registry.ARCHITECTURES`
        (``'psfnet'`` for the ``'psf-identification'`` task, a restoration
        network otherwise).
    hparams : dict
        Constructor arguments (empty: the published/default ones).
    init : str or None
        Start from the weights of this model (a model file, a training output
        folder or a model name, as :func:`sharpscope.load_model` takes) instead
        of a random initialisation: fine-tuning.  Where the config sets no
        ``arch`` / ``hparams``, the init model's are used; where it does, they
        must match.
    """

    arch: Literal["mrbcr", "srbcr", "bcr", "unet", "dncnn", "psfnet"] = "mrbcr"
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
    sample_balance : float
        0 (published): the batch mean of the samples' losses; up to 1: each sample
        weighted by its own loss to the power ``-sample_balance`` (1 = every
        sample's relative error counts alike, like a mean PSNR), see
        :func:`sharpscope.training.losses.restoration_loss`.
    """

    fft_weight: float = Field(0.5, ge=0.0)
    fft_mode: Literal["2d", "1d-width"] = "2d"
    fft_norm: Literal["ortho", "backward"] | None = None
    scale_weights: list[float] | None = None
    sample_balance: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("scale_weights")
    @classmethod
    def _non_negative(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(w < 0 for w in v)):
            raise ValueError("scale_weights must be a non-empty list of non-negative numbers")
        return v


class PSFIdConfig(_Section):
    """PSF identification (``task: psf-identification``), see :mod:`sharpscope.training.psfid`.

    The samples come from the Zernike preset ``data.simulate`` (``'poster-zernike'``)
    with the ranges below replacing the preset's, the target blur removed (so the
    sample's ``gt`` is the specimen ``x`` on the scale of ``low``: ``E[low] = h * x``)
    and a share of natural-image textures among the specimens.

    Attributes
    ----------
    fc : (float, float)
        Cut-off frequency range, cycles/pixel.
    theta_max : (float, float)
        Range of the per-sample bound of the Zernike coefficients (waves RMS).
    texture : float
        Share of ``texture`` specimens (the preset's procedural kinds share the rest
        in their own proportions).
    reblur_weight : float
        ``lambda`` of the poster's loss ``||h_hat - h||_1 + lambda ||h_hat * x - y||_1``
        (the first term summed over the PSF's pixels, the second averaged over the
        image's pixels, both averaged over the batch).
    zernike_weight : float
        Weight of the L1 error of the coefficients, taking the better of the two
        sign-equivalent labels (the even terms flipped together give the same PSF).
    fc_weight : float
        Weight of the L1 error of the estimated cut-off (cycles/pixel).
    noise_weight : float
        Weight of the L1 error of ``log`` gain and ``log`` sigma.
    condition_dropout : float
        Probability that each of ``fc`` and ``theta_max`` is hidden from the network
        for a sample (the unconditioned mode is trained by the same network).
    kinds : dict of str to float, optional
        Specimen kinds (:data:`sharpscope.physics.specimens.KINDS`) and their weights,
        replacing the preset's and ``texture`` (e.g. ``{puncta: 1}``: sparse points, where
        the PSF shows directly, for the first stage of a curriculum).
    """

    fc: tuple[float, float] = (0.1, 0.25)
    theta_max: tuple[float, float] = (0.0, 0.3)
    texture: float = Field(0.3, ge=0.0, le=1.0)
    reblur_weight: float = Field(10.0, ge=0.0)
    zernike_weight: float = Field(1.0, ge=0.0)
    fc_weight: float = Field(10.0, ge=0.0)
    noise_weight: float = Field(0.05, ge=0.0)
    condition_dropout: float = Field(0.5, ge=0.0, le=1.0)
    kinds: dict[str, float] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> PSFIdConfig:
        if self.kinds is not None:
            from sharpscope.physics.specimens import KINDS

            bad = [k for k in self.kinds if k not in KINDS]
            if bad or not self.kinds or any(not w > 0 for w in self.kinds.values()):
                raise ValueError(
                    f"kinds must map specimen kinds ({', '.join(KINDS)}) to positive weights, got {self.kinds}"
                )
        lo, hi = self.fc
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(f"fc must satisfy 0 < low <= high <= 0.5, got {self.fc}")
        lo, hi = self.theta_max
        if not 0 <= lo <= hi:
            raise ValueError(f"theta_max must satisfy 0 <= low <= high, got {self.theta_max}")
        return self


class TrainConfig(_Section):
    """Validated training configuration (pydantic; unknown keys are errors).

    Load one with :func:`load_config`; the validated config is saved inside the
    trained model's header (``training``) and in ``OUT/config.yaml``.

    Attributes
    ----------
    config_version : int
        Layout version of this configuration (1).
    task : {'restoration', 'psf-identification'}
        What is trained (:mod:`sharpscope.training.tasks`).
    name, description, license : str
        Written into the model header.
    model, data, augment, loss, psfid
        Sections, see :class:`ModelConfig`, :class:`DataConfig`,
        :class:`AugmentConfig`, :class:`LossConfig` and (PSF identification only)
        :class:`PSFIdConfig`.
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
    warmup_steps : int
        Linear warm-up of the learning rate over the first steps (0: none).  Worth a
        few hundred when fine-tuning a trained network: Adam's first updates move every
        weight by about the learning rate whatever its gradient, which a trained
        network takes hundreds of steps to recover from.
    val_every : int
        Validate (and checkpoint) every this many steps, and at the last step.
    val_size : int
        Number of validation patches (at most, for real data).
    patience : int or None
        Stop after this many validations without improvement (None: never).
    monitor : {'val_psnr', 'val_loss', 'val_psf_snr', 'val_reblur_psnr'}
        What "best" means for the best checkpoint and early stopping: the
        validation loss (lower is better) or one of the task's validation metrics
        (higher is better): ``val_psnr`` for restoration, ``val_psf_snr`` or
        ``val_reblur_psnr`` for PSF identification.
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
    task: Literal["restoration", "psf-identification"] = "restoration"
    name: str = Field("sharpscope-model", min_length=1)
    description: str = ""
    license: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    psfid: PSFIdConfig = Field(default_factory=PSFIdConfig)
    steps: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    patch_size: int | None = Field(None, ge=8)
    lr: float = Field(1e-3, gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = Field(1e-5, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    val_every: int = Field(500, gt=0)
    val_size: int = Field(64, gt=0)
    patience: int | None = Field(20, gt=0)
    monitor: Literal["val_psnr", "val_loss", "val_psf_snr", "val_reblur_psnr"] = "val_psnr"
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
        from sharpscope.models.registry import kind_of

        kind = kind_of(self.model.arch)
        if self.task == "psf-identification" and kind != "psf-identification":
            raise ValueError(f"task psf-identification trains model.arch 'psfnet', not {self.model.arch!r}")
        if self.task == "restoration" and kind != "restoration":
            raise ValueError(f"model.arch {self.model.arch!r} is not a restoration network (set task: {kind})")
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


def adopt_init_architecture(config: TrainConfig) -> TrainConfig:
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
    kind = device or resolve_device(config.device).type
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
    >>> lr_at(TrainConfig(lr=1e-3, warmup_steps=4), 0)  # a quarter of the way up
    0.00025
    """
    warm = min(1.0, (max(step, 0) + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_schedule == "constant":
        return config.lr * warm
    steps = config.steps or DEVICE_DEFAULTS["cpu"]["steps"]
    t = min(max(step, 0) / steps, 1.0)
    return warm * (config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * t)))



def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted names of the fields that differ and would change the weights a run makes.

    ``old`` is a checkpoint's config (JSON), ``new`` the one resuming it.  Both are
    completed with the defaults of fields the schema gained after ``old`` was
    written (a run started by an older sharpscope resumes with a newer one); the
    fields of :data:`RESUMABLE_CHANGES` are ignored.

    Examples
    --------
    >>> old = TrainConfig(steps=10).model_dump(mode="json")
    >>> del old["task"], old["psfid"]  # written before PSF identification existed
    >>> config_diff(old, TrainConfig(steps=20).model_dump(mode="json"))
    []
    >>> config_diff(old, TrainConfig(lr=1e-4).model_dump(mode="json"))
    ['lr']
    """
    return _diff(_completed(old), _completed(new))


def _completed(cfg: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return TrainConfig.model_validate(dict(cfg)).model_dump(mode="json")
    except (ValidationError, ConfigError, TypeError):  # compare as written
        return dict(cfg)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    diffs = []
    for k in keys:
        name = f"{prefix}{k}"
        if name in RESUMABLE_CHANGES:
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and k != "hparams":
            diffs += _diff(a, b, f"{name}.")
        elif a != b:
            diffs.append(name)
    return diffs

