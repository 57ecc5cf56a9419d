"""Whole-image prediction by overlapping tiles with smooth blending.

The image is padded at its bottom/right edge (reflect) to a multiple of the
network's size multiple, cut into a grid of equal tiles whose corners lie on
that multiple (so strided decimation inside the network sees the same pixel
phase in every tile), and the tile outputs are blended with separable
windows:

* on a side shared with a neighbouring tile the weight rises as a raised
  cosine across the central quarter of the overlap; the outer 3/8 next to
  the tile edge - where a convolution network sees its zero padding - keep
  only a tiny positive floor, so every output pixel comes from tiles in which
  it lies at least 3/8 of the overlap away from an edge;
* on a side at the image border the weight stays 1, so the image border is
  neither zeroed nor biased.

Opposite ramps of two neighbours sum to one; the blend is divided by the
summed weights anyway, which are strictly positive everywhere.

Choose the overlap to cover the network's effective receptive field, which
for trained m-rBCR networks is wide: with the published DeBCR ``bright_SR``
weights, tiles of 512 with an overlap of 160 pixels keep a 1024x1024 result
within 4e-4 of the output range of a single pass over the whole image, while
an overlap of 32 leaves seams of tenths of the range.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sharpscope.errors import ConfigError, InputError

FLOOR = 1e-6
"""Weight of the pixels next to a shared tile edge (strictly positive)."""

MARGIN = 0.375
"""Fraction of an overlap, on each side, kept at :data:`FLOOR` before the ramp starts."""


class PreferredOverlap(int):
    """An overlap that is a wish, not a demand: reduced when the tile is too small for it.

    A model header's overlap is what the network's receptive field needs;
    when a user asks only for a smaller tile, :func:`predict_tiled` keeps
    the wish where it fits and otherwise uses :func:`fit_overlap`.  An
    overlap given as a plain ``int`` is used as it is (or refused).

    Examples
    --------
    >>> PreferredOverlap(160) == 160
    True
    """


def fit_overlap(tile: int, overlap: int, multiple: int = 1) -> int:
    """The overlap to use with tiles of ``tile`` pixels when ``overlap`` is wished for.

    ``overlap`` itself when it is at most half the tile; else half the tile,
    rounded down to ``multiple`` (each pixel is then computed about four
    times, instead of the sixteen or more of a nearly full overlap).

    Examples
    --------
    >>> fit_overlap(512, 160), fit_overlap(128, 160, 4), fit_overlap(100, 96, 8)
    (160, 64, 48)
    """
    tile, overlap, multiple = int(tile), int(overlap), max(1, int(multiple))
    half = ((tile // multiple) * multiple) // 2
    if overlap <= half:
        return overlap
    return max(0, (half // multiple) * multiple)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        out = (int(value), int(value))
    else:
        vals = tuple(int(v) for v in value)
        if len(vals) != 2:
            raise ConfigError(f"{name} must be an int or a pair (h, w), got {value!r}")
        out = (vals[0], vals[1])
    return out


@dataclass(frozen=True)
class Axis1D:
    """Tile layout along one axis of the padded image."""

    size: int  # padded length
    tile: int  # tile length (<= size)
    starts: tuple[int, ...]
    windows: tuple[np.ndarray, ...]  # float64 weights, one per tile


def _ramp(length: int) -> np.ndarray:
    """Rising weights over an overlap of ``length`` pixels (floor, cosine, one)."""
    margin = int(length * MARGIN)
    core = length - 2 * margin
    t = (np.arange(core) + 0.5) / core
    rise = np.sin(0.5 * np.pi * t) ** 2
    out = np.concatenate([np.zeros(margin), rise, np.ones(margin)])
    return np.maximum(out, FLOOR)


def layout_axis(size: int, tile: int, overlap: int, multiple: int) -> Axis1D:
    """Tile starts and blending windows along one axis.

    Parameters
    ----------
    size : int
        Length of the (padded) axis; a multiple of ``multiple``.
    tile : int
        Largest tile length (rounded down to ``multiple``, at least
        ``multiple``).  The fewest tiles of this length that cover the axis
        with the overlap are used, then shrunk to the smallest common length
        that still covers it (less work, same overlap).
    overlap : int
        Minimum overlap between neighbouring tiles.
    multiple : int
        Tile starts and lengths are multiples of this.

    Returns
    -------
    Axis1D

    Examples
    --------
    >>> ax = layout_axis(100, 48, 16, 4)
    >>> ax.tile, ax.starts
    (44, (0, 28, 56))
    """
    t = max(multiple, (tile // multiple) * multiple)
    if t >= size:
        return Axis1D(size, size, (0,), (np.ones(size),))
    stride = ((t - overlap) // multiple) * multiple
    if stride < multiple:
        raise ConfigError(
            f"overlap {overlap} leaves no room to advance tiles of {t} pixels; "
            "use a smaller overlap or a larger tile"
        )
    n = math.ceil((size - t) / stride) + 1
    # shrink the tiles while n of them still cover the axis with the overlap
    while t > multiple:
        smaller = t - multiple
        step = ((smaller - overlap) // multiple) * multiple
        if step < multiple or (n - 1) * step < size - smaller:
            break
        t = smaller
    units = (size - t) // multiple
    starts = tuple((i * units // (n - 1)) * multiple for i in range(n))
    windows = []
    for i, s in enumerate(starts):
        w = np.ones(t)
        if i > 0:
            left = starts[i - 1] + t - s  # overlap with the previous tile
            w[:left] *= _ramp(left)
        if i < n - 1:
            right = s + t - starts[i + 1]  # overlap with the next tile
            w[t - right :] *= _ramp(right)[::-1]
        windows.append(w)
    return Axis1D(size, t, starts, tuple(windows))


def _pad_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Reflect-pad the last two axes at the end up to ``shape``."""
    ph, pw = shape[0] - image.shape[-2], shape[1] - image.shape[-1]
    if ph == 0 and pw == 0:
        return image
    widths = [(0, 0)] * (image.ndim - 2) + [(0, ph), (0, pw)]
    mode = "reflect" if min(image.shape[-2:]) > 1 else "symmetric"
    return np.pad(image, widths, mode=mode)


