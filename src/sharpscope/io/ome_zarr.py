"""OME-Zarr (OME-NGFF 0.4 on zarr v2, 0.5 on zarr v3) read lazily and written as a pyramid.

Reading follows the metadata: the multiscales' ``axes`` (names ``t c z y x``),
the dataset paths (``s0``/``s1``/... as ome-zarr 0.17+ writes them, ``0``/``1``/...
as older writers do: whatever ``datasets[i].path`` says), the ``scale``
transformations with their units (pixel sizes in micrometres) and the
``omero`` channel labels (``Image.metadata['channel_names']``).  A bare zarr
array (no multiscales) is read with guessed axes.

Writing stores the full-resolution array as dataset ``s0`` and a pyramid of
2x2 means over Y and X (``s1``, ``s2``, ...), the axes in NGFF order
(``T C Z Y X``, a subsequence; other orders are transposed), units of
micrometres and channel labels.  The store is written under a temporary name
and renamed when complete (:func:`sharpscope.io.atomic.atomic_dir`), and the
multiscales metadata are its last write: a crashed or interrupted run never
leaves a store that looks complete.  The pixels may be a dask array: each
level is written chunk by chunk (level ``k + 1`` is read back from level
``k``), so memory is bounded by the chunks, not by the image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.errors import AxesError, InputError
from sharpscope.io._common import _to_float, _unit_to_um
from sharpscope.io.atomic import atomic_dir
from sharpscope.io.axes import SPATIAL_AXES, guess_axes, validate_axes

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
"""Folder name suffixes read and written as OME-Zarr (case-insensitive)."""

NGFF_VERSIONS = ("0.4", "0.5")
"""OME-NGFF versions written: 0.4 (zarr v2 storage) and 0.5 (zarr v3)."""

DEFAULT_VERSION = "0.4"
"""The version written unless asked otherwise (read by the most tools today)."""

NGFF_ORDER = "TCZYX"
_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
# the coarsest pyramid level is at most this large along Y and X (or 8 levels)
PYRAMID_MIN = 256
MAX_LEVELS = 8
DEFAULT_CHUNK_YX = 512


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """True when the name ends in ``.zarr`` (``.ome.zarr`` included).

    Examples
    --------
    >>> is_zarr_path("big.ome.zarr"), is_zarr_path("big.tif")
    (True, False)
    """
    return os.fspath(path).rstrip("/" + os.sep).lower().endswith(".zarr")


# --------------------------------------------------------------------------- read


def _multiscales(attrs: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None, Any]:
    """(first multiscale, NGFF version, omero block) of a group's attributes."""
    if isinstance(attrs.get("ome"), Mapping):  # 0.5: everything under "ome"
        ome = attrs["ome"]
        ms = ome.get("multiscales") or []
        return (dict(ms[0]) if ms else None), str(ome.get("version", "0.5")), ome.get("omero")
    ms = attrs.get("multiscales") or []
    if not ms:
        return None, None, attrs.get("omero")
    first = dict(ms[0])
    return first, str(first.get("version", "0.4")), attrs.get("omero")


def _axis_letters(axes: Sequence[Any], where: str) -> str:
    out = []
    for ax in axes:
        name = ax.get("name") if isinstance(ax, Mapping) else ax
        letter = str(name).strip().upper()
        if letter not in NGFF_ORDER:
            raise AxesError(f"{where}: axis {name!r} has no equivalent in STCZYX; pass axes=")
        out.append(letter)
    return "".join(out)


def _scales(ms: Mapping[str, Any], dataset: Mapping[str, Any], ndim: int) -> np.ndarray:
    """Product of the multiscale-wide and the dataset's ``scale`` transformations."""
    scale = np.ones(ndim)
    for block in (dataset.get("coordinateTransformations"), ms.get("coordinateTransformations")):
        for tr in block or []:
            if isinstance(tr, Mapping) and tr.get("type") == "scale" and "scale" in tr:
                values = [float(v) for v in tr["scale"]]
                if len(values) == ndim:
                    scale = scale * np.asarray(values)
    return scale


def _pixel_size(ms: Mapping[str, Any], axes_meta: Sequence[Any], letters: str, scale) -> dict:
    out: dict[str, float] = {}
    for ax, letter, s in zip(axes_meta, letters, scale, strict=True):
        if letter not in SPATIAL_AXES:
            continue
        unit = ax.get("unit") if isinstance(ax, Mapping) else None
        if unit is None:
            if s == 1.0:  # an uncalibrated image (what ome-zarr writes by default)
                continue
            factor = 1.0
        else:
            factor = _unit_to_um(unit)
            if factor is None:
                continue
        value = _to_float(s * factor)
        if value is not None:
            out[letter] = value
    return out


