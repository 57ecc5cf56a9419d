"""Data consistency (``restore --psf``): the Wiener update that pulls a restoration
back towards what the data show through a known PSF."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sharpscope.cli import main
from sharpscope.consistency import (
    _target_kernel,
    _transfer,
    check_psf,
    data_consistency,
    theoretical_psf,
)
from sharpscope.errors import ConfigError, InputError
from sharpscope.io import read_image, write_image
from sharpscope.metrics import psnr
from sharpscope.physics.psf import make_psf
from sharpscope.restore import load_model


def _blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Circular convolution with a kernel centred at its pixel size // 2."""
    return np.fft.irfft2(np.fft.rfft2(x) * _transfer(kernel, x.shape), s=x.shape)


def _periodic_scene(n: int = 96, seed: int = 0) -> np.ndarray:
    """A band-limited periodic specimen (so the symmetric padding meets no seam)."""
    rng = np.random.default_rng(seed)
    f = np.fft.rfft2(rng.standard_normal((n, n)))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None]
    x = np.fft.irfft2(f * np.exp(-((fx**2 + fy**2) / 0.02)), s=(n, n))
    return (x - x.min()) / np.ptp(x) + 0.1


def test_zero_strength_returns_the_restoration_unchanged():
    rng = np.random.default_rng(1)
    y, p = rng.random((40, 50)), rng.random((40, 50))
    out = data_consistency(y, p, make_psf(fc=0.2, size=9), strength=0.0)
    np.testing.assert_array_equal(out, p.astype(np.float32))


def test_an_exact_restoration_is_left_alone_and_a_blurred_one_is_sharpened():
    x = _periodic_scene()
    h = make_psf(fc=0.2, size=15).astype(np.float64)
    y = _blur(x, h)  # nearly noise-free data
    target = _blur(x, _target_kernel(0.6))
    inner = (slice(16, -16),) * 2  # the border sees the padding, not the data
    # the network got it right: the data agree, nothing changes
    kept = data_consistency(y, target, h, strength=0.1, noise_power=1e-6)
    assert np.abs(kept - target)[inner].max() < 5e-3 * np.ptp(target)
    # the network lost detail (an extra 1.2 px blur): the data bring it back
    soft = _blur(target, _target_kernel(1.2))
    fixed = data_consistency(y, soft, h, strength=1.0, noise_power=1e-6)
    before = np.sqrt(np.mean((soft - target)[inner] ** 2))
    after = np.sqrt(np.mean((fixed - target)[inner] ** 2))
    assert after < 0.2 * before, (before, after)
    # with noisy data the same restoration is trusted: a much smaller change
    noisy = data_consistency(y, soft, h, strength=1.0, noise_power=1.0)
    assert np.sqrt(np.mean((noisy - soft)[inner] ** 2)) < 0.5 * np.sqrt(np.mean((fixed - soft)[inner] ** 2))


def test_the_update_does_not_depend_on_intensity_units():
    rng = np.random.default_rng(2)
    x = _periodic_scene(64, seed=3)
    h = make_psf(fc=0.25, size=11)
    y = _blur(x, h) + 0.01 * rng.standard_normal(x.shape)
    p = _blur(x, _target_kernel(1.0))
    base = data_consistency(y, p, h, strength=0.1, noise_power=1e-4)
    a, b = 730.0, 120.0  # a camera's gain and offset
    scaled = data_consistency(a * y + b, a * p + b, h, strength=0.1, noise_power=1e-4 * a**2)
    np.testing.assert_allclose((scaled - b) / a, base, atol=2e-5)


def test_the_true_psf_improves_the_bundled_model_on_bright_images():
    """The measured gain (docs/user-guide.md) in small: bright images, true PSF."""
    from sharpscope.restore import load_model
    from sharpscope.simulate import get_preset, simulate_dataset

    preset = get_preset("fluorescence-granular")
    preset = dataclasses.replace(preset, noise=dataclasses.replace(preset.noise, photons=(1000, 1000)))
    data = simulate_dataset(preset, n=6, size=128, seed=99000002)
    model = load_model(device="cpu")
    gains = []
    for low, gt, h in zip(data["low"], data["gt"], data["psfs"], strict=True):
        rng = float(np.ptp(gt))
        out = model.predict(low, axes="YX", warn_range=False)
        fixed = model.predict(low, axes="YX", warn_range=False, psf=h)
        gains.append(psnr(fixed, gt, data_range=rng) - psnr(out, gt, data_range=rng))
    assert np.mean(gains) > 0.3, gains


