"""Blind PSF identification over the field and blind deconvolution (sharpscope.blind).

The grid, flag and fill logic is tested with analytic identifiers built from the
project's own Zernike PSF model (they know the true PSFs); the bundled network is
tested for the output contract and the blank-image behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpscope.blind import (
    PSFEstimate,
    aberration_free_psf,
    blind_deconvolve,
    blind_richardson_lucy,
    ee50,
    eigen_psfs,
    estimate_psf,
    fwhm,
    psf_snr,
    reblur_psnr,
    relative_l2,
    space_varying_deconvolve,
    structure_score,
)
from sharpscope.blind.field import _nearest_fill
from sharpscope.deconv import deconvolve
from sharpscope.errors import ConfigError, InputError
from sharpscope.estimate import NoiseEstimate
from sharpscope.metrics import psnr
from sharpscope.physics.blur import SpaceVaryingBlur, fft_convolve
from sharpscope.physics.psf import pupil_psf
from sharpscope.physics.specimens import make_specimen

torch.set_num_threads(1)

PSF_A = [0.15, 0.0, 0.08, 0.0, 0.0, 0.0, 0.0, 0.0]  # defocus + straight astigmatism
PSF_B = [-0.05, 0.12, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]  # oblique astigmatism + coma


def zpsf(coeffs, fc=0.2, size=33) -> np.ndarray:
    theta = torch.tensor([coeffs], dtype=torch.float64)
    return pupil_psf(theta, fc, size=size)[0].numpy()


class Prediction:
    def __init__(self, psf, zernike, fc, noise):
        self.psf, self.zernike, self.fc, self.noise = psf, zernike, fc, noise
        self.noll = tuple(range(4, 4 + zernike.shape[1]))


class OracleIdentifier:
    """Analytic identifier: the Zernike PSF picked by ``rule(patch)``; records its calls."""

    conditioned = True

    def __init__(self, rule, patch_size=64, psf_size=33):
        self.rule, self.patch_size, self.psf_size = rule, patch_size, psf_size
        self.calls: list[tuple[int, object, object]] = []

    def predict(self, patches, fc=None, theta_max=None):
        self.calls.append((len(patches), fc, theta_max))
        coeffs = [self.rule(p) for p in patches]
        f = 0.2 if fc is None else float(fc)
        psf = np.stack([zpsf(c, f, self.psf_size) for c in coeffs]).astype(np.float32)
        n = len(patches)
        return Prediction(
            psf,
            np.asarray(coeffs, np.float32),
            np.full(n, f, np.float32),
            np.tile(np.float32([0.01, 0.002]), (n, 1)),
        )


def blurred(psf, shape=(192, 192), seed=0, photons=200.0, kind="mixed"):
    """A specimen blurred by ``psf`` with Poisson noise (``photons`` at the peak)."""
    x = make_specimen(kind, shape, generator=seed).astype(np.float64)
    y = fft_convolve(x, psf, boundary="reflect")
    rng = np.random.default_rng(seed)
    return x, y, (rng.poisson(np.clip(y, 0, None) * photons) / photons).astype(np.float32)


# --------------------------------------------------------------------------- measures
def test_fwhm_and_ee50_of_the_airy_pattern():
    fc = 0.125
    h = aberration_free_psf(fc, 33)
    # Airy: FWHM = 0.514 wavelength / NA = 0.514 / fc pixels; EE50 radius = 0.26 / fc
    assert fwhm(h) == pytest.approx(0.514 / fc, rel=0.05)
    assert ee50(h) == pytest.approx(0.2613 / fc, rel=0.1)
    assert fwhm(zpsf([0.3, 0, 0, 0, 0, 0, 0, 0], fc)) > 1.1 * fwhm(h)  # defocus widens it


def test_psf_error_measures():
    h = zpsf(PSF_A)
    g = zpsf(PSF_B)
    assert relative_l2(h, h) == 0.0
    assert relative_l2(g, h) == pytest.approx(np.linalg.norm(g - h) / np.linalg.norm(h), rel=1e-5)
    assert psf_snr(g, h) == pytest.approx(-20 * np.log10(relative_l2(g, h)), rel=1e-6)
    x = make_specimen("filaments", (64, 64), generator=0)
    assert reblur_psnr(h, h, x) > 100
    assert 20 < reblur_psnr(g, h, x) < 60


# --------------------------------------------------------------------------- structure
def test_structure_score_separates_structure_from_noise_and_gradients():
    rng = np.random.default_rng(0)
    noise = NoiseEstimate(gain=0.0, sigma=1.0)
    blank = rng.normal(100.0, 1.0, (100, 64, 64))
    s_blank = structure_score(blank, noise, fc=0.2)
    # pure noise: a standard score (0 +- 1), far below the default threshold of 5
    assert abs(s_blank.mean()) < 0.5 and 0.6 < s_blank.std() < 1.5 and s_blank.max() < 4
    # Poisson noise, judged with its own model
    s_poisson = structure_score(rng.poisson(20.0, (50, 64, 64)), NoiseEstimate(1.0, 0.0), fc=0.2)
    assert s_poisson.max() < 4
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = 100.0 + 0.3 * xx + 0.2 * yy + rng.normal(0, 1.0, (64, 64))
    spec = make_specimen("mixed", (64, 64), generator=1) * 30
    textured = fft_convolve(spec, aberration_free_psf(0.2, 33)) + rng.normal(100, 1.0, (64, 64))
    s = structure_score(np.stack([ramp, textured]), noise, fc=0.2)
    assert abs(s[0]) < 4  # a smooth illumination gradient is not structure
    assert s[1] > 50
    # a noise model that is far too low cannot make noise look structured (the corner floor)
    assert structure_score(blank[:20], NoiseEstimate(0.0, 0.3), fc=0.2).max() < 4
    # noise-free: the floor judges (a constant patch scores 0, a textured one high)
    s0 = structure_score(np.stack([np.full((64, 64), 3.0), textured]), NoiseEstimate(0, 0), 0.2, 1e-6)
    assert s0[0] <= 0 and s0[1] > 50


def test_blank_or_constant_image_never_gives_a_psf():
    ident = OracleIdentifier(lambda p: PSF_A)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="no part of the image has enough structure"):
        estimate_psf(rng.poisson(50.0, (128, 128)).astype(np.float32), fc=0.2, identifier=ident)
    with pytest.raises(InputError, match="constant"):
        estimate_psf(np.full((128, 128), 7.0), fc=0.2, identifier=ident)
    assert ident.calls == []  # the identifier was never asked


# --------------------------------------------------------------------------- single PSF
def test_single_psf_contract_and_noise():
    h = zpsf(PSF_A)
    _, _, y = blurred(h, photons=300.0)
    ident = OracleIdentifier(lambda p: PSF_A)
    est = estimate_psf(y, fc=0.2, theta_max=0.2, identifier=ident)
    assert isinstance(est, PSFEstimate) and est.grid is None
    assert est.psf.shape == (33, 33) and est.psf.dtype == np.float32
    assert abs(float(est.psf.sum()) - 1) < 1e-5 and est.psf.min() >= 0
    assert np.unravel_index(est.psf.argmax(), est.psf.shape) == (16, 16)
    np.testing.assert_allclose(est.psf, h, atol=1e-6)  # the median of identical PSFs
    np.testing.assert_allclose(est.zernike[0, 0], PSF_A, atol=1e-6)
    assert est.fc[0, 0] == pytest.approx(0.2) and est.fc_given
    assert est.fwhm[0, 0] == pytest.approx(fwhm(h))
    assert est.ee50[0, 0] == pytest.approx(ee50(h))
    # the image's own noise: Poisson gain 1 / 300 in these units
    assert est.noise.gain == pytest.approx(1 / 300, rel=0.3)
    assert est.noise_identifier == pytest.approx((0.01, 0.002))
    assert est.n_patches[0, 0] == 16 and est.n_valid[0, 0] >= 12  # 192 px: 4 x 4 patches of 64 (cap)
    assert 0.7 < est.confidence[0, 0] <= 1.0
    # every identifier call got the cut-off and the bound
    assert all(fc == 0.2 and t == 0.2 for _, fc, t in ident.calls)
    d = est.to_dict()
    assert d["fc"] == [pytest.approx(0.2)] and len(d["zernike"][0]) == 8 and d["grid"] is None


def test_optics_give_fc_and_bad_optics_are_refused():
    _, _, y = blurred(zpsf(PSF_A), shape=(96, 96))
    ident = OracleIdentifier(lambda p: PSF_A)
    est = estimate_psf(y, na=1.2, wavelength=600.0, pixel_size=0.1, identifier=ident)
    assert ident.calls[-1][1] == pytest.approx(0.2) and est.fc[0, 0] == pytest.approx(0.2)
    est = estimate_psf(y, identifier=ident)  # unknown: the identifier's own estimate
    assert ident.calls[-1][1] is None and not est.fc_given
    for kw, msg in [
        ({"fc": 0.2, "na": 1.2}, "either fc or the optics"),
        ({"na": 1.2, "wavelength": 600.0}, "missing: pixel size"),
        ({"fc": 0.7}, r"fc must be in \(0, 0.5\]"),
        ({"fc": 0.2, "theta_max": -1}, "theta_max"),
        ({"fc": 0.2, "grid": (2, 0)}, "grid"),
        ({"fc": 0.2, "grid": "2x2"}, "grid"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            estimate_psf(y, identifier=ident, **kw)
    with pytest.raises(InputError, match="too small"):
        estimate_psf(y[:20, :20], fc=0.2, identifier=ident)
    with pytest.raises(InputError, match="NaN"):
        estimate_psf(np.where(y > 0.5, np.nan, y), fc=0.2, identifier=ident)


def test_stack_patches_are_pooled_and_small_images_are_mirrored():
    h = zpsf(PSF_A)
    _, _, y = blurred(h, shape=(48, 80))
    ident = OracleIdentifier(lambda p: PSF_A)  # patch size 64 > 48 rows
    est = estimate_psf(np.stack([y, y]), fc=0.2, axes="ZYX", identifier=ident)
    assert est.psf.shape == (33, 33) and est.n_patches[0, 0] == 4  # 2 planes x 2 columns
    np.testing.assert_allclose(est.psf, h, atol=1e-6)


# --------------------------------------------------------------------------- grids
def _two_halves(shape=(128, 256), seed=0):
    """Left half blurred by PSF_A at intensity ~1, right half by PSF_B at ~4."""
    x = make_specimen("mixed", shape, generator=seed).astype(np.float64)
    ya = fft_convolve(x, zpsf(PSF_A))
    yb = fft_convolve(x, zpsf(PSF_B))
    half = shape[1] // 2
    y = np.concatenate([ya[:, :half] + 1.0, 4.0 * yb[:, half:] + 4.0], axis=1)
    rng = np.random.default_rng(seed)
    return (rng.poisson(200 * y) / 200).astype(np.float32)


def test_grid_follows_the_field_and_its_nodes():
    y = _two_halves()
    ident = OracleIdentifier(lambda p: PSF_A if p.mean() < 2.5 else PSF_B)
    est = estimate_psf(y, fc=0.2, grid=(1, 2), identifier=ident)
    assert est.psf.shape == (1, 2, 33, 33) and est.stack().shape == (2, 33, 33)
    np.testing.assert_allclose(est.psfs[0, 0], zpsf(PSF_A), atol=1e-6)
    np.testing.assert_allclose(est.psfs[0, 1], zpsf(PSF_B), atol=1e-6)
    assert not est.filled.any()
    # the tile centres are the nodes of the product-convolution blur
    np.testing.assert_allclose(est.centers[0, 0], [63.5, 63.5])
    np.testing.assert_allclose(est.centers[0, 1], [63.5, 191.5])
    assert est.bounds[0, 1].tolist() == [0, 128, 128, 256]
    assert est.to_dict()["centers"] == [[63.5, 63.5], [63.5, 191.5]]


def test_blank_tile_is_flagged_and_filled_from_its_neighbours():
    garbage = [0.6, -0.5, 0.5, 0.4, 0.4, 0.0, 0.0, 0.3]  # what a fooled identifier says

    def rule(p):  # confident about anything: returns garbage for a structureless patch
        return garbage if p.std() < 1.05 * np.sqrt(p.mean() / 300) else PSF_A

    x = make_specimen("mixed", (192, 192), generator=3, density=3.0)
    y = fft_convolve(x, zpsf(PSF_A)) + 0.5
    y[64:128, 64:128] = 0.5  # a blank background tile in the middle
    y = (np.random.default_rng(0).poisson(300 * y) / 300).astype(np.float32)
    ident = OracleIdentifier(rule)
    est = estimate_psf(y, fc=0.2, grid=(3, 3), identifier=ident)
    assert est.filled[1, 1] and est.filled.sum() == 1
    assert est.confidence[1, 1] == 0.0 and est.n_valid[1, 1] == 0 and est.n_patches[1, 1] >= 1
    assert est.structure[1, 1] < 5.0 <= est.structure[0, 1]
    # filled from the four nearest tiles, never the garbage
    expect = est.psfs[[0, 1, 1, 2], [1, 0, 2, 1]].mean(axis=0)
    np.testing.assert_allclose(est.psfs[1, 1], expect / expect.sum(), atol=1e-6)
    assert relative_l2(est.psfs[1, 1], zpsf(garbage)) > 0.5
    assert relative_l2(est.psfs[1, 1], zpsf(PSF_A)) < 1e-4
    assert abs(float(est.psfs[1, 1].sum()) - 1) < 1e-5
    # the blank patch was never given to the identifier
    assert sum(n for n, _, _ in ident.calls) == int(est.patches["valid"].sum())


def test_eigen_psfs_of_a_two_psf_grid():
    y = _two_halves()
    ident = OracleIdentifier(lambda p: PSF_A if p.mean() < 2.5 else PSF_B)
    est = estimate_psf(y, fc=0.2, grid=(1, 2), identifier=ident)
    comp, coef, share = eigen_psfs(est, rank=1)
    assert comp.shape == (2, 33, 33) and coef.shape == (1, 2, 2) and share == pytest.approx(1.0)
    assert abs(float(comp[0].sum()) - 1) < 1e-5 and abs(float(comp[1].sum())) < 1e-5
    np.testing.assert_allclose(np.einsum("ijk,kyx->ijyx", coef, comp), est.psfs, atol=1e-6)
    mean_only, _, none = eigen_psfs(est, rank=0)
    np.testing.assert_allclose(mean_only[0], est.psfs.mean(axis=(0, 1)), atol=1e-6)
    assert none == 0.0
    with pytest.raises(ConfigError, match="rank must be between 0 and 1"):
        eigen_psfs(est, rank=2)


def test_nearest_fill_uses_the_nearest_valid_cells():
    values = np.arange(9, dtype=float).reshape(3, 3)
    valid = np.ones((3, 3), bool)
    valid[0, 0] = valid[1, 1] = False
    out = _nearest_fill(values, valid)
    assert out[0, 0] == pytest.approx((1 + 3) / 2)  # neighbours (0, 1) and (1, 0)
    assert out[1, 1] == pytest.approx((1 + 3 + 5 + 7) / 4)
    assert out[2, 2] == 8


# --------------------------------------------------------------------------- deconvolution
def test_space_varying_rl_with_identical_psfs_is_plain_rl():
    h = zpsf(PSF_A)
    _, _, y = blurred(h, shape=(64, 64))
    grid = np.broadcast_to(h, (2, 2, 33, 33))
    sv = space_varying_deconvolve(y, grid, iterations=5)
    plain = deconvolve(y, h, method="rl", iterations=5, boundary="reflect")
    np.testing.assert_allclose(sv, plain, rtol=1e-3, atol=1e-4)


def test_blind_deconvolve_improves_a_blurred_image_single_and_grid():
    h = zpsf(PSF_A)
    x, _, y = blurred(h, shape=(128, 128), photons=100.0)
    ident = OracleIdentifier(lambda p: PSF_A)
    out, info = blind_deconvolve(y, fc=0.2, identifier=ident, return_info=True)
    assert info.rule in ("discrepancy", "cap") and info.iterations[0] >= 1
    assert psnr(out, x, 1.0) > psnr(y, x, 1.0) + 1.0
    assert "PSF estimated" in info.summary() and info.warning is None
    # a PSF far too wide cannot explain the data: the automatic stop says so
    wide = np.outer(*2 * [np.exp(-0.5 * (np.arange(-16, 17) / 5.0) ** 2)])

    class Wide(OracleIdentifier):
        def predict(self, patches, fc=None, theta_max=None):
            p = super().predict(patches, fc, theta_max)
            p.psf = np.broadcast_to(wide / wide.sum(), p.psf.shape).astype(np.float32)
            return p

    _, bad = blind_deconvolve(y, fc=0.2, identifier=Wide(lambda p: PSF_A), return_info=True)
    assert bad.rule == "cap" and bad.misfit > 1 and "does not explain the image" in bad.warning
    # a grid: space-varying RL with the estimated nodes
    two = _two_halves(seed=1)
    ident2 = OracleIdentifier(lambda p: PSF_A if p.mean() < 2.5 else PSF_B)
    out2, info2 = blind_deconvolve(two, fc=0.2, grid=(1, 2), identifier=ident2, return_info=True)
    assert out2.shape == two.shape and info2.estimate.grid == (1, 2)
    op = SpaceVaryingBlur(info2.estimate.psfs, two.shape)
    resid_in = np.mean((op.forward(torch.from_numpy(two)).numpy() - two) ** 2)
    resid_out = np.mean((op.forward(torch.from_numpy(out2)).numpy() - two) ** 2)
    assert resid_out < resid_in  # the deconvolved image explains the data better when re-blurred
    with pytest.raises(ConfigError, match="grid deconvolves with rl or rl-tv"):
        blind_deconvolve(two, fc=0.2, grid=(1, 2), identifier=ident2, method="wiener")


def test_alternating_blind_rl_fits_the_data():
    """The classical baseline fits y ~ h * x (its likelihood); it does not know what h should be."""
    h = zpsf([0.25, 0, 0, 0, 0, 0, 0, 0], fc=0.2)  # defocused
    _, _, y = blurred(h, shape=(128, 128), photons=2000.0, kind="puncta")
    init = aberration_free_psf(0.2, 33)
    est, obj = blind_richardson_lucy(y, fc=0.2, psf_size=33, outer=4)
    assert est.shape == (33, 33) and abs(float(est.sum()) - 1) < 1e-5 and obj.shape == y.shape
    assert est.min() >= 0 and obj.min() >= 0
    fit = np.linalg.norm(fft_convolve(obj, est) - y)
    start = np.linalg.norm(fft_convolve(y, init) - y)  # the initial pair (init, x = y)
    assert fit < 0.8 * start
    with pytest.raises(ConfigError, match="odd"):
        blind_richardson_lucy(y, psf_size=32)


# --------------------------------------------------------------------------- the network
def test_bundled_identifier_output_contract():
    pytest.importorskip("sharpscope.models.psfnet")
    from sharpscope.models.psfnet import load_identifier

    ident = load_identifier()
    x, _, y = blurred(zpsf(PSF_A), shape=(256, 256), photons=300.0)
    est = estimate_psf(y, fc=0.2, theta_max=0.2, identifier=ident, grid=(2, 2))
    s = ident.psf_size
    assert est.psfs.shape == (2, 2, s, s)
    np.testing.assert_allclose(est.psfs.sum(axis=(-2, -1)), 1.0, atol=1e-5)
    assert est.noll == tuple(ident.predict(y[None, :128, :128]).noll)
    single = estimate_psf(y, identifier=ident)  # fc unknown
    peak = np.unravel_index(single.psf.argmax(), single.psf.shape)
    assert max(abs(peak[0] - s // 2), abs(peak[1] - s // 2)) <= 2
    assert 0.02 < float(single.fc[0, 0]) <= 0.5 and not single.fc_given
    with pytest.raises(InputError, match="no part of the image"):
        estimate_psf(np.random.default_rng(0).poisson(30.0, (256, 256)), identifier=ident)


def test_bench_blind_quick_runs_end_to_end(capsys):
    import runpy
    from pathlib import Path

    pytest.importorskip("sharpscope.models.psfnet")
    root = Path(__file__).resolve().parents[1]
    doc = root / "docs" / "benchmarks.md"
    before = doc.read_text() if doc.exists() else None
    main = runpy.run_path(str(root / "benchmarks" / "bench_blind.py"))["main"]
    assert main(["--quick"]) == 0
    text = capsys.readouterr().out
    assert "## Blind PSF identification and blind deconvolution (whole images)" in text
    for row in ("| simulated | training range | network, fc/theta_max known |",
                "| real (OOD) |", "aberration-free PSF of the true fc", "alternating blind RL",
                "true PSF", "Identification time (one thread)"):
        assert row in text
    assert (doc.read_text() if doc.exists() else None) == before
