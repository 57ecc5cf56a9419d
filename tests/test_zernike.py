"""Zernike polynomials: Noll indexing, explicit formulas, RMS normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpscope.errors import ConfigError, SharpscopeError
from sharpscope.physics.zernike import (
    nm_to_noll,
    noll_to_nm,
    wavefront,
    zernike,
    zernike_name,
    zernike_radial,
    zernike_xy,
)

# Noll (1976), table 1: j -> (n, m), m > 0 for cos (even j), m < 0 for sin (odd j)
NOLL_TABLE = {
    1: (0, 0),
    2: (1, 1),
    3: (1, -1),
    4: (2, 0),
    5: (2, -2),
    6: (2, 2),
    7: (3, -1),
    8: (3, 1),
    9: (3, -3),
    10: (3, 3),
    11: (4, 0),
    12: (4, 2),
    13: (4, -2),
    14: (4, 4),
    15: (4, -4),
    16: (5, 1),
    17: (5, -1),
    18: (5, 3),
    19: (5, -3),
    20: (5, 5),
    21: (5, -5),
    22: (6, 0),
}


def test_noll_table():
    for j, nm in NOLL_TABLE.items():
        assert noll_to_nm(j) == nm, j


def test_noll_round_trip_and_uniqueness():
    seen = set()
    for j in range(1, 121):
        n, m = noll_to_nm(j)
        assert abs(m) <= n and (n - abs(m)) % 2 == 0
        assert nm_to_noll(n, m) == j
        seen.add((n, m))
    assert len(seen) == 120
    # every (n, m) up to order 14 is reached: 15 * 16 / 2 polynomials
    assert {(n, m) for n in range(15) for m in range(-n, n + 1, 2)} <= seen


def _explicit(j: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Textbook Cartesian forms of the first Noll polynomials (x along rows)."""
    r2 = x**2 + y**2
    forms = {
        1: np.ones_like(x),
        2: 2 * x,
        3: 2 * y,
        4: np.sqrt(3) * (2 * r2 - 1),
        5: 2 * np.sqrt(6) * x * y,
        6: np.sqrt(6) * (x**2 - y**2),
        7: np.sqrt(8) * y * (3 * r2 - 2),
        8: np.sqrt(8) * x * (3 * r2 - 2),
        9: np.sqrt(8) * y * (3 * x**2 - y**2),
        10: np.sqrt(8) * x * (x**2 - 3 * y**2),
        11: np.sqrt(5) * (6 * r2**2 - 6 * r2 + 1),
        12: np.sqrt(10) * (x**2 - y**2) * (4 * r2 - 3),
        13: 2 * np.sqrt(10) * x * y * (4 * r2 - 3),
        22: np.sqrt(7) * (20 * r2**3 - 30 * r2**2 + 12 * r2 - 1),
    }
    return forms[j]


@pytest.mark.parametrize("j", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 22])
def test_explicit_cartesian_forms(j):
    rng = np.random.default_rng(j)
    x, y = rng.uniform(-1, 1, (2, 200))
    np.testing.assert_allclose(zernike_xy(j, x, y), _explicit(j, x, y), atol=1e-12)
    rho, theta = np.hypot(x, y), np.arctan2(y, x)
    np.testing.assert_allclose(zernike(j, rho, theta), _explicit(j, x, y), atol=1e-12)


def _disc_quadrature(order: int = 24, angles: int = 64):
    """Gauss-Legendre in r (weight r dr) x uniform angles: exact for our polynomials."""
    t, w = np.polynomial.legendre.leggauss(order)
    r = 0.5 * (t + 1)
    wr = 0.5 * w * r
    theta = np.arange(angles) * 2 * np.pi / angles
    rr, tt = np.meshgrid(r, theta, indexing="ij")
    weights = wr[:, None] * np.full(angles, 2 * np.pi / angles)[None, :]
    return rr, tt, weights


def test_rms_normalisation_and_orthogonality():
    rr, tt, weights = _disc_quadrature()
    js = list(range(1, 37))
    values = np.stack([zernike(j, rr, tt) for j in js])
    gram = np.einsum("aij,bij,ij->ab", values, values, weights) / np.pi
    # integral of Z_j^2 over the unit disc divided by its area is 1; distinct j orthogonal
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-10)
    np.testing.assert_allclose(gram, np.eye(len(js)), atol=1e-10)


def test_radial_polynomial_values():
    rho = np.linspace(0, 1, 7)
    np.testing.assert_allclose(zernike_radial(4, 0, rho), 6 * rho**4 - 6 * rho**2 + 1)
    np.testing.assert_allclose(zernike_radial(5, 3, rho), 5 * rho**5 - 4 * rho**3)
    for n, m in [(3, 1), (6, 2), (8, 0)]:
        assert zernike_radial(n, m, np.array(1.0)) == pytest.approx(1.0)


def test_torch_matches_numpy():
    rng = np.random.default_rng(0)
    rho, theta = rng.uniform(0, 1, 50), rng.uniform(-np.pi, np.pi, 50)
    for j in (4, 7, 15, 30):
        out = zernike(j, torch.tensor(rho), torch.tensor(theta))
        assert isinstance(out, torch.Tensor)
        np.testing.assert_allclose(out.numpy(), zernike(j, rho, theta), atol=1e-12)


def test_wavefront_map():
    w = wavefront([0.1, 0.0, 0.2], size=65)  # Z4 = 0.1, Z6 = 0.2
    assert np.isnan(w[0, 0]) and np.isnan(w[0, -1])
    assert w[32, 32] == pytest.approx(-0.1 * np.sqrt(3))
    # columns are x: at (x=1, y=0) Z6 = +sqrt(6), at (x=0, y=1) it is -sqrt(6)
    assert w[32, 64] == pytest.approx(0.1 * np.sqrt(3) + 0.2 * np.sqrt(6))
    assert w[64, 32] == pytest.approx(0.1 * np.sqrt(3) - 0.2 * np.sqrt(6))


def test_names_and_errors():
    assert zernike_name(4) == "defocus"
    assert zernike_name(11) == "primary spherical"
    assert zernike_name(40).startswith("Z(n=")
    for bad in (0, -3, 2.5, "4", True):
        with pytest.raises(ConfigError):
            noll_to_nm(bad)
    with pytest.raises(SharpscopeError):
        nm_to_noll(3, 2)
    with pytest.raises(SharpscopeError):
        zernike_radial(2, 4, np.zeros(2))
