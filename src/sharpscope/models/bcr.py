"""Residual BCR network with real wavelet-like decomposition levels (L > L0).

BCR-Net (Fan, Orozco Bohorquez & Ying 2019) turns the nonstandard wavelet form
of Beylkin, Coifman and Rokhlin into a network: a stride-2 convolution plays the
orthogonal wavelet transform ``(W^(l))^T`` that splits the scaling coefficients
``v^(l+1)`` into coarser scaling coefficients ``v^(l)`` and details ``d^(l)``;
local convolutions of bandwidth ``nb`` play the band matrices acting on the
details; a dense stack acts on the coarsest scaling coefficients ``v^(L0)``
(the truncation level); and the transposed transform ``W^(l)`` merges each
level back into the next finer one.  The m-rBCR paper (Li, Kudryashev &
Yakimovich, Algorithms 1 and 2) makes every level residual-dense and follows the
resulting forward operator ``K^T`` with a pseudo-inverse ``(K^T K + eps I)^-1``.
Its published code sets ``L = L0`` so that none of the decomposition loops ever
runs; :class:`BCRNet` builds them, with ``levels = L - L0`` real levels.

The building blocks (residual dense block, fusion block, width-only inverse
branch, Keras-style 'same' convolution, bilinear resize, decimation) are those
of :mod:`sharpscope.models.mrbcr`.
"""

from __future__ import annotations

import torch
from torch import nn

from sharpscope.errors import ConfigError, InputError
from sharpscope.models.mrbcr import (
    Decimation,
    Fusion,
    InverseBranch,
    PointwiseStack,
    ResidualDenseBlock,
    SameConv2d,
    decimate,
    resize_bilinear,
)

__all__ = ["BCRNet", "DecompositionLevel"]


