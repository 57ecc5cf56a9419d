"""``sharpscope evaluate`` end to end on files written by the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sharpscope.cli import main
from sharpscope.io import write_image


@pytest.fixture()
def pair(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :72]
    gt = (0.5 + 0.4 * np.sin(yy / 6.0) * np.cos(xx / 9.0)).astype(np.float32)
    pred = (gt + 0.05 * rng.standard_normal(gt.shape)).astype(np.float32)
    p = write_image(tmp_path / "pred.tif", pred, "YX", pixel_size={"Y": 0.08, "X": 0.08})
    g = write_image(tmp_path / "gt.tif", gt, "YX", pixel_size={"Y": 0.08, "X": 0.08})
    return p, g, pred, gt


def test_json_output_matches_skimage_and_writes_frc_plot(pair, tmp_path, capsys):
    p, g, pred, gt = pair
    png = tmp_path / "frc.png"
    assert main(["evaluate", str(p), str(g), "--json", "--frc-plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    r = float(gt.max() - gt.min())
    assert out["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=r), abs=1e-4)
    assert out["ssim"] == pytest.approx(structural_similarity(gt, pred, data_range=r), abs=1e-4)
    assert out["frc_resolution_um"] == pytest.approx(0.08 * out["frc_resolution_px"], rel=1e-3)
    assert 0 < out["entropy_pred"] <= 8 and 0 < out["entropy_gt"] <= 8
    assert out["fit"] is False
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))


def test_text_output_and_fit(pair, capsys):
    p, g, _, _ = pair
    assert main(["evaluate", str(p), str(g)]) == 0
    plain = capsys.readouterr().out
    for word in ("PSNR", "SSIM", "NRMSE", "FRC resolution", "entropy"):
        assert word in plain
    assert main(["evaluate", str(p), str(g), "--fit", "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["fit"] is True


def test_npz_keys(tmp_path, capsys):
    rng = np.random.default_rng(1)
    gt = rng.random((2, 32, 32)).astype(np.float32)
    low = (gt + 0.1 * rng.standard_normal(gt.shape)).astype(np.float32)
    path = tmp_path / "pairs.npz"
    np.savez(path, low=low, gt=gt)
    args = ["evaluate", str(path), str(path), "--pred-key", "low", "--gt-key", "gt"]
    assert main([*args, "--axes", "SYX", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = float(gt.max() - gt.min())
    ref = np.mean([structural_similarity(a, b, data_range=r) for a, b in zip(gt, low, strict=True)])
    assert out["ssim"] == pytest.approx(ref, abs=1e-4)


def test_shape_mismatch_is_one_line_error(pair, tmp_path, capsys):
    p, _, _, gt = pair
    other = write_image(tmp_path / "small.tif", gt[:32], "YX")
    assert main(["evaluate", str(p), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sharpscope: error: shape mismatch") and "\n" not in err


def test_nan_and_missing_files_are_one_line_errors(pair, tmp_path, capsys):
    p, g, pred, _ = pair
    bad = pred.copy()
    bad[3, 3] = np.nan
    nan_path = write_image(tmp_path / "nan.tif", bad, "YX")
    assert main(["evaluate", str(nan_path), str(g)]) == 2
    err = capsys.readouterr().err.strip()
    assert "NaN" in err and "\n" not in err
    assert main(["evaluate", str(tmp_path / "missing.tif"), str(g)]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
