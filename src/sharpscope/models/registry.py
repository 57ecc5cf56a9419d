"""Registry of network architectures: name -> constructor taking hyper-parameters.

Every registered network takes an (N, 1, H, W) float32 tensor and has an attribute
``size_multiple`` (H and W must be divisible by it).  Model files name their
architecture by its key here, and :data:`KINDS` says what the network does:

* ``'restoration'`` networks return a tuple of per-scale images, full resolution
  first (single-scale baselines return a 1-tuple); :func:`sharpscope.load_model`
  and ``restore`` use them;
* ``'psf-identification'`` networks (:class:`~sharpscope.models.psfnet.PSFNet`)
  return a dict with the PSF at the patch centre, its Zernike coefficients and the
  noise; :func:`sharpscope.models.psfnet.load_identifier` uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from sharpscope.errors import ConfigError
from sharpscope.models.bcr import BCRNet
from sharpscope.models.dncnn import DnCNN
from sharpscope.models.mrbcr import MRBCR, SRBCR
from sharpscope.models.psfnet import PSFNet
from sharpscope.models.unet import UNet

__all__ = ["ARCHITECTURES", "KINDS", "kind_of", "MAX_PARAMETERS", "build_network", "count_parameters", "network_signature"]

# No real restoration network comes near this (m-rBCR has 0.24 M): a header or config asking
# for more is a typo or a hostile file, refused before any memory is allocated.
MAX_PARAMETERS = 50_000_000

# name -> callable(**hparams) -> nn.Module.  A plain dict: each architecture
# module adds its own line here.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mrbcr": MRBCR,
    "srbcr": SRBCR,
    "bcr": BCRNet,
    "unet": UNet,
    "dncnn": DnCNN,
    "psfnet": PSFNet,
}

# what each architecture does (see the module notes); absent = 'restoration'
KINDS: dict[str, str] = {"psfnet": "psf-identification"}


def kind_of(arch: str) -> str:
    """``'restoration'`` or ``'psf-identification'``: what the architecture ``arch`` does.

    Examples
    --------
    >>> kind_of("mrbcr"), kind_of("psfnet")
    ('restoration', 'psf-identification')
    """
    return KINDS.get(arch, "restoration")


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
    network_signature(arch, **hparams)  # sized on the meta device first: nothing allocated
    return _construct(arch, hparams)


def _construct(arch: str, hparams: dict) -> nn.Module:
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


def network_signature(arch: str, **hparams) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of a network's state, without allocating it.

    The network is built on PyTorch's ``meta`` device (shapes only, no memory),
    so hyper-parameters from an untrusted header or config can be checked before
    anything real is constructed.

    Raises
    ------
    ConfigError
        Unknown architecture, invalid hyper-parameters, or more than
        :data:`MAX_PARAMETERS` parameters and buffers.

    Examples
    --------
    >>> sig = network_signature("srbcr")
    >>> sum(math.prod(shape) for shape, _ in sig.values())
    62338
    >>> network_signature("mrbcr", channels=200000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sharpscope.errors.ConfigError: mrbcr with these hyper-parameters has 1,760,009,390,102 ...
    """
    with torch.device("meta"):
        probe = _construct(arch, hparams)
    sig = {k: (tuple(v.shape), v.dtype) for k, v in probe.state_dict().items()}
    total = sum(math.prod(shape) for shape, _ in sig.values())
    if total > MAX_PARAMETERS:
        raise ConfigError(
            f"{arch} with these hyper-parameters has {total:,} parameters, more than the "
            f"limit of {MAX_PARAMETERS:,}: not a model this library can hold"
        )
    return sig


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (weights and biases) of a network.

    Examples
    --------
    >>> count_parameters(build_network("srbcr"))
    62338
    """
    return sum(p.numel() for p in net.parameters())
