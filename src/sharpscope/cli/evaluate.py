"""``sharpscope evaluate``: image-quality metrics of a restoration against its ground truth."""

from __future__ import annotations

import argparse
import json
import sys

from sharpscope.cli._args import add_json, add_quiet, add_threads, number, setup_compute


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = sub.add_parser(
        "evaluate",
        help="PSNR, SSIM, NRMSE, FRC resolution and entropy of PRED against GT",
        description=(
            "Compare a restored image PRED with its ground truth GT (same shape): PSNR and SSIM "
            "(data range = range of GT), NRMSE (RMSE / range of GT), the Fourier ring "
            "correlation resolution at the 1/7 threshold, and the 8-bit entropy of both. "
            "--fit first normalises GT by percentiles (0.1, 99.9) and fits PRED to it with a "
            "least-squares scale and offset (CSBDeep's evaluation)."
        ),
    )
    p.add_argument("pred", metavar="PRED", help="restored image file")
    p.add_argument("gt", metavar="GT", help="ground-truth image file")
    add_json(p)
    p.add_argument("--fit", action="store_true", help="affine-fit PRED to normalised GT first")
    p.add_argument(
        "--frc-plot", default=None, metavar="PNG", help="write the FRC curve (with the 1/7 line)"
    )
    p.add_argument(
        "--axes", default=None, help="axes of both images, e.g. YX, ZYX, TYX (default: from file)"
    )
    p.add_argument(
        "--pixel-size",
        type=number(positive=True),
        default=None,
        metavar="UM",
        help="lateral pixel size in um (default: from GT's metadata, if any)",
    )
    p.add_argument("--pred-key", default=None, help="array name in an .npz PRED (e.g. low)")
    p.add_argument("--gt-key", default=None, help="array name in an .npz GT (e.g. gt)")
    add_threads(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``sharpscope evaluate``."""
    from sharpscope.errors import AxesError, InputError
    from sharpscope.io import read_image
    from sharpscope.metrics import evaluate, plot_frc

    setup_compute(args)
    pred = read_image(args.pred, axes=args.axes, key=args.pred_key)
    gt = read_image(args.gt, axes=args.axes, key=args.gt_key)
    if pred.shape != gt.shape:
        raise InputError(f"shape mismatch: PRED {pred.shape} vs GT {gt.shape}")
    if pred.axes != gt.axes:
        raise AxesError(f"axes differ: PRED {pred.axes} vs GT {gt.axes}; pass --axes")
    pixel_size = args.pixel_size
    if pixel_size is None:
        pixel_size = gt.pixel_size.get("X") or pred.pixel_size.get("X")
    m = evaluate(
        pred.data, gt.data, fit=args.fit, pixel_size=pixel_size, axes=gt.axes, return_frc=True
    )
    freqs, curve = m.pop("frc_freqs"), m.pop("frc_curve")
    if args.frc_plot:
        plot_frc(args.frc_plot, {"PRED vs GT": (freqs, curve)}, pixel_size=pixel_size)
    if args.json:
        report = {"pred": str(args.pred), "gt": str(args.gt), "axes": gt.axes, **m}
        if args.frc_plot:
            report["frc_plot"] = str(args.frc_plot)
        print(json.dumps(report, indent=2, allow_nan=True))
    else:
        res = f"{m['frc_resolution_px']:.3f} px"
        if m["frc_resolution_um"] is not None:
            res += f" ({m['frc_resolution_um']:.4g} um)"
        print(f"PSNR            {m['psnr']:.3f} dB")
        print(f"SSIM            {m['ssim']:.4f}")
        print(f"NRMSE           {m['nrmse']:.5f}")
        print(f"FRC resolution  {res} at threshold 1/7")
        print(f"entropy         PRED {m['entropy_pred']:.3f} bits, GT {m['entropy_gt']:.3f} bits")
        if args.fit and not args.quiet:
            print("(PRED affine-fitted to percentile-normalised GT)")
        if args.frc_plot:
            print(f"FRC curve       {args.frc_plot}")
    sys.stdout.flush()
    return 0
