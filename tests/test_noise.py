"""Sensor noise chain: statistics of each stage, composition and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpscope.errors import InputError
from sharpscope.physics.noise import (
    as_generator,
    gaussian,
    poisson,
    quantize,
    salt_and_pepper,
    sensor,
)

N = 400  # 160 000 samples per statistic


@pytest.mark.parametrize("gain,level", [(0.01, 0.5), (0.05, 0.2), (1.0, 7.0)])
def test_poisson_mean_and_variance(gain, level):
    x = np.full((N, N), level, np.float32)
    y = poisson(x, gain, generator=0)
    n = y.size
    # mean = level, variance = gain * level (tolerances: 5 standard errors)
    var = gain * level
    assert abs(y.mean() - level) < 5 * np.sqrt(var / n)
    assert abs(y.var() / var - 1) < 5 * np.sqrt(2 / n)
    # outputs are integer multiples of the gain
    k = y.astype(np.float64) / gain
    assert np.abs(k - np.round(k)).max() < 1e-3


def test_poisson_per_image_gain_and_negative_input():
    x = torch.full((2, 300, 300), 0.3, dtype=torch.float64)
    y = poisson(x, torch.tensor([0.01, 0.04]), generator=1)
    v = y.var(dim=(1, 2))
    np.testing.assert_allclose(v.numpy(), [0.003, 0.012], rtol=0.03)
    z = poisson(np.full((10, 10), -1.0), 0.1, generator=1)
    assert (z == 0).all()  # negative intensities emit no photons


def test_gaussian_std_and_mean():
    y = gaussian(np.full((N, N), 0.25, np.float32), 0.03, generator=2)
    assert abs(y.mean() - 0.25) < 5 * 0.03 / N
    assert abs(y.std() / 0.03 - 1) < 5 * np.sqrt(0.5 / N**2)


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_quantization_levels(bits):
    x = torch.linspace(-0.1, 1.1, 100_000, dtype=torch.float64)
    y = quantize(x, bits)
    levels = torch.unique(y)
    assert len(levels) == 2**bits
    np.testing.assert_allclose(levels.numpy(), np.linspace(0, 1, 2**bits), atol=1e-12)
    step = 1 / (2**bits - 1)
    inside = (x >= 0) & (x <= 1)
    assert float((y - x)[inside].abs().max()) <= step / 2 + 1e-12


def test_quantization_range_and_16_bit():
    x = np.linspace(10.0, 20.0, 1001)
    y = quantize(x, 2, value_range=(10.0, 20.0))
    assert sorted(set(np.round(y, 4))) == pytest.approx([10.0, 13.3333, 16.6667, 20.0], abs=1e-3)
    x = np.random.default_rng(0).random(10_000)
    y16 = quantize(x, 16)
    assert np.abs(y16 - x).max() <= 0.5 / 65535 + 1e-7


@pytest.mark.parametrize("prob", [0.02, 0.2])
def test_salt_and_pepper_fraction(prob):
    x = np.full((N, N), 0.5, np.float32)
    y = salt_and_pepper(x, prob, generator=3)
    n = x.size
    tol = 5 * np.sqrt(prob * (1 - prob) / n)
    assert abs((y == 1.0).mean() + (y == 0.0).mean() - prob) < tol
    assert abs((y == 1.0).mean() - prob / 2) < tol
    untouched = (y != 0) & (y != 1)
    assert (y[untouched] == 0.5).all()


def test_sensor_chain_statistics():
    level, gain, sigma = 0.4, 0.02, 0.03
    y = sensor(np.full((N, N), level, np.float32), gain=gain, sigma=sigma, generator=4)
    # independent Poisson and Gaussian stages: variances add
    assert abs(y.var() / (gain * level + sigma**2) - 1) < 0.03
    assert abs(y.mean() - level) < 1e-3
    # background shifts the mean; quantisation then salt and pepper
    y = sensor(
        np.zeros((N, N), np.float32),
        background=0.1,
        gain=0.01,
        bits=3,
        salt_pepper=0.05,
        generator=5,
    )
    # exact expectation: k ~ Poisson(10), value round(0.01 k * 7) / 7 (no ties below k = 50), then 5% salt/pepper
    k = np.arange(200)
    logpmf = k * np.log(10.0) - 10.0 - np.cumsum(np.log(np.maximum(k, 1)))
    q = np.minimum(np.round(0.07 * k) / 7, 1.0)
    expected = 0.95 * float((np.exp(logpmf) * q).sum()) + 0.025
    assert abs(y.mean() - expected) < 5 * np.sqrt(y.var() / y.size)
    assert len(np.unique(y)) <= 8


def test_stages_optional_and_identity():
    x = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    np.testing.assert_array_equal(sensor(x, generator=0), x)
    np.testing.assert_array_equal(poisson(x, None), x)
    np.testing.assert_array_equal(gaussian(x, 0.0), x)
    np.testing.assert_array_equal(quantize(x, None), x)
    np.testing.assert_array_equal(salt_and_pepper(x, 0), x)


def test_reproducible_and_seed_kinds():
    x = np.full((64, 64), 0.3, np.float32)
    kw = dict(gain=0.02, sigma=0.01, bits=16, salt_pepper=1e-3)
    a = sensor(x, generator=7, **kw)
    b = sensor(x, generator=7, **kw)
    c = sensor(x, generator=8, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32
    d = sensor(x, generator=np.random.default_rng(1), **kw)
    e = sensor(x, generator=np.random.default_rng(1), **kw)
    np.testing.assert_array_equal(d, e)
    t = sensor(torch.from_numpy(x), generator=torch.Generator().manual_seed(7), **kw)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), a)
    g = as_generator(5)
    assert as_generator(g) is g


def test_errors():
    x = np.zeros((4, 4), np.float32)
    with pytest.raises(InputError):
        gaussian(x, -1.0)
    with pytest.raises(InputError):
        poisson(np.zeros((3, 4, 4)), [0.1, 0.2])  # 2 gains for 3 images
    with pytest.raises(InputError):
        quantize(x, 0.5)
    with pytest.raises(InputError):
        salt_and_pepper(x, 1.5)
    with pytest.raises(InputError):
        as_generator("seed")


def test_camera_photon_statistics_offset_and_adc():
    from sharpscope.physics.noise import camera

    x = np.full((256, 256), 0.5, np.float32)
    for photons, read in ((10, 0.0), (100, 2.0), (1000, 3.0)):
        y = camera(x, photons=photons, read_noise=read, offset=100, bits=16, generator=1)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert abs(float(y.mean()) - 0.5) < 4 * np.sqrt(0.5 / photons / x.size) + 1e-3
        # variance = mean / photons (shot) + (read / photons)^2 (+ 1/12 ADU^2 of quantisation)
        expected = 0.5 / photons + (read / photons) ** 2 + (1 / photons) ** 2 / 12
        assert float(y.var()) == pytest.approx(expected, rel=0.05)
    # the ADC: values are integers in ADU, clipped at 0 (no offset) and at 2**bits - 1
    dark = camera(np.zeros((64, 64)), photons=50, read_noise=3, conversion=2, bits=12, generator=2)
    adu = dark * 50 / 2
    np.testing.assert_allclose(adu, np.round(adu), atol=1e-4)
    assert adu.min() == 0 and (adu == 0).mean() > 0.3  # read noise below 0 clips without offset
    bright = camera(np.ones((8, 8)), photons=1e4, conversion=1, bits=12, generator=3)
    assert float(bright.max()) == pytest.approx(4095 / 1e4, rel=1e-5)


def test_camera_hot_pixels_and_reproducible():
    from sharpscope.physics.noise import camera

    x = np.full((200, 200), 0.2, np.float32)
    y = camera(x, photons=1000, hot_pixels=1e-3, generator=4)
    hot = y > 0.2 + 0.5 * 0.2 * 0.9
    assert 10 <= int(hot.sum()) <= 80  # ~40 expected
    np.testing.assert_array_equal(y, camera(x, photons=1000, hot_pixels=1e-3, generator=4))
    with pytest.raises(InputError):
        camera(x, photons=0)
    with pytest.raises(InputError):
        camera(x, photons=10, hot_pixels=1.5)
