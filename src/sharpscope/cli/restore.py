"""``sharpscope restore``: restore image files with a trained network."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from sharpscope.cli._args import (
    add_batch,
    add_json,
    add_optics_flags,
    add_output,
    add_progress,
    add_quiet,
    add_threads,
    check_optics_flags,
    integer,
    note,
    number,
    setup_compute,
    show_progress,
)


def chunk_size(text: str) -> tuple[int, int]:
    """An argparse ``type``: ``'1024'`` or ``'1024,512'`` (Y, X extent of dask chunks)."""
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,M, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive N or N,M, got {text!r}")
    return (values[0], values[-1])


def add_chunking(p: argparse.ArgumentParser) -> None:
    """``--chunks``, ``--workers``, ``--cluster``: images larger than memory, with dask."""
    g = p.add_argument_group("images larger than memory (dask; needs sharpscope[zarr])")
    g.add_argument(
        "--chunks",
        type=chunk_size,
        default=None,
        metavar="N[,M]",
        help="work chunk by chunk of N (Y) by M (X) pixels, same result as in memory; "
        "automatic for OME-Zarr and for images larger than half the available memory",
    )
    g.add_argument(
        "--workers", type=integer(1), default=None, metavar="N",
        help="start a local dask cluster of N single-threaded worker processes",
    )
    g.add_argument(
        "--cluster", default=None, metavar="ADDRESS",
        help="run on the dask scheduler at ADDRESS (e.g. tcp://host:8786)",
    )


def add_restore_optics(p: argparse.ArgumentParser) -> None:
    """``--fc`` or ``--na --wavelength [--pixel-size]``, and ``--modality``."""
    g = p.add_argument_group(
        "optics (optional; without them the model judges the blur from the image, see the "
        "user guide for when they help)"
    )
    add_optics_flags(g, "each file's own")
    g.add_argument(
        "--modality", choices=("widefield", "confocal"), default=None,
        help="microscope type, with the optics (default widefield)",
    )
    g.add_argument(
        "--psf", default="auto", metavar="PSF.tif|theory|auto|none",
        help="the 2-D PSF of the measurement (a file, or 'theory': the aberration-free PSF of "
        "the optics given): each restored plane is then corrected towards what the data "
        "show through it (data consistency; see the user guide). Default 'auto': 'theory' "
        "whenever the optics are known (the flags above, or --file-optics), else no "
        "correction; 'none' turns it off",
    )
    g.add_argument(
        "--consistency", type=number(), default=None, metavar="S",
        help="strength of that correction (default 0.01; 0 turns it off; needs a PSF: "
        "--psf, or the optics for 'auto')",
    )
    g.add_argument(
        "--file-optics", action="store_true",
        help="without the flags above, use the optics each file records (OME-TIFF objective "
        "NA, emission wavelengths, acquisition mode, pixel size)",
    )


def check_restore_optics(args: argparse.Namespace) -> None:
    """Refuse inconsistent optics flags with one line, before any file is read."""
    from sharpscope.errors import ConfigError

    check_optics_flags(args)
    if args.modality is not None and args.fc is None and args.na is None:
        raise ConfigError("--modality goes with the optics (--fc, or --na and --wavelength)")
    psf = str(args.psf).strip().lower()
    told = args.fc is not None or args.na is not None
    if args.consistency is not None and (psf == "none" or (psf == "auto" and not told and not args.file_optics)):
        raise ConfigError("--consistency needs a PSF: --psf PSF.tif|theory, or the optics (--fc, or --na and --wavelength)")
    if args.consistency is not None and args.consistency < 0:
        raise ConfigError(f"--consistency must be >= 0, got {args.consistency:g}")
    if psf == "theory" and args.fc is None and args.na is None:
        raise ConfigError("--psf theory needs the optics (--fc, or --na and --wavelength)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``restore`` sub-command."""
    p = sub.add_parser(
        "restore",
        help="restore images (files, folders, globs) with a trained network",
        description=(
            "Restore whole images with a trained network, plane by plane over every axis "
            "other than Y and X, tile by tile. INPUTs are files, folders (every image below "
            "them, sub-folders kept in the output) and globs. With one input file, OUT is the "
            "output file or a folder; otherwise OUT is a folder and each result is named "
            "<stem><suffix>.tif. Existing results in a folder are not replaced without "
            "--overwrite (or skipped with --skip-existing); a file that fails does not stop "
            "the others (unless --fail-fast) and the exit status is then 2. "
            "Axes and pixel size are kept."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    add_output(p, help="output file or folder", metavar="OUT")
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help="model name, .safetensors file or training run folder (default: widefield-2d)",
    )
    p.add_argument(
        "--axes", default=None, help="axes of the inputs, e.g. YX, ZYX, TZYX (default: from file)"
    )
    p.add_argument(
        "--tile",
        type=integer(1),
        default=None,
        metavar="N",
        help="tile size in pixels (default: the model's; a smaller tile shrinks the "
        "model's overlap to fit)",
    )
    p.add_argument(
        "--overlap", type=integer(0), default=None, metavar="N", help="tile overlap (pixels)"
    )
    p.add_argument(
        "--batch-size", type=integer(1), default=None, metavar="B",
        help="tiles per batch (default: 8, fewer when memory is short)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_threads(p)
    p.add_argument(
        "--dtype",
        choices=("float32", "input"),
        default="float32",
        help="output pixel type: float32, or that of the input (rounded, clipped)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="average over the 8 rotations/mirrors of each tile (8x slower, slightly better)",
    )
    p.add_argument(
        "--no-range-check",
        action="store_true",
        help=(
            "do not estimate each input's noise and resolution against the range the model "
            "was trained for (a one-line warning otherwise)"
        ),
    )
    add_restore_optics(p)
    add_batch(p, "_restored")
    add_chunking(p)
    add_progress(p, default=True)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def print_batch(args: argparse.Namespace, result, verb: str, several: bool) -> None:
    """Written paths (or JSON) on stdout; the summary on stderr when several files."""
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for path in result:
            print(path)
    sys.stdout.flush()
    if several:
        note(args, f"{verb} {result.summary()}")


def run_batch_command(args: argparse.Namespace, call, verb: str) -> int:
    """Run a batch API call; per-file failures on stderr, a summary, exit 2 if any failed."""
    from sharpscope.batch import BatchError

    several = len(args.inputs) > 1 or any(_is_many(x) for x in args.inputs)
    try:
        result = call(log=lambda line: print(f"sharpscope: error: {line}", file=sys.stderr, flush=True))
    except BatchError as exc:
        print_batch(args, exc.result, verb, True)
        return 2
    print_batch(args, result, verb, several or len(result) + len(result.skipped) > 1)
    return 0


def _is_many(text: str) -> bool:
    from pathlib import Path

    return Path(text).is_dir() or any(ch in text for ch in "*?[")


def run(args: argparse.Namespace) -> int:
    """Handle ``sharpscope restore``."""
    from sharpscope.batch import restore_files
    from sharpscope.errors import RangeWarning

    check_restore_optics(args)
    setup_compute(args)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        """Range warnings as one ``sharpscope: warning:`` line; others as usual."""
        ours = issubclass(category, UserWarning) and "sharpscope" in str(filename)
        if issubclass(category, RangeWarning) or ours:
            print(f"sharpscope: warning: {message}", file=sys.stderr, flush=True)
        else:
            default_show(message, category, filename, lineno, file, line)

    def call(log):
        return restore_files(
            args.inputs,
            args.output,
            model=args.model,
            axes=args.axes,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            tta=args.tta,
            progress=show_progress(args),
            warn_range=not args.no_range_check,
            fc=args.fc,
            modality=args.modality,
            na=args.na,
            wavelength=args.wavelength,
            pixel_size=args.pixel_size,
            file_optics=args.file_optics,
            psf=args.psf,
            consistency=args.consistency,
            suffix=args.suffix,
            overwrite=args.overwrite,
            skip_existing=args.skip_existing,
            fail_fast=args.fail_fast,
            log=log,
            chunks=args.chunks,
            workers=args.workers,
            cluster=args.cluster,
        )

    with warnings.catch_warnings():
        default_show = warnings.showwarning
        warnings.simplefilter("always", RangeWarning)
        warnings.showwarning = show
        rc = run_batch_command(args, call, "restore:")
    if rc == 0 and optics_hint_due(args):
        note(args, OPTICS_HINT)
    return rc


OPTICS_HINT = (
    "hint: restored without the optics; if you know them, --na NA --wavelength NM (emission; the "
    "pixel size from the file, or --pixel-size UM) tells the model the blur and corrects through "
    "their PSF: +1 dB on average on real specimens (docs/user-guide.md)"
)


def _interactive() -> bool:
    return sys.stderr.isatty()


def optics_hint_due(args: argparse.Namespace) -> bool:
    """The one-line optics hint: the bundled (optics-conditioned) model told nothing, at a terminal."""
    told = args.fc is not None or args.na is not None or args.file_optics
    plain = str(args.psf).strip().lower() == "auto" and args.model is None
    return not told and plain and not args.json and not args.quiet and _interactive()