def open_ome_zarr(path: str | os.PathLike[str], level: int = 0):
    """Open an OME-Zarr image (or a bare zarr array) without reading its pixels.

    Parameters
    ----------
    path : path-like
        The store folder (``.ome.zarr`` or ``.zarr``).
    level : int
        Pyramid level (0: full resolution).

    Returns
    -------
    (zarr.Array, str, dict, dict)
        The array, its axes (``TCZYX`` letters), pixel sizes in micrometres
        (of that level) and metadata (``'format'``, ``'ngff_version'``,
        ``'levels'``, ``'dataset_paths'``, ``'channel_names'`` when present).

    Raises
    ------
    InputError
        Not a zarr store, or no such level.
    AxesError
        Axes outside ``TCZYX``.
    """
    import zarr

    p = Path(path)
    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception as exc:
        raise InputError(f"{p}: not a zarr store ({' '.join(str(exc).split())})") from None
    if isinstance(node, zarr.Array):
        meta = {"format": "zarr", "levels": 1}
        return node, guess_axes(node.ndim), {}, meta
    ms, version, omero = _multiscales(node.attrs.asdict())
    if ms is None:
        raise InputError(f"{p}: a zarr group without OME multiscales metadata")
    datasets = list(ms.get("datasets") or [])
    if not datasets:
        raise InputError(f"{p}: the multiscales metadata list no datasets")
    if not 0 <= level < len(datasets):
        raise InputError(f"{p}: no pyramid level {level} (it has {len(datasets)})")
    paths = [str(d["path"]) for d in datasets]
    try:
        arr = node[paths[level]]
    except KeyError:
        raise InputError(f"{p}: dataset {paths[level]!r} named in the metadata is missing") from None
    axes_meta = list(ms.get("axes") or [])
    if axes_meta:
        letters = _axis_letters(axes_meta, str(p))
    else:  # NGFF 0.1/0.2: always 5-D TCZYX
        letters = NGFF_ORDER[-arr.ndim :]
        axes_meta = list(letters.lower())
    if len(letters) != arr.ndim:
        raise AxesError(f"{p}: {len(letters)} axes in the metadata for a {arr.ndim}-D array")
    validate_axes(letters, arr.ndim)
    pixel_size = _pixel_size(ms, axes_meta, letters, _scales(ms, datasets[level], arr.ndim))
    meta: dict[str, Any] = {
        "format": "ome-zarr",
        "ngff_version": version,
        "levels": len(datasets),
        "dataset_paths": paths,
    }
    if "C" in letters and isinstance(omero, Mapping):
        labels = [
            str(ch.get("label", "")) if isinstance(ch, Mapping) else ""
            for ch in omero.get("channels") or []
        ]
        if len(labels) == arr.shape[letters.index("C")]:
            meta["channel_names"] = labels
    return arr, letters, pixel_size, meta


def read_zarr(p: Path, lazy: bool = False, level: int = 0):
    """``(data, axes, pixel_size, meta, literal)`` for :func:`sharpscope.io.read_image`."""
    arr, axes, pixel_size, meta = open_ome_zarr(p, level=level)
    if lazy:
        import dask.array as da

        data = da.from_zarr(arr)
    else:
        data = arr[...]
    return data, axes, pixel_size, meta, True


# -------------------------------------------------------------------------- write


