"""The ``sharpscope`` command line: a thin layer over the Python API.

Each sub-command lives in a module of this package that defines
``register(subparsers)``; the module adds its parser and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Errors a user can cause (:class:`sharpscope.errors.SharpscopeError`) are printed
as one line on stderr with exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sharpscope import __version__
from sharpscope.errors import SharpscopeError

# one module per group of sub-commands, in the order they appear in --help
COMMAND_MODULES = (
    "sharpscope.cli.restore",
    "sharpscope.cli.models",
    "sharpscope.cli.evaluate",
    "sharpscope.cli.deconvolve",
    "sharpscope.cli.psf",
    "sharpscope.cli.demo",
    "sharpscope.cli.train",
    "sharpscope.cli.simulate",
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
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
