"""Quality of the default model on a held-out simulated set (issue 4, item 7).

Draws ``--n`` images from the ``mrbcr-widefield`` simulator preset with a seed that training
never uses, and compares the degraded input, Richardson-Lucy with the true PSF (best
iteration count per image, an oracle choice that favours it) and the model.  Prints a
markdown table and, with ``--write-docs``, replaces the matching section of
docs/benchmarks.md.

    python benchmarks/bench_quality.py --n 96 --size 256 --write-docs
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
from _docs import replace_section

from sharpscope.consistency import DEFAULT_STRENGTH, data_consistency
from sharpscope.demo import RL_ITERATIONS, Scored, compare_methods
from sharpscope.metrics import psnr, ssim
from sharpscope.restore import load_model
from sharpscope.simulate import CameraNoise, get_preset, simulate_dataset

HELDOUT_SEED = 31_415_926  # never used for training (training seeds are < 1_000_000)
TTA_ROW = "sharpscope with `--tta` (mean over 8 rotations/mirrors)"
BLIND_ROW = "sharpscope, optics not given"
PSF_ROW = f"sharpscope `--psf` true PSF (data consistency {DEFAULT_STRENGTH:g}), optics not given"
MODEL_ROW = "sharpscope, told the optics (fc, modality; default `--psf auto`)"
NOCORR_ROW = "sharpscope, told the optics, `--psf none`"
SECTION = "## Default model quality (held-out simulated set)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=HELDOUT_SEED)
    ap.add_argument(
        "--preset",
        default="mrbcr-widefield",
        help="simulator preset of the set (the docs table is the mrbcr-widefield one)",
    )
    ap.add_argument(
        "--photons",
        type=float,
        default=None,
        help="fix the camera's photons per unit intensity (presets with a camera noise model)",
    )
    ap.add_argument("--no-tta", action="store_true", help="skip the test-time augmentation row")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)

    model = load_model(args.model)
    if args.write_docs and (args.preset != "mrbcr-widefield" or args.photons):
        ap.error("--write-docs writes the mrbcr-widefield table; drop --preset and --photons")
    preset = get_preset(args.preset)
    if args.photons:
        if not isinstance(preset.noise, CameraNoise):
            ap.error(f"--photons needs a preset with a camera noise model, not {args.preset!r}")
        preset = dataclasses.replace(
            preset, noise=dataclasses.replace(preset.noise, photons=(args.photons, args.photons))
        )
    data = simulate_dataset(preset, n=args.n, size=args.size, seed=args.seed)
    rows: dict[str, list[tuple[float, float]]] = {}
    t0 = time.perf_counter()
    skipped = 0
    for i in range(args.n):
        if float(np.ptp(data["gt"][i])) <= 0:  # e.g. an empty sparse field: PSNR is undefined
            skipped += 1
            continue
        p = data["params"][i]
        optics = {"fc": p["fc"], "modality": p.get("modality")} if model.uses_optics else None
        scores = compare_methods(
            data["low"][i], data["gt"][i], data["psfs"][i], model, keep_all=True,
            tta=not args.no_tta, optics=optics, blind=model.uses_optics,
        )
        # restore --psf with the true PSF, on the default restoration (optics not given)
        gt, default = data["gt"][i], scores["sharpscope blind" if model.uses_optics else "sharpscope"]
        fixed = data_consistency(data["low"][i], default.image, data["psfs"][i])
        r = float(gt.max() - gt.min())
        scores["sharpscope psf"] = Scored(fixed, psnr(fixed, gt, data_range=r), ssim(fixed, gt, data_range=r))
        if optics is not None:  # told the optics without the default correction
            plain = model.predict(data["low"][i], axes="YX", warn_range=False, psf="none", **optics)
            scores["sharpscope nocorr"] = Scored(plain, psnr(plain, gt, data_range=r), ssim(plain, gt, data_range=r))
        for name, s in scores.items():
            rows.setdefault(name, []).append((s.psnr, s.ssim))
    elapsed = time.perf_counter() - t0

    cmd = "python benchmarks/bench_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        SECTION,
        "",
        f"{args.n} images of {args.size}x{args.size} from the `{args.preset}` preset, seed "
        f"{args.seed} (never used in training); model `{model.header.name}`. "
        "Richardson-Lucy uses the true PSF with the iteration count that is best on average "
        "over the set, and (an oracle that favours it further) the best count per image, "
        f"from {'/'.join(map(str, RL_ITERATIONS))} iterations. "
        "Mean +- standard deviation over the images."
        + (f" {skipped} image(s) with a constant ground truth skipped." if skipped else ""),
        "",
        f"Command: `{cmd.strip()}` ({elapsed:.0f} s on this machine's CPU).",
        "",
        "| method | PSNR (dB) | SSIM | PSNR gain over input (dB) |",
        "|---|---|---|---|",
    ]
    # one iteration count for the whole set (the best on average), besides the per-image oracle
    per_count = {n: rows.pop(f"richardson-lucy {n}") for n in RL_ITERATIONS}
    best_n = max(per_count, key=lambda n: np.mean([p for p, _ in per_count[n]]))
    rows = {
        "input": rows["input"],
        f"richardson-lucy, {best_n} iterations (best single count)": per_count[best_n],
        "richardson-lucy, best count per image (oracle)": rows["richardson-lucy"],
        MODEL_ROW if model.uses_optics else "sharpscope": rows["sharpscope"],
        **({NOCORR_ROW: rows["sharpscope nocorr"]} if "sharpscope nocorr" in rows else {}),
        **({TTA_ROW: rows["sharpscope tta"]} if "sharpscope tta" in rows else {}),
        **({BLIND_ROW: rows["sharpscope blind"]} if "sharpscope blind" in rows else {}),
        PSF_ROW: rows["sharpscope psf"],
    }
    base = np.array([p for p, _ in rows["input"]])
    for name, vals in rows.items():
        p = np.array([v[0] for v in vals])
        s = np.array([v[1] for v in vals])
        lines.append(
            f"| {name} | {p.mean():.2f} +- {p.std():.2f} | {s.mean():.3f} +- {s.std():.3f} "
            f"| {np.mean(p - base):+.2f} |"
        )
    single = np.array([v[0] for v in per_count[best_n]])
    oracle = np.array([v[0] for v in rows["richardson-lucy, best count per image (oracle)"]])
    lines.append("")
    model_key = MODEL_ROW if model.uses_optics else "sharpscope"
    named = (
        ("Model", model_key), ("Model told the optics, `--psf none`,", NOCORR_ROW),
        ("Model with `--tta`", TTA_ROW), ("Model without the optics", BLIND_ROW),
        ("Model given the true PSF", PSF_ROW),
    )
    for label, key in named:
        if key in rows:
            net = np.array([v[0] for v in rows[key]])
            lines.append(
                f"{label} minus Richardson-Lucy: {_mean_se(net - single)} dB PSNR against the "
                f"best single iteration count ({best_n}), {_mean_se(net - oracle)} dB against "
                "the per-image oracle (mean +- standard error over the images)."
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_docs:
        replace_section(SECTION, text)
    return 0


def _mean_se(d: np.ndarray) -> str:
    """Mean with its standard error, e.g. ``+3.10 +- 0.15``."""
    se = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else float("nan")
    return f"{d.mean():+.2f} +- {se:.2f}"


if __name__ == "__main__":
    sys.exit(main())
