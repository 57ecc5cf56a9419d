"""End-to-end tests of ``sharpscope restore`` and its handling of bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
import torch

from sharpscope.cli import main
from sharpscope.io import read_image, write_image

RNG = np.random.default_rng(11)


def _error_line(capsys) -> str:
    """The single line the CLI prints on stderr for a user error (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sharpscope: error: ")
    assert "Traceback" not in err[0]
    return err[0]


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_end_to_end_on_a_real_tiff(tiny_model_path, tmp_path, capsys):
    yy, xx = np.mgrid[:45, :61]
    stack = np.stack([200 + 1000 * np.exp(-((yy - 20) ** 2 + (xx - 30 - 5 * z) ** 2) / 30.0) for z in range(3)])
    stack = (stack + RNG.poisson(20, stack.shape)).astype(np.uint16)
    src = tmp_path / "cells.tif"
    tifffile.imwrite(
        src,
        stack,
        imagej=True,
        resolution=(1 / 0.065, 1 / 0.065),
        metadata={"axes": "ZYX", "spacing": 0.25, "unit": "um"},
    )
    out = tmp_path / "cells_out.tif"
    rc = main(["restore", str(src), "-o", str(out), "--model", str(tiny_model_path), "--device", "cpu", "--tile", "32", "--overlap", "8"])
    captured = capsys.readouterr()
    assert rc == 0
    assert captured.out.strip() == str(out)
    assert "tile" in captured.err  # the progress bar
    img = read_image(out)
    assert img.axes == "ZYX" and img.shape == stack.shape and img.data.dtype == np.float32
    assert img.pixel_size == pytest.approx({"Z": 0.25, "Y": 0.065, "X": 0.065})
    # the same as the Python API
    from sharpscope.restore import load_model

    expected = load_model(tiny_model_path, device="cpu").predict(stack, axes="ZYX", tile=32, overlap=8)
    np.testing.assert_allclose(img.data, expected, atol=1e-4)


def test_several_inputs_dtype_input_and_axes_override(tiny_model_path, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for i in range(2):
        write_image(tmp_path / "in" / f"t{i}.tif", RNG.integers(0, 900, (2, 16, 20)).astype(np.uint16), "ZYX")
    rc = main(["restore", str(tmp_path / "in" / "t*.tif"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path), "--axes", "TYX", "--dtype", "input", "--batch-size", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0
    # several inputs: one summary line, nothing else
    assert re.fullmatch(r"sharpscope: restore: 2 done, 0 skipped, 0 failed in [0-9.]+ s\n", captured.err)
    assert _files(tmp_path / "out") == ["t0_restored.tif", "t1_restored.tif"]
    img = read_image(tmp_path / "out" / "t0_restored.tif")
    assert img.axes == "TYX" and img.data.dtype == np.uint16 and img.shape == (2, 16, 20)


def test_tta_flag(tiny_model_path, tmp_path, capsys):
    from sharpscope.restore import load_model

    image = RNG.random((24, 36)).astype(np.float32)
    src = write_image(tmp_path / "a.tif", image, "YX")
    rc = main(["restore", str(src), "-o", str(tmp_path / "b.tif"), "--model", str(tiny_model_path), "--tta", "--no-progress"])
    assert rc == 0
    model = load_model(tiny_model_path, device="cpu")
    got = read_image(tmp_path / "b.tif").data
    np.testing.assert_allclose(got, model.predict(image, tta=True), rtol=0, atol=1e-6)
    assert np.abs(got - model.predict(image)).max() > 1e-3


def test_image_smaller_than_the_network_minimum_works(tiny_model_path, tmp_path, capsys):
    src = write_image(tmp_path / "tiny.tif", RNG.random((3, 5)).astype(np.float32), "YX")
    out = tmp_path / "tiny_out.tif"
    rc = main(["restore", str(src), "-o", str(out), "--model", str(tiny_model_path), "--no-progress"])
    assert rc == 0
    assert read_image(out).shape == (3, 5)


# ----------------------------------------------------------------- bad input


def _fails(capsys, args, out, *needles):
    rc = main(args)
    line = _error_line(capsys)
    assert rc != 0
    for needle in needles:
        assert needle in line, line
    assert not out.exists()
    return line


def test_corrupt_file(tiny_model_path, tmp_path, capsys, caplog):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(bad), "-o", str(out), "--model", str(tiny_model_path)], out, "broken.tif")
    assert _files(tmp_path) == ["broken.tif", "tiny.safetensors"]
    # tifffile's own log messages go into the one-line error, not onto stderr
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]


def test_truncated_tiff(tiny_model_path, tmp_path, capsys, caplog):
    good = write_image(tmp_path / "cut.tif", RNG.random((64, 64)).astype(np.float32), "YX")
    good.write_bytes(good.read_bytes()[:2000])
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(good), "-o", str(out), "--model", str(tiny_model_path)], out, "cut.tif")
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]


def test_missing_and_unreadable_files(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(tmp_path / "nope.tif"), "-o", str(out), "--model", str(tiny_model_path)], out, "nope.tif", "no such file")
    text = tmp_path / "text.png"
    text.write_text("hello")
    _fails(capsys, ["restore", str(text), "-o", str(out), "--model", str(tiny_model_path)], out, "text.png")


