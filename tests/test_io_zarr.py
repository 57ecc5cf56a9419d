"""OME-Zarr reading and writing (NGFF 0.4 and 0.5), lazy TIFF reading, atomic stores."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("dask.array")

import dask.array as da  # noqa: E402
import tifffile  # noqa: E402
import zarr  # noqa: E402

from sharpscope.errors import AxesError, InputError  # noqa: E402
from sharpscope.io import is_image_file, read_image, write_image  # noqa: E402
from sharpscope.io.ome_zarr import open_ome_zarr, pyramid_levels, write_ome_zarr  # noqa: E402

RNG = np.random.default_rng(3)


def _image(shape=(2, 3, 64, 80), dtype=np.uint16):
    return (RNG.random(shape) * 4000).astype(dtype)


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_round_trip_keeps_axes_pixel_sizes_channel_names_and_writes_a_pyramid(tmp_path, version):
    data = _image()
    dest = tmp_path / "img.ome.zarr"
    px = {"Z": 0.5, "Y": 0.1, "X": 0.1}
    write_ome_zarr(dest, data, "CZYX", px, channel_names=["dapi", "gfp"], levels=3, version=version,
                   chunks=(1, 1, 32, 32))
    img = read_image(dest)
    assert img.axes == "CZYX" and img.pixel_size == px
    assert img.metadata["channel_names"] == ["dapi", "gfp"]
    assert img.metadata["ngff_version"] == version and img.metadata["levels"] == 3
    np.testing.assert_array_equal(img.data, data)
    # the pyramid: 2x2 means over Y and X, scales doubling
    for k, shape in enumerate([(2, 3, 64, 80), (2, 3, 32, 40), (2, 3, 16, 20)]):
        arr, axes, level_px, _ = open_ome_zarr(dest, level=k)
        assert arr.shape == shape and axes == "CZYX"
        assert level_px == {"Z": 0.5, "Y": 0.1 * 2**k, "X": 0.1 * 2**k}
    s1 = open_ome_zarr(dest, level=1)[0][...]
    expect = data.astype(np.float64).reshape(2, 3, 32, 2, 40, 2).mean(axis=(3, 5))
    np.testing.assert_array_equal(s1, np.rint(expect).astype(np.uint16))
    # the storage the version asks for
    if version == "0.4":
        attrs = json.loads((dest / ".zattrs").read_text())
        assert attrs["multiscales"][0]["version"] == "0.4"
        assert json.loads((dest / "s0" / ".zarray").read_text())["dimension_separator"] == "/"
    else:
        meta = json.loads((dest / "zarr.json").read_text())
        assert meta["zarr_format"] == 3 and meta["attributes"]["ome"]["version"] == "0.5"
        assert json.loads((dest / "s0" / "zarr.json").read_text())["dimension_names"] == list("czyx")


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_library_reads_what_we_write(tmp_path, version):
    ome_io = pytest.importorskip("ome_zarr.io")
    ome_reader = pytest.importorskip("ome_zarr.reader")
    dest = tmp_path / "img.ome.zarr"
    write_ome_zarr(dest, _image((2, 48, 40)), "CYX", {"X": 0.2, "Y": 0.2},
                   channel_names=["a", "b"], levels=2, version=version)
    node = list(ome_reader.Reader(ome_io.parse_url(str(dest)))())[0]
    assert [tuple(d.shape) for d in node.data] == [(2, 48, 40), (2, 24, 20)]
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "y", "x"]
    assert node.metadata["channel_names"] == ["a", "b"]
    assert node.metadata["coordinateTransformations"][1][0]["scale"] == [1.0, 0.4, 0.4]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_reads_what_the_ome_zarr_library_writes(tmp_path, version):
    ome_io = pytest.importorskip("ome_zarr.io")
    writer = pytest.importorskip("ome_zarr.writer")
    fmt_mod = pytest.importorskip("ome_zarr.format")
    fmt = fmt_mod.FormatV04() if version == "0.4" else fmt_mod.FormatV05()
    data = _image((3, 64, 64))
    path = tmp_path / "theirs.ome.zarr"
    root = zarr.group(store=ome_io.parse_url(str(path), mode="w", fmt=fmt).store,
                      zarr_format=fmt.zarr_format)
    axes = [{"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"}]
    transforms = [[{"type": "scale", "scale": [0.3, 65.0 * 2**k, 65.0 * 2**k]}] for k in range(5)]
    writer.write_image(data, root, axes=axes, fmt=fmt, coordinate_transformations=transforms)
    img = read_image(path)
    assert img.axes == "ZYX" and img.metadata["dataset_paths"][0] == "s0"
    assert img.pixel_size == pytest.approx({"Z": 0.3, "Y": 0.065, "X": 0.065})
    np.testing.assert_array_equal(img.data, data)


def test_dataset_paths_come_from_the_metadata(tmp_path):
    path = tmp_path / "old.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = _image((16, 24))
    root.create_array("full", data=data)
    root.create_array("half", data=data[::2, ::2])
    root.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [
            {"path": "full", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]},
            {"path": "half", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 2.0]}]},
        ],
    }]
    img = read_image(path)
    assert img.axes == "YX" and img.pixel_size == {}  # scale 1 without a unit: uncalibrated
    np.testing.assert_array_equal(img.data, data)
    assert open_ome_zarr(path, level=1)[0].shape == (8, 12)
    with pytest.raises(InputError, match="no pyramid level 2"):
        open_ome_zarr(path, level=2)


def test_axes_are_stored_in_ngff_order(tmp_path):
    data = _image((3, 2, 16, 20))
    dest = write_image(tmp_path / "x.ome.zarr", data, "ZCYX", {"Z": 1.0, "X": 0.5, "Y": 0.5},
                       channel_names=["a", "b"])
    img = read_image(dest)
    assert img.axes == "CZYX"
    np.testing.assert_array_equal(img.data, np.transpose(data, (1, 0, 2, 3)))
    assert img.metadata["channel_names"] == ["a", "b"]


def test_write_image_and_lazy_read_image(tmp_path):
    data = da.from_array(_image((4, 40, 40)).astype(np.float32), chunks=(1, 20, 20))
    dest = write_image(tmp_path / "lazy.ome.zarr", data, "TYX", dtype="uint16")
    assert is_image_file(dest)
    img = read_image(dest, lazy=True)
    assert isinstance(img.data, da.Array) and img.data.dtype == np.uint16
    np.testing.assert_array_equal(img.data.compute(), data.compute().astype(np.uint16))
    tif = tmp_path / "x.tif"
    write_image(tif, data.compute(), "TYX")
    assert isinstance(read_image(tif, lazy=True).data, da.Array)
    np.save(tmp_path / "x.npy", data.compute())
    assert isinstance(read_image(tmp_path / "x.npy", lazy=True).data, da.Array)


def test_errors_are_one_line(tmp_path):
    with pytest.raises(AxesError, match="sample axis"):
        write_ome_zarr(tmp_path / "s.ome.zarr", _image((2, 8, 8)), "SYX")
    with pytest.raises(InputError, match="channel names"):
        write_ome_zarr(tmp_path / "c.ome.zarr", _image((2, 8, 8)), "CYX", channel_names=["a"])
    with pytest.raises(InputError, match="version"):
        write_ome_zarr(tmp_path / "v.ome.zarr", _image((8, 8)), "YX", version="0.3")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "empty.zarr")
    assert "\n" not in str(err.value)
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path / "plain")
    assert not [p for p in _entries(tmp_path) if p.startswith(".")]


def test_pyramid_levels_default():
    assert pyramid_levels((64, 64)) == 1
    assert pyramid_levels((1024, 1024)) == 3
    assert pyramid_levels((4000, 300)) == 5


# ------------------------------------------------------------------ atomic stores


def test_failed_write_leaves_nothing_and_keeps_the_old_store(tmp_path):
    dest = tmp_path / "out.ome.zarr"
    write_ome_zarr(dest, _image((8, 8)), "YX")
    old = read_image(dest).data

    calls = []

    def failing(objs):
        calls.append(len(objs))
        if len(calls) == 2:  # level 0 is written, level 1 fails
            raise RuntimeError("worker lost")
        import dask

        return dask.compute(*objs)

    with pytest.raises(RuntimeError, match="worker lost"):
        write_ome_zarr(dest, _image((64, 64)), "YX", levels=2, compute=failing)
    assert _entries(tmp_path) == ["out.ome.zarr"]  # no temporary left
    np.testing.assert_array_equal(read_image(dest).data, old)  # the old store is untouched

    calls.clear()
    with pytest.raises(RuntimeError):
        write_ome_zarr(tmp_path / "new.ome.zarr", _image((64, 64)), "YX", levels=2, compute=failing)
    assert _entries(tmp_path) == ["out.ome.zarr"]


def test_killed_writer_leaves_no_complete_looking_store(tmp_path):
    dest = tmp_path / "out.ome.zarr"
    script = textwrap.dedent(
        f"""
        import time, numpy as np, dask.array as da
        from sharpscope.io.ome_zarr import write_ome_zarr

        def slow(block):
            time.sleep(0.2)
            return block

        x = da.from_array(np.ones((256, 256), np.float32), chunks=32).map_blocks(slow)
        write_ome_zarr({str(dest)!r}, x, "YX", chunks=(32, 32),
                       compute=lambda objs: [o.compute(scheduler="synchronous") for o in objs])
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        temps = []
        while time.monotonic() < deadline and not temps:
            temps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.ome.zarr.")]
            time.sleep(0.05)
        assert temps, "the writer never started"
        time.sleep(1.0)  # some chunks written
        assert proc.poll() is None, "the writer finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == [temps[0].name]  # only the hidden temporary
    assert any(temps[0].rglob("*"))
    # the next write of the same destination removes the dead writer's temporary
    write_ome_zarr(dest, _image((8, 8)), "YX")
    assert _entries(tmp_path) == ["out.ome.zarr"]


