"""Simulator: presets, photometric consistency, determinism, workers, files, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sharpscope.errors import ConfigError
from sharpscope.simulate import (
    PRESETS,
    CameraNoise,
    MicroscopePreset,
    NoiseModel,
    OpticsPreset,
    Preset,
    SimulatedPairs,
    ZernikePreset,
    _gaussian_kernel,
    get_preset,
    sample_seed,
    simulate_dataset,
    simulate_pair,
    write_dataset,
)

QUIET = NoiseModel(gain=(0, 0), sigma=(0, 0), background=(0, 0), peak=(0.8, 0.8))


@dataclasses.dataclass(frozen=True)
class TargetPsfPreset(Preset):
    """Test preset whose imaging PSF *is* the target PSF (a Gaussian of my own)."""

    def draw_psf(self, g, ndim, depth):
        sig = (
            [self.target_sigma] * 2
            if ndim == 2
            else [self.target_sigma_z] + [self.target_sigma] * 2
        )
        return _gaussian_kernel(sig), {"fc": 0.0}, 1.0


def _gen(i=0):
    return torch.Generator().manual_seed(i)


def test_presets_are_typed_and_named():
    assert set(PRESETS) == {
        "mrbcr-widefield", "poster-zernike", "fluorescence-broad", "fluorescence-mix",
        "fluorescence-granular", "fluorescence-mix-granular", "fluorescence-bright",
        "fluorescence-mix-bright", "fluorescence-beaded", "fluorescence-mix-beaded",
    }
    assert isinstance(PRESETS["fluorescence-broad"], MicroscopePreset)
    json.dumps(PRESETS["fluorescence-broad"].to_dict())
    assert isinstance(PRESETS["mrbcr-widefield"], OpticsPreset)
    assert isinstance(PRESETS["poster-zernike"], ZernikePreset)
    assert get_preset("poster-zernike") is PRESETS["poster-zernike"]
    with pytest.raises(ConfigError):
        get_preset("nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["mrbcr-widefield"].psf_size = 11
    with pytest.raises(ConfigError):
        OpticsPreset(na=(0.4, 1.5))
    with pytest.raises(ConfigError):
        NoiseModel(sigma=(0.05, 0.01))
    json.dumps(PRESETS["poster-zernike"].to_dict())  # serialisable


def test_same_psf_as_target_gives_identical_low_and_gt():
    """Photometric consistency: low and gt share scale, offset and alignment."""
    for normalize in [None, (1.0, 99.8)]:
        p = TargetPsfPreset(noise=QUIET, normalize=normalize)
        s = simulate_pair(p, (40, 36), _gen(1))
        torch.testing.assert_close(s["low"], s["gt"], atol=1e-5, rtol=1e-5)
        if normalize is None:
            assert float(s["low"].max()) == pytest.approx(0.8, abs=1e-6)  # the drawn exposure
        else:
            q = np.percentile(s["low"].numpy(), [1.0, 99.8])
            np.testing.assert_allclose(q, [0, 1], atol=1e-5)
    s3 = simulate_pair(TargetPsfPreset(noise=QUIET), (6, 20, 20), _gen(2))
    torch.testing.assert_close(s3["low"], s3["gt"], atol=1e-5, rtol=1e-5)


def test_noise_in_pairs_has_the_drawn_statistics():
    noise = NoiseModel(gain=(0, 0), sigma=(0.03, 0.03), background=(0.02, 0.02), peak=(1, 1))
    s = simulate_pair(TargetPsfPreset(noise=noise, normalize=None), (128, 128), _gen(3))
    r = (s["low"] - s["gt"]).numpy()
    assert abs(r.mean()) < 5 * 0.03 / 128
    assert r.std() == pytest.approx(0.03, rel=0.03)
    noise = NoiseModel(gain=(0.02, 0.02), sigma=(0, 0), background=(0.3, 0.3), peak=(1, 1))
    s = simulate_pair(TargetPsfPreset(noise=noise, normalize=None), (128, 128), _gen(4))
    r = (s["low"] - s["gt"]).numpy()
    # Poisson: variance = gain x mean intensity
    assert r.var() == pytest.approx(0.02 * float(s["gt"].mean()), rel=0.05)


def test_blurred_low_is_smoother_than_gt_with_equal_flux():
    p = dataclasses.replace(PRESETS["mrbcr-widefield"], noise=QUIET, normalize=None)
    s = simulate_pair(p, (96, 96), _gen(5))
    low, gt = s["low"][0].numpy(), s["gt"][0].numpy()
    # flux is conserved by both PSFs (up to what the crop borders exchange)
    assert low.sum() == pytest.approx(gt.sum(), rel=0.05)
    grad = lambda a: np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    assert grad(low) < grad(gt)


def test_mrbcr_parameter_ranges_and_real_optics():
    from sharpscope.physics.psf import confocal_psf, widefield_psf

    p = PRESETS["mrbcr-widefield"]
    modalities = set()
    for i in range(40):
        psf, prm, aspect = p.draw_psf(_gen(i), 2, 1)
        modalities.add(prm["modality"])
        assert 0.4 <= prm["na"] <= 1.0
        assert 450 <= prm["wavelength_ex"] <= 490
        assert prm["wavelength_ex"] <= prm["wavelength_em"] <= 600
        assert prm["refractive_index"] == 1.33
        assert prm["pinhole"] == (0.1 if prm["modality"] == "confocal" else 1000.0)
        fc = prm["na"] * prm["pixel_size"] / (prm["wavelength_em"] / 1000)
        assert 0.125 - 1e-9 <= fc <= 0.25 + 1e-9 and fc == pytest.approx(prm["fc"])
        assert psf.shape == (33, 33) and float(psf.sum()) == pytest.approx(1, abs=1e-4)
        assert aspect == 1.0
        if i < 4:  # wired to the optics module with the recorded parameters
            if prm["modality"] == "widefield":
                ref = widefield_psf(prm["na"], prm["wavelength_em"], prm["pixel_size"], 1.33)
            else:
                ref = confocal_psf(
                    prm["na"], prm["wavelength_ex"], prm["wavelength_em"], prm["pixel_size"], 0.1
                )
            torch.testing.assert_close(psf, ref)
    assert modalities == {"widefield", "confocal"}
    for i in range(40):
        n = p.noise.draw(_gen(100 + i))
        assert 0.01 <= n["gain"] <= 0.05 and 0.01 <= n["sigma"] <= 0.05


def test_poster_parameters_and_pupil_psf():
    from sharpscope.physics.psf import pupil_psf

    p = PRESETS["poster-zernike"]
    assert p.noise.bits == 16 and p.noise.salt_pepper == 1e-5
    tmax = []
    for i in range(30):
        psf, prm, _ = p.draw_psf(_gen(i), 2, 1)
        assert 0.125 <= prm["fc"] <= 0.25
        assert 0 <= prm["theta_max"] <= 0.2
        theta = torch.tensor([prm["zernike"]])
        assert theta.shape == (1, 8) and float(theta.abs().max()) <= prm["theta_max"] + 1e-7
        tmax.append(prm["theta_max"])
        if i < 3:
            torch.testing.assert_close(psf, pupil_psf(theta, prm["fc"], size=33, noll_start=4)[0])
    assert np.std(tmax) > 0.03  # theta_max drawn per sample
    s = simulate_pair(p, (32, 32), _gen(1))
    assert s["params"]["bits"] == 16 and s["params"]["salt_pepper"] == 1e-5


def test_sample_is_pure_function_of_seed_and_index():
    ds = SimulatedPairs("mrbcr-widefield", patch_size=32, seed=7)
    a, b = ds.sample(3), ds.sample(3)
    torch.testing.assert_close(a["low"], b["low"], rtol=0, atol=0)
    assert a["params"] == b["params"] and a["params"]["index"] == 3
    assert not torch.equal(a["low"], ds.sample(4)["low"])
    other = SimulatedPairs("mrbcr-widefield", patch_size=32, seed=8).sample(3)
    assert not torch.equal(a["low"], other["low"])
    # iteration from an offset is the same stream
    it = iter(SimulatedPairs("mrbcr-widefield", patch_size=32, seed=7, start=2))
    assert [next(it)["params"]["index"] for _ in range(3)] == [2, 3, 4]
    assert sample_seed(7, 3) != sample_seed(3, 7)


def test_dataloader_workers_distinct_and_reproducible():
    def run(block_size):
        ds = SimulatedPairs("poster-zernike", patch_size=24, seed=1, block_size=block_size)
        loader = DataLoader(ds, batch_size=3, num_workers=2)
        out = []
        for k, batch in enumerate(loader):
            out.append(batch)
            if k == 3:
                break
        return out

    first, again = run(1), run(1)
    idx = [int(i) for b in first for i in b["params"]["index"]]
    assert len(set(idx)) == len(idx) == 12  # workers never repeat each other
    for b1, b2 in zip(first, again, strict=True):
        torch.testing.assert_close(b1["low"], b2["low"], rtol=0, atol=0)
    assert first[0]["low"].shape == (3, 1, 24, 24) and first[0]["psf"].shape == (3, 33, 33)
    # worker 0 and worker 1 produce different samples
    assert not torch.equal(first[0]["low"], first[1]["low"])
    # with block_size = batch size the loader reproduces the single-process order
    ordered = run(3)
    assert [int(i) for b in ordered for i in b["params"]["index"]] == list(range(12))
    single = SimulatedPairs("poster-zernike", patch_size=24, seed=1)
    torch.testing.assert_close(ordered[1]["gt"][2], single.sample(5)["gt"], rtol=0, atol=0)


def test_3d_pairs():
    ds = SimulatedPairs("mrbcr-widefield", patch_size=(5, 20, 24), seed=0, ndim=3)
    s = ds.sample(0)
    assert s["low"].shape == (1, 5, 20, 24) and s["gt"].shape == (1, 5, 20, 24)
    assert s["psf"].shape == (5, 33, 33)
    ratio = s["params"]["z_step"] / s["params"]["pixel_size"]
    assert 1.0 <= ratio <= 3.0
    z = SimulatedPairs("poster-zernike", patch_size=16, seed=0, ndim=3)
    assert z.shape == (16, 16, 16)
    with pytest.raises(ConfigError):
        SimulatedPairs("mrbcr-widefield", patch_size=(8, 8), ndim=3)


def test_user_ground_truth():
    img = np.zeros((50, 60), np.float32)
    img[20:30, 10:50] = 5.0
    ds = SimulatedPairs(
        TargetPsfPreset(noise=QUIET, normalize=None), patch_size=32, ground_truth=[img]
    )
    s = ds.sample(0)
    assert s["params"]["kind"] == "user" and s["params"]["source_index"] == 0
    torch.testing.assert_close(s["low"], s["gt"], atol=1e-5, rtol=1e-5)
    const = SimulatedPairs(
        TargetPsfPreset(noise=QUIET, normalize=None), patch_size=16, ground_truth=[np.ones((8, 8))]
    ).sample(1)
    assert float(const["gt"].std()) == 0.0


def test_simulate_and_write_dataset(tmp_path):
    from sharpscope.io import read_image

    data = simulate_dataset("poster-zernike", n=3, size=32, seed=4)
    assert data["low"].shape == data["gt"].shape == (3, 32, 32)
    assert data["low"].dtype == np.float32 and data["psfs"].shape == (3, 33, 33)
    ref = SimulatedPairs("poster-zernike", patch_size=32, seed=4).sample(2)
    np.testing.assert_array_equal(data["low"][2], ref["low"][0].numpy())
    npz, js = write_dataset(tmp_path / "d.npz", data)
    assert npz == tmp_path / "d.npz" and js == tmp_path / "d.json"
    with np.load(npz) as f:
        np.testing.assert_array_equal(f["gt"], data["gt"])
        assert f["psf"].shape == (3, 33, 33)
    doc = json.loads(js.read_text())
    assert doc["seed"] == 4 and doc["preset"]["name"] == "poster-zernike"
    assert [s["index"] for s in doc["samples"]] == [0, 1, 2]
    assert doc["samples"][1]["zernike"] == data["params"][1]["zernike"]
    img = read_image(npz, key="low")
    assert img.axes == "SYX" and img.data.shape == (3, 32, 32)
    npz2, js2 = write_dataset(tmp_path / "folder", data)
    assert npz2.name == "data.npz" and js2.name == "params.json" and npz2.parent.is_dir()


def test_cli_simulate(tmp_path, capsys):
    from sharpscope.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "-o", str(out), "--n", "2", "--size", "24", "--seed", "3"]) == 0
    with np.load(out / "data.npz") as f:
        assert f["low"].shape == (2, 24, 24) and f["gt"].shape == (2, 24, 24)
    assert "wrote" in capsys.readouterr().out
    rc = main(
        [
            "simulate",
            "-o",
            str(tmp_path / "x.npz"),
            "--ndim",
            "3",
            "--depth",
            "4",
            "--n",
            "1",
            "--size",
            "16",
        ]
    )
    assert rc == 0
    with np.load(tmp_path / "x.npz") as f:
        assert f["low"].shape == (1, 4, 16, 16)
    assert main(["simulate", "-o", str(tmp_path / "y.npz"), "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_gaussian_target_kernel():
    k = _gaussian_kernel([0.6, 0.6])
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    yy, xx = np.mgrid[-3:4, -3:4]
    var = float((k.numpy() * yy**2).sum())
    assert var == pytest.approx(0.36 + 1 / 12, rel=0.02)  # pixel-integrated Gaussian
    assert math.isclose(float(_gaussian_kernel([0.0]).max()), 1.0)


def test_broad_preset_covers_the_documented_distribution():
    from sharpscope.physics.psf import confocal_psf, widefield_psf

    p = PRESETS["fluorescence-broad"]
    rows = [p.draw_psf(_gen(i), 2, 1) for i in range(150)]
    prm = [r[1] for r in rows]
    fc = np.array([q["fc"] for q in prm])
    # 0.5x to 2x Nyquist sampling (fc = 0.125 .. 0.5 cycles/pixel), both halves populated
    assert fc.min() >= 0.125 - 1e-9 and fc.max() <= 0.5 + 1e-9
    assert (fc < 0.2).mean() > 0.2 and (fc > 0.3).mean() > 0.2
    assert {q["refractive_index"] for q in prm} == {1.0, 1.33, 1.518}
    assert all(q["na"] < q["refractive_index"] for q in prm)
    assert {q["modality"] for q in prm} == {"widefield", "confocal"}
    assert max(abs(q["defocus"]) for q in prm) > 0.15 and max(q["theta_max"] for q in prm) > 0.05
    for psf, q, _ in rows[:3]:  # wired to the optics module with the recorded parameters
        kw = {"refractive_index": q["refractive_index"]}
        assert psf.shape == (33, 33) and float(psf.sum()) == pytest.approx(1, abs=1e-4)
        z = torch.tensor([q["defocus"]])
        if q["modality"] == "widefield":
            ref = widefield_psf(q["na"], q["wavelength_em"], q["pixel_size"], **kw)
        else:
            ref = confocal_psf(
                q["na"], q["wavelength_ex"], q["wavelength_em"], q["pixel_size"], q["pinhole"], **kw
            )
        # aberrated: not the in-focus PSF of the same optics unless every coefficient is ~0
        assert float((psf - ref).abs().max()) > 0 or float(z.abs()) < 1e-3
    noise = [p.noise.draw(_gen(500 + i)) for i in range(300)]
    ph = np.array([n["photons"] for n in noise])
    assert ph.min() >= 5 and ph.max() <= 1000 and ph.min() < 8 and ph.max() > 600
    assert {n["bits"] for n in noise} == {12, 16}
    assert 0.3 < np.mean([n["hot_pixels"] > 0 for n in noise]) < 0.7
    for n in noise:  # the exposure never saturates the ADC
        top = (n["peak"] + n["background"]) * n["photons"] / n["conversion"] + n["offset"]
        assert top <= 0.8 * (2 ** n["bits"] - 1) + 1e-6
        assert n["gain"] == pytest.approx(1 / n["photons"])


def test_broad_pairs_kinds_haze_and_photometry():
    ds = SimulatedPairs("fluorescence-broad", patch_size=64, seed=3)
    samples = [ds.sample(i) for i in range(60)]
    kinds = {s["params"]["kind"] for s in samples}
    assert {"texture", "nuclei", "filaments"} <= kinds
    hazy = [s for s in samples if s["params"]["haze"] > 0]
    assert 10 <= len(hazy) <= 40
    assert set(samples[0]["params"]) == set(samples[1]["params"])  # collatable
    for s in samples:
        low, gt = s["low"][0], s["gt"][0]
        assert low.shape == gt.shape == (64, 64) and torch.isfinite(low).all()
    # low and gt share the photometric scale: their means agree on bright, clean samples
    bright = [s for s in samples if s["params"]["photons"] > 200 and s["params"]["hot_pixels"] == 0]
    assert bright
    for s in bright:
        assert float(s["low"].mean()) == pytest.approx(float(s["gt"].mean()), abs=0.06)
    np.testing.assert_array_equal(ds.sample(7)["low"], samples[7]["low"])
    with pytest.raises(ConfigError, match="2-D only"):
        SimulatedPairs("fluorescence-broad", patch_size=16, ndim=3).sample(0)
    with pytest.raises(ConfigError):
        CameraNoise(photons=(0, 10))
    with pytest.raises(ConfigError):
        MicroscopePreset(sampling=(0.5, 3.0))
    with pytest.raises(ConfigError):
        MicroscopePreset(immersions=((1.0, 0.5, 1.1, 1.0),))


def test_haze_layer_is_in_both_low_and_gt():
    clear = dataclasses.replace(
        PRESETS["fluorescence-broad"], haze=(0.0, 0.0), name="clear"
    )
    hazy = dataclasses.replace(
        PRESETS["fluorescence-broad"], haze_probability=1.0, haze=(0.5, 0.5), name="hazy"
    )
    for i in range(5):
        a = SimulatedPairs(clear, 64, seed=1).sample(i)
        b = SimulatedPairs(hazy, 64, seed=1).sample(i)
        assert b["params"]["haze"] == 0.5 and a["params"]["haze"] == 0.0
        # same specimen and optics; the layer adds smooth signal to both images equally
        assert a["params"]["kind"] == b["params"]["kind"] and a["params"]["na"] == b["params"]["na"]
        lo_raw = b["low"][0] * (b["params"]["norm_hi"] - b["params"]["norm_lo"])
        gt_raw = b["gt"][0] * (b["params"]["norm_hi"] - b["params"]["norm_lo"])
        assert float(lo_raw.mean()) == pytest.approx(float(gt_raw.mean()), rel=0.1, abs=0.02)


def test_sizes_are_checked_against_memory_before_allocating(tmp_path, capsys, monkeypatch):
    from sharpscope import runtime
    from sharpscope.cli import main

    out = tmp_path / "huge.npz"
    assert main(["simulate", "-o", str(out), "--size", "100000", "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "of memory" in err and err.count("\n") == 1
    assert main(["simulate", "-o", str(out), "--size", "2048", "--n", "100000"]) == 2
    assert "100000 simulated pairs of 2048x2048" in capsys.readouterr().err
    assert not out.exists()
    # the bound follows the memory the system reports
    monkeypatch.setattr(runtime, "available_memory", lambda: 64 * 2**20)
    with pytest.raises(ConfigError, match="simulated pairs of 64x64"):
        simulate_dataset("mrbcr-widefield", n=5000, size=64)
    assert simulate_dataset("mrbcr-widefield", n=2, size=32)["low"].shape == (2, 32, 32)


def test_mixture_preset_draws_each_component_exactly_as_alone():
    import torch as _torch

    from sharpscope.errors import ConfigError as _ConfigError
    from sharpscope.simulate import MixturePreset, SimulatedPairs

    mix = SimulatedPairs("fluorescence-mix", patch_size=32, seed=11)
    alone = {
        name: SimulatedPairs(name, patch_size=32, seed=11)
        for name in ("fluorescence-broad", "mrbcr-widefield")
    }
    seen = set()
    for i in range(24):
        s = mix.sample(i)
        name = s["params"]["component"]
        seen.add(name)
        assert _torch.equal(s["low"], alone[name].sample(i)["low"])
        assert _torch.equal(s["gt"], alone[name].sample(i)["gt"])
    assert seen == set(alone)
    with pytest.raises(_ConfigError, match="positive"):
        MixturePreset(name="bad", components=(("mrbcr-widefield", 0.0),))
    with pytest.raises(_ConfigError, match="itself a mixture"):
        MixturePreset(name="nested", components=(("fluorescence-mix", 1.0),)).parts()


def test_bright_preset_reaches_thousands_of_photons():
    from sharpscope.simulate import SimulatedPairs

    bright = SimulatedPairs("fluorescence-bright", patch_size=32, seed=3)
    photons = np.array([bright.sample(i)["params"]["photons"] for i in range(200)])
    assert photons.min() >= 5 and photons.max() <= 4000
    assert (photons > 1000).mean() > 0.1  # fluorescence-granular never goes there
    granular = get_preset("fluorescence-granular")
    assert granular.noise.photons[1] == 1000
    assert get_preset("fluorescence-bright").granularity_probability > granular.granularity_probability
    # beaded: the modulation can exceed 1, which cuts a structure into separate beads
    beaded = get_preset("fluorescence-beaded")
    assert beaded.granularity[1] > 1 and beaded.noise.photons == (5.0, 4000.0)
    from sharpscope.simulate import _granular

    p = dataclasses.replace(beaded, granularity_probability=1.0, granularity=(1.5, 1.5), granularity_length=(3.0, 3.0))
    x, _ = _granular(p, torch.full((128, 128), 0.5), torch.Generator().manual_seed(1), 1.0)
    assert 0.15 < float((x == 0).float().mean()) < 0.45  # gaps between beads


def test_granular_preset_adds_fine_texture_and_changes_nothing_else():
    from sharpscope.simulate import SimulatedPairs

    broad = SimulatedPairs("fluorescence-broad", patch_size=64, seed=11)
    gran = SimulatedPairs("fluorescence-granular", patch_size=64, seed=11)
    drawn = 0
    for i in range(16):
        a, b = broad.sample(i), gran.sample(i)
        assert "granularity" not in a["params"]  # presets without it are unchanged
        pa = dict(a["params"])
        pb = {k: v for k, v in b["params"].items() if not k.startswith("granularity")}
        for key in ("kind", "fc", "modality", "photons", "read_noise", "haze"):
            assert pa[key] == pb[key], key  # the same specimen kind, optics and camera
        assert torch.equal(a["psf"], b["psf"])
        if b["params"]["granularity"] > 0 and float(a["gt"].std()) > 1e-3:
            drawn += 1
            assert float((a["gt"] - b["gt"]).abs().max()) > 1e-3
        elif b["params"]["granularity"] == 0:
            assert torch.equal(a["gt"], b["gt"]) and torch.equal(a["low"], b["low"])
    assert 3 <= drawn <= 14
    # the modulation itself: pixel-scale texture on a flat specimen, mean kept
    from sharpscope.simulate import _granular, get_preset

    p = dataclasses.replace(get_preset("fluorescence-granular"), granularity_probability=1.0, granularity=(0.4, 0.4), granularity_length=(0.7, 0.7))
    x, info = _granular(p, torch.full((128, 128), 0.5), torch.Generator().manual_seed(0), 1.0)
    assert info["granularity"] == pytest.approx(0.4) and info["granularity_length"] == pytest.approx(0.7)
    assert float(x.std() / x.mean()) == pytest.approx(0.4, rel=0.15) and float(x.mean()) == pytest.approx(0.5, rel=0.05)
    lag1 = float(torch.corrcoef(torch.stack([x[:, :-1].flatten(), x[:, 1:].flatten()]))[0, 1])
    assert 0.2 < lag1 < 0.8  # correlated over about a pixel, not white, not smooth
    with pytest.raises(ConfigError, match="granularity_probability"):
        MicroscopePreset(granularity_probability=2.0)
