"""``sharpscope deconvolve``: classical deconvolution of an image file with a known PSF."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sharpscope.cli._args import (
    add_batch,
    add_json,
    add_output,
    add_progress,
    add_quiet,
    add_threads,
    integer,
    note,
    number,
    setup_compute,
    show_progress,
)
from sharpscope.cli.estimate_psf import add_optics
from sharpscope.cli.restore import add_chunking
from sharpscope.errors import ConfigError

# the same names as sharpscope.deconv.METHODS / BOUNDARIES (kept here so that
# building the parser does not import torch)
METHODS = ("rl", "rl-accel", "rl-tv", "wiener")
BOUNDARIES = ("extended", "reflect", "circular")


def _or_auto(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type``: ``'auto'`` gives None, anything else goes to ``parse``."""

    def wrapped(text: str) -> Any:
        return None if text.strip().lower() == "auto" else parse(text)

    return wrapped


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``deconvolve`` sub-command."""
    p = sub.add_parser(
        "deconvolve",
        help="Richardson-Lucy (plain, accelerated, TV) or Wiener deconvolution with a PSF file",
        description=(
            "Deconvolve each INPUT with the PSF in PSF.tif (normalised to sum 1). A 2-D PSF "
            "works plane by plane over every other axis, a 3-D PSF over Z, Y, X. The output "
            "keeps the input's shape, axes and pixel size (float32). INPUTs are files, folders "
            "and globs, named in an output folder as by 'sharpscope restore' (suffix "
            "_deconvolved). --psf auto estimates the PSF from each image (blind deconvolution "
            "with the PSF-identification network; --grid RxC for a PSF map and space-varying "
            "Richardson-Lucy), optionally given the optics (--fc/--theta-max or --na "
            "--wavelength --pixel-size)."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    add_output(p, help="output file or folder", metavar="OUT")
    p.add_argument(
        "--psf",
        required=True,
        metavar="PSF.tif|auto",
        help="PSF image file (YX or ZYX), or 'auto': estimate it from each image",
    )
    p.add_argument("--method", choices=METHODS, default="rl", help="algorithm (default: rl)")
    p.add_argument(
        "--iterations",
        type=_or_auto(integer(1)),
        default=None,
        metavar="N",
        help=(
            "Richardson-Lucy iterations (default: auto, i.e. stop by the discrepancy principle "
            "with the noise estimated from the image, at most 200; the count is reported)"
        ),
    )
    p.add_argument(
        "--axes", default=None, help="axes of INPUT, e.g. YX, ZYX, TZYX (default: from file)"
    )
    p.add_argument(
        "--boundary",
        choices=BOUNDARIES,
        default=None,
        help="edge handling (default: extended for RL, reflect for Wiener)",
    )
    p.add_argument(
        "--tv-weight", type=number(), default=0.002, metavar="L", help="rl-tv weight (default 0.002)"
    )
    p.add_argument(
        "--balance",
        type=_or_auto(number(positive=True)),
        default=None,
        metavar="B",
        help="Wiener balance (default: auto, the parametric filter from the image's spectrum)",
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: auto)"
    )
    add_optics(p)
    p.add_argument(
        "--grid", metavar="RxC", default=None,
        help="with --psf auto: a grid of R x C PSFs and space-varying rl / rl-tv",
    )
    add_threads(p)
    add_batch(p, "_deconvolved")
    add_chunking(p)
    add_progress(p, default=False)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``sharpscope deconvolve``."""
    from sharpscope.batch import deconvolve_files
    from sharpscope.cli.restore import run_batch_command

    if str(args.psf).strip().lower() == "auto":
        return run_auto(args)
    flags = [f for f, v in _blind_flags(args) if v is not None]
    if flags:
        raise ConfigError(f"{flags[0]} applies only with --psf auto")
    setup_compute(args)

    def call(log):
        return deconvolve_files(
            args.inputs,
            args.output,
            args.psf,
            method=args.method,
            iterations=args.iterations,
            axes=args.axes,
            boundary=args.boundary,
            tv_weight=args.tv_weight,
            balance=args.balance,
            device=args.device,
            progress=show_progress(args),
            suffix=args.suffix,
            overwrite=args.overwrite,
            skip_existing=args.skip_existing,
            fail_fast=args.fail_fast,
            log=log,
            report=lambda line: note(args, line),
            chunks=args.chunks,
            workers=args.workers,
            cluster=args.cluster,
        )

    return run_batch_command(args, call, "deconvolve:")


def _blind_flags(args: argparse.Namespace) -> list[tuple[str, Any]]:
    return [
        ("--fc", args.fc), ("--theta-max", args.theta_max), ("--na", args.na),
        ("--wavelength", args.wavelength), ("--pixel-size", args.pixel_size),
        ("--grid", args.grid), ("--identifier", args.identifier),
    ]


def run_auto(args: argparse.Namespace) -> int:
    """``sharpscope deconvolve --psf auto``: estimate each file's PSF, then deconvolve."""
    from sharpscope.blind import blind_deconvolve_files
    from sharpscope.cli.estimate_psf import check_optics, parse_grid
    from sharpscope.cli.restore import run_batch_command

    grid = parse_grid(args.grid)
    check_optics(args)
    if args.chunks is not None or args.workers is not None or args.cluster is not None:
        raise ConfigError("--psf auto works on whole images: drop --chunks, --workers and --cluster")
    if grid is not None and args.method not in ("rl", "rl-tv"):
        raise ConfigError(f"--grid deconvolves with rl or rl-tv, not {args.method}")
    setup_compute(args)
    kw: dict[str, Any] = {"tv_weight": args.tv_weight}
    if grid is None:
        kw.update(device=args.device, boundary=args.boundary)
        if args.method == "wiener":
            kw["balance"] = args.balance

    def call(log):
        return blind_deconvolve_files(
            args.inputs,
            args.output,
            fc=args.fc,
            theta_max=args.theta_max,
            grid=grid,
            method=args.method,
            iterations=args.iterations,
            axes=args.axes,
            identifier=args.identifier,
            na=args.na,
            wavelength=args.wavelength,
            pixel_size=args.pixel_size,
            suffix=args.suffix,
            overwrite=args.overwrite,
            skip_existing=args.skip_existing,
            fail_fast=args.fail_fast,
            progress=show_progress(args),
            log=log,
            report=lambda line: note(args, line),
            **kw,
        )

    return run_batch_command(args, call, "deconvolve:")
