"""Peak memory and time of a chunked (dask) restoration against the in-memory path.

Each measurement runs in a fresh process (peak resident memory from ``getrusage``):

* ``baseline``: the imports and the model alone;
* ``memory``: ``read_image`` + ``Model.predict`` + ``write_image`` (OME-Zarr input and output);
* ``chunks``: ``sharpscope.parallel.restore_dask`` with ``--chunks`` (one process);
* ``workers``: the same on a LocalCluster of two worker processes (the peak of the
  client process; each worker holds about one chunk with its halo).

The network is a small randomly initialised m-rBCR (tests/conftest.py's size), so the
numbers show how memory scales with the image and the chunks, not restoration quality.

    python benchmarks/parallel_memory.py --size 2048 --chunks 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HPARAMS = dict(
    channels=8,
    dense_layers=2,
    conv1d_filters=8,
    conv1d_layers=2,
    rdb_blocks=1,
    rdb_growth=4,
    rdb_layers=1,
    out_kernel=3,
)

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from sharpscope.restore import load_model
mode, model_path, src, dst, chunks = sys.argv[1:6]
model = load_model(model_path, device="cpu")
t0 = time.perf_counter()
if mode == "baseline":  # imports and the model only
    pass
elif mode == "memory":
    from sharpscope.io import read_image, write_image
    img = read_image(src)
    out = model.predict(img.data, axes=img.axes, device="cpu", warn_range=False)
    write_image(dst, out, img.axes, pixel_size=img.pixel_size)
else:
    from sharpscope.parallel import restore_dask
    restore_dask(model, src, dst, chunks=int(chunks), device="cpu",
                 workers=2 if mode == "workers" else None)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"mode": mode, "seconds": seconds, "peak_bytes": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image side (pixels, uint16)")
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--modes", default="baseline,memory,chunks",
                        help="of baseline (imports and model), memory, chunks, workers")
    args = parser.parse_args()

    import numpy as np
    import torch

    from sharpscope.io.ome_zarr import write_ome_zarr
    from sharpscope.models.format import save_model
    from sharpscope.models.registry import build_network

    work = Path(tempfile.mkdtemp(prefix="sharpscope-bench-"))
    torch.manual_seed(0)
    header = {"name": "bench", "architecture": "mrbcr", "hparams": HPARAMS,
              "tile": {"size": 256, "overlap": 32}, "description": "benchmark",
              "provenance": "benchmarks/parallel_memory.py", "license": "BSD-3-Clause"}
    model_path = save_model(work / "m.safetensors", build_network("mrbcr", **HPARAMS), header)
    rng = np.random.default_rng(0)
    img = rng.poisson(200, (args.size, args.size)).astype(np.uint16)
    src = write_ome_zarr(work / "in.ome.zarr", img, "YX", {"X": 0.1, "Y": 0.1})
    del img
    print(f"image {args.size}x{args.size} uint16 ({args.size**2 * 2 / 2**20:.0f} MiB), "
          f"chunks {args.chunks}, tile 256, overlap 32")
    for mode in args.modes.split(","):
        dst = work / f"out-{mode}.ome.zarr"
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(model_path), str(src), str(dst),
             str(args.chunks)],
            capture_output=True, text=True, check=True,
        )
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{mode:8s} peak {row['peak_bytes'] / 2**20:7.0f} MiB  "
              f"restore {row['seconds']:6.1f} s  (process {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