# ----------------------------------------------------------------------- lazy TIFF


@pytest.mark.parametrize("kind", ["pages", "tiles"])
def test_lazy_tiff_reads_only_the_pages_it_needs(tmp_path, kind):
    data = RNG.random((32, 128, 128)).astype(np.float32)  # 2 MiB
    if kind == "pages":  # an ImageJ hyperstack, one strip per page
        path = tmp_path / "stack.tif"
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"}, resolution=(10, 10))
    else:  # a tiled OME-TIFF
        path = tmp_path / "stack.ome.tif"
        tifffile.imwrite(path, data, tile=(32, 32), metadata={"axes": "ZYX", "PhysicalSizeX": 0.2})
    img = read_image(path, lazy=True)
    assert img.axes == "ZYX" and img.shape == data.shape and isinstance(img.data, da.Array)
    assert img.metadata["format"] == ("imagej" if kind == "pages" else "ome-tiff")
    tracemalloc.start()
    try:
        plane = img.data[5, :40, :40].compute(scheduler="synchronous")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(plane, data[5, :40, :40])
    # one page (64 KiB) or a few tiles, never the 2 MiB of the stack
    assert peak < data.nbytes / 8, peak
    full = read_image(path)
    np.testing.assert_array_equal(img.data.compute(), full.data)
    assert read_image(path, lazy=True).pixel_size == full.pixel_size


def test_lazy_tiff_pickles_as_its_path(tmp_path):
    import pickle

    from sharpscope.io.tiff import TiffPages

    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.arange(60, dtype=np.uint16).reshape(3, 4, 5))
    pages = pickle.loads(pickle.dumps(TiffPages(path)))
    assert pages.shape == (3, 4, 5) and pages[2, 1].tolist() == list(range(45, 50))
    assert len(pickle.dumps(TiffPages(path))) < 500



def test_lazy_tiffs_do_not_stay_open(tmp_path):
    from sharpscope.io import tiff

    for i in range(12):
        path = tmp_path / f"{i}.tif"
        tifffile.imwrite(path, np.full((2, 8, 8), i, np.uint8))
        assert int(read_image(path, lazy=True).data[1].compute()[0, 0]) == i
    assert len(tiff._STORES) <= tiff._MAX_STORES
