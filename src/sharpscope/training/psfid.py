"""The PSF-identification task: train :class:`~sharpscope.models.psfnet.PSFNet` on simulated measurements.

Samples
    Drawn from the Zernike preset ``data.simulate`` (``'poster-zernike'``: Noll 4-11,
    ``theta_k ~ U[-theta_max, theta_max]``, the poster's noise chain -- Poisson gain,
    Gaussian read noise, 16-bit quantisation, salt-and-pepper 1e-5) with the ranges
    of the ``psfid`` section replacing the preset's (:func:`psfid_preset`: ``fc`` in
    [0.1, 0.25] and ``theta_max`` up to 0.3 waves by default), the target blur
    removed, and the ``texture`` specimens (natural images) mixed with the preset's
    procedural kinds.  The preset itself is unchanged.  A sample holds the
    measurement ``low`` (``y``), the specimen ``x`` on the same scale (so
    ``E[y] = h * x`` exactly in the valid region), the PSF ``h``, its coefficients,
    ``fc``, ``theta_max``, the noise parameters in the units of ``low``, and which of
    ``fc`` / ``theta_max`` the network is shown (``condition_dropout``); sample ``i``
    is a pure function of ``(seed, i)``.  No flips or rotations: they would change
    the PSF with the image.

Loss
    :func:`~sharpscope.training.losses.psf_identification_loss`.

Validation metrics (all on a fixed set drawn once, in float32)
    ``val_psf_snr``: Deep-blur's PSF SNR ``-20 log10(||h_hat - h|| / ||h||)`` in dB,
    with ``fc`` and ``theta_max`` given; ``val_psf_snr_blind``: the same with both
    unknown; ``val_reblur_psnr``: PSNR of ``h_hat * x`` against ``h * x`` on the
    specimen scaled to [0, 1] (valid region), conditions given; ``val_rel_l2``: the
    mean relative L2 error of the PSF, conditions given.  ``val_loss`` is the loss
    with the conditions given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from sharpscope.errors import ConfigError
from sharpscope.training.config import TrainConfig
from sharpscope.training.losses import psf_identification_loss, psf_snr, reblur
from sharpscope.training.tasks import Precision, Task, TaskData

__all__ = ["PSFIdentificationTask", "PSFPatches", "psfid_preset"]

# training keeps the activations of the stem and the stages for the backward pass
_BYTES_PER_PIXEL = 900


def psfid_preset(config: TrainConfig) -> Any:
    """The sampling distribution of the task: the Zernike preset with the ``psfid`` ranges.

    Examples
    --------
    >>> cfg = TrainConfig(task="psf-identification", model={"arch": "psfnet"},
    ...                   data={"simulate": "poster-zernike"})
    >>> p = psfid_preset(cfg)
    >>> p.fc, p.theta_max, p.target_sigma, dict(p.specimen.kinds)["texture"]
    ((0.1, 0.25), (0.0, 0.3), 0.0, 0.3)
    """
    from sharpscope.simulate import SpecimenModel, ZernikePreset, get_preset

    if config.data.path is not None or config.data.simulate is None:
        raise ConfigError("psf-identification trains on a simulator preset (data.simulate: poster-zernike)")
    base = get_preset(config.data.simulate)
    if not isinstance(base, ZernikePreset):
        raise ConfigError(
            f"psf-identification needs a Zernike preset (poster-zernike), not {config.data.simulate!r}"
        )
    c = config.psfid
    rest = [(k, w) for k, w in base.specimen.kinds if k != "texture"]
    total = sum(w for _, w in rest) or 1.0
    kinds = tuple((k, (1.0 - c.texture) * w / total) for k, w in rest)
    if c.texture > 0:
        kinds += (("texture", c.texture),)
    if c.kinds is not None:  # the config's own mixture (e.g. a curriculum's puncta stage)
        total = sum(c.kinds.values())
        kinds = tuple((k, w / total) for k, w in c.kinds.items())
    return dataclasses.replace(
        base,
        name=f"{base.name}+psfid",
        fc=tuple(c.fc),
        theta_max=tuple(c.theta_max),
        target_sigma=0.0,
        specimen=SpecimenModel(kinds=kinds, density=base.specimen.density),
    )


class PSFPatches(torch.utils.data.Dataset):
    """Indexable PSF-identification samples (sample ``i`` a pure function of the seed and ``i``).

    Parameters
    ----------
    preset : ZernikePreset
        The sampling distribution (:func:`psfid_preset`).
    patch_size : int
        Side of the square patches.
    seed, stream : int
        Seed of the run and stream (0 training, 1 validation, 2+ evaluation).
    condition_dropout : float
        Probability that each condition is hidden (``known_fc`` / ``known_theta`` 0).

    Examples
    --------
    >>> from sharpscope.simulate import get_preset
    >>> ds = PSFPatches(get_preset("poster-zernike"), 64, seed=0)
    >>> s = ds[0]
    >>> tuple(s["low"].shape), tuple(s["psf"].shape), tuple(s["zernike"].shape)
    ((1, 64, 64), (33, 33), (8,))
    """

    def __init__(self, preset: Any, patch_size: int, seed: int = 0, stream: int = 0, condition_dropout: float = 0.0):
        from sharpscope.data import stream_seed
        from sharpscope.simulate import SimulatedPairs

        self.preset = preset
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.stream = int(stream)
        self.condition_dropout = float(condition_dropout)
        self.simulator_seed = stream_seed(seed, stream)
        self.pairs = SimulatedPairs(preset, patch_size=self.patch_size, seed=self.simulator_seed)

    def __len__(self) -> int:  # an effectively infinite stream
        return 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.pairs.sample(int(index))
        p = s["params"]
        # the simulator normalised low and gt alike: v = (raw - lo) / a
        lo = float(p["norm_lo"])
        a = max(float(p["norm_hi"]) - lo, 1e-6)
        gain, sigma = float(p["gain"]), float(p["sigma"])
        u = np.random.default_rng([self.seed, 11, self.stream, int(index)]).random(2)
        f32 = torch.float32
        return {
            "low": s["low"].to(f32),
            "x": s["gt"].to(f32),
            "psf": s["psf"].to(f32),
            "zernike": torch.tensor(p["zernike"], dtype=f32),
            "fc": torch.tensor(p["fc"], dtype=f32),
            "theta_max": torch.tensor(p["theta_max"], dtype=f32),
            "gain": torch.tensor(gain / a, dtype=f32),
            "sigma": torch.tensor(math.sqrt(max(sigma**2 + gain * lo, 0.0)) / a, dtype=f32),
            "known_fc": torch.tensor(float(u[0] >= self.condition_dropout), dtype=f32),
            "known_theta": torch.tensor(float(u[1] >= self.condition_dropout), dtype=f32),
        }


def stack(samples: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack sample dicts into one batch dict."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def conditions(batch: Mapping[str, torch.Tensor], mode: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(fc, theta_max)`` shown to the network: ``'sampled'`` (the masks), ``'known'`` or ``'unknown'``."""
    if mode == "unknown":
        return None, None
    if mode == "known":
        return batch["fc"], batch["theta_max"]
    nan = torch.tensor(float("nan"), dtype=batch["fc"].dtype, device=batch["fc"].device)
    fc = torch.where(batch["known_fc"] > 0, batch["fc"], nan)
    tm = torch.where(batch["known_theta"] > 0, batch["theta_max"], nan)
    return fc, tm


