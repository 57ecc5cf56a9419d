"""Tests of sharpscope.io: formats, axes, pixel size, atomic writes, errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from sharpscope.errors import AxesError, InputError
from sharpscope.io import (
    Image,
    atomic_write,
    guess_axes,
    is_image_file,
    read_image,
    validate_axes,
    write_image,
)

RNG = np.random.default_rng(1)


def _rand(shape, dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        return RNG.random(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(0, min(info.max, 60000), size=shape, endpoint=True).astype(dtype)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------- axes strings


def test_validate_axes_normalises_and_accepts_any_order():
    assert validate_axes(" tzyx ", 4) == "TZYX"
    assert validate_axes("YXC", 3) == "YXC"


@pytest.mark.parametrize(
    "axes, ndim, match",
    [
        ("ZQX", 3, "unknown axis"),
        ("ZYY", 3, "repeated"),
        ("ZYX", 2, "3 letters but the image has 2"),
        ("TZ", 2, "required axis"),
        ("", 2, "empty"),
    ],
)
def test_validate_axes_rejects(axes, ndim, match):
    with pytest.raises(AxesError, match=match):
        validate_axes(axes, ndim)


def test_guess_axes():
    assert [guess_axes(n) for n in (2, 3, 4, 5, 6)] == ["YX", "ZYX", "TZYX", "CTZYX", "SCTZYX"]
    with pytest.raises(AxesError):
        guess_axes(1)
    with pytest.raises(AxesError):
        guess_axes(7)


# ------------------------------------------------------------------------ TIFF


def test_imagej_roundtrip_zyx_with_pixel_size(tmp_path):
    data = _rand((3, 10, 12))
    px = {"Z": 0.3, "Y": 0.065, "X": 0.07}
    path = write_image(tmp_path / "a.tif", data, "ZYX", pixel_size=px)
    # an ImageJ hyperstack, as seen by tifffile itself
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.3)
        assert tif.series[0].axes == "ZYX"
    img = read_image(path)
    assert img.axes == "ZYX"
    assert img.metadata["format"] == "imagej"
    np.testing.assert_array_equal(img.data, data)
    assert img.data.dtype == np.float32
    assert img.pixel_size == pytest.approx(px, rel=1e-6)


@pytest.mark.parametrize(
    "axes, shape, dtype",
    [
        ("CZYX", (2, 3, 6, 7), np.uint16),  # not ImageJ order -> shaped TIFF
        ("STYX", (2, 3, 5, 4), np.float64),  # S axis, float64 -> shaped TIFF
        ("TZCYX", (2, 2, 2, 5, 6), np.uint8),  # ImageJ hyperstack
        ("YXC", (5, 6, 3), np.uint8),  # colour
        ("YX", (9, 11), np.int32),
    ],
)
def test_tiff_roundtrip_axes_dtype_pixel_size(tmp_path, axes, shape, dtype):
    data = _rand(shape, dtype)
    px = {"Y": 0.1, "X": 0.2}
    if "Z" in axes:
        px["Z"] = 0.5
    path = write_image(tmp_path / "b.tiff", data, axes, pixel_size=px)
    img = read_image(path)
    assert img.axes == axes
    assert img.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size == pytest.approx(px, rel=1e-6)


def test_ome_roundtrip(tmp_path):
    data = _rand((2, 3, 8, 9), np.uint16)
    px = {"Y": 0.108, "X": 0.108}
    path = write_image(tmp_path / "c.ome.tif", data, "TCYX", pixel_size=px)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        pixels = [e for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.tag.endswith("Pixels")]
        assert float(pixels[0].get("PhysicalSizeX")) == pytest.approx(0.108)
    img = read_image(path)
    assert img.axes == "TCYX"
    assert img.metadata["format"] == "ome-tiff"
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size == pytest.approx(px)


def test_ome_rejects_sample_axis_and_leaves_nothing(tmp_path):
    with pytest.raises(AxesError, match="OME-TIFF"):
        write_image(tmp_path / "s.ome.tif", np.zeros((2, 4, 4), np.float32), "SYX")
    assert _leftovers(tmp_path) == []


def test_reads_ome_written_by_tifffile_in_nanometres(tmp_path):
    data = _rand((4, 6, 7))
    path = tmp_path / "n.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 65.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 65.0,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 0.2,
        },
    )
    img = read_image(path)
    assert img.axes == "ZYX"
    assert img.pixel_size == pytest.approx({"X": 0.065, "Y": 0.065, "Z": 0.2})


def test_reads_imagej_written_by_tifffile(tmp_path):
    data = _rand((2, 3, 6, 7), np.uint16)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"axes": "TZYX", "spacing": 1.5, "unit": "micron"},
    )
    img = read_image(path)
    assert img.axes == "TZYX"
    assert img.pixel_size == pytest.approx({"X": 0.25, "Y": 0.5, "Z": 1.5})


def test_plain_multipage_tiff_guesses_axes(tmp_path):
    three = _rand((5, 6, 7))
    tifffile.imwrite(tmp_path / "p3.tif", three, shaped=False, photometric="minisblack")
    assert read_image(tmp_path / "p3.tif").axes == "ZYX"
    four = _rand((2, 5, 6, 7))
    tifffile.imwrite(tmp_path / "p4.tif", four, photometric="minisblack")  # axes QQYX
    img = read_image(tmp_path / "p4.tif")
    assert img.axes == "TZYX" and img.shape == (2, 5, 6, 7)


def test_rgb_tiff_is_yxc_and_resolution_in_cm(tmp_path):
    rgb = _rand((5, 6, 3), np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(1e4 / 0.2, 1e4 / 0.2), resolutionunit="CENTIMETER")
    img = read_image(path)
    assert img.axes == "YXC"
    np.testing.assert_array_equal(img.data, rgb)
    assert img.pixel_size == pytest.approx({"X": 0.2, "Y": 0.2})


def test_axes_override_carries_pixel_size(tmp_path):
    path = write_image(tmp_path / "z.tif", _rand((3, 6, 7)), "ZYX", pixel_size={"Z": 2.0, "Y": 0.1, "X": 0.1})
    img = read_image(path, axes="tyx")
    assert img.axes == "TYX"
    assert img.pixel_size == pytest.approx({"Y": 0.1, "X": 0.1})
    with pytest.raises(AxesError, match="2 dimensions|3 dimensions"):
        read_image(path, axes="YX")
    with pytest.raises(AxesError, match="unknown"):
        read_image(path, axes="QYX")


# ------------------------------------------------------------------------- npz


def test_npz_debcr_layout(tmp_path):
    low = _rand((4, 16, 16, 1))
    gt = _rand((4, 16, 16, 1))
    path = tmp_path / "pairs.npz"
    np.savez(path, low=low, gt=gt)
    img = read_image(path)
    assert img.metadata["key"] == "low"
    assert img.axes == "SYXC"  # labelled, not reshaped
    np.testing.assert_array_equal(img.data, low)
    np.testing.assert_array_equal(read_image(path, key="gt").data, gt)
    with pytest.raises(InputError, match="no array 'nope'"):
        read_image(path, key="nope")


def test_npz_three_d_is_stack_of_samples_and_ambiguous_keys(tmp_path):
    np.savez(tmp_path / "s.npz", x=_rand((3, 8, 8)))
    assert read_image(tmp_path / "s.npz").axes == "SYX"
    np.savez(tmp_path / "two.npz", a=_rand((8, 8)), b=_rand((8, 8)))
    with pytest.raises(InputError, match="pick one with key="):
        read_image(tmp_path / "two.npz")


def test_npz_roundtrip_axes_and_pixel_size(tmp_path):
    data = _rand((2, 3, 8, 8))
    path = write_image(tmp_path / "r.npz", data, "CZYX", pixel_size={"Z": 1.0, "X": 0.3, "Y": 0.3})
    img = read_image(path)
    assert img.axes == "CZYX"
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size == {"Z": 1.0, "X": 0.3, "Y": 0.3}
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert set(npz.files) == {"image", "__sharpscope__"}


# ---------------------------------------------------------------- png and jpeg


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_grey_roundtrip(tmp_path, dtype):
    data = _rand((9, 13), dtype)
    path = write_image(tmp_path / "g.png", data, "YX", pixel_size={"X": 0.065, "Y": 0.065})
    with PILImage.open(path) as im:  # a real PNG
        assert im.format == "PNG"
        assert json.loads(im.info["sharpscope"])["axes"] == "YX"
    img = read_image(path)
    assert img.axes == "YX" and img.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size == pytest.approx({"X": 0.065, "Y": 0.065})


def test_png_channel_first_roundtrip(tmp_path):
    data = _rand((3, 7, 8), np.uint8)
    path = write_image(tmp_path / "c.png", data, "CYX", pixel_size={"X": 0.5, "Y": 0.5})
    img = read_image(path)
    assert img.axes == "CYX"
    np.testing.assert_array_equal(img.data, data)


def test_png_from_pillow_rgb_is_yxc(tmp_path):
    rgb = _rand((6, 5, 3), np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.axes == "YXC" and img.pixel_size == {}
    np.testing.assert_array_equal(img.data, rgb)


def test_png_rejects_float_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="PNG stores uint8"):
        write_image(tmp_path / "f.png", np.zeros((4, 4), np.float32), "YX")
    assert _leftovers(tmp_path) == []
    # dtype= converts with rounding and clipping
    path = write_image(tmp_path / "f.png", np.array([[-3.0, 0.4], [0.6, 300.0]]), "YX", dtype="uint8")
    np.testing.assert_array_equal(read_image(path).data, [[0, 0], [1, 255]])


def test_jpeg_roundtrip_is_close(tmp_path):
    yy, xx = np.mgrid[:32, :32]
    data = (100 + 50 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    path = write_image(tmp_path / "j.jpg", data, "YX")
    img = read_image(path)
    assert img.axes == "YX" and img.shape == (32, 32)
    assert np.abs(img.data.astype(int) - data).max() <= 4


# ---------------------------------------------------------------------- errors


def test_missing_corrupt_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="no such file") as exc:
        read_image(tmp_path / "missing.tif")
    assert "missing.tif" in str(exc.value)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00garbage" * 10)
    with pytest.raises(InputError) as exc:
        read_image(bad)
    assert "bad.tif" in str(exc.value) and "\n" not in str(exc.value)
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("not a png")
    with pytest.raises(InputError, match="fake.png"):
        read_image(fake_png)
    truncated = tmp_path / "t.npz"
    np.savez(truncated, low=_rand((8, 8)))
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(InputError, match="t.npz"):
        read_image(truncated)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="unsupported file type"):
        read_image(tmp_path / "x.txt")
    with pytest.raises(InputError, match="directory"):
        read_image(tmp_path)


def test_write_rejects_unknown_suffix_and_bad_pixel_size(tmp_path):
    with pytest.raises(InputError, match="cannot write file type"):
        write_image(tmp_path / "a.bmp", np.zeros((4, 4), np.uint8), "YX")
    with pytest.raises(InputError, match="positive"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.uint8), "YX", pixel_size={"X": -1})
    with pytest.raises(AxesError):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.uint8), "ZYX")
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------- atomic write


def test_atomic_write_success_and_failure(tmp_path):
    dest = tmp_path / "sub" / "out.ome.tif"
    with atomic_write(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.endswith(".ome.tif")
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with atomic_write(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert dest.read_bytes() == b"new"  # the old file is untouched
    assert _leftovers(dest.parent) == ["out.ome.tif"]  # no temporary file left


def test_image_dataclass_and_is_image_file():
    img = Image(np.zeros((2, 3)), "YX")
    assert img.shape == (2, 3) and img.pixel_size == {} and img.metadata == {}
    assert is_image_file("A.OME.TIFF") and is_image_file("x.npz") and not is_image_file("x.csv")


def test_partial_pixel_size_is_not_invented(tmp_path):
    path = write_image(tmp_path / "z.tif", _rand((2, 5, 5)), "ZYX", pixel_size={"Z": 0.7})
    assert read_image(path).pixel_size == {"Z": 0.7}
    path = write_image(tmp_path / "n.tif", _rand((5, 5)), "YX")
    assert read_image(path).pixel_size == {}


def test_write_over_a_directory_is_an_input_error(tmp_path):
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(InputError, match="cannot write"):
        write_image(tmp_path / "d.tif", np.zeros((4, 4), np.uint8), "YX")
    assert _leftovers(tmp_path) == ["d.tif"]


def test_killed_writer_leaves_no_debris_after_the_next_write(tmp_path):
    """SIGKILL inside atomic_write leaves a temporary; the next write of that file removes it."""
    import signal
    import subprocess
    import sys
    import textwrap

    dest = tmp_path / "out.tif"
    code = textwrap.dedent(
        f"""
        import sys, time
        from sharpscope.io import atomic_write
        with atomic_write({str(dest)!r}) as tmp:
            tmp.write_bytes(b"x" * 100000)
            print(tmp, flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.exists() and tmp.name.startswith(".out.tif.")
    # a live writer's temporary is never touched by another write
    other = tmp_path / "other.tif"
    write_image(other, np.zeros((4, 4), np.float32), "YX")
    write_image(dest.with_name("out2.tif"), np.zeros((4, 4), np.float32), "YX")
    assert tmp.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tmp.exists() and not dest.exists()  # the debris of today's code
    write_image(dest, np.ones((4, 4), np.float32), "YX")
    assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.tif", "out.tif", "out2.tif"]
    np.testing.assert_array_equal(read_image(dest).data, np.ones((4, 4), np.float32))
