"""``sharpscope demo``: restore a simulated sample and write a comparison picture."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="restore a simulated sample with the default model; write TIFFs and a PNG panel",
    )
    p.add_argument("-o", "--out", default="demo-output", help="output folder (default: %(default)s)")
    p.add_argument("--model", default=None, help="model name or path (default: widefield-2d)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sharpscope.demo import run_demo

    scores = run_demo(args.out, model=args.model)
    print(f"{'':18s} {'PSNR (dB)':>10s} {'SSIM':>7s}")
    for name, s in scores.items():
        note = f"  ({s.note})" if s.note else ""
        print(f"{name:18s} {s.psnr:10.2f} {s.ssim:7.3f}{note}")
    print(f"wrote {args.out}/panel.png and TIFFs")
    return 0
