"""Blind deconvolution: estimate the PSF (or a PSF grid), then deconvolve with it.

With a single PSF the deconvolution is :func:`sharpscope.deconv.deconvolve`
(any of its methods).  With a grid the blur is the product-convolution
:class:`sharpscope.physics.blur.SpaceVaryingBlur` through the tile centres
and the deconvolution is Richardson-Lucy (``'rl'``) or RL-TV (``'rl-tv'``)
with that operator (mirrored borders): ``x <- x / w . A^T(y / A x)``,
``w = A^T 1``.  In both cases ``iterations=None`` stops by the library's
discrepancy principle with the noise estimated from the image (the rule of
:func:`sharpscope.deconv.deconvolve`: the first estimate whose weighted
residual is at most ``tau = clip(optimal_discrepancy, 0.3, 1)``, at most
:data:`sharpscope.deconv.MAX_ITERATIONS` updates).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharpscope.blind.field import PSFEstimate, estimate_psf
from sharpscope.errors import ConfigError, InputError

__all__ = ["BlindInfo", "blind_deconvolve", "blind_deconvolve_files", "space_varying_deconvolve"]

GRID_METHODS = ("rl", "rl-tv")
_EPS = 1e-7
_W_MIN = 1e-4


@dataclass(frozen=True)
class BlindInfo:
    """What :func:`blind_deconvolve` did: the PSF estimate and the deconvolution's choices.

    Attributes
    ----------
    estimate : PSFEstimate
        The PSF (or grid) used.
    method : str
        Deconvolution algorithm.
    iterations : tuple of int
        Updates made per plane.
    rule : str
        ``'fixed'``, ``'discrepancy'`` or ``'cap'`` (as :class:`sharpscope.deconv.DeconvolveInfo`).
    misfit : float or None
        With the automatic stop: the largest weighted residual left (``mean((y - A x)**2 /
        var)``; 1 = the noise level).  Above 1 after the cap, the estimated PSF cannot
        explain the image (too wide, or wrong): the result is likely over-sharpened.
    """

    estimate: PSFEstimate
    method: str
    iterations: tuple[int, ...]
    rule: str
    misfit: float | None = None

    @property
    def warning(self) -> str | None:
        """A one-line warning when the PSF does not explain the image, else None."""
        if self.rule == "cap" and self.misfit is not None and self.misfit > 1.0:
            return (
                f"the estimated PSF does not explain the image (residual {self.misfit:.2f} x the"
                " noise after the iteration cap): the result may be over-sharpened; give the"
                " optics (fc/theta_max or NA, wavelength, pixel size) or fewer iterations"
            )
        return None

    def summary(self) -> str:
        """One line for the command line."""
        est = self.estimate
        if est.grid is None:
            what = f"PSF estimated (FWHM {float(est.fwhm[0, 0]):.2f} px, fc {float(est.fc[0, 0]):.3g})"
        else:
            filled = int(est.filled.sum())
            what = (
                f"{est.grid[0]}x{est.grid[1]} PSF grid estimated (FWHM"
                f" {float(est.fwhm.min()):.2f}-{float(est.fwhm.max()):.2f} px"
                + (f", {filled} tiles filled from neighbours" if filled else "")
                + ")"
            )
        its = self.iterations
        span = "0" if not its else (f"{min(its)}" if min(its) == max(its) else f"{min(its)}-{max(its)}")
        how = {"fixed": "", "discrepancy": " (discrepancy principle)", "cap": " (iteration cap)"}
        line = f"{what}; {self.method} ran {span} iterations{how.get(self.rule, '')}"
        return line + (f"; warning: {self.warning}" if self.warning else "")


def _tv_div(x: torch.Tensor) -> torch.Tensor:
    from sharpscope.deconv import _tv_divergence

    return _tv_divergence(x, 2)


def space_varying_deconvolve(
    image: Any,
    psf_grid: Any,
    method: str = "rl",
    iterations: int | None = None,
    *,
    tv_weight: float = 0.002,
    return_iterations: bool = False,
) -> np.ndarray | tuple[np.ndarray, int, str]:
    """Richardson-Lucy (or RL-TV) with a space-varying blur through a PSF grid.

    Parameters
    ----------
    image : array_like
        2-D image.
    psf_grid : array_like
        ``(R, C, S, S)`` PSFs at the centres of a regular ``R x C`` tiling.
    method : {'rl', 'rl-tv'}
        Algorithm.
    iterations : int, optional
        Updates; None: the discrepancy principle (see the module notes).
    tv_weight : float
        RL-TV weight (image scaled to a maximum of 1).
    return_iterations : bool
        Also return the count, the rule that ended it and the last weighted residual
        (NaN without the automatic stop).

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((2, 2, 5, 5), np.float32); g[..., 2, 2] = 1.0  # identity PSFs
    >>> img = np.random.default_rng(0).random((32, 32)).astype(np.float32) + 1
    >>> out = space_varying_deconvolve(img, g, iterations=3)
    >>> bool(np.allclose(out, img, rtol=1e-4))
    True
    """
    from sharpscope.deconv import MAX_ITERATIONS, TAU_MIN
    from sharpscope.estimate import estimate_noise, optimal_discrepancy
    from sharpscope.physics.blur import SpaceVaryingBlur

    if method not in GRID_METHODS:
        raise ConfigError(f"a PSF grid deconvolves with {' or '.join(GRID_METHODS)}, got {method!r}")
    y_raw = np.asarray(image, dtype=np.float32)
    if y_raw.ndim != 2:
        raise InputError(f"space-varying deconvolution needs a 2-D image, got shape {y_raw.shape}")
    if not np.all(np.isfinite(y_raw)):
        raise InputError("image contains NaN or Inf values")
    grid = np.asarray(psf_grid, dtype=np.float64)
    if grid.ndim != 4:
        raise InputError(f"psf_grid must be (R, C, S, S), got shape {grid.shape}")
    grid = np.clip(grid, 0, None)
    grid = grid / grid.sum(axis=(-2, -1), keepdims=True)
    if iterations is not None and (isinstance(iterations, bool) or int(iterations) < 1):
        raise ConfigError(f"iterations must be >= 1 or None, got {iterations!r}")
    y = np.clip(y_raw, 0.0, None)
    scale = float(y.max())
    if scale == 0.0:
        out0 = np.zeros_like(y)
        return (out0, 0, "fixed", float("nan")) if return_iterations else out0
    yt = torch.from_numpy(y / scale)
    op = SpaceVaryingBlur(torch.from_numpy(grid.astype(np.float32)), y.shape, boundary="reflect")
    w = op.adjoint(torch.ones_like(yt))
    valid = w > _W_MIN
    winv = torch.where(valid, 1.0 / w.clamp(min=_W_MIN), torch.zeros_like(w))
    x = torch.full_like(yt, float(yt.mean()))
    tau = None
    if iterations is None:
        try:
            noise = estimate_noise(y_raw)
            tau = float(np.clip(optimal_discrepancy(y_raw, noise), TAU_MIN, 1.0))
        except InputError:
            noise, tau = None, None
        if noise is None:
            iterations = 20
        else:
            gain, sigma2, offset = noise.gain / scale, (noise.sigma / scale) ** 2, noise.offset / scale
            y_ref = torch.from_numpy(y_raw / scale)
    cap = MAX_ITERATIONS if iterations is None else int(iterations)
    count, rule = cap, "fixed" if iterations is not None else "cap"
    disc = float("nan")
    for k in range(cap + 1):
        hx = op.forward(x)
        if tau is not None:
            var = (hx - offset).clamp(min=0.0) * gain + max(sigma2, 1e-12)
            disc = float(((y_ref - hx) ** 2 / var).mean())
            if disc <= tau:
                count, rule = k, "discrepancy"
                break
        if k == cap:
            break
        f = op.adjoint(yt / hx.clamp(min=_EPS)) * winv
        if method == "rl-tv" and tv_weight > 0:
            f = f / (1.0 - tv_weight * _tv_div(x[None])[0]).clamp(min=0.5)
        x = x * f
    out = (x * scale).numpy().astype(np.float32)
    return (out, int(count), rule, disc) if return_iterations else out


def blind_deconvolve(
    image: Any,
    fc: float | None = None,
    theta_max: float | None = None,
    grid: int | tuple[int, int] | None = None,
    method: str = "rl",
    iterations: int | None = None,
    axes: str | None = None,
    identifier: Any = None,
    *,
    na: float | None = None,
    wavelength: float | None = None,
    pixel_size: float | None = None,
    estimate: PSFEstimate | None = None,
    return_info: bool = False,
    **kw: Any,
) -> np.ndarray | tuple[np.ndarray, BlindInfo]:
    """Deconvolve an image with a PSF estimated from the image itself.

    Parameters
    ----------
    image : array_like
        2-D image or a stack (a 2-D PSF deconvolves it plane by plane).
    fc, theta_max, grid, axes, identifier, na, wavelength, pixel_size
        As in :func:`sharpscope.blind.estimate_psf`.
    method : str
        ``'rl'``, ``'rl-accel'``, ``'rl-tv'`` or ``'wiener'`` for one PSF;
        ``'rl'`` or ``'rl-tv'`` with a grid.
    iterations : int, optional
        Richardson-Lucy updates; None: the discrepancy principle.
    estimate : PSFEstimate, optional
        Use this estimate instead of making one.
    return_info : bool
        Also return a :class:`BlindInfo`.
    **kw
        ``boundary``, ``tv_weight``, ``device``, ... of
        :func:`sharpscope.deconv.deconvolve` (``tv_weight`` only with a grid).

    Returns
    -------
    numpy.ndarray
        float32, the image's shape.
    BlindInfo
        With ``return_info=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.blind.classical import BlindRLIdentifier
    >>> rng = np.random.default_rng(0)
    >>> img = rng.poisson(100 * np.kron(rng.random((8, 8)), np.ones((8, 8)))).astype(np.float32)
    >>> out, info = blind_deconvolve(img, fc=0.2, identifier=BlindRLIdentifier(64, 9, outer=1),
    ...                              return_info=True)
    >>> out.shape, info.estimate.psf.shape
    ((64, 64), (9, 9))
    """
    from sharpscope.deconv import METHODS, deconvolve

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if estimate is None:
        estimate = estimate_psf(
            image, fc, theta_max, grid, axes, identifier, na=na, wavelength=wavelength,
            pixel_size=pixel_size,
        )
    if estimate.grid is None:
        out, dinfo = deconvolve(
            image, estimate.psf, method=method, iterations=iterations, axes=axes,
            return_info=True, **kw,
        )
        misfit = max(dinfo.discrepancy) if dinfo.discrepancy else None
        info = BlindInfo(estimate, method, tuple(dinfo.iterations), dinfo.rule, misfit)
        return (out, info) if return_info else out
    if method not in GRID_METHODS:
        raise ConfigError(
            f"a PSF grid deconvolves with {' or '.join(GRID_METHODS)}, got method {method!r}"
        )
    extra = set(kw) - {"tv_weight", "device", "boundary"}
    if extra:
        raise ConfigError(f"unsupported options with a PSF grid: {', '.join(sorted(extra))}")
    from sharpscope.io import guess_axes, validate_axes

    arr = np.asarray(image, dtype=np.float32)
    ax = guess_axes(arr.ndim) if axes is None else validate_axes(axes, arr.ndim, require="YX")
    order = [i for i, a in enumerate(ax) if a not in "YX"] + [ax.index("Y"), ax.index("X")]
    work = np.transpose(arr, order)
    flat = work.reshape(-1, *work.shape[-2:])
    outs, counts, rules, discs = [], [], [], []
    for plane in flat:
        o, n, rule, d = space_varying_deconvolve(
            plane, estimate.psfs, method, iterations, tv_weight=float(kw.get("tv_weight", 0.002)),
            return_iterations=True,
        )
        outs.append(o)
        counts.append(n)
        rules.append(rule)
        discs.append(d)
    res = np.stack(outs).reshape(work.shape)
    res = np.ascontiguousarray(np.transpose(res, np.argsort(order)))
    if iterations is not None:
        rule = "fixed"
    else:
        rule = "cap" if all(r == "cap" for r in rules) else "discrepancy"
    finite = [d for d in discs if np.isfinite(d)]
    info = BlindInfo(estimate, method, tuple(counts), rule, max(finite) if finite else None)
    return (res, info) if return_info else res


def blind_deconvolve_files(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    fc: float | None = None,
    theta_max: float | None = None,
    grid: int | tuple[int, int] | None = None,
    method: str = "rl",
    iterations: int | None = None,
    axes: str | None = None,
    identifier: Any = None,
    *,
    na: float | None = None,
    wavelength: float | None = None,
    pixel_size: float | None = None,
    suffix: str = "_deconvolved",
    overwrite: bool = False,
    skip_existing: bool = False,
    fail_fast: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    report: Callable[[str], None] | None = None,
    **kw: Any,
):
    """Blind-deconvolve image files (``sharpscope deconvolve --psf auto``).

    Every file gets its own PSF estimate.  With ``na`` and ``wavelength`` but
    no ``pixel_size``, each file's own lateral pixel size is used.

    Parameters
    ----------
    inputs, output, suffix, overwrite, skip_existing, fail_fast, log
        As in :func:`sharpscope.batch.deconvolve_files`.
    fc, theta_max, grid, method, iterations, axes, identifier, na, wavelength, pixel_size
        As in :func:`blind_deconvolve`.
    progress : bool
        A progress bar over the files on stderr.
    report : callable, optional
        Receives one line per file: the PSF found and the iterations run.
    **kw
        Options of :func:`sharpscope.deconv.deconvolve`.

    Returns
    -------
    BatchResult

    Examples
    --------
    >>> blind_deconvolve_files("cells.tif", "cells_rl.tif", fc=0.2)  # doctest: +SKIP
    [PosixPath('cells_rl.tif')]
    """
    from sharpscope.batch import run_batch
    from sharpscope.blind.field import load_psf_identifier, resolve_fc
    from sharpscope.io import read_image, write_image

    use_file_pixel = na is not None and wavelength is not None and pixel_size is None
    if not use_file_pixel:
        resolve_fc(fc, na, wavelength, pixel_size)  # refuse bad optics before any work
    elif fc is not None:
        raise ConfigError("give either fc or the optics (NA, wavelength, pixel size), not both")
    ident = load_psf_identifier(identifier)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    bar = None
    many = False

    def work(src: Path, dst: Path) -> Path:
        image = read_image(src, axes=axes)
        px = pixel_size
        if use_file_pixel:
            px = image.pixel_size.get("X")
            if px is None:
                raise InputError(
                    f"{src} records no pixel size; pass --pixel-size (um) with --na and --wavelength"
                )
        out, info = blind_deconvolve(
            image.data, fc, theta_max, grid, method, iterations, image.axes, ident,
            na=na, wavelength=wavelength, pixel_size=px, return_info=True, **kw,
        )
        if report is not None:
            report(f"{src}: {info.summary()}" if many else info.summary())
        path = write_image(dst, out, image.axes, pixel_size=image.pixel_size)
        if bar is not None:
            bar.update(1)
        return path

    def check(dests) -> None:
        nonlocal bar, many
        many = len(dests) > 1
        if progress and len(dests) > 1:
            import sys

            from tqdm.auto import tqdm

            bar = tqdm(total=len(dests), desc="deconvolve", unit="file", file=sys.stderr)

    try:
        return run_batch(
            inputs, output, work, suffix=suffix, overwrite=overwrite,
            skip_existing=skip_existing, fail_fast=fail_fast, check=check, log=log,
        )
    finally:
        if bar is not None:
            bar.close()
