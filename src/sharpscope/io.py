"""Reading and writing microscopy images with their axes and pixel size.

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

Axes strings use the ``STCZYX`` alphabet (sample, time, channel, z, y, x);
every image has a ``Y`` and an ``X`` axis.  Pixel sizes are in micrometres and
keyed by spatial axis (``'Z'``, ``'Y'``, ``'X'``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.errors import AxesError, InputError

AXES_ALPHABET = "STCZYX"
"""Axis letters understood everywhere: sample, time, channel, z, y, x."""

SPATIAL_AXES = "ZYX"

IMAGE_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npz", ".npy", ".png", ".jpg", ".jpeg")
"""File name suffixes :func:`read_image` understands (case-insensitive)."""

WRITE_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npz", ".png", ".jpg", ".jpeg")
"""File name suffixes :func:`write_image` can write (case-insensitive)."""

_META_KEY = "sharpscope"  # PNG text chunk / shaped TIFF key / npz '__sharpscope__'
NPZ_META_KEY = "__sharpscope__"

# length units -> micrometres
_UNITS_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "inch": 25400.0,
    "in": 25400.0,
}


@dataclass
class Image:
    """An image array with its axes and physical pixel size.

    Parameters
    ----------
    data : numpy.ndarray
        The pixels, in the file's dtype.
    axes : str
        One letter of ``STCZYX`` per dimension of ``data``.
    pixel_size : dict of str to float
        Pixel size in micrometres per spatial axis (``'Z'``, ``'Y'``, ``'X'``);
        may be empty when the file has no calibration.
    metadata : dict
        Extra information: ``'format'``, ``'path'``, ``'file_axes'`` (the axes
        letters as stored in the file) and, for ``.npz``, ``'key'``.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.zeros((3, 8, 8), np.float32), "ZYX", {"Z": 0.3, "Y": 0.1, "X": 0.1})
    >>> img.shape
    (3, 8, 8)
    """

    data: np.ndarray
    axes: str
    pixel_size: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(self.data.shape)


# --------------------------------------------------------------------------- axes


def validate_axes(axes: str, ndim: int, require: str = "YX") -> str:
    """Check an axes string against an array's number of dimensions.

    Parameters
    ----------
    axes : str
        Letters of the ``STCZYX`` alphabet, one per dimension, each at most
        once (case-insensitive; surrounding spaces ignored).
    ndim : int
        Number of dimensions of the array the axes describe.
    require : str, optional
        Letters that must be present (default ``'YX'``: every image has them).

    Returns
    -------
    str
        The normalised (upper-case) axes string.

    Raises
    ------
    AxesError
        On an unknown or repeated letter, a missing required axis, or a length
        that differs from ``ndim``.

    Examples
    --------
    >>> validate_axes("tyx", 3)
    'TYX'
    """
    if not isinstance(axes, str):
        raise AxesError(f"axes must be a string such as 'ZYX', got {axes!r}")
    norm = axes.strip().upper()
    if not norm:
        raise AxesError("axes string is empty")
    unknown = sorted({a for a in norm if a not in AXES_ALPHABET})
    if unknown:
        raise AxesError(
            f"unknown axis letter(s) {''.join(unknown)!r} in axes {axes!r}; "
            f"use letters from {AXES_ALPHABET}"
        )
    repeated = sorted({a for a in norm if norm.count(a) > 1})
    if repeated:
        raise AxesError(f"axis {''.join(repeated)!r} repeated in axes {axes!r}")
    missing = [a for a in require.upper() if a not in norm]
    if missing:
        raise AxesError(f"axes {axes!r} lack the required axis {''.join(missing)!r}")
    if len(norm) != ndim:
        raise AxesError(
            f"axes {norm!r} have {len(norm)} letters but the image has {ndim} dimensions"
        )
    return norm


def guess_axes(ndim: int) -> str:
    """Default axes for an array of ``ndim`` dimensions without metadata.

    Y and X are the last two dimensions; leading dimensions are labelled,
    inner to outer, ``Z``, ``T``, ``C``, ``S`` (so 3-D is ``ZYX``, 4-D
    ``TZYX``, 5-D ``CTZYX``...).

    Examples
    --------
    >>> guess_axes(2), guess_axes(3), guess_axes(4)
    ('YX', 'ZYX', 'TZYX')
    """
    if ndim < 2:
        raise AxesError(f"an image needs at least 2 dimensions (Y, X), got {ndim}")
    if ndim > len(AXES_ALPHABET):
        raise AxesError(f"an image has at most {len(AXES_ALPHABET)} dimensions, got {ndim}")
    lead = "ZTCS"[: ndim - 2]
    return lead[::-1] + "YX"


def _fill_unknown(letters: list[str | None], where: str) -> str:
    """Replace ``None`` entries (generic axes) by Z, T, S from the inside out."""
    free = [a for a in "ZTS" if a not in letters]
    out = list(letters)
    for i in range(len(out) - 1, -1, -1):
        if out[i] is None:
            if not free:
                raise AxesError(f"cannot guess the axes of {where}; pass axes= (e.g. 'TZYX')")
            out[i] = free.pop(0)
    return "".join(out)  # type: ignore[arg-type]


def _map_tiff_axes(raw: str, literal: bool, where: str) -> str:
    """Map tifffile axes letters onto the STCZYX alphabet.

    ``literal`` is true for shaped TIFFs whose description names the axes (as
    written by :func:`write_image`): their letters are taken as they are,
    except a trailing ``S`` (colour samples), which becomes ``C``.  Otherwise
    tifffile's ``S`` (samples) is ``C`` and its generic ``I``/``Q`` axes are
    guessed (``Z`` first, then ``T``, then ``S``).
    """
    letters: list[str | None] = []
    for i, a in enumerate(raw.upper()):
        if a in "TZCYX":
            letters.append(a)
        elif a == "S":
            letters.append("S" if literal and i != len(raw) - 1 else "C")
        elif a in "IQ":
            letters.append(None)
        else:
            raise AxesError(
                f"axis {a!r} of {where} (file axes {raw!r}) has no equivalent in "
                f"{AXES_ALPHABET}; pass axes="
            )
    dup = sorted({a for a in letters if a is not None and letters.count(a) > 1})
    if dup:
        raise AxesError(
            f"file axes {raw!r} of {where} map to a repeated axis {''.join(dup)!r}; pass axes="
        )
    return _fill_unknown(letters, where)


def _rekey_pixel_size(pixel_size: Mapping[str, float], old: str, new: str) -> dict[str, float]:
    """Carry pixel sizes over when the axes of the same dimensions are relabelled."""
    out: dict[str, float] = {}
    for a_old, a_new in zip(old, new, strict=False):
        if a_old in pixel_size and a_new in SPATIAL_AXES:
            out[a_new] = pixel_size[a_old]
    return out


def _check_pixel_size(pixel_size: Mapping[str, Any] | None, axes: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (pixel_size or {}).items():
        k = str(key).upper()
        if k not in SPATIAL_AXES:
            raise InputError(f"pixel size given for axis {key!r}; only Z, Y, X have one")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InputError(f"pixel size for {k} must be a number, got {value!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"pixel size for {k} must be positive and finite, got {value!r}")
        if k in axes:
            out[k] = v
    return out


# ------------------------------------------------------------------ atomic write


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path, rename it on success.

    The temporary file lives in the destination's directory, is named
    ``.<name>.<pid>.<random>.tmp<suffix>`` (the same suffixes, so
    format-from-suffix writers behave) and replaces ``path`` with
    :func:`os.replace` when the block finishes; the file and its directory are
    fsynced first, so a power failure cannot leave a truncated file under the
    final name.  It is deleted when the block raises; temporaries of the same
    destination left by a process that no longer exists (killed with SIGKILL,
    a crash) are removed on the next write, so nothing accumulates.

    Parameters
    ----------
    path : path-like
        Final destination.  Its directory is created when missing.

    Yields
    ------
    pathlib.Path
        Where to write (an existing, empty file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_write(dest) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> dest.read_text()
    'hello'
    """
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {dest.parent}: {exc.strerror or exc}") from None
    suffix = "".join(dest.suffixes[-2:]) if dest.name.lower().endswith((".ome.tif", ".ome.tiff")) else dest.suffix
    _remove_stale_temporaries(dest)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{dest.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=dest.parent
        )
    except OSError as exc:
        raise InputError(f"cannot write to {dest.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        try:
            _fsync(tmp)
            os.replace(tmp, dest)
            _fsync(dest.parent, directory=True)
        except OSError as exc:
            raise InputError(f"cannot write {dest}: {exc.strerror or _one_line(exc)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# ----------------------------------------------------------------------- helpers


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a directory's entries) to stable storage."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open directories; the rename still happened
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (owned by someone else) or cannot tell: keep its file
    return True


def _remove_stale_temporaries(dest: Path) -> None:
    """Delete ``atomic_write`` temporaries of ``dest`` whose writing process is gone."""
    prefix = f".{dest.name}."
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and ".tmp" in name[len(prefix) :]):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)




