"""Chunked (dask) restoration and deconvolution: equality with the in-memory paths, clusters."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("distributed")

import dask.array as da  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from sharpscope.deconv import deconvolve  # noqa: E402
from sharpscope.errors import ConfigError, InputError  # noqa: E402
from sharpscope.io import read_image, write_image  # noqa: E402
from sharpscope.io.ome_zarr import write_ome_zarr  # noqa: E402
from sharpscope.parallel import (  # noqa: E402
    dask_client,
    deconvolve_array,
    deconvolve_dask,
    exact_percentiles,
    needs_chunks,
    restore_array,
    restore_dask,
)
from sharpscope.restore import Model  # noqa: E402

RNG = np.random.default_rng(7)
TILING = {"tile": 32, "overlap": 8}


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - ref).max() / (ref.max() - ref.min()))


def _cells(shape, dtype=np.uint16) -> np.ndarray:
    base = RNG.random(shape) * 300 + 50
    base[..., ::7, ::5] += 2000
    return base.astype(dtype)


# ------------------------------------------------------------------ percentiles


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64", "bool"])
def test_streaming_percentiles_are_exact(dtype):
    x = RNG.normal(100, 40, (3, 37, 29))
    x = x > 100 if dtype == "bool" else x.astype(dtype)
    q = [0, 1, 37.5, 99.8, 100]
    res = exact_percentiles([da.from_array(x, chunks=(1, 10, 13))], q)[0]
    np.testing.assert_allclose(res["q"], np.percentile(x.astype(float), q), rtol=1e-12, atol=0)
    assert res["min"] == x.min() and res["max"] == x.max() and res["n"] == x.size


def test_streaming_percentiles_per_group_and_bad_pixels():
    a, b = RNG.random((20, 20)).astype(np.float32), RNG.random((20, 20)).astype(np.float32) * 9
    res = exact_percentiles([da.from_array(a, chunks=7), da.from_array(b, chunks=7)], [2, 98])
    np.testing.assert_allclose(res[1]["q"], np.percentile(b, [2, 98]), rtol=1e-12)
    a[3, 4] = np.nan
    with pytest.raises(InputError, match="1 NaN/Inf"):
        exact_percentiles([da.from_array(a, chunks=7)], [1, 99])


# ------------------------------------------------------------- restore equality


@pytest.mark.parametrize(
    "axes,shape", [("YX", (90, 100)), ("CYX", (2, 70, 76)), ("ZYX", (2, 66, 72))]
)
def test_chunked_restore_equals_predict(tiny_model, axes, shape):
    img = _cells(shape)
    ref = tiny_model.predict(img, axes=axes, warn_range=False, **TILING)
    lazy = restore_array(tiny_model, da.from_array(img), axes, chunks=32, **TILING)
    assert lazy.shape == img.shape and lazy.numblocks[-1] > 1 and lazy.numblocks[-2] > 1
    out = lazy.compute(scheduler="synchronous")
    assert out.dtype == np.float32
    assert _rel_err(out, ref) < 1e-5  # the same tiles and blending: rounding only


def test_chunked_restore_dtype_input_and_constant_image(tiny_model):
    img = _cells((40, 48))
    ref = tiny_model.predict(img, dtype="input", warn_range=False, **TILING)
    out = restore_array(tiny_model, img, "YX", dtype="input", chunks=16, **TILING).compute()
    assert out.dtype == np.uint16 and np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(InputError, match="constant"):
        restore_array(tiny_model, np.ones((40, 40), np.float32), "YX", chunks=16, **TILING)


# ------------------------------------------------------------- deconvolution


def _blurred(shape=(2, 96, 88)):
    g = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    psf = np.outer(g, g)
    obj = np.full(shape, 2.0)
    obj[..., ::9, ::7] = 60.0
    obj[-1] *= 3
    h, w = shape[-2:]
    pads = [((n - 11) // 2 + (n - 11) % 2, (n - 11) // 2) for n in (h, w)]
    otf = np.fft.rfft2(np.fft.ifftshift(np.pad(psf / psf.sum(), pads)))
    blurred = np.fft.irfft2(np.fft.rfft2(obj) * otf, s=shape[-2:])
    return RNG.poisson(np.clip(blurred, 0, None)).astype(np.float32), psf


@pytest.mark.parametrize("method", ["rl", "rl-tv"])
@pytest.mark.parametrize("iterations", [15, None])
def test_chunked_richardson_lucy_equals_deconvolve(method, iterations):
    # two planes of different maxima, 3 x 3 chunks each, four of them on image corners:
    # rl-tv's smoothing is relative to the whole stack's maximum and its TV term sees the
    # extended object domain only, so chunks match the in-memory path as closely as rl
    img, psf = _blurred((2, 160, 150))
    ref, info = deconvolve(img, psf, method, iterations, "ZYX", return_info=True)
    lazy, how = deconvolve_array(img, psf, method, iterations, "ZYX", chunks=48)  # halo 4 x 11
    assert lazy.numblocks == (2, 3, 3)
    assert _rel_err(lazy.compute(scheduler="synchronous"), ref) < 1e-4  # 4e-6 to 1e-5 measured
    if iterations is None:  # each plane's own automatic count, as in memory
        assert f"{min(info.iterations)}-{max(info.iterations)} iterations" in how


def test_a_piece_deconvolved_at_the_whole_image_scale():
    img, psf = _blurred((1, 40, 40))
    plain = deconvolve(img, psf, "rl-tv", 5, "ZYX")
    assert np.array_equal(deconvolve(img, psf, "rl-tv", 5, "ZYX", scale=float(img.max())), plain)
    brighter = deconvolve(img, psf, "rl-tv", 5, "ZYX", scale=4 * float(img.max()))
    assert not np.array_equal(brighter, plain)  # the TV smoothing follows the scale
    with pytest.raises(ConfigError, match="scale must be"):
        deconvolve(img, psf, "rl-tv", 5, "ZYX", scale=0.0)


def test_chunked_rl_accel_is_refused():
    # its extrapolation step is global per plane: chunks would silently differ by percents
    img, psf = _blurred((1, 40, 40))
    with pytest.raises(ConfigError, match="rl-accel cannot run chunk by chunk"):
        deconvolve_array(img, psf, "rl-accel", 10, axes="ZYX", chunks=16)


def test_chunked_wiener_needs_a_balance():
    img, psf = _blurred((1, 40, 40))
    with pytest.raises(ConfigError, match="explicit balance"):
        deconvolve_array(img, psf, "wiener", axes="ZYX", chunks=16)


# ----------------------------------------------------------- clusters and files


def test_local_cluster_starts_fast_and_shuts_down_cleanly():
    psutil = pytest.importorskip("psutil")
    t0 = time.perf_counter()
    with dask_client(workers=2) as client:
        started = time.perf_counter() - t0
        pids = list(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        assert client.submit(lambda: torch.get_num_threads()).result() >= 1
    assert started < 30, started  # fork: well under a second on an idle machine
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    ):
        time.sleep(0.1)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive


def test_client_options_are_checked():
    with pytest.raises(ConfigError, match="not both"):
        with dask_client(workers=2, cluster="tcp://127.0.0.1:1"):
            pass
    with pytest.raises(ConfigError, match="positive"):
        with dask_client(workers=0):
            pass
    with dask_client() as client:
        assert client is None


class _FailOnce(nn.Module):
    """Wraps a network; the first call (over all processes) fails, or every call."""

    def __init__(self, net: nn.Module, flag: Path, always: bool = False):
        super().__init__()
        self.net, self.flag, self.always = net, str(flag), always
        self.size_multiple = net.size_multiple

    def forward(self, x):
        if self.always:
            raise RuntimeError("simulated worker failure")
        try:
            fd = os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.net(x)
        os.close(fd)
        raise RuntimeError("simulated transient failure")


def test_restore_ome_zarr_on_a_local_cluster_with_a_retry(tiny_model, tmp_path):
    img = _cells((2, 40, 52))
    src = write_ome_zarr(tmp_path / "big.ome.zarr", img, "CYX", {"X": 0.1, "Y": 0.1},
                         channel_names=["dapi", "gfp"], version="0.5")
    flaky = Model(tiny_model.header, _FailOnce(tiny_model.network, tmp_path / "failed"))
    out = restore_dask(flaky, src, tmp_path / "out.ome.zarr", chunks=20, workers=2, retries=2,
                       **TILING)
    assert (tmp_path / "failed").exists()  # a task failed once and was retried
    res = read_image(out)
    assert res.axes == "CYX" and res.pixel_size == {"X": 0.1, "Y": 0.1}
    assert res.metadata["channel_names"] == ["dapi", "gfp"] and res.metadata["ngff_version"] == "0.5"
    ref = tiny_model.predict(img, axes="CYX", warn_range=False, **TILING)
    assert _rel_err(res.data, ref) < 1e-5


def test_a_failed_run_leaves_no_output(tiny_model, tmp_path):
    tmp_path = tmp_path / "run"
    src = write_image(tmp_path / "in.tif", _cells((40, 40)), "YX")
    broken = Model(tiny_model.header, _FailOnce(tiny_model.network, tmp_path / "f", always=True))
    for dst in ("out.ome.zarr", "out.tif"):
        with pytest.raises(RuntimeError, match="simulated worker failure"):
            restore_dask(broken, src, tmp_path / dst, chunks=16, **TILING)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_restore_and_deconvolve_files_in_process(tiny_model, tmp_path, capsys):
    img = _cells((3, 36, 44))
    src = write_image(tmp_path / "stack.tif", img, "ZYX", {"X": 0.2, "Y": 0.2})
    out = restore_dask(tiny_model, src, tmp_path / "r.ome.zarr", chunks=16, progress=True,
                       **TILING)
    assert "chunk" in capsys.readouterr().err  # the progress bar
    ref = tiny_model.predict(img, axes="ZYX", warn_range=False, **TILING)
    res = read_image(out)
    assert res.axes == "ZYX" and res.pixel_size == {"X": 0.2, "Y": 0.2}
    assert _rel_err(res.data, ref) < 1e-5
    tif = restore_dask(tiny_model, src, tmp_path / "r.tif", chunks=16, **TILING)
    assert _rel_err(read_image(tif).data, ref) < 1e-5

    blurred, psf = _blurred((2, 96, 80))
    src = write_image(tmp_path / "b.tif", blurred, "ZYX")
    write_image(tmp_path / "psf.tif", psf.astype(np.float32), "YX")
    path, how = deconvolve_dask(src, tmp_path / "d.ome.zarr", tmp_path / "psf.tif",
                                iterations=10, chunks=32, halo=22)
    ref = deconvolve(blurred, psf, "rl", 10, "ZYX")
    assert "halo 22x22" in how and _rel_err(read_image(path).data, ref) < 1e-4
    with pytest.raises(InputError, match="overwrite its input"):
        restore_dask(tiny_model, src, src)


def test_chunks_are_chosen_by_size(tmp_path):
    src = write_image(tmp_path / "a.tif", _cells((64, 64)), "YX")
    assert not needs_chunks(src)
    assert needs_chunks(src, budget=64 * 64)
    assert needs_chunks(write_ome_zarr(tmp_path / "a.ome.zarr", _cells((8, 8)), "YX"))


# ----------------------------------------------------------------- command line


def test_command_line_restore_ome_zarr_with_workers(tiny_model, tiny_model_path, tmp_path, capsys):
    from sharpscope.cli import main

    img = _cells((2, 48, 56))
    src = write_ome_zarr(tmp_path / "big.ome.zarr", img, "CYX", {"X": 0.3, "Y": 0.3},
                         channel_names=["a", "b"])
    out = tmp_path / "out.ome.zarr"
    argv = ["restore", str(src), "-o", str(out), "--model", str(tiny_model_path), "--workers", "2",
            "--tile", "32", "--overlap", "8", "--device", "cpu", "--no-range-check"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    res = read_image(out)
    ref = tiny_model.predict(img, axes="CYX", warn_range=False, **TILING)
    assert res.metadata["channel_names"] == ["a", "b"] and _rel_err(res.data, ref) < 1e-5
    # again into a folder: the store keeps its kind; an existing result needs --overwrite
    assert main([*argv[:2], "-o", str(tmp_path / "folder") + "/", *argv[4:], "--chunks", "24"]) == 0
    assert (tmp_path / "folder" / "big_restored.ome.zarr").is_dir()
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_command_line_deconvolve_in_chunks(tmp_path, capsys):
    from sharpscope.cli import main

    blurred, psf = _blurred((1, 96, 88))
    src = write_image(tmp_path / "b.tif", blurred[0], "YX")
    write_image(tmp_path / "psf.tif", psf.astype(np.float32), "YX")
    out = tmp_path / "d.tif"
    assert main(["deconvolve", str(src), "-o", str(out), "--psf", str(tmp_path / "psf.tif"),
                 "--iterations", "10", "--chunks", "48,44", "--device", "cpu"]) == 0
    assert "chunks 48x44, halo 44x44" in capsys.readouterr().err
    ref = deconvolve(blurred[0], psf, "rl", 10)
    assert _rel_err(read_image(out).data, ref) < 1e-4


@pytest.mark.parametrize("module", ["sharpscope.parallel", "sharpscope.io.ome_zarr",
                                    "sharpscope.io.atomic"])
def test_examples_run(module, tmp_path, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_restore_on_a_running_scheduler_by_address(tiny_model, tmp_path):
    from distributed import LocalCluster

    img = _cells((40, 44))
    src = write_image(tmp_path / "in.tif", img, "YX")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        out = restore_dask(tiny_model, src, tmp_path / "out.ome.zarr", chunks=32,
                           cluster=cluster.scheduler_address, **TILING)
        assert len(cluster.scheduler.workers) == 1  # the cluster outlives the run
    ref = tiny_model.predict(img, warn_range=False, **TILING)
    assert _rel_err(read_image(out).data, ref) < 1e-5


def test_chunked_restore_warns_like_the_in_memory_path(tiny_model, tmp_path):
    import warnings

    from sharpscope.errors import RangeWarning
    from test_restore import RANGE, _widefield

    tiny_model.header.valid_range = RANGE
    noisy = np.stack([_widefield(fc=0.2, gain=2.0)] * 2)

    def caught(fn, *args, **kw):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            fn(*args, **kw)
        return [str(w.message) for w in got if issubclass(w.category, RangeWarning)]

    expect = tiny_model.check_range(noisy, axes="ZYX")
    assert expect is not None
    lazy_msgs = caught(restore_array, tiny_model, da.from_array(noisy), "ZYX", chunks=32, **TILING)
    assert lazy_msgs == [expect]  # the same estimate, read from the same crop, once
    assert caught(restore_array, tiny_model, da.from_array(noisy), "ZYX", chunks=32, warn_range=False, **TILING) == []
    ok = _widefield(fc=0.2, gain=0.01)
    assert caught(restore_array, tiny_model, da.from_array(ok), "YX", chunks=32, **TILING) == []
    # from a file: the warning names it
    src = tmp_path / "noisy.ome.zarr"
    write_ome_zarr(src, noisy, "ZYX")
    msgs = caught(restore_dask, tiny_model, src, tmp_path / "out.ome.zarr", chunks=32, workers=None, **TILING)
    assert msgs == [f"{src}: {expect}"]
