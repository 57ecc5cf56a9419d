"""The noise-level input of noise-conditioned networks (sharpscope.models.noisemap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize

from conftest import TINY_MRBCR_HPARAMS
from sharpscope.errors import ConfigError
from sharpscope.models.format import load_network, save_model
from sharpscope.models.mrbcr import MRBCR
from sharpscope.models.noisemap import (
    crop_slices,
    estimate_noise_params,
    image_noise_params,
    noise_map,
    reference_plane,
)
from sharpscope.models.registry import build_network
from sharpscope.restore import load_model


def _specimen(size: int = 256) -> torch.Tensor:
    img = resize(skdata.camera().astype(np.float32) / 255.0, (size, size), anti_aliasing=True)
    return torch.from_numpy(0.05 + 0.9 * img.astype(np.float32))


@pytest.mark.parametrize("photons", [5, 30, 300, 1000])
@pytest.mark.parametrize("read", [0.0, 0.02])
def test_poisson_gaussian_parameters_are_recovered_on_a_textured_image(photons, read):
    g = torch.Generator().manual_seed(photons)
    clean = _specimen()
    y = torch.poisson(clean * photons, generator=g) / photons
    y = y + read * torch.randn(clean.shape, generator=g)
    gain, sigma = estimate_noise_params(y)[0].tolist()
    assert gain == pytest.approx(1.0 / photons, rel=0.15)
    # the Gaussian part is resolved where it is not buried under the Poisson part
    if read > 0 and read**2 > 0.5 / photons:
        assert sigma == pytest.approx(read, rel=0.25)
    # the total noise variance at mid-grey is right in every case
    assert gain * 0.5 + sigma**2 == pytest.approx(0.5 / photons + read**2, rel=0.15)


def test_estimate_is_scale_equivariant_and_batched():
    g = torch.Generator().manual_seed(0)
    clean = _specimen(128)
    y = torch.poisson(clean * 50, generator=g) / 50
    one = estimate_noise_params(y)[0]
    both = estimate_noise_params(torch.stack([y, 8.0 * y])[:, None])
    assert both.shape == (2, 2)
    torch.testing.assert_close(both[0], one)
    torch.testing.assert_close(both[1], 8.0 * one)  # a power of two: exact
    torch.testing.assert_close(estimate_noise_params(7.0 * y)[0], 7.0 * one, rtol=0.03, atol=0)
    # a noise-free image has (almost) no noise; a tiny one gives zeros, not garbage
    assert estimate_noise_params(clean)[0].max() < 0.05 * float((0.5 * one[0] + one[1] ** 2).sqrt())
    assert estimate_noise_params(torch.ones(1, 1, 4, 4)).abs().max() == 0


def test_noise_map_is_the_poisson_gaussian_standard_deviation():
    x = torch.rand(2, 1, 20, 24)
    params = torch.tensor([[0.02, 0.05], [0.0, 0.1]])
    m = noise_map(x, params)
    local = torch.nn.functional.avg_pool2d(x, 5, stride=1)
    expect = torch.sqrt(0.02 * local[0] + 0.05**2)
    torch.testing.assert_close(m[0][:, 2:-2, 2:-2], expect)
    torch.testing.assert_close(m[1], torch.full_like(m[1], 0.1))


def test_reference_plane_and_crop():
    assert reference_plane((64, 64)) == ()
    assert reference_plane((4, 64, 64)) == (2,)
    assert crop_slices(100, 3000, size=1024) == (slice(0, 100), slice(988, 2012))
    rng = np.random.default_rng(1)
    plane = np.zeros((1500, 40), np.float32)
    plane[crop_slices(1500, 40)] = 0.3 * rng.standard_normal((1024, 40))
    assert float(image_noise_params(plane)[1]) == pytest.approx(0.3, rel=0.1)


def test_conditioned_network_starts_as_the_unconditioned_one():
    torch.manual_seed(0)
    plain = MRBCR(**TINY_MRBCR_HPARAMS)
    cond = MRBCR(**TINY_MRBCR_HPARAMS, noise_input=True)
    cond.load_state_dict(plain.state_dict())  # the noise weights start at zero
    assert cond.dense["s0"].layers[0].weight.shape[1] == 2
    assert float(cond.dense["s0"].layers[0].weight[:, 1].abs().max()) == 0
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ref = plain(x)[0]
        torch.testing.assert_close(cond(x)[0], ref)
        torch.testing.assert_close(cond(x, torch.tensor([0.01, 0.02]))[0], ref)
        # once the noise weights are not zero, the noise level changes the output
        cond.dense["s0"].layers[0].weight[:, 1] = 1.0
        a = cond(x, torch.tensor([0.0, 0.01]))[0]
        b = cond(x, torch.tensor([0.0, 0.5]))[0]
    assert float((a - b).abs().max()) > 1e-3
    assert "noise_input" not in plain.hparams and cond.hparams["noise_input"] is True
    with pytest.raises(ConfigError, match="noise_input"):
        MRBCR(noise_input="yes")


def _conditioned_model_file(path):
    torch.manual_seed(3)
    hp = dict(TINY_MRBCR_HPARAMS, noise_input=True)
    net = build_network("mrbcr", **hp)
    with torch.no_grad():
        for s in ("s0", "s2", "s4"):
            net.dense[s].layers[0].weight[:, 1].normal_(0, 2.0)
    header = {
        "name": "tiny-noise",
        "description": "randomly initialised noise-conditioned m-rBCR for tests",
        "architecture": "mrbcr",
        "hparams": hp,
        "tile": {"size": 64, "overlap": 32},
        "provenance": "tests/test_noisemap.py, random initialisation",
        "license": "BSD-3-Clause",
    }
    return save_model(path, net, header)


def test_model_file_round_trip_and_tiles_share_one_noise_level(tmp_path):
    path = _conditioned_model_file(tmp_path / "noise.safetensors")
    header, net = load_network(path)
    assert header.hparams["noise_input"] is True and net.noise_input
    model = load_model(path, device="cpu")
    rng = np.random.default_rng(0)
    img = (rng.poisson(40 * (1 + np.sin(np.arange(160) / 5))[None, :] * np.ones((150, 1))) + 100).astype(
        np.uint16
    )
    whole = model.predict(img, tile=192, overlap=32, warn_range=False)
    tiled = model.predict(img, tile=64, overlap=32, warn_range=False)
    # the same noise level in every tile: tiling changes nothing beyond the seam bound
    spread = float(whole.max() - whole.min())
    assert np.abs(whole - tiled).max() < 0.02 * spread


def test_chunked_restore_of_a_conditioned_model_equals_predict(tmp_path):
    pytest.importorskip("dask")
    import dask.array as da

    from sharpscope.parallel import restore_array

    model = load_model(_conditioned_model_file(tmp_path / "noise.safetensors"), device="cpu")
    rng = np.random.default_rng(2)
    img = rng.poisson(50 + 40 * rng.random((2, 70, 76))).astype(np.uint16)
    ref = model.predict(img, axes="ZYX", tile=32, overlap=8, warn_range=False)
    out = restore_array(model, da.from_array(img), "ZYX", chunks=32, tile=32, overlap=8)
    out = out.compute(scheduler="synchronous")
    assert np.abs(out - ref).max() <= 1e-5 * float(ref.max() - ref.min())
