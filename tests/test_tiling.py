"""Tests of sharpscope.tiling: tiled prediction equals untiled prediction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sharpscope.errors import ConfigError, InputError
from sharpscope.tiling import FLOOR, layout_axis, predict_tiled

RNG = np.random.default_rng(3)


def _untiled(fn, image, multiple):
    """Reference: one pass over the whole (reflect-padded) image, then crop."""
    h, w = image.shape[-2:]
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    planes = image.reshape(-1, h, w)
    mode = "reflect" if min(h, w) > 1 else "symmetric"
    padded = np.pad(planes, ((0, 0), (0, ph - h), (0, pw - w)), mode=mode)
    with torch.no_grad():
        out = fn(torch.from_numpy(padded[:, None].copy()))[:, 0].numpy()
    return out[:, :h, :w].reshape(image.shape)


@pytest.mark.parametrize(
    "shape, tile, overlap",
    [
        ((1, 1), 32, 8),
        ((3, 5), 32, 8),
        ((50, 70), 32, 8),
        ((37, 129), (16, 40), (4, 12)),
        ((2, 45, 33), 16, 6),
        ((64, 64), 64, 16),  # exactly one tile
    ],
)
def test_pointwise_function_is_exact(shape, tile, overlap):
    image = RNG.random(shape, dtype=np.float32)
    out = predict_tiled(lambda t: 3 * t - 1, image, tile=tile, overlap=overlap)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, 3 * image - 1, atol=2e-6)


def test_local_convolution_is_exact():
    """A 5x5 convolution (radius 2) with overlap 16 (untouched margin 4): tiles agree."""
    kernel = torch.from_numpy(RNG.standard_normal((1, 1, 5, 5)).astype(np.float32))

    def conv(t):
        return F.conv2d(t, kernel, padding=2)

    image = RNG.random((2, 90, 77), dtype=np.float32)
    out = predict_tiled(conv, image, tile=32, overlap=16, batch_size=3)
    ref = _untiled(conv, image, 4)
    # the only disagreement is at tile edges weighted by FLOOR
    assert np.abs(out - ref).max() <= 1e-5 * np.ptp(ref)


def test_mrbcr_tiled_matches_untiled(tiny_model):
    """Real conv network: tiled result equals one pass over the whole image within 1e-3 of the range."""
    net = tiny_model.network

    def fn(t):
        return net(t)[0]

    image = RNG.random((100, 132), dtype=np.float32)
    ref = _untiled(fn, image, net.size_multiple)
    out = predict_tiled(fn, image, tile=64, overlap=32, multiple=net.size_multiple)
    err = np.abs(out - ref).max() / np.ptp(ref)
    assert err < 1e-3, err
    # odd sizes: padding happens inside; nothing dropped
    odd = RNG.random((51, 77), dtype=np.float32)
    out = predict_tiled(fn, odd, tile=32, overlap=16, multiple=4)
    ref = _untiled(fn, odd, 4)
    assert out.shape == odd.shape
    assert np.abs(out - ref).max() / np.ptp(ref) < 1e-3


def test_tiles_are_aligned_and_batches_bounded():
    seen = []

    def fn(t):
        seen.append(tuple(t.shape))
        return t

    image = RNG.random((3, 61, 83), dtype=np.float32)
    predict_tiled(fn, image, tile=24, overlap=8, batch_size=5, multiple=4)
    n_y = len(layout_axis(64, 24, 8, 4).starts)
    n_x = len(layout_axis(84, 24, 8, 4).starts)
    total = 3 * n_y * n_x
    assert sum(s[0] for s in seen) == total
    assert len(seen) == math.ceil(total / 5)
    assert all(s[0] <= 5 and s[1] == 1 and s[2] % 4 == 0 and s[3] % 4 == 0 for s in seen)


def test_layout_windows_cover_positively_and_sum_to_one():
    for size, tile, overlap in [(100, 48, 16), (256, 64, 32), (68, 64, 8), (300, 40, 20)]:
        ax = layout_axis(size, tile, overlap, 4)
        assert ax.starts[0] == 0 and ax.starts[-1] + ax.tile == size
        assert all(s % 4 == 0 for s in ax.starts)
        assert all(a + ax.tile - b >= overlap for a, b in zip(ax.starts, ax.starts[1:], strict=False))
        total = np.zeros(size)
        for s, w in zip(ax.starts, ax.windows, strict=True):
            assert w.min() >= FLOOR
            total[s : s + ax.tile] += w
        # a partition of unity up to the floor: the image border keeps weight 1
        np.testing.assert_allclose(total, 1.0, atol=3 * FLOOR)
        assert ax.windows[0][0] == 1.0 and ax.windows[-1][-1] == 1.0


def test_progress_bar_on_stderr(capsys):
    predict_tiled(lambda t: t, np.zeros((40, 40), np.float32), tile=16, overlap=4, progress=True, desc="demo")
    captured = capsys.readouterr()
    assert "demo" in captured.err and "tile" in captured.err and captured.out == ""


def test_bad_options_and_outputs():
    img = np.zeros((20, 20), np.float32)
    with pytest.raises(ConfigError, match="overlap"):
        predict_tiled(lambda t: t, img, tile=16, overlap=16)
    with pytest.raises(ConfigError, match="batch size"):
        predict_tiled(lambda t: t, img, batch_size=0)
    with pytest.raises(ConfigError, match="tile"):
        predict_tiled(lambda t: t, img, tile=0, overlap=0)
    with pytest.raises(InputError, match="empty"):
        predict_tiled(lambda t: t, np.zeros((0, 5), np.float32))
    with pytest.raises(InputError):
        predict_tiled(lambda t: t, np.zeros((2, 2, 4, 4), np.float32))
    with pytest.raises(RuntimeError, match="expected"):
        predict_tiled(lambda t: t[..., :-1], img, tile=8, overlap=2)


REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "debcr-reference"


@pytest.mark.slow
def test_published_weights_tiled_matches_untiled(tmp_path):
    """Trained m-rBCR (DeBCR bright_SR): an overlap of 160 along X gives parity < 1e-3."""
    if not (REFERENCE / "weights" / "bright_SR").is_dir():
        pytest.skip(f"DeBCR reference material not found at {REFERENCE}")
    from sharpscope.models.debcr_import import import_debcr
    from sharpscope.restore import load_model

    net = load_model(import_debcr(REFERENCE / "weights" / "bright_SR", tmp_path / "sr.safetensors"), device="cpu").network

    def fn(t):
        return net(t)[0]

    with np.load(REFERENCE / "bright_SR_reference.npz") as ref:
        x0 = ref["x0"][..., 0].astype(np.float32)
    # a strip of real images 2.5 patches wide, cut along X (the direction of the
    # widest receptive field: the pseudo-inverse branches convolve along the width)
    image = np.concatenate([x0[0], x0[1], x0[2][:, :64]], axis=1)[:64]
    full = _untiled(fn, image, 4)
    out = predict_tiled(fn, image, tile=(64, 256), overlap=(0, 160))
    assert np.abs(out - full).max() / np.ptp(full) < 1e-3
    # a too small overlap is visibly worse: the test can fail
    out = predict_tiled(fn, image, tile=(64, 128), overlap=(0, 32))
    assert np.abs(out - full).max() / np.ptp(full) > 1e-3


def test_a_preferred_overlap_shrinks_to_fit_the_tile():
    from sharpscope.tiling import PreferredOverlap, fit_overlap

    assert fit_overlap(512, 160, 4) == 160 and fit_overlap(128, 160, 4) == 64 and fit_overlap(30, 40, 4) == 12
    image = np.random.default_rng(3).random((70, 90)).astype(np.float32)
    calls = []

    def fn(t):
        calls.append(tuple(t.shape))
        return t + 1

    out = predict_tiled(fn, image, tile=32, overlap=PreferredOverlap(40), multiple=4)
    np.testing.assert_allclose(out, image + 1, atol=1e-6)
    with pytest.raises(ConfigError, match="overlap"):
        predict_tiled(fn, image, tile=32, overlap=40)  # a plain int is a demand
    # a wish larger than the tile is irrelevant when the image fits in one tile
    calls.clear()
    predict_tiled(fn, image[:20, :24], tile=32, overlap=PreferredOverlap(160), multiple=4)
    assert calls == [(1, 1, 20, 24)]