@pytest.mark.parametrize(
    "shape, axes, needle",
    [
        ((3, 8, 8), "ZQX", "unknown axis"),
        ((8, 8), "ZYX", "dimensions"),  # inconsistent with the image
        ((3, 8, 8), "YYX", "repeated"),
        ((3, 8, 8), "TZX", "required axis"),
    ],
)
def test_unknown_or_inconsistent_axes(tiny_model_path, tmp_path, capsys, shape, axes, needle):
    src = tmp_path / "a.npy"
    np.save(src, RNG.random(shape).astype(np.float32))
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(src), "-o", str(out), "--model", str(tiny_model_path), "--axes", axes], out, needle)


def test_nan_and_inf_pixels(tiny_model_path, tmp_path, capsys):
    data = RNG.random((16, 16)).astype(np.float32)
    data[3, 3] = np.nan
    data[5, 7] = -np.inf
    src = write_image(tmp_path / "nan.tif", data, "YX")
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(src), "-o", str(out), "--model", str(tiny_model_path)], out, "nan.tif", "NaN/Inf")


def test_empty_image(tiny_model_path, tmp_path, capsys):
    src = tmp_path / "empty.npz"
    np.savez(src, low=np.zeros((0, 16), np.float32))
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(src), "-o", str(out), "--model", str(tiny_model_path)], out, "empty.npz", "empty")


def test_constant_image(tiny_model_path, tmp_path, capsys):
    src = write_image(tmp_path / "flat.tif", np.full((3, 16, 16), 100, np.uint16), "ZYX")
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(src), "-o", str(out), "--model", str(tiny_model_path)], out, "flat.tif", "constant")


def test_model_file_that_fails_validation(tiny_model_path, tmp_path, capsys):
    src = write_image(tmp_path / "a.tif", RNG.random((16, 16)).astype(np.float32), "YX")
    out = tmp_path / "o.tif"
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(tiny_model_path.read_bytes()[: tiny_model_path.stat().st_size // 2])
    _fails(capsys, ["restore", str(src), "-o", str(out), "--model", str(truncated)], out, "cut.safetensors")
    not_a_model = tmp_path / "junk.safetensors"
    not_a_model.write_bytes(b"\x00" * 64)
    _fails(capsys, ["restore", str(src), "-o", str(out), "--model", str(not_a_model)], out, "junk.safetensors")


def test_default_model_missing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from sharpscope.models import store

    monkeypatch.setenv("SHARPSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(store, "bundled_dir", lambda: tmp_path / "no-bundled")
    src = write_image(tmp_path / "a.tif", RNG.random((16, 16)).astype(np.float32), "YX")
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(src), "-o", str(out)], out, "widefield-2d")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_but_unavailable(tiny_model_path, tmp_path, capsys):
    src = write_image(tmp_path / "a.tif", RNG.random((16, 16)).astype(np.float32), "YX")
    out = tmp_path / "o.tif"
    _fails(capsys, ["restore", str(src), "-o", str(out), "--model", str(tiny_model_path), "--device", "cuda"], out, "CUDA")


def test_debug_shows_the_traceback(tiny_model_path, tmp_path):
    from sharpscope.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "restore", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "o.tif"), "--model", str(tiny_model_path)])


def test_range_warning_is_one_stderr_line_per_file(tmp_path, capsys):
    from conftest import TINY_MRBCR_HPARAMS
    from sharpscope.models.format import save_model
    from sharpscope.models.registry import build_network
    from test_restore import RANGE, _widefield

    torch.manual_seed(0)
    header = {"name": "ranged", "architecture": "mrbcr", "hparams": TINY_MRBCR_HPARAMS, "tile": {"size": 64, "overlap": 16}, "valid_range": RANGE}
    model = save_model(tmp_path / "ranged.safetensors", build_network("mrbcr", **TINY_MRBCR_HPARAMS), header)
    write_image(tmp_path / "ok.tif", _widefield(fc=0.2, gain=0.01), "YX")
    noisy = tmp_path / "noisy.tif"
    write_image(noisy, np.stack([_widefield(fc=0.2, gain=2.0)] * 2), "ZYX")
    base = ["restore", "--model", str(model), "--device", "cpu", "--no-progress"]
    assert main([*base, str(tmp_path / "ok.tif"), str(noisy), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if "done," not in line]
    assert len(err) == 1, err
    assert err[0].startswith(f"sharpscope: warning: {noisy}: input looks outside the model's training range: estimated ")
    assert err[0].endswith("; results may be unreliable")
    assert len(captured.out.strip().splitlines()) == 2  # both files written
    assert main([*base, str(noisy), "-o", str(tmp_path / "out2"), "--no-range-check"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*base, str(tmp_path / "ok.tif"), "-o", str(tmp_path / "out3")]) == 0
    assert capsys.readouterr().err == ""


def test_restore_hints_at_the_optics_once_at_a_terminal(tmp_path, capsys, monkeypatch):
    import sharpscope.cli.restore as cli_restore

    src = write_image(tmp_path / "cells.tif", np.random.default_rng(0).poisson(50, (64, 64)).astype(np.uint16), "YX")
    base = ["restore", str(src), "--no-progress", "--no-range-check", "--device", "cpu"]
    # not at a terminal (pipelines, logs): nothing
    assert main([*base, "-o", str(tmp_path / "a.tif")]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli_restore, "_interactive", lambda: True)
    assert main([*base, "-o", str(tmp_path / "b.tif")]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [f"sharpscope: {cli_restore.OPTICS_HINT}"]
    for extra in (["--na", "1.2", "--wavelength", "600", "--pixel-size", "0.1"], ["-q"], ["--psf", "none"]):
        assert main([*base, "-o", str(tmp_path / "c.tif"), "--overwrite", *extra]) == 0
        assert capsys.readouterr().err == "", extra
