"""``restore`` and ``deconvolve`` over many files; threads, tiles, pipes and start-up time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from sharpscope.cli import main
from sharpscope.io import read_image, write_image

RNG = np.random.default_rng(5)


def _img(shape=(24, 28)) -> np.ndarray:
    return RNG.poisson(40, shape).astype(np.uint16)


def _tree(root: Path) -> Path:
    """root/a.tif, root/sub/b.tif (2-D TIFFs) and a non-image."""
    write_image(root / "a.tif", _img(), "YX")
    write_image(root / "sub" / "b.tif", _img((20, 36)), "YX")
    (root / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("not an image")
    return root


def _names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------- many files (item 2)


def test_folder_keeps_relative_names_with_a_suffix(tiny_model_path, tmp_path, capsys):
    data = _tree(tmp_path / "data")
    out = tmp_path / "restored"
    rc, stdout, err = _run(capsys, "restore", str(data), "-o", str(out), "--model", str(tiny_model_path), "--suffix", "_x", "--no-progress")
    assert rc == 0
    assert _names(out) == ["a_x.tif", "sub/b_x.tif"]
    assert stdout.split() == [str(out / "a_x.tif"), str(out / "sub" / "b_x.tif")]
    assert re.fullmatch(r"sharpscope: restore: 2 done, 0 skipped, 0 failed in [0-9.]+ s\n", err)
    assert read_image(out / "sub" / "b_x.tif").shape == (20, 36)


def test_existing_outputs_are_never_silently_replaced(tiny_model_path, tmp_path, capsys):
    data = _tree(tmp_path / "data")
    out = tmp_path / "restored"
    base = ["restore", str(data), "-o", str(out), "--model", str(tiny_model_path), "--no-progress"]
    assert _run(capsys, *base)[0] == 0
    first = (out / "a_restored.tif").stat().st_mtime_ns
    write_image(data / "c.tif", _img(), "YX")  # a new input next to two done ones

    rc, _, err = _run(capsys, *base)
    assert rc == 2 and "--overwrite" in err and "--skip-existing" in err and len(err.splitlines()) == 1
    assert not (out / "c_restored.tif").exists()  # nothing computed

    rc, stdout, err = _run(capsys, *base, "--skip-existing")
    assert rc == 0 and stdout.split() == [str(out / "c_restored.tif")]
    assert "1 done, 2 skipped, 0 failed" in err
    assert (out / "a_restored.tif").stat().st_mtime_ns == first

    rc, _, err = _run(capsys, *base, "--overwrite", "--json")
    assert rc == 0
    assert (out / "a_restored.tif").stat().st_mtime_ns != first


def test_writing_over_the_input_needs_overwrite(tiny_model_path, tmp_path, capsys):
    src = write_image(tmp_path / "a.tif", _img(), "YX")
    before = src.read_bytes()
    rc, _, err = _run(capsys, "restore", str(src), "-o", str(src), "--model", str(tiny_model_path))
    assert rc == 2 and "overwrite its input" in err and "--overwrite" in err
    assert src.read_bytes() == before
    rc, _, _ = _run(capsys, "restore", str(src), "-o", str(src), "--model", str(tiny_model_path), "--overwrite", "--no-progress")
    assert rc == 0 and read_image(src).data.dtype == np.float32
    # a folder restored in place without a suffix: every result replaces its input
    data = _tree(tmp_path / "data")
    rc, _, err = _run(capsys, "restore", str(data), "-o", str(data), "--suffix", "", "--model", str(tiny_model_path))
    assert rc == 2 and "--overwrite" in err


def test_results_next_to_the_inputs_are_not_inputs_of_a_rerun(tiny_model_path, tmp_path, capsys):
    data = _tree(tmp_path / "data")
    base = ["restore", str(data), "-o", str(data), "--model", str(tiny_model_path), "--no-progress"]
    assert _run(capsys, *base)[0] == 0
    assert _names(data) == ["a.tif", "a_restored.tif", "notes.txt", "sub/b.tif", "sub/b_restored.tif"]
    rc, stdout, err = _run(capsys, *base, "--skip-existing")
    assert rc == 0 and stdout == "" and "0 done, 2 skipped, 0 failed" in err
    assert "a_restored_restored.tif" not in _names(data)


def test_one_failing_file_does_not_stop_the_others(tiny_model_path, tmp_path, capsys):
    data = tmp_path / "data"
    write_image(data / "a.tif", _img(), "YX")
    write_image(data / "b_flat.tif", np.full((16, 16), 7, np.uint16), "YX")
    write_image(data / "c.tif", _img(), "YX")
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, "restore", str(data), "-o", str(out), "--model", str(tiny_model_path), "--no-progress")
    assert rc == 2
    assert _names(out) == ["a_restored.tif", "c_restored.tif"]
    lines = err.strip().splitlines()
    assert lines[0].startswith("sharpscope: error: ") and "b_flat.tif" in lines[0] and "constant" in lines[0]
    assert "Traceback" not in err
    assert re.fullmatch(r"sharpscope: restore: 2 done, 0 skipped, 1 failed in [0-9.]+ s", lines[-1])
    assert len(stdout.split()) == 2
    # --fail-fast stops at the first failure
    out2 = tmp_path / "out2"
    rc, _, err = _run(capsys, "restore", str(data), "-o", str(out2), "--model", str(tiny_model_path), "--no-progress", "--fail-fast")
    assert rc == 2 and _names(out2) == ["a_restored.tif"] and len(err.strip().splitlines()) == 1


def test_restore_json(tiny_model_path, tmp_path, capsys):
    data = _tree(tmp_path / "data")
    rc, stdout, _ = _run(capsys, "restore", str(data), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path), "--json", "-q")
    assert rc == 0
    report = json.loads(stdout)
    assert [Path(d["output"]).name for d in report["done"]] == ["a_restored.tif", "b_restored.tif"]
    assert report["skipped"] == [] and report["failed"] == [] and report["seconds"] >= 0


def test_readme_folder_example_on_2d_tiffs(tmp_path, capsys, monkeypatch):
    """README: ``sharpscope restore data/ -o restored/ --tile 256`` on a folder of 2-D TIFFs."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("sharpscope restore data/"))
    args = line.split("#")[0].split()[1:]
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        write_image(Path("data") / f"cell{i}.tif", _img((40, 52)), "YX")
    rc, _, err = _run(capsys, *args, "--no-progress")
    assert rc == 0, err
    assert _names(Path("restored")) == ["cell0_restored.tif", "cell1_restored.tif"]


