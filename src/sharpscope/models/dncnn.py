"""DnCNN baseline (Zhang et al. 2017).

A plain stack of 3x3 convolutions that predicts the *residual* (for denoising,
the noise; here, the difference between the degraded and the restored image)
and subtracts it from the input: ``y = x - R(x)``.  The first layer is
convolution + ReLU, the ``depth - 2`` middle layers are convolution + batch
normalisation + ReLU, the last layer is a convolution to one channel.

References
----------
.. [1] K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian
   denoiser: residual learning of deep CNN for image denoising", IEEE
   Transactions on Image Processing 26(7), 3142-3155 (2017).
"""

from __future__ import annotations

import torch
from torch import nn

from sharpscope.errors import ConfigError, InputError

__all__ = ["DnCNN"]


class DnCNN(nn.Module):
    """DnCNN: residual learning with a deep plain CNN.

    Parameters
    ----------
    depth : int, optional
        Number of convolution layers, at least 2 (the paper's grey-level
        model: 17).
    features : int, optional
        Feature maps of the hidden layers (paper: 64).
    kernel_size : int, optional
        Odd kernel size of every convolution (paper: 3).
    batch_norm : bool, optional
        Batch normalisation in the middle layers (paper: on).  When on, those
        convolutions have no bias (the normalisation's shift replaces it), as in
        the authors' implementation; when off, they have a bias.

    Attributes
    ----------
    size_multiple : int
        1: any input size works.
    scales : tuple of int
        ``(0,)``: one output, at full resolution.
    hparams : dict
        The constructor arguments.

    Notes
    -----
    The last convolution has no bias, as in the authors' Keras implementation,
    so the default network has ``9 * 64 + 64 + 15 * (9 * 64**2 + 2 * 64) +
    9 * 64 = 556,096`` trainable parameters - the 0.556 M that the m-rBCR paper
    lists for its DnCNN baseline.  Batch normalisation keeps running
    statistics, so call ``eval()`` before predicting.

    References
    ----------
    .. [1] K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian
       denoiser: residual learning of deep CNN for image denoising", IEEE
       Trans. Image Process. 26(7), 3142-3155 (2017).

    Examples
    --------
    >>> import torch
    >>> net = DnCNN(depth=5, features=16).eval()
    >>> (y,) = net(torch.zeros(1, 1, 17, 23))
    >>> tuple(y.shape)
    (1, 1, 17, 23)
    """

    def __init__(
        self,
        depth: int = 17,
        features: int = 64,
        kernel_size: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        for key, value, low in (
            ("depth", depth, 2),
            ("features", features, 1),
            ("kernel_size", kernel_size, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"dncnn: {key} must be an integer >= {low}, got {value!r}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"dncnn: kernel_size must be odd, got {kernel_size}")
        if not isinstance(batch_norm, bool):
            raise ConfigError(f"dncnn: batch_norm must be true or false, got {batch_norm!r}")
        self.hparams = dict(
            depth=depth, features=features, kernel_size=kernel_size, batch_norm=batch_norm
        )
        self.size_multiple = 1
        self.scales = (0,)
        pad = kernel_size // 2
        layers: list[nn.Module] = [
            nn.Conv2d(1, features, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
        ]
        for _ in range(depth - 2):
            layers.append(
                nn.Conv2d(features, features, kernel_size, padding=pad, bias=not batch_norm)
            )
            if batch_norm:
                # epsilon as in the authors' implementation
                layers.append(nn.BatchNorm2d(features, eps=1e-4))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(features, 1, kernel_size, padding=pad, bias=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """Restore a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            Input of shape (N, 1, H, W), any H and W.

        Returns
        -------
        tuple of torch.Tensor
            A 1-tuple holding ``x - R(x)``, shape (N, 1, H, W).
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise InputError(f"dncnn expects (N, 1, H, W), got {tuple(x.shape)}")
        return (x - self.body(x),)
