"""benchmarks/bench_scaleout.py: its memory probes measure what they claim, one real row runs.

The whole ``--quick`` run takes minutes (a fresh interpreter per row), so only one row runs here.
"""

from __future__ import annotations

import argparse
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = runpy.run_path(str(ROOT / "benchmarks" / "bench_scaleout.py"), run_name="bench_scaleout")
MIB = 2**20


def test_tree_sampler_counts_a_child_process():
    """A child that touches 300 MiB raises the sampled total of the tree by about that much."""
    code = "import time; b = b'x' * (300 * 2**20); time.sleep(1.5)"
    with BENCH["TreeSampler"](interval=0.05) as sampler:
        before = sampler.peak
        subprocess.run([sys.executable, "-c", code], check=True)
    assert sampler.processes >= 2
    assert sampler.peak - before > 250 * MIB, (before, sampler.peak)


def test_vmhwm_is_the_high_water_mark():
    """VmHWM keeps a peak that has since been freed."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from bench_scaleout import vmhwm; "
        "a = vmhwm(); b = b'x' * (200 * 2**20); del b; print(a, vmhwm())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "benchmarks")], check=True,
                         capture_output=True, text=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert after - before > 180 * MIB


def test_plan_keeps_in_memory_rows_below_the_limit():
    args = argparse.Namespace(restore_sizes="256,512", deconvolve_sizes="256,1024",
                              restore_memory_max=256, deconvolve_memory_max=1024,
                              workers_sizes="1024", workers=2, stack="4x64x64",
                              paths="memory,chunks,workers")
    rows = BENCH["plan"](args)
    assert rows == [
        ("deconvolve", [256, 256], ["memory", "chunks"]),
        ("deconvolve", [1024, 1024], ["memory", "chunks", "workers"]),
        ("deconvolve", [4, 64, 64], ["chunks"]),
        ("restore", [256, 256], ["memory", "chunks"]),
        ("restore", [512, 512], ["chunks"]),
    ]
    args.paths = "chunks"
    assert [paths for _, _, paths in BENCH["plan"](args)] == [["chunks"]] * 5


def test_one_chunked_deconvolution_row(tmp_path):
    """A real row: the test image on disk, a fresh process, its peak and its output."""
    src, disk = BENCH["make_input"](tmp_path / "in.ome.zarr", (300, 260))
    from sharpscope.io import read_image

    img = read_image(src)
    assert img.data.shape == (300, 260) and img.data.dtype == np.uint16
    assert 100 < img.data.mean() < 4000 and disk > 0
    from sharpscope.physics.psf import make_psf

    np.save(tmp_path / "psf.npy", make_psf(fc=0.2, size=9))
    spec = {"op": "deconvolve", "path": "chunks", "shape": [300, 260], "src": str(src),
            "dst": str(tmp_path / "out.ome.zarr"), "psf": str(tmp_path / "psf.npy"),
            "model": "", "chunks": 128, "iterations": 1, "workers": 1}
    row = BENCH["run_child"](spec, timeout=300)
    assert row["peak"] == row["vmhwm"] > 50 * MIB  # one process: its own high-water mark
    assert row["tree_pss_peak"] > 0 and row["seconds"] > 0
    assert row["disk_out"] > 0 and not (tmp_path / "out.ome.zarr").exists()  # removed after
    assert "| deconvolve | 300x260 |" in BENCH["table"]([row])
