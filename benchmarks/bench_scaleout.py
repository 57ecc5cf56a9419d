"""Peak memory and time against image size: in memory and chunked (dask), restore and deconvolve.

Every measurement runs in a fresh child process, so each peak is that run's own:

* ``memory``: ``read_image`` (the whole image) + ``Model.predict`` or ``deconvolve`` +
  ``write_image`` (OME-Zarr in and out), as ``sharpscope restore``/``deconvolve`` do for an
  image that fits;
* ``chunks``: ``sharpscope.parallel.restore_dask`` / ``deconvolve_dask`` in the same
  process (dask's synchronous scheduler, one chunk at a time), as ``--chunks C`` does;
* ``workers``: the same on a ``LocalCluster`` of N single-threaded worker processes, as
  ``--workers N`` does.

Peak memory is the kernel's resident high-water mark (``VmHWM`` in ``/proc/<pid>/status``)
of the process; with workers it is the largest simultaneous total proportional set size
(``Pss`` from ``/proc/<pid>/smaps_rollup``: pages shared by the forked workers counted once)
of the process and all its descendants, sampled every 50 ms, with each worker's own VmHWM
beside it.  ``baseline`` is the imports and the model alone.

The inputs are uint16 Poisson images of a smoothly varying intensity (100-4000 photons),
written as OME-Zarr (chunks of 512) under a temporary folder in /tmp, which is removed at the
end; the 3-D stack is written chunk by chunk and never held in memory by this script.
Restoration uses the bundled model (``--model widefield-2d``) or, by default, a randomly
initialised small m-rBCR (the test models' size: what scales with the image is the same
machinery, at a fraction of the time); Richardson-Lucy runs a fixed number of iterations
with a 2-D PSF (a ZYX stack plane by plane).  Linux only (``/proc``).

    python benchmarks/bench_scaleout.py --write-docs          # about 20 min at one thread
    python benchmarks/bench_scaleout.py --quick               # a few seconds per row
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SMALL_HPARAMS = dict(
    channels=8,
    dense_layers=2,
    conv1d_filters=8,
    conv1d_layers=2,
    rdb_blocks=1,
    rdb_growth=4,
    rdb_layers=1,
    out_kernel=3,
)
MIB = 2**20
SECTION = "## Scale-out: peak memory and time against image size"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "scaleout-memory.png"


# ----------------------------------------------------------------- memory probes


def vmhwm(pid: int | str = "self") -> int:
    """Resident high-water mark of a process in bytes (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def _pss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class TreeSampler:
    """Largest simultaneous total PSS of this process and its descendants (background thread)."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._me = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.processes = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                kids = self._me.children(recursive=True)
            except psutil.Error:
                kids = []
            total = _pss(self._me.pid) + sum(_pss(k.pid) for k in kids)
            self.peak = max(self.peak, total)
            self.processes = max(self.processes, 1 + len(kids))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------- the child run


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (runs in a fresh process); returns its row."""
    import torch

    torch.set_num_threads(1)
    op, path = spec["op"], spec["path"]
    model = None
    if op == "restore":
        from sharpscope.restore import load_model

        model = load_model(spec["model"], device="cpu")
    else:
        psf = np.load(spec["psf"])
    row: dict[str, Any] = {k: spec[k] for k in ("op", "path", "shape")}
    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        if path == "baseline":
            pass
        elif path == "memory":
            from sharpscope.io import read_image, write_image

            img = read_image(spec["src"])
            if op == "restore":
                out = model.predict(img.data, axes=img.axes, device="cpu", warn_range=False)
            else:
                from sharpscope.deconv import deconvolve

                out = deconvolve(img.data, psf, "rl", spec["iterations"], img.axes)
            write_image(spec["dst"], out, img.axes, pixel_size=img.pixel_size)
        else:
            from sharpscope.parallel import dask_client, deconvolve_dask, restore_dask

            workers = spec["workers"] if path == "workers" else None
            with dask_client(workers=workers) as client:  # restore_dask reuses this client
                if op == "restore":
                    restore_dask(model, spec["src"], spec["dst"], chunks=spec["chunks"],
                                 workers=workers, device="cpu", warn_range=False)
                else:
                    deconvolve_dask(spec["src"], spec["dst"], psf, "rl", spec["iterations"],
                                    chunks=spec["chunks"], workers=workers)
                if client is not None:
                    row["worker_peaks"] = sorted(client.run(vmhwm).values())
        row["seconds"] = time.perf_counter() - t0
    row["vmhwm"] = vmhwm()
    row["tree_pss_peak"] = sampler.peak
    row["processes"] = sampler.processes
    row["peak"] = sampler.peak if path == "workers" else row["vmhwm"]
    return row


# ----------------------------------------------------------------- inputs


def _block(block_id: tuple[int, ...], seed: int, block_info=None):
    """One chunk of the test image: Poisson counts of a smooth 100-4000 photon field."""
    loc = block_info[None]["array-location"]
    yy, xx = (np.arange(a, b, dtype=np.float32) for a, b in loc[-2:])
    lam = 2050 + 1950 * np.sin(yy[:, None] / 37.0) * np.cos(xx[None, :] / 53.0)
    lead = tuple(b - a for a, b in loc[:-2])
    lam = np.broadcast_to(lam, lead + lam.shape)
    rng = np.random.default_rng([seed, *block_id])
    return rng.poisson(lam).astype(np.uint16)


def make_input(path: Path, shape: tuple[int, ...], seed: int = 0) -> tuple[Path, int]:
    """Write a test image as OME-Zarr chunk by chunk; returns (path, bytes on disk)."""
    import dask.array as da

    from sharpscope.io.ome_zarr import write_ome_zarr
    from sharpscope.parallel import Runner

    chunks = (1,) * (len(shape) - 2) + (min(512, shape[-2]), min(512, shape[-1]))
    lazy = da.map_blocks(_block, seed=seed, dtype=np.uint16,
                         chunks=da.core.normalize_chunks(chunks, shape),
                         meta=np.empty((0,) * len(shape), np.uint16))
    assert lazy.shape == tuple(shape), (lazy.shape, shape)
    axes = "ZYX"[-len(shape):]
    write_ome_zarr(path, lazy, axes, {a: 0.1 for a in axes}, chunks=chunks, compute=Runner(None))
    return path, disk_bytes(path)


def disk_bytes(path: Path) -> int:
    """Bytes of all files under a folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----------------------------------------------------------------- the driver


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (OMP/MKL at one thread)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{spec['op']} {spec['path']} {spec['shape']} failed:\n{res.stderr[-3000:]}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    if spec["path"] != "baseline":
        row["disk_in"] = disk_bytes(Path(spec["src"]))
        if Path(spec["dst"]).exists():
            row["disk_out"] = disk_bytes(Path(spec["dst"]))
            shutil.rmtree(spec["dst"])
    return row


def _command(a: dict[str, Any]) -> str:
    """The command line of a run from its saved arguments."""
    keys = ("deconvolve_sizes", "deconvolve_memory_max", "restore_sizes", "restore_memory_max",
            "workers_sizes", "workers", "chunks", "iterations", "model", "stack", "paths")
    return "nice -n 10 python benchmarks/bench_scaleout.py " + " ".join(
        f"--{k.replace('_', '-')} {chr(39) * 2 if a[k] in (None, '') else a[k]}" for k in keys if k in a
    )


def _save(args: argparse.Namespace, rows: list[dict[str, Any]], t_start: float) -> None:
    """The rows so far, the arguments, the minutes and the load (``--json``)."""
    if args.json:
        doc = {"rows": rows, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "minutes": (time.perf_counter() - t_start) / 60, "load": os.getloadavg()}
        args.json.write_text(json.dumps(doc, indent=1))


def _sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _shape_label(shape: list[int]) -> str:
    return "x".join(str(s) for s in shape)


def plan(args: argparse.Namespace) -> list[tuple[str, list[int], list[str]]]:
    """(op, shape, paths) in the order they run."""
    rows: list[tuple[str, list[int], list[str]]] = []
    wsizes = set(_sizes(args.workers_sizes))
    ops = {
        "restore": (_sizes(args.restore_sizes), args.restore_memory_max),
        "deconvolve": (_sizes(args.deconvolve_sizes), args.deconvolve_memory_max),
    }
    for op in ("deconvolve", "restore"):
        sizes, mem_max = ops[op]
        for n in sizes:
            paths = (["memory"] if n <= mem_max else []) + ["chunks"]
            if n in wsizes and args.workers:
                paths.append("workers")
            rows.append((op, [n, n], [p for p in paths if p in args.paths.split(",")]))
        if op == "deconvolve" and args.stack:
            rows.append(("deconvolve", [int(v) for v in args.stack.split("x")], ["chunks"]))
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="small",
                        help="'small' (random test-size m-rBCR, default), a model name or file")
    parser.add_argument("--restore-sizes", default="1024,2048,4096")
    parser.add_argument("--restore-memory-max", type=int, default=4096,
                        help="largest side restored in memory too")
    parser.add_argument("--deconvolve-sizes", default="1024,2048,4096,8192,16384")
    parser.add_argument("--deconvolve-memory-max", type=int, default=8192)
    parser.add_argument("--stack", default="32x4096x4096",
                        help="ZxYxX of the 3-D stack (deconvolved chunked; '' for none)")
    parser.add_argument("--chunks", type=int, default=1024, help="chunk side of the dask paths")
    parser.add_argument("--iterations", type=int, default=1,
                        help="Richardson-Lucy iterations (the memory does not depend on them)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the workers path")
    parser.add_argument("--workers-sizes", default="2048", help="sides also run with --workers")
    parser.add_argument("--paths", default="memory,chunks,workers",
                        help="which of the 2-D rows' paths to run (the stack is always chunked)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (256 and 512, a 4x512x512 stack, chunks of 256)")
    parser.add_argument("--json", type=Path, help="also write the rows here (after every row)")
    parser.add_argument("--docs-from", type=Path, nargs="+", metavar="JSON",
                        help="only write the docs and the plot from the rows of earlier --json runs "
                             "(merged: a later row replaces an earlier one of the same measurement)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the table into docs/benchmarks.md and the plot")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    if args.docs_from:
        runs = [json.loads(p.read_text()) for p in args.docs_from]
        merged: dict[tuple[str, str, str], dict[str, Any]] = {}
        for run in runs:
            for r in run["rows"]:
                merged[(r["op"], r["path"], _shape_label(r["shape"]))] = r
        for key in ("model", "iterations", "chunks", "workers"):
            setattr(args, key, runs[0]["args"][key])
        args.commands = [_command(run["args"]) for run in runs]
        write_docs(list(merged.values()), args, 60 * sum(r["minutes"] for r in runs), runs[-1]["load"])
        return list(merged.values())
    if args.quick:
        args.restore_sizes = args.deconvolve_sizes = "256,512"
        args.restore_memory_max = args.deconvolve_memory_max = 512
        args.stack, args.chunks, args.workers_sizes = "4x512x512", 256, "512"

    import torch

    from sharpscope.models.format import save_model
    from sharpscope.models.registry import build_network
    from sharpscope.physics.psf import make_psf

    work = Path(tempfile.mkdtemp(prefix="sharpscope-scaleout-", dir="/tmp"))
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        model = args.model
        if model == "small":
            torch.manual_seed(0)
            header = {"name": "bench-small", "architecture": "mrbcr", "hparams": SMALL_HPARAMS,
                      "tile": {"size": 256, "overlap": 32}, "description": "scale-out benchmark",
                      "provenance": "benchmarks/bench_scaleout.py", "license": "BSD-3-Clause"}
            model = str(save_model(work / "small.safetensors",
                                   build_network("mrbcr", **SMALL_HPARAMS), header))
        psf_path = work / "psf.npy"
        np.save(psf_path, make_psf(fc=0.2, size=17))
        base = {"model": model, "psf": str(psf_path), "chunks": args.chunks,
                "iterations": args.iterations, "workers": args.workers}
        for op in ("restore", "deconvolve"):
            row = run_child({**base, "op": op, "path": "baseline", "shape": []}, args.timeout)
            rows.append(row)
            print(f"{op:10s} baseline{'':16s} peak {row['peak'] / MIB:7.0f} MiB", flush=True)
        inputs: dict[tuple[int, ...], tuple[Path, int]] = {}
        for op, shape, paths in plan(args):
            key = tuple(shape)
            if key not in inputs:
                for old in inputs.values():  # one input on disk at a time
                    shutil.rmtree(old[0], ignore_errors=True)
                inputs = {key: make_input(work / f"in-{_shape_label(shape)}.ome.zarr", key)}
            src, _ = inputs[key]
            for path in paths:
                spec = {**base, "op": op, "path": path, "shape": shape, "src": str(src),
                        "dst": str(work / f"out-{op}-{path}.ome.zarr")}
                row = run_child(spec, args.timeout)
                rows.append(row)
                _save(args, rows, t_start)
                extra = ""
                if "worker_peaks" in row:
                    extra = "  workers' VmHWM " + ", ".join(f"{p / MIB:.0f}" for p in row["worker_peaks"])
                print(f"{op:10s} {path:8s} {_shape_label(shape):>15s} peak {row['peak'] / MIB:7.0f} MiB"
                      f"  {row['seconds']:7.1f} s  in {row['disk_in'] / 1e6:.0f} MB{extra}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_start
    load = os.getloadavg()
    print(f"total {total / 60:.1f} min; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    _save(args, rows, t_start)
    if args.write_docs:
        write_docs(rows, args, total, load)
    return rows


# ----------------------------------------------------------------- docs


def _mpix(row: dict[str, Any]) -> float:
    return float(np.prod(row["shape"])) / 1e6 if row["shape"] else 0.0


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: one line per (operation, shape)."""
    head = ("| operation | image | on disk | in memory: peak, time | chunked: peak, time "
            "| workers: peak (total PSS), time |\n|---|---|---|---|---|---|\n")
    lines = []
    seen: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    order = {"deconvolve": 0, "restore": 1}
    for r in sorted(rows, key=lambda r: (order.get(r["op"], 2), len(r["shape"]), float(np.prod(r["shape"])))):
        if r["path"] == "baseline":
            continue
        seen.setdefault((r["op"], _shape_label(r["shape"])), {})[r["path"]] = r
    for (op, label), by in seen.items():
        cells = []
        for path in ("memory", "chunks", "workers"):
            r = by.get(path)
            cells.append(f"{r['peak'] / MIB:.0f} MiB, {r['seconds']:.0f} s" if r else "")
        disk = next(iter(by.values()))["disk_in"]
        size = f"{disk / 1e9:.2f} GB" if disk >= 1e9 else f"{disk / 1e6:.0f} MB"
        lines.append(f"| {op} | {label} | {size} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path = PLOT) -> None:
    """Peak memory and time against megapixels, one panel pair per operation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(10, 5))
    style = {"memory": ("o-", "in memory"), "chunks": ("s-", "chunked (dask)"),
             "workers": ("^", "chunked, 2 workers (total PSS)")}
    colors = {"restore": "tab:blue", "deconvolve": "tab:orange"}
    for op in ("restore", "deconvolve"):
        for kind, (mark, label) in style.items():
            pts = sorted((_mpix(r), r) for r in rows
                         if r["op"] == op and r["path"] == kind and len(r["shape"]) == 2)
            if pts:
                xs = [p[0] for p in pts]
                axs[0].plot(xs, [p[1]["peak"] / MIB for p in pts], mark, color=colors[op],
                            label=f"{op}, {label}", mfc="none" if kind == "chunks" else None)
                axs[1].plot(xs, [p[1]["seconds"] for p in pts], mark, color=colors[op],
                            label=f"{op}, {label}", mfc="none" if kind == "chunks" else None)
        base = [r for r in rows if r["op"] == op and r["path"] == "baseline"]
        if base:
            axs[0].axhline(base[0]["peak"] / MIB, color=colors[op], ls=":", lw=1)
    for r in rows:
        if len(r["shape"]) == 3:
            lab = f"{_shape_label(r['shape'])} stack, deconvolve chunked"
            axs[0].plot([_mpix(r)], [r["peak"] / MIB], "*", ms=12, color="tab:red", label=lab)
            axs[1].plot([_mpix(r)], [r["seconds"]], "*", ms=12, color="tab:red", label=lab)
    for ax in axs:
        ax.set_xscale("log")
        ax.set_xlabel("image size (megapixels)")
        ax.grid(True, which="both", alpha=0.3)
    axs[0].set_ylim(bottom=0)
    axs[0].set_ylabel("peak memory (MiB)")
    axs[1].set_yscale("log")
    axs[1].set_ylabel("wall time (s), one thread, shared CPU")
    handles, labels = axs[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    axs[0].set_title("peak memory (dotted: imports + model)", fontsize=9)
    axs[1].set_title("time", fontsize=9)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(rows: list[dict[str, Any]], args: argparse.Namespace, minutes_s: float, load) -> None:
    """Replace this benchmark's section of docs/benchmarks.md and write the plot."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _docs import replace_section

    base = {r["op"]: r["peak"] / MIB for r in rows if r["path"] == "baseline"}
    model = ("a randomly initialised small m-rBCR (the test models' size; tile 256, overlap 32)"
             if args.model == "small" else f"`{args.model}`")
    commands = getattr(args, "commands", None) or [_command(vars(args))]
    names = [f"rows{i + 1}.json" for i in range(len(commands))]
    runs = "\n".join(f"    {c} --json {n}" for c, n in zip(commands, names, strict=True))

    def spread(op: str, path: str) -> str:
        got = sorted((_mpix(r), r["peak"] / MIB) for r in rows if r["op"] == op and r["path"] == path)
        if not got:
            return "not run"
        return (f"{got[0][1]:.0f} MiB at {got[0][0]:.1f} megapixels to {got[-1][1]:.0f} MiB at "
                f"{got[-1][0]:.1f}")

    biggest = max((r for r in rows if r["path"] != "baseline"), key=lambda r: np.prod(r["shape"]))
    text = f"""{SECTION}

Restoration with {model} and Richardson-Lucy (`rl`, {args.iterations} iteration(s): the memory
does not depend on the count; a 17x17 PSF; a stack plane by plane), in memory and chunked
(dask, chunks of {args.chunks}, one chunk at a time in the process, as `--chunks`; `workers`: a
LocalCluster of {args.workers} single-threaded processes, as `--workers {args.workers}`).
Inputs are uint16 Poisson images (100-4000 photons) written as OME-Zarr in /tmp; outputs are
OME-Zarr (float32 plus the pyramid). Each row is a fresh process at one thread (`nice -n 10`)
on a 2-core machine shared with four other jobs (load average {load[0]:.1f} at the end), so
the times are only indicative (several times what one free core takes). Peak memory is the
process's resident high-water mark (`VmHWM`); for the workers it is the largest simultaneous
total PSS of the process and its workers (sampled every 50 ms: shared pages of the forked
workers counted once). The imports and the model alone take {base.get('restore', 0):.0f} MiB
(restore) and {base.get('deconvolve', 0):.0f} MiB (deconvolve). The run took {minutes_s / 60:.0f}
minutes.

Commands (the rows of all the runs, merged):

{runs}
    python benchmarks/bench_scaleout.py --docs-from {" ".join(names)} --write-docs

(`--write-docs` on one run does both). The defaults,
`nice -n 10 python benchmarks/bench_scaleout.py --write-docs`, run these rows in one go (the 2-D
sizes of deconvolution up to 16384x16384, in memory up to 8192x8192, and the 32x4096x4096 stack:
1 GiB of uint16); the runs were split here only to fit the session's time on a CPU shared with
four other jobs. `--model widefield-2d` restores with the bundled model instead (258 s for one
1024x1024 image in memory on this loaded machine, so keep its sizes small).

{table(rows)}
In memory the peak grows with the image (the whole image, its float32 copies, the output):
deconvolution {spread("deconvolve", "memory")}, restoration {spread("restore", "memory")}.
Chunked, it stays flat, set by the chunk, its halo and the tile batch rather than by the
image: deconvolution {spread("deconvolve", "chunks")}, restoration
{spread("restore", "chunks")}, the largest input being {_shape_label(biggest["shape"])}
({biggest["disk_in"] / 1e6:.0f} MB on disk). With workers the client keeps the imports and
each worker holds one chunk at a time.

![peak memory and time against image size](images/scaleout-memory.png)
"""
    replace_section(SECTION, text)
    plot(rows)


if __name__ == "__main__":
    main()
