"""``sharpscope psf``: compute a point-spread function and write it as an image."""

from __future__ import annotations

import argparse
import sys

from sharpscope.cli._args import add_output, add_quiet, add_threads, integer, number, setup_compute
from sharpscope.errors import ConfigError


def parse_zernike(text: str | None) -> list[float] | None:
    """``"0.1,0,-0.05"`` -> ``[0.1, 0.0, -0.05]`` (coefficients from Noll index 4 on)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    try:
        values = [float(t) if t else 0.0 for t in items]
    except ValueError:
        raise ConfigError(
            f"--zernike expects comma-separated numbers (waves, Noll 4, 5, ...), got {text!r}"
        ) from None
    return values


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``psf`` sub-command."""
    p = sub.add_parser(
        "psf",
        help="compute a widefield/confocal/Zernike point-spread function and write it to a file",
        description=(
            "Compute a scalar diffraction PSF, either from the optics (--na, --wavelength, "
            "--pixel-size; 3-D with --z-step/--z-planes; confocal with --confocal --pinhole) or "
            "from a cut-off frequency in cycles/pixel (--fc), optionally with Zernike "
            "aberrations. The PSF is normalised to sum 1 and written as float32 (axes YX or "
            "ZYX, pixel size in the metadata). See docs/physics.md for the conventions."
        ),
    )
    add_output(p, help="output image file", metavar="PSF.tif")
    g = p.add_argument_group("optics")
    g.add_argument("--na", type=number(), metavar="NA", help="numerical aperture")
    g.add_argument("--wavelength", type=number(), metavar="NM", help="emission wavelength in nm")
    g.add_argument(
        "--pixel-size", type=number(), metavar="UM", help="pixel size in the sample plane, um"
    )
    g.add_argument(
        "--refractive-index",
        type=number(),
        metavar="N",
        help="immersion refractive index (default: 1.33, water)",
    )
    g.add_argument("--z-step", type=number(), metavar="UM", help="plane spacing of a 3-D PSF, um")
    g.add_argument("--z-planes", type=integer(), metavar="K", help="number of planes of a 3-D PSF")
    g.add_argument("--confocal", action="store_true", help="confocal PSF (needs --pinhole)")
    g.add_argument(
        "--pinhole",
        type=number(),
        metavar="UM",
        help="pinhole diameter back-projected to the sample plane, um (0 = point detector)",
    )
    g.add_argument(
        "--excitation",
        type=number(),
        metavar="NM",
        help="confocal excitation wavelength in nm (default: the emission wavelength)",
    )
    p.add_argument(
        "--fc",
        type=number(),
        metavar="FC",
        help="cut-off frequency in cycles/pixel instead of the optics (0.25 = Nyquist)",
    )
    p.add_argument(
        "--zernike",
        metavar="C4,C5,...",
        help="aberrations in waves RMS for Noll indices 4, 5, 6, ... "
        "(write --zernike=-0.1,0.2 when the first is negative)",
    )
    p.add_argument("--size", type=integer(), default=33, metavar="N", help="side length (default: 33)")
    p.add_argument("--plot", metavar="PNG", help="also save a figure (PSF, OTF, pupil phase)")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``sharpscope psf``."""
    from sharpscope.io import atomic_write, write_image
    from sharpscope.physics.psf import cutoff_frequency, make_psf, psf_figure

    if args.plot is not None and not str(args.plot).lower().endswith(".png"):
        raise ConfigError(f"--plot must name a .png file, got {args.plot!r}")
    coeffs = parse_zernike(args.zernike)
    setup_compute(args)
    psf = make_psf(
        na=args.na,
        wavelength=args.wavelength,
        pixel_size=args.pixel_size,
        refractive_index=args.refractive_index,
        z_step=args.z_step,
        z_planes=args.z_planes,
        confocal=args.confocal,
        pinhole=args.pinhole,
        excitation=args.excitation,
        fc=args.fc,
        zernike=coeffs,
        size=args.size,
    )
    axes = "ZYX" if psf.ndim == 3 else "YX"
    pixel_size: dict[str, float] = {}
    if args.pixel_size is not None:
        pixel_size = {"Y": args.pixel_size, "X": args.pixel_size}
        if psf.ndim == 3:
            pixel_size["Z"] = args.z_step
    fc = (
        args.fc
        if args.fc is not None
        else cutoff_frequency(args.na, args.wavelength, args.pixel_size)
    )
    write_image(args.output, psf, axes, pixel_size=pixel_size or None)

    if args.fc is not None:
        what = f"Zernike PSF, fc {fc:.4g} cycles/px"
    else:
        kind = "confocal" if args.confocal else "widefield"
        n = args.refractive_index if args.refractive_index is not None else 1.33
        what = (
            f"{kind}, NA {args.na:g}, {args.wavelength:g} nm, n {n:g}, pixel {args.pixel_size:g} um"
        )
        if args.confocal:
            ex = args.excitation if args.excitation is not None else args.wavelength
            what += f", excitation {ex:g} nm, pinhole {args.pinhole:g} um"
    if args.plot is not None:
        fig = psf_figure(
            psf,
            pixel_size=args.pixel_size,
            z_step=args.z_step,
            fc=fc,
            zernike=coeffs,
            title=what,
        )
        with atomic_write(args.plot) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    shape = "x".join(str(s) for s in psf.shape)
    print(f"wrote {args.output} ({axes} {shape}, {what}; fc = {fc:.4g} cycles/px)")
    if fc > 0.25 and not args.quiet:
        print(
            f"sharpscope: note: fc = {fc:.3g} > 0.25 cycles/px: the PSF is undersampled (aliased)",
            file=sys.stderr,
        )
    if args.plot is not None:
        print(f"wrote {args.plot}")
    return 0
