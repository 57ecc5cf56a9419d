"""Argument types shared by the sub-commands (argparse turns their errors into usage lines)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def integer(minimum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def number(positive: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` accepting real numbers (``> 0`` when ``positive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


# ------------------------------------------------------------- shared vocabulary


def add_output(p: argparse.ArgumentParser, help: str, required: bool = True, **kw) -> None:
    """``-o/--output`` (``--out`` is an alias kept for older scripts)."""
    p.add_argument("-o", "--output", "--out", dest="output", required=required, help=help, **kw)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: only results, warnings and errors."""
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only results, warnings and errors (no progress, notes or summaries)",
    )


def add_progress(p: argparse.ArgumentParser, default: bool) -> None:
    """``--progress/--no-progress`` with the command's default."""
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=default,
        help=f"show a progress bar on stderr (default: {'on' if default else 'off'})",
    )


def add_json(p: argparse.ArgumentParser) -> None:
    """``--json``: one machine-readable JSON document on stdout."""
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads of the computation."""
    p.add_argument(
        "--threads",
        type=integer(1),
        default=None,
        metavar="N",
        help="CPU threads (default: OMP_NUM_THREADS if set, else the physical cores; "
        "never more than the cores)",
    )


def add_batch(p: argparse.ArgumentParser, suffix: str) -> None:
    """The options of commands that take many files (``restore``, ``deconvolve``)."""
    g = p.add_argument_group("many files")
    g.add_argument(
        "--suffix",
        default=suffix,
        metavar="TEXT",
        help=f"appended to each result's name in an output folder (default: {suffix})",
    )
    how = g.add_mutually_exclusive_group()
    how.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results that exist (needed to write over an input)",
    )
    how.add_argument(
        "--skip-existing", action="store_true", help="leave existing results and skip their inputs"
    )
    g.add_argument(
        "--fail-fast", action="store_true", help="stop at the first file that fails"
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: ``--progress`` and not ``--quiet`` or ``--json``."""
    return bool(getattr(args, "progress", False)) and not getattr(args, "quiet", False)


def note(args: argparse.Namespace, message: str) -> None:
    """A ``sharpscope: ...`` line on stderr, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        import sys

        print(f"sharpscope: {message}", file=sys.stderr, flush=True)


def setup_compute(args: argparse.Namespace) -> int:
    """Apply ``--threads`` and tune the allocator; returns the thread count."""
    from sharpscope.runtime import set_threads, tune_allocator

    tune_allocator()
    return set_threads(getattr(args, "threads", None))


def add_optics_flags(group: argparse._ArgumentGroup, pixel_default: str = "the file's own") -> None:
    """``--fc`` or ``--na --wavelength [--pixel-size]``: the optics as one cut-off."""
    group.add_argument(
        "--fc", type=number(positive=True), metavar="FC",
        help="cut-off frequency NA * pixel / emission wavelength in cycles/pixel (0.25 = Nyquist)",
    )
    group.add_argument("--na", type=number(positive=True), metavar="NA", help="numerical aperture")
    group.add_argument(
        "--wavelength", type=number(positive=True), metavar="NM", help="emission wavelength in nm"
    )
    group.add_argument(
        "--pixel-size", type=number(positive=True), metavar="UM",
        help=f"pixel size in the sample plane, um (default with --na: {pixel_default})",
    )


def check_optics_flags(args: argparse.Namespace) -> None:
    """Refuse inconsistent ``add_optics_flags`` flags with one line, before any file is read."""
    from sharpscope.errors import ConfigError

    optics = [n for n in ("na", "wavelength", "pixel_size") if getattr(args, n) is not None]
    if args.fc is not None and optics:
        raise ConfigError("give either --fc or the optics (--na, --wavelength, --pixel-size), not both")
    if optics and not {"na", "wavelength"} <= set(optics):
        raise ConfigError("the optics need --na and --wavelength (and --pixel-size unless the file records it)")
    if args.fc is not None and not args.fc <= 0.5:
        raise ConfigError(f"--fc must be at most 0.5 cycles/pixel, got {args.fc:g}")
