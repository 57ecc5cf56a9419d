"""``sharpscope benchmark speed|quality``: throughput on this machine, and the paper's Table 1."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from sharpscope.cli._args import (
    add_json,
    add_output,
    add_quiet,
    add_threads,
    note,
    number,
    setup_compute,
)

SPEED_SECTION = "## Speed (`sharpscope benchmark speed`)"
QUALITY_SECTION = (
    "## Table 1 of the m-rBCR paper on sharpscope's test sets (`sharpscope benchmark quality`)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``benchmark`` sub-command with its ``speed`` and ``quality`` actions."""
    p = subparsers.add_parser(
        "benchmark",
        help="measure speed on this machine, or reproduce the m-rBCR paper's Table 1",
        description=(
            "speed: network patches/s (batch 16 of 128x128, plain and fast path), whole-image "
            "restore MPix/s on a 2048x2048 image with the default tiling, peak memory and "
            "training samples/s, on the CPU and on CUDA when present, with the machine described. "
            "quality: identity, Richardson-Lucy (true PSF, best count), Wiener and every "
            "registered network trained with the same budget, scored (PSNR, SSIM, NRMSE) on the "
            "held-out simulated set and the out-of-distribution set."
        ),
    )
    add_quiet(p)
    add_output(p, help=_OUTPUT_HELP, required=False, metavar="MD")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    s = sub.add_parser("speed", help="throughput of the network, restore and training")
    s.add_argument("--model", default=None, metavar="NAME|PATH", help="model (default: bundled)")
    s.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs (seconds)")
    s.add_argument("--repeats", type=int, default=None, metavar="N", help="timed repeats (median)")
    _shared(s)
    add_json(s)
    add_threads(s)
    s.set_defaults(func=_speed)

    q = sub.add_parser("quality", help="the m-rBCR paper's Table 1 on this project's test sets")
    q.add_argument(
        "--budget",
        type=number(positive=True),
        default=20.0,
        metavar="MINUTES",
        help="total training time, shared equally by the 5 networks (default 20)",
    )
    q.add_argument("--quick", action="store_true", help="2 training steps, tiny images (seconds)")
    q.add_argument(
        "--n", type=int, default=None, metavar="N", help="simulated test images (default 24)"
    )
    q.add_argument(
        "--ood-scenes",
        type=int,
        default=None,
        metavar="N",
        help="out-of-distribution scenes per specimen kind, 5 photon levels each (default 2)",
    )
    q.add_argument(
        "--size", type=int, default=None, metavar="S", help="test image side (default 256)"
    )
    q.add_argument("--runs", default=None, metavar="DIR", help="keep the training runs in DIR")
    q.add_argument(
        "--figure", default=None, metavar="PNG", help="write a grid of example restorations"
    )
    _shared(q)
    add_json(q)
    add_threads(q)
    q.set_defaults(func=_quality)


_OUTPUT_HELP = "Markdown file whose section of this benchmark is replaced (e.g. docs/benchmarks.md)"


def _shared(p: argparse.ArgumentParser) -> None:
    """``-o`` and ``-q`` after the action too (SUPPRESS: they do not reset the parent's)."""
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="output",
        default=argparse.SUPPRESS,
        metavar="MD",
        help=_OUTPUT_HELP,
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only results, warnings and errors",
    )


def _command(args: argparse.Namespace) -> str:
    return "sharpscope " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""


def _speed(args: argparse.Namespace) -> int:
    from sharpscope.benchmarking import format_speed, replace_section, speed_benchmark

    setup_compute(args)
    result = speed_benchmark(
        args.model, quick=args.quick, repeats=args.repeats, log=lambda s: note(args, s)
    )
    text = format_speed(result, command=_command(args))
    if args.output:
        replace_section(args.output, SPEED_SECTION, SPEED_SECTION + "\n\n" + text)
    print(json.dumps(result, indent=2) if args.json else text, end="" if not args.json else "\n")
    return 0


def _quality(args: argparse.Namespace) -> int:
    from sharpscope.benchmarking import format_quality, quality_benchmark, replace_section

    setup_compute(args)
    result = quality_benchmark(
        budget_minutes=args.budget,
        quick=args.quick,
        out_dir=args.runs,
        n_id=args.n,
        n_ood_crops=args.ood_scenes,
        size=args.size,
        figure=args.figure,
        log=lambda s: note(args, s),
    )
    link = args.figure
    if args.figure and args.output:  # the image as the Markdown file links it
        link = os.path.relpath(
            os.path.abspath(args.figure), os.path.dirname(os.path.abspath(args.output))
        )
    text = format_quality(result, command=_command(args), figure=link)
    if args.output:
        replace_section(args.output, QUALITY_SECTION, QUALITY_SECTION + "\n\n" + text)
    print(json.dumps(result, indent=2) if args.json else text, end="" if not args.json else "\n")
    return 0
