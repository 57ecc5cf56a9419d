"""The noise-level input of noise-conditioned networks (FFDNet's idea, for Poisson-Gaussian noise).

A network trained on one range of photon counts applies one strength of denoising:
outside that range it over-smooths bright, clean images and under-smooths dim ones.
A *noise-conditioned* network also receives a map of the noise standard deviation,
so one set of weights adapts its strength to the image in front of it.

The noise model is the camera's: ``var(y) = gain * E[y] + sigma**2`` in the network's
(normalised) input units.  :func:`estimate_noise_params` measures ``(gain, sigma)``
from an image with torch operations only, so that training (where it runs on every
patch inside the network's forward) and restoration (where :mod:`sharpscope.restore`
runs it once on the whole normalised image and passes the result to every tile) use
the same estimator:

1. a high-pass residual with unit noise gain, the separable second difference
   ``[1, -2, 1] x [1, -2, 1] / 6`` (blind to any signal that is linear along rows
   or columns), paired with the 5 x 5 local mean of the same pixels;
2. the flattest half of the pixels (the smallest gradient of the local mean) is kept,
   so that edges and texture do not pass for noise;
3. those pixels are split into :data:`BINS` equal-count bins by local mean, the noise
   variance of each bin is the squared median absolute residual / 0.6745, and the
   line ``var = gain * mean + sigma**2`` is fitted through the bins by least squares
   with both terms kept non-negative.

:func:`noise_map` turns ``(gain, sigma)`` into the per-pixel standard deviation
``sqrt(gain * max(mean5x5(x), 0) + sigma**2)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BINS",
    "CROP",
    "crop_slices",
    "estimate_noise_params",
    "image_noise_params",
    "noise_map",
    "reference_plane",
    "widen_model",
]

BINS = 8
_MAD = 0.6744897501960817  # median |N(0, 1)|
_EPS = 1e-12


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected (N, 1, H, W), (N, H, W) or (H, W), got {tuple(x.shape)}")
    return x


@torch.no_grad()
def estimate_noise_params(x: torch.Tensor) -> torch.Tensor:
    """Poisson gain and Gaussian sigma of each image of a batch.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, 1, H, W)``, ``(N, H, W)`` or ``(H, W)``; H, W >= 16 for a meaningful
        estimate (smaller images give a rough one).

    Returns
    -------
    torch.Tensor
        ``(N, 2)`` float32: ``gain >= 0`` and ``sigma >= 0`` in the units of ``x``
        (``var = gain * mean + sigma**2``).  Scale-equivariant: ``k * x`` gives
        ``(k * gain, k * sigma)``.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.linspace(0.1, 1.0, 256)[None, :].repeat(256, 1)
    >>> noisy = clean + 0.05 * torch.randn(clean.shape, generator=g)
    >>> gain, sigma = estimate_noise_params(noisy)[0].tolist()
    >>> abs(sigma - 0.05) < 0.01 and gain < 0.002
    True
    """
    x = _as_batch(x).float()
    n, _, h, w = x.shape
    if h < 7 or w < 7:
        return torch.zeros(n, 2, dtype=torch.float32, device=x.device)
    k1 = torch.tensor([1.0, -2.0, 1.0], device=x.device)
    k = (k1[:, None] * k1[None, :] / 6.0)[None, None]
    r = F.conv2d(x, k)[:, :, 1:-1, 1:-1]  # (N, 1, H-4, W-4): same pixels as the 5x5 mean
    m = F.avg_pool2d(x, 5, stride=1)
    gy = m[:, :, 2:, 1:-1] - m[:, :, :-2, 1:-1]
    gx = m[:, :, 1:-1, 2:] - m[:, :, 1:-1, :-2]
    grad = (gy.abs() + gx.abs()).flatten(1)
    r = r[:, :, 1:-1, 1:-1].flatten(1)
    m = m[:, :, 1:-1, 1:-1].flatten(1)
    keep = max(BINS, grad.shape[1] // 2)
    idx = torch.argsort(grad, dim=1)[:, :keep]
    r, m = torch.gather(r, 1, idx), torch.gather(m, 1, idx)
    per = keep // BINS
    order = torch.argsort(m, dim=1)[:, : per * BINS]
    r = torch.gather(r, 1, order).reshape(n, BINS, per)
    m = torch.gather(m, 1, order).reshape(n, BINS, per)
    var = (r.abs().median(dim=2).values / _MAD) ** 2  # (N, BINS)
    mean = m.mean(dim=2)
    # least squares var = a * mean + b, then the non-negative corner solutions
    mm, vm = mean.mean(1, keepdim=True), var.mean(1, keepdim=True)
    cov = ((mean - mm) * (var - vm)).mean(1)
    sxx = ((mean - mm) ** 2).mean(1)
    a = torch.where(sxx > _EPS, cov / sxx.clamp_min(_EPS), torch.zeros_like(cov))
    b = vm[:, 0] - a * mm[:, 0]
    # b < 0: the line through the origin; a < 0: a constant variance
    a_origin = (mean * var).sum(1) / (mean * mean).sum(1).clamp_min(_EPS)
    neg_b = b < 0
    a = torch.where(neg_b, a_origin.clamp_min(0), a)
    b = torch.where(neg_b, torch.zeros_like(b), b)
    neg_a = a < 0
    b = torch.where(neg_a, vm[:, 0], b)
    a = torch.where(neg_a, torch.zeros_like(a), a)
    return torch.stack([a, b.clamp_min(0).sqrt()], dim=1).to(torch.float32)


def noise_map(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Per-pixel noise standard deviation of ``x`` under the model ``(gain, sigma)``.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, 1, H, W)``.
    params : torch.Tensor
        ``(N, 2)`` or ``(2,)``: Poisson gain and Gaussian sigma in the units of ``x``.

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)``, ``sqrt(gain * max(mean5x5(x), 0) + sigma**2)``.

    Examples
    --------
    >>> x = torch.full((1, 1, 8, 8), 0.5)
    >>> round(noise_map(x, torch.tensor([0.02, 0.1]))[0, 0, 0, 0].item(), 4)  # sqrt(0.02 * 0.5 + 0.01)
    0.1414
    """
    x = _as_batch(x)
    p = params.to(x.device, torch.float32).reshape(-1, 2)
    if p.shape[0] == 1 and x.shape[0] != 1:
        p = p.expand(x.shape[0], 2)
    gain = p[:, 0].reshape(-1, 1, 1, 1)
    sigma = p[:, 1].reshape(-1, 1, 1, 1)
    local = F.avg_pool2d(F.pad(x.float(), (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return (gain * local.clamp_min(0) + sigma * sigma).clamp_min(_EPS).sqrt().to(x.dtype)


CROP = 1024
"""Side of the central crop of one plane that a whole image's noise is measured on."""


def crop_slices(h: int, w: int, size: int = CROP) -> tuple[slice, slice]:
    """The central ``size x size`` (at most) window of an ``h x w`` plane.

    Examples
    --------
    >>> crop_slices(2048, 300)
    (slice(512, 1536, None), slice(0, 300, None))
    """
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return slice(y0, y0 + ch), slice(x0, x0 + cw)


def reference_plane(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Index (into the leading axes of ``shape``, all but Y and X) of the plane measured.

    The middle plane of the flattened leading axes, so that a stack is measured on
    one plane wherever it is read from (in memory or chunk by chunk).

    Examples
    --------
    >>> reference_plane((5, 3, 64, 64))
    (2, 1)
    """
    lead = tuple(int(n) for n in shape[:-2])
    if not lead:
        return ()
    n = 1
    for k in lead:
        n *= k
    return tuple(int(i) for i in np.unravel_index(n // 2, lead))


def image_noise_params(plane: np.ndarray) -> torch.Tensor:
    """``(gain, sigma)`` of a whole normalised 2-D plane, measured on its central crop.

    What :mod:`sharpscope.restore` passes to a noise-conditioned network for every tile
    of the image, so that all tiles see the same noise level.

    Parameters
    ----------
    plane : numpy.ndarray
        ``(H, W)``, in the network's input (normalised) units.

    Returns
    -------
    torch.Tensor
        ``(2,)`` float32.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ramp = np.linspace(0.1, 0.9, 128, dtype=np.float32)[None, :].repeat(128, 0)
    >>> plane = ramp + 0.02 * rng.standard_normal((128, 128)).astype(np.float32)
    >>> round(float(image_noise_params(plane)[1]), 2)
    0.02
    """
    ys, xs = crop_slices(*plane.shape[-2:])
    crop = np.ascontiguousarray(plane[ys, xs], dtype=np.float32)
    return estimate_noise_params(torch.from_numpy(crop))[0]


def widen_model(source: str, dest: str, optics: bool = False, seed: int = 0) -> str:
    """Write the noise- (and optionally optics-) conditioned copy of an m-rBCR model file.

    The starting point of fine-tuning a conditioned network from a less conditioned
    one (``model.init`` of a training config): the new noise weights and the last
    layers of the new FiLM blocks are zero, so it computes exactly what ``source``
    computes until training moves them.

    Parameters
    ----------
    source : str
        A bundled model name or an m-rBCR model file.
    dest : str
        The ``.safetensors`` file to write.
    optics : bool
        Also add the optics conditioning (``optics_input``, FiLM in every
        pseudo-inverse branch; see :class:`~sharpscope.models.mrbcr.MRBCR`).
    seed : int
        Seed of the FiLM blocks' (random) first layers.

    Returns
    -------
    str
        ``dest``.

    Examples
    --------
    >>> widen_model("widefield-2d", "init.safetensors")  # doctest: +SKIP
    'init.safetensors'
    """
    from sharpscope.errors import ConfigError
    from sharpscope.models.format import load_network, save_model
    from sharpscope.models.mrbcr import MRBCR
    from sharpscope.models.store import resolve_model

    header, net = load_network(resolve_model(source))
    if header.architecture != "mrbcr":
        raise ConfigError(f"{source}: only m-rBCR models have a noise-conditioned form")
    hparams = dict(header.hparams, noise_input=True)
    if optics:
        hparams["optics_input"] = True
    torch.manual_seed(int(seed))
    wide = MRBCR(**hparams)
    result = wide.load_state_dict(net.state_dict(), strict=False)
    bad = [k for k in result.missing_keys if not k.startswith("film.")] + list(result.unexpected_keys)
    if bad:
        raise ConfigError(f"{source}: its weights do not fit the widened m-rBCR ({bad[0]})")
    what = "noise- and optics-conditioned" if optics else "noise-conditioned"
    fields = header.model_dump()
    fields.update(
        hparams=hparams,
        valid_range=None,
        provenance=f"{header.name} widened to the {what} m-rBCR (new weights start as the identity)",
    )
    save_model(dest, wide, fields)
    return str(dest)
