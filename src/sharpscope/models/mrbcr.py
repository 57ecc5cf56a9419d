"""The m-rBCR network (DeBCR) and its single-stage variant s-rBCR, in PyTorch.

m-rBCR (Li, Kudryashev & Yakimovich; the network of the DeBCR framework) restores
an image at three scales, full resolution ``x0`` and two coarse copies ``x2``
and ``x4`` (every 2nd / 4th pixel, or 2x2 / 4x4 block means).  It has two parts
that mirror ``u ~ (K^T K + eps I)^-1 K^T b``:

* a forward "BCR" stage ``K^T``: per scale a stack of pointwise layers, a fusion
  block shared by the scales that mixes each scale with the next coarser one,
  and 1x1 heads that produce one-channel images ``o0, o2, o4``;
* a pseudo-inverse stage ``(K^T K + eps I)^-1``, coarse to fine: per scale a
  branch of width-only ``1 x 5`` convolutions and residual dense blocks, fed
  through a second shared fusion block with the upsampled result of the coarser
  scale, and a 9x9 output convolution of ``branch + o`` (the one-channel ``o``
  broadcast over the branch channels).

With the published hyper-parameters (the defaults here) the network has exactly
236,630 parameters and reproduces the published TensorFlow model (same layer
order, "same" padding, half-pixel bilinear resizing without antialiasing).
Nothing depends on the image size: any ``H, W`` divisible by 4 works.

The single-stage s-rBCR (paper Fig. 2 and Algorithms 1-2) is read here as the
same two operators at one scale only: the pointwise ``K^T`` stack and its 1x1
head, then one pseudo-inverse branch and its 9x9 output convolution, without
any fusion.  The paper quotes 0.086 M parameters for its s-rBCR but not the
depth it used; with the m-rBCR per-scale hyper-parameters (the defaults) this
reading has 62,338 parameters, and ``rdb_blocks`` changes the depth.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sharpscope.errors import ConfigError, InputError

__all__ = [
    "MRBCR", "OPTICS_WIDTH", "SRBCR", "FiLM", "SameConv2d", "conv_relu", "decimate", "optics_vector",
    "resize_bilinear",
]

# width of the optics part of an optics-conditioned network's condition vector
OPTICS_WIDTH = 3
# the cut-off frequency enters the network as fc / FC_SCALE (Nyquist sampling = 1)
FC_SCALE = 0.25


def optics_vector(fc: float | None = None, modality: str | None = None) -> torch.Tensor:
    """The optics part of an optics-conditioned m-rBCR's condition: ``(known, fc/0.25, confocal)``.

    ``fc`` is the coherent cut-off ``NA * pixel / wavelength_em`` in cycles per pixel
    (0.25 = Nyquist sampling of the widefield OTF).  Unknown optics (``fc=None``) give
    zeros: the network then judges the blur from the image alone.

    Examples
    --------
    >>> optics_vector(0.2, "confocal")
    tensor([1.0000, 0.8000, 1.0000])
    >>> optics_vector()
    tensor([0., 0., 0.])
    """
    if fc is None:
        return torch.zeros(OPTICS_WIDTH)
    fc = float(fc)
    if not 0.0 < fc <= 1.0:
        raise InputError(f"the cut-off fc must be in (0, 1] cycles/pixel, got {fc}")
    if modality not in (None, "widefield", "confocal"):
        raise InputError(f"modality must be 'widefield' or 'confocal', got {modality!r}")
    return torch.tensor([1.0, fc / FC_SCALE, 1.0 if modality == "confocal" else 0.0])

Decimation = Literal["stride", "avgpool"]


class SameConv2d(nn.Conv2d):
    """A stride-1 ``Conv2d`` with TensorFlow/Keras ``padding='same'``.

    For odd kernels this is symmetric zero padding; for even kernels Keras pads
    one pixel more at the bottom/right, which is reproduced here.

    Examples
    --------
    >>> conv = SameConv2d(1, 2, (1, 4))
    >>> conv(torch.zeros(1, 1, 5, 7)).shape
    torch.Size([1, 2, 5, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int]):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        symmetric = kh % 2 == 1 and kw % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            (kh, kw),
            padding=((kh - 1) // 2, (kw - 1) // 2) if symmetric else 0,
        )
        # (left, right, top, bottom) for F.pad when the padding is asymmetric
        self._pad = None if symmetric else ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pad is not None:
            x = F.pad(x, self._pad)
        return super().forward(x)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres and no antialiasing.

    This is ``tf.image.resize(..., method='bilinear')`` (TensorFlow 2, the
    default ``antialias=False``), which PyTorch computes as
    ``F.interpolate(mode='bilinear', align_corners=False, antialias=False)``.

    Examples
    --------
    >>> resize_bilinear(torch.ones(1, 3, 4, 6), (8, 12)).shape
    torch.Size([1, 3, 8, 12])
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def decimate(x: torch.Tensor, factor: int, mode: Decimation = "stride") -> torch.Tensor:
    """Coarse copy of ``x`` (N, C, H, W) by ``factor``.

    ``'stride'`` keeps every ``factor``-th pixel starting at the first (the
    published ``x[:, ::f, ::f]``); ``'avgpool'`` averages ``factor x factor`` blocks.

    Examples
    --------
    >>> decimate(torch.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    tensor([[ 0.,  2.],
            [ 8., 10.]])
    """
    if factor == 1:
        return x
    if mode == "stride":
        return x[..., ::factor, ::factor]
    if mode == "avgpool":
        return F.avg_pool2d(x, factor)
    raise ConfigError(f"unknown decimation {mode!r}; use 'stride' or 'avgpool'")


