"""``sharpscope simulate``: write simulated training pairs (DeBCR npz layout)."""

from __future__ import annotations

import argparse

from sharpscope.cli._args import (
    add_output,
    add_progress,
    add_quiet,
    add_threads,
    integer,
    setup_compute,
    show_progress,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` sub-command."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate degraded/clean training pairs from a physics preset",
        description=(
            "Draw N pairs from a simulation preset and write them in the DeBCR npz layout "
            "('low', 'gt' arrays of shape (N, H, W) or (N, Z, H, W), float32, plus 'psf') "
            "with a JSON file of every sample's parameters. OUT ending in .npz writes OUT "
            "and OUT with a .json suffix; any other OUT is a folder receiving data.npz and "
            "params.json. Presets: 'mrbcr-widefield' (the m-rBCR paper's widefield/confocal "
            "optics and noise ranges) and 'poster-zernike' (Zernike pupil PSFs of the "
            "blind-deconvolution poster); see the sharpscope.simulate documentation."
        ),
    )
    add_output(p, help="output .npz file or folder", metavar="OUT")
    p.add_argument(
        "--preset",
        default="mrbcr-widefield",
        metavar="NAME",
        help="sampling distribution: mrbcr-widefield (default) or poster-zernike",
    )
    p.add_argument("--n", type=integer(1), default=100, metavar="N", help="number of pairs (default 100)")
    p.add_argument(
        "--size",
        type=int,
        default=128,
        metavar="S",
        help="lateral patch size in pixels (default 128)",
    )
    p.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    p.add_argument("--ndim", type=int, default=2, choices=(2, 3), help="2-D or 3-D patches")
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        metavar="Z",
        help="slices per 3-D patch (default: the preset's, 16)",
    )
    add_threads(p)
    add_progress(p, default=False)
    add_quiet(p)
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from sharpscope.errors import ConfigError
    from sharpscope.simulate import get_preset, simulate_dataset, write_dataset

    setup_compute(args)
    preset = get_preset(args.preset)
    size: int | tuple[int, ...] = args.size
    if args.depth is not None:
        if args.ndim != 3:
            raise ConfigError("--depth needs --ndim 3")
        size = (args.depth, args.size, args.size)
    data = simulate_dataset(
        preset, n=args.n, size=size, seed=args.seed, ndim=args.ndim, progress=show_progress(args)
    )
    npz, js = write_dataset(args.output, data)
    shape = "x".join(str(s) for s in data["low"].shape)
    print(f"{npz}\n{js}" if args.quiet else f"wrote {npz} (low/gt {shape}) and {js}")
    return 0