def _default_chunks(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    return tuple(
        min(n, DEFAULT_CHUNK_YX) if a in "YX" else 1 for n, a in zip(shape, axes, strict=True)
    )


def pyramid_levels(shape_yx: tuple[int, int], levels: int | None = None) -> int:
    """How many levels a pyramid gets: halving Y and X until both are <= PYRAMID_MIN.

    Examples
    --------
    >>> pyramid_levels((64, 64)), pyramid_levels((2048, 1000)), pyramid_levels((64, 64), 3)
    (1, 4, 3)
    """
    if levels is not None:
        n = int(levels)
        if n < 1:
            raise InputError(f"a pyramid has at least 1 level, got {levels}")
        return n
    h, w = shape_yx
    n = 1
    while max(h, w) > PYRAMID_MIN and min(h, w) >= 2 and n < MAX_LEVELS:
        h, w = h // 2, w // 2
        n += 1
    return n


def _downsample(x, axes: str, dtype: np.dtype):
    """2x2 mean over Y and X (odd trailing rows/columns dropped), in ``dtype``."""
    import dask.array as da

    factors = {axes.index("Y"): 2, axes.index("X"): 2}
    down = da.coarsen(np.mean, x.astype(np.float64), factors, trim_excess=True)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return da.clip(da.rint(down), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return down >= 0.5
    return down.astype(dtype)


def _axes_meta(axes: str, calibrated: str) -> list[dict[str, str]]:
    """NGFF axes; a unit only on the ``calibrated`` ones (scale 1 without unit: unknown)."""
    out = []
    for a in axes:
        entry = {"name": a.lower(), "type": _TYPES[a]}
        if a in calibrated:
            entry["unit"] = "micrometer"
        out.append(entry)
    return out


def write_ome_zarr(
    path: str | os.PathLike[str],
    data: Any,
    axes: str,
    pixel_size: Mapping[str, float] | None = None,
    channel_names: Sequence[str] | None = None,
    chunks: Sequence[int] | None = None,
    levels: int | None = None,
    version: str = DEFAULT_VERSION,
    compute: Callable[[Any], None] | None = None,
) -> Path:
    """Write an image as an OME-Zarr pyramid, atomically.

    Parameters
    ----------
    path : path-like
        Destination folder (``.ome.zarr``); replaced when it exists.
    data : numpy.ndarray or dask.array.Array
        The pixels; a dask array is written chunk by chunk.
    axes : str
        Axes of ``data``: any order of a subset of ``TCZYX`` (stored in that
        order).  OME-Zarr has no sample axis ``S``.
    pixel_size : dict, optional
        Micrometres per pixel for ``'Z'``, ``'Y'``, ``'X'`` (of ``s0``; the
        pyramid levels scale Y and X by 2 each).
    channel_names : sequence of str, optional
        One label per channel (``omero`` metadata); needs a ``C`` axis.
    chunks : sequence of int, optional
        Chunk shape in the order of ``axes`` (default: 1 along T, C, Z and
        up to 512 along Y and X).  A dask array is rechunked to it.
    levels : int, optional
        Pyramid levels including full resolution (default: halve until Y and
        X are at most 256).
    version : {'0.4', '0.5'}
        OME-NGFF version: 0.4 on zarr v2, 0.5 on zarr v3.
    compute : callable, optional
        Called with a list of dask objects, one per chunk of a level, which
        it must compute (default :func:`dask.compute`); a cluster client with
        progress and retries goes here
        (:class:`sharpscope.parallel.Runner`).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    AxesError
        An ``S`` axis or invalid axes.
    InputError
        Bad version, chunks, channel names, or a write failure.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.ome.zarr"
    >>> _ = write_ome_zarr(p, np.zeros((2, 64, 64), np.uint16), "CYX", {"X": 0.1, "Y": 0.1},
    ...                    channel_names=["dapi", "gfp"], levels=2)
    >>> arr, axes, px, meta = open_ome_zarr(p)
    >>> axes, px["X"], meta["channel_names"], meta["dataset_paths"]
    ('CYX', 0.1, ['dapi', 'gfp'], ['s0', 's1'])
    """
    import dask
    import dask.array as da
    import zarr

    from sharpscope.io.axes import _check_pixel_size

    dest = Path(path)
    if version not in NGFF_VERSIONS:
        raise InputError(f"OME-NGFF version must be one of {', '.join(NGFF_VERSIONS)}, got {version!r}")
    axes = validate_axes(axes, data.ndim)
    if "S" in axes:
        raise AxesError("OME-Zarr has no sample axis 'S'; write .tif or .npz instead")
    px = _check_pixel_size(pixel_size, axes)
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "buif":
        raise InputError(f"cannot write pixels of type {dtype} to {dest}")
    if chunks is not None:
        chunks = tuple(int(c) for c in chunks)
        if len(chunks) != len(axes) or min(chunks) < 1:
            raise InputError(f"chunks {chunks} must give one positive size per axis of {axes!r}")
    else:
        chunks = _default_chunks(tuple(data.shape), axes)
    order = [axes.index(a) for a in NGFF_ORDER if a in axes]
    out_axes = "".join(axes[i] for i in order)
    chunks = tuple(min(chunks[i], data.shape[i]) for i in order)
    if channel_names is not None:
        names = [str(n) for n in channel_names]
        if "C" not in axes or len(names) != data.shape[axes.index("C")]:
            raise InputError(
                f"{len(names)} channel names for an image with axes {axes!r} and shape "
                f"{tuple(data.shape)}; give one per channel"
            )
    else:
        names = None
    x = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=chunks)
    x = da.transpose(x, order) if order != sorted(order) else x
    if not _aligned(x.chunks, chunks):
        x = x.rechunk(chunks)
    n_levels = pyramid_levels(
        (x.shape[out_axes.index("Y")], x.shape[out_axes.index("X")]), levels
    )
    run = compute or (lambda objs: dask.compute(*objs))  # noqa: E731
    zarr_format = 2 if version == "0.4" else 3
    base = [px.get(a, 1.0) if a in SPATIAL_AXES else 1.0 for a in out_axes]
    with atomic_dir(dest) as tmp:
        try:
            root = zarr.open_group(store=str(tmp), mode="w", zarr_format=zarr_format)
            datasets = []
            level_data = x
            for k in range(n_levels):
                name = f"s{k}"
                extra: dict[str, Any] = {}
                if zarr_format == 2:
                    extra["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
                else:
                    extra["dimension_names"] = [a.lower() for a in out_axes]
                level_chunks = tuple(min(c, n) for c, n in zip(chunks, level_data.shape, strict=True))
                arr = root.create_array(
                    name, shape=level_data.shape, dtype=dtype, chunks=level_chunks, **extra
                )
                if not _aligned(level_data.chunks, level_chunks):
                    level_data = level_data.rechunk(level_chunks)
                run(_store_parts(level_data, arr, name))
                factor = [2.0**k if a in "YX" else 1.0 for a in out_axes]
                datasets.append(
                    {
                        "path": name,
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [b * f for b, f in zip(base, factor, strict=True)]}
                        ],
                    }
                )
                if k + 1 < n_levels:
                    level_data = _downsample(da.from_zarr(arr), out_axes, dtype)
            multiscale = {"axes": _axes_meta(out_axes, "".join(px)), "datasets": datasets, "name": dest.name}
            if zarr_format == 2:
                multiscale["version"] = version
            omero = None
            if names is not None:
                omero = {"channels": [_channel(n, arr, out_axes, i) for i, n in enumerate(names)]}
            if zarr_format == 2:
                attrs: dict[str, Any] = {"multiscales": [multiscale]}
                if omero is not None:
                    attrs["omero"] = omero
            else:
                ome: dict[str, Any] = {"version": version, "multiscales": [multiscale]}
                if omero is not None:
                    ome["omero"] = omero
                attrs = {"ome": ome}
            root.attrs.update(attrs)  # the last write: the store is now complete
        except (InputError, AxesError):
            raise
        except OSError as exc:
            raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return dest


