"""Percentile normalisation and its inverse.

The percentiles are always computed over the whole image (all planes, never
per tile or per patch), so that tiled and untiled prediction see the same
intensity scale.  ``normalize`` maps ``lo`` to 0 and ``hi`` to 1;
``denormalize`` maps back to the input's intensity units.
"""

from __future__ import annotations

import numpy as np

from sharpscope.errors import InputError

EPS = 1e-20
"""Smallest denominator ``hi - lo``: a constant image normalises to zeros, not NaN."""


def percentiles(x: np.ndarray, pmin: float = 1.0, pmax: float = 99.8) -> tuple[float, float]:
    """Low and high percentiles of a whole image.

    Parameters
    ----------
    x : array_like
        The image (any shape); all its values are used.
    pmin, pmax : float
        Percentiles in ``[0, 100]`` with ``pmin < pmax``.

    Returns
    -------
    (float, float)
        ``(lo, hi)``; ``lo == hi`` for a constant image.

    Raises
    ------
    InputError
        Empty image or invalid percentiles.

    Examples
    --------
    >>> import numpy as np
    >>> percentiles(np.arange(101.0), 1, 99)
    (1.0, 99.0)
    """
    if not (0.0 <= float(pmin) < float(pmax) <= 100.0):
        raise InputError(f"percentiles must satisfy 0 <= pmin < pmax <= 100, got {pmin}, {pmax}")
    arr = np.asarray(x)
    if arr.size == 0:
        raise InputError("image is empty")
    lo, hi = np.percentile(arr, [float(pmin), float(pmax)])
    return float(lo), float(hi)


def normalize(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``lo`` to 0 and ``hi`` to 1 (values outside are not clipped).

    Parameters
    ----------
    x : array_like
        Image in its own intensity units.
    lo, hi : float
        Typically from :func:`percentiles`.  When ``hi - lo`` is (nearly) zero
        the denominator is :data:`EPS`, so the result stays finite.

    Returns
    -------
    numpy.ndarray
        float32 array of ``x``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> normalize(np.array([10.0, 15.0, 20.0]), 10, 20)
    array([0. , 0.5, 1. ], dtype=float32)
    """
    scale = np.float32(max(float(hi) - float(lo), EPS))
    out = np.subtract(np.asarray(x, dtype=np.float32), np.float32(lo))  # a new array
    out /= scale
    return out


def denormalize(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`normalize`: map 0 to ``lo`` and 1 to ``hi``.

    Examples
    --------
    >>> import numpy as np
    >>> denormalize(np.array([0.0, 0.5, 1.0]), 10, 20)
    array([10., 15., 20.], dtype=float32)
    """
    scale = np.float32(max(float(hi) - float(lo), EPS))
    out = np.multiply(np.asarray(y, dtype=np.float32), scale)  # a new array
    out += np.float32(lo)
    return out
