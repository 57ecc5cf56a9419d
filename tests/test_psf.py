"""PSFs: deepinv conventions, textbook optics, differentiability, the numpy API and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sharpscope.errors import ConfigError, SharpscopeError
from sharpscope.physics.psf import (
    confocal_psf,
    cutoff_frequency,
    make_psf,
    otf,
    pupil_psf,
    widefield_psf,
)

# --------------------------------------------------------------------------- helpers


def deepinv_style_reference(coeffs: dict[int, float], fc: float, size: int, n: int = 256):
    """Straightforward numpy PSF following deepinv's DiffractionBlurGenerator convention.

    Pupil plane sampled on linspace(-0.5, 0.5, n) cycles/pixel on both axes with
    meshgrid(indexing='xy') (x = columns, y = rows), coordinates divided by fc, a
    hard-edged disc, Noll polynomials written out by hand, phase exp(-2 pi i phi),
    then ifftshift(fft2(fftshift(.))), |.|^2, centre crop and normalisation.
    """
    lin = np.linspace(-0.5, 0.5, n)
    x, y = np.meshgrid(lin / fc, lin / fc, indexing="xy")
    r2 = x**2 + y**2
    table = {
        4: np.sqrt(3) * (2 * r2 - 1),
        5: 2 * np.sqrt(6) * x * y,
        6: np.sqrt(6) * (x**2 - y**2),
        7: np.sqrt(8) * y * (3 * r2 - 2),
        8: np.sqrt(8) * x * (3 * r2 - 2),
        9: np.sqrt(8) * y * (3 * x**2 - y**2),
        10: np.sqrt(8) * x * (x**2 - 3 * y**2),
        11: np.sqrt(5) * (6 * r2**2 - 6 * r2 + 1),
    }
    phi = sum((c * table[j] for j, c in coeffs.items()), np.zeros_like(x))
    pupil = (r2 <= 1.0) * np.exp(-2j * np.pi * phi)
    field = np.fft.ifftshift(np.fft.fft2(np.fft.fftshift(pupil)))
    intensity = np.abs(field) ** 2
    start = int(np.ceil((n - size) / 2))
    crop = intensity[start : start + size, start : start + size]
    return crop / crop.sum()


def theta_from(coeffs: dict[int, float], count: int = 8, start: int = 4) -> torch.Tensor:
    t = torch.zeros(1, count, dtype=torch.float64)
    for j, c in coeffs.items():
        t[0, j - start] = c
    return t


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def fwhm(profile, step: float = 1.0) -> float:
    """Full width at half maximum of a 1-D peak, by linear interpolation."""
    p = np.asarray(profile, dtype=float)
    c = int(np.argmax(p))
    half = p[c] / 2
    i = c
    while p[i] > half:
        i += 1
    right = i - 1 + (p[i - 1] - half) / (p[i - 1] - p[i])
    i = c
    while p[i] > half:
        i -= 1
    left = i + 1 - (p[i + 1] - half) / (p[i + 1] - p[i])
    return (right - left) * step


def centroid(h: np.ndarray) -> tuple[float, float]:
    s = h.shape[-1]
    pos = np.arange(s) - s // 2
    return float((h.sum(1) * pos).sum() / h.sum()), float((h.sum(0) * pos).sum() / h.sum())


def second_moments(h: np.ndarray) -> tuple[float, float]:
    s = h.shape[-1]
    pos = (np.arange(s) - s // 2) ** 2
    return float((h.sum(1) * pos).sum() / h.sum()), float((h.sum(0) * pos).sum() / h.sum())


# --------------------------------------------------------------------------- deepinv conventions

CASES = [
    ({}, 0.25),
    ({}, 0.125),
    ({4: 0.2}, 0.2),
    ({5: 0.15, 6: -0.1}, 0.18),
    ({7: 0.1, 8: 0.15}, 0.22),
    ({4: 0.3, 6: 0.3, 11: 0.1}, 0.15),
    ({9: -0.1, 10: 0.12, 4: -0.1}, 0.24),
]


@pytest.mark.parametrize("coeffs,fc", CASES)
def test_matches_deepinv_convention(coeffs, fc):
    ref = deepinv_style_reference(coeffs, fc, 33)
    ours = pupil_psf(theta_from(coeffs), fc, size=33)[0].numpy()
    assert rel_l2(ours, ref) < 0.03


def test_batch_with_per_sample_fc_matches_references():
    cases = CASES[2:6]
    theta = torch.cat([theta_from(c) for c, _ in cases])
    fc = torch.tensor([f for _, f in cases], dtype=torch.float64)
    batch = pupil_psf(theta, fc, size=25)
    assert batch.shape == (len(cases), 25, 25)
    for k, (coeffs, f) in enumerate(cases):
        assert rel_l2(batch[k].numpy(), deepinv_style_reference(coeffs, f, 25)) < 0.03
        single = pupil_psf(theta[k : k + 1], f, size=25, pupil_samples=64)[0]
        assert rel_l2(batch[k].numpy(), single.numpy()) < 5e-3


def test_defocus_coefficient_units_strehl():
    # on-axis intensity of a pure Z4 defocus c (waves RMS): sinc^2(2 sqrt(3) c) exactly
    h0 = pupil_psf(torch.zeros(1, 1, dtype=torch.float64), 0.25, size=129)[0].numpy()
    for c in (0.05, 0.1, 0.2):
        h = pupil_psf(torch.tensor([[c]], dtype=torch.float64), 0.25, size=129)[0].numpy()
        assert h.max() / h0.max() == pytest.approx(np.sinc(2 * np.sqrt(3) * c) ** 2, rel=0.01)


def test_orientation_tilt_moves_along_documented_axis():
    # Z2 = 2x (x = columns): phase exp(-2 pi i c 2 f_col / fc) shifts the PSF by -2c/fc columns
    c, fc = 0.1, 0.2
    h2 = pupil_psf(torch.tensor([[c]], dtype=torch.float64), fc, 65, noll_start=2)[0].numpy()
    h3 = pupil_psf(torch.tensor([[c]], dtype=torch.float64), fc, 65, noll_start=3)[0].numpy()
    cy, cx = centroid(h2)
    assert cx == pytest.approx(-2 * c / fc, rel=0.03) and abs(cy) < 1e-6
    assert np.unravel_index(h2.argmax(), h2.shape) == (32, 31)
    cy, cx = centroid(h3)
    assert cy == pytest.approx(-2 * c / fc, rel=0.03) and abs(cx) < 1e-6


def test_orientation_coma_and_astigmatism():
    # coma Z8 (x = columns): centroid = -(mean wavefront slope) = -sqrt(8) c / fc along columns
    c, fc = 0.05, 0.2
    h8 = pupil_psf(theta_from({8: c}), fc, 129)[0].numpy()
    cy, cx = centroid(h8)
    assert cx == pytest.approx(-np.sqrt(8) * c / fc, rel=0.08) and abs(cy) < 1e-6
    h7 = pupil_psf(theta_from({7: c}), fc, 129)[0].numpy()
    cy, cx = centroid(h7)
    assert cy == pytest.approx(-np.sqrt(8) * c / fc, rel=0.08) and abs(cx) < 1e-6
    # defocus + straight astigmatism: the wavefront is steeper along x (columns) -> wider there
    h = pupil_psf(theta_from({4: 0.25, 6: 0.25}), 0.2, 33)[0].numpy()
    var_rows, var_cols = second_moments(h)
    assert var_cols > 1.5 * var_rows
    h = pupil_psf(theta_from({4: 0.25, 6: -0.25}), 0.2, 33)[0].numpy()
    var_rows, var_cols = second_moments(h)
    assert var_rows > 1.5 * var_cols


def test_pupil_psf_basic_properties():
    theta = (torch.rand(5, 8, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.3
    h = pupil_psf(theta, 0.2, size=32)
    assert h.shape == (5, 32, 32) and h.dtype == torch.float32
    np.testing.assert_allclose(h.sum((-2, -1)).numpy(), 1.0, rtol=1e-5)
    assert bool((h >= 0).all())
    flat = pupil_psf(torch.zeros(1, 0), 0.2, size=32)[0].numpy()  # K = 0: Airy pattern
    assert np.unravel_index(flat.argmax(), flat.shape) == (16, 16)
    # unaberrated: symmetric under both flips and the transpose (odd size, centred)
    a = pupil_psf(torch.zeros(1, 3), 0.17, size=31)[0].numpy()
    np.testing.assert_allclose(a, a[::-1], atol=1e-7)
    np.testing.assert_allclose(a, a[:, ::-1], atol=1e-7)
    np.testing.assert_allclose(a, a.T, atol=1e-7)


def test_pupil_psf_is_differentiable():
    theta = (
        torch.rand(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5
    ) * 0.4
    theta.requires_grad_(True)
    fc = torch.tensor([0.2, 0.15], dtype=torch.float64, requires_grad=True)

    def fn(t, f):
        return pupil_psf(t, f, size=7, pupil_samples=12)

    assert torch.autograd.gradcheck(fn, (theta, fc), eps=1e-6, atol=1e-5)
    loss = (
        pupil_psf(theta, 0.2, size=9) * torch.arange(81.0, dtype=torch.float64).view(9, 9)
    ).sum()
    loss.backward()
    assert theta.grad is not None and bool(torch.isfinite(theta.grad).all())


def test_pupil_psf_errors():
    with pytest.raises(ConfigError):
        pupil_psf(torch.zeros(1, 2), 0.6)
    with pytest.raises(ConfigError):
        pupil_psf(torch.zeros(1, 2), -0.1)
    with pytest.raises(ConfigError):
        pupil_psf(torch.zeros(2), 0.2)
    with pytest.raises(ConfigError):
        pupil_psf(torch.zeros(1, 2), 0.2, size=0)
    with pytest.raises(ConfigError):
        pupil_psf(torch.zeros(2, 2), torch.tensor([0.1, 0.2, 0.3]))


# --------------------------------------------------------------------------- optics


@pytest.mark.parametrize(
    "na,wavelength,n", [(1.0, 500.0, 1.33), (1.4, 520.0, 1.518), (0.5, 600.0, 1.0)]
)
def test_widefield_lateral_fwhm(na, wavelength, n):
    pixel = 0.04 * wavelength / 1000.0 / na  # ~13 pixels across the FWHM
    h = widefield_psf(na, wavelength, pixel, n, size=41).numpy()
    expected = 0.514 * wavelength / 1000.0 / na
    assert fwhm(h[20], pixel) == pytest.approx(expected, rel=0.03)
    assert fwhm(h[:, 20], pixel) == pytest.approx(expected, rel=0.03)
    assert h.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(h, h[::-1], atol=1e-8)
    np.testing.assert_allclose(h, h[:, ::-1], atol=1e-8)


def test_otf_support_and_shape():
    na, wavelength, pixel = 1.0, 500.0, 0.05
    h = widefield_psf(na, wavelength, pixel, 1.33, size=128, dtype=torch.float64).numpy()
    mag = otf(h)
    freqs = np.fft.fftshift(np.fft.fftfreq(128)) / pixel  # cycles/um
    fy, fx = np.meshgrid(freqs, freqs, indexing="ij")
    s = np.hypot(fy, fx) / (2 * na / (wavelength / 1000.0))  # in units of the support 2 NA / lambda
    closed = np.where(
        s < 1,
        2 / np.pi * (np.arccos(np.clip(s, 0, 1)) - s * np.sqrt(np.clip(1 - s * s, 0, 1))),
        0.0,
    )
    assert np.abs(mag - closed).max() < 0.03
    assert mag[s > 1.05].max() < 2e-3  # nothing transmitted beyond 2 NA / lambda
    assert mag[s < 0.9].min() > 0.02  # everything transmitted inside


@pytest.mark.parametrize("na,n", [(0.8, 1.33), (1.2, 1.33), (1.4, 1.518)])
def test_widefield_axial_fwhm(na, n):
    wavelength, dz = 500.0, 0.04
    h = widefield_psf(na, wavelength, 0.05, n, size=9, z_planes=121, z_step=dz).numpy()
    assert h.shape == (121, 9, 9) and h.sum() == pytest.approx(1.0, rel=1e-5)
    expected = 0.88 * wavelength / 1000.0 / (n - np.sqrt(n * n - na * na))
    assert fwhm(h[:, 4, 4], dz) == pytest.approx(expected, rel=0.10)
    np.testing.assert_allclose(h, h[::-1], atol=1e-9)  # unaberrated: symmetric about focus
    assert int(h[:, 4, 4].argmax()) == 60


def test_widefield_zernike_matches_pupil_psf_and_focal_plane():
    coeffs = [0.05, -0.1, 0.02, 0.08]
    fc = cutoff_frequency(1.2, 520.0, 0.08)
    a = widefield_psf(1.2, 520.0, 0.08, 1.33, size=25, zernike=coeffs).numpy()
    b = pupil_psf(torch.tensor([coeffs]), fc, size=25)[0].numpy()
    assert rel_l2(a, b) < 1e-3
    stack = widefield_psf(1.2, 520.0, 0.08, 1.33, size=25, z_planes=5, z_step=0.2).numpy()
    focal = widefield_psf(1.2, 520.0, 0.08, 1.33, size=25).numpy()
    assert rel_l2(stack[2] / stack[2].sum(), focal) < 1e-4


def test_defocus_sign_positive_z_is_negative_z4():
    # paraxially, the plane at +z equals a Noll defocus Z4 = -z fc^2 / (4 sqrt(3) kb) (z in
    # pixels); spherical aberration breaks the +-z symmetry and so pins the sign
    na, lam, pixel, n, z, sph = 0.3, 500.0, 0.2, 1.33, 1.5, 0.1
    fc, kb = na * pixel * 1000 / lam, n * pixel * 1000 / lam
    zern = [0.0] * 7 + [sph]
    stack = widefield_psf(na, lam, pixel, n, size=33, z_planes=3, z_step=z, zernike=zern).numpy()
    c4 = -(z / pixel) * fc**2 / (4 * np.sqrt(3) * kb)
    same = pupil_psf(theta_from({4: c4, 11: sph}), fc, 33)[0].numpy()
    other = pupil_psf(theta_from({4: -c4, 11: sph}), fc, 33)[0].numpy()
    assert rel_l2(stack[2] / stack[2].sum(), same) < 0.01
    assert rel_l2(stack[2] / stack[2].sum(), other) > 0.1
    assert rel_l2(stack[0] / stack[0].sum(), other) < 0.01


def test_confocal_lateral_fwhm_and_pinhole_limits():
    na, lam, n = 1.0, 500.0, 1.33
    pixel = 0.04 * lam / 1000.0 / na
    point = confocal_psf(na, lam, lam, pixel, 0.0, n, size=41).numpy()
    assert fwhm(point[20], pixel) == pytest.approx(0.37 * lam / 1000.0 / na, rel=0.10)
    assert point.sum() == pytest.approx(1.0, rel=1e-5)
    # ideal point detector: exactly excitation PSF x emission PSF
    wf = widefield_psf(na, lam, pixel, n, size=41).numpy()
    assert rel_l2(point, wf * wf / (wf * wf).sum()) < 1e-4
    # the m-rBCR settings: 0.1 um (confocal) and 1000 um (open pinhole -> excitation PSF)
    small = confocal_psf(na, 488.0, 520.0, 0.02, 0.1, n, size=33).numpy()
    assert fwhm(small[16], 0.02) < 0.8 * 0.514 * 0.504 / na
    wide = confocal_psf(na, 488.0, 520.0, 0.02, 1000.0, n, size=33).numpy()
    assert rel_l2(wide, widefield_psf(na, 488.0, 0.02, n, size=33).numpy()) < 1e-3
    widths = [
        fwhm(confocal_psf(na, 488.0, 520.0, 0.02, p, n, size=33).numpy()[16], 0.02)
        for p in (0.0, 0.2, 0.5, 2.0)
    ]
    assert widths == sorted(widths) and widths[-1] > 1.2 * widths[0]


def test_confocal_3d():
    h = confocal_psf(1.2, 488.0, 520.0, 0.05, 0.2, 1.33, size=15, z_planes=31, z_step=0.05).numpy()
    assert h.shape == (31, 15, 15) and h.sum() == pytest.approx(1.0, rel=1e-5)
    wf = widefield_psf(1.2, 520.0, 0.05, 1.33, size=15, z_planes=31, z_step=0.05).numpy()
    # optical sectioning: the confocal PSF is axially narrower than the widefield one
    assert fwhm(h[:, 7, 7], 0.05) < 0.85 * fwhm(wf[:, 7, 7], 0.05)
    np.testing.assert_allclose(h, h[::-1], atol=1e-9)


# --------------------------------------------------------------------------- numpy API


def test_make_psf_modes():
    h = make_psf(na=1.4, wavelength=520, pixel_size=0.065, refractive_index=1.518)
    assert h.shape == (33, 33) and h.dtype == np.float32
    assert float(h.sum()) == pytest.approx(1.0, rel=1e-5)
    z = make_psf(na=1.0, wavelength=520, pixel_size=0.1, z_step=0.2, z_planes=7, size=17)
    assert z.shape == (7, 17, 17)
    c = make_psf(
        na=1.0, wavelength=520, pixel_size=0.05, confocal=True, pinhole=0.2, excitation=488, size=17
    )
    assert c.shape == (17, 17)
    f = make_psf(fc=0.2, zernike=[0.0, 0.1], size=21)
    ref = deepinv_style_reference({5: 0.1}, 0.2, 21)
    assert rel_l2(f, ref) < 0.03


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(na=1.5, wavelength=500, pixel_size=0.1),  # NA > n
        dict(na=1.0, wavelength=500, pixel_size=0.1, refractive_index=1.0),  # NA = n
        dict(na=1.0, wavelength=500, pixel_size=0.1, size=-3),
        dict(na=1.0, wavelength=500, pixel_size=-0.1),
        dict(na=1.0, wavelength=0, pixel_size=0.1),
        dict(na=1.0, wavelength=500, pixel_size=0.4),  # fc = 0.8
        dict(fc=0.6),
        dict(fc=0.2, na=1.0),
        dict(fc=0.2, z_planes=3, z_step=0.1),
        dict(na=1.0, wavelength=500),
        dict(na=1.0, wavelength=500, pixel_size=0.1, z_planes=5),
        dict(na=1.0, wavelength=500, pixel_size=0.1, z_planes=0, z_step=0.1),
        dict(na=1.0, wavelength=500, pixel_size=0.1, confocal=True),
        dict(na=1.0, wavelength=500, pixel_size=0.1, pinhole=1.0),
        dict(na=1.0, wavelength=500, pixel_size=0.1, confocal=True, pinhole=-1.0),
        dict(fc=0.2, zernike=[[0.1]]),
        dict(fc=0.2, zernike=[float("nan")]),
    ],
)
def test_make_psf_bad_input(kwargs):
    with pytest.raises(SharpscopeError) as info:
        make_psf(**kwargs)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- CLI


def test_cli_writes_psf_and_plot(tmp_path, capsys):
    from sharpscope.cli import main
    from sharpscope.io import read_image

    out = tmp_path / "psf.tif"
    png = tmp_path / "psf.png"
    argv = ["psf", "-o", str(out), "--na", "1.2", "--wavelength", "520", "--pixel-size", "0.08"]
    argv += ["--z-step", "0.2", "--z-planes", "5", "--size", "17", "--zernike=-0.05,0.1"]
    argv += ["--plot", str(png)]
    assert main(argv) == 0
    img = read_image(out)
    assert img.axes == "ZYX" and img.data.shape == (5, 17, 17)
    assert img.pixel_size["X"] == pytest.approx(0.08) and img.pixel_size["Z"] == pytest.approx(0.2)
    expected = make_psf(
        na=1.2,
        wavelength=520,
        pixel_size=0.08,
        z_step=0.2,
        z_planes=5,
        size=17,
        zernike=[-0.05, 0.1],
    )
    np.testing.assert_allclose(img.data, expected, rtol=1e-6, atol=1e-9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out

    out2 = tmp_path / "fc.tif"
    assert main(["psf", "-o", str(out2), "--fc", "0.2", "--size", "21"]) == 0
    img = read_image(out2)
    assert img.axes == "YX" and img.data.shape == (21, 21)
    assert float(img.data.sum()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    "extra",
    [
        ["--fc", "0.2", "--na", "1.0"],
        ["--na", "1.5", "--wavelength", "500", "--pixel-size", "0.1"],
        ["--fc", "0.7"],
        ["--fc", "0.2", "--size", "-5"],
        ["--fc", "0.2", "--zernike", "a,b"],
        ["--na", "1.0", "--wavelength", "500", "--pixel-size", "0.1", "--confocal"],
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, extra):
    from sharpscope.cli import main

    out = tmp_path / "x.tif"
    assert main(["psf", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sharpscope: error:") and "\n" not in err
    assert not out.exists()


DEEPINV_REFERENCE = Path(__file__).resolve().parents[2] / "shared/deepinv-reference"


@pytest.mark.skipif(
    not (DEEPINV_REFERENCE / "deepinv_psf_reference.npz").exists(),
    reason="../shared/deepinv-reference is not beside the repository",
)
def test_same_psf_as_the_real_deepinv():
    """The 16 PSFs computed with deepinv 0.5.0 itself (not a transcription of it)."""
    ref = np.load(DEEPINV_REFERENCE / "deepinv_psf_reference.npz")
    assert list(ref["noll"]) == list(range(4, 12))
    errors, transposed = [], []
    for fc, coeffs, target in zip(ref["fc"], ref["coeffs"], ref["psf"], strict=True):
        theta = torch.tensor(coeffs[None], dtype=torch.float64)
        h = pupil_psf(theta, float(fc), size=target.shape[0])[0].numpy()
        errors.append(rel_l2(h, target))
        transposed.append(rel_l2(h.T, target))
    assert max(errors) <= 0.03, errors
    # the cases without a symmetry that hides it tell the convention apart
    assert min(transposed[3:]) > 0.25, transposed
