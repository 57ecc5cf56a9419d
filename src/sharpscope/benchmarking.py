"""Speed and quality benchmarks: what ``sharpscope benchmark speed|quality`` measures.

:func:`speed_benchmark` times, on the CPU and (when present) CUDA:

* the network on a batch of patches (16 of 128 x 128), the plain float32 module
  against the fast path of :mod:`sharpscope.accel`, in patches/s, with the
  arithmetic rate and its fraction of this CPU's measured float32 matmul rate;
* a whole-image restore (:meth:`~sharpscope.restore.Model.predict`, default
  tiling) of a 2048 x 2048 image, in MPix/s, and the peak resident memory it added;
* a training step (forward, multi-scale loss, backward, Adam) at batch 8 of
  128 x 128, in samples/s, and the simulator's rate of training pairs;

with the machine described (:func:`describe_machine`).  Timings are medians of
interleaved repeats.

:func:`quality_benchmark` is the structure of the m-rBCR paper's Table 1 on the
project's two test sets (the held-out simulated set of ``mrbcr-widefield`` and the
out-of-distribution set of :mod:`sharpscope.evaluation`): the degraded input,
Richardson-Lucy with the true PSF (best count per image), Wiener, and every
registered network (s-rBCR, m-rBCR, BCR with decomposition levels, a CARE-style
U-Net, DnCNN) trained by :func:`sharpscope.training.train` with the same time
budget and the same simulated data; columns parameters, runtime per 128 x 128
patch, PSNR, SSIM and NRMSE.

``quick=True`` shrinks every size so that both run in seconds (the CI test).
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharpscope.errors import ConfigError

__all__ = [
    "QUALITY_NETWORKS",
    "describe_machine",
    "format_quality",
    "format_speed",
    "matmul_gflops",
    "median_time",
    "network_gflop",
    "quality_benchmark",
    "replace_section",
    "speed_benchmark",
]

# the networks of the quality table: (row label, architecture, hyper-parameters)
QUALITY_NETWORKS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("s-rBCR", "srbcr", {}),
    ("m-rBCR", "mrbcr", {}),
    ("BCR, 2 decomposition levels", "bcr", {"levels": 2}),
    ("U-Net (CARE-style)", "unet", {}),
    ("DnCNN", "dncnn", {}),
)
HELDOUT_SEED = 31_415_926  # the held-out seed of benchmarks/bench_quality.py (never trained on)
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


# ------------------------------------------------------------------------- the machine
def _allocator() -> str:
    pre = os.environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in pre:
            return name
    from sharpscope import runtime

    return "glibc (mmap threshold raised)" if runtime._TUNED else "glibc"


def describe_machine() -> dict[str, Any]:
    """CPU model, the instruction sets that matter, threads, allocator and GPU.

    Examples
    --------
    >>> info = describe_machine()
    >>> sorted(info)[:3]
    ['allocator', 'cpu', 'cuda']
    >>> info["threads"] >= 1
    True
    """
    from sharpscope.runtime import cpu_flags, cpu_model, native_bf16, physical_cores

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "flags": [f for f in INTERESTING_FLAGS if f in flags],
        "native_bf16": native_bf16(),
        "physical_cores": physical_cores(),
        "threads": torch.get_num_threads(),
        "allocator": _allocator(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def median_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    Examples
    --------
    >>> median_time(lambda: sum(range(1000)), repeats=3) >= 0
    True
    """
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(size: int = 2048, repeats: int = 3, device: str = "cpu") -> float:
    """This machine's float32 matrix-multiply rate (GFLOP/s) at the current threads.

    Examples
    --------
    >>> matmul_gflops(128, repeats=1) > 0
    True
    """
    a = torch.rand(size, size, device=device)
    b = torch.rand(size, size, device=device)

    def run() -> None:
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()

    return 2 * size**3 / median_time(run, repeats) / 1e9


