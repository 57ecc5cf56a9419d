"""The napari plugin, driven end to end in a real viewer (pytest-qt, under Xvfb).

Needs the ``napari`` extra and an X display (pytest-xvfb starts Xvfb when it is installed;
``QT_QPA_PLATFORM=offscreen`` gives vispy no OpenGL context).  Skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
    pytest.skip("no X display (install xvfb and pytest-xvfb)", allow_module_level=True)

from conftest import make_tiny_model  # noqa: E402

TIMEOUT_MS = 60_000


def wait_done(qtbot, widget, timeout=TIMEOUT_MS):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def error_messages(monkeypatch):
    """Collect what the widgets show with show_error."""
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: shown.append(str(msg)))
    return shown


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def sample(viewer):
    from sharpscope.napari._sample_data import make_sample

    layers = []
    for data, kwargs, _ in make_sample():
        layers.append(viewer.add_image(data, **kwargs))
    return {layer.name: layer for layer in layers}


def test_core_library_imports_without_qt():
    """``import sharpscope`` (and its plugin package) never pulls in Qt or napari."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PyQt6', 'PyQt5', 'PySide6', 'qtpy', 'napari', 'magicgui'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sharpscope, sharpscope.napari, sharpscope.restore, sharpscope.deconv\n"
        "import sharpscope.cli; sharpscope.cli.build_parser()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_manifest_is_valid_and_discovered():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("sharpscope")
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert {"Restore", "Deconvolve", "Simulate", "Evaluate", "Train", "Prepare data", "Estimate PSF"} <= widgets
    assert manifest.contributions.sample_data[0].key == "simulated-specimen"


def test_sample_data_adds_degraded_gt_and_psf(viewer):
    viewer.open_sample("sharpscope", "simulated-specimen")
    names = [layer.name for layer in viewer.layers]
    assert names == ["sample ground truth", "sample degraded", "sample psf"]
    low = viewer.layers["sample degraded"]
    assert low.data.shape == (256, 256)
    assert low.scale[0] == pytest.approx(low.metadata["sharpscope"]["pixel_size"]["Y"])


