"""The PSF measured on bead images (sharpscope.blind.beads, ``estimate-psf --beads``).

Bead images are rendered from a known PSF (:func:`sharpscope.simulate.bead_image`: each
bead is the PSF moved to a random sub-pixel position by a Fourier shift, exact for the
band-limited diffraction PSF, with a background and Poisson noise), so the measured PSF
and the bead positions can be compared with the truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sharpscope.blind import measure_bead_psf, relative_l2
from sharpscope.cli import main
from sharpscope.errors import ConfigError, InputError
from sharpscope.io import read_image, write_image
from sharpscope.physics.psf import make_psf
from sharpscope.simulate import bead_image

SIZE = 33


def bead_scene(fc=0.2, n=30, flux=3e4, background=100.0, seed=0, shape=(512, 512), extra=()):
    """uint16 bead image, the true PSF and the true bead centres (row, column)."""
    psf = make_psf(fc=fc, size=SIZE).astype(np.float64)
    img, centres = bead_image(psf, n, flux=(0.5 * flux, 1.5 * flux), background=background,
                              shape=shape, extra=extra, seed=seed)
    return img, psf, centres


@pytest.mark.parametrize("fc", [0.15, 0.2, 0.3])
def test_measured_psf_matches_the_true_one(fc):
    img, psf, centres = bead_scene(fc=fc)
    est = measure_bead_psf(img, size=SIZE)
    assert est.psf.shape == (SIZE, SIZE) and est.psf.dtype == np.float32
    assert abs(float(est.psf.sum()) - 1.0) < 1e-5 and float(est.psf.min()) >= 0
    assert np.unravel_index(np.argmax(est.psf), est.psf.shape) == (SIZE // 2, SIZE // 2)
    # measured: 0.008-0.016 on these scenes (30 beads of 1.5e4-4.5e4 photons)
    assert relative_l2(est.psf, psf) < 0.04
    assert len(est.positions) == len(centres) and sum(est.rejected.values()) == 0
    err = np.min(np.linalg.norm(est.positions[:, None] - centres[None], axis=-1), axis=1)
    assert err.max() < 0.15  # sub-pixel centres (measured: at most 0.06 px)
    assert est.fwhm == pytest.approx(_fwhm_of(psf), rel=0.05)


def _fwhm_of(psf):
    from sharpscope.blind import fwhm

    return fwhm(psf)


def test_dim_beads_give_a_noisier_but_unbiased_psf():
    bright = measure_bead_psf(bead_scene(flux=3e4, seed=1)[0], size=SIZE)
    img, psf, _ = bead_scene(flux=3e3, seed=1)
    dim = measure_bead_psf(img, size=SIZE)
    assert relative_l2(bright.psf, psf) < relative_l2(dim.psf, psf) < 0.3  # measured 0.17-0.19
    assert dim.fwhm == pytest.approx(_fwhm_of(psf), rel=0.1)


def test_close_pairs_saturated_and_border_beads_are_left_out():
    pair = [(120, 400, 3e4), (120, 410, 3e4)]  # 10 px apart: each one's light in the other's crop
    img, psf, centres = bead_scene(n=12, extra=pair, seed=2)
    img[400:403, 400:403] = 65535  # a saturated bead, alone
    img[3, 250] = 60000  # a hot spot at the border
    est = measure_bead_psf(img, size=SIZE)
    assert est.rejected["neighbour"] == 2 and est.rejected["saturated"] == 1
    assert est.rejected["border"] >= 1
    assert len(est.positions) == len(centres)
    assert relative_l2(est.psf, psf) < 0.05


def test_a_bead_of_another_shape_is_rejected():
    img, psf, centres = bead_scene(n=20, seed=3)
    blob = make_psf(fc=0.06, size=SIZE) * 3e4  # an out-of-focus blob, far from the others
    y, x = (int(v) for v in np.round(centres[0]))
    img = img.astype(np.float64)
    img[y - 16 : y + 17, x - 16 : x + 17] = 100 + blob  # replaces the first bead
    est = measure_bead_psf(np.round(img).astype(np.uint16), size=SIZE)
    assert est.rejected["shape"] == 1 and len(est.positions) == len(centres) - 1
    assert relative_l2(est.psf, psf) < 0.05


def test_bad_input_is_one_clear_error():
    rng = np.random.default_rng(4)
    with pytest.raises(InputError, match="no isolated bead"):
        measure_bead_psf(rng.poisson(100, (256, 256)), size=SIZE)
    with pytest.raises(InputError, match="one 2-D plane"):
        measure_bead_psf(rng.random((3, 64, 64)))
    with pytest.raises(InputError, match="smaller than"):
        measure_bead_psf(rng.random((30, 30)))
    with pytest.raises(InputError, match="NaN"):
        measure_bead_psf(np.full((64, 64), np.nan))
    for size in (32, 5, 33.0):
        with pytest.raises(ConfigError, match="odd integer"):
            measure_bead_psf(rng.random((128, 128)), size=size)
    # a stack with one plane is that plane
    img, psf, _ = bead_scene(n=6, shape=(256, 256), seed=5)
    est = measure_bead_psf(img[None, None], axes="CZYX")
    assert relative_l2(est.psf, psf) < 0.06


def test_cli_estimate_psf_beads_then_restore_with_it(tmp_path, tiny_model_path, capsys):
    img, psf, centres = bead_scene(n=20, seed=6)
    src = write_image(tmp_path / "beads.tif", img, "YX", pixel_size={"Y": 0.1, "X": 0.1})
    out = tmp_path / "psf.tif"
    assert main(["estimate-psf", str(src), "-o", str(out), "--beads", "--json", "--plot",
                 str(tmp_path / "beads.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    got = read_image(out)
    assert got.axes == "YX" and got.data.shape == (SIZE, SIZE)
    assert got.pixel_size["X"] == pytest.approx(0.1)
    assert relative_l2(got.data, psf) < 0.04
    assert summary["beads"] == len(centres) and summary["psf_size"] == SIZE
    assert (tmp_path / "beads.png").stat().st_size > 0
    # the measured PSF is what restore --psf takes
    cells = write_image(tmp_path / "cells.tif", np.random.default_rng(7).poisson(80, (64, 64)).astype(np.uint16), "YX")
    assert main(["restore", str(cells), "-o", str(tmp_path / "r.tif"), "--psf", str(out), "--model",
                 str(tiny_model_path), "--no-progress", "--no-range-check"]) == 0
    capsys.readouterr()
    bad = [
        (["--beads", "--grid", "3x3"], "--beads measures the PSF on the beads; it takes no --grid"),
        (["--beads", "--na", "1.2", "--wavelength", "600"], "it takes no --na, --wavelength"),
        (["--psf-size", "21"], "--psf-size goes with --beads"),
        (["--beads", "--psf-size", "20"], "odd integer"),
    ]
    for extra, message in bad:
        dst = tmp_path / "bad.tif"
        assert main(["estimate-psf", str(src), "-o", str(dst), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not dst.exists()
    blank = write_image(tmp_path / "blank.tif", np.random.default_rng(8).poisson(100, (128, 128)).astype(np.uint16), "YX")
    assert main(["estimate-psf", str(blank), "-o", str(tmp_path / "none.tif"), "--beads"]) == 2
    err = capsys.readouterr().err.strip()
    assert "found no isolated bead" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "none.tif").exists()


def test_bead_image_puts_the_psf_where_it_says():
    psf = make_psf(fc=0.2, size=SIZE).astype(np.float64)
    img, centres = bead_image(psf, 5, flux=(1e5, 1e5), background=0.0, shape=(300, 300), seed=9)
    assert img.dtype == np.uint16 and centres.shape == (5, 2)
    for y, x in centres:  # the intensity centroid of each bead is its true centre
        r0, c0 = int(round(y)), int(round(x))
        win = img[r0 - 16 : r0 + 17, c0 - 16 : c0 + 17].astype(np.float64)
        yy, xx = np.mgrid[-16:17, -16:17]
        assert abs((win * yy).sum() / win.sum() - (y - r0)) < 0.05
        assert abs((win * xx).sum() / win.sum() - (x - c0)) < 0.05
        assert win.sum() == pytest.approx(1e5, rel=0.02)
    with pytest.raises(ConfigError, match="odd side"):
        bead_image(np.ones((4, 4)))
    with pytest.raises(ConfigError, match="do not fit"):
        bead_image(psf, 100, shape=(160, 160))


def test_uneven_illumination_is_not_mistaken_for_the_psf():
    psf = make_psf(fc=0.2, size=SIZE).astype(np.float64)
    img, centres = bead_image(psf, 30, background=0.0, seed=10)
    yy, xx = np.mgrid[0:512, 0:512]
    ramp = 150.0 + 400.0 * xx / 511.0 + 100.0 * np.sin(yy / 80.0)  # vignetting-like, 50-650
    rng = np.random.default_rng(11)
    uneven = np.minimum(img + rng.poisson(ramp), 65535).astype(np.uint16)
    est = measure_bead_psf(uneven, size=SIZE)
    assert len(est.positions) == len(centres)
    assert relative_l2(est.psf, psf) < 0.04  # measured 0.024 (a flat background of 350: 0.030)
