"""Registry of network architectures: name -> constructor taking hyper-parameters.

Every registered network takes an (N, 1, H, W) float32 tensor and returns a
tuple of per-scale outputs, full resolution first (single-scale baselines return
a 1-tuple), and has an attribute ``size_multiple`` (H and W must be divisible by
it).  Model files name their architecture by its key here.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sharpscope.errors import ConfigError
from sharpscope.models.bcr import BCRNet
from sharpscope.models.dncnn import DnCNN
from sharpscope.models.mrbcr import MRBCR, SRBCR
from sharpscope.models.unet import UNet

__all__ = ["ARCHITECTURES", "build_network", "count_parameters"]

# name -> callable(**hparams) -> nn.Module.  A plain dict: each architecture
# module adds its own line here.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mrbcr": MRBCR,
    "srbcr": SRBCR,
    "bcr": BCRNet,
    "unet": UNet,
    "dncnn": DnCNN,
}


def build_network(arch: str, **hparams) -> nn.Module:
    """Build a network of a registered architecture.

    Parameters
    ----------
    arch : str
        Architecture name, a key of :data:`ARCHITECTURES` (e.g. ``'mrbcr'``).
    **hparams
        Hyper-parameters passed to the constructor (defaults are the published ones).

    Returns
    -------
    torch.nn.Module
        The freshly initialised network.

    Raises
    ------
    ConfigError
        Unknown architecture or invalid hyper-parameters.

    Examples
    --------
    >>> net = build_network("mrbcr")
    >>> count_parameters(net), net.size_multiple
    (236630, 4)
    """
    try:
        factory = ARCHITECTURES[arch]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(f"unknown architecture {arch!r} (known: {known})") from None
    try:
        return factory(**hparams)
    except TypeError as exc:
        raise ConfigError(f"invalid hyper-parameters for {arch}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"invalid hyper-parameters for {arch}: {exc}") from exc


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (weights and biases) of a network.

    Examples
    --------
    >>> count_parameters(build_network("srbcr"))
    62338
    """
    return sum(p.numel() for p in net.parameters())
