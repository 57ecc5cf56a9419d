"""The optics-conditioned m-rBCR: the cut-off fc and the modality as a network input.

The network (models/mrbcr.py ``optics_input``), its widening from a trained file, the
training data and loss that feed it, and every way ``restore`` hands it the optics
(API, chunked path, batch files with NA / wavelength / the file's pixel size, CLI).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_MRBCR_HPARAMS, TINY_TRAIN_HPARAMS, make_tiny_optics_model
from sharpscope.consistency import theoretical_psf
from sharpscope.errors import ConfigError, InputError
from sharpscope.io import read_image, write_image
from sharpscope.models.format import load_network, save_model
from sharpscope.models.mrbcr import MRBCR, optics_vector
from sharpscope.models.noisemap import widen_model
from sharpscope.restore import load_model

HP = dict(TINY_MRBCR_HPARAMS, noise_input=True, optics_input=True)


def _optics_model_file(path):
    return make_tiny_optics_model(path)


def _image(seed=0, shape=(96, 96)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = 60 * (1 + np.sin(xx / 4.0) * np.cos(yy / 6.0))
    return (rng.poisson(clean) + 100).astype(np.uint16)


def test_optics_vector_and_its_errors():
    assert torch.equal(optics_vector(), torch.zeros(3))
    assert torch.allclose(optics_vector(0.25), torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(optics_vector(0.1, "confocal"), torch.tensor([1.0, 0.4, 1.0]))
    with pytest.raises(InputError, match="fc"):
        optics_vector(0.0)
    with pytest.raises(InputError, match="modality"):
        optics_vector(0.2, "lightsheet")
    with pytest.raises(ConfigError, match="noise_input"):
        MRBCR(**TINY_MRBCR_HPARAMS, optics_input=True)
    with pytest.raises(ConfigError, match="optics_input"):
        MRBCR(**TINY_MRBCR_HPARAMS, noise_input=True, optics_input=1)


def test_the_optics_change_the_output_and_a_wrong_condition_is_refused():
    torch.manual_seed(0)
    net = MRBCR(**HP).eval()
    with torch.no_grad():
        for films in net.film.values():
            for film in films:
                film.out.weight.normal_(0, 1.0)
        x = torch.rand(2, 1, 32, 32)
        noise = torch.tensor([0.02, 0.05])
        unknown = net(x, noise)[0]
        # a 2-wide condition is "optics unknown", exactly the zero optics vector
        assert torch.equal(unknown, net(x, torch.cat([noise, optics_vector()]))[0])
        near = net(x, torch.cat([noise, optics_vector(0.15)]))[0]
        far = net(x, torch.cat([noise, optics_vector(0.40, "confocal")]))[0]
        assert (near - far).abs().max() > 1e-3 and (near - unknown).abs().max() > 1e-3
        # one condition per sample: each sample sees its own optics
        both = torch.stack([torch.cat([noise, optics_vector(0.15)]), torch.cat([noise, optics_vector(0.40, "confocal")])])
        per = net(x, both)[0]
        assert torch.allclose(per[0], near[0], atol=1e-6) and torch.allclose(per[1], far[1], atol=1e-6)
        with pytest.raises(InputError, match="2 or 5 wide"):
            net(x, torch.zeros(4))
        with pytest.raises(InputError, match="2 wide"):
            MRBCR(**TINY_MRBCR_HPARAMS, noise_input=True)(x, torch.zeros(5))


def test_widened_model_computes_what_its_source_did(tmp_path):
    torch.manual_seed(1)
    hp = dict(TINY_MRBCR_HPARAMS, noise_input=True)
    src = MRBCR(**hp)
    header = {
        "name": "tiny-noise", "description": "test", "architecture": "mrbcr", "hparams": hp,
        "tile": {"size": 64, "overlap": 32}, "provenance": "test", "license": "BSD-3-Clause",
    }
    save_model(tmp_path / "src.safetensors", src, header)
    widen_model(str(tmp_path / "src.safetensors"), str(tmp_path / "wide.safetensors"), optics=True)
    head, wide = load_network(tmp_path / "wide.safetensors")
    assert head.hparams["optics_input"] is True and wide.optics_input
    x = torch.rand(1, 1, 32, 32)
    noise = torch.tensor([0.03, 0.02])
    with torch.no_grad():
        ref = src.eval()(x, noise)[0]
        for optics in (optics_vector(), optics_vector(0.2), optics_vector(0.4, "confocal")):
            assert torch.equal(wide(x, torch.cat([noise, optics]))[0], ref)
    # a non-m-rBCR file is refused in one line
    from sharpscope.models.registry import build_network

    save_model(tmp_path / "dn.safetensors", build_network("dncnn", depth=3), dict(header, architecture="dncnn", hparams={"depth": 3}))
    with pytest.raises(ConfigError, match="m-rBCR"):
        widen_model(str(tmp_path / "dn.safetensors"), str(tmp_path / "x.safetensors"), optics=True)


def test_simulated_samples_carry_their_optics_with_a_deterministic_dropout():
    from sharpscope.data import SimulatedPatches

    ds = SimulatedPatches("fluorescence-broad", 32, seed=3, optics_dropout=0.25)
    vecs = torch.stack([ds[i]["optics"] for i in range(40)])
    known = vecs[:, 0] == 1
    assert 0.5 < float(known.float().mean()) < 0.95  # about 75% told the optics
    assert torch.all(vecs[~known] == 0)
    for i in range(6):  # the vector is the drawn optics: fc / 0.25 and the modality
        p = ds.pairs.sample(i)["params"]
        if known[i]:
            expect = optics_vector(p["fc"], p["modality"])
            assert torch.allclose(vecs[i], expect)
    again = SimulatedPatches("fluorescence-broad", 32, seed=3, optics_dropout=0.25)
    assert torch.equal(torch.stack([again[i]["optics"] for i in range(40)]), vecs)
    # the images themselves do not depend on the dropout
    plain = SimulatedPatches("fluorescence-broad", 32, seed=3)
    assert torch.equal(plain[7]["low"], ds[7]["low"]) and torch.all(plain[7]["optics"] == optics_vector(*_fc_mod(ds, 7)))
    with pytest.raises(ConfigError, match="optics_dropout"):
        SimulatedPatches("fluorescence-broad", 32, optics_dropout=1.5)


def _fc_mod(ds, i):
    p = ds.pairs.sample(i)["params"]
    return p["fc"], p["modality"]


def test_an_optics_conditioned_network_trains_on_the_optics(tmp_path, monkeypatch):
    from sharpscope.training import load_config, tasks, train

    seen = []
    real = tasks._condition

    def spy(net, low, optics):
        cond = real(net, low, optics)
        seen.append(cond)
        return cond

    monkeypatch.setattr(tasks, "_condition", spy)
    cfg = load_config(overrides={
        "data.simulate": "fluorescence-mix",
        "model.hparams": dict(TINY_TRAIN_HPARAMS, noise_input=True, optics_input=True),
        "steps": 2, "batch_size": 2, "patch_size": 32, "val_every": 2, "val_size": 4,
        "out": str(tmp_path / "run"), "plot": False, "device": "cpu",
    })
    res = train(cfg, progress=False)
    assert seen and all(c is not None and c.shape[1] == 5 for c in seen)
    assert any(float(c[:, 2].sum()) > 0 for c in seen)  # some samples told their optics
    _, net = load_network(res.best_path)
    assert net.optics_input
    # the FiLM blocks left the identity: training reached them
    assert any(float(f.out.weight.detach().abs().sum()) > 0 for films in net.film.values() for f in films)


def test_predict_with_the_optics_in_memory_and_chunked(tmp_path):
    pytest.importorskip("dask")
    import dask.array as da

    from sharpscope.parallel import restore_array

    model = load_model(_optics_model_file(tmp_path / "o.safetensors"), device="cpu")
    assert model.uses_optics
    img = _image()
    blind = model.predict(img, warn_range=False)
    told = model.predict(img, fc=0.2, warn_range=False)
    confocal = model.predict(img, fc=0.2, modality="confocal", warn_range=False)
    spread = float(blind.max() - blind.min())
    assert np.abs(told - blind).max() > 1e-3 * spread
    assert np.abs(told - confocal).max() > 1e-3 * spread
    chunked = restore_array(model, da.from_array(img), "YX", chunks=48, tile=64, overlap=16, fc=0.2)
    # chunk by chunk there is no whole image for the default (psf='auto') correction
    ref = model.predict(img, fc=0.2, tile=64, overlap=16, warn_range=False, psf="none")
    assert np.abs(chunked.compute(scheduler="synchronous") - ref).max() <= 1e-5 * spread
    corrected = model.predict(img, fc=0.2, tile=64, overlap=16, warn_range=False)
    assert np.abs(corrected - ref).max() > 1e-4 * spread
    with pytest.raises(ConfigError, match="fc"):
        model.predict(img, fc=-1.0, warn_range=False)
    with pytest.raises(ConfigError, match="modality"):
        model.predict(img, fc=0.2, modality="spinning", warn_range=False)


def test_a_model_without_optics_input_ignores_them_with_a_warning(tiny_model):
    img = _image(shape=(64, 64))
    ref = tiny_model.predict(img, warn_range=False)
    with pytest.warns(UserWarning, match="does not take the optics"):
        out = tiny_model.predict(img, fc=0.2, warn_range=False, psf="none")
    assert np.array_equal(out, ref)
    # the optics still set the default correction's theoretical PSF
    with pytest.warns(UserWarning, match="does not take the optics"):
        auto = tiny_model.predict(img, fc=0.2, warn_range=False)
    assert np.array_equal(auto, tiny_model.predict(img, psf=theoretical_psf(fc=0.2), warn_range=False))


def test_restore_files_takes_the_optics_from_na_wavelength_and_the_files_pixel_size(tmp_path):
    from sharpscope.batch import restore_files

    path = _optics_model_file(tmp_path / "o.safetensors")
    model = load_model(path, device="cpu")
    img = _image(1)
    write_image(tmp_path / "a.tif", img, "YX", pixel_size={"Y": 0.1, "X": 0.1})
    write_image(tmp_path / "bare.tif", img, "YX")
    out = restore_files(tmp_path / "a.tif", tmp_path / "a_out.tif", model=model, na=1.0, wavelength=500,
                        warn_range=False, device="cpu")
    got = read_image(out[0]).data
    # fc = NA * pixel / wavelength = 1.0 * 0.1 um / 0.5 um
    # and the default correction through the theoretical PSF of these optics
    theory = theoretical_psf(na=1.0, wavelength=500, pixel_size=0.1)
    assert np.array_equal(got, model.predict(img, fc=0.2, warn_range=False, psf=theory))
    out = restore_files(tmp_path / "bare.tif", tmp_path / "b_out.tif", model=model, na=1.0, wavelength=500,
                        pixel_size=0.125, modality="confocal", warn_range=False, device="cpu")
    got = read_image(out[0]).data
    theory = theoretical_psf(na=1.0, wavelength=500, pixel_size=0.125, modality="confocal")
    assert np.array_equal(got, model.predict(img, fc=0.25, modality="confocal", warn_range=False, psf=theory))
    with pytest.raises(InputError, match="bare.tif: the image records no pixel size"):
        restore_files(tmp_path / "bare.tif", tmp_path / "c_out.tif", model=model, na=1.0,
                      wavelength=500, warn_range=False, device="cpu")
    assert not (tmp_path / "c_out.tif").exists()
    with pytest.raises(ConfigError, match="not both"):
        restore_files(tmp_path / "a.tif", tmp_path / "d.tif", model=model, na=1.0, wavelength=500, fc=0.2)
    with pytest.raises(ConfigError, match="wavelength"):
        restore_files(tmp_path / "a.tif", tmp_path / "d.tif", model=model, na=1.0)


def test_cli_restore_optics_flags(tmp_path, capsys):
    from sharpscope.cli import main

    path = _optics_model_file(tmp_path / "o.safetensors")
    img = _image(2)
    write_image(tmp_path / "a.tif", img, "YX", pixel_size={"Y": 0.1, "X": 0.1})
    rc = main(["restore", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out.tif"), "--model", str(path),
               "--na", "1.0", "--wavelength", "500", "--no-range-check", "-q", "--no-progress"])
    assert rc == 0
    model = load_model(path, device="cpu")
    assert np.array_equal(read_image(tmp_path / "out.tif").data, model.predict(img, fc=0.2, warn_range=False))
    for bad, words in (
        (["--fc", "0.2", "--na", "1.0"], "not both"),
        (["--na", "1.0"], "--wavelength"),
        (["--modality", "confocal"], "--modality goes with"),
        (["--fc", "0.7"], "at most 0.5"),
    ):
        capsys.readouterr()
        rc = main(["restore", str(tmp_path / "a.tif"), "-o", str(tmp_path / "bad.tif"), "--model", str(path), *bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0], (bad, err)
        assert not (tmp_path / "bad.tif").exists()


OME = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
    '<Instrument ID="Instrument:0"><Objective ID="Objective:0" LensNA="1.0"/>'
    '<Objective ID="Objective:1" LensNA="1.4"/></Instrument>'
    '<Image ID="Image:0"><ObjectiveSettings ID="Objective:1"/>'
    '<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" SizeX="96" SizeY="96" SizeC="2" '
    'SizeZ="1" SizeT="1" PhysicalSizeX="0.0875" PhysicalSizeY="0.0875">'
    '<Channel ID="Channel:0:0" SamplesPerPixel="1" EmissionWavelength="490" AcquisitionMode="{mode}"/>'
    '<Channel ID="Channel:0:1" SamplesPerPixel="1" EmissionWavelength="0.7" EmissionWavelengthUnit="um"/>'
    "<TiffData/></Pixels></Image></OME>"
)


def test_per_channel_optics_and_the_optics_an_ome_tiff_records(tmp_path):
    import tifffile

    from sharpscope.batch import restore_files

    model = load_model(_optics_model_file(tmp_path / "o.safetensors"), device="cpu")
    img = np.stack([_image(3), _image(4)])
    # one cut-off per channel: each channel as if restored alone with its own
    both = model.predict(img, axes="CYX", fc=[0.25, 0.175], modality=["confocal", "widefield"], warn_range=False)
    assert np.array_equal(both[0], model.predict(img[0], fc=0.25, modality="confocal", warn_range=False))
    assert np.array_equal(both[1], model.predict(img[1], fc=0.175, warn_range=False))
    with pytest.raises(ConfigError, match="3 values for 2 channel"):
        model.predict(img, axes="CYX", fc=[0.2, 0.2, 0.2], warn_range=False)

    path = tmp_path / "two.ome.tif"
    tifffile.imwrite(path, img, description=OME.format(mode="LaserScanningConfocalMicroscopy"), metadata=None)
    meta = read_image(path).metadata["optics"]
    # the objective the image names (not the first one), wavelengths in nm
    assert meta == {"na": 1.4, "wavelength_em": [490.0, 700.0], "modality": ["confocal", None]}
    out = restore_files(path, tmp_path / "out.tif", model=model, warn_range=False, device="cpu", file_optics=True)
    # fc = 1.4 * 0.0875 um / 0.49 um = 0.25 and / 0.7 um = 0.175
    assert np.array_equal(read_image(out[0]).data, both)
    # opt-in: by default the file's optics are not used
    ignored = restore_files(path, tmp_path / "plain.tif", model=model, warn_range=False, device="cpu")
    assert np.array_equal(read_image(ignored[0]).data, model.predict(img, axes="CYX", warn_range=False))
    # given optics win over the file's
    given = restore_files(path, tmp_path / "given.tif", model=model, fc=0.2, warn_range=False, device="cpu", file_optics=True)
    assert np.array_equal(read_image(given[0]).data, model.predict(img, axes="CYX", fc=0.2, warn_range=False))
    # a modality the network does not know: the file's optics are not used
    odd = tmp_path / "mp.ome.tif"
    tifffile.imwrite(odd, img, description=OME.format(mode="MultiPhotonMicroscopy"), metadata=None)
    out = restore_files(odd, tmp_path / "mp_out.tif", model=model, warn_range=False, device="cpu", file_optics=True)
    assert np.array_equal(read_image(out[0]).data, model.predict(img, axes="CYX", warn_range=False))
