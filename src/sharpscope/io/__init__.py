"""Reading and writing microscopy images with their axes and pixel size.

One entry point: :func:`read_image` and :func:`write_image` choose the format
module (``tiff``, ``npz``, ``png``) from the file name suffix; ``axes`` holds the
axes strings and ``atomic`` the atomic writes every writer goes through.

Supported formats (chosen from the file name suffix):

``.tif`` / ``.tiff``
    Plain TIFF, ImageJ hyperstacks and tifffile "shaped" TIFFs.  Written as an
    ImageJ hyperstack when the axes are in ImageJ order (a subsequence of
    ``TZCYX``) and the dtype is uint8, uint16 or float32; otherwise as a shaped
    TIFF whose JSON description records the axes and pixel sizes.
``.ome.tif`` / ``.ome.tiff``
    OME-TIFF (``PhysicalSizeX/Y/Z`` in the OME-XML).
``.npz``
    The DeBCR layout: arrays under ``'low'`` and ``'gt'`` (``'low'`` is read
    unless ``key=`` picks another).  Arrays are labelled, never reshaped: a
    3-D array is a stack of 2-D samples ``SYX`` and the DeBCR ``NHWC`` layout
    with a trailing channel of 1 is ``SYXC`` (``SCYX`` for ``NCHW``).  Files
    written here store the axes and pixel size in a ``'__sharpscope__'`` JSON
    entry, which takes precedence over the guess.
``.npy``
    A bare array (axes guessed as for TIFF).
``.png`` / ``.jpg`` / ``.jpeg``
    Via pillow.  Grey images are ``YX``; colour images (RGB, RGBA, grey +
    alpha) keep their channels last: ``YXC``.  The axes and pixel size are
    kept in a PNG text chunk / JPEG comment written by :func:`write_image`.
``.ome.zarr`` / ``.zarr`` (folders)
    OME-Zarr, OME-NGFF 0.4 (zarr v2) or 0.5 (zarr v3): axes, pixel sizes
    and channel names from the metadata; written as a pyramid
    (:mod:`sharpscope.io.ome_zarr`).  Needs the ``zarr`` extra.

``read_image(path, lazy=True)`` returns a dask array that reads only what is
computed: OME-Zarr chunks, TIFF pages/strips/tiles (tifffile's
``aszarr=True``) and memory-mapped ``.npy``; the other formats are read whole.

Axes strings use the ``STCZYX`` alphabet (sample, time, channel, z, y, x);
every image has a ``Y`` and an ``X`` axis.  Pixel sizes are in micrometres and
keyed by spatial axis (``'Z'``, ``'Y'``, ``'X'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.errors import AxesError, InputError
from sharpscope.io._common import NPZ_META_KEY, Image, _one_line
from sharpscope.io.atomic import atomic_dir, atomic_write
from sharpscope.io.axes import (
    AXES_ALPHABET,
    SPATIAL_AXES,
    _check_pixel_size,
    _map_tiff_axes,
    _rekey_pixel_size,
    guess_axes,
    validate_axes,
)
from sharpscope.io.npz import _read_npy, _read_npz, _write_npz
from sharpscope.io.ome_zarr import ZARR_SUFFIXES, is_zarr_path, read_zarr, write_ome_zarr
from sharpscope.io.png import _read_pil, _write_jpeg, _write_png
from sharpscope.io.tiff import _read_tiff, _write_ome, _write_tiff

__all__ = [
    "AXES_ALPHABET",
    "IMAGE_SUFFIXES",
    "NPZ_META_KEY",
    "SPATIAL_AXES",
    "WRITE_SUFFIXES",
    "ZARR_SUFFIXES",
    "Image",
    "atomic_dir",
    "atomic_write",
    "guess_axes",
    "is_image_file",
    "is_zarr_path",
    "read_image",
    "validate_axes",
    "write_image",
    "write_ome_zarr",
]

IMAGE_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npz", ".npy", ".png", ".jpg", ".jpeg")
"""File name suffixes :func:`read_image` understands (case-insensitive)."""

WRITE_SUFFIXES = (
    ".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npz", ".png", ".jpg", ".jpeg", ".ome.zarr", ".zarr"
)
"""File name suffixes :func:`write_image` can write (case-insensitive; ``.zarr`` are folders)."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in ZARR_SUFFIXES + IMAGE_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name has a suffix :func:`read_image` understands.

    Examples
    --------
    >>> is_image_file("cells.ome.tif"), is_image_file("notes.txt")
    (True, False)
    """
    return _suffix(Path(path)) in IMAGE_SUFFIXES or is_zarr_path(path)


# ------------------------------------------------------------------------- read


def read_image(
    path: str | os.PathLike[str],
    axes: str | None = None,
    key: str | None = None,
    lazy: bool = False,
) -> Image:
    """Read an image file with its axes and pixel size.

    Parameters
    ----------
    path : path-like
        A ``.tif``/``.tiff`` (plain, ImageJ, OME), ``.npz``, ``.npy``,
        ``.png``, ``.jpg`` or ``.jpeg`` file, or an ``.ome.zarr``/``.zarr``
        folder (full resolution).
    axes : str, optional
        Override the axes found in (or guessed from) the file; validated
        against the array's dimensions.  Pixel sizes follow the dimensions
        they belong to.
    key : str, optional
        For ``.npz``: the array to read (default ``'low'``, or the only array).
    lazy : bool
        Return the pixels as a :class:`dask.array.Array` that reads only the
        chunks computed (OME-Zarr chunks, TIFF pages, strips or tiles, a
        memory-mapped ``.npy``); other formats are read, then wrapped.

    Returns
    -------
    Image
        With ``metadata['channel_names']`` when the file names its channels
        (OME-Zarr).

    Raises
    ------
    InputError
        Missing, unreadable or corrupt file (the message names the path).
    AxesError
        Invalid ``axes``, or axes that cannot be guessed.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "stack.tif"
    >>> _ = write_image(p, np.ones((2, 4, 5), np.float32), "ZYX", {"X": 0.1, "Y": 0.1})
    >>> img = read_image(p)
    >>> img.axes, img.shape, img.pixel_size["X"]
    ('ZYX', (2, 4, 5), 0.1)
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    suffix = _suffix(p)
    if p.is_dir() and suffix not in ZARR_SUFFIXES:
        raise InputError(f"{p}: is a directory, not an image file")
    reader = _READERS.get(suffix) or _LAZY_READERS.get(suffix)
    if reader is None:
        raise InputError(
            f"{p}: unsupported file type {suffix or '(none)'!r} "
            f"(supported: {', '.join(IMAGE_SUFFIXES + ZARR_SUFFIXES)})"
        )
    if key is not None and suffix != ".npz":
        raise InputError(f"{p}: key= only applies to .npz files")
    try:
        if suffix in _LAZY_READERS:
            data, file_axes, pixel_size, meta, literal = _LAZY_READERS[suffix](p, key, lazy)
        else:
            data, file_axes, pixel_size, meta, literal = reader(p, key)
    except (InputError, AxesError):
        raise
    except ImportError as exc:
        raise InputError(
            f"{p}: reading this format needs {exc.name or 'a missing package'}; "
            "install sharpscope[zarr]"
        ) from None
    except MemoryError:
        raise InputError(f"{p}: not enough memory to read the image") from None
    except Exception as exc:  # any parser failure means a corrupt or unreadable file
        raise InputError(f"cannot read {p}: {_one_line(exc)}") from None

    if lazy:
        import dask.array as da

        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(data) if not isinstance(data, np.memmap) else data)
    else:
        data = np.asarray(data)
    meta = {"path": str(p), "file_axes": file_axes, **meta}
    if data.ndim < 2:
        raise InputError(f"{p}: an image needs at least 2 dimensions, got shape {data.shape}")
    if data.dtype.kind not in "buif":
        raise InputError(f"{p}: unsupported pixel type {data.dtype}")
    where = str(p)
    if axes is not None:
        try:
            new_axes = validate_axes(axes, data.ndim)
        except AxesError as exc:
            raise AxesError(f"{p}: {exc}") from None
        pixel_size = _rekey_pixel_size(pixel_size, file_axes, new_axes)
        return Image(data, new_axes, pixel_size, meta)
    if literal:
        mapped = file_axes
    else:
        mapped = _map_tiff_axes(file_axes, literal=False, where=where)
    try:
        final = validate_axes(mapped, data.ndim)
    except AxesError as exc:
        raise AxesError(f"{p}: {exc}; pass axes=") from None
    pixel_size = _rekey_pixel_size(pixel_size, file_axes, final)
    return Image(data, final, pixel_size, meta)


