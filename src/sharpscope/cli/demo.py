"""``sharpscope demo``: restore a simulated sample and write a comparison picture."""

from __future__ import annotations

import argparse

from sharpscope.cli._args import add_output, add_quiet, add_threads, setup_compute


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser(
        "demo",
        help="restore a simulated sample with the default model; write TIFFs and a PNG panel",
        description=(
            "Simulate a widefield image of a specimen (fixed seed), restore it with the model "
            "(default: the bundled widefield-2d) and with Richardson-Lucy, and write the "
            "degraded, restored and ground-truth images as TIFFs plus panel.png into OUT; "
            "prints the PSNR and SSIM of each against the ground truth."
        ),
    )
    add_output(p, help="output folder (default: %(default)s)", required=False, default="demo-output")
    p.add_argument("--model", default=None, help="model name or path (default: widefield-2d)")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``sharpscope demo``."""
    from sharpscope.demo import run_demo

    setup_compute(args)
    scores = run_demo(args.output, model=args.model)
    print(f"{'':18s} {'PSNR (dB)':>10s} {'SSIM':>7s}")
    for name, s in scores.items():
        note = f"  ({s.note})" if s.note else ""
        print(f"{name:18s} {s.psnr:10.2f} {s.ssim:7.3f}{note}")
    if not args.quiet:
        print(f"wrote {args.output}/panel.png and TIFFs")
    return 0
