"""``sharpscope restore``: restore image files with a trained network."""

from __future__ import annotations

import argparse
import sys
import warnings

from sharpscope.cli._args import integer


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``restore`` sub-command."""
    p = sub.add_parser(
        "restore",
        help="restore images (files, folders, globs) with a trained network",
        description=(
            "Restore whole images with a trained network, plane by plane over every axis "
            "other than Y and X, tile by tile. With one INPUT, OUT is the output file or an "
            "existing folder; with several, OUT is a folder and each result is named "
            "<stem>_restored.tif. Axes and pixel size are kept."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file or folder")
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help="model name or .safetensors file (default: widefield-2d)",
    )
    p.add_argument(
        "--axes", default=None, help="axes of the inputs, e.g. YX, ZYX, TZYX (default: from file)"
    )
    p.add_argument("--tile", type=integer(1), default=None, metavar="N", help="tile size (pixels)")
    p.add_argument(
        "--overlap", type=integer(0), default=None, metavar="N", help="tile overlap (pixels)"
    )
    p.add_argument(
        "--batch-size", type=integer(1), default=8, metavar="B", help="tiles per batch (default: 8)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
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
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--no-range-check",
        action="store_true",
        help=(
            "do not estimate each input's noise and resolution against the range the model "
            "was trained for (a one-line warning otherwise)"
        ),
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``sharpscope restore``."""
    from sharpscope.errors import RangeWarning
    from sharpscope.restore import restore_files

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        """Range warnings as one ``sharpscope: warning:`` line; others as usual."""
        if issubclass(category, RangeWarning):
            print(f"sharpscope: warning: {message}", file=sys.stderr, flush=True)
        else:
            default_show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        default_show = warnings.showwarning
        warnings.simplefilter("always", RangeWarning)
        warnings.showwarning = show
        written = restore_files(
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
            progress=not args.no_progress,
            warn_range=not args.no_range_check,
        )
    for path in written:
        print(path)
    sys.stdout.flush()
    return 0