def conv_relu(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ReLU(conv(x))``, in one pass where ``conv`` can (an inference form's ``forward_relu``).

    Examples
    --------
    >>> conv = nn.Conv2d(2, 3, 1)
    >>> bool((conv_relu(conv, torch.randn(1, 2, 4, 4)) >= 0).all())
    True
    """
    fused = getattr(conv, "forward_relu", None)
    return fused(x) if fused is not None else F.relu(conv(x))


class PointwiseStack(nn.Module):
    """``n`` pointwise (1x1 / Keras ``Dense``) layers, ReLU after each."""

    def __init__(self, in_channels: int, channels: int, n: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else channels, channels, 1) for i in range(n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = conv_relu(layer, x)
        return x


class Fusion(nn.Module):
    """``F(a, b) = Conv3x3(ReLU(Conv1x1(concat[a, b])))``."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.mix = nn.Conv2d(in_channels, channels, 1)
        self.conv = SameConv2d(channels, channels, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.conv(conv_relu(self.mix, torch.cat([a, b], dim=1)))


class ResidualDenseBlock(nn.Module):
    """Residual dense block of the published pseudo-inverse branch.

    ``layers`` times ``t = Conv3x3(ReLU(Conv3x3(h))); h = concat[h, t]`` (each
    ``growth`` channels), then ``u = Conv1x1(h)`` (``growth`` channels); returns
    ``concat[u, input]``, i.e. ``in_channels + growth`` channels.
    """

    def __init__(self, in_channels: int, growth: int, layers: int):
        super().__init__()
        self.pairs = nn.ModuleList()
        c = in_channels
        for _ in range(layers):
            self.pairs.append(
                nn.ModuleList([SameConv2d(c, growth, 3), SameConv2d(growth, growth, 3)])
            )
            c += growth
        self.local = nn.Conv2d(c, growth, 1)
        self.out_channels = in_channels + growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for first, second in self.pairs:
            h = torch.cat([h, second(conv_relu(first, h))], dim=1)
        return torch.cat([self.local(h), x], dim=1)


class FiLM(nn.Module):
    """Feature-wise affine modulation ``x * (1 + gamma(c)) + beta(c)`` from a condition vector.

    ``gamma, beta = Linear(ReLU(Linear(c)))``; the last layer starts at zero, so a
    new FiLM is the identity and a network widened with it computes what it did.
    """

    def __init__(self, n_cond: int, channels: int, hidden: int = 16):
        super().__init__()
        self.hidden = nn.Linear(n_cond, hidden)
        self.out = nn.Linear(hidden, 2 * channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.out(F.relu(self.hidden(c.to(x.dtype)))).chunk(2, dim=1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class InverseBranch(nn.Module):
    """Width-only convolutions (Keras ``Conv1D`` on 4-D input) then residual dense blocks."""

    def __init__(
        self,
        in_channels: int,
        conv1d_filters: int,
        conv1d_layers: int,
        conv1d_kernel: int,
        rdb_blocks: int,
        rdb_growth: int,
        rdb_layers: int,
    ):
        super().__init__()
        self.convs = nn.ModuleList(
            SameConv2d(
                in_channels if i == 0 else conv1d_filters, conv1d_filters, (1, conv1d_kernel)
            )
            for i in range(conv1d_layers)
        )
        self.blocks = nn.ModuleList()
        c = conv1d_filters if conv1d_layers else in_channels
        for _ in range(rdb_blocks):
            block = ResidualDenseBlock(c, rdb_growth, rdb_layers)
            self.blocks.append(block)
            c = block.out_channels
        self.out_channels = c

        self.widths = (conv1d_filters if conv1d_layers else in_channels, c)

    def forward(
        self, x: torch.Tensor, films: tuple[FiLM, FiLM] | None = None, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        for conv in self.convs:
            x = conv_relu(conv, x)
        if films is not None:
            x = films[0](x, c)
        for block in self.blocks:
            x = block(x)
        if films is not None:
            x = films[1](x, c)
        return x


def _check_size(x: torch.Tensor, multiple: int, arch: str) -> None:
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] % multiple or x.shape[3] % multiple:
        raise InputError(
            f"{arch} expects (N, 1, H, W) with H, W divisible by {multiple}, got {tuple(x.shape)}"
        )


def _check_hparams(arch: str, hparams: dict, allow_zero: tuple[str, ...]) -> None:
    for key, value in hparams.items():
        if key == "decimation":
            if value not in ("stride", "avgpool"):
                raise ConfigError(
                    f"{arch}: decimation must be 'stride' or 'avgpool', got {value!r}"
                )
            continue
        if key in ("noise_input", "optics_input"):
            if not isinstance(value, bool):
                raise ConfigError(f"{arch}: {key} must be true or false, got {value!r}")
            continue
        low = 0 if key in allow_zero else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            kind = "a non-negative" if low == 0 else "a positive"
            raise ConfigError(f"{arch}: {key} must be {kind} integer, got {value!r}")


def _widen_first_layers(
    module: nn.Module, state: dict, prefix: str, *args: object, **kwargs: object
) -> None:
    """Load 1-input-channel weights into a noise-conditioned network: zero noise weights."""
    for s in MRBCR.scales:
        key = f"{prefix}dense.s{s}.layers.0.weight"
        w = state.get(key)
        if w is not None and w.ndim == 4 and w.shape[1] == 1:
            state[key] = torch.cat([w, torch.zeros_like(w)], dim=1)


class MRBCR(nn.Module):
    """Multi-stage residual BCR network (m-rBCR), the DeBCR architecture.

    Parameters
    ----------
    channels : int
        Width of the pointwise ``K^T`` stacks and of the forward fusion block (32).
    dense_layers : int
        Pointwise layers per scale (12; the published ``L = L0 = 12``).
    conv1d_filters, conv1d_layers, conv1d_kernel : int
        Width-only convolutions at the start of every pseudo-inverse branch
        (32 filters, 6 layers, kernel 5).
    rdb_blocks, rdb_growth, rdb_layers : int
        Residual dense blocks per branch (4), their growth rate (4) and number of
        conv pairs inside a block (3).
    out_kernel : int
        Size of the final output convolutions (9).
    decimation : {'stride', 'avgpool'}
        How the coarse inputs are made: every 2nd/4th pixel (published) or block means.
    noise_input : bool
        Noise-conditioned variant (not in the paper; False is the published network):
        each scale's pointwise stack also receives the map of the noise standard
        deviation (:func:`sharpscope.models.noisemap.noise_map`, decimated like the
        image), so one set of weights adapts its strength to the photon count.
        Weights of the unconditioned network load into it (the extra input
        weights start at zero, so it starts as exactly that network).
    optics_input : bool
        Optics-conditioned variant (needs ``noise_input``; not in the paper): every
        pseudo-inverse branch is modulated (:class:`FiLM`, after its width-only
        convolutions and after its dense blocks) by the optics vector
        :func:`optics_vector` -- the cut-off fc and the modality, or "unknown" --
        so the network knows how much blur to undo instead of guessing it from the
        image.  The FiLM layers start as the identity (:func:`~sharpscope.models.
        noisemap.widen_model` widens a trained network).

    Notes
    -----
    ``forward(x, noise=None)`` takes an (N, 1, H, W) float tensor with H and W
    divisible by :attr:`size_multiple` and returns ``(z0, z2, z4)``, the restored
    image at full, half and quarter resolution, each (N, 1, h, w).  ``noise``
    (noise-conditioned networks only) is the (N, 2) or (2,) Poisson gain and
    Gaussian sigma of ``x``; when None it is estimated from ``x`` itself
    (:func:`~sharpscope.models.noisemap.estimate_noise_params`, per sample).  An
    optics-conditioned network takes the condition ``(N, 2 + 3)`` or ``(5,)``: the
    noise level followed by :func:`optics_vector`; a 2-wide ``noise`` (or None)
    means unknown optics.

    Examples
    --------
    >>> net = MRBCR()
    >>> sum(p.numel() for p in net.parameters())
    236630
    >>> [tuple(z.shape) for z in net(torch.zeros(1, 1, 16, 24))]
    [(1, 1, 16, 24), (1, 1, 8, 12), (1, 1, 4, 6)]
    """

    size_multiple = 4
    scales = (0, 2, 4)

    def __init__(
        self,
        channels: int = 32,
        dense_layers: int = 12,
        conv1d_filters: int = 32,
        conv1d_layers: int = 6,
        conv1d_kernel: int = 5,
        rdb_blocks: int = 4,
        rdb_growth: int = 4,
        rdb_layers: int = 3,
        out_kernel: int = 9,
        decimation: Decimation = "stride",
        noise_input: bool = False,
        optics_input: bool = False,
    ):
        super().__init__()
        self.decimation = decimation
        self.noise_input = bool(noise_input)
        self.optics_input = bool(optics_input)
        self.hparams = dict(
            channels=channels,
            dense_layers=dense_layers,
            conv1d_filters=conv1d_filters,
            conv1d_layers=conv1d_layers,
            conv1d_kernel=conv1d_kernel,
            rdb_blocks=rdb_blocks,
            rdb_growth=rdb_growth,
            rdb_layers=rdb_layers,
            out_kernel=out_kernel,
            decimation=decimation,
        )
        if noise_input is not False:  # the published network's hparams stay exactly as they were
            self.hparams["noise_input"] = noise_input
        if optics_input is not False:
            self.hparams["optics_input"] = optics_input
        _check_hparams("mrbcr", self.hparams, allow_zero=("rdb_blocks", "rdb_layers"))
        if self.optics_input and not self.noise_input:
            raise ConfigError("mrbcr: optics_input needs noise_input (the condition carries both)")
        # forward (BCR) stage
        n_in = 2 if self.noise_input else 1
        self.dense = nn.ModuleDict(
            {f"s{s}": PointwiseStack(n_in, channels, dense_layers) for s in self.scales}
        )
        if self.noise_input:
            self._register_load_state_dict_pre_hook(_widen_first_layers, with_module=True)
        self.fuse_fwd = Fusion(2 * channels, channels)
        self.head = nn.ModuleDict(
            {
                "s0": nn.Conv2d(2 * channels, 1, 1),
                "s2": nn.Conv2d(2 * channels, 1, 1),
                "s4": nn.Conv2d(channels, 1, 1),
            }
        )
        # pseudo-inverse stage
        branch_args = (
            conv1d_filters,
            conv1d_layers,
            conv1d_kernel,
            rdb_blocks,
            rdb_growth,
            rdb_layers,
        )
        b4 = InverseBranch(1, *branch_args)
        width = b4.out_channels
        self.branch = nn.ModuleDict(
            {
                "s4": b4,
                "s2": InverseBranch(width, *branch_args),
                "s0": InverseBranch(width, *branch_args),
            }
        )
        self.fuse_inv = Fusion(1 + width, width)
        if self.optics_input:
            self.film = nn.ModuleDict(
                {
                    k: nn.ModuleList(FiLM(OPTICS_WIDTH, c) for c in b.widths)
                    for k, b in self.branch.items()
                }
            )
        self.out = nn.ModuleDict({f"s{s}": SameConv2d(width, 1, out_kernel) for s in self.scales})
        # set only in inference copies: sharpscope.models.fused.FoldedHeads
        self.folded_heads: nn.Module | None = None

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_size(x, self.size_multiple, "mrbcr")
        h, w = x.shape[-2:]
        size0, size2 = (h, w), (h // 2, w // 2)
        optics = None
        if self.noise_input:
            from sharpscope.models.noisemap import estimate_noise_params, noise_map

            if noise is None:
                noise = estimate_noise_params(x.detach())
            widths = (2, 2 + OPTICS_WIDTH) if self.optics_input else (2,)
            if noise.shape[-1] not in widths:
                raise InputError(
                    f"mrbcr: the condition must be {' or '.join(map(str, widths))} wide, "
                    f"got shape {tuple(noise.shape)}"
                )
            if self.optics_input:
                optics = noise[..., 2:] if noise.shape[-1] > 2 else torch.zeros(
                    (*noise.shape[:-1], OPTICS_WIDTH), dtype=noise.dtype, device=noise.device
                )
                optics = optics.reshape(-1, OPTICS_WIDTH).expand(x.shape[0], OPTICS_WIDTH)
            noise = noise[..., :2]
            x = torch.cat([x, noise_map(x, noise.to(x.dtype))], dim=1)
        x2 = decimate(x, 2, self.decimation)
        x4 = decimate(x, 4, self.decimation)

        # forward stage K^T
        y0 = self.dense["s0"](x)
        y2 = self.dense["s2"](x2)
        y4 = self.dense["s4"](x4)
        y2u = resize_bilinear(y2, size0)
        y4u = resize_bilinear(y4, size0)
        o4 = self.head["s4"](y4)
        if self.folded_heads is not None:  # the inference form (sharpscope.models.fused)
            o0, o2 = self.folded_heads(y0, y2, y2u, y4u)
        else:
            f0 = self.fuse_fwd(y0, y2u)
            f2 = resize_bilinear(self.fuse_fwd(y2u, y4u), size2)
            o2 = self.head["s2"](torch.cat([y2, f2], dim=1))
            o0 = self.head["s0"](torch.cat([y0, f0], dim=1))

        # pseudo-inverse stage, coarse to fine
        def film(k: str) -> tuple | None:
            return None if optics is None else tuple(self.film[k])

        i4 = self.branch["s4"](o4, film("s4"), optics)
        i2 = self.branch["s2"](self.fuse_inv(o2, resize_bilinear(i4, size2)), film("s2"), optics)
        i0 = self.branch["s0"](self.fuse_inv(o0, resize_bilinear(i2, size0)), film("s0"), optics)
        z4 = self.out["s4"](i4 + o4)
        z2 = self.out["s2"](i2 + o2)
        z0 = self.out["s0"](i0 + o0)
        return z0, z2, z4


class SRBCR(nn.Module):
    """Single-stage residual BCR network (s-rBCR): one scale, no fusion.

    ``z = Conv9x9(B(o) + o)`` with ``o = Conv1x1(PointwiseStack(x))`` the
    forward ``K^T`` operator and ``B`` one pseudo-inverse branch (width-only
    convolutions and residual dense blocks), the building blocks of
    :class:`MRBCR` at a single scale.  Parameters as for :class:`MRBCR`.

    Examples
    --------
    >>> net = SRBCR()
    >>> sum(p.numel() for p in net.parameters())
    62338
    >>> net(torch.zeros(2, 1, 10, 14))[0].shape
    torch.Size([2, 1, 10, 14])
    """

    size_multiple = 1

    def __init__(
        self,
        channels: int = 32,
        dense_layers: int = 12,
        conv1d_filters: int = 32,
        conv1d_layers: int = 6,
        conv1d_kernel: int = 5,
        rdb_blocks: int = 4,
        rdb_growth: int = 4,
        rdb_layers: int = 3,
        out_kernel: int = 9,
    ):
        super().__init__()
        self.hparams = dict(
            channels=channels,
            dense_layers=dense_layers,
            conv1d_filters=conv1d_filters,
            conv1d_layers=conv1d_layers,
            conv1d_kernel=conv1d_kernel,
            rdb_blocks=rdb_blocks,
            rdb_growth=rdb_growth,
            rdb_layers=rdb_layers,
            out_kernel=out_kernel,
        )
        _check_hparams(
            "srbcr",
            self.hparams,
            allow_zero=("dense_layers", "conv1d_layers", "rdb_blocks", "rdb_layers"),
        )
        self.dense = PointwiseStack(1, channels, dense_layers)
        self.head = nn.Conv2d(channels if dense_layers else 1, 1, 1)
        self.branch = InverseBranch(
            1, conv1d_filters, conv1d_layers, conv1d_kernel, rdb_blocks, rdb_growth, rdb_layers
        )
        self.out = SameConv2d(self.branch.out_channels, 1, out_kernel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        _check_size(x, self.size_multiple, "srbcr")
        o = self.head(self.dense(x))
        return (self.out(self.branch(o) + o),)