def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in IMAGE_SUFFIXES:
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
    return _suffix(Path(path)) in IMAGE_SUFFIXES


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _unit_to_um(unit: Any) -> float | None:
    if unit is None:
        return None
    text = str(unit).strip().lower().replace("\\u00b5", "µ")
    return _UNITS_UM.get(text)


def _to_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


# ------------------------------------------------------------------------- read


def read_image(
    path: str | os.PathLike[str], axes: str | None = None, key: str | None = None
) -> Image:
    """Read an image file with its axes and pixel size.

    Parameters
    ----------
    path : path-like
        A ``.tif``/``.tiff`` (plain, ImageJ, OME), ``.npz``, ``.npy``,
        ``.png``, ``.jpg`` or ``.jpeg`` file.
    axes : str, optional
        Override the axes found in (or guessed from) the file; validated
        against the array's dimensions.  Pixel sizes follow the dimensions
        they belong to.
    key : str, optional
        For ``.npz``: the array to read (default ``'low'``, or the only array).

    Returns
    -------
    Image

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
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an image file")
    suffix = _suffix(p)
    reader = _READERS.get(suffix)
    if reader is None:
        raise InputError(
            f"{p}: unsupported file type {suffix or '(none)'!r} "
            f"(supported: {', '.join(IMAGE_SUFFIXES)})"
        )
    if key is not None and suffix != ".npz":
        raise InputError(f"{p}: key= only applies to .npz files")
    try:
        data, file_axes, pixel_size, meta, literal = reader(p, key)
    except (InputError, AxesError):
        raise
    except MemoryError:
        raise InputError(f"{p}: not enough memory to read the image") from None
    except Exception as exc:  # any parser failure means a corrupt or unreadable file
        raise InputError(f"cannot read {p}: {_one_line(exc)}") from None

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


def _read_tiff(p: Path, key: str | None):
    with _quiet_tifffile(p):
        return _read_tiff_quietly(p)


def _read_tiff_quietly(p: Path):
    import tifffile

    with tifffile.TiffFile(p) as tif:
        if not tif.series:
            raise InputError(f"{p}: the TIFF file holds no image")
        series = tif.series[0]
        raw_axes = series.axes.upper()
        data = series.asarray()
        page = series.pages[0] if series.pages else tif.pages[0]
        pixel_size: dict[str, float] = {}
        meta: dict[str, Any] = {"format": "tiff"}
        shaped_meta = None
        if len(tif.series) > 1:
            meta["n_series"] = len(tif.series)

        if tif.is_ome and tif.ome_metadata:
            meta["format"] = "ome-tiff"
            pixel_size = _ome_pixel_size(tif.ome_metadata)
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


def _stored_meta(text: Any) -> dict[str, Any]:
    """Parse the JSON that write_image stores next to the pixels (or {})."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _pixel_size_from(stored: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in dict(stored.get("pixel_size_um") or {}).items():
        f = _to_float(v)
        if f is not None and str(k).upper() in SPATIAL_AXES:
            out[str(k).upper()] = f
    return out


