"""Images larger than memory: restoration and deconvolution over dask chunks, on a cluster.

The in-memory paths (:meth:`sharpscope.restore.Model.predict`,
:func:`sharpscope.deconv.deconvolve`) hold the whole image; the functions here
hold a few chunks at a time and give the same results:

Restoration (:func:`restore_array`, :func:`restore_dask`)
    The normalisation percentiles are computed over the whole image (per
    channel) in a streaming pass that is *exact* (:func:`exact_percentiles`:
    a radix selection over the bit patterns of the pixels, one pass over the
    data for 8/16-bit images, two for 32-bit, four for 64-bit), so the
    intensity scale is the in-memory one.  Each chunk is then computed with
    dask's overlap (``map_overlap`` with a halo of one tile): exactly the
    tiles of the whole-image tile grid (:func:`sharpscope.tiling.layout_axis`)
    that touch the chunk run through the network and are blended with the
    same windows, in the same order, so a chunk's pixels equal those of
    :meth:`~sharpscope.restore.Model.predict` up to float rounding
    (0 to 3e-7 of the output range measured; tests/test_parallel.py asserts 1e-5).
Deconvolution (:func:`deconvolve_array`, :func:`deconvolve_dask`)
    Each chunk is deconvolved with a halo (default four PSF widths per side)
    that is cropped afterwards; the image's true borders keep their
    boundary model.  With ``iterations=None`` the count is chosen by the
    discrepancy principle on the central crop (at most 1024 pixels a side) of
    the middle plane and used for every chunk; Wiener needs an explicit
    ``balance`` with a 2-D PSF (its parametric default is a whole-plane
    spectrum).

Memory is bounded by the chunk size (plus halo) times the number of chunks
in flight and the tile batch size, not by the image size; an OME-Zarr
output is written chunk by chunk (:func:`sharpscope.io.ome_zarr.write_ome_zarr`),
under a temporary name renamed when complete.

Clusters: ``workers=N`` starts a :class:`distributed.LocalCluster` of N
single-threaded worker processes, ``cluster=ADDRESS`` connects to a running
scheduler (:func:`dask_client`).  Local workers are forked (0.3-0.5 s for
two, against 2.4-12 s with spawn, which re-imports torch in every worker) on
Linux when CUDA has not been initialised in this process, spawned
otherwise.  Failed tasks are retried by dask (``retries``), progress is a
tqdm bar on stderr fed by the chunks as they finish.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.errors import ConfigError, InputError, ModelFormatError, SharpscopeError

__all__ = [
    "DEFAULT_CHUNK",
    "MEMORY_FRACTION",
    "Runner",
    "dask_client",
    "deconvolve_array",
    "deconvolve_dask",
    "exact_percentiles",
    "in_memory_bytes",
    "needs_chunks",
    "restore_array",
    "restore_dask",
    "use_chunks",
]

DEFAULT_CHUNK = 1024
"""Chunk extent along Y and X (pixels) when none is given."""

MEMORY_FRACTION = 0.5
"""Share of the available memory the in-memory path may use before chunks are chosen."""

# float32 work arrays the in-memory restoration holds besides the input (normalised
# copy, accumulator, weights, result, output in the input's axes)
_IN_MEMORY_COPIES = 5
# pairwise fan-in of the streaming reductions
_SPLIT_EVERY = 8
# deconvolution halo: this many PSF extents on each side of a chunk
_DECONV_HALO = 4
# the crop on which deconvolve's automatic stopping rule is evaluated
_AUTO_CROP = 1024


# ------------------------------------------------------------------ percentiles


def _key_bits(dtype: np.dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return 8
    if dtype.kind not in "iuf":
        raise InputError(f"unsupported pixel type {dtype}")
    return dtype.itemsize * 8


def _to_keys(block: np.ndarray) -> np.ndarray:
    """Unsigned integers that sort like the pixels (floats: sign-magnitude flipped)."""
    a = np.ascontiguousarray(block)
    if a.dtype.kind == "b":
        return a.view(np.uint8)
    bits = a.dtype.itemsize * 8
    udt = np.dtype(f"u{a.dtype.itemsize}")
    u = a.view(udt)
    top = udt.type(1 << (bits - 1))
    if a.dtype.kind == "u":
        return u
    if a.dtype.kind == "i":
        return u ^ top
    return np.where(u & top, ~u, u | top)


def _from_key(key: int, dtype: np.dtype) -> float:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return float(key)
    bits = dtype.itemsize * 8
    udt = np.dtype(f"u{dtype.itemsize}")
    top = 1 << (bits - 1)
    if dtype.kind == "u":
        u = key
    elif dtype.kind == "i":
        u = key ^ top
    else:
        u = (key ^ top) if key & top else (~key & ((1 << bits) - 1))
    return float(np.array(u, dtype=udt).view(dtype)[()])


def _digit_hist(block: np.ndarray, shift: int, width: int, prefixes: tuple[int | None, ...]):
    """Per prefix (None: every pixel), counts of the ``width``-bit digit at ``shift``."""
    keys = _to_keys(block).ravel().astype(np.uint64)
    digit = ((keys >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.intp)
    out = np.zeros((len(prefixes), 1 << width), dtype=np.int64)
    for i, prefix in enumerate(prefixes):
        if prefix is None:
            sel = digit
        else:
            sel = digit[(keys >> np.uint64(shift + width)) == np.uint64(prefix)]
        out[i] = np.bincount(sel, minlength=1 << width)
    bad = 0
    if block.dtype.kind == "f":
        bad = int(block.size - np.count_nonzero(np.isfinite(block)))
    return out, bad


def _sum_parts(*parts):
    hist = parts[0][0].copy()
    bad = parts[0][1]
    for h, b in parts[1:]:
        hist += h
        bad += b
    return hist, bad


def _tree_sum(parts: list) -> Any:
    import dask

    while len(parts) > 1:
        parts = [
            dask.delayed(_sum_parts, pure=True)(*parts[i : i + _SPLIT_EVERY])
            for i in range(0, len(parts), _SPLIT_EVERY)
        ]
    return parts[0]


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation of ``np.percentile`` (exact at t = 0 and 1)."""
    d = b - a
    return b - d * (1.0 - t) if t >= 0.5 else a + d * t


