"""Axes strings (the ``STCZYX`` alphabet) and pixel sizes keyed by spatial axis."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sharpscope.errors import AxesError, InputError

AXES_ALPHABET = "STCZYX"
"""Axis letters understood everywhere: sample, time, channel, z, y, x."""

SPATIAL_AXES = "ZYX"


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
    if pixel_size is not None and not isinstance(pixel_size, Mapping):
        raise InputError(
            f"pixel_size must map axis letters to sizes in um, e.g. {{'Y': 0.1, 'X': 0.1}}; "
            f"got {type(pixel_size).__name__}"
        )
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
