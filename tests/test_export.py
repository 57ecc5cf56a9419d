"""bioimage.io export: the package passes bioimageio.core's own test, offline."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from sharpscope.cli import main
from sharpscope.errors import ConfigError, InputError, ModelFormatError
from sharpscope.export import FullResolution, export_bioimageio, validate_bioimageio
from sharpscope.export import bioimageio as bmz
from sharpscope.restore import load_model


@pytest.fixture
def offline(monkeypatch):
    """Make any HTTP request of bioimageio (httpx) fail the test."""
    import httpx

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during the test: {args[:2]}")

    monkeypatch.setattr(httpx, "request", refuse)
    monkeypatch.setattr(httpx, "stream", refuse)
    monkeypatch.setattr(httpx, "get", refuse)
    monkeypatch.setattr(httpx, "head", refuse)


def _read(package: Path) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(package) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    return yaml.safe_load(files["rdf.yaml"]), files


def _npy(data: bytes) -> np.ndarray:
    import io

    return np.load(io.BytesIO(data))


def test_bundled_model_package_passes_bioimageio_test(tmp_path, offline):
    from bioimageio.core import test_model

    out = tmp_path / "widefield-2d.zip"
    result = export_bioimageio("widefield-2d", out, test_size=128, validate=False)
    assert result.path == out and out.is_file() and result.status is None
    assert result.weights == ("pytorch_state_dict", "torchscript")

    summary = test_model(out, devices=["cpu"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    names = [d.name for d in summary.details]
    # the reproduction test ran for both weight formats, and inference at several sizes
    for fmt in ("pytorch_state_dict", "torchscript"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in names
        assert sum(n.startswith(f"Run {fmt} inference") for n in names) >= 3

    rdf, files = _read(out)
    model = load_model("widefield-2d", device="cpu")
    assert rdf["format_version"].startswith("0.5.")
    assert rdf["license"] == "BSD-3-Clause"
    assert rdf["authors"] == [{"name": "sharpscope developers"}]
    assert {c["doi"] for c in rdf["cite"]} == {
        "10.48550/arXiv.2407.03239",
        "10.5281/zenodo.12626121",
    }
    (inp,), (outp,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    y = inp["axes"][2]
    assert y["size"] == {"min": 128, "step": model.size_multiple}
    assert outp["axes"][2]["halo"] == model.tile[1] // 2
    scale = inp["preprocessing"][0]
    assert scale["id"] == "scale_range"
    assert (
        scale["kwargs"]["min_percentile"],
        scale["kwargs"]["max_percentile"],
    ) == model.percentiles
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["import_from"] == "sharpscope.export.bioimageio"
    assert arch["kwargs"]["hparams"] == model.header.hparams
    assert "## Validation" in files["README.md"].decode()
    # the package runs the optics-conditioned network without the optics, and says so
    assert "runs it without them" in files["README.md"].decode()
    assert files["cover.png"][:8] == b"\x89PNG\r\n\x1a\n"

    # the test output is the model's restoration: mapped back with the input's percentiles it
    # matches sharpscope's own whole-image prediction
    raw = _npy(files["test_input.npy"])[0, 0]
    expected = _npy(files["test_output.npy"])[0, 0]
    lo, hi = np.percentile(raw, model.percentiles)
    restored = model.predict(raw, warn_range=False)
    np.testing.assert_allclose(expected * (hi - lo) + lo, restored, rtol=0, atol=1e-3 * (hi - lo))

    # the attached sharpscope model file is the same model
    attached = tmp_path / "attached.safetensors"
    attached.write_bytes(files["model.safetensors"])
    again = load_model(attached, device="cpu").predict(raw, warn_range=False)
    np.testing.assert_array_equal(again, restored)


def test_validation_refuses_a_package_whose_test_output_is_wrong(
    tiny_model_path, tmp_path, monkeypatch, offline
):
    out = tmp_path / "tiny.zip"
    # a different normalisation than the rdf declares: the reproduction test must fail
    real = bmz._scale_range
    monkeypatch.setattr(bmz, "_scale_range", lambda x, lo, hi: real(x, lo, hi) * 1.5 + 0.25)
    with pytest.raises(ModelFormatError, match="failed bioimage.io's test"):
        export_bioimageio(tiny_model_path, out, authors=["A. Tester"], test_size=64)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tiny_model_path]  # no temporary left either

    monkeypatch.setattr(bmz, "_scale_range", real)
    result = export_bioimageio(
        tiny_model_path, out, authors=["A. Tester"], test_size=64, weights=["torchscript"]
    )
    assert result.status == "passed" and result.weights == ("torchscript",)
    assert (result.min_size, result.step, result.halo) == (64, 4, 16)
    rdf, _ = _read(out)
    assert set(rdf["weights"]) == {"torchscript"}
    assert rdf["authors"] == [{"name": "A. Tester"}]
    assert validate_bioimageio(out) == "passed"


def test_full_resolution_wrapper_returns_the_first_output(tiny_model):
    import torch

    wrapper = FullResolution("mrbcr", tiny_model.header.hparams)
    wrapper.network.load_state_dict(tiny_model.network.state_dict())
    x = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x), tiny_model.network(x)[0])
    assert all(k.startswith("network.") for k in wrapper.state_dict())


def test_validation_without_bioimageio_core_is_one_clear_error(
    tiny_model_path, tmp_path, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "bioimageio.core", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"sharpscope\[export\].*--no-validate"):
        export_bioimageio(tiny_model_path, tmp_path / "x.zip", authors=["A"])
    with pytest.raises(ConfigError, match="bioimageio.core"):
        validate_bioimageio(tiny_model_path)
    assert not (tmp_path / "x.zip").exists()


def test_export_errors(tiny_model_path, tmp_path):
    kw = dict(authors=["A. Tester"], validate=False)
    with pytest.raises(ConfigError, match=r"\.zip"):
        export_bioimageio(tiny_model_path, tmp_path / "x.tar", **kw)
    with pytest.raises(ConfigError, match="--author"):
        export_bioimageio(tiny_model_path, tmp_path / "x.zip", validate=False)
    with pytest.raises(ConfigError, match="unknown weight format"):
        export_bioimageio(tiny_model_path, tmp_path / "x.zip", weights=["onnx"], **kw)
    with pytest.raises(ConfigError, match="SPDX"):
        export_bioimageio(tiny_model_path, tmp_path / "x.zip", license="my own terms", **kw)
    with pytest.raises(ConfigError, match="SPDX"):  # checked against bioimage.io's list
        export_bioimageio(tiny_model_path, tmp_path / "x.zip", license="Foo-1.0", authors=["A"])
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="at least 64x64"):
        export_bioimageio(
            tiny_model_path, tmp_path / "x.zip", test_image=rng.random((40, 80)), **kw
        )
    with pytest.raises(InputError, match="2-D"):
        export_bioimageio(
            tiny_model_path, tmp_path / "x.zip", test_image=rng.random((2, 3, 80, 80)), **kw
        )
    with pytest.raises(InputError, match="constant"):
        export_bioimageio(tiny_model_path, tmp_path / "x.zip", test_image=np.ones((80, 80)), **kw)
    with pytest.raises(ModelFormatError, match="not found"):
        export_bioimageio("no-such-model", tmp_path / "x.zip", **kw)
    assert not (tmp_path / "x.zip").exists()


def test_given_test_image_is_cropped_to_a_valid_size(tiny_model_path, tmp_path):
    image = np.random.default_rng(1).poisson(30, (70, 83)).astype(np.uint16)
    result = export_bioimageio(
        tiny_model_path, tmp_path / "x.zip", authors=["A"], test_image=image, validate=False
    )
    assert result.test_shape == (1, 1, 68, 80)
    _, files = _read(result.path)
    raw = _npy(files["test_input.npy"])
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw[0, 0], image[1:69, 1:81])


def test_cli_export_run_folder_json_and_no_overwrite(tiny_model_path, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(tiny_model_path.read_bytes())
    out = tmp_path / "pkg" / "tiny.zip"
    argv = [
        "export-bioimageio",
        str(run),
        "-o",
        str(out),
        "--author",
        "A. Tester",
        "--author",
        "B. Tester",
        "--test-size",
        "64",
        "--no-validate",
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["path"] == str(out) and doc["status"] is None and doc["min_size"] == 64
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy"} <= set(doc["files"])
    rdf, _ = _read(out)
    assert [a["name"] for a in rdf["authors"]] == ["A. Tester", "B. Tester"]
    before = out.read_bytes()

    assert main(argv) == 2  # exists: refused with one line, file untouched
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pass --overwrite" in err
    assert out.read_bytes() == before

    assert main([*argv[:-1], "--overwrite", "-q", "--weights", "pytorch_state_dict"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    rdf, _ = _read(out)
    assert set(rdf["weights"]) == {"pytorch_state_dict"}

    assert (
        main(["export-bioimageio", str(run), "-o", str(tmp_path / "y.zip"), "--no-validate"]) == 2
    )
    assert "--author" in capsys.readouterr().err


def test_docstring_examples_run(tmp_path, monkeypatch):
    import doctest

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHARPSCOPE_HOME", str(tmp_path / "home"))
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(bmz, bmz.__name__, globs=dict(vars(bmz))):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0 and attempted >= 5
    assert (tmp_path / "widefield-2d.zip").is_file()


def test_noise_conditioned_network_exports_with_the_single_input_call(tmp_path):
    import io

    import torch

    from conftest import TINY_MRBCR_HPARAMS
    from sharpscope.models.format import save_model
    from sharpscope.models.registry import build_network

    hparams = dict(TINY_MRBCR_HPARAMS, noise_input=True)
    torch.manual_seed(0)
    net = build_network("mrbcr", **hparams)
    header = {
        "name": "noisy",
        "architecture": "mrbcr",
        "hparams": hparams,
        "license": "MIT",
        "tile": {"size": 64, "overlap": 32},
    }
    path = save_model(tmp_path / "noisy.safetensors", net, header)
    result = export_bioimageio(
        path, tmp_path / "noisy.zip", authors=["A"], test_size=64, validate=False
    )
    assert result.weights == ("pytorch_state_dict", "torchscript")
    _, files = _read(result.path)
    traced = torch.jit.load(io.BytesIO(files["torchscript.pt"]))
    # the trace estimates the noise from each input, as the network does (nothing baked in)
    x = torch.rand(1, 1, 72, 68, generator=torch.Generator().manual_seed(3)) * 4
    with torch.no_grad():
        torch.testing.assert_close(traced(x), net.eval()(x)[0], rtol=1e-4, atol=1e-5)
