"""Zernike polynomials in Noll's indexing and RMS normalisation.

Conventions (shared with :mod:`sharpscope.physics.psf` and with deepinv's
``DiffractionBlurGenerator``):

* Noll's single index ``j >= 1`` maps to the radial order ``n`` and the signed
  azimuthal order ``m``; inside one radial order ``|m|`` increases with ``j``,
  even ``j`` carry ``cos(|m| theta)`` (``m > 0``) and odd ``j`` carry
  ``sin(|m| theta)`` (``m < 0``).  So ``Z4`` is defocus, ``Z5``/``Z6`` the
  oblique/straight astigmatism, ``Z7``/``Z8`` coma, ``Z11`` primary spherical.
* RMS (Noll) normalisation: the mean of ``Z_j**2`` over the unit disc is 1, i.e.
  ``Z_j = sqrt(n + 1) R_n^0`` for ``m = 0`` and ``sqrt(2 (n + 1)) R_n^|m| cos/sin``
  otherwise.  A coefficient of 1 therefore means one wave RMS of wavefront.
* Cartesian form: ``x = rho cos(theta)`` runs along the image columns (``X`` in
  an image's axes string) and ``y = rho sin(theta)`` along the rows (``Y``), as
  in deepinv; see ``docs/physics.md``.

Functions accept numpy arrays and torch tensors alike (the result has the type
of ``rho``); nothing is masked outside the unit disc.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from sharpscope.errors import ConfigError

__all__ = [
    "noll_to_nm",
    "nm_to_noll",
    "zernike_name",
    "zernike_radial",
    "zernike",
    "zernike_xy",
    "wavefront",
]

_NAMES = {
    1: "piston",
    2: "tilt along x (columns)",
    3: "tilt along y (rows)",
    4: "defocus",
    5: "oblique astigmatism",
    6: "straight astigmatism",
    7: "coma along y (rows)",
    8: "coma along x (columns)",
    9: "trefoil (sin)",
    10: "trefoil (cos)",
    11: "primary spherical",
    12: "secondary astigmatism (straight)",
    13: "secondary astigmatism (oblique)",
    14: "quadrafoil (cos)",
    15: "quadrafoil (sin)",
    22: "secondary spherical",
}


def _check_index(j: Any) -> int:
    if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or int(j) < 1:
        raise ConfigError(f"Noll index must be an integer >= 1, got {j!r}")
    return int(j)


@lru_cache(maxsize=1024)
def _noll_to_nm(j: int) -> tuple[int, int]:
    # radial order: the row n of the triangle holding j (rows have n + 1 entries)
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    first = n * (n + 1) // 2 + 1  # Noll index of the first entry of row n
    # |m| values of the row in Noll order: 0, 2, 2, 4, 4, ... (n even) or 1, 1, 3, 3, ...
    if n % 2 == 0:
        order = [0] + [a for a in range(2, n + 1, 2) for _ in range(2)]
    else:
        order = [a for a in range(1, n + 1, 2) for _ in range(2)]
    m_abs = order[j - first]
    if m_abs == 0:
        return n, 0
    return (n, m_abs) if j % 2 == 0 else (n, -m_abs)


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial and signed azimuthal order of Noll's index ``j``.

    Parameters
    ----------
    j : int
        Noll index, ``j >= 1``.

    Returns
    -------
    (n, m) : tuple of int
        ``m > 0`` means a ``cos(m theta)`` term, ``m < 0`` a ``sin(|m| theta)`` term.

    Examples
    --------
    >>> [noll_to_nm(j) for j in (1, 4, 5, 6, 7, 8, 11)]
    [(0, 0), (2, 0), (2, -2), (2, 2), (3, -1), (3, 1), (4, 0)]
    """
    return _noll_to_nm(_check_index(j))


