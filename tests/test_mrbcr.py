"""The m-rBCR / s-rBCR networks: size, shapes, resizing, padding, decimation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpscope.errors import ConfigError, InputError
from sharpscope.models.mrbcr import MRBCR, SRBCR, SameConv2d, decimate, resize_bilinear
from sharpscope.models.registry import ARCHITECTURES, build_network, count_parameters


def test_published_parameter_count():
    # the published DeBCR checkpoints hold 236,630 parameters
    assert count_parameters(MRBCR()) == 236_630
    assert count_parameters(build_network("mrbcr")) == 236_630
    assert count_parameters(build_network("mrbcr", decimation="avgpool")) == 236_630


def test_registry_names_and_errors():
    assert {"mrbcr", "srbcr"} <= set(ARCHITECTURES)
    assert isinstance(build_network("srbcr"), SRBCR)
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_network("no-such-net")
    with pytest.raises(ConfigError, match="invalid hyper-parameters"):
        build_network("mrbcr", no_such_option=3)
    with pytest.raises(ConfigError, match="decimation"):
        build_network("mrbcr", decimation="bicubic")
    with pytest.raises(ConfigError, match="channels"):
        build_network("mrbcr", channels=0)


@pytest.mark.parametrize("decimation", ["stride", "avgpool"])
def test_non_square_shapes(decimation):
    torch.manual_seed(0)
    net = MRBCR(decimation=decimation).eval()
    assert net.size_multiple == 4
    with torch.no_grad():
        z0, z2, z4 = net(torch.rand(2, 1, 64, 96))
    assert z0.shape == (2, 1, 64, 96)
    assert z2.shape == (2, 1, 32, 48)
    assert z4.shape == (2, 1, 16, 24)
    assert all(torch.isfinite(z).all() for z in (z0, z2, z4))


def test_decimation_choice_changes_the_coarse_inputs():
    torch.manual_seed(1)
    x = torch.rand(1, 1, 32, 48)
    a = MRBCR(decimation="stride").eval()
    b = MRBCR(decimation="avgpool").eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        za, zb = a(x), b(x)
    # the coarsest output sees only the decimated input: it must differ
    assert (za[2] - zb[2]).abs().max() > 1e-6
    # and on a constant image strided and averaged decimation agree
    c = torch.full((1, 1, 32, 48), 0.3)
    with torch.no_grad():
        for u, v in zip(a(c), b(c), strict=True):
            torch.testing.assert_close(u, v, rtol=0, atol=1e-6)


def test_decimate_against_numpy():
    x = np.random.default_rng(0).random((2, 1, 8, 12)).astype(np.float32)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(decimate(t, 4, "stride").numpy(), x[:, :, ::4, ::4])
    blocks = x.reshape(2, 1, 4, 2, 6, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(decimate(t, 2, "avgpool").numpy(), blocks, rtol=1e-6)


def _tf_resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TensorFlow's ResizeBilinear with half_pixel_centers=True, written out in numpy."""

    def weights(n_in, n_out):
        scale = n_in / n_out
        pos = (np.arange(n_out) + 0.5) * scale - 0.5
        floor = np.floor(pos)
        lower = np.maximum(floor, 0).astype(int)
        upper = np.minimum(np.ceil(pos), n_in - 1).astype(int)
        return lower, upper, pos - floor

    yl, yu, yf = weights(img.shape[0], out_h)
    xl, xu, xf = weights(img.shape[1], out_w)
    top = img[yl][:, xl] + (img[yl][:, xu] - img[yl][:, xl]) * xf
    bottom = img[yu][:, xl] + (img[yu][:, xu] - img[yu][:, xl]) * xf
    return top + (bottom - top) * yf[:, None]


@pytest.mark.parametrize(
    "size_in,size_out", [((8, 12), (32, 48)), ((16, 24), (8, 12)), ((6, 7), (10, 5))]
)
def test_resize_matches_tensorflow_half_pixel_bilinear(size_in, size_out):
    img = np.random.default_rng(2).random(size_in)
    expected = _tf_resize_bilinear(img, *size_out)
    got = resize_bilinear(torch.from_numpy(img)[None, None], size_out)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_same_padding_even_kernel_like_keras():
    # Keras 'same' with kernel 4 pads 1 before and 2 after: an impulse at (r, c)
    # produces out[r + 1 - a, c + 1 - b] = w[a, b]
    conv = SameConv2d(1, 1, 4)
    w = torch.arange(16, dtype=torch.float32).reshape(4, 4) + 1
    with torch.no_grad():
        conv.weight.copy_(w[None, None])
        conv.bias.zero_()
        x = torch.zeros(1, 1, 9, 10)
        r, c = 4, 5
        x[0, 0, r, c] = 1
        y = conv(x)[0, 0]
    assert y.shape == (9, 10)
    for a in range(4):
        for b in range(4):
            assert y[r + 1 - a, c + 1 - b] == w[a, b]
    # a width-only (1, 5) kernel (Keras Conv1D on 4-D input) leaves rows independent
    conv1d = SameConv2d(1, 1, (1, 5))
    with torch.no_grad():
        y = conv1d(x)[0, 0]
    assert torch.count_nonzero(y[r] - conv1d.bias) > 0
    others = torch.cat([y[:r], y[r + 1 :]])
    torch.testing.assert_close(others, torch.full_like(others, conv1d.bias.item()))


def test_rejects_sizes_not_divisible_by_four():
    net = MRBCR()
    with pytest.raises(InputError, match="divisible by 4"):
        net(torch.zeros(1, 1, 30, 32))
    with pytest.raises(InputError):
        net(torch.zeros(1, 2, 32, 32))


def test_srbcr_single_scale():
    net = SRBCR().eval()
    assert count_parameters(net) == 62_338
    assert net.size_multiple == 1
    with torch.no_grad():
        out = net(torch.rand(1, 1, 10, 14))
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (1, 1, 10, 14)
    # deeper variants are configurable
    assert count_parameters(SRBCR(rdb_blocks=7)) > count_parameters(net)


def test_gradients_reach_every_parameter():
    torch.manual_seed(3)
    net = MRBCR(channels=8, dense_layers=2, conv1d_filters=8, conv1d_layers=1, rdb_blocks=1)
    z = net(torch.rand(1, 1, 16, 20))
    sum(zi.square().mean() for zi in z).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing
