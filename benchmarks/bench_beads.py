"""The PSF measured on simulated bead images (``estimate-psf --beads``) against the truth.

For each cut-off fc and bead brightness, a 512 x 512 bead image
(:func:`sharpscope.simulate.bead_image`: 30 beads at random sub-pixel positions, fluxes
drawn from 0.5-1.5x the nominal photons, background 100 photons per pixel, Poisson noise,
uint16) is measured with :func:`sharpscope.blind.measure_bead_psf`; reported: the relative
L2 error of the PSF, the FWHM against the true one, the largest and median error of the
bead centres, the beads used and the time; then one case of uneven illumination.  Means
over ``--repeats`` seeds.

    python benchmarks/bench_beads.py --write-docs
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _docs import replace_section

from sharpscope.blind import fwhm, measure_bead_psf, relative_l2
from sharpscope.physics.psf import make_psf
from sharpscope.simulate import bead_image

SECTION = "## PSF measured on bead images (`estimate-psf --beads`)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    cmd = "python benchmarks/bench_beads.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        SECTION,
        "",
        "512 x 512 simulated bead images: 30 beads at random sub-pixel positions (at least 45 px "
        "apart), fluxes 0.5-1.5x the nominal photons, a background of 100 photons per pixel, "
        "Poisson noise, uint16; PSF 33 x 33, the scalar diffraction PSF of fc "
        f"(`make_psf(fc=...)`). Means over {args.repeats} seeds.",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        "| fc | photons per bead | rel. L2 error | FWHM measured / true (px) | centre error max / median (px) | beads used | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for fc in (0.15, 0.2, 0.3):
        psf = make_psf(fc=fc, size=33).astype(np.float64)
        for photons in (3e3, 3e4):
            rows = []
            for seed in range(args.repeats):
                img, centres = bead_image(psf, 30, flux=(0.5 * photons, 1.5 * photons), seed=seed)
                t0 = time.perf_counter()
                est = measure_bead_psf(img, size=33)
                dt = time.perf_counter() - t0
                err = np.min(np.linalg.norm(est.positions[:, None] - centres[None], axis=-1), axis=1)
                rows.append((relative_l2(est.psf, psf), est.fwhm, err.max(), np.median(err),
                             len(est.positions), dt))
            m = np.mean(np.array(rows, dtype=np.float64), axis=0)
            lines.append(
                f"| {fc:g} | {photons:.0e} | {m[0]:.4f} | {m[1]:.2f} / {fwhm(psf):.2f} | "
                f"{m[2]:.3f} / {m[3]:.3f} | {m[4]:.0f} / 30 | {m[5]:.2f} |"
            )
    # uneven illumination: a background rising from 50 to 650 photons per pixel
    psf = make_psf(fc=0.2, size=33).astype(np.float64)
    yy, xx = np.mgrid[0:512, 0:512]
    ramp = 150.0 + 400.0 * xx / 511.0 + 100.0 * np.sin(yy / 80.0)
    errs = []
    for seed in range(args.repeats):
        img, _ = bead_image(psf, 30, background=0.0, seed=seed)
        noisy = np.minimum(img + np.random.default_rng(seed + 100).poisson(ramp), 65535).astype(np.uint16)
        errs.append(relative_l2(measure_bead_psf(noisy, size=33).psf, psf))
    lines += ["", f"Uneven illumination (fc 0.2, 3e+04 photons per bead, background rising from 50 to 650 "
              f"photons per pixel across the field): rel. L2 error {np.mean(errs):.4f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_docs:
        replace_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