@pytest.mark.parametrize(
    ("psf", "message"),
    [
        (np.ones((3, 5, 5)), "must be 2-D"),
        (np.full((5, 5), np.nan), "non-finite"),
        (-np.ones((5, 5)), "negative"),
        (np.zeros((5, 5)), "sums to zero"),
        ("abc", "not a numeric array"),
    ],
)
def test_what_is_not_a_psf_is_refused_in_one_line(psf, message):
    with pytest.raises(InputError, match=message) as err:
        check_psf(psf)
    assert "\n" not in str(err.value)


def test_bad_shapes_and_strengths_are_refused():
    h = make_psf(fc=0.2, size=9)
    with pytest.raises(InputError, match="one shape"):
        data_consistency(np.ones((8, 8)), np.ones((8, 9)), h)
    with pytest.raises(ConfigError, match=">= 0"):
        data_consistency(np.ones((8, 8)), np.ones((8, 8)), h, strength=-1)
    with pytest.raises(ConfigError, match=">= 0"):
        data_consistency(np.ones((8, 8)), np.ones((8, 8)), h, strength=float("nan"))


def test_theoretical_psf_follows_the_optics():
    wf = theoretical_psf(na=1.2, wavelength=520, pixel_size=0.1)
    conf = theoretical_psf(na=1.2, wavelength=520, pixel_size=0.1, modality="confocal")
    ref = make_psf(na=1.2, wavelength=520, pixel_size=0.1, refractive_index=1.333)
    np.testing.assert_allclose(wf, ref / ref.sum(), atol=1e-6)
    for h in (wf, conf, theoretical_psf(fc=0.2), theoretical_psf(fc=0.2, modality="confocal")):
        assert h.shape == (33, 33) and np.unravel_index(h.argmax(), h.shape) == (16, 16)
        assert abs(float(h.sum()) - 1) < 1e-5

    def spread(h):
        r2 = np.add.outer((np.arange(33) - 16.0) ** 2, (np.arange(33) - 16.0) ** 2)
        return float((h * r2).sum())

    assert spread(conf) < 0.8 * spread(wf)
    assert spread(theoretical_psf(fc=0.2, modality="confocal")) < 0.8 * spread(theoretical_psf(fc=0.2))
    with pytest.raises(ConfigError, match="pixel size"):
        theoretical_psf(na=1.2, wavelength=520)


def test_predict_with_a_psf_per_plane_and_strength_zero(tiny_model):
    rng = np.random.default_rng(4)
    stack = rng.poisson(40, (2, 64, 64)).astype(np.float32)
    h = make_psf(fc=0.2, size=11)
    plain = tiny_model.predict(stack, axes="ZYX", device="cpu", warn_range=False)
    off = tiny_model.predict(stack, axes="ZYX", device="cpu", warn_range=False, psf=h, consistency=0)
    on = tiny_model.predict(stack, axes="ZYX", device="cpu", warn_range=False, psf=h)
    np.testing.assert_array_equal(plain, off)
    assert on.shape == stack.shape and np.isfinite(on).all()
    assert np.abs(on - plain).max() > 0
    with pytest.raises(ConfigError, match="needs a PSF"):
        tiny_model.predict(stack, axes="ZYX", device="cpu", consistency=0.1)
    with pytest.raises(InputError, match="2-D"):
        tiny_model.predict(stack, axes="ZYX", device="cpu", psf=np.ones((3, 5, 5)))


