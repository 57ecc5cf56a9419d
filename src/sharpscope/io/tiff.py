"""TIFF, ImageJ hyperstack and OME-TIFF reading and writing (through tifffile)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.errors import AxesError, InputError
from sharpscope.io._common import _META_KEY, _one_line, _to_float, _unit_to_um
from sharpscope.io.axes import SPATIAL_AXES


class _Collect(logging.Handler):
    """Collects log records (tifffile logs problems instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _quiet_tifffile(p: Path) -> Iterator[None]:
    """Keep tifffile's log messages off stderr; add them to a read error instead."""
    log = logging.getLogger("tifffile")
    handler = _Collect()
    old_propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    except InputError as exc:
        if handler.messages:
            raise InputError(f"{exc} ({handler.messages[-1]})") from None
        raise
    except (AxesError, MemoryError):
        raise
    except Exception as exc:
        detail = f" ({handler.messages[-1]})" if handler.messages else ""
        raise InputError(f"cannot read {p}: {_one_line(exc)}{detail}") from None
    finally:
        log.removeHandler(handler)
        log.propagate = old_propagate


def _read_tiff(p: Path, key: str | None, lazy: bool = False):
    with _quiet_tifffile(p):
        return _read_tiff_quietly(p, lazy)


def _read_tiff_quietly(p: Path, lazy: bool = False):
    import tifffile

    with tifffile.TiffFile(p) as tif:
        if not tif.series:
            raise InputError(f"{p}: the TIFF file holds no image")
        series = tif.series[0]
        raw_axes = series.axes.upper()
        data = lazy_tiff(p, raw_axes) if lazy else series.asarray()
        page = series.pages[0] if series.pages else tif.pages[0]
        pixel_size: dict[str, float] = {}
        meta: dict[str, Any] = {"format": "tiff"}
        shaped_meta = None
        if len(tif.series) > 1:
            meta["n_series"] = len(tif.series)

        if tif.is_ome and tif.ome_metadata:
            meta["format"] = "ome-tiff"
            pixel_size = _ome_pixel_size(tif.ome_metadata)
            optics = ome_optics(tif.ome_metadata)
            if optics:
                meta["optics"] = optics
        elif tif.is_imagej:
            meta["format"] = "imagej"
            ij = tif.imagej_metadata or {}
            scale = _unit_to_um(ij.get("unit"))
            if scale is not None:
                res = _page_resolution(page)
                if res is not None:
                    pixel_size["X"] = scale / res[0]
                    pixel_size["Y"] = scale / res[1]
                spacing = _to_float(ij.get("spacing"))
                if spacing is not None and "Z" in raw_axes:
                    pixel_size["Z"] = spacing * scale
        else:
            if tif.is_shaped and tif.shaped_metadata:
                shaped_meta = tif.shaped_metadata[0]
            if isinstance(shaped_meta, dict) and isinstance(shaped_meta.get(_META_KEY), dict):
                stored = shaped_meta[_META_KEY].get("pixel_size_um", {})
                for k, v in dict(stored).items():
                    f = _to_float(v)
                    if f is not None and str(k).upper() in SPATIAL_AXES:
                        pixel_size[str(k).upper()] = f
            else:
                pixel_size = _resolution_pixel_size(page)

    # shaped TIFFs written by write_image name the axes in our alphabet
    literal = (
        isinstance(shaped_meta, dict)
        and isinstance(shaped_meta.get(_META_KEY), dict)
        and shaped_meta[_META_KEY].get("axes") == raw_axes
    )
    if literal:
        pixel_size = {k: v for k, v in pixel_size.items() if k in raw_axes}
        return data, raw_axes, pixel_size, meta, True
    # pixel sizes are keyed by the file's letters; Y/X/Z are kept by _map_tiff_axes
    return data, raw_axes, pixel_size, meta, False


def _page_resolution(page: Any) -> tuple[float, float] | None:
    try:
        xres, yres = page.resolution
    except Exception:
        return None
    x, y = _to_float(xres), _to_float(yres)
    if x is None or y is None:
        return None
    return x, y


def _resolution_pixel_size(page: Any) -> dict[str, float]:
    """Pixel size from TIFF resolution tags when their unit is inch or cm."""
    res = _page_resolution(page)
    if res is None:
        return {}
    try:
        unit = int(page.resolutionunit)
    except Exception:
        return {}
    per_unit_um = {2: 25400.0, 3: 1e4}.get(unit)
    if per_unit_um is None:
        return {}
    return {"X": per_unit_um / res[0], "Y": per_unit_um / res[1]}


def _ome_pixel_size(xml: str) -> dict[str, float]:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return {}
    for elem in root.iter():
        if elem.tag.rsplit("}", 1)[-1] == "Pixels":
            out: dict[str, float] = {}
            for ax in SPATIAL_AXES:
                value = _to_float(elem.get(f"PhysicalSize{ax}"))
                scale = _unit_to_um(elem.get(f"PhysicalSize{ax}Unit", "µm"))
                if value is not None and scale is not None:
                    out[ax] = value * scale
            return out
    return {}


# OME AcquisitionMode values whose PSF the optics-conditioned network knows
_OME_MODES = {
    "widefield": "widefield",
    "tirf": "widefield",
    "laserscanningconfocalmicroscopy": "confocal",
    "spinningdiskconfocal": "confocal",
    "slitscanconfocal": "confocal",
}


def ome_optics(xml: str) -> dict[str, Any]:
    """The optics an OME-XML document records for its first image.

    Returns
    -------
    dict
        ``na`` (the ``LensNA`` of the objective the image's ``ObjectiveSettings``
        name, else of the only objective), ``wavelength_em`` (nm, one entry per
        ``Channel``, None where absent) and ``modality`` (per channel:
        ``'widefield'``, ``'confocal'``, ``'other'`` for another
        ``AcquisitionMode`` such as multiphoton or SIM, None when not recorded);
        only the keys found.  Empty when nothing is recorded or the XML is broken.

    Examples
    --------
    >>> xml = (
    ...     '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
    ...     '<Instrument ID="Instrument:0"><Objective ID="Objective:0" LensNA="1.4"/></Instrument>'
    ...     '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" '
    ...     'SizeX="8" SizeY="8" SizeC="2" SizeZ="1" SizeT="1">'
    ...     '<Channel ID="Channel:0:0" EmissionWavelength="520" AcquisitionMode="WideField"/>'
    ...     '<Channel ID="Channel:0:1" EmissionWavelength="0.61" EmissionWavelengthUnit="µm"/>'
    ...     '</Pixels></Image></OME>'
    ... )
    >>> ome_optics(xml)
    {'na': 1.4, 'wavelength_em': [520.0, 610.0], 'modality': ['widefield', None]}
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return {}

    def local(elem: Any) -> str:
        return elem.tag.rsplit("}", 1)[-1]

    objectives = {e.get("ID"): _to_float(e.get("LensNA")) for e in root.iter() if local(e) == "Objective"}
    image = next((e for e in root.iter() if local(e) == "Image"), None)
    if image is None:
        return {}
    out: dict[str, Any] = {}
    chosen = next((e.get("ID") for e in image.iter() if local(e) == "ObjectiveSettings"), None)
    if chosen in objectives:
        na = objectives[chosen]
    else:
        na = next(iter(objectives.values())) if len(objectives) == 1 else None
    if na is not None and na > 0:
        out["na"] = na
    pixels = next((e for e in image.iter() if local(e) == "Pixels"), None)
    channels = [] if pixels is None else [e for e in pixels if local(e) == "Channel"]
    waves, modes = [], []
    for ch in channels:
        wl = _to_float(ch.get("EmissionWavelength"))
        unit = ch.get("EmissionWavelengthUnit", "nm")
        factor = {"nm": 1.0, "µm": 1000.0, "um": 1000.0, "Å": 0.1, "pm": 0.001}.get(unit)
        waves.append(wl * factor if wl is not None and factor is not None and wl > 0 else None)
        mode = ch.get("AcquisitionMode")
        modes.append(None if mode is None else _OME_MODES.get(mode.lower(), "other"))
    if any(w is not None for w in waves):
        out["wavelength_em"] = waves
    if any(m is not None for m in modes):
        out["modality"] = modes
    return out


def _is_subsequence(axes: str, order: str) -> bool:
    it = iter(order)
    return all(a in it for a in axes)


def _write_tiff(tmp, arr, axes, px, key, prepared=None):
    imagej = (
        _is_subsequence(axes, "TZCYX")
        and arr.dtype in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
        # ImageJ keeps X/Y sizes in the resolution tags and one unit for all:
        # a pixel size for Z alone (or X without Y) goes to a shaped TIFF
        and (not px or ("X" in px and "Y" in px))
    )
    if tmp is None:
        return imagej
    import tifffile

    bigtiff = arr.nbytes > 2**32 - 2**26
    if imagej and not bigtiff:
        metadata: dict[str, Any] = {"axes": axes}
        kwargs: dict[str, Any] = {}
        if px:
            metadata["unit"] = "um"
            if "Z" in px:
                metadata["spacing"] = px["Z"]
            if "X" in px and "Y" in px:
                kwargs["resolution"] = (1.0 / px["X"], 1.0 / px["Y"])
        tifffile.imwrite(tmp, arr, imagej=True, metadata=metadata, **kwargs)
        return None
    rgb = axes.endswith("C") and arr.shape[-1] in (3, 4) and arr.dtype in (
        np.dtype(np.uint8),
        np.dtype(np.uint16),
    )
    kwargs = {"photometric": "rgb" if rgb else "minisblack"}
    if "X" in px and "Y" in px:
        kwargs["resolution"] = (1e4 / px["X"], 1e4 / px["Y"])
        kwargs["resolutionunit"] = "CENTIMETER"
    info = {_META_KEY: {"axes": axes, "pixel_size_um": px}}
    tifffile.imwrite(
        tmp, arr, metadata={"axes": axes, **info}, bigtiff=bigtiff, **kwargs
    )
    return None


def _write_ome(tmp, arr, axes, px, key, prepared=None):
    if "S" in axes:
        raise AxesError("OME-TIFF has no sample axis 'S'; write .tif or .npz instead")
    if tmp is None:
        return None
    import tifffile

    metadata: dict[str, Any] = {"axes": axes}
    for ax, size in px.items():
        metadata[f"PhysicalSize{ax}"] = size
        metadata[f"PhysicalSize{ax}Unit"] = "µm"
    bigtiff = arr.nbytes > 2**32 - 2**26
    tifffile.imwrite(tmp, arr, ome=True, metadata=metadata, bigtiff=bigtiff)
    return None


# ------------------------------------------------------------------- lazy read

LAZY_CHUNK_YX = 1024
"""Y and X extent of the dask chunks of a lazily read TIFF (a multiple of its tiles)."""

# open zarr views of TIFF files, per process, the most recently used last
_STORES: dict[tuple[str, int], tuple[Any, Any]] = {}
_STORES_LOCK = threading.Lock()
_MAX_STORES = 8


class TiffPages:
    """The first series of a TIFF file as an array-like that decodes only what is indexed.

    Indexing opens the file (once per process; the object pickles as its
    path, so dask workers open their own) through tifffile's zarr store
    (``aszarr=True``), which decodes only the pages, strips or tiles that
    hold the requested pixels.

    Parameters
    ----------
    path : path-like
        The TIFF file.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, tifffile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.tif"
    >>> tifffile.imwrite(p, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> pages = TiffPages(p)
    >>> pages.shape, pages[1, 0].tolist()
    ((2, 3, 4), [12, 13, 14, 15])
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        z = self._array()
        self.shape = tuple(z.shape)
        self.dtype = np.dtype(z.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(z.chunks)

    def __reduce__(self):
        return (TiffPages, (self.path,))

    def _array(self):
        import tifffile
        import zarr

        key = (self.path, os.stat(self.path).st_mtime_ns)
        with _STORES_LOCK:
            entry = _STORES.pop(key, None)
            if entry is None:
                store = tifffile.imread(self.path, aszarr=True, series=0, level=0)
                entry = (store, zarr.open(store, mode="r"))
            _STORES[key] = entry
            while len(_STORES) > _MAX_STORES:  # close the least recently used file
                old_store, _ = _STORES.pop(next(iter(_STORES)))
                with contextlib.suppress(Exception):
                    old_store.close()
        return entry[1]

    def __getitem__(self, index: Any) -> np.ndarray:
        z = self._array()
        with _STORES_LOCK:  # one file handle per process
            return np.asarray(z[index])


def lazy_tiff(p: Path, axes: str, chunk_yx: int = LAZY_CHUNK_YX):
    """A dask array over :class:`TiffPages`: one plane deep, whole native tiles along Y, X.

    ``axes`` are the series' (tifffile) axes; a trailing samples axis (RGB)
    stays whole.
    """
    import dask.array as da

    pages = TiffPages(p)
    chunks = []
    for i, (a, n, c) in enumerate(zip(axes, pages.shape, pages.chunks, strict=True)):
        if a in "YX":  # a multiple of the native strips / tiles
            chunks.append(n if c >= n else min(n, max(c, (chunk_yx // c) * c)))
        elif a == "S" and i == len(axes) - 1:
            chunks.append(n)
        else:
            chunks.append(1)
    meta = np.empty((0,) * pages.ndim, pages.dtype)
    return da.from_array(pages, chunks=tuple(chunks), asarray=True, lock=False, meta=meta)
