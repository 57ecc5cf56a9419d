"""Whole-image restoration: CPU time, and how far tiling departs from one pass (issue 2).

Restores a simulated 1024x1024 image with a model (default: the bundled ``widefield-2d``)
once untiled (one pass over the whole image) and once per tiling setting, and reports the
time and the largest difference to the one-pass result as a fraction of its range.

    python benchmarks/bench_restore.py --size 1024 --write-docs
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch
from _docs import replace_section

from sharpscope.restore import load_model
from sharpscope.simulate import simulate_dataset

SECTION = "## Whole-image restoration speed and tiling"
TILINGS = ((128, 32), (256, 64), (256, 96), (512, 96), (512, 160))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu")
    image = simulate_dataset("mrbcr-widefield", n=1, size=args.size, seed=27_182_818)["low"][0]
    model.predict(image[:128, :128])  # warm-up

    def timed(**kw):
        t0, c0 = time.perf_counter(), time.process_time()
        out = model.predict(image, **kw)
        return out, time.perf_counter() - t0, time.process_time() - c0

    ref, wall, cpu = timed(tile=args.size, overlap=0)
    rng = float(ref.max() - ref.min())
    rows = [("one pass", wall, cpu, 0.0)]
    for tile, overlap in TILINGS:
        out, wall, cpu = timed(tile=tile, overlap=overlap)
        rows.append((f"tile {tile}, overlap {overlap}", wall, cpu, float(np.abs(out - ref).max() / rng)))
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    cmd = "python benchmarks/bench_restore.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        SECTION,
        "",
        f"`{model.header.name}` on a simulated {args.size}x{args.size} float32 image, CPU "
        f"({torch.get_num_threads()} threads), batch size 8. Seam error: the largest absolute "
        "difference to the one-pass result divided by its range. Peak resident memory of the "
        f"whole run: {peak_gib:.1f} GiB.",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        "| tiling | wall (s) | CPU (s) | seam error |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {w:.1f} | {c:.1f} | {e:.1e} |" for n, w, c, e in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_docs:
        replace_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