def test_deconvolve_many_files(tmp_path, capsys):
    data = _tree(tmp_path / "data")
    psf = write_image(tmp_path / "psf.tif", np.outer(*2 * [np.hanning(7)]).astype(np.float32), "YX")
    out = tmp_path / "rl"
    rc, stdout, err = _run(capsys, "deconvolve", str(data), "-o", str(out), "--psf", str(psf), "--iterations", "3", "--json")
    assert rc == 0
    assert _names(out) == ["a_deconvolved.tif", "sub/b_deconvolved.tif"]
    assert len(json.loads(stdout)["done"]) == 2
    rc, _, err = _run(capsys, "deconvolve", str(data), "-o", str(out), "--psf", str(psf), "--iterations", "3")
    assert rc == 2 and "--overwrite" in err
    # automatic counts: one line per file, naming it
    rc, _, err = _run(capsys, "deconvolve", str(data), "-o", str(out), "--psf", str(psf), "--overwrite", "-q")
    assert rc == 0 and err == ""
    rc, _, err = _run(capsys, "deconvolve", str(data), "-o", str(out), "--psf", str(psf), "--overwrite")
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "a.tif: richardson-lucy stopped after" in lines[0] and "2 done" in lines[2]


def test_python_twins_of_batch_commands(tiny_model, tmp_path):
    from sharpscope.batch import BatchError, restore_files

    data = _tree(tmp_path / "data")
    write_image(data / "flat.tif", np.full((16, 16), 3, np.uint16), "YX")
    with pytest.raises(BatchError, match="1 of 3 files failed") as info:
        restore_files(data, tmp_path / "o", model=tiny_model, device="cpu")
    result = info.value.result
    assert [p.name for p in result] == ["a_restored.tif", "b_restored.tif"]
    assert [s.name for s, _ in result.failed] == ["flat.tif"] and "constant" in result.failed[0][1]
    again = restore_files(data / "a.tif", tmp_path / "o", model=tiny_model, skip_existing=True)
    assert list(again) == [] and len(again.skipped) == 1


# --------------------------------------------------------------------- threads, tiles (item 3)


