"""Blind deconvolution: PSF identification over the field of view, then deconvolution.

This package sits above :mod:`sharpscope.models` (the identification network,
:mod:`sharpscope.models.psfnet`) and :mod:`sharpscope.deconv`.

:func:`estimate_psf`
    A PSF (or an ``R x C`` grid of PSFs) from overlapping patches of an image;
    patches without structure are flagged, tiles without any are filled from
    their neighbours (:mod:`sharpscope.blind.field`).
:func:`blind_deconvolve`
    Estimate, then Richardson-Lucy / RL-TV with that PSF, or space-varying RL
    with the grid; the iteration count follows the estimated noise.
:func:`eigen_psfs`
    The mean and leading eigen-PSFs of a grid (for fast space-varying blurs).
:func:`blind_richardson_lucy`
    The classical alternating blind Richardson-Lucy baseline.
:func:`measure_bead_psf`
    Not blind: the PSF averaged over the isolated beads of a bead image
    (:mod:`sharpscope.blind.beads`).
"""

from __future__ import annotations

from sharpscope.blind.beads import BeadPSF, measure_bead_psf
from sharpscope.blind.classical import BlindRLIdentifier, aberration_free_psf, blind_richardson_lucy
from sharpscope.blind.deconvolve import (
    BlindInfo,
    blind_deconvolve,
    blind_deconvolve_files,
    space_varying_deconvolve,
)
from sharpscope.blind.field import (
    PSFEstimate,
    eigen_psfs,
    estimate_psf,
    resolve_fc,
    structure_score,
)
from sharpscope.blind.measures import ee50, fwhm, psf_snr, reblur_psnr, relative_l2

__all__ = [
    "BeadPSF",
    "BlindInfo",
    "BlindRLIdentifier",
    "PSFEstimate",
    "aberration_free_psf",
    "blind_deconvolve",
    "blind_deconvolve_files",
    "blind_richardson_lucy",
    "ee50",
    "eigen_psfs",
    "estimate_psf",
    "fwhm",
    "measure_bead_psf",
    "psf_snr",
    "reblur_psnr",
    "relative_l2",
    "resolve_fc",
    "space_varying_deconvolve",
    "structure_score",
]
