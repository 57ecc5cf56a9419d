"""Tests of the PSF identifier (models/psfnet.py) and its training task (training/psfid.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sharpscope.errors import ConfigError, InputError, ModelFormatError
from sharpscope.models.psfnet import (
    PATCH_SIZE,
    PSF_SIZE,
    PSFIdentifier,
    PSFNet,
    PSFPrediction,
    canonical_zernike,
    even_flipped,
    load_identifier,
    noise_to_units,
)
from sharpscope.physics.psf import pupil_psf
from sharpscope.training import CHECKPOINT_NAME, MODEL_NAME, load_checkpoint, load_config, train

TINY = {"channels": [8, 16, 32]}


def _patches(n: int = 3, size: int = PATCH_SIZE, seed: int = 0) -> np.ndarray:
    from sharpscope.simulate import get_preset
    from sharpscope.training.psfid import PSFPatches

    ds = PSFPatches(get_preset("poster-zernike"), size, seed=seed, stream=5)
    return np.stack([ds[i]["low"][0].numpy() for i in range(n)])


@pytest.fixture(scope="module")
def ident() -> PSFIdentifier:
    torch.manual_seed(0)
    net = PSFNet()
    with torch.no_grad():  # non-trivial coefficients and noise so that the checks bite
        net.theta_head.bias.copy_(torch.linspace(-0.5, 0.5, 8))
    return PSFIdentifier(net)


# ============================================================================ output contract


def test_output_contract(ident):
    x = _patches(3)
    for fc, tmax in ((0.2, 0.1), (None, None), (np.array([0.1, 0.15, 0.25]), None)):
        pred = ident.predict(x, fc=fc, theta_max=tmax)
        assert isinstance(pred, PSFPrediction)
        assert pred.psf.shape == (3, PSF_SIZE, PSF_SIZE) and pred.psf.dtype == np.float32
        assert np.all(np.isfinite(pred.psf)) and pred.psf.min() >= 0
        np.testing.assert_allclose(pred.psf.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert pred.zernike.shape == (3, 8) and pred.noll == tuple(range(4, 12))
        assert pred.fc.shape == (3,) and pred.noise.shape == (3, 2) and np.all(pred.noise >= 0)
        # centred: the energy's centroid sits at S // 2 (the chief ray), within a pixel or two
        yy, xx = np.mgrid[:PSF_SIZE, :PSF_SIZE]
        for h in pred.psf:
            cy, cx = (h * yy).sum(), (h * xx).sum()
            assert abs(cy - PSF_SIZE // 2) < 2.5 and abs(cx - PSF_SIZE // 2) < 2.5
    assert ident.patch_size == PATCH_SIZE and ident.psf_size == PSF_SIZE and ident.conditioned


def test_any_intensity_scale_gives_the_same_psf_and_scaled_noise(ident):
    x = _patches(2).astype(np.float64)
    ref = ident.predict(x, fc=0.18)
    for scale, offset in ((1e-3, 0.0), (1000.0, 0.0), (40.0, 500.0)):
        pred = ident.predict(scale * x + offset, fc=0.18)
        np.testing.assert_allclose(pred.psf, ref.psf, atol=2e-5)
        np.testing.assert_allclose(pred.zernike, ref.zernike, atol=2e-4)
        if offset == 0.0:  # gain and sigma scale with the intensity
            np.testing.assert_allclose(pred.noise, scale * ref.noise, rtol=2e-3)
    # an offset o changes sigma as var = gain * mean + sigma**2 says: sigma**2 - gain * o
    off = ident.predict(x + 0.01, fc=0.18)
    expect = np.sqrt(np.clip(ref.noise[:, 1] ** 2 - ref.noise[:, 0] * 0.01, 0, None))
    np.testing.assert_allclose(off.noise[:, 1], expect, rtol=1e-2, atol=1e-5)


def test_noise_units_invert():
    from sharpscope.models.psfnet import noise_from_units

    gain, sigma = torch.tensor([0.03, 0.5]), torch.tensor([0.02, 3.0])
    lo, scale = torch.tensor([0.1, 20.0]), torch.tensor([2.0, 400.0])
    g, s = noise_from_units(gain, sigma, lo, scale)
    back = noise_to_units(torch.stack([g.log(), s.log()], 1), lo, scale)
    torch.testing.assert_close(back, torch.stack([gain, sigma], 1), rtol=1e-4, atol=1e-6)


def test_conditioned_and_unconditioned_modes(ident):
    x = _patches(2)
    known = ident.predict(x, fc=0.2, theta_max=0.0)
    # theta_max = 0 known: no aberration, the diffraction-limited PSF of the given fc
    assert np.all(known.zernike == 0) and np.allclose(known.fc, 0.2)
    h0 = pupil_psf(torch.zeros(1, 8), 0.2, size=PSF_SIZE)[0].numpy()
    np.testing.assert_allclose(known.psf[0], h0, atol=1e-5)
    blind = ident.predict(x)  # fc estimated, inside the network's range
    lo, hi = ident.network.fc_range
    assert np.all((blind.fc >= lo) & (blind.fc <= hi))
    assert not np.allclose(blind.psf, known.psf, atol=1e-3)
    # a NaN condition in the network means "unknown": the same as not giving it
    out_none = ident.network(torch.from_numpy(x)[:, None])
    out_nan = ident.network(torch.from_numpy(x)[:, None], torch.full((2,), float("nan")), torch.full((2,), float("nan")))
    torch.testing.assert_close(out_none["psf"], out_nan["psf"])


def test_bad_inputs_are_one_line_errors(ident):
    with pytest.raises(InputError, match="shape"):
        ident.predict(np.zeros((2, 64, 64)))
    with pytest.raises(InputError, match="NaN"):
        ident.predict(np.full((1, 128, 128), np.nan))
    with pytest.raises(InputError, match="fc"):
        ident.predict(np.zeros((2, 128, 128)), fc=[0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="fc"):
        ident.predict(np.zeros((1, 128, 128)), fc=0.9)


def test_a_blank_patch_gives_a_finite_psf(ident):
    pred = ident.predict(np.full((1, 128, 128), 7.0), fc=0.2)
    assert np.all(np.isfinite(pred.psf)) and np.all(np.isfinite(pred.noise))
    np.testing.assert_allclose(pred.psf.sum(), 1.0, atol=1e-5)


# ============================================================================ the sign ambiguity


def test_even_aberrations_flipped_together_give_the_same_psf():
    g = torch.Generator().manual_seed(3)
    theta = 0.2 * (2 * torch.rand(4, 8, generator=g, dtype=torch.float64) - 1)
    noll = tuple(range(4, 12))
    h = pupil_psf(theta, 0.2, size=33)
    torch.testing.assert_close(pupil_psf(even_flipped(theta, noll), 0.2, size=33), h, rtol=0, atol=1e-12)
    # flipping only the odd ones (coma, trefoil) is a different PSF (its point reflection)
    odd = -even_flipped(theta, noll)
    assert float((pupil_psf(odd, 0.2, size=33) - h).abs().max()) > 1e-3
    canon = canonical_zernike(theta, noll)
    assert bool((canon[:, 0] >= 0).all())
    torch.testing.assert_close(pupil_psf(canon, 0.2, size=33), h, rtol=0, atol=1e-12)


# ============================================================================ model files


def _save(net: PSFNet, path: Path) -> Path:
    from sharpscope.models.format import save_model

    return save_model(path, net, {"name": "psfid-test", "architecture": "psfnet", "hparams": net.hparams})


def test_model_file_round_trip(tmp_path, ident):
    path = _save(ident.network, tmp_path / "id.safetensors")
    loaded = load_identifier(path)
    x = _patches(2)
    np.testing.assert_array_equal(loaded.predict(x, fc=0.2).psf, ident.predict(x, fc=0.2).psf)
    assert loaded.header.architecture == "psfnet"
    # a restoration loader refuses it, and the identifier loader refuses a restoration model
    from sharpscope import load_model

    with pytest.raises(ModelFormatError, match="psf-identification model"):
        load_model(str(path))
    from conftest import make_tiny_model

    with pytest.raises(ModelFormatError, match="not a psf-identification model"):
        load_identifier(make_tiny_model(tmp_path / "restore.safetensors"))
    with pytest.raises(ModelFormatError):
        load_identifier(tmp_path / "missing.safetensors")


def test_bundled_identifier_loads_and_identifies():
    ident = load_identifier()
    assert ident.header.name == "psfid-2d" and ident.patch_size == PATCH_SIZE
    pred = ident.predict(_patches(2), fc=0.2, theta_max=0.1)
    np.testing.assert_allclose(pred.psf.sum(axis=(1, 2)), 1.0, atol=1e-5)


# ============================================================================ training through the task loop


def _cfg(out: Path, **kw):
    base = {
        "task": "psf-identification",
        "model.arch": "psfnet",
        "model.hparams": TINY,
        "data.simulate": "poster-zernike",
        "steps": 6,
        "batch_size": 4,
        "patch_size": 64,
        "val_every": 3,
        "val_size": 8,
        "lr": 3e-3,
        "monitor": "val_psf_snr",
        "out": str(out),
        "plot": False,
        "device": "cpu",
        "amp": False,
        "augment.flips": False,
        "augment.rot90": False,
    }
    base.update(kw)
    return load_config(overrides=base)


def test_psf_task_trains_through_the_loop_and_resumes_bit_exactly(tmp_path):
    ref = tmp_path / "ref"
    res = train(_cfg(ref), progress=False)
    assert res.steps_done == 6 and res.best_path is not None
    assert set(res.best_metrics) == {"val_loss", "val_psf_snr", "val_psf_snr_blind", "val_reblur_psnr", "val_rel_l2"}
    header = (ref / "log.csv").read_text().splitlines()[0]
    assert header == "step,loss,val_loss,val_psf_snr,val_psf_snr_blind,val_reblur_psnr,val_rel_l2,lr,time"
    assert load_identifier(ref).header.training["task"] == "psf-identification"
    out = tmp_path / "resumed"
    train(_cfg(out, steps=3), progress=False)
    res = train(_cfg(out), resume=True, progress=False)
    assert res.steps_done == 6
    a, _ = load_checkpoint(out / CHECKPOINT_NAME)
    b, _ = load_checkpoint(ref / CHECKPOINT_NAME)
    for k in b:
        if k.startswith(("model/", "optim/")):
            assert torch.equal(a[k], b[k]), k
    assert (out / MODEL_NAME).is_file()


def test_psf_task_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="Zernike preset"):
        train(_cfg(tmp_path / "a", **{"data.simulate": "mrbcr-widefield"}), progress=False)
    with pytest.raises(ConfigError, match="monitor 'val_psnr'"):
        train(_cfg(tmp_path / "b", monitor="val_psnr"), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_briefly_trained_identifier_beats_the_aberration_free_psf(tmp_path):
    from sharpscope.training.psfid import PSFPatches, psf_metrics, psfid_preset, stack

    cfg = _cfg(tmp_path / "brief", steps=40, val_every=40, batch_size=6, lr=3e-3, **{"psfid.condition_dropout": 0.0})
    res = train(cfg, progress=False)
    assert res.steps_done == 40
    ident = load_identifier(tmp_path / "brief")
    # a held-out set: a stream the training never drew from
    data = stack([PSFPatches(psfid_preset(cfg), 64, seed=cfg.seed, stream=9)[i] for i in range(16)])
    pred = ident.predict(data["low"][:, 0].numpy(), fc=data["fc"].numpy(), theta_max=data["theta_max"].numpy())
    h0 = pupil_psf(torch.zeros(16, 8), data["fc"], size=PSF_SIZE)
    got = psf_metrics(torch.from_numpy(pred.psf), data["psf"], data["x"])
    base = psf_metrics(h0, data["psf"], data["x"])
    assert float(got["rel_l2"].mean()) < 0.9 * float(base["rel_l2"].mean())
    assert float(got["psf_snr"].mean()) > float(base["psf_snr"].mean()) + 1.0


def test_the_spectral_variant_keeps_the_contract():
    torch.manual_seed(1)
    ident = PSFIdentifier(PSFNet(spectral=True))
    x = _patches(2).astype(np.float64)
    a, b = ident.predict(x, fc=0.2), ident.predict(250.0 * x, fc=0.2)
    np.testing.assert_allclose(a.psf.sum(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(a.psf, b.psf, atol=2e-5)
    np.testing.assert_allclose(b.noise, 250.0 * a.noise, rtol=2e-3)
    assert "spectral.0.weight" in ident.network.state_dict() and "spectral.0.weight" not in PSFNet().state_dict()


def test_psfid_kinds_replace_the_specimen_mixture():
    from sharpscope.errors import ConfigError
    from sharpscope.training import load_config
    from sharpscope.training.psfid import PSFPatches, psfid_preset

    base = {"task": "psf-identification", "model.arch": "psfnet", "data.simulate": "poster-zernike"}
    cfg = load_config(overrides={**base, "psfid.kinds": {"puncta": 3, "filaments": 1}})
    assert psfid_preset(cfg).specimen.kinds == (("puncta", 0.75), ("filaments", 0.25))
    # puncta only: sparse points on a dark field (most pixels near the background)
    only = load_config(overrides={**base, "psfid.kinds": {"puncta": 1}})
    x = PSFPatches(psfid_preset(only), 64, seed=0)[0]["x"].numpy()
    assert float(np.mean(x < 0.05 * x.max())) > 0.8
    for bad in ({"dots": 1}, {"puncta": 0}, {}):
        with pytest.raises(ConfigError, match="kinds must map specimen kinds"):
            load_config(overrides={**base, "psfid.kinds": bad})
