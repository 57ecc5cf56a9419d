"""What the format modules of :mod:`sharpscope.io` share: :class:`Image`, metadata keys, units."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sharpscope.io.axes import SPATIAL_AXES

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
        The pixels, in the file's dtype (a :class:`dask.array.Array` from
        ``read_image(path, lazy=True)``).
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