class DecompositionLevel(nn.Module):
    """One level ``l`` of the BCR decomposition and its reconstruction.

    Parameters
    ----------
    channels : int
        Number ``alpha`` of scaling (and of detail) channels.
    support : int
        Even kernel size ``2p`` of the learned analysis / synthesis filters
        (stride 2).  2 gives non-overlapping Haar-like filters, 4 the support
        of a Daubechies filter with two vanishing moments.
    bandwidth : int
        Odd kernel size ``nb`` of the local convolutions acting on the details.
    local_layers : int
        Number of local convolutions (each followed by ReLU).
    rdb_growth, rdb_layers : int
        Growth rate and depth of the residual dense blocks.
    posterior : bool
        Whether the detail path also receives the input image decimated to this
        level's resolution (the multi-stage "posterior" of m-rBCR).

    Notes
    -----
    :meth:`analyse` is Algorithm 1, lines 4-6: ``x[l] = W^T(RDB(v[l+1]))``
    split into ``v[l]`` (the first ``alpha`` channels) and ``d[l]`` (the rest).
    :meth:`synthesise` is lines 11-16: ``z = LC^n(RDB(d[l] | posterior))``,
    then ``u[l+1] = W(concat[z, u[l]])``.
    """

    def __init__(
        self,
        channels: int,
        support: int,
        bandwidth: int,
        local_layers: int,
        rdb_growth: int,
        rdb_layers: int,
        posterior: bool,
    ) -> None:
        super().__init__()
        pad = (support - 2) // 2  # stride 2 with this padding halves an even size exactly
        self.channels = channels
        self.pre = ResidualDenseBlock(channels, rdb_growth, rdb_layers)
        self.analysis = nn.Conv2d(self.pre.out_channels, 2 * channels, support, 2, pad)
        self.detail = ResidualDenseBlock(channels + int(posterior), rdb_growth, rdb_layers)
        self.local = nn.ModuleList(
            SameConv2d(self.detail.out_channels if i == 0 else channels, channels, bandwidth)
            for i in range(local_layers)
        )
        self.synthesis = nn.ConvTranspose2d(2 * channels, channels, support, 2, pad)

    def analyse(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split scaling coefficients ``v[l+1]`` into ``(v[l], d[l])`` at half resolution."""
        xi = self.analysis(self.pre(v))
        return xi[:, : self.channels], xi[:, self.channels :]

    def synthesise(
        self, u: torch.Tensor, d: torch.Tensor, posterior: torch.Tensor | None
    ) -> torch.Tensor:
        """Merge ``u[l]`` with the processed details ``d[l]`` into ``u[l+1]``."""
        z = d if posterior is None else torch.cat([d, posterior], dim=1)
        z = self.detail(z)
        for conv in self.local:
            z = torch.relu(conv(z))
        return self.synthesis(torch.cat([z, u], dim=1))


class BCRNet(nn.Module):
    """Residual BCR network with ``levels`` real decomposition levels.

    The network approximates ``o = (K^T K + eps I)^-1 K^T i`` (m-rBCR paper,
    Eq. 17) with a forward operator ``K^T`` built from a genuine multi-level
    BCR decomposition (Algorithm 1 with ``L - L0 = levels``) and the m-rBCR
    pseudo-inverse ``B`` (Algorithm 2) applied coarse to fine.

    Parameters
    ----------
    levels : int
        Number of decomposition levels ``L - L0`` (0 gives the published
        no-decomposition case at a single scale).  Outputs come at ``levels + 1``
        scales: full resolution, 1/2, ..., 1/2**levels.
    channels : int
        Scaling/detail channels ``alpha`` per level (and lifting width).
    wavelet_support : int
        Even kernel size ``2p`` of the stride-2 analysis and synthesis filters.
    bandwidth : int
        Odd kernel size ``nb`` of the local convolutions on the details.
    local_layers : int
        Local convolutions per level (at least 1).
    dense_layers : int
        Pointwise layers ``K`` acting on the coarsest scaling coefficients.
    rdb_growth, rdb_layers : int
        Growth rate and number of conv pairs of every residual dense block.
    posterior : bool
        Feed the input, decimated to each level's resolution, into that level's
        detail path (m-rBCR's multi-stage re-integration of the input).
    decimation : {'stride', 'avgpool'}
        How the posterior copies of the input are made (every 2**k-th pixel, as
        the published m-rBCR does, or block means).
    conv1d_filters, conv1d_layers, conv1d_kernel, rdb_blocks, out_kernel : int
        The pseudo-inverse branches, exactly as in
        :class:`~sharpscope.models.mrbcr.MRBCR`.

    Attributes
    ----------
    size_multiple : int
        ``2 ** levels``; H and W must be divisible by it.
    scales : tuple of int
        Output scale labels in the m-rBCR style: 0 for full resolution, then the
        decimation factors 2, 4, ...
    hparams : dict
        The constructor arguments.
    decimation : str
        How the posterior copies (and hence the coarse training targets) are made.

    Notes
    -----
    Which step implements what (m-rBCR paper, Algorithms 1 and 2):

    * lift: ``v[L] = Conv1x1(x)``, 1 -> ``alpha`` channels (Alg. 1 line 2;
      *choice*: BCR-Net reshapes a 1-D signal into ``alpha`` channels, an image
      needs a learned lifting instead).
    * decomposition, ``l = L-1 .. L0`` (Alg. 1 lines 4-6):
      ``x[l] = W^T(RDB(v[l+1]))`` with ``W^T`` a learned stride-2 convolution
      of support ``2p`` (BCR-Net's ``conv[2 alpha, 2p, 2]``), split into the
      scaling part ``v[l]`` and the details ``d[l]``.  *Choice*: the analysis
      filters are learned and unconstrained (not forced orthogonal), as in
      BCR-Net.
    * truncation level (Alg. 1 lines 7-10): ``u[L0] = Dense^K(v[L0])`` as ``K``
      pointwise layers with ReLU (the published ``Dense`` stack).
    * reconstruction, ``l = L0 .. L-1`` (Alg. 1 lines 11-16): the details go
      through a residual dense block and ``local_layers`` local convolutions of
      bandwidth ``nb`` (*choice*: BCR-Net's locally connected layers have
      position-dependent weights, which would tie the network to one image size;
      translation-invariant convolutions of the same band keep it
      size-agnostic); the posterior (decimated input) is concatenated to the
      details first; then ``u[l+1] = W(concat[z, u[l]])`` with ``W`` a learned
      stride-2 transposed convolution (the synthesis, BCR-Net's inverse
      transform), which is also the fusion of line 17: every finer level is
      built from the coarser one.
    * forward-operator outputs: ``o_s = Conv1x1(u_s)`` per scale, one channel.
    * pseudo-inverse ``B`` (Alg. 2), coarse to fine as in m-rBCR: at the
      coarsest scale ``i = Branch(o)``; at each finer scale
      ``i = Branch(G(o_s, up2(i)))`` with one shared fusion ``G``; the output is
      ``z_s = Conv_out(i + o_s)``.  ``Branch`` is Alg. 2's ``L1`` width-only
      convolutions and ``L2`` residual dense blocks.

    All decompositions use zero padding at the image border.

    References
    ----------
    .. [1] Y. Fan, C. Orozco Bohorquez, L. Ying, "BCR-Net: a neural network
       based on the nonstandard wavelet form", J. Comput. Phys. 384, 1-15 (2019).
    .. [2] R. Li, M. Kudryashev, A. Yakimovich, "Solving the inverse problem of
       microscopy deconvolution with a residual Beylkin-Coifman-Rokhlin neural
       network" (m-rBCR), Algorithms 1 and 2.
    .. [3] G. Beylkin, R. Coifman, V. Rokhlin, "Fast wavelet transforms and
       numerical algorithms I", Comm. Pure Appl. Math. 44(2), 141-183 (1991).

    Examples
    --------
    >>> import torch
    >>> net = BCRNet(levels=2)
    >>> [tuple(z.shape) for z in net(torch.zeros(1, 1, 16, 24))]
    [(1, 1, 16, 24), (1, 1, 8, 12), (1, 1, 4, 6)]
    >>> net.size_multiple, net.scales
    (4, (0, 2, 4))
    """

    def __init__(
        self,
        levels: int = 2,
        channels: int = 32,
        wavelet_support: int = 4,
        bandwidth: int = 3,
        local_layers: int = 2,
        dense_layers: int = 12,
        rdb_growth: int = 4,
        rdb_layers: int = 3,
        posterior: bool = True,
        decimation: Decimation = "stride",
        conv1d_filters: int = 32,
        conv1d_layers: int = 6,
        conv1d_kernel: int = 5,
        rdb_blocks: int = 4,
        out_kernel: int = 9,
    ) -> None:
        super().__init__()
        self.hparams = dict(
            levels=levels,
            channels=channels,
            wavelet_support=wavelet_support,
            bandwidth=bandwidth,
            local_layers=local_layers,
            dense_layers=dense_layers,
            rdb_growth=rdb_growth,
            rdb_layers=rdb_layers,
            posterior=posterior,
            decimation=decimation,
            conv1d_filters=conv1d_filters,
            conv1d_layers=conv1d_layers,
            conv1d_kernel=conv1d_kernel,
            rdb_blocks=rdb_blocks,
            out_kernel=out_kernel,
        )
        _validate(self.hparams)
        self.levels = levels
        self.posterior = bool(posterior)
        self.decimation = decimation
        self.size_multiple = 2**levels
        self.scales = (0,) + tuple(2**k for k in range(1, levels + 1))

        # forward operator K^T (Algorithm 1); index k = number of halvings
        self.lift = nn.Conv2d(1, channels, 1)
        self.decompose = nn.ModuleList(
            DecompositionLevel(
                channels,
                wavelet_support,
                bandwidth,
                local_layers,
                rdb_growth,
                rdb_layers,
                self.posterior,
            )
            for _ in range(levels)
        )
        self.dense = PointwiseStack(channels, channels, dense_layers)
        self.head = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in range(levels + 1))

        # pseudo-inverse B (Algorithm 2), coarse to fine
        branch_args = (
            conv1d_filters,
            conv1d_layers,
            conv1d_kernel,
            rdb_blocks,
            rdb_growth,
            rdb_layers,
        )
        coarsest = InverseBranch(1, *branch_args)
        width = coarsest.out_channels
        self.branch = nn.ModuleList(InverseBranch(width, *branch_args) for _ in range(levels))
        self.branch.append(coarsest)
        self.fuse_inv = Fusion(1 + width, width) if levels else None
        self.out = nn.ModuleList(SameConv2d(width, 1, out_kernel) for _ in range(levels + 1))

    def forward_operator(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The forward operator ``K^T`` (Algorithm 1) at every scale.

        Parameters
        ----------
        x : torch.Tensor
            Input (N, 1, H, W), H and W divisible by :attr:`size_multiple`.

        Returns
        -------
        list of torch.Tensor
            One-channel maps ``o_k`` at resolution ``1 / 2**k``, ``k = 0 ..
            levels`` (full resolution first).
        """
        _check_size(x, self.size_multiple)
        v = self.lift(x)
        details = []
        for level in self.decompose:  # fine to coarse: l = L-1 .. L0
            v, d = level.analyse(v)
            details.append(d)
        u = self.dense(v)  # truncation level L0
        maps = [u]
        for k in reversed(range(self.levels)):  # coarse to fine: l = L0 .. L-1
            post = decimate(x, 2 ** (k + 1), self.decimation) if self.posterior else None
            u = self.decompose[k].synthesise(u, details[k], post)
            maps.append(u)
        maps.reverse()
        return [head(m) for head, m in zip(self.head, maps, strict=True)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Restore a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            Input (N, 1, H, W), H and W divisible by :attr:`size_multiple`.

        Returns
        -------
        tuple of torch.Tensor
            ``levels + 1`` restored images, (N, 1, H / 2**k, W / 2**k) for
            ``k = 0 .. levels``: full resolution first.
        """
        o = self.forward_operator(x)
        outputs: list[torch.Tensor] = []
        i = None
        for k in reversed(range(self.levels + 1)):  # coarse to fine
            if i is None:
                i = self.branch[k](o[k])
            else:
                up = resize_bilinear(i, tuple(o[k].shape[-2:]))
                i = self.branch[k](self.fuse_inv(o[k], up))
            outputs.append(self.out[k](i + o[k]))
        outputs.reverse()
        return tuple(outputs)


def _check_size(x: torch.Tensor, multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] % multiple or x.shape[3] % multiple:
        raise InputError(
            f"bcr expects (N, 1, H, W) with H, W divisible by {multiple}, got {tuple(x.shape)}"
        )


def _validate(hparams: dict) -> None:
    """Raise ConfigError for hyper-parameters the network cannot be built with."""
    minimum = {"levels": 0, "rdb_layers": 0, "rdb_blocks": 0, "conv1d_layers": 0}
    for key, value in hparams.items():
        if key == "posterior":
            if not isinstance(value, bool):
                raise ConfigError(f"bcr: posterior must be true or false, got {value!r}")
        elif key == "decimation":
            if value not in ("stride", "avgpool"):
                raise ConfigError(f"bcr: decimation must be 'stride' or 'avgpool', got {value!r}")
        else:
            low = minimum.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"bcr: {key} must be an integer >= {low}, got {value!r}")
    if hparams["wavelet_support"] % 2:
        raise ConfigError(f"bcr: wavelet_support must be even, got {hparams['wavelet_support']}")
    for key in ("bandwidth", "conv1d_kernel", "out_kernel"):
        if hparams[key] % 2 == 0:
            raise ConfigError(f"bcr: {key} must be odd, got {hparams[key]}")
