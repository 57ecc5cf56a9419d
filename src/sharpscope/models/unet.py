"""CARE-style U-Net baseline (Weigert et al. 2018).

The network follows the U-Net of CSBDeep/CARE: ``convs_per_level``
convolutions with ReLU at each resolution level, 2x2 max pooling on the way
down, nearest-neighbour upsampling and concatenation of the skip connection on
the way up, a 1x1 linear output convolution, and a residual connection that
adds the input image to the output.  The number of filters starts at
``base_filters`` and doubles at every level.  Like CARE's, the bottom level
narrows back to the filter count of the level above, and the last convolution
of each decoder level narrows to the filter count of the level below it.

References
----------
.. [1] M. Weigert et al., "Content-aware image restoration: pushing the limits
   of fluorescence microscopy", Nature Methods 15(12), 1090-1097 (2018).
.. [2] O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for
   biomedical image segmentation", MICCAI 2015.
"""

from __future__ import annotations

import torch
from torch import nn

from sharpscope.errors import ConfigError, InputError

__all__ = ["UNet"]


def _conv_block(c_in: int, c_out: int, kernel_size: int, batch_norm: bool) -> nn.Sequential:
    """Convolution ('same' padding), optional batch normalisation, ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """CARE-style U-Net for 1-channel image restoration.

    Parameters
    ----------
    depth : int, optional
        Number of downsampling steps (resolution levels below the input).
        CARE's default is 2.
    base_filters : int, optional
        Filters at the first level; doubled after every downsampling. CARE's
        default is 32.
    kernel_size : int, optional
        Odd convolution kernel size.  3 reproduces the 0.333 M-parameter CARE
        baseline of the m-rBCR paper; CSBDeep's own 2-D default is 5.
    convs_per_level : int, optional
        Convolutions per level (CARE: 2).
    residual : bool, optional
        Add the input image to the output (CARE does when input and output have
        the same number of channels).
    batch_norm : bool, optional
        Batch normalisation after each convolution (CARE: off).

    Attributes
    ----------
    size_multiple : int
        ``2 ** depth``; input height and width must be divisible by it.
    scales : tuple of int
        ``(0,)``: one output, at full resolution.
    hparams : dict
        The constructor arguments.

    Notes
    -----
    With the defaults the network has 332,641 parameters: the convolutions map
    1->32->32, 32->64->64, 64->128->64 (bottom), 128->64->32 and 64->32->32
    (decoder, after concatenating the skip connection), each with a 3x3 kernel
    and a bias, followed by a 1x1 convolution 32->1.

    References
    ----------
    .. [1] M. Weigert et al., "Content-aware image restoration: pushing the
       limits of fluorescence microscopy", Nature Methods 15, 1090-1097 (2018).

    Examples
    --------
    >>> import torch
    >>> net = UNet()
    >>> (y,) = net(torch.zeros(2, 1, 32, 48))
    >>> tuple(y.shape), net.size_multiple
    ((2, 1, 32, 48), 4)
    """

    def __init__(
        self,
        depth: int = 2,
        base_filters: int = 32,
        kernel_size: int = 3,
        convs_per_level: int = 2,
        residual: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        for key, value in (
            ("depth", depth),
            ("base_filters", base_filters),
            ("kernel_size", kernel_size),
            ("convs_per_level", convs_per_level),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"unet: {key} must be a positive integer, got {value!r}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"unet: kernel_size must be odd, got {kernel_size}")
        for key, flag in (("residual", residual), ("batch_norm", batch_norm)):
            if not isinstance(flag, bool):
                raise ConfigError(f"unet: {key} must be true or false, got {flag!r}")
        self.hparams = dict(
            depth=depth,
            base_filters=base_filters,
            kernel_size=kernel_size,
            convs_per_level=convs_per_level,
            residual=residual,
            batch_norm=batch_norm,
        )
        self.depth = depth
        self.residual = bool(residual)
        self.size_multiple = 2**depth
        self.scales = (0,)

        def width(level: int) -> int:
            return base_filters * 2 ** max(level, 0)

        def stack(c_in: int, widths: list[int]) -> nn.Sequential:
            blocks = []
            for c_out in widths:
                blocks.append(_conv_block(c_in, c_out, kernel_size, batch_norm))
                c_in = c_out
            return nn.Sequential(*blocks)

        self.down = nn.ModuleList()
        c_in = 1
        for level in range(depth):
            self.down.append(stack(c_in, [width(level)] * convs_per_level))
            c_in = width(level)
        # bottom: widen to width(depth), then narrow to width(depth - 1) for the way up
        self.bottom = stack(c_in, [width(depth)] * (convs_per_level - 1) + [width(depth - 1)])
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            # input: upsampled features (width(level)) concatenated with the skip (width(level))
            widths = [width(level)] * (convs_per_level - 1) + [width(level - 1)]
            self.up.append(stack(2 * width(level), widths))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(width(-1), 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """Restore a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            Input of shape (N, 1, H, W) with H and W divisible by
            :attr:`size_multiple`.

        Returns
        -------
        tuple of torch.Tensor
            A 1-tuple holding the restored batch, shape (N, 1, H, W).
        """
        m = self.size_multiple
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] % m or x.shape[3] % m:
            raise InputError(
                f"unet expects (N, 1, H, W) with H, W divisible by {m}, got {tuple(x.shape)}"
            )
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        y = self.head(h)
        if self.residual:
            y = y + x
        return (y,)
