"""Figures of PSF estimates: the grid over the image with per-tile FWHM and the PSFs; the
beads a measured PSF was averaged from."""

from __future__ import annotations

from typing import Any

import numpy as np

from sharpscope.blind.field import PSFEstimate

__all__ = ["bead_figure", "estimate_figure"]


def estimate_figure(image: Any, estimate: PSFEstimate, title: str | None = None):
    """The image with the tile grid and each tile's FWHM, beside the tiles' PSFs.

    Filled tiles (no structure; PSF from their neighbours) are drawn dashed
    and labelled ``filled``.  Built on the Agg canvas (no display needed).

    Parameters
    ----------
    image : array_like
        The image the estimate came from (a 2-D plane; the first plane of a stack).
    estimate : PSFEstimate
        From :func:`sharpscope.blind.estimate_psf`.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.blind import estimate_psf
    >>> from sharpscope.blind.classical import BlindRLIdentifier
    >>> img = np.random.default_rng(0).poisson(50.0, (64, 64)).astype(np.float32)
    >>> img[20:40, 20:40] += 200
    >>> est = estimate_psf(img, fc=0.2, identifier=BlindRLIdentifier(64, 9, outer=1))
    >>> len(estimate_figure(img, est).axes)  # image, PSFs, colour bar
    3
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    arr = np.asarray(image, dtype=np.float64)
    while arr.ndim > 2:
        arr = arr[0]
    fig = Figure(figsize=(11.0, 5.2), layout="constrained")
    ax_img, ax_psf = fig.subplots(1, 2, width_ratios=[1.15, 1.0])
    lo, hi = np.percentile(arr, [0.5, 99.8])
    ax_img.imshow(arr, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    r, c = estimate.psfs.shape[:2]
    for i in range(r):
        for j in range(c):
            y0, y1, x0, x1 = (int(v) for v in estimate.bounds[i, j])
            filled = bool(estimate.filled[i, j])
            ax_img.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                    edgecolor="orange" if filled else "cyan", lw=1.2,
                    linestyle="--" if filled else "-",
                )
            )
            cy, cx = estimate.centers[i, j]
            label = f"{estimate.fwhm[i, j]:.2f} px"
            if filled:
                label += "\nfilled"
            ax_img.text(
                cx, cy, label, color="yellow", ha="center", va="center", fontsize=9,
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.5, "edgecolor": "none"},
            )
    ax_img.set_title("tiles and FWHM (dashed: filled from neighbours)")
    ax_img.set_xlabel("x (px)")
    ax_img.set_ylabel("y (px)")
    s = estimate.psfs.shape[-1]
    mosaic = np.full((r * (s + 1) - 1, c * (s + 1) - 1), np.nan)
    for i in range(r):
        for j in range(c):
            mosaic[i * (s + 1) : i * (s + 1) + s, j * (s + 1) : j * (s + 1) + s] = estimate.psfs[i, j]
    peak = float(np.nanmax(mosaic))
    im = ax_psf.imshow(
        np.clip(mosaic, peak * 1e-4, None), cmap="magma", norm=LogNorm(vmin=peak * 1e-4, vmax=peak)
    )
    ax_psf.set_title(f"PSFs ({s} x {s} px, log)")
    ax_psf.set_xticks([])
    ax_psf.set_yticks([])
    fig.colorbar(im, ax=ax_psf, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def bead_figure(image: Any, beads: Any, title: str | None = None):
    """The bead image with the beads averaged circled, beside the measured PSF (log scale).

    Parameters
    ----------
    image : array_like
        The 2-D bead image.
    beads : BeadPSF
        From :func:`sharpscope.blind.beads.measure_bead_psf`.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    arr = np.squeeze(np.asarray(image, dtype=np.float64))
    fig = Figure(figsize=(11.0, 5.2), layout="constrained")
    ax_img, ax_psf = fig.subplots(1, 2, width_ratios=[1.15, 1.0])
    lo, hi = np.percentile(arr, [0.5, 99.8])
    ax_img.imshow(arr, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    r = beads.psf.shape[-1] / 2
    for y, x in beads.positions:
        ax_img.add_patch(_circle((x, y), r))
    rejected = ", ".join(f"{k} {v}" for k, v in beads.rejected.items() if v) or "none"
    ax_img.set_title(f"{len(beads.positions)} beads averaged (rejected: {rejected})", fontsize=9)
    ax_img.set_axis_off()
    psf = np.asarray(beads.psf, dtype=np.float64)
    positive = psf[psf > 0]
    vmin = max(float(positive.min()) if positive.size else 1e-6, float(psf.max()) * 1e-4)
    im = ax_psf.imshow(np.maximum(psf, vmin), cmap="magma", norm=LogNorm(vmin=vmin, vmax=float(psf.max())))
    ax_psf.set_title(f"PSF {psf.shape[0]}x{psf.shape[1]}: FWHM {beads.fwhm:.2f} px, EE50 {beads.ee50:.2f} px",
                     fontsize=9)
    ax_psf.set_axis_off()
    fig.colorbar(im, ax=ax_psf, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def _circle(xy: tuple[float, float], radius: float):
    from matplotlib.patches import Circle

    return Circle(xy, radius, fill=False, edgecolor="#33dd66", linewidth=0.8)
