"""``sharpscope estimate-psf`` and ``sharpscope deconvolve --psf auto`` on files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sharpscope.cli import main
from sharpscope.io import read_image, write_image
from sharpscope.physics.blur import fft_convolve
from sharpscope.physics.psf import pupil_psf
from sharpscope.physics.specimens import make_specimen

pytest.importorskip("sharpscope.models.psfnet")

TRUE_ZERNIKE = [0.1, 0.05, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A blurred, noisy specimen (256 x 256, pixel 0.1 um), its ground truth and PSF."""
    root = tmp_path_factory.mktemp("blind")
    h = pupil_psf(torch.tensor([TRUE_ZERNIKE]), 0.2, size=33)[0].numpy()
    x = make_specimen("mixed", (256, 256), generator=0, density=2.0)
    y = fft_convolve(x, h)
    noisy = (np.random.default_rng(0).poisson(np.clip(y, 0, None) * 300) / 300).astype(np.float32)
    path = write_image(root / "img.tif", noisy, "YX", pixel_size={"Y": 0.1, "X": 0.1})
    bare = write_image(root / "bare.npz", noisy, "YX")  # no pixel size recorded
    blank = np.random.default_rng(1).poisson(40.0, (256, 256)).astype(np.float32)
    return {
        "image": path, "bare": bare, "gt": x, "psf": h, "noisy": noisy,
        "blank": write_image(root / "blank.tif", blank, "YX"),
    }


def test_single_psf_file_and_json(scene, tmp_path, capsys):
    out = tmp_path / "psf.tif"
    rc, stdout, err = _run(capsys, "estimate-psf", str(scene["image"]), "-o", str(out), "--fc", "0.2", "--theta-max", "0.2", "--json")
    assert rc == 0, err
    psf = read_image(out)
    assert psf.axes == "YX" and psf.data.shape == (33, 33) and psf.data.dtype == np.float32
    assert abs(float(psf.data.sum()) - 1) < 1e-5 and psf.data.min() >= 0
    peak = np.unravel_index(psf.data.argmax(), psf.data.shape)
    assert max(abs(peak[0] - 16), abs(peak[1] - 16)) <= 2  # centred
    assert psf.pixel_size.get("X") == pytest.approx(0.1)
    doc = json.loads(stdout)
    assert doc["noll"] == list(range(4, 12)) and len(doc["zernike"][0]) == 8
    assert doc["fc"] == [pytest.approx(0.2)] and doc["fc_given"] and doc["theta_max"] == 0.2
    assert doc["fwhm"][0] > 1.0 and doc["ee50"][0] > 0.5
    assert doc["noise"]["gain"] == pytest.approx(1 / 300, rel=0.3) and doc["noise"]["sigma"] >= 0
    assert set(doc["noise_identifier"]) == {"gain", "sigma"}
    assert doc["grid"] is None and doc["output"] == str(out)
    # the same PSF from the Python API
    import sharpscope

    est = sharpscope.estimate_psf(scene["noisy"], fc=0.2, theta_max=0.2)
    np.testing.assert_allclose(psf.data, est.psf, atol=1e-6)


def test_grid_stack_positions_and_plot(scene, tmp_path, capsys):
    out = tmp_path / "grid.tif"
    plot = tmp_path / "grid.png"
    rc, stdout, err = _run(capsys, "estimate-psf", str(scene["image"]), "-o", str(out), "--grid", "2x3", "--plot", str(plot), "--na", "1.2", "--wavelength", "600")
    assert rc == 0, err
    stack = read_image(out)
    assert stack.axes == "SYX" and stack.data.shape == (6, 33, 33)
    np.testing.assert_allclose(stack.data.sum(axis=(1, 2)), 1.0, atol=1e-5)
    side = json.loads((tmp_path / "grid.json").read_text())
    assert side["grid"] == [2, 3] and len(side["centers"]) == 6
    assert side["centers"][0] == [pytest.approx(63.5), pytest.approx(256 / 6 - 0.5)]  # blur nodes
    assert side["fc"][0] == pytest.approx(1.2 * 0.1 * 1000 / 600)  # from the file's pixel size
    assert len(side["fwhm"]) == 6 and len(side["confidence"]) == 6 and len(side["filled"]) == 6
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "grid.json" in stdout and "2x3 grid" in stdout


