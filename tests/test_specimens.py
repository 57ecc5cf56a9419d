"""Procedural specimens: shapes, ranges, determinism, density and line geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sharpscope.errors import InputError
from sharpscope.physics.specimens import (
    FWHM,
    KINDS,
    filaments,
    from_image,
    make_specimen,
    puncta,
    render_specimen,
)

PROCEDURAL = [k for k in KINDS if k != "texture"]


@pytest.mark.parametrize("kind", PROCEDURAL)
@pytest.mark.parametrize("shape", [(48, 40), (8, 32, 36)])
def test_shape_range_determinism(kind, shape):
    a = make_specimen(kind, shape, generator=3, voxel_aspect=2.0 if len(shape) == 3 else 1.0)
    b = make_specimen(kind, shape, generator=3, voxel_aspect=2.0 if len(shape) == 3 else 1.0)
    c = make_specimen(kind, shape, generator=4, voxel_aspect=2.0 if len(shape) == 3 else 1.0)
    assert a.shape == shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", PROCEDURAL)
def test_density_increases_foreground(kind):
    def fg(density):
        return np.mean(
            [(make_specimen(kind, (96, 96), s, density=density) > 0.05).mean() for s in range(4)]
        )

    low, high = fg(0.25), fg(3.0)
    assert high > 1.3 * low
    assert make_specimen(kind, (32, 32), 0, density=0.0).max() == 0


def test_generator_kinds_and_torch_output():
    t = render_specimen("puncta", (20, 20), torch.Generator().manual_seed(1))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    a = make_specimen("filaments", (32, 32), np.random.default_rng(5))
    b = make_specimen("filaments", (32, 32), np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def _straight_filament(width, seed=0):
    """A straight filament crossing a 64 x 64 field by at least 30 px (first such seed)."""
    for k in range(seed, seed + 50):
        out = _one_filament(width, k)
        if out[2] > 30:
            return out
    raise AssertionError("no long straight filament in 50 seeds")


def _one_filament(width, seed):
    # density 0.4 on a 64 x 64 field gives exactly one filament; huge persistence = straight
    x = filaments(
        (64, 64),
        seed,
        density=0.4,
        brightness=(1.0, 1.0),
        width=width,
        persistence=(1e9, 1e9),
        length=(2.0, 2.0),
    ).numpy()
    yy, xx = np.nonzero(x > 0.1 * x.max())
    pts = np.stack([yy, xx], 1).astype(float)
    centre = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
    tangent, normal = vt[0], vt[1]
    gy, gx = np.mgrid[0:64, 0:64]
    rel = np.stack([gy, gx], -1) - centre
    d = rel @ normal
    t = rel @ tangent
    on_line = np.abs(d) < 1
    t_lo, t_hi = t[on_line].min() + 4, t[on_line].max() - 4  # stay clear of the field edges
    band = (np.abs(d) < 4) & (t > t_lo) & (t < t_hi)
    return x, d[band], (t_hi - t_lo), x[band]


@pytest.mark.parametrize("width", [0.7, 2.0])
def test_straight_filament_width_and_line_density(width):
    x, d, length, v = _straight_filament(width)
    s = width / FWHM
    # cross-section: Gaussian of sigma s integrated over the pixel -> variance s^2 + 1/12
    rms = math.sqrt(float((v * d**2).sum() / v.sum()))
    assert rms == pytest.approx(math.sqrt(s * s + 1 / 12), rel=0.12)
    # flux per unit length equals peak x sqrt(2 pi) s (peak brightness 1)
    assert v.sum() / length == pytest.approx(math.sqrt(2 * math.pi) * s, rel=0.05)


def test_default_filament_is_sub_diffraction():
    x, d, _, v = _straight_filament(0.7, seed=1)
    # the measured profile FWHM (Gaussian equivalent) is below 1.2 px, i.e. well below a
    # Nyquist-sampled diffraction limit (about 2 px)
    rms = math.sqrt(float((v * d**2).sum() / v.sum()))
    assert FWHM * rms < 1.2


def test_single_spot_flux():
    sigma = 1.5
    x = puncta(
        (128, 128),
        2,
        density=1 / 30,
        brightness=(0.8, 0.8),
        size=(sigma, sigma),
        vesicle_fraction=0,
    ).numpy()
    # a Gaussian of peak 0.8: total flux 0.8 * 2 pi sigma^2, peak close to 0.8
    assert x.sum() == pytest.approx(0.8 * 2 * math.pi * sigma**2, rel=0.02)
    assert 0.65 < x.max() <= 0.8


def test_vesicles_are_hollow():
    x = puncta(
        (128, 128),
        0,
        density=1 / 30,
        brightness=(1.0, 1.0),
        vesicle_fraction=1.0,
        vesicle_radius=(4.0, 4.0),
    ).numpy()
    cy, cx = (np.array(np.nonzero(x > 0.2)).mean(1)).round().astype(int)
    ring = x[cy - 5 : cy + 6, cx - 5 : cx + 6]
    assert ring[5, 5] < 0.1 * ring.max()  # dark centre, bright wall 4 px away


def test_3d_filaments_stay_inside_and_use_aspect():
    v = make_specimen("filaments", (12, 48, 48), 0, voxel_aspect=3.0, density=8.0)
    assert v.shape == (12, 48, 48)
    per_slice = v.sum(axis=(1, 2))
    assert (per_slice > 0.5).sum() >= 6  # curves fill the depth, folded back at its faces
    # an axial voxel 3x the lateral pixel: a filament crossing z spans few slices
    flat = make_specimen("filaments", (12, 48, 48), 0, voxel_aspect=3.0, axial_tilt=0.0)
    assert (flat.sum(axis=(1, 2)) > 1e-3).sum() <= 3


def test_from_image():
    img = np.array([[10, 20], [30, 50]])
    np.testing.assert_allclose(from_image(img), [[0, 0.25], [0.5, 1.0]])
    rng = np.random.default_rng(0)
    big = rng.normal(100, 10, (50, 50))
    out = from_image(big, 1, 99)
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    assert np.isclose((out == 1).mean(), 0.01, atol=0.005)
    assert from_image(np.full((4, 4), 3.0)).max() == 0
    with pytest.raises(InputError):
        from_image(np.zeros(5))
    with pytest.raises(InputError):
        from_image(np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError):
        from_image(big, 50, 10)


def test_errors():
    with pytest.raises(InputError):
        make_specimen("cells", (16, 16))
    with pytest.raises(InputError):
        make_specimen("puncta", (16,))
    with pytest.raises(InputError):
        make_specimen("puncta", (16, 16), 0, colour="red")
    with pytest.raises(InputError):
        make_specimen("nuclei", (16, 16), 0, density=-1)
    with pytest.raises(InputError):
        make_specimen("filaments", (4, 16, 16), 0, voxel_aspect=0)


def test_texture_is_a_transformed_natural_image():
    from sharpscope.physics.specimens import TEXTURE_IMAGES, _texture_bank, texture

    bank = _texture_bank()
    assert len(bank) == len(TEXTURE_IMAGES) >= 10
    assert all(b.ndim == 2 and float(b.min()) == 0 and float(b.max()) == 1 for b in bank)
    a = make_specimen("texture", (48, 40), 3)
    np.testing.assert_array_equal(a, make_specimen("texture", (48, 40), 3))
    assert a.shape == (48, 40) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    xs = [texture((64, 64), s).numpy() for s in range(40)]
    # varied: different images, zooms, gammas; some fields are sparse (mostly exactly 0)
    assert len({round(float(x.mean()), 3) for x in xs}) > 30
    sparse = [float((x == 0).mean()) for x in xs]
    assert 5 <= sum(f > 0.4 for f in sparse) <= 30
    # multi-scale texture: far more high-frequency energy than a procedural nucleus field
    def hf(x):
        f = np.abs(np.fft.fft2(x - x.mean())) ** 2
        fy = np.fft.fftfreq(x.shape[0])[:, None]
        fx = np.fft.fftfreq(x.shape[1])[None, :]
        return f[np.hypot(fy, fx) > 0.25].sum() / max(f.sum(), 1e-12)
    nuclei = [make_specimen("nuclei", (64, 64), s) for s in range(40)]
    assert np.median([hf(x) for x in xs]) > 3 * np.median([hf(x) for x in nuclei])
    with pytest.raises(InputError, match="2-D only"):
        texture((4, 16, 16), 0)