def exact_percentiles(
    groups: Sequence[Any], q: Sequence[float], compute: Callable[[list], list] | None = None
) -> list[dict[str, Any]]:
    """Exact percentiles of (dask) arrays in a few streaming passes.

    Each pixel's bit pattern is mapped to an unsigned integer that sorts like
    the pixel values; the order statistics that ``np.percentile`` (linear
    interpolation) needs are found digit by digit, 16 bits per pass, from
    per-chunk histograms that are summed pairwise (memory: one chunk and a
    65536-bin histogram per task).  The result equals ``np.percentile`` up to
    the rounding of the final interpolation.

    Parameters
    ----------
    groups : sequence of dask.array.Array or list of them
        Each group (an array, or a list of arrays whose pixels are pooled)
        gets its own percentiles, e.g. one group per channel.
    q : sequence of float
        Percentiles in ``[0, 100]``.
    compute : callable, optional
        Takes a list of dask objects and returns their values (default
        :func:`dask.compute`); see :class:`Runner`.

    Returns
    -------
    list of dict
        Per group: ``'q'`` (the percentiles, floats), ``'min'``, ``'max'``
        and ``'n'`` (number of pixels).

    Raises
    ------
    InputError
        An empty group, or NaN/Inf pixels.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> x = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    >>> res = exact_percentiles([da.from_array(x, chunks=16)], [1, 99.8])
    >>> bool(np.allclose(res[0]["q"], np.percentile(x, [1, 99.8]), rtol=0, atol=1e-7))
    True
    """
    import dask

    run = compute or (lambda objs: list(dask.compute(*objs)))
    groups = [list(g) if isinstance(g, (list, tuple)) else [g] for g in groups]
    dtypes = {np.dtype(a.dtype) for g in groups for a in g}
    if len(dtypes) != 1:
        raise InputError(f"percentiles of mixed pixel types {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    bits = _key_bits(dtype)
    width = min(16, bits)
    blocks = [[b for a in g for b in a.to_delayed().ravel()] for g in groups]

    def one_pass(shift: int, prefixes: list[tuple[int | None, ...]]):
        sums = [
            _tree_sum([dask.delayed(_digit_hist, pure=True)(b, shift, width, pre) for b in blks])
            for blks, pre in zip(blocks, prefixes, strict=True)
        ]
        return run(sums)

    shift = bits - width
    first = one_pass(shift, [(None,)] * len(groups))
    states = []
    for hist, bad in first:
        n = int(hist[0].sum())
        if n == 0:
            raise InputError("image is empty")
        if bad:
            raise InputError(f"image contains {bad} NaN/Inf pixel(s) out of {n}")
        ranks = {0, n - 1}
        plan = []
        for p in q:
            if not 0.0 <= float(p) <= 100.0:
                raise InputError(f"percentiles must lie in [0, 100], got {p}")
            r = (n - 1) * (float(p) / 100.0)
            k0 = int(math.floor(r))
            k1 = min(k0 + 1, n - 1)
            ranks.update((k0, k1))
            plan.append((k0, k1, r - k0))
        # rank -> (prefix so far, values below the prefix)
        found = {k: _descend(hist[0], k, 0, 0) for k in sorted(ranks)}
        states.append((n, plan, found))
    while shift > 0:
        shift -= width
        prefixes = [tuple(sorted({p for p, _ in st[2].values()})) for st in states]
        hists = one_pass(shift, prefixes)
        for st, pre, (hist, _) in zip(states, prefixes, hists, strict=True):
            found = st[2]
            for k, (prefix, below) in list(found.items()):
                found[k] = _descend(hist[pre.index(prefix)], k, below, prefix)
    results = []
    for n, plan, found in states:
        value = {k: _from_key(prefix, dtype) for k, (prefix, _) in found.items()}
        qs = [_lerp(value[k0], value[k1], t) for k0, k1, t in plan]
        results.append({"q": qs, "min": value[0], "max": value[n - 1], "n": n})
    return results


def _descend(hist: np.ndarray, k: int, below: int, prefix: int) -> tuple[int, int]:
    """The digit holding rank ``k``: (extended prefix, values below it)."""
    cum = np.cumsum(hist)
    d = int(np.searchsorted(cum, k - below, side="right"))
    before = int(cum[d - 1]) if d > 0 else 0
    return (prefix << int(np.log2(hist.size))) | d, below + before


# ------------------------------------------------------------------- running


class Runner:
    """Computes lists of dask objects locally or on a cluster, with progress and retries.

    Parameters
    ----------
    client : distributed.Client, optional
        Where to compute; None runs in this process (dask's synchronous
        scheduler: one chunk at a time, the network using torch's threads).
    retries : int
        Automatic retries of a failed task on the cluster.
    progress : bool
        A tqdm bar on stderr, one step per finished chunk.
    desc : str, optional
        Label of the bar.
    """

    def __init__(self, client: Any = None, retries: int = 2, progress: bool = False, desc=None):
        self.client = client
        self.retries = int(retries)
        self.progress = progress
        self.desc = desc

    def __call__(self, objs: list) -> list:
        """Values of ``objs`` (dask collections or delayed), in order."""
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(objs), disable=not self.progress, file=sys.stderr, desc=self.desc, unit="chunk"
        )
        try:
            if self.client is None:
                import dask

                out = []
                for obj in objs:  # one at a time: memory bounded by a chunk and its halo
                    out.append(dask.compute(obj, scheduler="synchronous")[0])
                    bar.update()
                return out
            from distributed import as_completed

            futures = self.client.compute(objs, retries=self.retries)
            try:
                for _ in as_completed(futures):
                    bar.update()
                return self.client.gather(futures)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        finally:
            bar.close()


