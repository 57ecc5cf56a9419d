"""Tests of sharpscope.normalize: whole-image percentile normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from sharpscope.errors import InputError
from sharpscope.normalize import denormalize, normalize, percentiles


def test_percentiles_match_numpy_over_the_whole_image():
    rng = np.random.default_rng(0)
    # planes with very different ranges: the percentiles must be those of the whole stack
    stack = np.stack([rng.random((20, 20)), 100 + 10 * rng.random((20, 20))]).astype(np.float32)
    lo, hi = percentiles(stack, 2.0, 99.0)
    ref_lo, ref_hi = np.percentile(stack.ravel(), [2.0, 99.0])
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi))
    assert lo < 1.0 < 100.0 < hi  # spans both planes


def test_closed_form_values():
    x = np.arange(101, dtype=np.uint16)
    assert percentiles(x, 1, 99) == (1.0, 99.0)
    y = normalize(x, 1, 99)
    assert y.dtype == np.float32
    assert y[1] == 0.0 and y[99] == pytest.approx(1.0) and y[50] == pytest.approx(0.5)


def test_inverse_and_no_mutation():
    rng = np.random.default_rng(1)
    x = (1000 * rng.random((7, 9))).astype(np.float32)
    keep = x.copy()
    lo, hi = percentiles(x)
    back = denormalize(normalize(x, lo, hi), lo, hi)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(x, keep)


def test_constant_image_stays_finite():
    x = np.full((4, 4), 7.0, np.float32)
    lo, hi = percentiles(x)
    assert lo == hi == 7.0
    y = normalize(x, lo, hi)
    assert np.all(y == 0.0)
    np.testing.assert_array_equal(denormalize(y, lo, hi), x)


@pytest.mark.parametrize("pmin, pmax", [(50, 50), (-1, 99), (1, 101), (90, 10)])
def test_invalid_percentiles(pmin, pmax):
    with pytest.raises(InputError, match="percentiles"):
        percentiles(np.arange(10.0), pmin, pmax)


def test_empty_image():
    with pytest.raises(InputError, match="empty"):
        percentiles(np.zeros((0, 5)))
