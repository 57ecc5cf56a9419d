"""Blur operators with exact adjoints: FFT convolution and product-convolution.

Convention
----------
A PSF ``h`` of size ``k`` along an axis has its centre at index ``k // 2`` (the
same convention as :func:`scipy.ndimage.convolve` and ``numpy.fft.ifftshift``),
so that ``y[n] = sum_j h[j] x[n + k // 2 - j]``.  The spatial dimensionality
of an operator is the dimensionality of its PSF (2 or 3); every leading axis of
an input is a batch axis, so ``(H, W)``, ``(B, H, W)`` and ``(B, 1, H, W)`` are
all accepted by a 2-D operator.

Boundaries
----------
``'reflect'``
    The image is extended by half-sample symmetric reflection
    (``d c b a | a b c d | d c b a``, :func:`numpy.pad` ``'symmetric'``,
    :func:`scipy.ndimage.convolve` ``mode='reflect'``), convolved linearly and
    cropped back.  The adjoint folds the padded margin back onto the image.
``'zero'``
    Linear convolution with zeros outside the image, output cropped to the
    input size (``scipy`` ``mode='constant'``).
``'circular'``
    Periodic convolution (``scipy`` ``mode='wrap'``).

The optical transfer function (``rfftn`` of the centred PSF) is computed once
per FFT shape, dtype and device and cached on the operator.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from sharpscope.errors import InputError

__all__ = ["Convolution", "SpaceVaryingBlur", "fft_convolve", "partition_weights"]

Boundary = Literal["reflect", "zero", "circular"]
_BOUNDARIES = ("reflect", "zero", "circular")


def fast_len(n: int) -> int:
    """Smallest integer >= ``n`` whose prime factors are all in {2, 3, 5, 7}."""
    best = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                p2 = p3
                while p2 < n:
                    p2 *= 2
                best = min(best, p2)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def _as_tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.ascontiguousarray(a))


def _pad_index(n: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Index map of a padded axis onto ``range(n)`` (symmetric or periodic)."""
    i = torch.arange(-before, n + after)
    if mode == "circular":
        return torch.remainder(i, n)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def _check_boundary(boundary: str) -> str:
    if boundary not in _BOUNDARIES:
        raise InputError(f"unknown boundary {boundary!r}; expected one of {', '.join(_BOUNDARIES)}")
    return boundary