def test_blank_image_is_refused_and_nothing_written(scene, tmp_path, capsys):
    out = tmp_path / "psf.tif"
    rc, stdout, err = _run(capsys, "estimate-psf", str(scene["blank"]), "-o", str(out), "--fc", "0.2")
    assert rc == 2 and not out.exists() and stdout == ""
    assert err.count("\n") == 1 and "no part of the image has enough structure" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fc", "0.2", "--na", "1.2"], "either --fc or the optics"),
        (["--na", "1.2"], "need --na and --wavelength"),
        (["--fc", "0.7"], "at most 0.5"),
        (["--theta-max", "5"], "--theta-max must be between 0 and 2"),
        (["--grid", "0x2"], "--grid expects ROWSxCOLUMNS"),
        (["--grid", "three"], "--grid expects ROWSxCOLUMNS"),
        (["--plot", "x.jpg"], "--plot must name a .png"),
    ],
)
def test_bad_options_give_one_line(scene, tmp_path, capsys, extra, message):
    out = tmp_path / "psf.tif"
    rc, _, err = _run(capsys, "estimate-psf", str(scene["image"]), "-o", str(out), *extra)
    assert rc == 2 and err.count("\n") == 1 and message in err and not out.exists()


def test_no_pixel_size_and_no_overwrite(scene, tmp_path, capsys):
    out = tmp_path / "psf.tif"
    rc, _, err = _run(capsys, "estimate-psf", str(scene["bare"]), "-o", str(out), "--na", "1.2", "--wavelength", "600")
    assert rc == 2 and "records no pixel size" in err and not out.exists()
    rc, _, err = _run(capsys, "estimate-psf", str(scene["bare"]), "-o", str(out), "--na", "1.2", "--wavelength", "600", "--pixel-size", "0.1", "-q")
    assert rc == 0 and err == ""
    before = out.read_bytes()
    rc, _, err = _run(capsys, "estimate-psf", str(scene["image"]), "-o", str(out))
    assert rc == 2 and "exists; pass --overwrite" in err and out.read_bytes() == before
    rc, _, err = _run(capsys, "estimate-psf", str(scene["image"]), "-o", str(out), "--overwrite", "--identifier", "blind-rl", "--fc", "0.2")
    assert rc == 0 and out.read_bytes() != before


def test_deconvolve_psf_auto_on_files_is_the_api(scene, tmp_path, capsys):
    """The command is blind_deconvolve on the file (the improvement itself is tested in
    tests/test_blind.py with an identifier that knows the PSF)."""
    import sharpscope

    out = tmp_path / "dec.tif"
    rc, _, err = _run(capsys, "deconvolve", str(scene["image"]), "-o", str(out), "--psf", "auto", "--fc", "0.2", "--theta-max", "0.1")
    assert rc == 0, err
    assert "PSF estimated" in err and "iterations" in err  # how many RL ran, and why
    res = read_image(out)
    assert res.data.shape == (256, 256) and res.pixel_size.get("X") == pytest.approx(0.1)
    expect, info = sharpscope.blind_deconvolve(scene["noisy"], fc=0.2, theta_max=0.1, return_info=True)
    np.testing.assert_allclose(res.data, expect, rtol=1e-4, atol=1e-5)
    assert info.summary() in err
    # a grid: space-varying Richardson-Lucy, optics from NA, wavelength and the file's pixel
    out2 = tmp_path / "dec_grid.tif"
    rc, _, err = _run(capsys, "deconvolve", str(scene["image"]), "-o", str(out2), "--psf", "auto", "--grid", "2x2", "--na", "1.2", "--wavelength", "600")
    assert rc == 0, err
    assert "2x2 PSF grid" in err and read_image(out2).data.shape == (256, 256)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--psf", "psf.tif", "--fc", "0.2"], "--fc applies only with --psf auto"),
        (["--psf", "psf.tif", "--grid", "2x2"], "--grid applies only with --psf auto"),
        (["--psf", "auto", "--fc", "0.2", "--na", "1"], "either --fc or the optics"),
        (["--psf", "auto", "--grid", "2x2", "--method", "wiener"], "--grid deconvolves with rl or rl-tv"),
        (["--psf", "auto", "--grid", "2by2"], "--grid expects ROWSxCOLUMNS"),
        (["--psf", "auto", "--workers", "2"], "--psf auto works on whole images"),
    ],
)
def test_deconvolve_auto_flags_are_validated(scene, tmp_path, capsys, extra, message):
    out = tmp_path / "dec.tif"
    rc, _, err = _run(capsys, "deconvolve", str(scene["image"]), "-o", str(out), *extra)
    assert rc == 2 and err.count("\n") == 1 and message in err and not out.exists()
