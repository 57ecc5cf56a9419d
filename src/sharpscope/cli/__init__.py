"""The ``sharpscope`` command line: a thin layer over the Python API.

Each sub-command lives in a module of this package that defines
``register(subparsers)``; the module adds its parser and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Errors a user can cause (:class:`sharpscope.errors.SharpscopeError`) are printed
as one line on stderr with exit status 2; ``--debug`` shows the traceback.
A closed output pipe (``sharpscope evaluate a.tif b.tif | head -1``) ends the
command quietly with status 141, as for other Unix tools.

Building the parser imports no numerical library: ``sharpscope --help`` and
``sharpscope models`` start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from sharpscope import __version__
from sharpscope.errors import SharpscopeError

# one module per group of sub-commands, in the order they appear in --help
COMMAND_MODULES = (
    "sharpscope.cli.restore",
    "sharpscope.cli.models",
    "sharpscope.cli.evaluate",
    "sharpscope.cli.deconvolve",
    "sharpscope.cli.estimate_psf",
    "sharpscope.cli.psf",
    "sharpscope.cli.demo",
    "sharpscope.cli.train",
    "sharpscope.cli.simulate",
    "sharpscope.cli.benchmark",
    "sharpscope.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharpscope",
        description="Restore fluorescence microscopy images (denoising, deconvolution).",
    )
    parser.add_argument("--version", action="version", version=f"sharpscope {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cmd | head -1`


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout replaced
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except SharpscopeError as exc:
        if args.debug:
            raise
        print(f"sharpscope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sharpscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
