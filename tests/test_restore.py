"""Tests of sharpscope.restore: Model.predict, load_model, restore_files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpscope.batch import restore_files
from sharpscope.errors import AxesError, ConfigError, InputError, ModelFormatError
from sharpscope.io import read_image, write_image
from sharpscope.restore import Model, check_finite, load_model, resolve_device

RNG = np.random.default_rng(7)


def _reference(model: Model, planes: np.ndarray, pmin=1.0, pmax=99.8) -> np.ndarray:
    """Independent reference: whole-stack percentiles, one network pass per plane."""
    lo, hi = np.percentile(planes.astype(np.float64), [pmin, pmax])
    h, w = planes.shape[-2:]
    m = model.network.size_multiple
    ph, pw = -(-h // m) * m, -(-w // m) * m
    x = (planes.reshape(-1, h, w).astype(np.float64) - lo) / (hi - lo)
    x = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)), mode="reflect").astype(np.float32)
    with torch.no_grad():
        y = model.network(torch.from_numpy(x[:, None]))[0][:, 0].numpy().astype(np.float64)
    return (y[:, :h, :w] * (hi - lo) + lo).reshape(planes.shape)


def test_predict_matches_reference_2d(tiny_model):
    image = (1000 * RNG.random((40, 52))).astype(np.float32)
    out = tiny_model.predict(image, device="cpu", tile=64, overlap=16)
    assert out.shape == image.shape and out.dtype == np.float32
    ref = _reference(tiny_model, image)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.ptp(ref))


def test_tta_is_the_mean_over_rotations_and_mirrors(tiny_model):
    # 40x52 (a multiple of the network's 4): the reference needs no padding in any orientation
    image = (1000 * RNG.random((40, 52))).astype(np.float32)
    out = tiny_model.predict(image, device="cpu", tile=64, overlap=16, tta=True)
    views = []
    for k in range(4):
        for mirror in (False, True):
            v = np.rot90(image, k)
            v = v[:, ::-1] if mirror else v
            y = _reference(tiny_model, np.ascontiguousarray(v))
            y = y[:, ::-1] if mirror else y
            views.append(np.rot90(y, -k))
    ref = np.mean(views, axis=0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.ptp(ref))
    # and it is not the plain prediction (the random network is not rotation-equivariant)
    plain = tiny_model.predict(image, device="cpu", tile=64, overlap=16)
    assert np.abs(out - plain).max() > 1e-2 * np.ptp(ref)


def test_predict_normalises_the_whole_stack_not_each_plane(tiny_model):
    # planes with very different brightness: percentiles of the whole stack apply to every plane
    stack = np.stack([RNG.random((24, 28)), 50 + 200 * RNG.random((24, 28))]).astype(np.float32)
    out = tiny_model.predict(stack, axes="ZYX", device="cpu")
    ref = _reference(tiny_model, stack)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.ptp(ref))
    per_plane = np.stack([_reference(tiny_model, p[None])[0] for p in stack])
    assert np.abs(out - per_plane).max() > 1e-2 * np.ptp(ref)


def test_predict_uses_header_percentiles(tiny_model):
    tiny_model.header.normalization.pmin = 5.0
    tiny_model.header.normalization.pmax = 95.0
    image = RNG.gamma(2.0, 10.0, (32, 32)).astype(np.float32)
    out = tiny_model.predict(image, device="cpu")
    ref = _reference(tiny_model, image, 5.0, 95.0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.ptp(ref))


@pytest.mark.parametrize(
    "axes, shape",
    [
        ("YX", (21, 30)),
        ("ZYX", (3, 20, 18)),
        ("TYX", (2, 17, 23)),
        ("CYX", (2, 16, 20)),
        ("TZYX", (2, 2, 12, 16)),
        ("YXC", (14, 18, 3)),
        ("SYX", (2, 12, 12)),
    ],
)
def test_any_axes_restore_to_the_same_shape(tiny_model, axes, shape):
    image = RNG.random(shape).astype(np.float32)
    out = tiny_model.predict(image, axes=axes, device="cpu")
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_channels_are_normalised_separately_and_stay_in_place(tiny_model):
    base = RNG.random((20, 24)).astype(np.float32)
    # channel 1 is channel 0 in other intensity units: its result must be the same, rescaled
    image = np.stack([base, 1000 * base + 50], axis=-1)  # YXC
    out = tiny_model.predict(image, axes="YXC", device="cpu")
    np.testing.assert_allclose(out[..., 1], 1000 * out[..., 0] + 50, rtol=1e-4, atol=1e-2)
    single = tiny_model.predict(base, axes="YX", device="cpu")
    np.testing.assert_allclose(out[..., 0], single, atol=1e-6)


def test_dtype_input_on_uint16(tiny_model):
    image = RNG.integers(100, 4000, size=(24, 24)).astype(np.uint16)
    as_float = tiny_model.predict(image, device="cpu")
    out = tiny_model.predict(image, device="cpu", dtype="input")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, np.clip(np.rint(as_float), 0, 65535).astype(np.uint16))
    with pytest.raises(ConfigError, match="dtype"):
        tiny_model.predict(image, dtype="uint8")


def test_small_images_are_padded_internally(tiny_model):
    for shape in [(3, 5), (1, 7), (2, 2)]:
        image = RNG.random(shape).astype(np.float32)
        out = tiny_model.predict(image, device="cpu")
        assert out.shape == shape
        if min(shape) > 1:
            ref = _reference(tiny_model, image)
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * max(np.ptp(ref), 1e-6))


def test_bad_images(tiny_model):
    nan = RNG.random((8, 8)).astype(np.float32)
    nan[2, 3] = np.nan
    nan[4, 4] = np.inf
    with pytest.raises(InputError, match="2 NaN/Inf"):
        tiny_model.predict(nan)
    with pytest.raises(InputError, match="empty"):
        tiny_model.predict(np.zeros((0, 8), np.float32))
    with pytest.raises(InputError, match="constant"):
        tiny_model.predict(np.full((8, 8), 3, np.uint16))
    with pytest.raises(AxesError):
        tiny_model.predict(np.zeros((2, 8, 8)), axes="YX")
    with pytest.raises(AxesError):
        tiny_model.predict(np.zeros(8))
    assert check_finite(np.arange(4.0)).shape == (4,)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_load_model(tiny_model_path, tmp_path, monkeypatch):
    model = load_model(tiny_model_path, device="cpu")
    assert isinstance(model, Model) and model.header.architecture == "mrbcr"
    assert model.size_multiple == 4 and not model.network.training
    outs = model.network(torch.zeros(1, 1, 16, 16))
    assert isinstance(outs, tuple) and outs[0].shape == (1, 1, 16, 16)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_model_path.read_bytes()[:500])
    with pytest.raises(ModelFormatError):
        load_model(truncated)
    with pytest.raises(ModelFormatError, match="not found"):
        load_model(tmp_path / "missing.safetensors")

    # no default model installed: a clear error naming it
    from sharpscope.models import store

    monkeypatch.setenv("SHARPSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(store, "bundled_dir", lambda: tmp_path / "no-bundled")
    with pytest.raises(ModelFormatError, match="widefield-2d"):
        load_model(None)


# ------------------------------------------------------------------- files


def _write_inputs(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        data = RNG.integers(0, 4000, size=(3, 20, 24)).astype(np.uint16)
        paths.append(
            write_image(folder / f"cell{i}.tif", data, "ZYX", pixel_size={"Z": 0.5, "Y": 0.1, "X": 0.1})
        )
    return paths


def test_restore_files_single_file_keeps_axes_and_pixel_size(tiny_model, tmp_path):
    (src,) = _write_inputs(tmp_path / "in", 1)
    out = restore_files(src, tmp_path / "out.ome.tif", model=tiny_model, device="cpu")
    assert out == [tmp_path / "out.ome.tif"]
    img = read_image(out[0])
    assert img.axes == "ZYX" and img.shape == (3, 20, 24) and img.data.dtype == np.float32
    assert img.pixel_size == pytest.approx({"Z": 0.5, "Y": 0.1, "X": 0.1})
    expected = tiny_model.predict(read_image(src).data, axes="ZYX", device="cpu")
    np.testing.assert_allclose(img.data, expected, atol=1e-4)


def test_restore_files_folder_glob_and_existing_dir(tiny_model, tmp_path):
    srcs = _write_inputs(tmp_path / "in", 2)
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    out = restore_files([tmp_path / "in"], tmp_path / "res", model=tiny_model, device="cpu")
    assert [p.name for p in out] == ["cell0_restored.tif", "cell1_restored.tif"]
    assert all(p.parent == tmp_path / "res" for p in out)
    out = restore_files([str(tmp_path / "in" / "cell*.tif")], tmp_path / "res2", model=tiny_model)
    assert len(out) == 2
    # one input into an existing folder; dtype=input keeps uint16
    (tmp_path / "one").mkdir()
    out = restore_files([srcs[0]], tmp_path / "one", model=tiny_model, dtype="input")
    assert out == [tmp_path / "one" / "cell0_restored.tif"]
    assert read_image(out[0]).data.dtype == np.uint16
    # an OUT without suffix is a folder, created on demand
    out = restore_files([srcs[1]], tmp_path / "new", model=tiny_model)
    assert out == [tmp_path / "new" / "cell1_restored.tif"]


def test_restore_files_errors_write_nothing(tiny_model, tmp_path):
    srcs = _write_inputs(tmp_path / "in", 2)
    with pytest.raises(InputError, match="no such file"):
        restore_files([tmp_path / "nope.tif"], tmp_path / "o.tif", model=tiny_model)
    with pytest.raises(InputError, match="no images match"):
        restore_files([str(tmp_path / "in" / "*.png")], tmp_path / "o.tif", model=tiny_model)
    with pytest.raises(InputError, match="not a folder"):
        restore_files(srcs, srcs[0], model=tiny_model)
    with pytest.raises(InputError, match="overwrite its input"):
        restore_files([srcs[0]], srcs[0], model=tiny_model)
    with pytest.raises(InputError, match="cannot write this file type"):
        restore_files([srcs[0]], tmp_path / "o.bmp", model=tiny_model)
    # a constant image: the error names the file and no output appears
    const = write_image(tmp_path / "flat.tif", np.full((8, 8), 5, np.uint16), "YX")
    with pytest.raises(InputError, match="flat.tif.*constant"):
        restore_files([const], tmp_path / "flat_out.tif", model=tiny_model)
    # float32 output cannot go to PNG: checked before anything is computed or written
    plane = write_image(tmp_path / "plane.tif", RNG.random((8, 8)).astype(np.float32), "YX")
    with pytest.raises(InputError, match="PNG"):
        restore_files([plane], tmp_path / "x.png", model=tiny_model)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["flat.tif", "in", "plane.tif", "tiny.safetensors"]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["cell0.tif", "cell1.tif"]


# ------------------------------------------------------------------ the training-range check
def _widefield(fc: float, gain: float, n: int = 160, seed: int = 0) -> np.ndarray:
    """Mixed specimen through a widefield PSF with cut-off ``fc``; peak 1, background 0.05."""
    from sharpscope.physics.blur import fft_convolve
    from sharpscope.physics.noise import sensor
    from sharpscope.physics.psf import widefield_psf
    from sharpscope.physics.specimens import make_specimen

    psf = widefield_psf(1.0, 520.0, fc * 0.52, size=65).numpy()
    clean = np.asarray(fft_convolve(make_specimen("mixed", (n, n), seed), psf), dtype=np.float64)
    clean = (0.05 + clean / clean.max()).astype(np.float32)
    return sensor(clean, gain=gain, sigma=0.01, generator=seed + 1)


RANGE = {"cutoff": (0.1, 0.3), "photons": (20.0, 2000.0)}


def _range_warnings(fn, *args, **kw):
    import warnings

    from sharpscope.errors import RangeWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kw)
    return result, [w for w in caught if issubclass(w.category, RangeWarning)]


def test_predict_warns_once_outside_the_training_range(tiny_model):
    tiny_model.header.valid_range = RANGE
    ok = _widefield(fc=0.2, gain=0.01)  # ~95 photons per unit, fc 0.2
    assert tiny_model.check_range(ok) is None
    _, caught = _range_warnings(tiny_model.predict, ok, device="cpu")
    assert caught == []
    # far too noisy: ~0.5 photons per unit normalised intensity
    noisy = _widefield(fc=0.2, gain=2.0)
    _, caught = _range_warnings(tiny_model.predict, np.stack([noisy] * 3), axes="ZYX", device="cpu", tile=64, overlap=16)
    assert len(caught) == 1  # one per image, not per plane or tile
    msg = str(caught[0].message)
    assert msg.startswith("input looks outside the model's training range: estimated ")
    assert "photons per unit intensity (trained 20-2000)" in msg and "\n" not in msg
    assert msg.endswith("results may be unreliable")
    # heavily over-blurred
    blurred = _widefield(fc=0.04, gain=0.01)
    msg = tiny_model.check_range(blurred)
    assert msg is not None and "cut-off frequency" in msg and "(trained 0.1-0.3)" in msg
    # the check can be turned off; no range in the header: no check
    assert _range_warnings(tiny_model.predict, noisy, device="cpu", warn_range=False)[1] == []
    tiny_model.header.valid_range = None
    assert tiny_model.check_range(noisy) is None
    assert _range_warnings(tiny_model.predict, noisy, device="cpu")[1] == []


def test_range_check_measures_what_calibration_measures(tiny_model):
    from sharpscope.estimate import calibrate_valid_range

    images = [_widefield(fc=0.2, gain=0.01, n=128, seed=s) for s in range(3)]
    tiny_model.header.valid_range = calibrate_valid_range(images, quantiles=(0.0, 1.0))
    for img in images:  # the calibration images themselves are within their own range
        assert tiny_model.check_range(img) is None
    # per channel: a multi-channel image is judged channel by channel
    both = np.stack([images[0], _widefield(fc=0.2, gain=2.0, n=128)])
    assert "(channel 1)" in tiny_model.check_range(both, axes="CYX")


def test_restore_files_warns_per_file(tiny_model, tmp_path):
    tiny_model.header.valid_range = RANGE
    write_image(tmp_path / "a_ok.tif", _widefield(fc=0.2, gain=0.01), "YX")
    write_image(tmp_path / "b_noisy.tif", _widefield(fc=0.2, gain=2.0), "YX")
    out, caught = _range_warnings(restore_files, [tmp_path / "*.tif"], tmp_path / "out", model=tiny_model, device="cpu", tile=64, overlap=16)
    assert len(out) == 2 and len(caught) == 1
    assert str(caught[0].message).startswith(f"{tmp_path / 'b_noisy.tif'}: input looks outside")
    _, caught = _range_warnings(restore_files, [tmp_path / "*.tif"], tmp_path / "out2", model=tiny_model, device="cpu", warn_range=False)
    assert caught == []


def test_boolean_images_are_restored_as_0_and_1(tiny_model):
    mask = np.zeros((48, 40), bool)
    mask[10:30, 8:20] = True
    out = tiny_model.predict(mask, axes="YX", warn_range=False)
    np.testing.assert_allclose(
        out, tiny_model.predict(mask.astype(np.float32), axes="YX", warn_range=False)
    )
    assert out.dtype == np.float32 and out.shape == mask.shape


def test_non_finite_prediction_is_an_error_and_writes_nothing(tiny_model, tmp_path):
    import copy

    import tifffile

    from sharpscope.batch import restore_files
    from sharpscope.errors import ModelFormatError

    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in broken.network.parameters():
            p.fill_(float("nan"))
    img = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    with pytest.raises(ModelFormatError, match="non-finite"):
        broken.predict(img, axes="YX", warn_range=False)
    work = tmp_path / "work"
    work.mkdir()
    src = work / "in.tif"
    tifffile.imwrite(src, img)
    with pytest.raises(ModelFormatError):
        restore_files([src], work / "out.tif", model=broken)
    assert sorted(p.name for p in work.iterdir()) == ["in.tif"]


def test_model_exposes_name_description_header_and_training_range(tiny_model, tmp_path):
    from conftest import TINY_MRBCR_HPARAMS
    from sharpscope.models.format import save_model
    from sharpscope.models.registry import build_network

    assert tiny_model.name == "tiny-test" and tiny_model.architecture == "mrbcr"
    assert tiny_model.description.startswith("randomly initialised")
    assert tiny_model.header.tile.size == 64 and tiny_model.tile == (64, 32)
    assert tiny_model.training_range is None
    header = {"name": "ranged", "architecture": "mrbcr", "hparams": TINY_MRBCR_HPARAMS, "valid_range": RANGE}
    path = save_model(tmp_path / "r.safetensors", build_network("mrbcr", **TINY_MRBCR_HPARAMS), header)
    ranged = load_model(path, device="cpu")
    assert ranged.training_range == {k: tuple(map(float, v)) for k, v in RANGE.items()}


def test_python_twins_of_every_command():
    import importlib

    import sharpscope

    for name in ("restore_files", "deconvolve_files", "evaluate", "make_psf", "simulate_dataset", "write_dataset",
                 "prepare", "train", "load_config", "list_models", "import_debcr", "run_demo", "set_threads"):
        # (sharpscope.train is the module once sharpscope.train has been imported: ask its home)
        obj = getattr(importlib.import_module(sharpscope._EXPORTS[name]), name)
        assert callable(obj) and obj.__doc__ and "Examples" in obj.__doc__, name


def test_batch_follows_the_available_memory(tiny_model, monkeypatch):
    import warnings

    import sharpscope.restore as restore_mod
    import sharpscope.runtime as runtime

    seen = []
    real = restore_mod.predict_tiled
    monkeypatch.setattr(restore_mod, "predict_tiled", lambda *a, **k: seen.append(k["batch_size"]) or real(*a, **k))
    img = np.random.default_rng(1).random((200, 200)).astype(np.float32)
    ref = tiny_model.predict(img, axes="YX", tile=64, overlap=16, warn_range=False)
    assert seen[-1] == 8  # plenty of memory: the default
    per_tile = restore_mod.TILE_BYTES_PER_PIXEL * 64 * 64
    monkeypatch.setattr(runtime, "available_memory", lambda: int(2 * 3 * per_tile))
    out = tiny_model.predict(img, axes="YX", tile=64, overlap=16, warn_range=False)
    assert seen[-1] == 3
    np.testing.assert_allclose(out, ref, atol=1e-6)  # the batch changes the cost, not the result
    with pytest.warns(RuntimeWarning, match="batch size 64 needs about"):
        tiny_model.predict(img, axes="YX", tile=64, overlap=16, batch_size=64, warn_range=False)
    assert seen[-1] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.predict(img, axes="YX", tile=64, overlap=16, batch_size=2, warn_range=False)
    assert seen[-1] == 2
    with pytest.raises(ConfigError):
        tiny_model.predict(img, axes="YX", batch_size=0, warn_range=False)


def test_many_tiny_planes_are_batched_not_padded_to_tiles(tiny_model, monkeypatch):
    """256 planes of 2x2: a few network calls on small inputs, not 256 full tiles."""
    calls = []
    net = tiny_model.network
    real_forward = net.forward

    def spy(x):
        calls.append(tuple(x.shape))
        return real_forward(x)

    monkeypatch.setattr(net, "forward", spy)
    img = np.random.default_rng(2).random((4, 4, 4, 4, 2, 2)).astype(np.float32)
    out = tiny_model.predict(img, axes="STCZYX", warn_range=False)
    assert out.shape == img.shape and np.isfinite(out).all()
    planes = 4 * 4 * 4  # S*T*Z per channel, 4 channels
    # + 1: the fast path checks its first output per tile shape against the plain network
    assert calls and len(calls) <= 4 * -(-planes // 8) + 1
    assert all(h <= 8 and w <= 8 and n <= 8 for n, _, h, w in calls)
