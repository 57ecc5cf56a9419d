"""``sharpscope train`` and ``sharpscope prepare``: train a network, prepare paired data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sharpscope.cli._args import add_output, add_progress, add_quiet, integer, show_progress

ARCHS = ("mrbcr", "srbcr", "bcr", "unet", "dncnn")


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions train,val,test, got {text!r}")
    return parts  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``prepare`` sub-commands."""
    p = sub.add_parser(
        "train",
        help="train a restoration network (simulated or paired data) or a PSF identifier",
        description=(
            "Train a network on simulated pairs (--simulate PRESET, the default) or on paired "
            "data (--data: an .npz from 'sharpscope prepare' or in the DeBCR layout, or a folder "
            "with low/ and gt/ sub-folders of TIFFs matched by name). Flags override CONFIG.yaml. "
            "OUT holds model.safetensors (the best model so far, usable as 'restore --model "
            "OUT' from the first step on), last.ckpt.safetensors (what --resume needs), "
            "log.csv, loss.png and config.yaml. Without a GPU the defaults are sized for a "
            "CPU (batch 8 of 64x64, 2000 steps). Ctrl-C saves a resumable checkpoint and "
            "loadable weights. A config with 'task: psf-identification' trains the PSF "
            "identifier instead (configs/psfid-2d.yaml)."
        ),
    )
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG.yaml", help="training configuration")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--simulate", metavar="PRESET", default=None, help="simulator preset (default: mrbcr-widefield)")
    src.add_argument("--data", metavar="NPZ|DIR", default=None, help="paired training data")
    p.add_argument("--gt", metavar="DIR", default=None, help="folder of targets when --data is the folder of inputs")
    p.add_argument("--val-data", metavar="NPZ|DIR", default=None, help="separate validation pairs")
    p.add_argument("--model", choices=ARCHS, default=None, help="architecture (default: mrbcr)")
    p.add_argument("--init", metavar="MODEL", default=None, help="start from this model's weights (fine-tuning): a file, a run folder or a model name")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="total optimiser steps")
    p.add_argument("--batch-size", type=int, default=None, metavar="B")
    p.add_argument("--patch-size", type=int, default=None, metavar="P")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--val-every", type=int, default=None, metavar="N", help="validate every N steps")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--num-workers", type=int, default=None, metavar="N", help="data loader processes")
    p.add_argument(
        "--threads",
        type=integer(1),
        default=None,
        metavar="N",
        help="CPU threads (default: OMP_NUM_THREADS if set, else the physical cores; never more than the cores)",
    )
    p.add_argument("--max-minutes", type=float, default=None, metavar="M", help="stop cleanly after M minutes")
    add_output(p, help="output folder (run folder)", required=False, default=None, metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT")
    p.add_argument(
        "--nproc",
        type=integer(1),
        default=None,
        metavar="N",
        help="train on N local processes with DistributedDataParallel (torchrun; one GPU each "
        "on CUDA, gloo on the CPU); --batch-size is the global batch, a multiple of N",
    )
    add_progress(p, default=True)
    add_quiet(p)
    p.set_defaults(func=run_train)

    q = sub.add_parser(
        "prepare",
        help="normalise, patch and split paired images into a training .npz",
        description=(
            "Normalise every image as a whole (percentiles), cut patches and split them into "
            "train/validation/test by image or by region (contiguous blocks with a guard band), "
            "so that neighbouring patches never straddle splits. INPUTS and --gt pair up in "
            "order, or give one folder each to pair files by name."
        ),
    )
    q.add_argument("inputs", nargs="+", metavar="INPUT", help="degraded images (files or one folder)")
    q.add_argument("--gt", nargs="+", required=True, metavar="GT", help="target images, same order (or one folder)")
    add_output(q, help="output .npz", metavar="DATA.npz")
    q.add_argument("--patch-size", type=int, default=128, metavar="P", help="patch side (default 128)")
    q.add_argument("--overlap", type=int, default=0, metavar="N", help="overlap of neighbouring patches")
    q.add_argument("--split", type=_split, default=(0.8, 0.1, 0.1), metavar="TR,VA,TE", help="fractions (default 0.8,0.1,0.1)")
    q.add_argument("--by", choices=("image", "region"), default="image", help="split unit (default image)")
    q.add_argument("--guard", type=int, default=None, metavar="N", help="gap between regions (default P/4)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--pmin", type=float, default=1.0, help="low normalisation percentile")
    q.add_argument("--pmax", type=float, default=99.8, help="high normalisation percentile")
    add_quiet(q)
    q.set_defaults(func=run_prepare)


def run_train(args: argparse.Namespace) -> int:
    """Handle ``sharpscope train``."""
    from sharpscope.training import CONFIG_NAME, load_config, train

    config_path = args.config
    if config_path is None and args.resume and args.output is not None:
        saved = Path(args.output) / CONFIG_NAME
        if saved.is_file():
            config_path = saved
    overrides = {
        "data.simulate": args.simulate,
        "data.path": args.data,
        "data.gt": args.gt,
        "data.val_path": args.val_data,
        "model.arch": args.model,
        "model.init": args.init,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "lr": args.lr,
        "val_every": args.val_every,
        "seed": args.seed,
        "device": args.device,
        "num_workers": args.num_workers,
        "threads": args.threads,
        "max_minutes": args.max_minutes,
        "out": args.output,
    }
    config = load_config(config_path, overrides)
    if args.nproc is not None and args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(args, config)
    from sharpscope.training.distributed import env_rank

    result = train(
        config,
        resume=args.resume,
        progress=show_progress(args),
        log=(lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True)),
    )
    if env_rank() != 0:  # under torchrun, rank 0 alone prints
        return 0 if result.stopped != "interrupted" or os.environ.get("SHARPSCOPE_LAUNCHED") == "1" else 130
    if config.task == "psf-identification":
        what, value = "PSF SNR", result.best_metrics.get("val_psf_snr", float("nan"))
    else:
        what, value = "PSNR", result.best_val_psnr
    psnr = "n/a" if result.best_path is None else f"{value:.2f} dB (step {result.best_step})"
    if not args.quiet:
        print(f"{result.stopped} after {result.steps_done} steps; best validation {what} {psnr}")
        print(f"log: {result.log_path}")
    if result.best_path is not None:
        print(result.best_path if args.quiet else f"best model: {result.best_path}")
    if result.stopped == "interrupted":
        if os.environ.get("SHARPSCOPE_LAUNCHED") == "1":
            return 0  # the --nproc launcher reports the interruption (130)
        print(f"resume with: sharpscope train -o {config.out} --resume", file=sys.stderr)
        return 130
    return 0


