"""Noise and resolution estimated from a single image, against simulations with known truth."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sharpscope.errors import InputError
from sharpscope.estimate import (
    NoiseEstimate,
    calibrate_valid_range,
    estimate_cutoff,
    estimate_noise,
    photons_per_unit,
)
from sharpscope.physics.blur import fft_convolve
from sharpscope.physics.noise import sensor
from sharpscope.physics.psf import cutoff_frequency, widefield_psf
from sharpscope.physics.specimens import make_specimen

BACKGROUND = 0.05


def _blurred(kind: str, seed: int, fc: float = 0.2, n: int = 256) -> np.ndarray:
    """A specimen through an NA 1.0, 520 nm widefield PSF with cut-off ``fc``; peak 1 + background."""
    psf = widefield_psf(1.0, 520.0, fc * 0.52, size=65).numpy()
    clean = np.asarray(fft_convolve(make_specimen(kind, (n, n), seed), psf), dtype=np.float64)
    return (BACKGROUND + clean / clean.max()).astype(np.float32)


@pytest.fixture(scope="module")
def cleans() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:256, :256]
    smooth = BACKGROUND + 0.5 + 0.5 * np.sin(xx / 40.0) * np.cos(yy / 30.0)
    out = {"smooth": smooth.astype(np.float32)}
    for kind in ("nuclei", "filaments", "mixed"):
        out[kind] = _blurred(kind, seed=1)
    return out


# ------------------------------------------------------------------ noise
GAINS = (0.001, 0.005, 0.02, 0.2)
SIGMAS = (0.001, 0.01, 0.05)


@pytest.mark.parametrize("kind", ["smooth", "nuclei", "filaments", "mixed"])
def test_noise_model_matches_the_simulated_sensor(cleans, kind):
    """Gain 0.001-0.2, sigma 0.001-0.05 on images with peak ~1 and background 0.05.

    The noise standard deviation implied by the estimate is within 12 % of the
    truth at every intensity; each parameter is within 25 % where its term is
    measurable (shot noise at least the read noise at the peak, read noise at
    least the shot noise at the background).
    """
    clean = cleans[kind]
    worst = {"std": 0.0, "gain": 0.0, "sigma": 0.0}
    for i, gain in enumerate(GAINS):
        for j, sigma in enumerate(SIGMAS):
            noisy = sensor(clean, gain=gain, sigma=sigma, generator=10 * i + j)
            est = estimate_noise(noisy)
            assert isinstance(est, NoiseEstimate) and est.gain >= 0 and est.sigma >= 0
            for mean in (BACKGROUND, 0.3, 1.0):
                true_sd = np.sqrt(gain * mean + sigma**2)
                worst["std"] = max(worst["std"], abs(np.sqrt(est.variance(mean)) / true_sd - 1))
            if gain * 1.0 >= sigma**2:
                worst["gain"] = max(worst["gain"], abs(est.gain / gain - 1))
            if sigma**2 >= gain * BACKGROUND:
                worst["sigma"] = max(worst["sigma"], abs(est.sigma / sigma - 1))
    assert worst["std"] < 0.12, worst
    assert worst["gain"] < 0.25, worst
    assert worst["sigma"] < 0.25, worst


def test_noise_is_scale_equivariant_and_works_on_integers(cleans):
    noisy = sensor(cleans["mixed"], gain=0.01, sigma=0.02, generator=3)
    a = estimate_noise(noisy)
    b = estimate_noise(noisy * 10.0)
    assert b.gain == pytest.approx(10 * a.gain, rel=1e-6)
    assert b.sigma == pytest.approx(10 * a.sigma, rel=1e-6)
    # an offset does not change the slope; it shows as an offset (no read noise is seen)
    c = estimate_noise(noisy + 5.0)
    assert c.gain == pytest.approx(a.gain, rel=1e-4)
    assert c.sigma == 0 and c.offset == pytest.approx(5.0 - a.sigma**2 / a.gain, rel=1e-4)
    assert c.variance(5.3) == pytest.approx(a.variance(0.3), rel=1e-4)
    # camera counts: 100 photons per unit, offset 100 ADU, read noise 2 ADU
    rng = np.random.default_rng(0)
    counts = rng.poisson(cleans["nuclei"] * 100.0) + 100 + rng.normal(0, 2.0, (256, 256))
    est = estimate_noise(np.rint(counts).astype(np.uint16))
    assert est.gain == pytest.approx(1.0, rel=0.15)


def test_noise_of_a_stack_pools_planes_and_is_fast():
    clean = _blurred("mixed", seed=2, n=128)
    stack = np.stack([sensor(clean, gain=0.02, sigma=0.01, generator=k) for k in range(4)])
    est = estimate_noise(stack, axes="ZYX")
    assert est.gain == pytest.approx(0.02, rel=0.2)
    moved = estimate_noise(np.moveaxis(stack, 0, -1), axes="YXC")
    assert moved == est
    big = np.tile(sensor(clean, gain=0.02, sigma=0.01, generator=9), (8, 8))  # 1024 x 1024
    estimate_noise(big)
    t0 = time.perf_counter()
    est = estimate_noise(big)
    assert time.perf_counter() - t0 < 0.5  # ~0.06 s on an idle core
    assert est.gain == pytest.approx(0.02, rel=0.2)


def test_noise_variance_and_photons():
    n = NoiseEstimate(gain=0.01, sigma=0.1)
    assert n.variance(1.0) == pytest.approx(0.02)
    assert n.variance(-1.0) == pytest.approx(0.01)
    assert np.allclose(n.variance(np.array([0.0, 2.0])), [0.01, 0.03])
    assert photons_per_unit(n, 10.0, 20.0) == pytest.approx(1000.0)
    assert photons_per_unit(NoiseEstimate(0.0, 0.1), 0.0, 1.0) == float("inf")


# ------------------------------------------------------------------ cut-off
@pytest.mark.parametrize("kind", ["filaments", "mixed", "puncta"])
def test_cutoff_of_widefield_images(kind):
    """fc 0.08-0.25 (NA 1.0, 520 nm, pixel fc * 520 nm), gain 0.01, sigma 0.01: within 22 %."""
    errors = []
    for fc in (0.08, 0.1, 0.15, 0.2, 0.25):
        noisy = sensor(_blurred(kind, seed=3, fc=fc), gain=0.01, sigma=0.01, generator=1)
        errors.append(estimate_cutoff(noisy) / fc - 1)
    assert max(abs(e) for e in errors) < 0.22, np.round(errors, 3)


def test_cutoff_convention_noise_and_blobs():
    # the project's convention: fc = NA * pixel / wavelength (0.25 = Nyquist sampling)
    assert cutoff_frequency(1.2, 520.0, 0.065) == pytest.approx(0.15)
    specimen = make_specimen("filaments", (256, 256), 5)
    psf = widefield_psf(1.2, 520.0, 0.065, size=65).numpy()
    clean = np.asarray(fft_convolve(specimen, psf))
    clean = BACKGROUND + clean / clean.max()
    est = estimate_cutoff(sensor(clean, gain=0.01, sigma=0.01, generator=0))
    assert est == pytest.approx(0.15, rel=0.2)
    # noisier images: still close (the OTF shape is extrapolated, not the noise crossing)
    noisy = estimate_cutoff(sensor(clean, gain=0.05, sigma=0.03, generator=0))
    assert noisy == pytest.approx(0.15, rel=0.3)
    # scale and offset do not matter
    img = sensor(clean, gain=0.01, sigma=0.01, generator=0)
    assert estimate_cutoff(img * 100 + 7) == pytest.approx(est, rel=1e-6)
    # smooth blobs have less detail than the optics pass: the estimate is lower but monotone
    blobs = [
        estimate_cutoff(sensor(_blurred("nuclei", 3, fc=fc), gain=0.01, sigma=0.01, generator=1))
        for fc in (0.08, 0.15, 0.25)
    ]
    assert blobs[0] < blobs[1] < blobs[2] < 0.25
    # pure noise has no resolved signal
    white = np.random.default_rng(0).normal(10.0, 1.0, (128, 128))
    assert estimate_cutoff(white) < 0.05


@pytest.mark.parametrize("func", [estimate_noise, estimate_cutoff])
@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((0, 32)), "empty"),
        (np.full((32, 32), np.nan), "NaN"),
        (np.full((32, 32), 3.0), "constant"),
        (np.ones(32), "2 dimensions"),
        (np.random.default_rng(0).random((8, 64)), "too small"),
        (np.array([["a"] * 32] * 32), "real-valued"),
    ],
)
def test_bad_images_raise_one_line_errors(func, image, match):
    with pytest.raises(InputError, match=match) as info:
        func(image)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ calibration
def test_calibrate_valid_range_on_the_training_distribution():
    from sharpscope.models.format import ValidRange
    from sharpscope.simulate import simulate_dataset

    low = simulate_dataset("mrbcr-widefield", n=12, size=128, seed=0)["low"]
    vr = calibrate_valid_range(low, quantiles=(0.0, 1.0))
    assert isinstance(vr, ValidRange)
    assert 0 < vr.cutoff[0] <= vr.cutoff[1] <= 0.36
    assert 0 < vr.photons[0] <= vr.photons[1]
    # each range is exactly the span of the estimators' values on the images
    from sharpscope.normalize import percentiles

    cut = [estimate_cutoff(x) for x in low]
    ph = [photons_per_unit(estimate_noise(x), *percentiles(x, 1.0, 99.8)) for x in low]
    assert vr.cutoff == pytest.approx((min(cut), max(cut)))
    assert vr.photons == pytest.approx((min(ph), max(ph)))
    # quantiles narrow it; pairs and lists work like the array
    inner = calibrate_valid_range([(x, None) for x in low], quantiles=(0.25, 0.75))
    assert vr.cutoff[0] <= inner.cutoff[0] <= inner.cutoff[1] <= vr.cutoff[1]
    with pytest.raises(InputError, match="quantiles"):
        calibrate_valid_range(low, quantiles=(0.9, 0.1))
    with pytest.raises(InputError, match="no images"):
        calibrate_valid_range([])
