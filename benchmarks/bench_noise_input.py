"""How much a noise-conditioned model relies on its noise-level input.

Restores held-out simulated images with the measured noise level ``(gain, sigma)``
scaled by a few factors before it reaches the network and prints the mean PSNR per
photon range.  A model that follows its input changes with the factor; one that judges
the noise from the pixels does not.  Development data only (a simulator seed that
training never uses); never the out-of-distribution images.

    python benchmarks/bench_noise_input.py --preset fluorescence-bright --seed 2722 --n 40 --size 192
"""

from __future__ import annotations

import argparse

import numpy as np

import sharpscope.models.noisemap as noisemap
from sharpscope.metrics import psnr
from sharpscope.restore import load_model
from sharpscope.simulate import simulate_dataset

BINS = ((0, 30), (30, 300), (300, 1500), (1500, float("inf")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="fluorescence-bright")
    ap.add_argument("--seed", type=int, default=2722)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--model", default=None)
    ap.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.4])
    args = ap.parse_args(argv)

    model = load_model(args.model)
    if not getattr(model.network, "noise_input", False):
        ap.error(f"model {model.header.name!r} has no noise-level input")
    data = simulate_dataset(args.preset, n=args.n, size=args.size, seed=args.seed)
    photons = np.array([p.get("photons", np.nan) for p in data["params"]])
    keep = [i for i in range(args.n) if float(np.ptp(data["gt"][i])) > 0]
    measured = noisemap.image_noise_params
    print("| factor | " + " | ".join(f"{lo:g}-{hi:g} photons" for lo, hi in BINS) + " | all |")
    print("|---" * (len(BINS) + 2) + "|")
    try:
        for factor in args.factors:
            noisemap.image_noise_params = lambda plane, f=factor: measured(plane) * f
            scores = np.array([
                psnr(model.predict(data["low"][i], axes="YX", warn_range=False), data["gt"][i], data_range=1.0)
                for i in keep
            ])
            ph = photons[keep]
            cells = []
            for lo, hi in BINS:
                sel = (ph >= lo) & (ph < hi)
                cells.append(f"{scores[sel].mean():.2f} (n={int(sel.sum())})" if sel.any() else "-")
            print(f"| x{factor:g} | " + " | ".join(cells) + f" | {scores.mean():.2f} |", flush=True)
    finally:
        noisemap.image_noise_params = measured
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
