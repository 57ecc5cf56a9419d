"""Metrics against scikit-image and closed-form values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import shannon_entropy
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from sharpscope import metrics as M
from sharpscope.errors import AxesError, InputError


def _pair(shape, seed=0, noise=0.1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    # a smooth structured image plus noise, not just white noise
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    gt = 0.5 + 0.4 * np.sin(sum(grids)) * np.cos(grids[-1] * 2)
    pred = gt + noise * rng.standard_normal(shape)
    return pred.astype(dtype), gt.astype(dtype)


@pytest.mark.parametrize("shape", [(64, 80), (33, 47), (12, 30, 41)])
@pytest.mark.parametrize("data_range", [1.0, 2.5])
def test_psnr_ssim_match_skimage(shape, data_range):
    pred, gt = _pair(shape)
    ref_psnr = peak_signal_noise_ratio(gt, pred, data_range=data_range)
    ref_ssim = structural_similarity(gt, pred, data_range=data_range)
    assert abs(M.psnr(pred, gt, data_range) - ref_psnr) < 1e-4
    assert abs(M.ssim(pred, gt, data_range) - ref_ssim) < 1e-4


def test_float32_inputs_and_derived_range_match_skimage():
    pred, gt = _pair((50, 60), seed=3, dtype=np.float32)
    r = float(gt.max() - gt.min())
    assert abs(M.psnr(pred, gt) - peak_signal_noise_ratio(gt, pred, data_range=r)) < 1e-4
    assert abs(M.ssim(pred, gt) - structural_similarity(gt, pred, data_range=r)) < 1e-4


def test_ssim_integer_images_and_window():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (40, 40)).astype(np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(gt, pred, data_range=255, win_size=11)
    assert abs(M.ssim(pred, gt, 255, win_size=11) - ref) < 1e-4


def test_ssim_planes_average_when_spatial_ndim_2():
    pred, gt = _pair((8, 32, 32), seed=2)
    ref = np.mean(
        [structural_similarity(g, p, data_range=1.0) for g, p in zip(gt, pred, strict=True)]
    )
    assert abs(M.ssim(pred, gt, 1.0, spatial_ndim=2) - ref) < 1e-4
    # and differs from the 3-D SSIM of the same volume
    assert abs(M.ssim(pred, gt, 1.0) - ref) > 1e-3


def test_psnr_closed_form_and_identical():
    gt = np.zeros((8, 8))
    assert M.psnr(gt + 0.1, gt, data_range=1.0) == pytest.approx(20.0)
    x = np.random.default_rng(0).random((8, 8))
    assert M.psnr(x, x) == math.inf
    assert M.ssim(x, x, 1.0) == pytest.approx(1.0)


def test_nrmse_matches_skimage_minmax():
    pred, gt = _pair((30, 30), seed=4)
    ref = normalized_root_mse(gt, pred, normalization="min-max")
    assert M.nrmse(pred, gt) == pytest.approx(ref, rel=1e-10)


def test_entropy_closed_forms_and_skimage():
    levels = np.arange(256, dtype=np.float64).reshape(16, 16)
    assert M.entropy(levels) == pytest.approx(8.0, abs=1e-12)
    # affine rescaling does not change the 8-bit image, hence the entropy
    assert M.entropy(levels * 0.01 - 3.0) == pytest.approx(8.0, abs=1e-12)
    assert M.entropy(np.full((10, 10), 3.7)) == 0.0
    # two equally frequent levels: 1 bit
    assert M.entropy(np.repeat([0.0, 1.0], 50)) == pytest.approx(1.0)
    u8 = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    u8[0, 0], u8[0, 1] = 0, 255  # full range: min-max scaling is the identity
    assert M.entropy(u8) == pytest.approx(shannon_entropy(u8), abs=1e-12)


def test_to_uint8_rounding():
    assert M.to_uint8([0.0, 0.5, 1.0]).tolist() == [0, 128, 255]
    assert M.to_uint8([2.0, 2.0]).tolist() == [0, 0]


def test_frc_identical_is_one_and_independent_noise_is_near_zero():
    rng = np.random.default_rng(0)
    a = rng.random((128, 128))
    f, c = M.frc(a, a)
    assert f[0] == 0 and f[-1] == pytest.approx(0.5)
    assert np.allclose(c, 1.0)
    f, c = M.frc(a, rng.random((128, 128)))
    # excluding DC (means are correlated), rings average to ~0 with spread ~ 1/sqrt(n)
    assert abs(c[1:].mean()) < 0.03
    assert np.abs(c[10:]).max() < 0.2
    # resolution of uncorrelated images is about the field size: the first ring fails
    assert M.frc_resolution(f, c) > 64


def test_frc_known_correlation_and_sign():
    rng = np.random.default_rng(1)
    s, n1, n2 = (rng.standard_normal((256, 256)) for _ in range(3))
    # two noisy copies of a white signal: FRC = SNR / (1 + SNR) = 0.5 at SNR 1
    f, c = M.frc(s + n1, s + n2)
    assert abs(c[5:].mean() - 0.5) < 0.02
    f, c = M.frc(-s, s)
    assert np.allclose(c[1:], -1.0)


def test_frc_resolution_of_a_blurred_copy_tracks_the_cutoff():
    # gt: white noise; pred: gt low-pass filtered at 0.2 cycles/pixel (ideal filter)
    rng = np.random.default_rng(2)
    gt = rng.standard_normal((128, 128))
    fy, fx = np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij")
    lp = np.hypot(fy, fx) <= 0.2
    pred = np.fft.ifft2(np.fft.fft2(gt) * lp).real + 0.05 * rng.standard_normal(gt.shape)
    f, c = M.frc(pred, gt)
    res = M.frc_resolution(f, c)
    assert 1 / 0.2 * 0.93 < res < 1 / 0.2 * 1.07
    assert M.frc_resolution(f, c, pixel_size=0.1) == pytest.approx(res * 0.1)


def test_frc_resolution_interpolation_and_nyquist():
    f = np.linspace(0, 0.5, 11)
    assert M.frc_resolution(f, 1 - 2 * f) == pytest.approx(7 / 3)
    assert M.frc_resolution(f, np.ones(11)) == pytest.approx(2.0)


def test_frc_3d_shells_and_pooled_planes():
    rng = np.random.default_rng(3)
    a = rng.random((16, 32, 32))
    f, c = M.frc(a, a)
    assert len(f) == 17 and np.allclose(c, 1.0)
    b = a + rng.random(a.shape)
    f2, c2 = M.frc(b, a, spatial_ndim=2)
    assert len(f2) == 17
    # pooled 2-D rings equal the per-plane sums
    num = den1 = den2 = 0
    for pa, pb in zip(a, b, strict=True):
        fa, fb = np.fft.fft2(pa), np.fft.fft2(pb)
        r = np.floor(np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32))) * 32 + 0.5)
        k = r == 5
        num += (fa[k] * np.conj(fb[k])).real.sum()
        den1 += (np.abs(fa[k]) ** 2).sum()
        den2 += (np.abs(fb[k]) ** 2).sum()
    assert c2[5] == pytest.approx(num / np.sqrt(den1 * den2))


def test_affine_fit_recovers_scale_and_offset():
    rng = np.random.default_rng(5)
    gt = rng.random((20, 20))
    fitted = M.affine_fit(3.0 * gt - 7.0, gt)
    assert fitted.dtype == np.float32
    assert np.allclose(fitted, gt, atol=1e-6)
    # least squares: residual orthogonal to pred and to the constant
    pred = rng.random((20, 20))
    r = M.affine_fit(pred, gt).astype(np.float64) - gt
    assert abs(r.mean()) < 1e-6 and abs((r * pred).mean()) < 1e-6
    assert np.allclose(M.affine_fit(np.ones((4, 4)), gt[:4, :4]), gt[:4, :4].mean())


def test_evaluate_keys_and_fit():
    pred, gt = _pair((64, 64), seed=6, noise=0.02)
    m = M.evaluate(pred, gt, pixel_size=0.1)
    r = float(gt.max() - gt.min())
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=r), abs=1e-4)
    assert m["ssim"] == pytest.approx(structural_similarity(gt, pred, data_range=r), abs=1e-4)
    assert m["frc_resolution_um"] == pytest.approx(0.1 * m["frc_resolution_px"])
    assert m["entropy_gt"] == pytest.approx(M.entropy(gt))
    assert m["fit"] is False
    # a prediction off by scale and offset: --fit undoes it, plain evaluation does not
    bad = 5.0 * pred + 2.0
    plain, fitted = M.evaluate(bad, gt), M.evaluate(bad, gt, fit=True)
    assert fitted["psnr"] > plain["psnr"] + 20
    lo, hi = np.percentile(gt, [0.1, 99.9])
    gtn = (gt - lo) / (hi - lo)
    ref = M.psnr(M.affine_fit(bad, gtn), gtn)
    assert fitted["psnr"] == pytest.approx(ref, abs=1e-3)


def test_evaluate_axes_moves_spatial_axes_last():
    pred, gt = _pair((32, 3, 32), seed=7)  # Y C X
    m = M.evaluate(pred, gt, axes="YCX")
    ref = M.ssim(np.moveaxis(pred, 1, 0), np.moveaxis(gt, 1, 0), spatial_ndim=2)
    assert m["ssim"] == pytest.approx(ref)
    with pytest.raises(AxesError):
        M.evaluate(pred, gt, axes="YX")


def test_bad_inputs_raise_one_line_errors():
    a = np.zeros((16, 16))
    with pytest.raises(InputError, match="shape mismatch"):
        M.psnr(a, np.zeros((16, 17)))
    with pytest.raises(InputError, match="NaN"):
        M.ssim(np.full((16, 16), np.nan), a, 1.0)
    with pytest.raises(InputError, match="constant"):
        M.psnr(a + 1, a)
    with pytest.raises(InputError, match="window"):
        M.ssim(np.zeros((5, 5)), np.ones((5, 5)), 1.0)
    with pytest.raises(InputError):
        M.frc(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))
    with pytest.raises(InputError, match="empty"):
        M.entropy(np.zeros((0, 3)))


# ---------------------------------------------------------------- faithfulness
def test_intensity_bias_closed_forms():
    gt = np.arange(101.0)  # P1 = 1, P50 = 50, mean = 50
    b = M.intensity_bias(gt + 5.0, gt, 100.0)
    assert (b.p1, b.p50, b.total) == pytest.approx((0.05, 0.05, 0.05))
    b = M.intensity_bias(2.0 * gt, gt, 50.0)
    assert (b.p1, b.p50, b.total) == pytest.approx((1.0 / 50, 50.0 / 50, 50.0 / 50))
    assert b.max_abs == pytest.approx(1.0)
    # the same image: no bias; a permutation keeps percentiles and total
    assert M.intensity_bias(gt, gt, 1.0).max_abs == 0.0
    assert M.intensity_bias(gt[::-1], gt, 1.0).max_abs == 0.0
    # only the background raised: p1 moves, the median does not
    pred = gt.copy()
    pred[:2] = 3.0
    b = M.intensity_bias(pred, gt, 10.0)
    assert b.p1 == pytest.approx((3.0 - 1.0) / 10.0) and b.p50 == 0.0
    assert b.total == pytest.approx((3.0 + 2.0) / 101 / 10.0)


def test_intensity_bias_range_from_an_input_image():
    inp = np.arange(1001.0) / 10.0  # P1 = 1.0, P99.8 = 99.8
    gt = np.arange(101.0)
    b = M.intensity_bias(gt + 0.988, gt, inp)
    assert b.total == pytest.approx(0.01)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "wide", np.ones((4, 4))])
def test_intensity_bias_rejects_bad_ranges(bad):
    with pytest.raises(InputError):
        M.intensity_bias(np.ones((4, 4)), np.ones((4, 4)), bad)
    with pytest.raises(InputError):
        M.intensity_bias(np.ones((4, 4)), np.ones((4, 5)), 1.0)


def _cos(shape, ky, kx, amp=1.0):
    y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return amp * np.cos(2 * np.pi * (ky * y / shape[0] + kx * x / shape[1]))


@pytest.mark.parametrize("window", [True, False])
def test_excess_power_closed_forms(window):
    shape = (64, 64)
    rng = np.random.default_rng(0)
    gt = rng.random(shape)
    # power scales with the square of the contrast; offsets are removed
    assert M.excess_power(3.0 * gt - 7.0, gt, 0.25, window=window) == pytest.approx(9.0)
    assert M.excess_power(gt, gt, 0.1, window=window) == pytest.approx(1.0)
    # two bin-exact cosines beyond the cut-off (0.375 and 0.354 cycles/pixel, far enough
    # apart that the periodic Hann window's 3x3 spread keeps them orthogonal): 1 + 2^2
    g = _cos(shape, 0, 24) + 0.5
    p = g + _cos(shape, 16, 16, amp=2.0)
    assert M.excess_power(p, g, 0.3, window=window) == pytest.approx(5.0)
    # a cosine below the cut-off adds nothing
    assert M.excess_power(g + _cos(shape, 4, 3, amp=5.0), g, 0.3, window=window) == pytest.approx(
        1.0
    )


def test_excess_power_of_a_low_passed_copy_is_zero_and_edge_cases():
    shape = (48, 64)
    gt = np.random.default_rng(1).random(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    low = np.fft.ifft2(np.fft.fft2(gt) * (np.hypot(fy, fx) <= 0.2)).real
    assert M.excess_power(low, gt, 0.2, window=False) == pytest.approx(0.0, abs=1e-20)
    assert M.excess_power(gt, low, 0.2, window=False) > 1e20  # inf up to round-off
    flat = np.full(shape, 2.0)
    assert M.excess_power(flat, flat, 0.2) == 1.0
    assert M.excess_power(gt, flat, 0.2) == float("inf")
    # 3-D: all axes are spatial (radius up to sqrt(3) / 2)
    vol = np.random.default_rng(2).random((8, 16, 16))
    assert M.excess_power(2 * vol, vol, 0.6) == pytest.approx(4.0)
    with pytest.raises(InputError):
        M.excess_power(gt, gt, 0.75)  # no 2-D frequency beyond sqrt(2) / 2
    with pytest.raises(InputError):
        M.excess_power(gt, gt, -0.1)
    with pytest.raises(InputError):
        M.excess_power(gt, gt[:, :10], 0.2)


def test_excess_power_sees_noise_and_smoothing():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    gt = gaussian_filter(rng.random((96, 96)), 1.0)
    noisy = gt + 0.05 * rng.standard_normal(gt.shape)
    assert M.excess_power(noisy, gt, 0.3) > 1.5
    assert M.excess_power(gaussian_filter(gt, 1.5), gt, 0.3) < 0.5