# ------------------------------------------------------------------------ write


def _cast(data: np.ndarray, dtype: Any) -> np.ndarray:
    """Convert to ``dtype``; integer targets are rounded and clipped to their range."""
    target = np.dtype(dtype)
    if target == data.dtype:
        return data
    if target.kind in "iu":
        info = np.iinfo(target)
        if data.dtype.kind == "f":
            out = np.rint(data)
            out = np.clip(out, info.min, info.max)
            return out.astype(target)
        if data.dtype.kind in "iu":
            return np.clip(data, info.min, info.max).astype(target)
        return data.astype(target)
    if target.kind == "f":
        if data.dtype.kind == "f" and target.itemsize < data.dtype.itemsize:
            finfo = np.finfo(target)
            return np.clip(data, finfo.min, finfo.max).astype(target)
        return data.astype(target)
    if target.kind == "b":
        return data.astype(bool)
    raise InputError(f"cannot write pixels as {target}")


def write_image(
    path: str | os.PathLike[str],
    data: np.ndarray,
    axes: str,
    pixel_size: Mapping[str, float] | None = None,
    dtype: Any = None,
    key: str | None = None,
    channel_names: Any = None,
) -> Path:
    """Write an image atomically; the format follows the file name suffix.

    Parameters
    ----------
    path : path-like
        Destination: ``.tif``/``.tiff`` (ImageJ hyperstack when the axes are a
        subsequence of ``TZCYX`` and the dtype is uint8/uint16/float32, a
        shaped TIFF otherwise), ``.ome.tif``/``.ome.tiff``, ``.npz``,
        ``.png`` (uint8, or uint16 grey), ``.jpg``/``.jpeg`` (uint8, lossy), or
        an ``.ome.zarr``/``.zarr`` folder (OME-NGFF 0.4 with a pyramid; see
        :func:`sharpscope.io.ome_zarr.write_ome_zarr` for more options).
    data : array_like
        The pixels (a dask array is written chunk by chunk to OME-Zarr).
    axes : str
        Axes of ``data`` (``STCZYX`` alphabet).
    pixel_size : dict, optional
        Micrometres per pixel for ``'Z'``, ``'Y'``, ``'X'``.
    dtype : dtype, optional
        Convert before writing; integer targets are rounded and clipped to the
        type's range.
    key : str, optional
        For ``.npz``: the array name (default ``'image'``).
    channel_names : sequence of str, optional
        For OME-Zarr: one label per channel of the ``C`` axis.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        Unsupported suffix or a dtype/axes the format cannot store.
    AxesError
        Invalid axes.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.ome.tif"
    >>> write_image(p, np.zeros((3, 4, 5), np.uint16), "TYX", {"X": 0.2, "Y": 0.2}).name
    't.ome.tif'
    """
    dest = Path(path)
    if _suffix(dest) in ZARR_SUFFIXES:
        if key is not None:
            raise InputError(f"{dest}: key= only applies to .npz files")
        if dtype is not None:
            data = _cast_any(data, dtype)
        try:
            return write_ome_zarr(dest, data, axes, pixel_size, channel_names=channel_names)
        except ImportError as exc:
            raise InputError(
                f"{dest}: writing OME-Zarr needs {exc.name or 'a missing package'}; "
                "install sharpscope[zarr]"
            ) from None
    if channel_names is not None:
        raise InputError(f"{dest}: channel_names= only applies to OME-Zarr (.ome.zarr)")
    arr = np.asarray(data)
    axes = validate_axes(axes, arr.ndim)
    if dtype is not None:
        arr = _cast(arr, dtype)
    if arr.dtype.kind not in "buif":
        raise InputError(f"cannot write pixels of type {arr.dtype} to {dest}")
    px = _check_pixel_size(pixel_size, axes)
    suffix = _suffix(dest)
    writer = _WRITERS.get(suffix)
    if writer is None:
        raise InputError(
            f"{dest}: cannot write file type {suffix or '(none)'!r} "
            f"(supported: {', '.join(WRITE_SUFFIXES)})"
        )
    if key is not None and suffix != ".npz":
        raise InputError(f"{dest}: key= only applies to .npz files")
    # format checks happen before anything touches the disk
    prepared = writer(None, arr, axes, px, key)
    with atomic_write(dest) as tmp:
        try:
            writer(tmp, arr, axes, px, key, prepared=prepared)
        except (InputError, AxesError):
            raise
        except OSError as exc:
            raise InputError(f"cannot write {dest}: {exc.strerror or _one_line(exc)}") from None
        except Exception as exc:
            raise InputError(f"cannot write {dest}: {_one_line(exc)}") from None
    return dest