_ACTIVE: dict[tuple[Any, Any], Any] = {}


def _start_method() -> str:
    """fork where it is safe and fast (Linux, no CUDA context), spawn elsewhere."""
    if not sys.platform.startswith("linux"):
        return "spawn"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "spawn"
    return "fork"


@contextlib.contextmanager
def dask_client(
    workers: int | None = None,
    cluster: str | None = None,
    start_method: str | None = None,
    threads_per_worker: int = 1,
) -> Iterator[Any]:
    """A dask.distributed client for the duration of a ``with`` block (or None).

    Parameters
    ----------
    workers : int, optional
        Start a :class:`distributed.LocalCluster` of this many worker
        processes (each with ``threads_per_worker`` threads), closed with
        the block.
    cluster : str, optional
        Address of a running scheduler (``tcp://host:8786``); the client
        disconnects at the end, the cluster keeps running.
    start_method : {'fork', 'spawn', 'forkserver'}, optional
        How local workers start (default: ``'fork'`` on Linux unless CUDA is
        initialised here, else ``'spawn'``).
    threads_per_worker : int
        Threads per local worker (torch uses as many).

    Yields
    ------
    distributed.Client or None
        None when neither ``workers`` nor ``cluster`` is given.

    Raises
    ------
    ConfigError
        Both given, a bad count, a missing ``distributed`` or an unreachable
        scheduler.

    Examples
    --------
    >>> with dask_client(workers=2) as client:  # doctest: +SKIP
    ...     print(len(client.scheduler_info()["workers"]))
    2
    """
    if workers is None and cluster is None:
        yield None
        return
    if workers is not None and cluster is not None:
        raise ConfigError("give either a cluster address or a number of workers, not both")
    key = (workers, cluster)
    if key in _ACTIVE:  # nested use (a batch of files): the client already running
        yield _ACTIVE[key]
        return
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("dask clusters need the 'distributed' package: install sharpscope[zarr]") from None
    if cluster is not None:
        try:
            client = Client(cluster, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the dask scheduler at {cluster}: {' '.join(str(exc).split())}") from None
        _ACTIVE[key] = client
        try:
            yield client
        finally:
            _ACTIVE.pop(key, None)
            client.close()
        return
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    method = start_method or _start_method()
    if method not in ("fork", "spawn", "forkserver"):
        raise ConfigError(f"unknown start method {method!r} (fork, spawn or forkserver)")
    with dask.config.set({"distributed.worker.multiprocessing-method": method}):
        local = LocalCluster(
            n_workers=int(workers),
            threads_per_worker=int(threads_per_worker),
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # task errors reach the caller, once
        )
    try:
        client = Client(local)
        _ACTIVE[key] = client
        try:
            yield client
        finally:
            _ACTIVE.pop(key, None)
            client.close()
    finally:
        local.close()


# ------------------------------------------------------------------- sizing


def in_memory_bytes(shape: Sequence[int], dtype: Any) -> int:
    """Rough peak memory of restoring an image of this shape in memory.

    Examples
    --------
    >>> in_memory_bytes((1024, 1024), "uint16") // 2**20
    22
    """
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    return n * np.dtype(dtype).itemsize + n * 4 * _IN_MEMORY_COPIES


def needs_chunks(
    path: str | os.PathLike[str], axes: str | None = None, budget: int | None = None
) -> bool:
    """Whether ``path`` should go through the chunked path.

    True for OME-Zarr inputs, and for TIFF and ``.npy`` files (which are read
    lazily) when :func:`in_memory_bytes` exceeds ``budget`` (default
    :data:`MEMORY_FRACTION` of the available memory).  Only the file's
    metadata is read.

    Examples
    --------
    >>> needs_chunks("big.ome.zarr")  # doctest: +SKIP
    True
    """
    from sharpscope.io import is_zarr_path
    from sharpscope.runtime import available_memory

    if is_zarr_path(path):
        return True
    name = str(path).lower()
    if name.endswith(".npy"):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        shape, dtype = arr.shape, arr.dtype
    elif name.endswith((".tif", ".tiff")):
        import tifffile

        from sharpscope.io.tiff import _quiet_tifffile

        try:  # tifffile's log messages stay off stderr (read_image reports them)
            with _quiet_tifffile(Path(path)), tifffile.TiffFile(path) as tif:
                shape, dtype = tif.series[0].shape, tif.series[0].dtype
        except Exception:  # read_image will say what is wrong with the file
            return False
    else:
        return False  # read whole anyway (npz, png, jpeg)
    limit = MEMORY_FRACTION * available_memory() if budget is None else budget
    return in_memory_bytes(shape, dtype) > limit


def use_chunks(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    axes: str | None = None,
    chunks: Any = None,
    workers: int | None = None,
    cluster: str | None = None,
) -> bool:
    """Whether to restore/deconvolve ``src`` into ``dst`` chunk by chunk.

    Yes when chunks, workers or a cluster are asked for, when either side is
    OME-Zarr, or when the image is too large for memory
    (:func:`needs_chunks`).  Without the ``zarr`` extra (dask) the answer is
    no unless something was asked for, which is then a one-line error.

    Examples
    --------
    >>> use_chunks("a.tif", "a_restored.tif", chunks=512)
    True
    """
    from sharpscope.io import is_zarr_path

    asked = chunks is not None or workers is not None or cluster is not None
    asked = asked or is_zarr_path(src) or is_zarr_path(dst)
    try:
        import dask.array  # noqa: F401
    except ImportError:
        if asked:
            raise ConfigError(
                "chunked processing (--chunks, --workers, --cluster, OME-Zarr) needs dask: "
                "install sharpscope[zarr]"
            ) from None
        return False
    return asked or needs_chunks(src, axes)


def _yx_chunks(chunks: int | Sequence[int] | None) -> tuple[int, int]:
    if chunks is None:
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        vals = (int(chunks), int(chunks))
    else:
        vals = tuple(int(c) for c in chunks)
        if len(vals) != 2:
            raise ConfigError(f"chunks must be an int or a pair (y, x), got {chunks!r}")
    if min(vals) < 1:
        raise ConfigError(f"chunks must be positive, got {chunks!r}")
    return vals[0], vals[1]


def _axis_chunks(n: int, chunk: int, depth: int) -> tuple[int, ...]:
    """Chunks of ``chunk`` along an axis of ``n``, none smaller than ``depth``."""
    from dask.array.overlap import ensure_minimum_chunksize

    c = max(1, min(chunk, n))
    sizes = [c] * (n // c) + ([n % c] if n % c else [])
    if depth:
        sizes = list(ensure_minimum_chunksize(depth, tuple(sizes)))
    return tuple(sizes)


def _bounds(sizes: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.concatenate([[0], np.cumsum(sizes)]))


# ------------------------------------------------------------------ restoration


def _tile_plan(model: Any, tile, overlap, multiple: int, ph: int, pw: int):
    """The whole-image tile grid of :func:`sharpscope.tiling.predict_tiled`."""
    from sharpscope.tiling import tile_grid

    t_default, o_default = model._tile_defaults()
    tile = t_default if tile is None else tile
    overlap = o_default if overlap is None else overlap
    return tile_grid((ph, pw), tile, overlap, multiple)


def _local_axis(axis: Any, c0: int, c1: int, g0: int, size: int):
    """The tiles of ``axis`` touching ``[c0, c1)``, shifted to a block starting at ``g0``."""
    from sharpscope.tiling import Axis1D

    keep = [i for i, s in enumerate(axis.starts) if s < c1 and s + axis.tile > c0]
    return Axis1D(
        size,
        axis.tile,
        tuple(axis.starts[i] - g0 for i in keep),
        tuple(axis.windows[i] for i in keep),
    )


def _set_threads() -> None:
    """On a dask worker, torch uses the worker's threads (not every core)."""
    try:
        from distributed import get_worker

        n = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _restore_block(
    block: np.ndarray,
    model: Any,
    scales: Sequence[tuple[float, float]],
    ybounds: tuple[int, ...],
    xbounds: tuple[int, ...],
    depth: tuple[int, int],
    shape: tuple[int, int],
    ay: Any,
    ax: Any,
    channel_axis: bool,
    batch_size: int,
    device: str,
    tta: bool,
    out_dtype: Any,
    noises: Sequence[tuple[float, float] | None] = (),
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    from sharpscope.normalize import denormalize, normalize
    from sharpscope.restore import _to_dtype, network_function, resolve_device
    from sharpscope.tiling import _pad_to, _run_batch

    _set_threads()
    h, w = shape
    iy, ix = block_id[-2], block_id[-1]
    c0, c1 = ybounds[iy], ybounds[iy + 1]
    d0, d1 = xbounds[ix], xbounds[ix + 1]
    gy, gx = max(c0 - depth[0], 0), max(d0 - depth[1], 0)
    bh, bw = block.shape[-2:]
    if (gy + bh, gx + bw) != (min(c1 + depth[0], h), min(d1 + depth[1], w)):
        raise RuntimeError(f"block {block_id} has shape {block.shape}, not the planned halo")
    lo, hi = scales[block_id[0] if channel_axis else 0]
    noise = noises[block_id[0] if channel_axis else 0] if noises else None
    lead = block.shape[:-2]
    x = block.astype(np.float32) if block.dtype.kind == "b" else block
    planes = normalize(x, lo, hi).reshape(-1, bh, bw)
    # the image end is reflect-padded to the size multiple exactly as predict_tiled does
    ph = ay.size - gy if gy + bh == h else bh
    pw = ax.size - gx if gx + bw == w else bw
    if (ph, pw) != (bh, bw):
        if min(h, w) > 1:
            planes = _pad_to(planes, (ph, pw))
        else:
            widths = [(0, 0), (0, ph - bh), (0, pw - bw)]
            planes = np.pad(planes, widths, mode="symmetric")
    ly = _local_axis(ay, c0, c1, gy, ph)
    lx = _local_axis(ax, d0, d1, gx, pw)
    weight = np.zeros((ph, pw), dtype=np.float64)
    for ys, wy in zip(ly.starts, ly.windows, strict=True):
        for xs, wx in zip(lx.starts, lx.windows, strict=True):
            weight[ys : ys + ly.tile, xs : xs + lx.tile] += np.outer(wy, wx)
    n = planes.shape[0]
    acc = np.zeros((n, ph, pw), dtype=np.float32)
    dev = resolve_device(device)
    net = model.network.to(dev)
    # the whole image's noise level, measured once (as Model.predict does)
    fn = network_function(net, None, tta, noise=noise)

    batch: list = []
    for k in range(n):
        for jy, wy in enumerate(ly.windows):
            for jx, wx in enumerate(lx.windows):
                batch.append((k, jy, jx, np.outer(wy, wx).astype(np.float32)))
                if len(batch) == batch_size:
                    _run_batch(fn, batch, planes, acc, ly, lx, dev)
                    batch = []
    if batch:
        _run_batch(fn, batch, planes, acc, ly, lx, dev)
    crop = (slice(c0 - gy, c1 - gy), slice(d0 - gx, d1 - gx))
    out = acc[(slice(None), *crop)] / weight[crop].astype(np.float32)[None]
    if not np.isfinite(out).all():
        raise ModelFormatError(
            f"the network produced {int((~np.isfinite(out)).sum())} non-finite "
            "pixels; the model is broken for this input (nothing was written)"
        )
    out = denormalize(out, lo, hi).reshape(*lead, c1 - c0, d1 - d0)
    if np.dtype(out_dtype) != np.float32:
        out = _to_dtype(out, np.dtype(out_dtype))
    return out


def restore_array(
    model: Any,
    data: Any,
    axes: str,
    tile: int | Sequence[int] | None = None,
    overlap: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    tta: bool = False,
    dtype: str = "float32",
    chunks: int | Sequence[int] | None = None,
    compute: Callable[[list], list] | None = None,
    warn_range: bool = True,
    fc: float | None = None,
    modality: str | None = None,
):
    """Restore a (dask) array chunk by chunk, lazily; equals :meth:`Model.predict`.

    Parameters
    ----------
    model : sharpscope.restore.Model
        The network with its header (percentiles, tile defaults).
    data : dask.array.Array or numpy.ndarray
        The image, any axes with ``Y`` and ``X``.
    axes : str
        Axes of ``data``.
    tile, overlap, batch_size, device, tta, dtype, fc, modality
        As for :meth:`~sharpscope.restore.Model.predict`.
    chunks : int or (int, int), optional
        Chunk extent along Y and X (default :data:`DEFAULT_CHUNK`); every
        other axis is chunked one plane deep.  Chunks smaller than a tile
        are merged up to one tile.
    compute : callable, optional
        Runs the percentile passes (see :class:`Runner`).
    warn_range : bool
        Estimate the noise and resolution of each channel's middle plane (its
        central crop, read once) against the model's recorded training range and
        emit one :class:`~sharpscope.errors.RangeWarning` when outside, as
        :meth:`Model.predict` does.

    Returns
    -------
    dask.array.Array
        The restored image, same shape and axes, float32 (or the input's
        dtype with ``dtype='input'``); nothing is computed but the
        percentiles.

    Raises
    ------
    InputError
        Empty, constant or non-finite image.
    ConfigError
        Bad tiling, chunks or dtype.

    Examples
    --------
    >>> lazy = restore_array(model, dask_image, "ZYX", chunks=512)  # doctest: +SKIP
    >>> lazy[0].compute().shape  # doctest: +SKIP
    (4096, 4096)
    """
    import dask
    import dask.array as da

    from sharpscope.io import guess_axes, validate_axes
    from sharpscope.restore import DTYPES

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    x = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
    if dtype == "input" and x.dtype.kind == "b":
        raise ConfigError("dtype='input' cannot keep a boolean image; use float32")
    if x.ndim < 2:
        raise InputError(f"an image needs at least 2 dimensions (Y, X), got shape {x.shape}")
    if x.dtype.kind not in "buif":
        raise InputError(f"unsupported pixel type {x.dtype}")
    if x.size == 0:
        raise InputError(f"image is empty (shape {x.shape})")
    if batch_size is None:  # chunks are small: the in-memory default
        from sharpscope.restore import DEFAULT_BATCH

        batch_size = DEFAULT_BATCH
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    axes = guess_axes(x.ndim) if axes is None else validate_axes(axes, x.ndim)
    lead = [a for a in axes if a not in "YX"]
    if "C" in lead:
        lead.remove("C")
        lead.insert(0, "C")
    order = [axes.index(a) for a in [*lead, "Y", "X"]]
    work = da.transpose(x, order) if order != list(range(x.ndim)) else x
    h, w = work.shape[-2:]
    multiple = model.size_multiple
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    ay, ax = _tile_plan(model, tile, overlap, multiple, ph, pw)
    cy, cx = _yx_chunks(chunks)
    # halo: a tile touching a chunk lies within one tile of it (a tile as large as the
    # image makes the chunk the whole axis)
    dy, dx = min(ay.tile, h), min(ax.tile, w)
    ych, xch = _axis_chunks(h, cy, dy), _axis_chunks(w, cx, dx)
    dy, dx = (0 if len(ych) == 1 else dy), (0 if len(xch) == 1 else dx)
    work = work.rechunk((1,) * (work.ndim - 2) + (ych, xch))

    # whole-image percentiles per channel, as Model.predict computes them
    pmin, pmax = model.percentiles
    channel_axis = "C" in axes
    groups = [work[c] for c in range(work.shape[0])] if channel_axis else [work]
    stats = exact_percentiles(groups, [pmin, pmax], compute=compute)
    if min(s["min"] for s in stats) == max(s["max"] for s in stats):
        raise InputError(f"image is constant (every pixel is {stats[0]['min']:g}); nothing to restore")
    scales = []
    for s in stats:
        lo, hi = s["q"]
        if hi <= lo:  # e.g. a sparse image whose percentiles coincide
            lo, hi = s["min"], s["max"]
        scales.append((float(lo), float(hi)))

    # what Model.predict measures on each channel's middle plane: the central crop that
    # a noise-conditioned network's noise level and the range check are estimated on
    noises: list[tuple[float, ...] | None] = [None] * len(groups)
    conditioned = bool(getattr(model.network, "noise_input", False))
    # appended to each channel's noise level (optics-conditioned networks)
    extras = [() if o is None else tuple(float(v) for v in o) for o in model.optics(fc, modality, len(groups))]
    if conditioned or warn_range:
        from sharpscope.models.noisemap import crop_slices, image_noise_params, reference_plane
        from sharpscope.normalize import normalize
        from sharpscope.restore import RANGE_CROP

        ys, xs = crop_slices(h, w)
        run = compute or (lambda objs: list(dask.compute(*objs)))
        crops = run([g[(*reference_plane(g.shape), ys, xs)] for g in groups])
        checks = []
        for i, crop in enumerate(crops):
            crop = np.asarray(crop)
            crop = crop.astype(np.float32) if crop.dtype.kind == "b" else crop
            lo, hi = scales[i]
            if conditioned:
                noise = image_noise_params(normalize(crop, lo, hi))
                noises[i] = tuple(float(v) for v in noise) + extras[i]
            checks.append((crop[crop_slices(*crop.shape, RANGE_CROP)], lo, hi))
        message = model.range_message(checks) if warn_range else None
        if message is not None:
            import warnings

            from sharpscope.errors import RangeWarning

            warnings.warn(message, RangeWarning, stacklevel=2)

    out_dtype = np.dtype(np.float32) if dtype == "float32" else np.dtype(x.dtype)
    overlapped = da.overlap.overlap(work, depth={work.ndim - 2: dy, work.ndim - 1: dx}, boundary="none")
    model_key = dask.delayed(model, pure=True, name=f"sharpscope-model-{id(model):x}")
    restored = overlapped.map_blocks(
        _restore_block,
        model=model_key,
        scales=tuple(scales),
        ybounds=_bounds(ych),
        xbounds=_bounds(xch),
        depth=(dy, dx),
        shape=(h, w),
        ay=ay,
        ax=ax,
        channel_axis=channel_axis,
        batch_size=int(batch_size),
        device=str(device),
        tta=bool(tta),
        out_dtype=out_dtype,
        noises=tuple(noises),
        chunks=work.chunks,
        dtype=out_dtype,
        meta=np.empty((0,) * work.ndim, out_dtype),
        name="sharpscope-restore",
    )
    back = list(np.argsort(order))
    return da.transpose(restored, back) if back != list(range(x.ndim)) else restored


# ----------------------------------------------------------------- deconvolution


def _auto_choice(crop: np.ndarray, psf: np.ndarray, kwargs: dict[str, Any]) -> float:
    """What deconvolve's automatic rule picks on one plane's crop (count or balance)."""
    from sharpscope.deconv import deconvolve

    _set_threads()
    _, info = deconvolve(crop, psf, return_info=True, **kwargs)
    if kwargs["method"] == "wiener":
        return float(info.balance)
    return float(max(1, int(info.iterations[0])))


def _deconv_block(
    block: np.ndarray,
    psf: np.ndarray,
    bounds: tuple[tuple[int, ...], ...],
    depth: tuple[int, ...],
    kwargs: dict[str, Any],
    per_plane: tuple[float, ...] | None = None,
    lead_shape: tuple[int, ...] = (),
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    from sharpscope.deconv import deconvolve

    _set_threads()
    nd = len(bounds)
    kwargs = dict(kwargs)
    if per_plane is not None:  # the automatic choice of this plane (chunks are one plane deep)
        plane = int(np.ravel_multi_index(block_id[: block.ndim - nd], lead_shape)) if lead_shape else 0
        if kwargs["method"] == "wiener":
            kwargs["balance"] = per_plane[plane]
        else:
            kwargs["iterations"] = int(per_plane[plane])
    out = deconvolve(block, psf, **kwargs)
    crop = [slice(None)] * (block.ndim - nd)
    for j, (b, d) in enumerate(zip(bounds, depth, strict=True)):
        i = block_id[block.ndim - nd + j]
        c0, c1 = b[i], b[i + 1]
        g0 = max(c0 - d, 0)
        crop.append(slice(c0 - g0, c1 - g0))
    return np.ascontiguousarray(out[tuple(crop)])


def deconvolve_array(
    data: Any,
    psf: Any,
    method: str = "rl",
    iterations: int | None = None,
    axes: str | None = None,
    *,
    boundary: str | None = None,
    tv_weight: float = 0.002,
    balance: float | None = None,
    alpha_max: float = 0.95,
    device: str = "cpu",
    chunks: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    compute: Callable[[list], list] | None = None,
):
    """Deconvolve a (dask) array chunk by chunk with a halo, lazily.

    Parameters
    ----------
    data : dask.array.Array or numpy.ndarray
        The image (see :func:`sharpscope.deconv.deconvolve` for the layout).
    psf, method, iterations, axes, boundary, tv_weight, balance, alpha_max, device
        As for :func:`~sharpscope.deconv.deconvolve`.  ``iterations=None``
        (RL family) runs the discrepancy principle on the central crop (at
        most 1024 pixels a side) of every plane (volume for a 3-D PSF) and
        uses that plane's count for all its chunks (the in-memory count when
        the plane is no larger than the crop); Wiener with a 3-D PSF likewise
        takes each volume's balance from its crop, with a 2-D PSF it needs
        ``balance``.
    chunks : int or (int, int), optional
        Chunk extent along Y and X (default :data:`DEFAULT_CHUNK`); Z of a
        3-D PSF is chunked like Y, every other axis one plane deep.
    halo : int or sequence of int, optional
        Pixels added on each side of a chunk per spatial axis (default four
        PSF extents for the RL family, eight for Wiener).  With ``'rl'`` the
        result is within 1e-4 of the in-memory one's range
        (tests/test_parallel.py; 1e-5 to 4e-5 measured with 10-30
        iterations), and so is ``'rl-tv'`` (4e-6 to 2e-5 measured; every
        chunk is scaled by the whole image's maximum, which its TV smoothing
        is relative to, at the cost of one reduction pass over the data);
        ``'rl-accel'`` is refused: its extrapolation step is computed over the
        whole plane, so chunks cannot reproduce it.
    compute : callable, optional
        Runs the automatic choices (see :class:`Runner`).

    Returns
    -------
    (dask.array.Array, str)
        The lazy result (float32, the input's shape and axes) and a line
        saying what was chosen (iterations, halo).

    Raises
    ------
    ConfigError
        ``'wiener'`` with a 2-D PSF and no ``balance``; bad options.

    Examples
    --------
    >>> lazy, how = deconvolve_array(dask_image, psf, "rl", 20, "YX", chunks=512)  # doctest: +SKIP
    """
    import dask
    import dask.array as da

    from sharpscope.deconv import METHODS, _check_psf, _layout

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    x = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
    if x.size == 0:
        raise InputError("image is empty")
    h = _check_psf(psf)
    nd = h.ndim
    perm = _layout(axes, x.ndim, nd)
    work = da.transpose(x, perm) if perm != list(range(x.ndim)) else x
    spatial = work.shape[-nd:]
    if any(k > n for k, n in zip(h.shape, spatial, strict=True)):
        raise InputError(f"PSF {h.shape} is larger than the image {tuple(spatial)}")
    how = []
    if method == "rl-accel":
        raise ConfigError(
            "rl-accel cannot run chunk by chunk (its extrapolation step is computed over the "
            "whole plane); use --method rl or rl-tv, or run in memory"
        )
    if method == "wiener" and balance is None and nd == 2:
        raise ConfigError(
            "chunked wiener needs an explicit balance (its automatic filter uses the "
            "spectrum of the whole plane); pass balance or run in memory"
        )
    lead_shape = tuple(int(n) for n in work.shape[:-nd])
    opts = {"boundary": boundary, "tv_weight": tv_weight, "alpha_max": alpha_max, "device": device}
    run = compute or (lambda objs: list(dask.compute(*objs)))
    if method == "rl-tv" and tv_weight > 0:
        # the TV smoothing is relative to the image's maximum: every chunk (and every
        # automatic choice) takes the whole image's, as in memory
        peak = float(np.float32(run([work.max()])[0]))
        if peak > 0:
            opts["scale"] = peak
    per_plane = None
    if (iterations is None and method != "wiener") or (method == "wiener" and balance is None):
        sl = tuple(
            slice(max(0, (n - _AUTO_CROP) // 2), max(0, (n - _AUTO_CROP) // 2) + _AUTO_CROP)
            for n in spatial
        )
        auto = {"method": method, "iterations": None, "balance": None, **opts}
        tasks = [
            dask.delayed(_auto_choice, pure=True)(work[idx + sl], h, auto)
            for idx in np.ndindex(*lead_shape)
        ]
        per_plane = tuple(float(v) for v in run(tasks))
        if method == "wiener":
            how.append(f"wiener balance {min(per_plane):.3g}-{max(per_plane):.3g} (central crops)")
        else:
            lo_n, hi_n = int(min(per_plane)), int(max(per_plane))
            count = f"{lo_n}" if lo_n == hi_n else f"{lo_n}-{hi_n}"
            how.append(f"{count} iterations (discrepancy principle on each plane's central crop)")
    cy, cx = _yx_chunks(chunks)
    chunk_sp = (cy,) * (nd - 2) + (cy, cx)
    if halo is None:
        factor = 2 * _DECONV_HALO if method == "wiener" else _DECONV_HALO
        depth = tuple(factor * k for k in h.shape)
    elif isinstance(halo, (int, np.integer)):
        depth = (int(halo),) * nd
    else:
        depth = tuple(int(v) for v in halo)
        if len(depth) != nd:
            raise ConfigError(f"halo needs one value per spatial axis ({nd}), got {halo!r}")
    if min(depth) < 0:
        raise ConfigError(f"halo must be >= 0, got {halo!r}")
    sizes = []
    for n, c, d in zip(spatial, chunk_sp, depth, strict=True):
        d = min(d, n)
        sizes.append(_axis_chunks(n, c, d if c < n else 0))
    depth = tuple(0 if len(s) == 1 else min(d, n) for s, d, n in zip(sizes, depth, spatial, strict=True))
    work = work.rechunk((1,) * (work.ndim - nd) + tuple(sizes))
    lead_nd = work.ndim - nd
    overlapped = da.overlap.overlap(
        work, depth={lead_nd + j: d for j, d in enumerate(depth)}, boundary="none"
    )
    kwargs = {"method": method, "iterations": iterations, "balance": balance, **opts}
    out = overlapped.map_blocks(
        _deconv_block,
        psf=h,
        bounds=tuple(_bounds(s) for s in sizes),
        depth=depth,
        kwargs=kwargs,
        per_plane=per_plane,
        lead_shape=lead_shape,
        chunks=work.chunks,
        dtype=np.float32,
        meta=np.empty((0,) * work.ndim, np.float32),
        name="sharpscope-deconvolve",
    )
    how.append(f"chunks {'x'.join(str(s[0]) for s in sizes)}, halo {'x'.join(map(str, depth))}")
    back = list(np.argsort(perm))
    out = da.transpose(out, back) if back != list(range(x.ndim)) else out
    return out, "; ".join(how)


# ---------------------------------------------------------------------- files


def _check_paths(src: Path, dst: Path) -> None:
    if not src.exists():
        raise InputError(f"{src}: no such file")
    if dst.resolve() == src.resolve():
        raise InputError(f"{dst}: output would overwrite its input")


def _write(dst: Path, result: Any, img: Any, runner: Runner, chunks) -> Path:
    """OME-Zarr chunk by chunk; any other format computed in memory, then written."""
    from sharpscope.io import is_zarr_path, write_image
    from sharpscope.io.ome_zarr import DEFAULT_VERSION, write_ome_zarr
    from sharpscope.runtime import check_memory

    if is_zarr_path(dst):
        version = img.metadata.get("ngff_version")
        version = version if version in ("0.4", "0.5") else DEFAULT_VERSION
        names = img.metadata.get("channel_names")
        # the computed chunks (one plane deep, the first extent along Y and X): each task
        # writes whole zarr chunks, nothing is computed twice
        zchunks = tuple(1 if a not in "YX" else c[0] for a, c in zip(img.axes, result.chunks, strict=True))
        return write_ome_zarr(
            dst, result, img.axes, img.pixel_size, channel_names=names, chunks=zchunks,
            version=version, compute=runner,
        )
    nbytes = int(np.prod(result.shape, dtype=np.float64)) * result.dtype.itemsize
    check_memory(nbytes, f"writing {dst.name} (only .ome.zarr outputs are written chunk by chunk)")
    blocks = list(result.to_delayed().ravel())
    values = runner(blocks)
    out = np.empty(result.shape, result.dtype)
    for (idx, val) in zip(np.ndindex(*result.numblocks), values, strict=True):
        sl = tuple(
            slice(sum(result.chunks[d][:i]), sum(result.chunks[d][: i + 1])) for d, i in enumerate(idx)
        )
        out[sl] = val
    return write_image(dst, out, img.axes, pixel_size=img.pixel_size)


def restore_dask(
    model: Any,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    axes: str | None = None,
    chunks: int | Sequence[int] | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    retries: int = 2,
    progress: bool = False,
    **kw: Any,
) -> Path:
    """Restore an image file chunk by chunk (locally or on a dask cluster) and write it.

    Parameters
    ----------
    model : Model, str or path-like
        A loaded :class:`~sharpscope.restore.Model` or what
        :func:`~sharpscope.restore.load_model` takes.
    input_path : path-like
        Any image :func:`~sharpscope.io.read_image` reads; OME-Zarr and TIFF
        are read lazily.
    output_path : path-like
        ``.ome.zarr`` (written chunk by chunk, a pyramid, same NGFF version
        as an OME-Zarr input, else 0.4) or any other format (computed in
        memory first).
    axes : str, optional
        Axes override.
    chunks : int or (int, int), optional
        Chunk extent along Y and X (default :data:`DEFAULT_CHUNK`).
    workers : int, optional
        Start a local cluster of this many processes (:func:`dask_client`).
    cluster : str, optional
        Address of a running dask scheduler.
    retries : int
        Automatic retries of a failed task on a cluster.
    progress : bool
        Progress bar on stderr (one step per chunk).
    **kw
        ``tile``, ``overlap``, ``batch_size``, ``device``, ``tta``, ``dtype``,
        ``fc``, ``modality`` as for :meth:`~sharpscope.restore.Model.predict`.

    Returns
    -------
    pathlib.Path
        ``output_path``.

    Raises
    ------
    SharpscopeError
        The message names the input.

    Examples
    --------
    >>> restore_dask("widefield-2d", "big.ome.zarr", "out.ome.zarr", workers=2)  # doctest: +SKIP
    PosixPath('out.ome.zarr')
    """
    import warnings

    from sharpscope.errors import RangeWarning
    from sharpscope.io import read_image
    from sharpscope.restore import Model, load_model

    src, dst = Path(input_path), Path(output_path)
    _check_paths(src, dst)
    known = {"tile", "overlap", "batch_size", "device", "tta", "dtype", "desc", "warn_range", "fc", "modality"}
    unknown = set(kw) - known
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}")
    desc = kw.pop("desc", None) or src.name
    device = kw.pop("device", "cpu")
    if not isinstance(model, Model):
        model = load_model(model, device="cpu")
    img = read_image(src, axes=axes, lazy=True)
    with dask_client(workers=workers, cluster=cluster) as client:
        runner = Runner(client, retries=retries, progress=progress, desc=desc)
        stats = Runner(client, retries=retries)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RangeWarning)
                result = restore_array(
                    model, img.data, img.axes, chunks=chunks, device=device, compute=stats, **kw
                )
            for w in caught:  # the range warning names the file, as the in-memory path's does
                if issubclass(w.category, RangeWarning):
                    warnings.warn(f"{src}: {w.message}", RangeWarning, stacklevel=3)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            return _write(dst, result, img, runner, chunks)
        except SharpscopeError as exc:
            raise type(exc)(f"{src}: {exc}") from None


def deconvolve_dask(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    psf: Any,
    method: str = "rl",
    iterations: int | None = None,
    axes: str | None = None,
    chunks: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    retries: int = 2,
    progress: bool = False,
    **kw: Any,
) -> tuple[Path, str]:
    """Deconvolve an image file chunk by chunk (locally or on a dask cluster) and write it.

    Parameters
    ----------
    input_path, output_path : path-like
        As for :func:`restore_dask`.
    psf : array_like or path-like
        The PSF, or an image file holding it.
    method, iterations, axes
        As for :func:`sharpscope.deconv.deconvolve` (see
        :func:`deconvolve_array` for ``iterations=None``).
    chunks, halo
        As for :func:`deconvolve_array`.
    workers, cluster, retries, progress
        As for :func:`restore_dask`.
    **kw
        ``boundary``, ``tv_weight``, ``balance``, ``alpha_max``, ``device``.

    Returns
    -------
    (pathlib.Path, str)
        The written output and a line saying what was chosen.

    Examples
    --------
    >>> deconvolve_dask("big.ome.zarr", "rl.ome.zarr", "psf.tif", iterations=20)  # doctest: +SKIP
    (PosixPath('rl.ome.zarr'), 'chunks 1024x1024, halo 36x36')
    """
    from sharpscope.io import read_image

    src, dst = Path(input_path), Path(output_path)
    _check_paths(src, dst)
    if isinstance(psf, (str, os.PathLike)):
        psf = read_image(psf).data
    desc = kw.pop("desc", None) or src.name
    img = read_image(src, axes=axes, lazy=True)
    with dask_client(workers=workers, cluster=cluster) as client:
        runner = Runner(client, retries=retries, progress=progress, desc=desc)
        try:
            result, how = deconvolve_array(
                img.data, psf, method, iterations, img.axes, chunks=chunks, halo=halo,
                compute=Runner(client, retries=retries), **kw,
            )
            return _write(dst, result, img, runner, chunks), how
        except SharpscopeError as exc:
            raise type(exc)(f"{src}: {exc}") from None