def tile_grid(
    shape: tuple[int, int],
    tile: int | Sequence[int],
    overlap: int | Sequence[int],
    multiple: int = 1,
) -> tuple[Axis1D, Axis1D]:
    """The tile layout of :func:`predict_tiled` for an image of ``shape`` (rows, columns).

    The image is first padded up to a multiple of ``multiple``; the returned
    axes describe that padded grid (``Axis1D.size``).  Checks the options
    exactly as :func:`predict_tiled` does; the chunked path of
    :mod:`sharpscope.parallel` uses the same grid, so both give the same result.

    Examples
    --------
    >>> ay, ax = tile_grid((50, 70), tile=32, overlap=8, multiple=4)
    >>> ay.size, ax.size, len(ay.starts), len(ax.starts)
    (52, 72, 2, 3)
    """
    th, tw = _pair(tile, "tile")
    oh, ow = _pair(overlap, "overlap")
    multiple = int(multiple)
    if multiple < 1:
        raise ConfigError(f"multiple must be >= 1, got {multiple}")
    if min(th, tw) < 1:
        raise ConfigError(f"tile size must be positive, got {tile!r}")
    if isinstance(overlap, PreferredOverlap):
        oh, ow = fit_overlap(th, oh, multiple), fit_overlap(tw, ow, multiple)
    if min(oh, ow) < 0:
        raise ConfigError(f"overlap must be >= 0, got {overlap!r}")
    if oh >= th or ow >= tw:
        raise ConfigError(f"overlap {overlap!r} must be smaller than the tile {tile!r}")
    ph = -(-int(shape[0]) // multiple) * multiple
    pw = -(-int(shape[1]) // multiple) * multiple
    return layout_axis(ph, th, oh, multiple), layout_axis(pw, tw, ow, multiple)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def predict_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    tile: int | Sequence[int] = (256, 256),
    overlap: int | Sequence[int] = (32, 32),
    batch_size: int = 8,
    multiple: int = 4,
    progress: bool = False,
    device: str | torch.device | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """Apply a 2-D image-to-image function to a whole image tile by tile.

    Parameters
    ----------
    fn : callable
        Maps a float32 tensor ``(B, 1, h, w)`` to a tensor of the same shape
        (e.g. the full-resolution output of a network).  Called under
        :func:`torch.no_grad`.
    image : numpy.ndarray
        ``(H, W)`` or ``(N, H, W)`` (N planes processed independently); any H,
        W >= 1.
    tile : int or (int, int)
        Tile size; rounded down to ``multiple``.  An image smaller than a tile
        is processed as one tile of its own (padded) size.
    overlap : int or (int, int)
        Minimum overlap between neighbouring tiles; should cover the
        function's receptive field for seamless results.  A
        :class:`PreferredOverlap` (what a model header gives) is reduced by
        :func:`fit_overlap` when the tile is too small for it; a plain int
        must be smaller than the tile.
    batch_size : int
        Tiles per call of ``fn``; bounds the memory used.
    multiple : int
        The function needs H, W divisible by this (the network's
        ``size_multiple``); the image is reflect-padded internally and the
        output cropped back.
    progress : bool
        Show a tqdm progress bar (one step per tile) on stderr.
    device : str or torch.device, optional
        Where tiles are sent before calling ``fn`` (default: CPU).
    desc : str, optional
        Label of the progress bar.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``image``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).random((50, 70), dtype=np.float32)
    >>> out = predict_tiled(lambda t: 2 * t, img, tile=32, overlap=8)
    >>> out.shape, bool(np.allclose(out, 2 * img))
    ((50, 70), True)
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise InputError(f"predict_tiled takes (H, W) or (N, H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"image is empty (shape {arr.shape})")
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[None]
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    multiple = int(multiple)
    n, h, w = arr.shape
    ay, ax = tile_grid((h, w), tile, overlap, multiple)
    ph, pw = ay.size, ax.size
    padded = _pad_to(arr, (ph, pw))

    weight = np.zeros((ph, pw), dtype=np.float64)
    for ys, wy in zip(ay.starts, ay.windows, strict=True):
        for xs, wx in zip(ax.starts, ax.windows, strict=True):
            weight[ys : ys + ay.tile, xs : xs + ax.tile] += np.outer(wy, wx)
    acc = np.zeros((n, ph, pw), dtype=np.float32)

    def jobs() -> Iterator[tuple[int, int, int, np.ndarray]]:
        for k in range(n):
            for iy, wy in enumerate(ay.windows):
                for ix, wx in enumerate(ax.windows):
                    yield k, iy, ix, np.outer(wy, wx).astype(np.float32)


    total = n * len(ay.starts) * len(ax.starts)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, file=sys.stderr, desc=desc, unit="tile")
    else:  # no tqdm at all: in a notebook without ipywidgets even a disabled bar warns
        bar = _NoBar()
    try:
        batch: list[tuple[int, int, int, np.ndarray]] = []
        for job in jobs():
            batch.append(job)
            if len(batch) == batch_size:
                _run_batch(fn, batch, padded, acc, ay, ax, dev)
                bar.update(len(batch))
                batch = []
        if batch:
            _run_batch(fn, batch, padded, acc, ay, ax, dev)
            bar.update(len(batch))
    finally:
        bar.close()

    acc /= weight.astype(np.float32)[None]
    out = acc[:, :h, :w]
    out = np.ascontiguousarray(out)
    return out[0] if squeeze else out


def _run_batch(fn, batch, padded, acc, ay: Axis1D, ax: Axis1D, dev: torch.device) -> None:
    tiles = np.stack(
        [
            padded[k, ay.starts[iy] : ay.starts[iy] + ay.tile, ax.starts[ix] : ax.starts[ix] + ax.tile]
            for k, iy, ix, _ in batch
        ]
    )[:, None]
    x = torch.from_numpy(np.ascontiguousarray(tiles)).to(dev)
    with torch.no_grad():
        y = fn(x)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise RuntimeError(f"tile function returned {shape}, expected {tuple(x.shape)}")
    out = y.detach().to("cpu", torch.float32).numpy()
    for j, (k, iy, ix, win) in enumerate(batch):
        ys, xs = ay.starts[iy], ax.starts[ix]
        acc[k, ys : ys + ay.tile, xs : xs + ax.tile] += out[j, 0] * win
