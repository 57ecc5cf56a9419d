"""Blur operators: forward against scipy.ndimage, adjoints by the dot-product test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from sharpscope.errors import InputError
from sharpscope.physics.blur import (
    Convolution,
    SpaceVaryingBlur,
    fft_convolve,
    partition_weights,
)

SCIPY_MODE = {"reflect": "reflect", "zero": "constant", "circular": "wrap"}
BOUNDARIES = tuple(SCIPY_MODE)
CASES = [
    ((17, 20), (3, 3)),
    ((17, 20), (4, 5)),
    ((16, 19), (8, 6)),
    ((9, 10, 11), (3, 3, 3)),
    ((9, 10, 11), (4, 5, 2)),
]


def _dot_test(op, shape, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *shape), generator=g, dtype=torch.float64) - 0.3
    y = torch.rand((batch, *shape), generator=g, dtype=torch.float64) - 0.3
    lhs = float((op.forward(x) * y).sum())
    rhs = float((x * op.adjoint(y)).sum())
    return abs(lhs - rhs) / abs(lhs)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape,kshape", CASES)
def test_forward_matches_scipy(boundary, shape, kshape):
    rng = np.random.default_rng(1)
    x = rng.random(shape)
    psf = rng.random(kshape)
    ref = ndimage.convolve(x, psf, mode=SCIPY_MODE[boundary])
    out = fft_convolve(x, psf, boundary)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_kernel_larger_than_image_matches_scipy(boundary):
    rng = np.random.default_rng(2)
    x = rng.random((7, 9))
    psf = rng.random((12, 15))
    ref = ndimage.convolve(x, psf, mode=SCIPY_MODE[boundary])
    np.testing.assert_allclose(fft_convolve(x, psf, boundary), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape,kshape", CASES + [((7, 9), (12, 15))])
def test_convolution_adjoint(boundary, shape, kshape):
    psf = torch.rand(kshape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert _dot_test(Convolution(psf, boundary), shape) < 1e-5


def test_batched_psf_matches_per_image_and_adjoint():
    g = torch.Generator().manual_seed(4)
    psfs = torch.rand((3, 5, 4), generator=g, dtype=torch.float64)
    x = torch.rand((3, 1, 20, 18), generator=g, dtype=torch.float64)
    op = Convolution(psfs, "reflect", ndim=2)
    out = op.forward(x)
    assert out.shape == x.shape
    for i in range(3):
        ref = ndimage.convolve(x[i, 0].numpy(), psfs[i].numpy(), mode="reflect")
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-10)
    assert _dot_test(op, (1, 20, 18), batch=3) < 1e-5
    with pytest.raises(InputError):
        op.forward(torch.rand(2, 20, 18))


def test_shapes_dtypes_and_cache():
    psf = torch.ones(5, 5) / 25
    op = Convolution(psf)
    for shape in [(32, 30), (4, 32, 30), (4, 1, 32, 30)]:
        y = op.forward(torch.rand(shape))
        assert y.shape == shape and y.dtype == torch.float32
    assert len(op._otf_cache) == 1  # one OTF for one image shape and dtype
    op.forward(torch.rand(16, 16, dtype=torch.float64))
    assert len(op._otf_cache) == 2
    # a normalised PSF preserves a constant image under reflect and circular boundaries
    for b in ("reflect", "circular"):
        out = Convolution(psf, b).forward(torch.full((20, 21), 0.7))
        torch.testing.assert_close(out, torch.full((20, 21), 0.7))
    # flux is conserved under circular boundary for any image
    x = torch.rand(20, 21, dtype=torch.float64)
    y = Convolution(torch.full((5, 5), 1 / 25, dtype=torch.float64), "circular").forward(x)
    assert abs(float(y.sum() - x.sum())) < 1e-9


def test_numpy_float32_result():
    img = np.zeros((16, 16), np.float32)
    img[8, 8] = 1
    out = fft_convolve(img, np.ones((3, 3)) / 9)
    assert out.dtype == np.float32 and out.shape == (16, 16)
    assert out[7:10, 7:10] == pytest.approx(np.full((3, 3), 1 / 9), abs=1e-6)


def test_errors():
    with pytest.raises(InputError):
        Convolution(np.ones(5))
    with pytest.raises(InputError):
        Convolution(np.ones((3, 3)), boundary="mirror")
    with pytest.raises(InputError):
        Convolution(np.full((3, 3), np.nan))
    with pytest.raises(InputError):
        Convolution(np.ones((3, 3, 3))).forward(torch.rand(8, 8))


@pytest.mark.parametrize("interp", ["linear", "cosine"])
def test_partition_of_unity(interp):
    w = partition_weights((3, 4), (25, 31), interp)
    assert w.shape == (12, 25, 31)
    assert float(w.min()) >= 0
    torch.testing.assert_close(w.sum(0), torch.ones(25, 31, dtype=torch.float64))
    # node (i, j) dominates at the centre of its cell
    w4 = w.reshape(3, 4, 25, 31)
    for i in range(3):
        for j in range(4):
            yc = int((i + 0.5) * 25 / 3)
            xc = int((j + 0.5) * 31 / 4)
            assert int(w4[:, :, yc, xc].argmax()) == i * 4 + j


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_space_varying_adjoint_2d(boundary):
    grid = torch.rand((3, 2, 5, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    op = SpaceVaryingBlur(grid, (30, 27), boundary)
    assert _dot_test(op, (30, 27)) < 1e-5


def test_space_varying_adjoint_3d():
    grid = torch.rand(
        (2, 2, 3, 5, 5), generator=torch.Generator().manual_seed(6), dtype=torch.float64
    )
    op = SpaceVaryingBlur(grid, (6, 20, 18), "reflect")
    assert _dot_test(op, (6, 20, 18)) < 1e-5


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_constant_grid_equals_convolution(boundary):
    psf = torch.rand((5, 6), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grid = psf.expand(2, 3, 5, 6)
    x = torch.rand((2, 24, 25), generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    sv = SpaceVaryingBlur(grid, (24, 25), boundary)
    conv = Convolution(psf, boundary)
    torch.testing.assert_close(sv.forward(x), conv.forward(x))
    torch.testing.assert_close(sv.adjoint(x), conv.adjoint(x))


def test_space_varying_is_local():
    """Far from the seams each region is blurred by its own node's PSF."""
    delta = torch.zeros(5, 5, dtype=torch.float64)
    delta[2, 2] = 1
    box = torch.full((5, 5), 1 / 25, dtype=torch.float64)
    grid = torch.stack([torch.stack([delta, box])])  # left node: identity, right: box blur
    x = torch.rand((40, 80), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    y = SpaceVaryingBlur(grid, (40, 80), "reflect").forward(x)
    np.testing.assert_allclose(y[:, :18].numpy(), x[:, :18].numpy(), atol=1e-12)
    ref = ndimage.convolve(x.numpy(), box.numpy(), mode="reflect")
    np.testing.assert_allclose(y[:, 62:].numpy(), ref[:, 62:], atol=1e-12)
    # flux is conserved under circular boundaries
    yc = SpaceVaryingBlur(grid, (40, 80), "circular").forward(x)
    assert abs(float(yc.sum() - x.sum())) < 1e-9


def test_differentiable_in_image_and_psf():
    g = torch.Generator().manual_seed(10)
    x = torch.rand((1, 9, 8), generator=g, dtype=torch.float64, requires_grad=True)
    psf = torch.rand((3, 4), generator=g, dtype=torch.float64, requires_grad=True)

    def f(img, kernel):
        return Convolution(kernel, "reflect").forward(img)

    assert torch.autograd.gradcheck(f, (x, psf))
    # a fixed (no-grad) PSF caches its OTF, a trainable one does not
    op = Convolution(psf, "zero")
    op.forward(x)
    assert len(op._otf_cache) == 0