def _aligned(dask_chunks: tuple[tuple[int, ...], ...], zarr_chunks: tuple[int, ...]) -> bool:
    """Whether every dask chunk covers whole zarr chunks (so that no two tasks share one)."""
    for sizes, c in zip(dask_chunks, zarr_chunks, strict=True):
        edges = np.cumsum(sizes)[:-1]
        if np.any(edges % c):
            return False
    return True


def _store_block(block: np.ndarray, arr: Any, block_info: Any = None) -> np.ndarray:
    """Write one chunk into the zarr array; a tiny placeholder is the task's result."""
    loc = block_info[0]["array-location"]
    arr[tuple(slice(a, b) for a, b in loc)] = block
    return np.zeros((1,) * block.ndim, dtype=bool)


def _store_parts(x: Any, arr: Any, name: str) -> list:
    """One delayed write per chunk of ``x`` (chunks aligned with those of ``arr``)."""
    import dask
    import dask.array as da

    target = dask.delayed(arr, pure=True, name=f"zarr-target-{name}-{id(arr):x}")
    stored = x.map_blocks(
        _store_block,
        arr=target,
        chunks=tuple((1,) * len(c) for c in x.chunks),
        dtype=bool,
        meta=np.empty((0,) * x.ndim, bool),
        name=f"store-{name}-{dask.base.tokenize(x)}",
    )
    assert isinstance(stored, da.Array)
    return list(stored.to_delayed().ravel())


def _channel(name: str, coarse, axes: str, index: int) -> dict[str, Any]:
    """An ``omero`` channel: label, white, display window from the coarsest level."""
    plane = np.asarray(coarse[(slice(None),) * axes.index("C") + (index,)])
    lo, hi = (float(plane.min()), float(plane.max())) if plane.size else (0.0, 1.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    return {
        "label": name,
        "color": "FFFFFF",
        "active": True,
        "window": {"min": lo, "max": hi, "start": lo, "end": hi},
    }
