"""Per-pixel network cost against tile size, and what the overlap adds (issue 12, item 2).

Times the m-rBCR network (channels-last, glibc's mmap threshold raised, as
:mod:`sharpscope.accel` runs it) on square tiles of each size, in calls of at most
65,536 pixels (so 4 tiles of 128, one tile from 256 up), and reports microseconds per
tile pixel and per *output* pixel once an overlap ``o`` is added
(``cost * (t / (t - o))**2``, the tiles of a large image with that overlap).

    python benchmarks/bench_tile_cost.py --sizes 128,256,384,512,768,1024 --overlap 96
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from sharpscope.models.registry import build_network
from sharpscope.runtime import set_threads, tune_allocator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,256,384,512,768,1024")
    ap.add_argument("--overlap", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    tune_allocator()
    net = build_network("mrbcr").eval().to(memory_format=torch.channels_last)
    print(f"| tile | us per tile pixel | us per output pixel (overlap {args.overlap}) |")
    print("|---|---|---|")
    for s in (int(v) for v in args.sizes.split(",")):
        n = max(1, (4 * 128 * 128) // (s * s))
        x = torch.rand(n, 1, s, s).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            net(x)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - t0)
        per_px = statistics.median(times) / (n * s * s) * 1e6
        waste = (s / (s - args.overlap)) ** 2 if s > args.overlap else float("inf")
        print(f"| {s} | {per_px:.1f} | {per_px * waste:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
