"""``sharpscope estimate-psf``: the PSF of an image (or a grid of PSFs over its field)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sharpscope.cli._args import (
    add_json,
    add_optics_flags,
    add_output,
    add_progress,
    add_quiet,
    add_threads,
    check_optics_flags,
    note,
    number,
    setup_compute,
    show_progress,
)
from sharpscope.errors import ConfigError, InputError


def parse_grid(text: str | None) -> tuple[int, int] | None:
    """``"3x4"`` (or ``"3,4"``, ``"3"``) -> ``(3, 4)``; one-line error otherwise."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--grid expects ROWSxCOLUMNS, e.g. 3x3, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(1 <= v <= 64 for v in values):
        raise ConfigError(f"--grid expects ROWSxCOLUMNS with 1 to 64 each, e.g. 3x3, got {text!r}")
    return values[0], values[1]


def add_optics(p: argparse.ArgumentParser) -> None:
    """``--fc`` / ``--theta-max`` / ``--na --wavelength --pixel-size`` of the blind commands."""
    g = p.add_argument_group(
        "optics (optional; unknown when omitted: the network estimates the cut-off)"
    )
    add_optics_flags(g)
    g.add_argument(
        "--theta-max", type=number(), metavar="T",
        help="largest aberration coefficient expected, waves RMS (e.g. 0.2)",
    )
    g.add_argument(
        "--identifier", default=None, metavar="NAME|FILE",
        help="identification network: bundled name or .safetensors file (default: psfid-2d),"
        " or 'blind-rl' for the classical alternating blind Richardson-Lucy",
    )


def check_optics(args: argparse.Namespace) -> None:
    """Refuse inconsistent optics flags with one line, before any file is read."""
    check_optics_flags(args)
    if args.theta_max is not None and not 0 <= args.theta_max <= 2:
        raise ConfigError(f"--theta-max must be between 0 and 2 waves, got {args.theta_max:g}")


def optics_fc(args: argparse.Namespace, pixel_size: dict[str, float]) -> float | None:
    """The cut-off from the flags (the file's pixel size when --pixel-size is absent)."""
    from sharpscope.blind import resolve_fc

    if args.na is None:
        return resolve_fc(args.fc)
    px = args.pixel_size if args.pixel_size is not None else pixel_size.get("X")
    if px is None:
        raise InputError("the input records no pixel size; pass --pixel-size (um) with --na")
    return resolve_fc(None, args.na, args.wavelength, px)


def sidecar(path: str) -> Path:
    """``psf.tif`` -> ``psf.json`` (the grid's positions and measures)."""
    p = Path(path)
    name = p.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".npz", ".npy"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(name + ".json")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``estimate-psf`` sub-command."""
    p = sub.add_parser(
        "estimate-psf",
        help="estimate the PSF of an image (or a grid of PSFs over its field) with the "
        "PSF-identification network",
        description=(
            "Estimate the point-spread function of INPUT from overlapping patches (blind PSF "
            "identification). The PSF is centred on the array centre and sums to 1 (float32, "
            "YX). With --grid RxC the output is a stack of R*C PSFs (axes SYX, row-major tile "
            "order) and their tile centres, FWHM and confidence are written beside it as "
            "PSF.json. Patches without structure are not used; tiles without any are filled "
            "from their neighbours. The optics are optional: --fc (with --theta-max), or --na "
            "--wavelength [--pixel-size]. With --beads, INPUT is an image of isolated "
            "sub-resolution beads and the PSF is measured on it instead: the flux-weighted "
            "mean of the beads, centred at sub-pixel precision (for restore --psf and "
            "deconvolve --psf)."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="image file")
    add_output(p, help="output PSF image (.tif)", metavar="PSF.tif")
    add_optics(p)
    p.add_argument("--grid", metavar="RxC", default=None, help="a grid of R x C PSFs, e.g. 3x3")
    b = p.add_argument_group("measured PSF (instead of the blind estimate)")
    b.add_argument(
        "--beads", action="store_true",
        help="INPUT is a 2-D image of isolated sub-resolution beads: measure the PSF on it "
        "(isolated, unsaturated beads of similar shape, averaged)",
    )
    b.add_argument(
        "--psf-size", type=int, default=None, metavar="S",
        help="side of the measured PSF, odd (default 33; beads closer than S are not used)",
    )
    p.add_argument(
        "--axes", default=None, help="axes of INPUT, e.g. YX, TYX (default: from the file)"
    )
    p.add_argument("--plot", metavar="PNG", help="also save a figure: the grid on the image with FWHM")
    p.add_argument(
        "--min-structure", type=number(), default=None, metavar="S",
        help="structure score a patch needs (default 5, standard deviations above noise)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    add_threads(p)
    add_progress(p, default=False)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def check_beads(args: argparse.Namespace) -> None:
    """``--beads`` takes none of the blind estimate's options; ``--psf-size`` needs it."""
    if not args.beads:
        if args.psf_size is not None:
            raise ConfigError("--psf-size goes with --beads (the network's PSF size is fixed)")
        return
    blind = {
        "--grid": args.grid, "--theta-max": args.theta_max, "--identifier": args.identifier,
        "--fc": args.fc, "--na": args.na, "--wavelength": args.wavelength,
        "--pixel-size": args.pixel_size, "--min-structure": args.min_structure,
    }
    given = [k for k, v in blind.items() if v is not None]
    if given:
        raise ConfigError(f"--beads measures the PSF on the beads; it takes no {', '.join(given)}")


