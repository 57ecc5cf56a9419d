"""Sensor and noise model of a fluorescence camera.

The chain follows eq. (3) of Nguyen et al. ("Blind deconvolution in
microscopy"), with an optional additive background before photon counting::

    y = S_s( Q_q( P_gamma(z + b) + eps_sigma ) ),     z = h * x

``P_gamma``
    Poisson (shot) noise with gain ``gamma``: ``P_gamma(u) = gamma * Poisson(u / gamma)``.
    ``u / gamma`` is the expected photon count, so the output has mean ``u``
    and variance ``gamma * u``: a larger gain means fewer photons and more
    noise.  On images scaled to [0, 1], ``gamma = 0.01`` corresponds to 100
    photons at the brightest pixel.
``eps_sigma``
    Additive white Gaussian (read) noise of standard deviation ``sigma``.
``Q_q``
    Quantisation to ``2**q`` evenly spaced levels over ``value_range``
    (values outside the range are clipped, as an ADC does).
``S_s``
    Salt-and-pepper noise: each pixel independently becomes the low or the
    high end of ``value_range`` (equal odds) with probability ``s``.

Every stage is optional (``None`` or ``0`` disables it).  Scalar parameters
may also be per-image tensors/arrays of shape ``(B,)`` that broadcast over the
first axis of a batch.  All randomness comes from a :class:`torch.Generator`
(:func:`as_generator` turns a seed or a :class:`numpy.random.Generator` into
one), so results are reproducible.  Functions accept numpy arrays (returning
float32 numpy arrays) or torch tensors (returning tensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sharpscope.errors import InputError

__all__ = [
    "as_generator",
    "camera",
    "gaussian",
    "poisson",
    "quantize",
    "salt_and_pepper",
    "sensor",
]

SeedLike = int | np.random.Generator | torch.Generator | None
Param = float | Sequence[float] | np.ndarray | torch.Tensor | None


def as_generator(seed: SeedLike = None) -> torch.Generator:
    """Return a CPU :class:`torch.Generator` from a seed-like value.

    Parameters
    ----------
    seed : int, numpy.random.Generator, torch.Generator or None
        An existing torch generator is returned unchanged; an int seeds a new
        one; a numpy generator draws the seed; ``None`` seeds from entropy.

    Examples
    --------
    >>> from sharpscope.physics.noise import as_generator
    >>> g1, g2 = as_generator(3), as_generator(3)
    >>> bool(torch.rand(2, generator=g1).eq(torch.rand(2, generator=g2)).all())
    True
    """
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    elif isinstance(seed, np.random.Generator):
        g.manual_seed(int(seed.integers(0, 2**63 - 1)))
    elif isinstance(seed, (int, np.integer)):
        g.manual_seed(int(seed))
    else:
        raise InputError(f"seed must be an int or a generator, got {type(seed).__name__}")
    return g


def _to_tensor(x: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return (x if x.is_floating_point() else x.to(torch.float32)), False
    arr = np.asarray(x)
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype)), True


def _back(x: torch.Tensor, was_numpy: bool) -> np.ndarray | torch.Tensor:
    return x.numpy().astype(np.float32, copy=False) if was_numpy else x


def _param(p: Param, like: torch.Tensor, name: str) -> torch.Tensor | None:
    """A stage parameter as a tensor broadcastable against ``like`` (None = disabled)."""
    if p is None:
        return None
    t = torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p)
    t = t.to(dtype=like.dtype, device=like.device)
    if not torch.isfinite(t).all() or (t < 0).any():
        raise InputError(f"{name} must be finite and non-negative")
    if t.ndim == 0:
        return None if float(t) == 0 else t
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise InputError(f"{name} must be a scalar or have one value per image ({like.shape[0]})")
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def poisson(
    x: np.ndarray | torch.Tensor, gain: Param, generator: SeedLike = None
) -> np.ndarray | torch.Tensor:
    """Shot noise with gain: ``gain * Poisson(max(x, 0) / gain)``.

    The result has mean ``x`` and variance ``gain * x`` (for ``x >= 0``).

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.noise import poisson
    >>> y = poisson(np.full((200, 200), 0.5, np.float32), gain=0.01, generator=0)
    >>> round(float(y.mean()), 2), round(float(y.var() / 0.5), 3)
    (0.5, 0.01)
    """
    t, was_np = _to_tensor(x)
    g = _param(gain, t, "gain")
    if g is None:
        return _back(t.clone(), was_np)
    gen = as_generator(generator)
    lam = t.clamp(min=0) / g
    counts = torch.poisson(lam.to(torch.float64), generator=gen).to(t.dtype)
    return _back(counts * g, was_np)


def gaussian(
    x: np.ndarray | torch.Tensor, sigma: Param, generator: SeedLike = None
) -> np.ndarray | torch.Tensor:
    """Additive white Gaussian noise of standard deviation ``sigma``.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.noise import gaussian
    >>> y = gaussian(np.zeros((300, 300), np.float32), sigma=0.05, generator=1)
    >>> round(float(y.std()), 3)
    0.05
    """
    t, was_np = _to_tensor(x)
    s = _param(sigma, t, "sigma")
    if s is None:
        return _back(t.clone(), was_np)
    gen = as_generator(generator)
    noise = torch.randn(t.shape, generator=gen, dtype=t.dtype)
    return _back(t + s * noise, was_np)


def quantize(
    x: np.ndarray | torch.Tensor,
    bits: int | None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray | torch.Tensor:
    """Clip to ``value_range`` and round to ``2**bits`` evenly spaced levels.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.noise import quantize
    >>> quantize(np.array([-0.2, 0.1, 0.4, 0.9, 1.3]), bits=2).tolist()
    [0.0, 0.0, 0.3333333432674408, 1.0, 1.0]
    """
    t, was_np = _to_tensor(x)
    if not bits:
        return _back(t.clone(), was_np)
    if int(bits) != bits or not 1 <= bits <= 32:
        raise InputError(f"bits must be an integer between 1 and 32, got {bits}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise InputError(f"value_range must be increasing, got {value_range}")
    steps = float(2 ** int(bits) - 1)
    u = ((t.to(torch.float64) - lo) / (hi - lo)).clamp(0, 1)
    out = torch.round(u * steps) / steps * (hi - lo) + lo
    return _back(out.to(t.dtype), was_np)


def salt_and_pepper(
    x: np.ndarray | torch.Tensor,
    prob: Param,
    generator: SeedLike = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray | torch.Tensor:
    """Set each pixel to the low or high end of ``value_range`` with probability ``prob``.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.noise import salt_and_pepper
    >>> y = salt_and_pepper(np.full((100, 100), 0.5, np.float32), 0.1, generator=0)
    >>> round(float((y != 0.5).mean()), 1)
    0.1
    """
    t, was_np = _to_tensor(x)
    p = _param(prob, t, "prob")
    if p is None:
        return _back(t.clone(), was_np)
    if (p > 1).any():
        raise InputError("salt-and-pepper probability must be at most 1")
    gen = as_generator(generator)
    u = torch.rand(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
    hit = u < p
    salt = u < p / 2  # half of the hits are salt (high), half pepper (low)
    lo, hi = (float(v) for v in value_range)
    out = torch.where(hit, torch.where(salt, hi, lo), t).to(t.dtype)
    return _back(out, was_np)


def sensor(
    x: np.ndarray | torch.Tensor,
    *,
    gain: Param = None,
    sigma: Param = None,
    bits: int | None = None,
    salt_pepper: Param = None,
    background: Param = 0.0,
    value_range: tuple[float, float] = (0.0, 1.0),
    generator: SeedLike = None,
) -> np.ndarray | torch.Tensor:
    """Apply the full sensor chain ``S_s(Q_q(P_gamma(x + b) + eps_sigma))``.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Noise-free image (e.g. the blurred specimen), any shape; when a
        parameter is given per image the first axis is the batch.
    gain : float or (B,) array, optional
        Poisson gain ``gamma`` (variance = ``gamma`` x mean); None/0 = no shot noise.
    sigma : float or (B,) array, optional
        Standard deviation of the additive Gaussian noise.
    bits : int, optional
        Quantise to ``2**bits`` levels over ``value_range``.
    salt_pepper : float or (B,) array, optional
        Salt-and-pepper probability ``s``.
    background : float or (B,) array
        Constant added before photon counting (autofluorescence, offset).
    value_range : (float, float)
        Range of the quantiser and the salt/pepper values.
    generator : int, numpy.random.Generator or torch.Generator, optional
        Source of randomness.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same shape and kind as ``x`` (numpy results are float32).

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.noise import sensor
    >>> clean = np.full((64, 64), 0.5, np.float32)
    >>> noisy = sensor(clean, gain=0.01, sigma=0.02, bits=16, salt_pepper=1e-5, generator=0)
    >>> noisy.shape, noisy.dtype.name, bool(0.45 < noisy.mean() < 0.55)
    ((64, 64), 'float32', True)
    """
    t, was_np = _to_tensor(x)
    gen = as_generator(generator)
    b = _param(background, t, "background")
    if b is not None:
        t = t + b
    t = poisson(t, gain, gen)
    t = gaussian(t, sigma, gen)
    t = quantize(t, bits, value_range)
    t = salt_and_pepper(t, salt_pepper, gen, value_range)
    return _back(t, was_np)


def camera(
    x: np.ndarray | torch.Tensor,
    *,
    photons: float,
    read_noise: float = 0.0,
    conversion: float = 1.0,
    offset: float = 0.0,
    bits: int | None = None,
    hot_pixels: float = 0.0,
    hot_level: tuple[float, float] = (0.5, 3.0),
    generator: SeedLike = None,
) -> np.ndarray | torch.Tensor:
    """A scientific camera: photon counting, read noise, ADC with offset, hot pixels.

    ``x`` (intensity units, non-negative) becomes ``photons * x`` expected
    photo-electrons; the recorded value in ADU is::

        adu = clip(round((Poisson(photons * x) + N(0, read_noise^2)) / conversion + offset),
                   0, 2**bits - 1)

    and the result is returned on the input's scale,
    ``(adu - offset) * conversion / photons``, so that its mean stays ``x``
    (up to quantisation and clipping).  A fraction ``hot_pixels`` of the
    pixels (hot or stuck) is raised by ``U(hot_level) * max(x)``.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Noise-free image (any shape).
    photons : float
        Photo-electrons per unit intensity (e.g. 5 - 1000).
    read_noise : float
        Read-noise standard deviation in electrons.
    conversion : float
        Electrons per ADU (the camera's gain).
    offset : float
        Camera offset in ADU (keeps read noise from clipping at 0).
    bits : int, optional
        ADC depth; None does not quantise nor clip.
    hot_pixels : float
        Probability of a pixel being hot.
    hot_level : (float, float)
        Range of the hot pixels' excess, in units of ``max(x)``.
    generator : int, numpy.random.Generator or torch.Generator, optional
        Source of randomness.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same shape and kind as ``x``, float32 for numpy input.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.noise import camera
    >>> y = camera(np.full((64, 64), 0.5), photons=100, read_noise=2, offset=100, bits=12,
    ...            generator=0)
    >>> bool(abs(y.mean() - 0.5) < 0.01), bool(abs(y.var() - 0.5 / 100) < 0.001)
    (True, True)
    """
    t, was_np = _to_tensor(x)
    if not photons > 0 or not conversion > 0:
        raise InputError("photons and conversion must be positive")
    if read_noise < 0 or offset < 0 or not 0 <= hot_pixels < 1:
        raise InputError("read_noise and offset must be >= 0 and hot_pixels in [0, 1)")
    gen = as_generator(generator)
    e = torch.poisson((t.clamp(min=0) * photons).to(torch.float64), generator=gen)
    if read_noise > 0:
        e = e + read_noise * torch.randn(e.shape, generator=gen, dtype=torch.float64)
    adu = e / conversion + offset
    if bits is not None:
        adu = adu.round().clamp(0, 2 ** int(bits) - 1)
    out = (adu - offset) * (conversion / photons)
    if hot_pixels > 0:
        hot = torch.rand(t.shape, generator=gen, dtype=torch.float64) < hot_pixels
        lo, hi = hot_level
        level = lo + (hi - lo) * torch.rand(t.shape, generator=gen, dtype=torch.float64)
        out = out + hot * level * float(t.max())
    return _back(out.to(t.dtype), was_np)
