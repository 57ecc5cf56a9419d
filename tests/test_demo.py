"""The demo command and the method comparison behind the quality benchmark."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from sharpscope.cli import main
from sharpscope.demo import compare_methods
from sharpscope.io import read_image
from sharpscope.simulate import simulate_dataset


def test_compare_methods_keeps_best_richardson_lucy():
    d = simulate_dataset("mrbcr-widefield", n=1, size=96, seed=123)
    low, gt, psf = d["low"][0], d["gt"][0], d["psfs"][0]
    one = compare_methods(low, gt, psf, rl_iterations=(5,))
    many = compare_methods(low, gt, psf, rl_iterations=(1, 5, 40))
    assert set(many) == {"input", "richardson-lucy"}
    # the best of several iteration counts is never worse than one of them
    assert many["richardson-lucy"].psnr >= one["richardson-lucy"].psnr - 1e-9
    # deconvolving with the true PSF beats doing nothing on a simulated widefield image
    assert many["richardson-lucy"].psnr > many["input"].psnr


def test_demo_command_writes_tiffs_and_panel(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "-o", str(out), "--model", str(tiny_model_path)])
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("input", "richardson-lucy", "sharpscope"):
        assert name in text
    for stem in ("input", "richardson-lucy", "sharpscope", "ground_truth"):
        img = read_image(out / f"{stem}.tif")
        assert img.axes == "YX" and img.data.shape == (256, 256)
        assert np.isfinite(img.data).all()
    with PILImage.open(out / "panel.png") as png:
        assert png.size[0] > 3 * png.size[1] / 2  # four panels side by side


def test_compare_methods_scores_the_model_with_and_without_tta(tiny_model):
    d = simulate_dataset("mrbcr-widefield", n=1, size=64, seed=321)
    low, gt, psf = d["low"][0], d["gt"][0], d["psfs"][0]
    plain = compare_methods(low, gt, psf, tiny_model, rl_iterations=(1,))
    both = compare_methods(low, gt, psf, tiny_model, rl_iterations=(1,), tta=True)
    assert "sharpscope tta" not in plain
    np.testing.assert_array_equal(both["sharpscope"].image, plain["sharpscope"].image)
    np.testing.assert_array_equal(both["sharpscope tta"].image, tiny_model.predict(low, axes="YX", tta=True))
    assert not np.array_equal(both["sharpscope tta"].image, plain["sharpscope"].image)