def nm_to_noll(n: int, m: int) -> int:
    """Noll index of the Zernike polynomial of orders ``(n, m)``.

    Examples
    --------
    >>> nm_to_noll(2, 0), nm_to_noll(3, 1), nm_to_noll(4, 0)
    (4, 8, 11)
    """
    if n < 0 or abs(m) > n or (n - abs(m)) % 2:
        raise ConfigError(f"invalid Zernike orders (n={n}, m={m})")
    for j in range(n * (n + 1) // 2 + 1, (n + 1) * (n + 2) // 2 + 1):
        if _noll_to_nm(j) == (n, m):
            return j
    raise AssertionError("unreachable")  # pragma: no cover


def zernike_name(j: int) -> str:
    """Conventional name of Noll's polynomial ``j`` (``'Z(n=.., m=..)'`` if it has none).

    Examples
    --------
    >>> zernike_name(4), zernike_name(11)
    ('defocus', 'primary spherical')
    """
    j = _check_index(j)
    if j in _NAMES:
        return _NAMES[j]
    n, m = _noll_to_nm(j)
    return f"Z(n={n}, m={m})"


@lru_cache(maxsize=1024)
def _radial_coefficients(n: int, m_abs: int) -> tuple[tuple[int, float], ...]:
    terms = []
    for s in range((n - m_abs) // 2 + 1):
        c = (-1) ** s * math.factorial(n - s)
        c /= (
            math.factorial(s)
            * math.factorial((n + m_abs) // 2 - s)
            * math.factorial((n - m_abs) // 2 - s)
        )
        terms.append((n - 2 * s, float(c)))
    return tuple(terms)


def zernike_radial(n: int, m: int, rho: Any) -> Any:
    """Radial polynomial ``R_n^|m|(rho)`` (not normalised; ``R(1) = 1``).

    Examples
    --------
    >>> import numpy as np
    >>> zernike_radial(2, 0, np.array([0.0, 1.0]))
    array([-1.,  1.])
    """
    m_abs = abs(m)
    if n < 0 or m_abs > n or (n - m_abs) % 2:
        raise ConfigError(f"invalid Zernike orders (n={n}, m={m})")
    out = 0.0 * rho
    for power, c in _radial_coefficients(n, m_abs):
        out = out + c * rho**power
    return out


def _trig(x: Any) -> tuple[Any, Any]:
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.cos, torch.sin
    return np.cos, np.sin


def zernike(j: int, rho: Any, theta: Any) -> Any:
    """Noll-indexed, RMS-normalised Zernike polynomial ``Z_j(rho, theta)``.

    Parameters
    ----------
    j : int
        Noll index (``>= 1``).
    rho : array or tensor
        Radius on the unit disc (values above 1 are evaluated, not masked).
    theta : array or tensor
        Azimuth in radians, measured from the ``x`` (row) axis towards ``y``.

    Returns
    -------
    array or tensor
        ``Z_j`` with ``mean(Z_j**2) == 1`` over the unit disc.

    Examples
    --------
    >>> import numpy as np
    >>> float(zernike(4, np.array(1.0), np.array(0.0)))  # defocus: sqrt(3) (2 rho^2 - 1)
    1.7320508075688772
    """
    n, m = noll_to_nm(j)
    norm = math.sqrt(n + 1) if m == 0 else math.sqrt(2 * (n + 1))
    radial = zernike_radial(n, m, rho)
    if m == 0:
        return norm * radial
    cos, sin = _trig(theta)
    angular = cos(m * theta) if m > 0 else sin(-m * theta)
    return norm * radial * angular


def zernike_xy(j: int, x: Any, y: Any) -> Any:
    """``Z_j`` at Cartesian pupil coordinates (``x`` along columns, ``y`` along rows).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(zernike_xy(6, np.array(1.0), np.array(0.0))), 6)  # sqrt(6) (x^2 - y^2)
    2.44949
    """
    if type(x).__module__.startswith("torch"):
        import torch

        return zernike(j, torch.sqrt(x * x + y * y), torch.atan2(y, x))
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    return zernike(j, np.hypot(x, y), np.arctan2(y, x))


def wavefront(coefficients: Any, size: int = 129, noll_start: int = 4) -> np.ndarray:
    """Wavefront ``sum_k c_k Z_{noll_start + k}`` (in waves) sampled on the unit disc.

    Parameters
    ----------
    coefficients : sequence of float
        Zernike coefficients in waves (RMS), the first for Noll index ``noll_start``.
    size : int
        The map is ``size x size`` and spans ``[-1, 1]`` on both axes.
    noll_start : int
        Noll index of the first coefficient.

    Returns
    -------
    numpy.ndarray
        float64 ``(size, size)``, columns along ``x`` and rows along ``y`` (the image's X
        and Y, as the PSF); ``NaN`` outside the unit disc.

    Examples
    --------
    >>> w = wavefront([0.1], size=5)
    >>> round(float(w[2, 2]), 4)  # defocus at the centre: -sqrt(3) * 0.1
    -0.1732
    """
    coefficients = np.asarray(coefficients, dtype=float).ravel()
    grid = np.linspace(-1.0, 1.0, int(size))
    x, y = np.meshgrid(grid, grid, indexing="xy")
    rho = np.hypot(x, y)
    angle = np.arctan2(y, x)
    out = np.zeros_like(rho)
    for k, c in enumerate(coefficients):
        if c != 0.0:
            out += c * zernike(noll_start + k, rho, angle)
    out[rho > 1.0] = np.nan
    return out