def _launch(args: argparse.Namespace, config) -> int:
    """``--nproc N``: the validated config, run by N torchrun processes."""
    import tempfile

    from sharpscope.errors import ConfigError
    from sharpscope.training import CHECKPOINT_NAME, MODEL_NAME, with_device_defaults
    from sharpscope.training.distributed import launch

    out = Path(config.out)
    if not args.resume and ((out / CHECKPOINT_NAME).exists() or (out / MODEL_NAME).exists()):
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    batch = with_device_defaults(config).batch_size
    if batch % args.nproc:
        raise ConfigError(f"batch_size {batch} must be a multiple of --nproc ({args.nproc})")
    with tempfile.TemporaryDirectory(prefix="sharpscope-nproc-") as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config.to_yaml())
        argv = [str(cfg)]
        argv += ["--resume"] if args.resume else []
        argv += ["--progress"] if show_progress(args) else ["--no-progress"]
        argv += ["--quiet"] if args.quiet else []
        rc = launch(args.nproc, argv)
    if rc == 130:
        print(f"resume with: sharpscope train -o {config.out} --resume --nproc {args.nproc}", file=sys.stderr)
    return rc


def run_prepare(args: argparse.Namespace) -> int:
    """Handle ``sharpscope prepare``."""
    from sharpscope.data import prepare

    res = prepare(
        args.inputs,
        args.gt,
        args.output,
        patch_size=args.patch_size,
        overlap=args.overlap,
        split=args.split,
        by=args.by,
        seed=args.seed,
        pmin=args.pmin,
        pmax=args.pmax,
        guard=args.guard,
    )
    if args.quiet:
        print(res.path)
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
    print(f"wrote {res.path} ({counts} patches of {args.patch_size}x{args.patch_size}); metadata {res.metadata_path}")
    return 0