class _FFTConvBase:
    """Shared machinery: a stack of PSFs ``(K, *k)`` applied by FFT on a padded domain."""

    def __init__(self, psfs: torch.Tensor, ndim: int, boundary: str) -> None:
        self.ndim = ndim
        self.boundary = _check_boundary(boundary)
        self._psfs = psfs.to(torch.float64)
        self.kernel_shape = tuple(int(s) for s in psfs.shape[1:])
        self._centre = tuple(k // 2 for k in self.kernel_shape)
        self._otf_cache: dict[tuple, torch.Tensor] = {}
        self._index_cache: dict[tuple, list[torch.Tensor]] = {}

    # geometry -------------------------------------------------------------
    def _geometry(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Return (padded shape P, FFT shape M) for an image of spatial ``shape``."""
        if self.boundary == "circular":
            return shape, shape
        padded = tuple(n + k - 1 for n, k in zip(shape, self.kernel_shape, strict=True))
        return padded, tuple(fast_len(p) for p in padded)

    def _before(self) -> tuple[int, ...]:
        return tuple(k - 1 - c for k, c in zip(self.kernel_shape, self._centre, strict=True))

    def _otf(self, fft_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        key = (fft_shape, dtype, str(device))
        otf = self._otf_cache.get(key)
        if otf is None or self._psfs.requires_grad:
            psf = self._psfs
            nk = psf.shape[0]
            # fold/zero-pad the kernel onto the FFT grid with its centre at index 0
            grid = torch.zeros((nk, *fft_shape), dtype=torch.float64)
            idx = [
                torch.remainder(torch.arange(k) - c, m)
                for k, c, m in zip(self.kernel_shape, self._centre, fft_shape, strict=True)
            ]
            mesh = torch.meshgrid(*idx, indexing="ij")
            flat = torch.zeros(1, dtype=torch.long)
            for ax, m in enumerate(fft_shape):
                flat = flat * m + mesh[ax].reshape(-1)
            grid = grid.view(nk, -1).index_add(1, flat, psf.reshape(nk, -1)).view(grid.shape)
            dims = tuple(range(1, self.ndim + 1))
            real = torch.float64 if dtype == torch.float64 else torch.float32
            otf = torch.fft.rfftn(grid.to(real), dim=dims).to(device)
            if not self._psfs.requires_grad:
                self._otf_cache[key] = otf
        return otf

    # padding ----------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Extend ``x (N, *shape)`` to the padded domain ``(N, *P)``."""
        if self.boundary == "circular":
            return x
        before = self._before()
        if self.boundary == "zero":
            pads: list[int] = []
            for b, c in zip(reversed(before), reversed(self._centre), strict=True):
                pads += [b, c]
            return torch.nn.functional.pad(x, pads)
        for ax, idx in enumerate(self._indices(tuple(x.shape[1:]), x.device)):
            x = x.index_select(ax + 1, idx)
        return x

    def _pad_adjoint(self, xp: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Adjoint of :meth:`_pad`: crop (zero) or fold the margins back (reflect)."""
        if self.boundary == "circular":
            return xp
        if self.boundary == "zero":
            sl = tuple(slice(b, b + n) for b, n in zip(self._before(), shape, strict=True))
            return xp[(slice(None), *sl)]
        out = xp
        for ax, idx in enumerate(self._indices(shape, xp.device)):
            size = list(out.shape)
            size[ax + 1] = shape[ax]
            out = torch.zeros(size, dtype=out.dtype, device=out.device).index_add_(ax + 1, idx, out)
        return out

    def _indices(self, shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
        key = (shape, str(device))
        idx = self._index_cache.get(key)
        if idx is None:
            idx = [
                _pad_index(n, b, c, "reflect").to(device)
                for n, b, c in zip(shape, self._before(), self._centre, strict=True)
            ]
            self._index_cache[key] = idx
        return idx

    # FFT core ---------------------------------------------------------------
    def _crop_slices(self, shape: tuple[int, ...]) -> tuple[slice, ...]:
        if self.boundary == "circular":
            return tuple(slice(0, n) for n in shape)
        return tuple(
            slice(k - 1 - c, k - 1 - c + n)
            for k, c, n in zip(self.kernel_shape, self._centre, shape, strict=True)
        )

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if not isinstance(x, torch.Tensor):
            raise InputError("blur operators take torch tensors; use fft_convolve for numpy arrays")
        if x.ndim < self.ndim:
            raise InputError(f"input has {x.ndim} dimensions but the operator is {self.ndim}-D")
        if not x.is_floating_point():
            x = x.to(torch.float32)
        lead = tuple(x.shape[: x.ndim - self.ndim])
        return x.reshape(-1, *x.shape[x.ndim - self.ndim :]), lead


class Convolution(_FFTConvBase):
    """Convolution with a PSF by FFT, with an exact adjoint.

    Parameters
    ----------
    psf : numpy.ndarray or torch.Tensor
        The kernel, ``(ky, kx)`` or ``(kz, ky, kx)``; its centre is at index
        ``k // 2`` along each axis.  With ``ndim`` given and
        ``psf.ndim == ndim + 1`` the first axis is a batch of PSFs, one per
        image of the batch.
    boundary : {'reflect', 'zero', 'circular'}
        How the image is extended outside its support (see the module notes).
    ndim : int, optional
        Spatial dimensionality (2 or 3); defaults to ``psf.ndim``.

    Notes
    -----
    ``forward`` computes ``h * x`` and ``adjoint`` computes its exact adjoint
    (correlation with ``h``, followed by the adjoint of the boundary extension),
    so ``<A x, y> == <x, A^T y>`` to rounding.  The OTF is cached per image
    shape, dtype and device, except when ``psf`` requires gradients: then it
    is recomputed on every call and the result is differentiable with
    respect to the PSF as well as the image.

    Examples
    --------
    >>> import torch
    >>> from sharpscope.physics.blur import Convolution
    >>> psf = torch.ones(3, 3) / 9
    >>> op = Convolution(psf, boundary="reflect")
    >>> y = op.forward(torch.rand(2, 32, 32))
    >>> tuple(y.shape), tuple(op.adjoint(y).shape)
    ((2, 32, 32), (2, 32, 32))
    """

    def __init__(
        self,
        psf: np.ndarray | torch.Tensor,
        boundary: Boundary = "reflect",
        ndim: int | None = None,
    ) -> None:
        p = _as_tensor(psf)
        nd = p.ndim if ndim is None else int(ndim)
        if nd not in (2, 3):
            raise InputError(f"PSF must be 2-D or 3-D, got {nd}-D")
        if p.ndim == nd:
            p = p[None]
            self.batched = False
        elif p.ndim == nd + 1:
            self.batched = True
        else:
            raise InputError(f"PSF of shape {tuple(p.shape)} does not match ndim={nd}")
        if not torch.isfinite(p).all():
            raise InputError("PSF contains NaN or infinite values")
        super().__init__(p, nd, boundary)

    @property
    def psf(self) -> torch.Tensor:
        """The kernel (float64), with the batch axis if the operator is batched."""
        return self._psfs if self.batched else self._psfs[0]

    def _apply(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        xb, lead = self._split(x)
        shape = tuple(xb.shape[1:])
        if self.batched and xb.shape[0] != self._psfs.shape[0]:
            raise InputError(
                f"batch of {xb.shape[0]} images does not match a batch of {self._psfs.shape[0]} PSFs"
            )
        padded, fft_shape = self._geometry(shape)
        dims = tuple(range(1, self.ndim + 1))
        otf = self._otf(fft_shape, xb.dtype, xb.device)
        crop = (slice(None), *self._crop_slices(shape))
        if not adjoint:
            xp = self._pad(xb)
            z = torch.fft.irfftn(
                torch.fft.rfftn(xp, s=fft_shape, dim=dims) * otf, s=fft_shape, dim=dims
            )
            out = z[crop]
        else:
            yp = xb.new_zeros((xb.shape[0], *fft_shape))
            yp[crop] = xb
            z = torch.fft.irfftn(torch.fft.rfftn(yp, dim=dims) * otf.conj(), s=fft_shape, dim=dims)
            z = z[(slice(None), *(slice(0, p) for p in padded))]
            out = self._pad_adjoint(z, shape)
        return out.reshape(*lead, *shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` (``(..., *spatial)``) with the PSF."""
        return self._apply(x, adjoint=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint operator to ``y`` (``(..., *spatial)``)."""
        return self._apply(y, adjoint=True)

    __call__ = forward


def fft_convolve(
    x: np.ndarray | torch.Tensor,
    psf: np.ndarray | torch.Tensor,
    boundary: Boundary = "reflect",
) -> np.ndarray | torch.Tensor:
    """Convolve an image (or a batch) with a PSF by FFT.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Image(s); the last ``psf.ndim`` axes are spatial, any leading axes are
        a batch.
    psf : numpy.ndarray or torch.Tensor
        2-D or 3-D kernel, centre at index ``k // 2``.
    boundary : {'reflect', 'zero', 'circular'}
        Boundary handling (see :class:`Convolution`).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same shape and kind as ``x``; numpy results are float32 unless ``x`` is
        float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.blur import fft_convolve
    >>> img = np.zeros((16, 16), np.float32); img[8, 8] = 1
    >>> out = fft_convolve(img, np.ones((3, 3)) / 9)
    >>> round(float(out.sum()), 4), out.dtype.name
    (1.0, 'float32')
    """
    op = Convolution(psf, boundary=boundary)
    if isinstance(x, torch.Tensor):
        return op.forward(x)
    arr = np.asarray(x)
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    out = op.forward(torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype)))
    return out.numpy()


def partition_weights(
    grid: tuple[int, int],
    image_shape: tuple[int, int],
    interpolation: Literal["linear", "cosine"] = "cosine",
) -> torch.Tensor:
    """Smooth partition-of-unity weights for a ``(gy, gx)`` grid of PSF nodes.

    Node ``(i, j)`` sits at the centre of cell ``(i, j)`` of a regular
    ``gy x gx`` tiling of the image.  Along each axis the weight of a node is a
    tent (``'linear'``) or raised-cosine (``'cosine'``, continuously
    differentiable) function of the distance to its neighbours, held constant
    beyond the outermost nodes; the 2-D weight is the product.  The weights are
    non-negative and sum to exactly 1 at every pixel.

    Parameters
    ----------
    grid : tuple of int
        Number of nodes ``(gy, gx)``.
    image_shape : tuple of int
        ``(H, W)``.
    interpolation : {'linear', 'cosine'}
        Shape of the transition between neighbouring nodes.

    Returns
    -------
    torch.Tensor
        float64 weights of shape ``(gy * gx, H, W)``, row-major node order.

    Examples
    --------
    >>> from sharpscope.physics.blur import partition_weights
    >>> w = partition_weights((2, 3), (20, 30))
    >>> tuple(w.shape), bool(abs(w.sum(0) - 1).max() < 1e-12)
    ((6, 20, 30), True)
    """
    if interpolation not in ("linear", "cosine"):
        raise InputError(f"unknown interpolation {interpolation!r}; expected 'linear' or 'cosine'")
    axes = []
    for g, n in zip(grid, image_shape, strict=True):
        if g < 1:
            raise InputError("PSF grid must have at least one node per axis")
        pos = torch.arange(n, dtype=torch.float64)
        # node coordinate of every pixel: node i is at pixel (i + 0.5) * n / g - 0.5
        u = ((pos + 0.5) * g / n - 0.5).clamp(0, g - 1)
        lo = u.floor().clamp(max=max(g - 2, 0)).long()
        t = (u - lo).clamp(0, 1)
        if interpolation == "cosine":
            t = 0.5 - 0.5 * torch.cos(math.pi * t)
        w = torch.zeros(g, n, dtype=torch.float64)
        w.scatter_add_(0, lo[None], (1 - t)[None])
        if g > 1:
            w.scatter_add_(0, (lo + 1)[None], t[None])
        else:
            w[:] = 1.0
        axes.append(w)
    wy, wx = axes
    return (wy[:, None, :, None] * wx[None, :, None, :]).reshape(-1, *image_shape)


class SpaceVaryingBlur(_FFTConvBase):
    """Space-varying blur by product-convolution from a grid of PSFs.

    ``forward(x) = sum_k h_k * (w_k . x)``: the image is split by smooth
    partition-of-unity weights ``w_k`` (one per grid node, summing to 1 at
    every pixel, see :func:`partition_weights`), each piece is blurred with its
    node's PSF, and the pieces are summed.  This "weight then convolve" order
    conserves flux exactly (each PSF sums to 1 and the weights sum to 1); the
    adjoint is ``sum_k w_k . (h_k^T * y)``.  A grid of identical PSFs gives
    exactly the plain :class:`Convolution`.

    Parameters
    ----------
    psf_grid : numpy.ndarray or torch.Tensor
        ``(gy, gx, ky, kx)`` for 2-D or ``(gy, gx, kz, ky, kx)`` for 3-D images;
        the grid varies over the lateral ``(y, x)`` plane only.
    image_shape : tuple of int
        Spatial shape of the images, ``(H, W)`` or ``(Z, H, W)``.
    boundary : {'reflect', 'zero', 'circular'}
        Boundary handling, as in :class:`Convolution`.
    interpolation : {'linear', 'cosine'}
        Weight profile between nodes.

    Examples
    --------
    >>> import torch
    >>> from sharpscope.physics.blur import SpaceVaryingBlur
    >>> grid = torch.rand(2, 2, 5, 5)
    >>> grid = grid / grid.sum(dim=(-2, -1), keepdim=True)
    >>> op = SpaceVaryingBlur(grid, (32, 32))
    >>> tuple(op.forward(torch.rand(3, 32, 32)).shape)
    (3, 32, 32)
    """

    def __init__(
        self,
        psf_grid: np.ndarray | torch.Tensor,
        image_shape: tuple[int, ...],
        boundary: Boundary = "reflect",
        interpolation: Literal["linear", "cosine"] = "cosine",
    ) -> None:
        g = _as_tensor(psf_grid)
        if g.ndim not in (4, 5):
            raise InputError(
                f"psf_grid must be (gy, gx, ky, kx) or (gy, gx, kz, ky, kx), got shape {tuple(g.shape)}"
            )
        nd = g.ndim - 2
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != nd:
            raise InputError(f"image_shape {image_shape} does not match {nd}-D PSFs")
        self.grid_shape = (int(g.shape[0]), int(g.shape[1]))
        self.image_shape = image_shape
        super().__init__(g.reshape(-1, *g.shape[2:]), nd, boundary)
        w = partition_weights(self.grid_shape, image_shape[-2:], interpolation)
        if nd == 3:
            w = w[:, None].expand(-1, image_shape[0], -1, -1)
        self.weights = w.contiguous()
        self._padded_weights: dict[tuple, torch.Tensor] = {}

    def _weights_padded(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, str(device))
        wp = self._padded_weights.get(key)
        if wp is None:
            wp = self._pad(self.weights.to(device=device, dtype=dtype))
            self._padded_weights[key] = wp
        return wp

    def _apply(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        xb, lead = self._split(x)
        shape = tuple(xb.shape[1:])
        if shape != self.image_shape:
            raise InputError(
                f"image of shape {shape} does not match operator shape {self.image_shape}"
            )
        padded, fft_shape = self._geometry(shape)
        dims = tuple(range(2, self.ndim + 2))
        otf = self._otf(fft_shape, xb.dtype, xb.device)[None]
        wp = self._weights_padded(xb.dtype, xb.device)[None]
        crop = (slice(None), *self._crop_slices(shape))
        if not adjoint:
            xp = self._pad(xb)[:, None] * wp
            spec = (torch.fft.rfftn(xp, s=fft_shape, dim=dims) * otf).sum(1)
            z = torch.fft.irfftn(spec, s=fft_shape, dim=tuple(d - 1 for d in dims))
            out = z[crop]
        else:
            yp = xb.new_zeros((xb.shape[0], *fft_shape))
            yp[crop] = xb
            spec = torch.fft.rfftn(yp, dim=tuple(d - 1 for d in dims))[:, None] * otf.conj()
            z = torch.fft.irfftn(spec, s=fft_shape, dim=dims)
            z = z[(slice(None), slice(None), *(slice(0, p) for p in padded))]
            out = self._pad_adjoint((z * wp).sum(1), shape)
        return out.reshape(*lead, *shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` (``(..., *image_shape)``) with the space-varying PSF."""
        return self._apply(x, adjoint=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint operator to ``y``."""
        return self._apply(y, adjoint=True)

    __call__ = forward