def test_restore_whole_image_and_current_plane(viewer, qtbot, tmp_path):
    from sharpscope.napari._restore import FILE_CHOICE, RestoreWidget

    model = make_tiny_model(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    stack = viewer.add_image(
        rng.random((3, 40, 48)).astype(np.float32), name="stack", scale=(0.5, 0.1, 0.1), translate=(0, 2, 3)
    )
    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = stack
    w.model.value = FILE_CHOICE
    w.model_file.value = str(model)
    assert "mrbcr" in w.model_info.value
    w.restore()
    wait_done(qtbot, w)
    out = viewer.layers["stack restored"]
    assert out.data.shape == (3, 40, 48)
    assert tuple(out.scale) == (0.5, 0.1, 0.1)
    assert tuple(out.translate) == (0, 2, 3)
    assert out.metadata["sharpscope"]["source"] == "stack"
    # the same, as the library computes it
    import sharpscope

    expect = sharpscope.load_model(model).predict(stack.data, axes="ZYX")
    np.testing.assert_allclose(out.data, expect, atol=1e-5)

    viewer.dims.set_point(0, 1.0)  # plane 2 of the stack (z scale 0.5)
    w.scope.value = "current plane"
    w.restore()
    wait_done(qtbot, w)
    plane = viewer.layers["stack restored [1]"]
    assert plane.data.shape == (1, 40, 48)
    assert tuple(plane.translate) == (1.0, 2, 3)


def test_restore_with_a_psf_layer_equals_predict_with_psf(viewer, qtbot, tmp_path, monkeypatch):
    import sharpscope
    from sharpscope.napari._restore import FILE_CHOICE, RestoreWidget

    shown = error_messages(monkeypatch)
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(1)
    img = viewer.add_image(rng.poisson(50, (48, 56)).astype(np.float32), name="img")
    psf = viewer.add_image(sharpscope.make_psf(fc=0.2, size=15), name="psf")
    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = img
    w.model.value = FILE_CHOICE
    w.model_file.value = str(model)
    assert w.psf_layer.native.isHidden()
    w.psf_known.value = True
    assert not w.psf_layer.native.isHidden() and not w.consistency.native.isHidden()
    w.psf_layer.value = psf
    w.consistency.value = 0.05
    w.restore()
    wait_done(qtbot, w)
    expect = sharpscope.load_model(model).predict(img.data, axes="YX", psf=psf.data, consistency=0.05)
    np.testing.assert_allclose(viewer.layers["img restored"].data, expect, atol=1e-5)
    # a stack is not a 2-D PSF: one notification, nothing added
    viewer.add_image(np.ones((3, 5, 5), np.float32), name="stack psf")
    w.psf_layer.value = viewer.layers["stack psf"]
    n = len(viewer.layers)
    w.restore()
    assert len(viewer.layers) == n
    assert shown and "must be 2-D" in shown[-1]


def test_restore_cancel_adds_nothing(viewer, qtbot, tmp_path):
    from sharpscope.napari._restore import FILE_CHOICE, RestoreWidget

    model = make_tiny_model(tmp_path / "tiny.safetensors", tile=32, overlap=8)
    viewer.add_image(np.random.default_rng(1).random((40, 256, 256)).astype(np.float32), name="big")
    w = RestoreWidget(viewer)
    w.model.value = FILE_CHOICE
    w.model_file.value = str(model)
    w.batch_size.value = 1
    w.restore()
    qtbot.waitUntil(lambda: w.progress.value > 2, timeout=TIMEOUT_MS)
    import time

    t0 = time.monotonic()
    w.cancel()
    wait_done(qtbot, w, timeout=10_000)
    assert time.monotonic() - t0 < 2.0
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert "cancelled" in w.status.value


def test_restore_bad_model_file_notifies(viewer, qtbot, tmp_path, monkeypatch):
    from sharpscope.napari._restore import FILE_CHOICE, RestoreWidget

    shown = error_messages(monkeypatch)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    viewer.add_image(np.ones((32, 32), np.float32) + np.eye(32, dtype=np.float32), name="img")
    w = RestoreWidget(viewer)
    w.model.value = FILE_CHOICE
    w.model_file.value = str(bad)
    w.restore()
    wait_done(qtbot, w)
    assert len(shown) == 1 and shown[0].startswith("sharpscope: error: ")
    assert "\n" not in shown[0]
    assert [layer.name for layer in viewer.layers] == ["img"]
    # the viewer and the widget stay usable
    w.model_file.value = str(make_tiny_model(tmp_path / "tiny.safetensors"))
    w.restore()
    wait_done(qtbot, w)
    assert "img restored" in viewer.layers


def test_restore_with_optics_equals_predict_with_fc(viewer, qtbot, tmp_path, monkeypatch):
    import warnings

    import sharpscope
    from conftest import make_tiny_optics_model
    from sharpscope.blind import resolve_fc
    from sharpscope.napari._restore import (
        FILE_CHOICE,
        NO_OPTICS_HINT,
        RestoreWidget,
        WatchedNetwork,
    )

    shown = error_messages(monkeypatch)
    path = make_tiny_optics_model(tmp_path / "optics.safetensors", seed=3)
    yy, xx = np.mgrid[:48, :56]
    img = (100 + 60 * (1 + np.sin(xx / 3.0) * np.cos(yy / 5.0))).astype(np.float32)
    layer = viewer.add_image(img, name="img", scale=(0.1, 0.1))
    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = layer
    w.model.value = FILE_CHOICE
    w.model_file.value = str(path)
    # the fields are offered for this model, pre-filled from the layer, enabled when ticked
    assert w.uses_optics and not w.optics.native.isHidden() and w.optics_hint.native.isHidden()
    assert w.pixel_size.value == pytest.approx(0.1)
    assert not w.na.enabled and w.optics_options() == {}
    w.optics_known.value = True
    assert w.na.enabled and w.modality.enabled
    w.na.value, w.wavelength.value, w.modality.value = 1.2, 600.0, "confocal"
    fc = resolve_fc(na=1.2, wavelength=600.0, pixel_size=0.1)
    assert w.optics_options() == {"fc": pytest.approx(fc), "modality": "confocal"}

    # the progress wrapper keeps the flags the library reads: the optics reach the network
    model = sharpscope.load_model(path)
    assert model.uses_optics
    watched = sharpscope.restore.Model(model.header, WatchedNetwork(model.network, sharpscope.napari._common.Job(), 1))
    assert watched.uses_optics and watched.optics(fc, "confocal") is not None

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "fc ignored" would be one
        w.restore()
        wait_done(qtbot, w)
    out = viewer.layers["img restored"]
    assert out.metadata["sharpscope"]["fc"] == pytest.approx(fc)
    # told the optics, the widget corrects through their theoretical PSF, as the CLI does
    theory = sharpscope.theoretical_psf(na=1.2, wavelength=600.0, pixel_size=0.1, modality="confocal")
    expect = model.predict(img, fc=fc, modality="confocal", psf=theory)
    np.testing.assert_allclose(out.data, expect, atol=1e-5)
    assert np.abs(expect - model.predict(img, fc=fc, modality="confocal", psf="none")).max() > 1e-4
    unknown = model.predict(img)
    assert np.abs(expect - unknown).max() > 1e-3

    # optics not known: the plain prediction
    w.optics_known.value = False
    assert not w.na.enabled
    w.restore()
    wait_done(qtbot, w)
    np.testing.assert_allclose(viewer.layers["img restored [1]"].data, unknown, atol=1e-5)

    # a bad value: one notification, nothing started, nothing added
    w.optics_known.value = True
    w.pixel_size.value = 0.0
    w.restore()
    assert not w.busy and len(shown) == 1 and shown[0].startswith("sharpscope: error: ")
    assert "pixel size" in shown[0]
    w.pixel_size.value = 1.0  # fc = NA * pixel / wavelength above the Nyquist limit 0.5
    w.restore()
    assert not w.busy and len(shown) == 2 and "cut-off frequency fc" in shown[1]
    assert [x.name for x in viewer.layers] == ["img", "img restored", "img restored [1]"]

    # a model without the optics input: no fields, a hint
    w.model_file.value = str(make_tiny_model(tmp_path / "tiny.safetensors"))
    assert not w.uses_optics and w.optics.native.isHidden() and w.optics_known.native.isHidden()
    assert not w.optics_hint.native.isHidden() and w.optics_hint.value == NO_OPTICS_HINT
    assert w.optics_options() == {}


def test_deconvolve_optics_and_layer_psf(viewer, qtbot, sample):
    from sharpscope.napari._deconvolve import DeconvolveWidget

    low = sample["sample degraded"]
    w = DeconvolveWidget(viewer)
    w.image.value = low
    assert w.pixel_size.value == pytest.approx(low.scale[-1], rel=1e-3)
    w.psf_source.value = "layer"
    w.psf_layer.value = sample["sample psf"]
    w.method.value = "rl"
    w.auto_iterations.value = False
    w.iterations.value = 5
    w.deconvolve()
    wait_done(qtbot, w)
    out = viewer.layers["sample degraded rl"]
    import sharpscope

    expect = sharpscope.deconvolve(low.data, sample["sample psf"].data, method="rl", iterations=5)
    np.testing.assert_allclose(out.data, expect, rtol=1e-5, atol=1e-6)
    assert tuple(out.scale) == tuple(low.scale)

    w.psf_source.value = "optics"
    w.method.value = "wiener"
    w.auto_balance.value = False
    w.deconvolve()
    wait_done(qtbot, w)
    assert viewer.layers["sample degraded wiener"].data.shape == low.data.shape


def test_deconvolve_bad_psf_notifies(viewer, qtbot, monkeypatch):
    from sharpscope.napari._deconvolve import DeconvolveWidget

    shown = error_messages(monkeypatch)
    img = viewer.add_image(np.random.default_rng(0).random((16, 16)).astype(np.float32), name="small")
    viewer.add_image(np.ones((33, 33), np.float32), name="huge psf")
    w = DeconvolveWidget(viewer)
    w.image.value = img
    w.psf_source.value = "layer"
    w.psf_layer.value = viewer.layers["huge psf"]
    w.deconvolve()
    wait_done(qtbot, w)
    assert shown and "larger than the image" in shown[0]
    assert len(viewer.layers) == 2


def test_simulate_layers_fixed_optics_and_psf_preview(viewer, qtbot, tmp_path):
    from sharpscope.napari._simulate import SimulateWidget

    w = SimulateWidget(viewer)
    w.preset.value = "mrbcr-widefield"
    w.n.value, w.size.value, w.seed.value = 2, 32, 5
    w.fix_optics.value = True
    w.na.value, w.wavelength.value, w.sampling.value = 1.0, 500.0, 1.0
    w.modality.value = "widefield"
    w.save_to.value = str(tmp_path / "pairs.npz")
    w.simulate()
    wait_done(qtbot, w)
    assert w.status.value.startswith("simulate: done")
    low, gt, psf = viewer.layers["sim low"], viewer.layers["sim gt"], viewer.layers["sim psf"]
    assert low.data.shape == gt.data.shape == (2, 32, 32)
    assert psf.data.shape[0] == 2
    assert low.scale[-1] == pytest.approx(0.125)  # 1.0 x 500 nm / (4 x 1.0)
    assert all(p["na"] == pytest.approx(1.0) for p in w.data["params"])
    assert all(p["modality"] == "widefield" for p in w.data["params"])
    # the same pairs as the library's stream
    from sharpscope.simulate import simulate_dataset

    ref = simulate_dataset(w.current_preset(), 2, 32, seed=5)
    np.testing.assert_array_equal(low.data, ref["low"])
    assert (tmp_path / "pairs.npz").is_file()

    w.preview_psf()
    wait_done(qtbot, w)
    assert viewer.layers["psf preview"].data.ndim == 2


def test_evaluate_fills_table_and_frc(viewer, qtbot, sample):
    from sharpscope.napari._evaluate import EvaluateWidget

    w = EvaluateWidget(viewer)
    w.prediction.value = sample["sample degraded"]
    w.reference.value = sample["sample ground truth"]
    w.evaluate()
    wait_done(qtbot, w)
    import sharpscope

    expect = sharpscope.evaluate(sample["sample degraded"].data, sample["sample ground truth"].data)
    table = w.table.to_dict("list") if hasattr(w.table, "to_dict") else w.table.value
    values = dict(zip(table["metric"], table["value"], strict=True)) if isinstance(table, dict) else {}
    assert w.results["psnr"] == pytest.approx(expect["psnr"])
    assert values.get("PSNR (dB)") == f"{expect['psnr']:.4g}"
    assert len(w.plot.axes.lines) == 2  # the curve and the threshold


def test_evaluate_shape_mismatch_notifies(viewer, qtbot, monkeypatch):
    from sharpscope.napari._evaluate import EvaluateWidget

    shown = error_messages(monkeypatch)
    a = viewer.add_image(np.zeros((16, 16), np.float32), name="a")
    b = viewer.add_image(np.zeros((16, 20), np.float32), name="b")
    w = EvaluateWidget(viewer)
    w.prediction.value, w.reference.value = a, b
    w.evaluate()
    assert not w.busy
    assert shown == ["sharpscope: error: layers 'a' (16, 16) and 'b' (16, 20) differ in shape"]


def _tiny_train_widget(viewer, tmp_path):
    from conftest import TINY_TRAIN_HPARAMS
    from sharpscope.napari._train import TrainWidget

    w = TrainWidget(viewer)
    w.hparams = dict(TINY_TRAIN_HPARAMS)
    w.batch_size.value, w.patch_size.value = 2, 32
    w.val_every.value, w.val_size.value = 5, 2
    w.threads.value = 1
    w.device.value = "cpu"
    w.out.value = str(tmp_path / "run")
    return w


def test_train_from_layers_shows_loss_and_model_reaches_restore(viewer, qtbot, tmp_path):
    from sharpscope.napari._restore import SESSION_MODELS, RestoreWidget, model_choices

    rng = np.random.default_rng(0)
    gt = rng.random((2, 64, 64)).astype(np.float32)
    low = viewer.add_image(gt + 0.1 * rng.standard_normal(gt.shape).astype(np.float32), name="low")
    high = viewer.add_image(gt, name="gt")
    w = _tiny_train_widget(viewer, tmp_path)
    w.source.value = "two layers (low, gt)"
    w.low.value, w.gt.value = low, high
    w.steps.value = 10
    w.train()
    wait_done(qtbot, w, timeout=120_000)
    assert w.result is not None and w.result.stopped == "completed", w.log_box.value
    assert w.result.steps_done == 10
    assert [s for s, _ in w.history["loss"]] == [1, 5, 10]  # training validates after its first step
    assert len(w.history["val_loss"]) == 3
    assert len(w.plot.axes.lines) == 2
    assert (tmp_path / "run" / "model.safetensors").is_file()
    name = next(n for n, p in SESSION_MODELS.items() if p == tmp_path / "run" / "model.safetensors")
    assert name in model_choices()
    r = RestoreWidget(viewer)
    r.image.value = low
    r.model.value = name
    r.restore()
    wait_done(qtbot, r)
    assert viewer.layers["low restored"].data.shape == (2, 64, 64)


def test_train_cancel_then_resume(viewer, qtbot, tmp_path):
    import time

    w = _tiny_train_widget(viewer, tmp_path)
    w.source.value = "simulator preset"
    w.steps.value = 100_000
    w.val_every.value = 100_000
    w.train()
    qtbot.waitUntil(lambda: w.progress.value >= 3, timeout=120_000)
    t0 = time.monotonic()
    w.cancel()
    wait_done(qtbot, w, timeout=20_000)
    assert time.monotonic() - t0 < 5.0
    res = w.result
    assert res.stopped == "interrupted"
    assert (tmp_path / "run" / "last.ckpt.safetensors").is_file()
    stopped_at = res.steps_done
    w.steps.value = stopped_at + 3
    w.resume.value = True
    w.train()
    wait_done(qtbot, w, timeout=120_000)
    assert w.result.stopped == "completed" and w.result.steps_done == stopped_at + 3


def test_train_bad_config_notifies(viewer, qtbot, tmp_path, monkeypatch):
    shown = error_messages(monkeypatch)
    w = _tiny_train_widget(viewer, tmp_path)
    w.patch_size.value = 8
    w.batch_size.value = 1
    w.source.value = "prepared / DeBCR npz"
    w.train()
    assert shown == ["sharpscope: error: choose a training data file (.npz)"]
    assert not w.busy


def test_prepare_preview_grid_and_write(viewer, qtbot, tmp_path):
    from sharpscope.napari._prepare import PrepareWidget

    rng = np.random.default_rng(0)
    gt = rng.random((2, 96, 128)).astype(np.float32)
    low = viewer.add_image(gt + 0.1 * rng.standard_normal(gt.shape).astype(np.float32), name="low", scale=(1, 0.1, 0.1))
    high = viewer.add_image(gt, name="gt")
    w = PrepareWidget(viewer)
    w.low.value, w.gt.value = low, high
    w.patch_size.value = 32
    w.region_size.value = 32
    w.out.value = str(tmp_path / "pairs.npz")
    w.preview_grid()
    wait_done(qtbot, w)
    assert not (tmp_path / "pairs.npz").exists()
    grid = viewer.layers["low patches"]
    assert len(grid.data) == sum(w.result.counts.values()) > 0
    assert set(grid.properties["split"]) == {"train", "val", "test"}
    assert tuple(grid.scale) == (1, 0.1, 0.1)
    w.write()
    wait_done(qtbot, w)
    assert (tmp_path / "pairs.npz").is_file()
    with np.load(tmp_path / "pairs.npz") as npz:
        assert npz["train_low"].shape[1:] == (32, 32)
    assert len(viewer.layers["low patches"].data) == len(grid.data)
    w.show_normalised()
    assert "low normalised" in viewer.layers and "gt normalised" in viewer.layers


def test_prepare_too_small_notifies(viewer, qtbot, monkeypatch):
    from sharpscope.napari._prepare import PrepareWidget

    shown = error_messages(monkeypatch)
    a = viewer.add_image(np.random.default_rng(0).random((16, 16)).astype(np.float32), name="a")
    w = PrepareWidget(viewer)
    w.low.value = w.gt.value = a
    w.patch_size.value = 64
    w.preview_grid()
    wait_done(qtbot, w)
    assert shown == ["sharpscope: error: no image is large enough for a 64x64 patch"]


def test_reader_debcr_npz_gives_low_and_gt_layers(viewer, tmp_path):
    from sharpscope.napari._reader import get_reader

    path = tmp_path / "pairs.npz"
    rng = np.random.default_rng(0)
    np.savez(path, low=rng.random((3, 32, 32)).astype(np.float32), gt=rng.random((3, 32, 32)).astype(np.float32))
    reader = get_reader(str(path))
    layers = reader(str(path))
    assert [kw["name"] for _, kw, _ in layers] == ["pairs low", "pairs gt"]
    assert all(kw["metadata"]["sharpscope"]["axes"] == "SYX" for _, kw, _ in layers)
    viewer.open(str(path), plugin="sharpscope")
    assert [layer.name for layer in viewer.layers] == ["pairs low", "pairs gt"]


def test_reader_and_writer_keep_axes_and_pixel_size(viewer, tmp_path):
    import sharpscope
    from sharpscope.napari._reader import get_reader
    from sharpscope.napari._writer import write_image_layer

    src = tmp_path / "stack.tif"
    data = np.random.default_rng(0).random((4, 24, 32)).astype(np.float32)
    sharpscope.write_image(src, data, "TYX", pixel_size={"Y": 0.2, "X": 0.2})
    [(arr, kwargs, kind)] = get_reader(str(src))(str(src))
    assert kind == "image" and kwargs["metadata"]["sharpscope"]["axes"] == "TYX"
    assert kwargs["scale"] == [1.0, 0.2, 0.2]
    layer = viewer.add_image(arr, **kwargs)
    out = tmp_path / "copy.tif"
    written = write_image_layer(str(out), layer.data, layer.as_layer_data_tuple()[1])
    assert written == [str(out)]
    back = sharpscope.read_image(out)
    assert back.axes == "TYX" and back.pixel_size["X"] == pytest.approx(0.2)
    np.testing.assert_array_equal(back.data, data)


def test_reader_and_writer_ome_zarr_lazily_with_axes_and_pixel_size(viewer, tmp_path):
    pytest.importorskip("zarr")
    import dask.array as da

    import sharpscope
    from sharpscope.io import write_ome_zarr
    from sharpscope.napari._reader import get_reader
    from sharpscope.napari._writer import write_image_layer

    data = np.random.default_rng(1).random((3, 40, 48)).astype(np.float32)
    src = write_ome_zarr(tmp_path / "vol.ome.zarr", data, "ZYX", {"Z": 0.5, "Y": 0.1, "X": 0.1})
    reader = get_reader(str(src))
    assert reader is not None
    [(arr, kwargs, kind)] = reader(str(src))
    assert isinstance(arr, da.Array)  # lazy: a volume larger than memory opens
    assert kind == "image" and kwargs["name"] == "vol"
    assert kwargs["metadata"]["sharpscope"]["axes"] == "ZYX"
    assert kwargs["scale"] == pytest.approx([0.5, 0.1, 0.1])
    layer = viewer.add_image(arr, **kwargs)
    out = tmp_path / "copy.ome.zarr"
    written = write_image_layer(str(out), layer.data, layer.as_layer_data_tuple()[1])
    back = sharpscope.read_image(written[0])
    assert back.axes == "ZYX" and back.pixel_size["Z"] == pytest.approx(0.5)
    np.testing.assert_array_equal(np.asarray(back.data), data)
    assert get_reader(str(tmp_path / "missing.zarr")) is None


def test_reader_model_file_shows_header_and_opens_restore(viewer, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    from sharpscope.napari._reader import get_reader

    infos: list[str] = []
    monkeypatch.setattr(notifications, "show_info", lambda msg: infos.append(str(msg)))
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    reader = get_reader(str(model))
    assert reader(str(model)) == [(None,)]
    assert infos and "tiny-test: mrbcr" in infos[0]
    from sharpscope.napari._restore import RestoreWidget

    opened = [w for w in viewer.window.dock_widgets.values() if isinstance(w, RestoreWidget)]
    assert opened and opened[0].model_file.value == model
    assert get_reader(str(tmp_path / "notes.txt")) is None


@pytest.mark.parametrize(
    "name", ["Prepare data", "Simulate", "Train", "Restore", "Deconvolve", "Estimate PSF", "Evaluate"]
)
def test_every_widget_opens_from_the_plugins_menu(viewer, name):
    dock, widget = viewer.window.add_plugin_dock_widget("sharpscope", name)
    assert widget.viewer is not None and not widget.busy
    assert widget.native.maximumWidth() <= 480


def test_deconvolve_auto_options_follow_the_library_signature(viewer):
    from sharpscope.napari._deconvolve import DeconvolveWidget, accepts_none

    w = DeconvolveWidget(viewer)
    w.method.value = "rl"
    w.iterations.value = 7
    auto = accepts_none("iterations")
    assert w.auto_iterations.value is auto and w.auto_iterations.enabled is auto
    assert w.options()["iterations"] == (None if auto else 7)
    w.auto_iterations.value = False
    assert w.options()["iterations"] == 7
    w.method.value = "wiener"
    assert "iterations" not in w.options()
    assert w.options()["balance"] == (None if accepts_none("balance") else pytest.approx(1e-3))


def test_deconvolve_automatic_stopping_is_the_default(viewer, qtbot, sample):
    from sharpscope.napari._deconvolve import DeconvolveWidget, accepts_none

    if not accepts_none("iterations"):
        pytest.skip("this sharpscope's deconvolve has no automatic stopping")
    import sharpscope

    low, psf = sample["sample degraded"], sample["sample psf"]
    w = DeconvolveWidget(viewer)
    w.image.value = low
    w.psf_source.value = "layer"
    w.psf_layer.value = psf
    w.method.value = "rl"
    assert w.auto_iterations.value and w.options()["iterations"] is None
    w.deconvolve()
    wait_done(qtbot, w)
    expect = sharpscope.deconvolve(low.data, psf.data, method="rl", iterations=None)
    np.testing.assert_allclose(viewer.layers["sample degraded rl"].data, expect, rtol=1e-5, atol=1e-6)
    assert "iterations" in w.log_box.value


def test_estimate_psf_single_and_grid_add_layers(viewer, qtbot, sample):
    from sharpscope.napari._estimate_psf import EstimatePSFWidget

    low = sample["sample degraded"]
    w = EstimatePSFWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = low
    w.estimate()
    wait_done(qtbot, w)
    psf = viewer.layers["sample degraded psf"]
    assert psf.data.shape == (33, 33) and abs(float(psf.data.sum()) - 1) < 1e-5
    assert tuple(psf.scale) == tuple(low.scale[-2:])
    tiles = viewer.layers["sample degraded psf tiles"]
    assert len(tiles.data) == 1 and tiles.features["label"][0].startswith("FWHM ")
    # the same PSF as the library's
    import sharpscope

    np.testing.assert_allclose(psf.data, sharpscope.estimate_psf(low.data).psf, atol=1e-6)
    # a 2 x 3 grid with the optics: a stack of 6 PSFs and 6 labelled tiles
    w.use_grid.value = True
    w.rows.value, w.cols.value = 2, 3
    w.optics_mode.value = "cut-off fc"
    w.fc.value = 0.2
    w.estimate()
    wait_done(qtbot, w)
    grid = viewer.layers["sample degraded psf grid"]
    assert grid.data.shape == (6, 33, 33)
    np.testing.assert_allclose(grid.data.sum(axis=(1, 2)), 1.0, atol=1e-5)
    tiles = viewer.layers["sample degraded psf tiles [1]"]
    assert len(tiles.data) == 6 and all("FWHM" in t for t in tiles.features["label"])
    assert w.last_estimate.grid == (2, 3) and w.last_estimate.fc_given
    # the rectangles outline the tiles (in pixels times the layer's scale)
    assert np.allclose(tiles.data[0].min(axis=0), [-0.5, -0.5])


def test_estimate_psf_blank_image_notifies_and_adds_nothing(viewer, qtbot, monkeypatch):
    from sharpscope.napari._estimate_psf import EstimatePSFWidget

    shown = error_messages(monkeypatch)
    blank = viewer.add_image(np.random.default_rng(0).poisson(30.0, (160, 160)).astype(np.float32), name="blank")
    w = EstimatePSFWidget(viewer)
    w.image.value = blank
    w.estimate()
    wait_done(qtbot, w)
    assert [layer.name for layer in viewer.layers] == ["blank"]
    assert shown and shown[-1].startswith("sharpscope: error: no part of the image has enough structure")
    w.identifier.value = "model file"  # no file chosen: one line, nothing started
    w.estimate()
    assert "choose a PSF-identification model file" in shown[-1] and not w.busy


def test_deconvolve_auto_psf(viewer, qtbot, sample):
    from sharpscope.napari._deconvolve import PSF_SOURCES, DeconvolveWidget

    assert "auto" in PSF_SOURCES
    low = sample["sample degraded"]
    w = DeconvolveWidget(viewer)
    w.image.value = low
    w.psf_source.value = "auto"
    assert not w.auto.native.isHidden() and w.optics.native.isHidden()
    w.method.value = "rl"
    w.deconvolve()
    wait_done(qtbot, w)
    out = viewer.layers["sample degraded rl"]
    assert out.data.shape == low.data.shape and "PSF estimated" in w.log_box.value
    import sharpscope

    expect = sharpscope.blind_deconvolve(low.data, method="rl", device="cpu")
    np.testing.assert_allclose(out.data, expect, rtol=1e-4, atol=1e-5)
    w.show_psf()
    wait_done(qtbot, w)
    assert viewer.layers["psf"].data.shape == (33, 33)


def test_estimate_psf_on_beads_adds_the_measured_psf_and_the_beads(viewer, qtbot, monkeypatch):
    import sharpscope
    from sharpscope.napari._estimate_psf import IDENTIFIERS, EstimatePSFWidget
    from sharpscope.simulate import bead_image

    truth = sharpscope.make_psf(fc=0.2, size=33)
    img, centres = bead_image(truth, 12, shape=(384, 384), seed=3)
    layer = viewer.add_image(img, name="beads", scale=(0.1, 0.1))
    w = EstimatePSFWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = layer
    w.identifier.value = IDENTIFIERS[3]
    # the blind estimate's options are hidden, the PSF size shown
    assert w.optics_mode.native.isHidden() and w.use_grid.native.isHidden()
    assert not w.psf_size.native.isHidden()
    w.estimate()
    wait_done(qtbot, w)
    psf, beads = viewer.layers["beads bead psf"], viewer.layers["beads beads"]
    expect = sharpscope.blind.measure_bead_psf(img, size=33)
    np.testing.assert_allclose(psf.data, expect.psf, atol=1e-7)
    assert sharpscope.blind.relative_l2(psf.data, truth) < 0.05
    assert len(beads.data) == len(centres) and tuple(psf.scale) == (0.1, 0.1)
    # a blank layer: one error notification, nothing added
    shown = error_messages(monkeypatch)
    w.image.value = viewer.add_image(np.random.default_rng(1).poisson(50, (128, 128)).astype(np.uint16), name="blank")
    w.estimate()
    wait_done(qtbot, w)
    assert shown and "found no isolated bead" in shown[-1]
    assert [x.name for x in viewer.layers] == ["beads", "beads bead psf", "beads beads", "blank"]