def network_gflop(net: torch.nn.Module, h: int = 128, w: int = 128) -> float:
    """Floating-point operations (GFLOP, multiply and add counted) of one ``h x w`` patch.

    Examples
    --------
    >>> from sharpscope.models.registry import build_network
    >>> round(network_gflop(build_network("mrbcr")), 2)
    4.64
    """
    from torch.utils.flop_counter import FlopCounterMode

    p = next(iter(net.parameters()))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, h, w, device=p.device, dtype=p.dtype))
    return counter.get_total_flops() / 1e9


def _reset_peak_rss() -> bool:
    try:  # Linux: writing 5 resets VmHWM to the current resident size
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:  # pragma: no cover - not Linux or not allowed
        return False


def _rss(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # pragma: no cover


def _test_image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth, noisy uint16 image (its content does not change the speed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / max(1, size)
    clean = 60 + 40 * np.sin(9 * x + 3 * np.cos(7 * y)) * np.cos(5 * y)
    return rng.poisson(clean).astype(np.uint16)


# ----------------------------------------------------------------------------- speed
def _default_model(model: Any) -> Any:
    from sharpscope.restore import load_model

    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model, device="cpu")
    return model


def _training_rate(
    net: torch.nn.Module, batch: int, patch: int, steps: int, device: str, channels_last: bool
) -> float:
    """Samples/s of forward + multi-scale loss + backward + Adam step.

    ``channels_last``: as the trainer runs, in channels-last order through the fused
    view of :func:`sharpscope.models.fused.fuse_for_training`; otherwise the plain module.
    """
    import copy

    from sharpscope.models.fused import fuse_for_training
    from sharpscope.training.losses import restoration_loss

    work = copy.deepcopy(net).to(device).train()
    opt = torch.optim.Adam(work.parameters(), lr=1e-4)
    if channels_last:
        work = fuse_for_training(work.to(memory_format=torch.channels_last)).train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, patch, patch, generator=g).to(device)
    y = torch.rand(batch, 1, patch, patch, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = work(x)
        loss, _ = restoration_loss(out if isinstance(out, tuple) else (out,), y)
        loss.backward()
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()

    return batch / median_time(step, repeats=steps)


def _simulation_rate(patch: int, n: int) -> float:
    """Training pairs per second that the ``mrbcr-widefield`` simulator draws here."""
    from sharpscope.simulate import simulate_dataset

    simulate_dataset("mrbcr-widefield", n=1, size=patch, seed=1)  # warm-up (PSF caches)
    t0 = time.perf_counter()
    simulate_dataset("mrbcr-widefield", n=n, size=patch, seed=2)
    return n / (time.perf_counter() - t0)


def speed_benchmark(
    model: Any = None,
    quick: bool = False,
    devices: Sequence[str] | None = None,
    repeats: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure network, whole-image and training throughput.

    Parameters
    ----------
    model : Model, str or path, optional
        The model to time (default: the bundled ``widefield-2d``).
    quick : bool
        Tiny sizes (batch 4 of 32 x 32, a 128 x 128 image, 2 training steps):
        checks that everything runs, in seconds; the numbers mean little.
    devices : sequence of str, optional
        Default: ``cpu``, plus ``cuda`` when a GPU is present.
    repeats : int, optional
        Timed repeats per measurement (median); default 3 (quick: 1).
    log : callable, optional
        Receives one line per finished measurement.

    Returns
    -------
    dict
        ``machine`` (:func:`describe_machine`), ``settings`` and ``devices``:
        per device a dict with ``patches`` (batch, size, plain/fast seconds,
        patches/s, GFLOP/s, the fast path's plan and max error), ``restore``
        (size, seconds, MPix/s, peak memory added), ``training`` (samples/s
        plain and channels-last, simulator pairs/s) and, on the CPU,
        ``matmul_gflops`` and ``peak_fraction``.

    Examples
    --------
    >>> result = speed_benchmark(quick=True)  # doctest: +SKIP
    >>> result["devices"]["cpu"]["patches"]["fast_patches_per_s"] > 0  # doctest: +SKIP
    True
    """
    model = _default_model(model)
    say = log or (lambda s: None)
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    reps = repeats if repeats is not None else (1 if quick else 3)
    batch, patch = (4, 32) if quick else (16, 128)
    image_size = 128 if quick else 2048
    train_batch, train_patch, train_steps = (2, 32, 2) if quick else (8, 128, max(3, reps))
    net = model.network
    gflop = network_gflop(net.to("cpu"), patch, patch)
    result: dict[str, Any] = {
        "machine": describe_machine(),
        "settings": {
            "model": model.name,
            "architecture": model.architecture,
            "patch_batch": batch,
            "patch_size": patch,
            "image_size": image_size,
            "tile": list(model.tile),
            "train_batch": train_batch,
            "train_patch": train_patch,
            "repeats": reps,
            "quick": bool(quick),
            "gflop_per_patch": gflop,
        },
        "devices": {},
    }
    rng = np.random.default_rng(0)
    patches = rng.random((batch, patch, patch), dtype=np.float32)
    for dev in devices:
        if dev == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available here")
        entry: dict[str, Any] = {}
        sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
        if dev == "cpu":
            entry["matmul_gflops"] = matmul_gflops(512 if quick else 2048, reps)
            say(f"{dev}: float32 matmul {entry['matmul_gflops']:.1f} GFLOP/s")
        # -- network on a batch of patches: plain and fast, interleaved
        fast = model.predictor(dev)
        plain = model.predictor(dev, backend="plain")
        ref = model.predict_patches(patches, device=dev, backend="plain")
        got = model.predict_patches(patches, device=dev)
        err = float(np.abs(got - ref).max())
        times: dict[str, list[float]] = {"plain": [], "fast": []}
        for _ in range(reps):
            for name in ("plain", "fast"):
                t0 = time.perf_counter()
                model.predict_patches(
                    patches, device=dev, backend="auto" if name == "fast" else "plain"
                )
                sync()
                times[name].append(time.perf_counter() - t0)
        t_plain, t_fast = (statistics.median(times[k]) for k in ("plain", "fast"))
        entry["patches"] = {
            "batch": batch,
            "size": patch,
            "plain_s": t_plain,
            "fast_s": t_fast,
            "plain_patches_per_s": batch / t_plain,
            "fast_patches_per_s": batch / t_fast,
            "fast_gflops": gflop * batch / t_fast,
            "plan": fast.plan.describe(),
            "reference": plain.plan.describe(),
            "max_abs_error": err,
            "output_range": float(ref.max() - ref.min()),
        }
        if dev == "cpu":
            entry["peak_fraction"] = entry["patches"]["fast_gflops"] / entry["matmul_gflops"]
        say(
            f"{dev}: batch {batch} of {patch}x{patch}: plain {t_plain:.2f} s, fast {t_fast:.2f} s "
            f"({fast.plan.describe()}, max error {err:.2g})"
        )
        # -- whole image, default tiling
        image = _test_image(image_size)
        model.predict(image[:64, :64], device=dev, warn_range=False)  # warm-up
        _reset_peak_rss()
        base = _rss("VmRSS")
        t0 = time.perf_counter()
        model.predict(image, device=dev, warn_range=False)
        sync()
        t_img = time.perf_counter() - t0
        entry["restore"] = {
            "size": image_size,
            "seconds": t_img,
            "mpix_per_s": image_size**2 / t_img / 1e6,
            "peak_added_bytes": max(0, _rss("VmHWM") - base),
            "cuda_peak_bytes": torch.cuda.max_memory_allocated()
            if dev.startswith("cuda")
            else None,
        }
        say(f"{dev}: restore {image_size}x{image_size}: {t_img:.1f} s")
        # -- training
        entry["training"] = {
            "batch": train_batch,
            "patch": train_patch,
            "plain_samples_per_s": _training_rate(
                net, train_batch, train_patch, train_steps, dev, False
            ),
            "channels_last_samples_per_s": _training_rate(
                net, train_batch, train_patch, train_steps, dev, True
            ),
        }
        if dev == "cpu":
            entry["training"]["simulated_pairs_per_s"] = _simulation_rate(
                train_patch, 2 if quick else 16
            )
        say(f"{dev}: training {entry['training']}")
        result["devices"][dev] = entry
    return result


def format_speed(result: dict[str, Any], command: str = "") -> str:
    """A Markdown report of :func:`speed_benchmark`'s result.

    Examples
    --------
    >>> text = format_speed({"machine": describe_machine(), "settings": {}, "devices": {}})
    >>> text.startswith("Machine:")
    True
    """
    m = result["machine"]
    s = result["settings"]
    load = m.get("load_average")
    lines = [
        f"Machine: {m['cpu']}, flags {' '.join(m['flags']) or 'none of ' + '/'.join(INTERESTING_FLAGS)}, "
        f"{m['threads']} thread(s) of {m['physical_cores']} physical cores, allocator "
        f"{m['allocator']}, torch {m['torch']}, GPU {m['cuda'] or 'none'}"
        + (f", load average {load[0]:.1f}" if load else "")
        + ".",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    if not result["devices"]:
        return "\n".join(lines) + "\n"
    lines += [
        "| device | network: patches/s plain -> fast | fast path | GFLOP/s (of matmul peak) "
        "| restore MPix/s | restore peak memory | training samples/s plain -> channels-last |",
        "|---|---|---|---|---|---|---|",
    ]
    for dev, e in result["devices"].items():
        p, r, t = e["patches"], e["restore"], e["training"]
        peak = (
            f" ({100 * e['peak_fraction']:.0f}% of {e['matmul_gflops']:.0f})"
            if "peak_fraction" in e
            else ""
        )
        mem = r["cuda_peak_bytes"] if r.get("cuda_peak_bytes") else r["peak_added_bytes"]
        lines.append(
            f"| {dev} | {p['plain_patches_per_s']:.2f} -> {p['fast_patches_per_s']:.2f} "
            f"| {p['plan']} (max error {p['max_abs_error']:.1e} of range {p['output_range']:.2g}) "
            f"| {p['fast_gflops']:.1f}{peak} | {r['mpix_per_s']:.3f} | {mem / 2**20:.0f} MiB "
            f"| {t['plain_samples_per_s']:.2f} -> {t['channels_last_samples_per_s']:.2f} |"
        )
    lines.append("")
    lines.append(
        f"Network: batch {s.get('patch_batch')} of {s.get('patch_size')}x{s.get('patch_size')} "
        f"({s.get('gflop_per_patch', 0):.2f} GFLOP per patch); restore: a "
        f"{s.get('image_size')}x{s.get('image_size')} image with the model's default tiling "
        f"{tuple(s.get('tile', ()))}; training: batch {s.get('train_batch')} of "
        f"{s.get('train_patch')}x{s.get('train_patch')}, forward + loss + backward + Adam; "
        f"medians of {s.get('repeats')} interleaved repeats."
    )
    cpu = result["devices"].get("cpu", {}).get("training", {})
    if "simulated_pairs_per_s" in cpu:
        lines.append(
            f"The simulator draws {cpu['simulated_pairs_per_s']:.1f} training pairs/s "
            "on one thread."
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- quality
def _quality_sets(quick: bool, n_id: int, n_ood_crops: int, size: int) -> dict[str, dict]:
    from sharpscope.evaluation import ood_dataset
    from sharpscope.simulate import simulate_dataset

    sim = simulate_dataset("mrbcr-widefield", n=n_id, size=size, seed=HELDOUT_SEED)
    sets = {
        "simulated (in distribution)": {"low": sim["low"], "gt": sim["gt"], "psfs": sim["psfs"]}
    }
    kw: dict[str, Any] = {"size": size, "crops_per_kind": n_ood_crops}
    if quick:
        kw.update(photons=(100.0,), kinds=("nuclei",), psf_size=15)
    ood = ood_dataset(**kw)
    sets["real specimens, vectorial PSF (out of distribution)"] = {
        "low": ood["low"],
        "gt": ood["gt"],
        "psfs": ood["psfs"],
    }
    return sets


def _train_network(
    arch: str, hparams: dict, minutes: float, out: Path, quick: bool, seed: int
) -> Any:
    from sharpscope.restore import load_model
    from sharpscope.training import load_config, train

    overrides: dict[str, Any] = {
        "model.arch": arch,
        "model.hparams": dict(hparams),
        "data.simulate": "mrbcr-widefield",
        "out": str(out),
        "plot": False,
        "seed": seed,
        "patience": None,
        "device": "cpu",
        "name": f"benchmark-{arch}",
    }
    if quick:
        overrides.update(steps=2, batch_size=2, patch_size=32, val_every=2, val_size=2)
    else:
        overrides.update(
            steps=1_000_000,
            max_minutes=minutes,
            batch_size=8,
            patch_size=128,
            val_every=25,
            val_size=16,
        )
    config = load_config(overrides=overrides)
    result = train(config, progress=False, log=lambda s: None)
    if result.best_path is None:
        raise ConfigError(f"training {arch} within the budget produced no validated model")
    return load_model(result.best_path, device="cpu"), result


def _runtime_per_patch(fn: Callable[[np.ndarray], Any], patch: np.ndarray, repeats: int) -> float:
    return median_time(lambda: fn(patch), repeats=repeats)


def quality_benchmark(
    budget_minutes: float = 20.0,
    quick: bool = False,
    out_dir: str | os.PathLike[str] | None = None,
    n_id: int | None = None,
    n_ood_crops: int | None = None,
    size: int | None = None,
    figure: str | os.PathLike[str] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Table 1 of the m-rBCR paper on the project's test sets.

    Parameters
    ----------
    budget_minutes : float
        Total training time; every network gets the same share (``budget / 5``),
        the same simulated data (``mrbcr-widefield``, seed ``seed``), batch 8 of
        128 x 128 and the trainer's defaults otherwise.
    quick : bool
        Two training steps per network on 32 x 32 patches, two tiny test images
        per set: checks that everything runs, in seconds.
    out_dir : path, optional
        Where the training runs go (default: a temporary folder).
    n_id, n_ood_crops, size : int, optional
        Test images of the simulated set, scenes per specimen kind of the
        out-of-distribution set (5 photon levels each) and their side
        (defaults 24, 2, 256; quick 2, 1, 64).
    figure : path, optional
        Write a PNG grid of one example per set and method.
    seed : int
        Training seed.
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    dict
        ``sets``: set name -> method -> ``{'psnr', 'ssim', 'nrmse'}`` (means over
        the images); ``methods``: method -> ``{'parameters', 'seconds_per_patch',
        'note'}``; ``settings``.

    Examples
    --------
    >>> table = quality_benchmark(quick=True)  # doctest: +SKIP
    >>> sorted(table["sets"])  # doctest: +SKIP
    ['real specimens, vectorial PSF (out of distribution)', 'simulated (in distribution)']
    """
    import tempfile

    from sharpscope.deconv import deconvolve
    from sharpscope.evaluation import rl_oracle
    from sharpscope.metrics import nrmse, psnr, ssim
    from sharpscope.models.registry import count_parameters

    say = log or (lambda s: None)
    n_id = n_id if n_id is not None else (2 if quick else 24)
    n_ood_crops = n_ood_crops if n_ood_crops is not None else (1 if quick else 2)
    size = size if size is not None else (64 if quick else 256)
    patch = 64 if quick else 128
    reps = 1 if quick else 3
    share = float(budget_minutes) / len(QUALITY_NETWORKS)
    if share <= 0:
        raise ConfigError(f"--budget must be positive, got {budget_minutes}")

    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sharpscope-quality-")
        out_dir = tmp.name
    out_root = Path(out_dir)
    try:
        methods: dict[str, dict[str, Any]] = {
            "identity (input)": {"parameters": 0, "note": ""},
            "Richardson-Lucy, true PSF (best count per image)": {"parameters": 0},
            "Wiener, true PSF": {"parameters": 0, "note": ""},
        }
        models: dict[str, Any] = {}
        for label, arch, hp in QUALITY_NETWORKS:
            t0 = time.perf_counter()
            model, res = _train_network(arch, hp, share, out_root / arch, quick, seed)
            models[label] = model
            methods[label] = {
                "parameters": count_parameters(model.network),
                "note": f"{res.steps_done} steps in {time.perf_counter() - t0:.0f} s, "
                f"best validation PSNR {res.best_val_psnr:.2f} dB at step {res.best_step}",
            }
            say(f"trained {label}: {methods[label]['note']}")

        sets = _quality_sets(quick, n_id, n_ood_crops, size)
        scores: dict[str, dict[str, dict[str, float]]] = {}
        examples: dict[str, dict[str, np.ndarray]] = {}
        rl_counts: list[int] = []
        for set_name, data in sets.items():
            per: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
            for i in range(len(data["low"])):
                low, gt, psf = data["low"][i], data["gt"][i], data["psfs"][i]
                rl = rl_oracle(low, gt, psf)
                rl_counts.append(int(re.sub(r"\D", "", rl.note) or 30))
                outs = {
                    "identity (input)": low,
                    "Richardson-Lucy, true PSF (best count per image)": rl.image,
                    "Wiener, true PSF": deconvolve(low, psf, method="wiener"),
                }
                for label, model in models.items():
                    outs[label] = model.predict(low, axes="YX", warn_range=False)
                for name, img in outs.items():
                    img = np.asarray(img, dtype=np.float32)
                    per[name].append(
                        (
                            psnr(img, gt, data_range=1.0),
                            ssim(img, gt, data_range=1.0),
                            nrmse(img, gt),
                        )
                    )
                if i == 0:
                    examples[set_name] = {"ground truth": gt, **outs}
            scores[set_name] = {
                m: {
                    k: float(np.mean([v[j] for v in vals]))
                    for j, k in enumerate(("psnr", "ssim", "nrmse"))
                }
                for m, vals in per.items()
            }
            scores[set_name]["_n"] = {"images": float(len(data["low"]))}
            say(f"scored {set_name}: {len(data['low'])} images")

        # runtime per 128 x 128 patch (one thread of this CPU)
        low = np.asarray(sets["simulated (in distribution)"]["low"][0][:patch, :patch], np.float32)
        psf = sets["simulated (in distribution)"]["psfs"][0]
        methods["identity (input)"]["seconds_per_patch"] = 0.0
        best_rl = int(np.median(rl_counts))  # the typical chosen count
        rl_row = methods["Richardson-Lucy, true PSF (best count per image)"]
        rl_row["seconds_per_patch"] = _runtime_per_patch(
            lambda p: deconvolve(p, psf, method="rl", iterations=best_rl), low, reps
        )
        rl_row["note"] = f"runtime at {best_rl} iterations, the median chosen count"
        methods["Wiener, true PSF"]["seconds_per_patch"] = _runtime_per_patch(
            lambda p: deconvolve(p, psf, method="wiener"), low, reps
        )
        batch = np.repeat(low[None], 4, axis=0)
        for label, model in models.items():
            t = _runtime_per_patch(
                lambda b, m=model: m.predict_patches(b, device="cpu"), batch, reps
            )
            methods[label]["seconds_per_patch"] = t / len(batch)
        if figure is not None:
            _quality_figure(examples, Path(figure))
        return {
            "sets": scores,
            "methods": methods,
            "settings": {
                "budget_minutes": float(budget_minutes),
                "minutes_per_network": share,
                "quick": bool(quick),
                "size": size,
                "n_id": n_id,
                "n_ood_crops": n_ood_crops,
                "threads": torch.get_num_threads(),
                "machine": describe_machine()["cpu"],
                "patch": patch,
            },
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


def _quality_figure(examples: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sharpscope.io import atomic_write

    rows = list(examples)
    cols = list(examples[rows[0]])
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(1.9 * len(cols), 2.1 * len(rows)), squeeze=False
    )
    for r, set_name in enumerate(rows):
        for c, name in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(examples[set_name][name], cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name.split(",")[0].split(" (")[0], fontsize=8)
        axes[r][0].set_ylabel(set_name.split(" (")[0], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def format_quality(result: dict[str, Any], command: str = "", figure: str | None = None) -> str:
    """A Markdown table (one block of PSNR/SSIM/NRMSE columns per test set).

    Examples
    --------
    >>> res = {"sets": {"a": {"m": {"psnr": 30.0, "ssim": 0.9, "nrmse": 0.05}}},
    ...        "methods": {"m": {"parameters": 10, "seconds_per_patch": 0.01, "note": ""}},
    ...        "settings": {}}
    >>> print(format_quality(res).splitlines()[-1])
    | m | 10 | 10.0 | 30.00 | 0.900 | 0.0500 |
    """
    s = result.get("settings", {})
    sets = list(result["sets"])
    lines = []
    if s.get("quick"):
        lines += [
            "Quick mode: 2 training steps per network (batch 2 of 32x32); the numbers mean nothing.",
            "",
        ]
    if s:
        lines += [
            f"Training budget {s['budget_minutes']:g} minutes in all ({s['minutes_per_network']:.1f} per "
            f"network, same simulated data `mrbcr-widefield`, batch 8 of 128x128, trainer defaults), "
            f"{s['threads']} CPU thread(s) of {s['machine']}. Test images {s['size']}x{s['size']}: "
            + ", ".join(
                f"{name}: {int(result['sets'][name].get('_n', {}).get('images', 0))}"
                for name in sets
            )
            + f". Runtime per {s['patch']}x{s['patch']} patch on the same CPU thread. PSNR and SSIM with "
            "data range 1 (the normalised ground truth), NRMSE by the ground truth's range.",
            "",
        ]
    if command:
        lines += [f"Command: `{command}`", ""]
    head = "| method | parameters | ms per patch |" + "".join(
        f" PSNR ({i + 1}) | SSIM ({i + 1}) | NRMSE ({i + 1}) |" for i in range(len(sets))
    )
    if len(sets) > 1:
        lines += [" ".join(f"({i + 1}) {name}." for i, name in enumerate(sets)), ""]
    lines += [head, "|---" * (3 + 3 * len(sets)) + "|"]
    for m, info in result["methods"].items():
        cells = [
            m,
            f"{info['parameters']:,}",
            f"{1000 * info.get('seconds_per_patch', float('nan')):.1f}",
        ]
        for name in sets:
            v = result["sets"][name][m]
            cells += [f"{v['psnr']:.2f}", f"{v['ssim']:.3f}", f"{v['nrmse']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{m}: {i['note']}" for m, i in result["methods"].items() if i.get("note")]
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    if figure:
        lines += ["", f"![examples]({figure})"]
    return "\n".join(lines) + "\n"


def replace_section(path: str | os.PathLike[str], title: str, text: str) -> Path:
    """Replace the Markdown section ``title`` (up to the next ``## ``) of ``path`` with ``text``.

    The section is appended when missing; the file is written atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "b.md"
    >>> _ = replace_section(p, "## Speed", "## Speed\\n\\nfast\\n")
    >>> _ = replace_section(p, "## Speed", "## Speed\\n\\nfaster\\n")
    >>> p.read_text().count("## Speed"), "faster" in p.read_text()
    (1, True)
    """
    from sharpscope.io import atomic_write

    path = Path(path)
    doc = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text.rstrip() + "\n\n", doc).rstrip() + "\n"
    else:
        doc = doc.rstrip() + "\n\n" + text
    with atomic_write(path) as tmp:
        Path(tmp).write_text(doc)
    return path