def psf_metrics(psf_hat: torch.Tensor, psf: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample PSF SNR (dB), relative L2 error and reblur PSNR (dB) on ``x`` scaled to [0, 1].

    Examples
    --------
    >>> h = torch.rand(2, 9, 9); h = h / h.sum(dim=(1, 2), keepdim=True)
    >>> m = psf_metrics(h, h, torch.rand(2, 1, 32, 32))
    >>> bool((m["rel_l2"] == 0).all()), bool((m["reblur_psnr"] > 100).all())
    (True, True)
    """
    x = x.float()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x01 = (x - lo) / (hi - lo).clamp_min(1e-12)
    mse = (reblur(psf_hat.float(), x01) - reblur(psf.float(), x01)).square().mean(dim=(1, 2, 3))
    dims = (1, 2)
    rel = torch.linalg.vector_norm((psf_hat - psf).float(), dim=dims) / torch.linalg.vector_norm(psf.float(), dim=dims)
    return {
        "psf_snr": psf_snr(psf_hat, psf),
        "rel_l2": rel,
        "reblur_psnr": 10.0 * torch.log10(1.0 / mse.clamp_min(1e-20)),
    }


class PSFIdentificationTask(Task):
    """PSF identification on simulated measurements (see the module notes)."""

    name = "psf-identification"
    metrics = ("val_psf_snr", "val_psf_snr_blind", "val_reblur_psnr", "val_rel_l2")
    monitorable = ("val_psf_snr", "val_reblur_psnr")
    units = {"val_psf_snr": "dB", "val_psf_snr_blind": "dB", "val_reblur_psnr": "dB", "val_rel_l2": ""}
    labels = {"val_psf_snr": "validation PSF SNR (dB), fc and theta_max given"}

    def check_config(self, net: nn.Module) -> None:
        super().check_config(net)
        psfid_preset(self.config)  # a Zernike preset, no paired data

    def check_memory(self, net: nn.Module, device: torch.device) -> None:
        from sharpscope.runtime import check_memory

        if device.type != "cpu":
            return
        c = self.config
        need = _BYTES_PER_PIXEL * c.batch_size * c.patch_size**2 + (c.val_size + c.batch_size) * 3 * 4 * c.patch_size**2
        check_memory(need, f"PSF-identification batches of {c.batch_size} x {c.patch_size}x{c.patch_size}")

    def build_data(self, device: torch.device) -> TaskData:
        c = self.config
        preset = psfid_preset(c)
        train = PSFPatches(preset, c.patch_size, seed=c.seed, stream=0, condition_dropout=c.psfid.condition_dropout)
        val_ds = PSFPatches(preset, c.patch_size, seed=c.seed, stream=1)
        val = {k: v.to(device) for k, v in stack([val_ds[i] for i in range(c.val_size)]).items()}
        fc, tm = c.psfid.fc, c.psfid.theta_max
        description = (
            f"simulated '{c.data.simulate}' measurements with fc {fc[0]:g}-{fc[1]:g}, theta_max "
            f"{tm[0]:g}-{tm[1]:g} waves, {c.psfid.texture:.0%} textures (simulator seed "
            f"{train.simulator_seed} for training, {val_ds.simulator_seed} for validation)"
        )
        return TaskData(train, val, description)

    def _weights(self, net: nn.Module) -> dict[str, Any]:
        c = self.config.psfid
        return {
            "reblur_weight": c.reblur_weight,
            "zernike_weight": c.zernike_weight,
            "fc_weight": c.fc_weight,
            "noise_weight": c.noise_weight,
            "noll": tuple(getattr(net, "noll", range(4, 12))),
        }

    def training_loss(self, net: nn.Module, batch: Mapping[str, torch.Tensor], precision: Precision) -> torch.Tensor:
        b = {k: v.to(precision.device, non_blocking=True) for k, v in batch.items()}
        fc, tm = conditions(b, "sampled")
        with precision.autocast():
            out = net(b["low"], fc, tm)
        loss, _ = psf_identification_loss(out, b, **self._weights(net))
        return loss

    def validate(self, net: nn.Module, data: TaskData, precision: Precision) -> dict[str, float]:
        val = data.val
        n = len(val["low"])
        bs = max(1, self.config.batch_size)
        kw = self._weights(net)
        total = 0.0
        known: dict[str, list[torch.Tensor]] = {"psf_snr": [], "rel_l2": [], "reblur_psnr": []}
        blind: list[torch.Tensor] = []
        with torch.no_grad():
            for i in range(0, n, bs):
                b = {k: v[i : i + bs] for k, v in val.items()}
                for mode in ("known", "unknown"):
                    fc, tm = conditions(b, mode)
                    with precision.autocast(training=False):
                        out = net(b["low"], fc, tm)
                    m = psf_metrics(out["psf"], b["psf"], b["x"])
                    if mode == "known":
                        loss, _ = psf_identification_loss(out, b, **kw)
                        total += float(loss) * len(b["low"])
                        for k in known:
                            known[k].append(m[k])
                    else:
                        blind.append(m["psf_snr"])
        return {
            "val_loss": total / n,
            "val_psf_snr": float(torch.cat(known["psf_snr"]).mean()),
            "val_psf_snr_blind": float(torch.cat(blind).mean()),
            "val_reblur_psnr": float(torch.cat(known["reblur_psnr"]).mean()),
            "val_rel_l2": float(torch.cat(known["rel_l2"]).mean()),
        }

    def header_fields(self, net: nn.Module, data: TaskData, metrics: Mapping[str, float]) -> dict[str, Any]:
        c = self.config
        return {
            "description": c.description
            or "PSF identifier N_w(y, fc, theta_max): the PSF at the centre of a patch (Zernike Noll 4-11)",
            "tile": {"size": c.patch_size, "overlap": c.patch_size // 2},
            "result": (
                f"validation PSF SNR {metrics['val_psf_snr']:.2f} dB with fc and theta_max given, "
                f"{metrics['val_psf_snr_blind']:.2f} dB without; reblur PSNR {metrics['val_reblur_psnr']:.2f} dB; "
                f"relative L2 error {metrics['val_rel_l2']:.3f}"
            ),
        }
