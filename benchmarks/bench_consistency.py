"""Restoring with a known PSF: the data-consistency step on simulated development sets.

For each image of a simulated set (a seed that training never uses), the bundled model
restores the input once; :func:`sharpscope.consistency.data_consistency` then corrects
the restoration through the true PSF and through the aberration-free theoretical PSF
of the image's optics (what ``restore --psf theory`` computes from NA, wavelength,
pixel size and modality), at each strength given.  Prints mean PSNR per strength.
This is how the default strength was chosen (see docs/user-guide.md); the real-specimen
benchmark (``bench_ood.py``) never chooses anything.

    python benchmarks/bench_consistency.py --preset fluorescence-bright --seed 2721 --n 48
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from sharpscope.consistency import data_consistency, theoretical_psf
from sharpscope.metrics import psnr
from sharpscope.restore import load_model
from sharpscope.simulate import simulate_dataset


def psf_of(params: dict, which: str, true_psf: np.ndarray) -> np.ndarray:
    """The true PSF, or the theoretical one of the image's optics.

    ``'theory'``: from NA, wavelength, pixel size and modality (``restore --psf theory
    --na ...``); ``'theory-fc'``: from the cut-off and modality alone (what
    ``Model.predict(fc=, psf='theory')`` computes).
    """
    if which == "true":
        return true_psf
    if which == "theory-fc":
        return theoretical_psf(fc=params["fc"], modality=params.get("modality"))
    return theoretical_psf(
        na=params["na"], wavelength=params["wavelength_em"], pixel_size=params["pixel_size"],
        modality=params.get("modality"),
    )


def run(
    preset: str, seed: int, n: int, size: int, strengths: list[float], model=None,
    told: bool = False, psfs: tuple[str, ...] = ("theory", "true"),
) -> dict:
    """Mean PSNR of the input, the model and each (PSF, strength) pair.

    ``told``: the model is told each image's optics (fc, modality), as with
    ``restore --na --wavelength``; otherwise it judges the blur from the image.
    """
    model = model if model is not None else load_model(None)
    data = simulate_dataset(preset, n=n, size=size, seed=seed)
    rows: dict[str, list[float]] = {}
    for i in range(n):
        low, gt = data["low"][i], data["gt"][i]
        if float(np.ptp(gt)) <= 0:
            continue
        rng = float(np.ptp(gt))
        p = data["params"][i]
        optics = {"fc": p["fc"], "modality": p.get("modality")} if told else {}
        out = model.predict(low, axes="YX", warn_range=False, **optics)
        rows.setdefault("input", []).append(psnr(low, gt, data_range=rng))
        rows.setdefault("model", []).append(psnr(out, gt, data_range=rng))
        for which in psfs:
            h = psf_of(data["params"][i], which, data["psfs"][i])
            for s in strengths:
                fixed = data_consistency(low, out, h, strength=s)
                rows.setdefault(f"{which} {s:g}", []).append(psnr(fixed, gt, data_range=rng))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="fluorescence-bright")
    ap.add_argument("--seed", type=int, default=2721)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--strengths", default="0.01,0.03,0.1")
    ap.add_argument("--told", action="store_true", help="tell the model each image's optics (fc, modality)")
    ap.add_argument("--psfs", default="theory,true", help="comma list of true, theory, theory-fc")
    args = ap.parse_args(argv)
    strengths = [float(v) for v in args.strengths.split(",")]
    t0 = time.perf_counter()
    res = run(args.preset, args.seed, args.n, args.size, strengths, told=args.told,
              psfs=tuple(args.psfs.split(",")))
    cmd = "python benchmarks/bench_consistency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{cmd.strip()}  ({time.perf_counter() - t0:.0f} s)")
    print("| " + " | ".join(res) + " |")
    print("|" + "---|" * len(res))
    print("| " + " | ".join(f"{v:.2f}" for v in res.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