def run(args: argparse.Namespace) -> int:
    """Handle ``sharpscope estimate-psf``."""
    check_beads(args)
    grid = parse_grid(args.grid)
    check_optics(args)
    if args.plot is not None and not str(args.plot).lower().endswith(".png"):
        raise ConfigError(f"--plot must name a .png file, got {args.plot!r}")
    out = Path(args.output)
    if not out.name.lower().endswith((".tif", ".tiff", ".npz")):
        raise ConfigError(f"the PSF is written as .tif, .tiff or .npz, got {args.output!r}")
    outputs = [out] + ([sidecar(args.output)] if grid else []) + ([Path(args.plot)] if args.plot else [])
    if Path(args.input).resolve() in {o.resolve() for o in outputs}:
        raise InputError(f"{args.input}: an output would overwrite the input")
    existing = [str(o) for o in outputs if o.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{existing[0]} exists; pass --overwrite to replace it")

    from sharpscope.blind import estimate_psf
    from sharpscope.blind.field import MIN_STRUCTURE
    from sharpscope.io import atomic_write, read_image, write_image

    setup_compute(args)
    image = read_image(args.input, axes=args.axes)
    if args.beads:
        return _run_beads(args, image, out)
    fc = optics_fc(args, image.pixel_size)
    bar = None
    if show_progress(args) and not args.json:
        from tqdm.auto import tqdm

        bar = tqdm(desc="estimate-psf", unit="patch", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        est = estimate_psf(
            image.data, fc=fc, theta_max=args.theta_max, grid=grid, axes=image.axes,
            identifier=args.identifier,
            min_structure=MIN_STRUCTURE if args.min_structure is None else args.min_structure,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    pixel = _pixel(image)
    summary = est.to_dict()
    summary.update(input=str(args.input), output=str(out))
    if grid is None:
        write_image(out, est.psf, "YX", pixel_size=pixel)
    else:
        write_image(out, est.stack(), "SYX", pixel_size=pixel)
        side = sidecar(args.output)
        summary["positions"] = str(side)
        with atomic_write(side) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=1) + "\n")
    if args.plot is not None:
        from sharpscope.blind.plot import estimate_figure

        fig = estimate_figure(image.data if image.data.ndim == 2 else _first_plane(image), est,
                              title=f"{Path(args.input).name}: PSF estimate")
        with atomic_write(args.plot) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        summary["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(summary))
        return 0
    s = est.psfs.shape[-1]
    fcs = est.fc.ravel()
    how = "given" if est.fc_given else "estimated"
    if grid is None:
        print(
            f"wrote {out} (YX {s}x{s}; FWHM {float(est.fwhm[0, 0]):.2f} px, EE50 "
            f"{float(est.ee50[0, 0]):.2f} px, fc {float(fcs[0]):.3g} ({how}), confidence "
            f"{float(est.confidence[0, 0]):.2f})"
        )
    else:
        filled = int(est.filled.sum())
        print(
            f"wrote {out} (SYX {grid[0] * grid[1]}x{s}x{s}, {grid[0]}x{grid[1]} grid; FWHM "
            f"{float(est.fwhm.min()):.2f}-{float(est.fwhm.max()):.2f} px, fc "
            f"{float(fcs.min()):.3g}-{float(fcs.max()):.3g} ({how})"
            + (f"; {filled} tiles without structure filled from neighbours" if filled else "")
            + ")"
        )
        print(f"wrote {sidecar(args.output)} (tile centres, FWHM, Zernike coefficients, confidence)")
    if args.plot is not None:
        print(f"wrote {args.plot}")
    note(
        args,
        f"noise: Poisson gain {est.noise.gain:.3g}, Gaussian sigma {est.noise.sigma:.3g} (image units)",
    )
    return 0


def _pixel(image) -> dict[str, float] | None:
    px = image.pixel_size.get("X")
    return {"Y": float(image.pixel_size.get("Y", px)), "X": float(px)} if px else None


def _run_beads(args: argparse.Namespace, image, out: Path) -> int:
    """``estimate-psf --beads``: the PSF measured on the beads of the image."""
    from sharpscope.blind.beads import measure_bead_psf
    from sharpscope.io import atomic_write, write_image

    beads = measure_bead_psf(image.data, size=33 if args.psf_size is None else args.psf_size, axes=image.axes)
    summary = beads.to_dict()
    summary.update(input=str(args.input), output=str(out))
    if args.plot is not None:  # the figure first: a failure leaves no PSF file behind
        from sharpscope.blind.plot import bead_figure

        fig = bead_figure(image.data, beads, title=f"{Path(args.input).name}: measured PSF")
        with atomic_write(args.plot) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        summary["plot"] = str(args.plot)
    write_image(out, beads.psf, "YX", pixel_size=_pixel(image))
    if args.json:
        print(json.dumps(summary))
        return 0
    s = beads.psf.shape[-1]
    rejected = ", ".join(f"{k} {v}" for k, v in beads.rejected.items() if v)
    print(
        f"wrote {out} (YX {s}x{s}; {len(beads.positions)} beads averaged"
        + (f", rejected: {rejected}" if rejected else "")
        + f"; FWHM {beads.fwhm:.2f} px, EE50 {beads.ee50:.2f} px)"
    )
    if args.plot is not None:
        print(f"wrote {args.plot}")
    return 0


def _first_plane(image):
    import numpy as np

    arr = np.asarray(image.data)
    ax = image.axes
    order = [i for i, a in enumerate(ax) if a not in "YX"] + [ax.index("Y"), ax.index("X")]
    arr = np.transpose(arr, order)
    return arr.reshape(-1, *arr.shape[-2:])[0]
