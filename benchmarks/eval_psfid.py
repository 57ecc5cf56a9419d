"""Held-out evaluation of a PSF identifier on simulated measurements (a seed training never used).

    python benchmarks/eval_psfid.py [--model psfid-2d] [--n 96] [--seed 20261202] [--json OUT.json]

For each noise setting (noise-free, the training range, high noise) it draws ``n``
patches of 128 x 128 from the training distribution of ``configs/psfid-2d.yaml``
(poster-zernike with fc 0.1-0.25, theta_max <= 0.3 waves, 30 % textures) under a new
seed, identifies the PSF with fc / theta_max known and unknown, and reports the mean
relative L2 error ``||h_hat - h|| / ||h||``, the PSF SNR in dB (Deep-blur's measure,
``-20 log10`` of the relative error) and the reblur PSNR of ``h_hat * x`` against
``h * x`` with ``x`` scaled to [0, 1] (valid region), against the aberration-free PSF of
the true fc; per fc band too, and the identification time per patch on one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="psfid-2d")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from sharpscope.models.psfnet import load_identifier
    from sharpscope.physics.psf import pupil_psf
    from sharpscope.simulate import NoiseModel
    from sharpscope.training import load_config
    from sharpscope.training.psfid import PSFPatches, psf_metrics, psfid_preset, stack

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "psfid-2d.yaml")
    base = psfid_preset(cfg)
    noises = {
        "noise-free": dataclasses.replace(base.noise, gain=(1e-7, 1e-7), sigma=(0.0, 0.0), salt_pepper=None),
        "training range": base.noise,
        "high noise": NoiseModel(gain=(0.05, 0.05), sigma=(0.03, 0.03), bits=16, salt_pepper=1e-5),
    }
    ident = load_identifier(args.model)
    results: dict = {"model": args.model, "n": args.n, "seed": args.seed, "settings": {}}
    for name, noise in noises.items():
        preset = dataclasses.replace(base, noise=noise)
        ds = PSFPatches(preset, 128, seed=args.seed, stream=0)
        b = stack([ds[i] for i in range(args.n)])
        low = b["low"][:, 0].numpy()
        rows = {}
        h0 = pupil_psf(torch.zeros(args.n, 8), b["fc"], size=33)
        for mode in ("known", "unknown"):
            kw = {"fc": b["fc"].numpy(), "theta_max": b["theta_max"].numpy()} if mode == "known" else {}
            pred = ident.predict(low, **kw)
            rows[mode] = {k: v.numpy() for k, v in psf_metrics(torch.from_numpy(pred.psf), b["psf"], b["x"]).items()}
            if mode == "unknown":
                rows[mode]["fc_error"] = np.abs(pred.fc - b["fc"].numpy())
        rows["aberration-free"] = {k: v.numpy() for k, v in psf_metrics(h0, b["psf"], b["x"]).items()}
        fc = b["fc"].numpy()
        bands = [(0.1, 0.15), (0.15, 0.2), (0.2, 0.25)]
        summary = {}
        for mode, m in rows.items():
            summary[mode] = {k: float(np.mean(v)) for k, v in m.items()}
            summary[mode]["psf_snr_by_fc"] = {
                f"{lo:g}-{hi:g}": float(np.mean(m["psf_snr"][(fc >= lo) & (fc < hi + 1e-9)])) for lo, hi in bands
            }
        results["settings"][name] = summary
        print(f"== {name} ({args.n} patches)")
        for mode, s in summary.items():
            by_fc = ", ".join(f"{k}: {v:.2f}" for k, v in s["psf_snr_by_fc"].items())
            extra = f", |fc error| {s['fc_error']:.4f}" if "fc_error" in s else ""
            print(
                f"  {mode:16s} rel L2 {s['rel_l2']:.3f}  PSF SNR {s['psf_snr']:.2f} dB ({by_fc})"
                f"  reblur PSNR {s['reblur_psnr']:.2f} dB{extra}"
            )
    x = np.random.default_rng(0).random((64, 128, 128)).astype(np.float32)
    ident.predict(x[:4], fc=0.2)
    t = time.perf_counter()
    ident.predict(x, fc=0.2)
    per = (time.perf_counter() - t) / len(x)
    results["seconds_per_patch"] = per
    results["load"] = os.getloadavg()
    print(f"identification: {1000 * per:.1f} ms per 128x128 patch on one thread (load {os.getloadavg()[0]:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