def test_tile_alone_adapts_the_model_overlap(tmp_path, capsys):
    from sharpscope.restore import load_model

    path = make_tiny_model(tmp_path / "wide.safetensors", tile=512, overlap=160)  # as DeBCR models
    image = RNG.random((150, 170)).astype(np.float32)
    src = write_image(tmp_path / "a.tif", image, "YX")
    rc, _, err = _run(capsys, "restore", str(src), "-o", str(tmp_path / "b.tif"), "--model", str(path), "--tile", "128", "--no-progress")
    assert rc == 0, err
    model = load_model(path, device="cpu")
    expected = model.predict(image, tile=128, overlap=64)
    np.testing.assert_allclose(read_image(tmp_path / "b.tif").data, expected, atol=1e-5)
    np.testing.assert_allclose(model.predict(image, tile=128), expected, atol=1e-6)  # the API too
    # an explicit overlap that does not fit is still an error
    rc, _, err = _run(capsys, "restore", str(src), "-o", str(tmp_path / "c.tif"), "--model", str(path), "--tile", "128", "--overlap", "160")
    assert rc == 2 and "overlap" in err


def test_an_image_smaller_than_the_tile_is_not_padded_to_it(tiny_model):
    seen = []
    net = tiny_model.network
    handle = net.register_forward_pre_hook(lambda mod, inp: seen.append(tuple(inp[0].shape)))
    try:
        tiny_model.predict(RNG.random((300, 517)).astype(np.float32), tile=1024, device="cpu", warn_range=False)
    finally:
        handle.remove()
    # padded to the size multiple only; one tile (the fast path's first call is also checked
    # against the plain float32 network, so the same tile may run twice)
    assert set(seen) == {(1, 1, 300, 520)} and 1 <= len(seen) <= 2


def test_threads_never_exceed_the_cores(tiny_model_path, tmp_path, capsys):
    from sharpscope.runtime import physical_cores, set_threads

    cores = physical_cores()
    src = write_image(tmp_path / "a.tif", _img(), "YX")
    try:
        assert set_threads(10_000) == cores
        assert main(["restore", str(src), "-o", str(tmp_path / "b.tif"), "--model", str(tiny_model_path), "--threads", "10000", "--no-progress"]) == 0
        assert torch.get_num_threads() == cores
        assert main(["restore", str(src), "-o", str(tmp_path / "b.tif"), "--model", str(tiny_model_path), "--threads", "1", "--no-progress"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


def test_default_threads_follow_omp_num_threads(monkeypatch):
    from sharpscope.runtime import default_threads, physical_cores

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == physical_cores()


def test_allocator_is_tuned_on_linux():
    from sharpscope.runtime import tune_allocator

    assert tune_allocator() is sys.platform.startswith("linux")


def test_device_defaults_are_auto_in_the_cli_and_the_api():
    import inspect

    from sharpscope.batch import deconvolve_files, restore_files
    from sharpscope.cli import build_parser
    from sharpscope.restore import Model, load_model

    parser = build_parser()
    for command in ("restore", "deconvolve"):
        args = parser.parse_args([command, "x.tif", "-o", "y.tif", *(["--psf", "p.tif"] if command == "deconvolve" else [])])
        assert args.device == "auto"
    assert inspect.signature(deconvolve_files).parameters["device"].default == "auto"
    assert inspect.signature(load_model).parameters["device"].default == "auto"
    assert inspect.signature(Model.predict).parameters["device"].default == "auto"
    assert "device" not in inspect.signature(restore_files).parameters  # predict's, passed on


# --------------------------------------------------------------------- processes


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("command", ["models", "evaluate"])
def test_a_closed_pipe_exits_quietly(tmp_path, command):
    args = [command]
    if command == "evaluate":
        a = write_image(tmp_path / "a.tif", RNG.random((32, 32)).astype(np.float32), "YX")
        b = write_image(tmp_path / "b.tif", RNG.random((32, 32)).astype(np.float32), "YX")
        args += [str(a), str(b)]
    read, write = os.pipe()
    os.close(read)  # like `| head -0`: every write gets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "sharpscope", *args], stdout=write, stderr=subprocess.PIPE, text=True, env=_env(), timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141
    assert proc.stderr == ""


def test_help_and_models_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from sharpscope.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['models'])\n"
        "    main(['models', '--json'])\n"
        "    try:\n"
        "        main(['restore', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'tifffile') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True, timeout=120)
    assert out.stdout.strip() == "[]"