def _read_npz(p: Path, key: str | None):
    with np.load(p, allow_pickle=False) as npz:
        names = [n for n in npz.files if n != NPZ_META_KEY]
        if key is None:
            if "low" in names:
                key = "low"
            elif len(names) == 1:
                key = names[0]
            else:
                raise InputError(
                    f"{p}: holds arrays {names or 'none'}; pick one with key= "
                    "(a DeBCR file has 'low' and 'gt')"
                )
        if key not in names:
            raise InputError(f"{p}: no array {key!r} (arrays: {', '.join(names) or 'none'})")
        data = np.asarray(npz[key])
        stored = {}
        if NPZ_META_KEY in npz.files:
            stored = _stored_meta(str(npz[NPZ_META_KEY])).get(key, {})
    meta = {"format": "npz", "key": key}
    axes = stored.get("axes") if isinstance(stored, dict) else None
    if isinstance(axes, str):
        return data, axes.upper(), _pixel_size_from(stored), meta, True
    return data, _guess_npz_axes(data.shape, p), {}, meta, True


def _guess_npz_axes(shape: tuple[int, ...], p: Path) -> str:
    nd = len(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        return "SYX"
    if nd == 4 and shape[-1] <= 4:
        return "SYXC"
    if nd == 4 and shape[1] <= 4:
        return "SCYX"
    raise AxesError(f"{p}: cannot guess the axes of an array of shape {shape}; pass axes=")


def _read_npy(p: Path, key: str | None):
    data = np.load(p, allow_pickle=False)
    if data.ndim < 2:
        raise InputError(f"{p}: an image needs at least 2 dimensions, got shape {data.shape}")
    return data, guess_axes(data.ndim), {}, {"format": "npy"}, True


def _read_pil(p: Path, key: str | None):
    from PIL import Image as PILImage

    with PILImage.open(p) as im:
        im.load()
        fmt = (im.format or "").lower()
        text = im.info.get(_META_KEY) if fmt == "png" else im.info.get("comment")
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not im.mode.startswith("I;16"):
            im = im.convert("RGB")
        data = np.array(im)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("="))
    meta = {"format": "jpeg" if fmt in ("jpeg", "jpg") else fmt or "pil"}
    stored = _stored_meta(text)
    yxc = "YX" if data.ndim == 2 else "YXC"
    axes = stored.get("axes")
    if isinstance(axes, str):
        # pixels are stored as Y, X[, C]; the written axes order comes back by transposition
        want = axes.strip().upper()
        if data.ndim == 2 and sorted(want) == sorted("YXC"):
            data = data[..., None]
            yxc = "YXC"
        if sorted(want) == sorted(yxc):
            data = np.transpose(data, [yxc.index(a) for a in want])
            return data, want, _pixel_size_from(stored), meta, True
    return data, yxc, _pixel_size_from(stored), meta, True


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
) -> Path:
    """Write an image atomically; the format follows the file name suffix.

    Parameters
    ----------
    path : path-like
        Destination: ``.tif``/``.tiff`` (ImageJ hyperstack when the axes are a
        subsequence of ``TZCYX`` and the dtype is uint8/uint16/float32, a
        shaped TIFF otherwise), ``.ome.tif``/``.ome.tiff``, ``.npz``,
        ``.png`` (uint8, or uint16 grey) or ``.jpg``/``.jpeg`` (uint8, lossy).
    data : array_like
        The pixels.
    axes : str
        Axes of ``data`` (``STCZYX`` alphabet).
    pixel_size : dict, optional
        Micrometres per pixel for ``'Z'``, ``'Y'``, ``'X'``.
    dtype : dtype, optional
        Convert before writing; integer targets are rounded and clipped to the
        type's range.
    key : str, optional
        For ``.npz``: the array name (default ``'image'``).

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


def _write_npz(tmp, arr, axes, px, key, prepared=None):
    name = key or "image"
    if name == NPZ_META_KEY or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise InputError(f"invalid .npz array name {name!r}")
    if tmp is None:
        return None
    meta = json.dumps({name: {"axes": axes, "pixel_size_um": px}})
    with open(tmp, "wb") as fh:
        np.savez(fh, **{name: arr, NPZ_META_KEY: np.array(meta)})
    return None


def _pil_layout(arr: np.ndarray, axes: str, fmt: str) -> np.ndarray:
    """Pixels as (Y, X) or (Y, X, C) for pillow; checks what the format can store."""
    extra = [a for a in axes if a not in "YXC"]
    if extra:
        raise InputError(
            f"{fmt} stores 2-D images (axes YX or YXC), not axes {axes!r}; write .tif instead"
        )
    order = [axes.index(a) for a in "YXC" if a in axes]
    out = np.transpose(arr, order)
    if out.ndim == 3:
        if out.shape[2] == 1:
            out = out[..., 0]
        elif out.shape[2] not in (2, 3, 4) or (fmt == "JPEG" and out.shape[2] != 3):
            raise InputError(
                f"{fmt} cannot store {out.shape[2]} channels; write .tif instead"
            )
    if arr.dtype == np.bool_:
        out = out.astype(np.uint8) * 255
    ok = out.dtype == np.uint8 or (fmt == "PNG" and out.dtype == np.uint16 and out.ndim == 2)
    if not ok:
        allowed = "uint8 or uint16 (grey)" if fmt == "PNG" else "uint8"
        raise InputError(
            f"{fmt} stores {allowed} pixels, not {arr.dtype} with axes {axes!r}; "
            "write .tif, or convert the dtype (e.g. --dtype input)"
        )
    return np.ascontiguousarray(out)


def _write_png(tmp, arr, axes, px, key, prepared=None):
    out = _pil_layout(arr, axes, "PNG")
    if tmp is None:
        return out
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(_META_KEY, json.dumps({"axes": axes, "pixel_size_um": px}))
    kwargs: dict[str, Any] = {"pnginfo": info}
    if "X" in px and "Y" in px:
        kwargs["dpi"] = (25400.0 / px["X"], 25400.0 / px["Y"])
    PILImage.fromarray(prepared).save(tmp, format="PNG", **kwargs)
    return None


def _write_jpeg(tmp, arr, axes, px, key, prepared=None):
    out = _pil_layout(arr, axes, "JPEG")
    if tmp is None:
        return out
    from PIL import Image as PILImage

    comment = json.dumps({"axes": axes, "pixel_size_um": px})
    PILImage.fromarray(prepared).save(tmp, format="JPEG", quality=95, comment=comment)
    return None


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
assert tuple(_READERS) == IMAGE_SUFFIXES and tuple(_WRITERS) == WRITE_SUFFIXES
