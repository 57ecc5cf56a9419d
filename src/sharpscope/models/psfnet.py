"""PSF identification network N_w(y, fc, theta_max): the PSF at the centre of a patch.

After the blind-deconvolution poster of Nguyen, Sarron, Escande and Weiss (a network
conditioned on the cut-off frequency ``fc`` and the aberration amplitude
``theta_max``), which builds on Deep-blur (Debarnot and Weiss, Biological Imaging 2024).

Network (:class:`PSFNet`)
    The patch is normalised inside (its 1st and 99.8th percentiles mapped to 0 and 1,
    so any intensity scale and offset gives the same input), and fed with the log
    magnitude of its windowed spectrum as a second channel (the blur's transfer
    function multiplies the spectrum: the cut-off and the zeros of the OTF are
    visible there directly).  The log power spectrum also enters the heads directly,
    as ring means and a coarse 16 x 16 map (``spectral``): pooled convolutional
    features forget where in the spectrum something is, which is what the cut-off
    and the aberrations change.  A stem and four strided residual stages (128 -> 8 px)
    are each modulated by FiLM (``h * (1 + gamma) + beta``) from an embedding of the
    condition ``[fc, theta_max, known_fc, known_theta]``; an unknown value enters as 0
    with its flag 0, so the embedding of "unknown" is learned.  One network serves
    both modes: training drops each condition at random (``condition_dropout`` of the
    task), so the unconditioned mode shares every feature of the conditioned one.
    Heads on the pooled features give

    * the Zernike coefficients (Noll ``noll_start ..``), bounded by
      ``theta_max * tanh(.)`` (``theta_max`` known) or ``theta_limit * tanh(.)``;
    * the cut-off ``fc`` in ``fc_range`` (used only when ``fc`` is not given);
    * ``log`` Poisson gain and ``log`` Gaussian sigma of the noise in the normalised
      units (converted back to the input's units by :class:`PSFIdentifier`).

    The PSF is rendered from the coefficients and ``fc`` by the project's
    differentiable pupil model (:func:`sharpscope.physics.psf.pupil_psf`, deepinv's
    convention), so it is a physical, centred PSF summing to 1 by construction
    (``output='zernike'``, the default).  ``output='image'`` instead predicts the PSF
    image directly (a softmax over ``psf_size**2`` pixels); it is kept for comparison
    (see ``docs/user-guide.md`` for the measured numbers that chose ``'zernike'``).

Sign ambiguity
    An intensity PSF cannot tell the sign of the *even* aberrations: with the pupil
    symmetric, ``h[-phi_even + phi_odd] = h[phi_even + phi_odd]`` exactly (conjugating
    the pupil field point-reflects the PSF, and so does reflecting the pupil).  The
    even Noll terms of 4-11 are defocus (4), the two astigmatisms (5, 6) and spherical
    (11); coma and trefoil (7-10) are odd.  Training compares PSFs (and a coefficient
    loss that takes the better of the two equivalent labels), so it is unaffected;
    predicted coefficients are reported in the canonical form with defocus ``>= 0``
    (the even ones flipped together when needed, which leaves the PSF unchanged), the
    convention Deep-blur uses.

Noise units
    ``var = gain * mean + sigma**2`` in the units of the patch given.  For a patch
    ``u`` normalised as ``v = (u - lo) / s`` the parameters map as
    ``gain_u = s * gain_v`` and ``sigma_u**2 = s**2 * sigma_v**2 - gain_u * lo``
    (:func:`noise_to_units`), so scaling a patch by ``c`` scales both by ``c``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sharpscope.errors import ConfigError, InputError, ModelFormatError

__all__ = [
    "EVEN_NOLL",
    "PATCH_SIZE",
    "PSF_SIZE",
    "PSFIdentifier",
    "PSFNet",
    "PSFPrediction",
    "canonical_zernike",
    "load_identifier",
    "noise_to_units",
    "normalise_patches",
]

PSF_SIZE = 33
"""Default output PSF side (odd); the PSF is centred at ``(PSF_SIZE // 2, PSF_SIZE // 2)``."""
PATCH_SIZE = 128
"""Default input patch side the identifier was trained on."""
BUNDLED = "psfid-2d"
ARCHITECTURE = "psfnet"
EVEN_NOLL = frozenset({4, 5, 6, 11, 12, 13, 14, 15, 22})
"""Noll indices of the even (centro-symmetric) aberrations up to 22: their sign is invisible in focus."""
_PMIN, _PMAX = 1.0, 99.8
_RINGS = 33  # ring means of the log power spectrum, radius 0 .. 0.5 cycles/pixel
_COARSE = 16  # side of the coarse map of the log power spectrum
_FC_MEAN, _FC_HALF = 0.175, 0.075
_T_MEAN, _T_HALF = 0.15, 0.15


def _is_even(j: int) -> bool:
    from sharpscope.physics.zernike import noll_to_nm

    n, _ = noll_to_nm(j)
    return n % 2 == 0


def normalise_patches(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map each patch's 1st / 99.8th percentiles to 0 / 1.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, 1, H, W)`` patches at any intensity scale.

    Returns
    -------
    normalised, lo, scale : torch.Tensor
        ``(x - lo) / scale`` and the per-patch ``lo`` and ``scale`` (``(N,)``).

    Examples
    --------
    >>> x = torch.rand(2, 1, 16, 16)
    >>> a, lo, s = normalise_patches(x)
    >>> b, _, _ = normalise_patches(3.0 * x + 7.0)
    >>> bool(torch.allclose(a, b, atol=1e-4))
    True
    """
    flat = x.reshape(x.shape[0], -1).float()
    q = torch.quantile(flat, torch.tensor([_PMIN / 100.0, _PMAX / 100.0], dtype=flat.dtype), dim=1)
    lo, hi = q[0], q[1]
    floor = 1e-6 * torch.maximum(hi.abs(), lo.abs()).clamp_min(1e-12)
    scale = torch.maximum(hi - lo, floor)
    return (x.float() - lo[:, None, None, None]) / scale[:, None, None, None], lo, scale


def noise_to_units(
    log_noise: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """``[gain, sigma]`` in the units of ``u`` from ``[log gain, log sigma]`` in ``v = (u - lo) / scale``.

    Examples
    --------
    >>> ln = torch.log(torch.tensor([[0.01, 0.02]]))
    >>> noise_to_units(ln, torch.zeros(1), torch.full((1,), 10.0))
    tensor([[0.1000, 0.2000]])
    """
    gain_v, sigma_v = log_noise.float().exp().unbind(-1)
    gain = scale * gain_v
    var = (scale * sigma_v).square() - gain * lo
    return torch.stack([gain, var.clamp_min(0.0).sqrt()], dim=-1)


def noise_from_units(
    gain: torch.Tensor, sigma: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`noise_to_units`: ``(gain_v, sigma_v)`` for ``v = (u - lo) / scale``.

    Examples
    --------
    >>> g, s = noise_from_units(torch.tensor([0.1]), torch.tensor([0.2]), torch.zeros(1), torch.tensor([10.0]))
    >>> round(float(g), 4), round(float(s), 4)
    (0.01, 0.02)
    """
    gain_v = gain / scale
    var_v = (sigma.square() + gain * lo) / scale.square()
    return gain_v, var_v.clamp_min(1e-12).sqrt()


def canonical_zernike(theta: torch.Tensor, noll: Sequence[int]) -> torch.Tensor:
    """Flip the even coefficients together where defocus (or the first even one) is negative.

    The PSF is unchanged (see the module notes); the result has a non-negative
    first even coefficient.

    Examples
    --------
    >>> canonical_zernike(torch.tensor([[-0.1, 0.05, 0.0, 0.2]]), (4, 5, 6, 7))
    tensor([[ 0.1000, -0.0500, -0.0000,  0.2000]])
    """
    even = torch.tensor([_is_even(int(j)) for j in noll], dtype=torch.bool, device=theta.device)
    if not bool(even.any()):
        return theta
    first = int(torch.nonzero(even)[0])
    flip = torch.where(theta[:, first : first + 1] < 0, -1.0, 1.0).to(theta.dtype)
    return torch.where(even[None, :], theta * flip, theta)


def even_flipped(theta: torch.Tensor, noll: Sequence[int]) -> torch.Tensor:
    """``theta`` with every even coefficient negated (the same in-focus PSF).

    Examples
    --------
    >>> even_flipped(torch.tensor([[0.1, 0.2]]), (4, 7))
    tensor([[-0.1000,  0.2000]])
    """
    sign = torch.tensor([-1.0 if _is_even(int(j)) else 1.0 for j in noll], dtype=theta.dtype, device=theta.device)
    return theta * sign


class _Stage(nn.Module):
    """Strided conv, FiLM, GELU, residual conv."""

    def __init__(self, cin: int, cout: int, cond: int, stride: int):
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.film = nn.Linear(cond, 2 * cout)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)
        self.act = nn.GELU()
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        gamma, beta = self.film(c).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.act(h * (1.0 + gamma) + beta)
        return h + self.act(self.conv(h))


class PSFNet(nn.Module):
    """Compact FiLM-conditioned CNN identifying the PSF at the centre of a patch.

    Parameters
    ----------
    channels : sequence of int
        Widths of the stem and the strided stages (each stage halves the size).
    psf_size : int
        Side of the output PSF (odd).
    noll_start, n_zernike : int
        Predicted Zernike terms: Noll ``noll_start .. noll_start + n_zernike - 1``.
    theta_limit : float
        Bound of each coefficient (waves RMS) when ``theta_max`` is unknown.
    fc_range : (float, float)
        Range of the estimated cut-off (cycles/pixel).
    output : {'zernike', 'image'}
        Render the PSF from the coefficients, or predict its pixels.
    cond_dim : int
        Width of the condition embedding.
    spectral : bool
        Feed the ring means and a coarse map of the log power spectrum to the heads.

    Examples
    --------
    >>> net = PSFNet()
    >>> out = net(torch.rand(2, 1, 128, 128), fc=torch.tensor([0.2, 0.15]))
    >>> tuple(out["psf"].shape), tuple(out["theta"].shape), tuple(out["log_noise"].shape)
    ((2, 33, 33), (2, 8), (2, 2))
    """

    size_multiple = 16

    def __init__(
        self,
        channels: Sequence[int] = (16, 24, 48, 96, 128),
        psf_size: int = PSF_SIZE,
        noll_start: int = 4,
        n_zernike: int = 8,
        theta_limit: float = 0.3,
        fc_range: Sequence[float] = (0.08, 0.3),
        output: str = "zernike",
        cond_dim: int = 32,
        spectral: bool = False,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError("channels needs at least two positive widths")
        if int(psf_size) < 3 or int(psf_size) % 2 == 0:
            raise ValueError(f"psf_size must be odd and >= 3, got {psf_size}")
        if int(n_zernike) < 1 or int(noll_start) < 1:
            raise ValueError("n_zernike and noll_start must be >= 1")
        if output not in ("zernike", "image"):
            raise ValueError(f"output must be 'zernike' or 'image', got {output!r}")
        lo, hi = (float(v) for v in fc_range)
        if not 0 < lo < hi <= 0.5:
            raise ValueError(f"fc_range must satisfy 0 < low < high <= 0.5, got {tuple(fc_range)}")
        if not float(theta_limit) > 0:
            raise ValueError("theta_limit must be positive")
        self.hparams = {
            "channels": channels,
            "psf_size": int(psf_size),
            "noll_start": int(noll_start),
            "n_zernike": int(n_zernike),
            "theta_limit": float(theta_limit),
            "fc_range": [lo, hi],
            "output": output,
            "cond_dim": int(cond_dim),
            "spectral": bool(spectral),
        }
        self.psf_size = int(psf_size)
        self.noll = tuple(range(int(noll_start), int(noll_start) + int(n_zernike)))
        self.output = output
        self.theta_limit = float(theta_limit)
        self.fc_range = (lo, hi)
        self.condition = nn.Sequential(nn.Linear(4, cond_dim), nn.GELU(), nn.Linear(cond_dim, cond_dim), nn.GELU())
        self.stem = nn.Sequential(nn.Conv2d(2, channels[0], 3, padding=1), nn.GELU())
        self.stages = nn.ModuleList(
            _Stage(a, b, cond_dim, 2) for a, b in zip(channels[:-1], channels[1:], strict=False)
        )
        self.spectral = (
            nn.Sequential(nn.Linear(_RINGS + _COARSE**2, 128), nn.GELU()) if spectral else None
        )
        feat = 2 * channels[-1] + cond_dim + (128 if spectral else 0)
        self.trunk = nn.Sequential(nn.Linear(feat, 128), nn.GELU())
        self.theta_head = nn.Linear(128, int(n_zernike))
        self.fc_head = nn.Linear(128, 1)
        self.noise_head = nn.Linear(128, 2)
        nn.init.zeros_(self.theta_head.weight)
        nn.init.zeros_(self.theta_head.bias)
        nn.init.zeros_(self.fc_head.bias)
        nn.init.constant_(self.noise_head.bias, math.log(0.02))
        self.image_head = nn.Linear(128, self.psf_size**2) if output == "image" else None

    @staticmethod
    def _spectrum(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        win = torch.outer(torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device),
                          torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device))
        xc = x - x.mean(dim=(-2, -1), keepdim=True)
        mag = torch.fft.fftshift(torch.fft.fft2(xc * win).abs(), dim=(-2, -1))
        s = torch.log(mag + 1e-3)
        return (s - s.mean(dim=(-2, -1), keepdim=True)) / (s.std(dim=(-2, -1), keepdim=True) + 1e-6)

    @staticmethod
    def _spectral_features(x: torch.Tensor) -> torch.Tensor:
        """Ring means (radius 0 .. 0.5 cycles/pixel) and a coarse 2-D map of the log power spectrum.

        Global pooling of convolutional features forgets *where* in the spectrum a
        feature is, which is what the cut-off and the aberrations change; these
        position-bound features keep it.
        """
        n, _, h, w = x.shape
        win = torch.outer(torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device),
                          torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device))
        xc = (x - x.mean(dim=(-2, -1), keepdim=True)) * win
        logp = torch.log10(torch.fft.fftshift(torch.fft.fft2(xc).abs().square(), dim=(-2, -1)) + 1e-8)
        fy = torch.fft.fftshift(torch.fft.fftfreq(h, device=x.device, dtype=x.dtype))
        fx = torch.fft.fftshift(torch.fft.fftfreq(w, device=x.device, dtype=x.dtype))
        rad = torch.sqrt(fy[:, None].square() + fx[None, :].square())
        ring = (rad * (2 * (_RINGS - 1))).round().clamp(max=_RINGS - 1).long().reshape(-1)
        flat = logp.reshape(n, -1)
        sums = flat.new_zeros(n, _RINGS).index_add_(1, ring, flat)
        counts = torch.bincount(ring, minlength=_RINGS).to(flat.dtype).clamp_min(1.0)
        rings = sums / counts
        coarse = torch.nn.functional.adaptive_avg_pool2d(logp, _COARSE).reshape(n, -1)
        ref = rings.mean(dim=1, keepdim=True)
        return torch.cat([rings - ref, coarse - ref], dim=1) / 2.0

    def _embed(self, n: int, fc: torch.Tensor | None, theta_max: torch.Tensor | None, device) -> torch.Tensor:
        z = torch.zeros(n, device=device)
        fcn = z if fc is None else torch.nan_to_num((fc.float() - _FC_MEAN) / _FC_HALF)
        tn = z if theta_max is None else torch.nan_to_num((theta_max.float() - _T_MEAN) / _T_HALF)
        kf = z if fc is None else torch.isfinite(fc).float()
        kt = z if theta_max is None else torch.isfinite(theta_max).float()
        return torch.stack([fcn * kf, tn * kt, kf, kt], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        fc: torch.Tensor | None = None,
        theta_max: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Identify the PSFs of a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 1, H, W)`` patches, any intensity scale.
        fc, theta_max : torch.Tensor, optional
            ``(N,)`` conditions; None (or NaN entries) = unknown.

        Returns
        -------
        dict
            ``psf`` (N, S, S) float32 summing to 1; ``theta`` (N, K) waves;
            ``fc`` (N,) the cut-off used; ``fc_hat`` (N,) the estimated one;
            ``log_noise`` (N, 2) log gain / log sigma in the normalised units;
            ``lo``, ``scale`` (N,) the normalisation.
        """
        from sharpscope.physics.psf import pupil_psf

        n = x.shape[0]
        with torch.autocast(device_type=x.device.type, enabled=False):
            xn, lo, scale = normalise_patches(x)
            inp = torch.cat([xn.clamp(-1.0, 3.0), self._spectrum(xn)], dim=1)
            c = self.condition(self._embed(n, fc, theta_max, x.device))
        h = self.stem(inp)
        for stage in self.stages:
            h = stage(h, c)
        parts = [h.float().mean(dim=(-2, -1)), h.float().amax(dim=(-2, -1)), c]
        if self.spectral is not None:
            with torch.autocast(device_type=x.device.type, enabled=False):
                spec = self._spectral_features(xn)
            parts.append(self.spectral(spec))
        pooled = torch.cat(parts, dim=1)
        f = self.trunk(pooled)
        with torch.autocast(device_type=x.device.type, enabled=False):
            f = f.float()
            lo_fc, hi_fc = self.fc_range
            fc_hat = lo_fc + (hi_fc - lo_fc) * torch.sigmoid(self.fc_head(f)[:, 0])
            if fc is None:
                fc_used = fc_hat
            else:
                fc_given = fc.float().to(x.device)
                fc_used = torch.where(torch.isfinite(fc_given), fc_given, fc_hat)
            limit = torch.full((n,), self.theta_limit, device=x.device)
            if theta_max is not None:
                tm = theta_max.float().to(x.device)
                limit = torch.where(torch.isfinite(tm), tm.clamp(0.0, 10.0), limit)
            theta = limit[:, None] * torch.tanh(self.theta_head(f))
            if self.image_head is None:
                psf = pupil_psf(theta, fc_used, size=self.psf_size, noll_start=self.noll[0])
            else:
                psf = torch.softmax(self.image_head(f), dim=1).reshape(n, self.psf_size, self.psf_size)
            log_noise = self.noise_head(f)
        return {
            "psf": psf,
            "theta": theta,
            "fc": fc_used,
            "fc_hat": fc_hat,
            "log_noise": log_noise,
            "lo": lo,
            "scale": scale,
        }


@dataclass(frozen=True)
class PSFPrediction:
    """What :meth:`PSFIdentifier.predict` returns (numpy arrays).

    Attributes
    ----------
    psf : numpy.ndarray
        ``(N, S, S)`` float32, each ``>= 0`` and summing to 1, centred at ``S // 2``.
    zernike : numpy.ndarray
        ``(N, K)`` float32 coefficients in waves RMS for the Noll indices ``noll``
        (deepinv's convention), canonical sign: the even terms flipped together so
        that defocus is ``>= 0`` (the in-focus PSF is the same either way).
    noll : tuple of int
        Noll indices of the columns of ``zernike``.
    fc : numpy.ndarray
        ``(N,)`` float32, the cut-off used (given, or estimated when fc was None).
    noise : numpy.ndarray
        ``(N, 2)`` float32 ``[Poisson gain, Gaussian sigma]`` in the input patches'
        own intensity units (``var = gain * mean + sigma**2``).
    """

    psf: np.ndarray
    zernike: np.ndarray
    noll: tuple[int, ...]
    fc: np.ndarray
    noise: np.ndarray


def _per_patch(value: Any, n: int, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise InputError(f"{name} must be a number or one value per patch ({n}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite")
    return torch.from_numpy(arr.astype(np.float32))


class PSFIdentifier:
    """A trained :class:`PSFNet` with a numpy interface (see :func:`load_identifier`).

    Attributes
    ----------
    patch_size : int
        Input patch side the network was trained on.
    psf_size : int
        Output PSF side.
    conditioned : bool
        The network uses ``fc`` / ``theta_max`` when they are given; ``None`` (the
        unconditioned mode) always works.
    network : PSFNet
    header : ModelHeader or None

    Examples
    --------
    >>> ident = PSFIdentifier(PSFNet())
    >>> pred = ident.predict(np.random.default_rng(0).random((2, 128, 128)), fc=0.2)
    >>> pred.psf.shape, round(float(pred.psf[0].sum()), 4), pred.noll[0]
    ((2, 33, 33), 1.0, 4)
    """

    def __init__(self, network: PSFNet, header: Any = None, device: str = "cpu", patch_size: int = PATCH_SIZE):
        self.network = network.to(device).eval()
        self.header = header
        self.device = torch.device(device)
        self.patch_size = int(patch_size)
        self.psf_size = int(network.psf_size)
        self.conditioned = True
        self.noll = tuple(network.noll)

    def __repr__(self) -> str:
        name = getattr(self.header, "name", None) or "untrained"
        return f"PSFIdentifier(name={name!r}, patch_size={self.patch_size}, psf_size={self.psf_size})"

    def predict(
        self,
        patches: np.ndarray,
        fc: float | np.ndarray | None = None,
        theta_max: float | np.ndarray | None = None,
        batch_size: int = 32,
    ) -> PSFPrediction:
        """Identify the PSF at the centre of each patch.

        Parameters
        ----------
        patches : numpy.ndarray
            ``(N, patch_size, patch_size)`` (or one ``(patch_size, patch_size)``
            patch) at any intensity scale.
        fc, theta_max : float or (N,) array, optional
            Cut-off frequency (cycles/pixel) and aberration bound (waves RMS);
            None = unknown (the unconditioned mode).
        batch_size : int
            Patches per forward pass.

        Returns
        -------
        PSFPrediction

        Raises
        ------
        InputError
            Wrong shape, non-finite values, or conditions of the wrong length.
        """
        arr = np.asarray(patches)
        if arr.ndim == 2:
            arr = arr[None]
        p = self.patch_size
        if arr.ndim != 3 or arr.shape[1:] != (p, p):
            raise InputError(f"patches must have shape (N, {p}, {p}), got {np.asarray(patches).shape}")
        if arr.shape[0] == 0:
            raise InputError("no patches given")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InputError(f"patches must be real numbers, got dtype {arr.dtype}")
        x = arr.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise InputError("patches hold NaN or infinite values")
        n = x.shape[0]
        fc_t = _per_patch(fc, n, "fc")
        tm_t = _per_patch(theta_max, n, "theta_max")
        if fc_t is not None and not bool(((fc_t > 0) & (fc_t <= 0.5)).all()):
            raise InputError("fc must be in (0, 0.5] cycles/pixel")
        if tm_t is not None and bool((tm_t < 0).any()):
            raise InputError("theta_max must be non-negative")
        outs: dict[str, list[np.ndarray]] = {"psf": [], "zernike": [], "fc": [], "noise": []}
        with torch.no_grad():
            for i in range(0, n, max(1, int(batch_size))):
                sl = slice(i, i + max(1, int(batch_size)))
                xb = torch.from_numpy(np.ascontiguousarray(x[sl]))[:, None].to(self.device)
                out = self.network(
                    xb,
                    None if fc_t is None else fc_t[sl].to(self.device),
                    None if tm_t is None else tm_t[sl].to(self.device),
                )
                psf = out["psf"].clamp_min(0.0)
                psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
                outs["psf"].append(psf.cpu().numpy())
                outs["zernike"].append(canonical_zernike(out["theta"], self.noll).cpu().numpy())
                outs["fc"].append(out["fc"].cpu().numpy())
                outs["noise"].append(noise_to_units(out["log_noise"], out["lo"], out["scale"]).cpu().numpy())
        return PSFPrediction(
            psf=np.concatenate(outs["psf"]).astype(np.float32),
            zernike=np.concatenate(outs["zernike"]).astype(np.float32),
            noll=self.noll,
            fc=np.concatenate(outs["fc"]).astype(np.float32),
            noise=np.concatenate(outs["noise"]).astype(np.float32),
        )


def load_identifier(name_or_path: str | os.PathLike = BUNDLED, device: str = "cpu") -> PSFIdentifier:
    """Load a PSF identifier: the bundled one by name, or a sharpscope model file.

    Parameters
    ----------
    name_or_path : str or PathLike
        ``'psfid-2d'`` (bundled), another model name, a ``.safetensors`` model file
        or a training output folder.
    device : str
        Torch device of the network (``'cpu'``).

    Returns
    -------
    PSFIdentifier

    Raises
    ------
    ModelFormatError
        Not found, not a valid model file, or not a PSF identifier.

    Examples
    --------
    >>> ident = load_identifier()  # doctest: +SKIP
    >>> ident.patch_size, ident.psf_size  # doctest: +SKIP
    (128, 33)
    """
    from sharpscope.models.format import load_network
    from sharpscope.models.store import resolve_model

    path = resolve_model(str(name_or_path))
    header, net = load_network(path, kind="psf-identification")
    if not isinstance(net, PSFNet):  # pragma: no cover - load_network checks the kind
        raise ModelFormatError(f"{path} is not a PSF identifier")
    patch = PATCH_SIZE
    training = header.training or {}
    if isinstance(training.get("patch_size"), int):
        patch = int(training["patch_size"])
    try:
        return PSFIdentifier(net, header, device=device, patch_size=patch)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot use device {device!r}: {exc}") from None


def _bundled_path() -> Path:
    from sharpscope.models.store import bundled_dir

    return bundled_dir() / f"{BUNDLED}.safetensors"