def test_cli_restore_with_a_psf_file_and_theory(tmp_path, tiny_model_path, capsys):
    rng = np.random.default_rng(5)
    src = write_image(tmp_path / "cells.tif", rng.poisson(60, (64, 64)).astype(np.uint16), "YX")
    psf = write_image(tmp_path / "psf.tif", make_psf(fc=0.2, size=33), "YX")
    common = ["--model", str(tiny_model_path), "--no-progress", "--no-range-check"]
    assert main(["restore", str(src), "-o", str(tmp_path / "plain.tif"), *common]) == 0
    assert main(["restore", str(src), "-o", str(tmp_path / "psf.tif.out.tif"), "--psf", str(psf), *common]) == 0
    assert main(["restore", str(src), "-o", str(tmp_path / "theory.tif"), "--psf", "theory", "--fc", "0.2", *common]) == 0
    plain = read_image(tmp_path / "plain.tif").data
    with_file = read_image(tmp_path / "psf.tif.out.tif").data
    theory = read_image(tmp_path / "theory.tif").data
    assert np.abs(with_file - plain).max() > 0
    # --fc also tells an optics model; the tiny one is not, so only the PSF differs
    np.testing.assert_allclose(theory, with_file, atol=1e-4 * float(np.ptp(plain)))
    capsys.readouterr()
    bad = [
        (["--consistency", "0.1"], "--consistency needs a PSF"),
        (["--psf", "none", "--fc", "0.2", "--consistency", "0.1"], "--consistency needs a PSF"),
        (["--fc", "0.2", "--consistency", "0.1", "--chunks", "32"], "whole images"),
        (["--psf", "theory"], "--psf theory needs the optics"),
        (["--psf", str(tmp_path / "missing.tif")], "no such file"),
        (["--psf", str(psf), "--chunks", "32"], "whole images"),
    ]
    for extra, message in bad:
        out = tmp_path / "bad.tif"
        assert main(["restore", str(src), "-o", str(out), *common, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_cli_restore_corrects_through_the_theory_psf_by_default_when_told_the_optics(
    tmp_path, tiny_model_path
):
    """``--psf auto`` (the default) is ``--psf theory`` with the optics given, and nothing
    without them; ``--psf none`` turns it off; chunk by chunk it is off (no whole image)."""
    rng = np.random.default_rng(6)
    src = write_image(tmp_path / "cells.tif", rng.poisson(80, (64, 64)).astype(np.uint16), "YX")
    common = ["--model", str(tiny_model_path), "--no-progress", "--no-range-check"]

    def run(name, *extra):
        assert main(["restore", str(src), "-o", str(tmp_path / name), *common, *extra]) == 0
        return read_image(tmp_path / name).data

    plain = run("plain.tif")
    auto = run("auto.tif", "--fc", "0.2")
    theory = run("theory.tif", "--fc", "0.2", "--psf", "theory")
    off = run("off.tif", "--fc", "0.2", "--psf", "none")
    chunked = run("chunked.tif", "--fc", "0.2", "--chunks", "32")
    np.testing.assert_array_equal(auto, theory)
    assert np.abs(auto - plain).max() > 1e-3 * float(np.ptp(plain))
    # the tiny model does not take the optics: without the correction --fc changes nothing
    np.testing.assert_array_equal(off, plain)
    np.testing.assert_allclose(chunked, plain, atol=1e-4 * float(np.ptp(plain)))
    # with the NA, the wavelength and the pixel size: the PSF of the full optics
    na = run("na.tif", "--na", "1.2", "--wavelength", "600", "--pixel-size", "0.1")
    h = theoretical_psf(na=1.2, wavelength=600, pixel_size=0.1)
    via_api = load_model(tiny_model_path).predict(read_image(src).data, psf=h, warn_range=False)
    np.testing.assert_allclose(na, via_api, atol=1e-5 * float(np.ptp(plain)))


def test_predict_psf_auto_is_theory_of_fc_per_channel(tiny_model_path):
    model = load_model(tiny_model_path)
    img = np.random.default_rng(7).poisson(50, (2, 48, 48)).astype(np.float32)
    auto = model.predict(img, axes="CYX", fc=[0.15, 0.3], warn_range=False)
    theory = model.predict(
        img, axes="CYX", fc=[0.15, 0.3], warn_range=False,
        psf=[theoretical_psf(fc=0.15), theoretical_psf(fc=0.3)],
    )
    np.testing.assert_array_equal(auto, theory)
    plain = model.predict(img, axes="CYX", warn_range=False)
    np.testing.assert_array_equal(model.predict(img, axes="CYX", fc=0.2, psf=None, warn_range=False), plain)
    np.testing.assert_array_equal(model.predict(img, axes="CYX", fc=0.2, psf="none", warn_range=False), plain)
    with pytest.raises(ConfigError, match="needs the optics"):
        model.predict(img, axes="CYX", psf="theory", warn_range=False)
    with pytest.raises(ConfigError, match="consistency needs a PSF"):
        model.predict(img, axes="CYX", consistency=0.1, warn_range=False)
    with pytest.raises(ConfigError, match="psf must be an array"):
        model.predict(img, axes="CYX", fc=0.2, psf="bead", warn_range=False)
