"""Tasks: what the training loop trains -- the batch, the loss, the validation metrics.

:func:`sharpscope.training.train` runs one loop (optimiser, learning-rate schedule,
mixed precision, validation, best and last checkpoints, resume, log, ETA, the run
lock) for every task; a :class:`Task` supplies the rest:

* :meth:`Task.build_data`: the training dataset (indexable; sample ``i`` a pure
  function of the seed and ``i``, so a run resumes exactly) and the fixed
  validation batch;
* :meth:`Task.training_loss`: the scalar loss of one training batch;
* :meth:`Task.validate`: ``val_loss`` and the task's metrics (:attr:`Task.metrics`,
  the first one shown in messages and the plot; :attr:`Task.monitorable` are those,
  higher is better, that ``monitor`` may choose);
* :meth:`Task.header_fields`: what the saved model's header records.

:class:`RestorationTask` trains the restoration networks on pairs (this module);
:class:`~sharpscope.training.psfid.PSFIdentificationTask` the PSF identifier.
:func:`make_task` picks one from ``config.task``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from sharpscope.errors import InputError, SharpscopeError
from sharpscope.training.config import TrainConfig
from sharpscope.training.losses import restoration_loss

__all__ = ["Precision", "RestorationTask", "Task", "TaskData", "make_task"]


@dataclass(frozen=True)
class Precision:
    """How the loop computes: the device and the mixed precision it chose.

    ``autocast(training=True)`` is the context of the training forward pass;
    validation autocasts on CUDA only (float32 on the CPU, so that model selection
    does not depend on the CPU's flags).
    """

    device: torch.device
    use_amp: bool = False
    dtype: torch.dtype = torch.bfloat16

    def autocast(self, training: bool = True) -> Any:
        enabled = self.use_amp and (training or self.device.type == "cuda")
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=enabled)


@dataclass
class TaskData:
    """What :meth:`Task.build_data` returns.

    Attributes
    ----------
    train : torch.utils.data.Dataset
        Indexable training samples (dicts of tensors).
    val : dict of torch.Tensor
        The validation set, stacked, on the training device.
    description : str
        One line about the data (logged and written in the model header).
    extra : dict
        Whatever else the task wants to keep (normalisation, valid range...).
    """

    train: torch.utils.data.Dataset
    val: dict[str, torch.Tensor]
    description: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def val_size(self) -> int:
        return len(next(iter(self.val.values())))


class Task:
    """Base of the training tasks (see the module notes)."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    monitorable: ClassVar[tuple[str, ...]] = ()
    units: ClassVar[dict[str, str]] = {}
    labels: ClassVar[dict[str, str]] = {}

    def __init__(self, config: TrainConfig):
        self.config = config

    def check_config(self, net: nn.Module) -> None:
        """Refuse settings this task cannot train with (one-line ConfigError)."""
        from sharpscope.errors import ConfigError

        allowed = self.monitorable or self.metrics
        if self.config.monitor != "val_loss" and self.config.monitor not in allowed:
            raise ConfigError(
                f"monitor {self.config.monitor!r} is not a metric of the {self.name} task "
                f"(use val_loss or {', '.join(allowed)})"
            )

    def check_memory(self, net: nn.Module, device: torch.device) -> None:
        """One-line error when a batch cannot fit in the memory (nothing by default)."""

    def build_data(self, device: torch.device) -> TaskData:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_loss(
        self, net: nn.Module, batch: Mapping[str, torch.Tensor], precision: Precision
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def validate(
        self, net: nn.Module, data: TaskData, precision: Precision
    ) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def header_fields(
        self, net: nn.Module, data: TaskData, metrics: Mapping[str, float]
    ) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def headline(self, metrics: Mapping[str, float]) -> str:
        """``'val_psnr 31.20 dB'``: the first metric, as messages show it."""
        name = self.metrics[0]
        unit = self.units.get(name, "")
        return f"{name} {metrics[name]:.2f}{' ' + unit if unit else ''}"


def make_task(config: TrainConfig) -> Task:
    """The task object of ``config.task``.

    Examples
    --------
    >>> make_task(TrainConfig()).name
    'restoration'
    """
    if config.task == "psf-identification":
        from sharpscope.training.psfid import PSFIdentificationTask

        return PSFIdentificationTask(config)
    return RestorationTask(config)


# =========================================================================== restoration


@dataclass
class _Data:
    train: torch.utils.data.Dataset
    val_low: torch.Tensor
    val_gt: torch.Tensor
    description: str
    normalization: tuple[float, float] | None = None
    val_optics: torch.Tensor | None = None


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


# share of simulated samples (training and validation) that tell an optics-conditioned
# network "optics unknown", so that it also restores images whose optics nobody gave
OPTICS_DROPOUT = 0.25


def _condition(net: nn.Module, low: torch.Tensor, optics: torch.Tensor | None) -> torch.Tensor | None:
    """The condition an optics-conditioned network trains with: the noise measured on
    ``low`` and the sample's optics (None for every other network: it measures itself)."""
    core = getattr(net, "module", net)  # DistributedDataParallel wraps the network
    if optics is None or not getattr(core, "optics_input", False):
        return None
    from sharpscope.models.noisemap import estimate_noise_params

    noise = estimate_noise_params(low.detach().float())
    return torch.cat([noise, optics.to(noise)], dim=1)


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
        drop = OPTICS_DROPOUT
        train = D.SimulatedPatches(dc.simulate, p, seed=config.seed, stream=0, augment=aug, optics_dropout=drop)
        val = D.SimulatedPatches(dc.simulate, p, seed=config.seed, stream=1, augment=None, optics_dropout=drop)
        items = [val[i] for i in range(config.val_size)]
        if not items:
            raise InputError("empty validation set")
        return _Data(
            train,
            torch.stack([it["low"] for it in items]),
            torch.stack([it["gt"] for it in items]),
            f"simulated '{dc.simulate}' pairs (simulator seed {train.simulator_seed} for training, "
            f"{val.simulator_seed} for validation)",
            train.normalization,
            torch.stack([it["optics"] for it in items]),
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



class RestorationTask(Task):
    """Restoration: pairs ``(low, gt)``, the multi-scale loss, validation PSNR.

    Validation PSNR is the mean over the validation patches of
    ``10 log10(1 / MSE)`` of the full-resolution output (data range 1, the
    normalised intensity scale).
    """

    name = "restoration"
    metrics = ("val_psnr",)
    units = {"val_psnr": "dB"}
    labels = {"val_psnr": "validation PSNR (dB)"}

    def check_memory(self, net: nn.Module, device: torch.device) -> None:
        _check_training_memory(self.config, net, device)

    def build_data(self, device: torch.device) -> TaskData:
        data = _build_data(self.config)
        # the percentiles prediction must use: those the training inputs were normalised with
        norm = data.normalization or (self.config.data.pmin, self.config.data.pmax)
        val = {"low": data.val_low.to(device), "gt": data.val_gt.to(device)}
        if data.val_optics is not None:
            val["optics"] = data.val_optics.to(device)
        valid_range = _training_range(data.val_low, norm)
        return TaskData(data.train, val, data.description, {"norm": norm, "valid_range": valid_range})

    def _loss_kw(self, net: nn.Module) -> dict[str, Any]:
        c = self.config.loss
        return {
            "fft_weight": c.fft_weight,
            "fft_mode": c.fft_mode,
            "fft_norm": c.fft_norm,
            "decimation": str(getattr(net, "decimation", "stride")),
            "scale_weights": c.scale_weights,
            "sample_balance": c.sample_balance,
        }

    def training_loss(self, net, batch, precision):
        device = precision.device
        low = batch["low"].to(device, non_blocking=True)
        gt = batch["gt"].to(device, non_blocking=True)
        cond = _condition(net, low, batch.get("optics"))
        with precision.autocast():
            outputs = net(low) if cond is None else net(low, cond)
        loss, _ = restoration_loss([o.float() for o in outputs], gt, **self._loss_kw(net))
        return loss

    def validate(self, net, data, precision):
        val_low, val_gt = data.val["low"], data.val["gt"]
        val_optics = data.val.get("optics")
        kw = self._loss_kw(net)
        total, psnrs = 0.0, []
        bs = max(1, self.config.batch_size)
        with torch.no_grad():
            for i in range(0, len(val_low), bs):
                lo, g = val_low[i : i + bs], val_gt[i : i + bs]
                cond = _condition(net, lo, None if val_optics is None else val_optics[i : i + bs])
                with precision.autocast(training=False):
                    outs = net(lo) if cond is None else net(lo, cond)
                outs = [o.float() for o in outs]
                loss, _ = restoration_loss(outs, g, **kw)
                total += float(loss) * len(lo)
                mse = torch.mean((outs[0] - g.float()) ** 2, dim=(1, 2, 3)).clamp_min(1e-12)
                psnrs.append(10.0 * torch.log10(1.0 / mse))
        return {"val_loss": total / len(val_low), "val_psnr": float(torch.cat(psnrs).mean())}

    def header_fields(self, net, data, metrics):
        config = self.config
        norm = data.extra["norm"]
        return {
            "description": config.description or f"{config.model.arch} trained with sharpscope on {data.description}",
            "normalization": {"pmin": norm[0], "pmax": norm[1]},
            "tile": {"size": config.tile_size, "overlap": config.tile_overlap},
            "valid_range": data.extra["valid_range"],
            "result": f"validation PSNR {metrics['val_psnr']:.2f} dB",
        }
