"""Throughput of the PSF models (not a test; prints a Markdown table).

    .venv/bin/python benchmarks/bench_psf.py [--threads 2] [--seconds 2]

Zernike PSFs are timed as in the blind-deconvolution poster's training loop:
33 x 33 pixels, Noll indices 4-11 with coefficients uniform in [-0.15, 0.15]
waves and a per-sample cut-off frequency uniform in [0.125, 0.25] cycles/pixel.
Each row is the best of several timed rounds (the machine may be shared), with
the median in brackets.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sharpscope.physics.psf import confocal_psf, pupil_psf, widefield_psf


def _rounds(fn, seconds: float) -> list[float]:
    fn()  # warm-up: caches, allocator
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| case | batch | PSFs/s (best) | [median] | ms/call (best) |")
    print("|---|---|---|---|---|")
    for batch in (1, 16, 64, 256):
        theta = (torch.rand(batch, 8, generator=gen) - 0.5) * 0.3
        fc = 0.125 + 0.125 * torch.rand(batch, generator=gen)
        times = _rounds(lambda t=theta, f=fc: pupil_psf(t, f, size=33), args.seconds)
        best, med = min(times), statistics.median(times)
        print(
            f"| pupil_psf 33x33, K=8, per-sample fc | {batch} | {batch / best:.0f} |"
            f" [{batch / med:.0f}] | {1e3 * best:.2f} |"
        )

    cases = [
        ("widefield 2-D 33x33", lambda: widefield_psf(1.2, 520, 0.08, 1.33, size=33)),
        (
            "widefield 3-D 32x33x33",
            lambda: widefield_psf(1.2, 520, 0.08, 1.33, size=33, z_planes=32, z_step=0.15),
        ),
        ("confocal 2-D 33x33, pinhole 0.1 um", lambda: confocal_psf(1.2, 488, 520, 0.08, 0.1)),
        ("confocal 2-D 33x33, pinhole 1 um", lambda: confocal_psf(1.2, 488, 520, 0.08, 1.0)),
        ("confocal 2-D 33x33, pinhole 1000 um", lambda: confocal_psf(1.2, 488, 520, 0.08, 1000.0)),
        (
            "confocal 3-D 32x33x33, pinhole 1 um",
            lambda: confocal_psf(1.2, 488, 520, 0.08, 1.0, z_planes=32, z_step=0.15),
        ),
    ]
    for name, fn in cases:
        times = _rounds(fn, args.seconds)
        best, med = min(times), statistics.median(times)
        print(f"| {name} | 1 | {1 / best:.0f} | [{1 / med:.0f}] | {1e3 * best:.2f} |")


if __name__ == "__main__":
    main()