def _cast_any(data: Any, dtype: Any) -> Any:
    """:func:`_cast` for numpy or (block by block) dask arrays."""
    if type(data).__module__.startswith("dask"):
        return data.map_blocks(_cast, dtype, dtype=np.dtype(dtype))
    return _cast(np.asarray(data), dtype)


def _read_npy_lazy(p: Path, key: str | None, lazy: bool):
    if not lazy:
        return _read_npy(p, key)
    data = np.load(p, allow_pickle=False, mmap_mode="r")
    if data.ndim < 2:
        raise InputError(f"{p}: an image needs at least 2 dimensions, got shape {data.shape}")
    return data, guess_axes(data.ndim), {}, {"format": "npy"}, True


# suffix -> reader / writer; IMAGE_SUFFIXES and WRITE_SUFFIXES list the same keys
_READERS = {
    ".ome.tif": _read_tiff,
    ".ome.tiff": _read_tiff,
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".npz": _read_npz,
    ".npy": _read_npy,
    ".png": _read_pil,
    ".jpg": _read_pil,
    ".jpeg": _read_pil,
}
_WRITERS = {
    ".ome.tif": _write_ome,
    ".ome.tiff": _write_ome,
    ".tif": _write_tiff,
    ".tiff": _write_tiff,
    ".npz": _write_npz,
    ".png": _write_png,
    ".jpg": _write_jpeg,
    ".jpeg": _write_jpeg,
}
assert tuple(_READERS) == IMAGE_SUFFIXES and tuple(_WRITERS) + ZARR_SUFFIXES == WRITE_SUFFIXES
# readers that can read lazily (take a third argument, lazy)
_LAZY_READERS = {
    ".ome.tif": _read_tiff,
    ".ome.tiff": _read_tiff,
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".npy": _read_npy_lazy,
    ".ome.zarr": lambda p, key, lazy: read_zarr(p, lazy=lazy),
    ".zarr": lambda p, key, lazy: read_zarr(p, lazy=lazy),
}
