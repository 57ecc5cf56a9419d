"""Property-based fuzzing: random shapes, dtypes, axes strings and corrupted bytes.

Whatever ``read_image``, ``load_model`` and ``Model.predict`` are fed, the only
exceptions that may come out are :class:`~sharpscope.errors.SharpscopeError`
subclasses (the one-line errors of the CLI), and the process's memory stays bounded.
"""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_tiny_model
from sharpscope.errors import SharpscopeError
from sharpscope.io import read_image, write_image
from sharpscope.restore import load_model

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same cases on every run: a failure reproduces
)
SUFFIXES = (".tif", ".tiff", ".ome.tif", ".png", ".npz", ".npy", ".safetensors")
MEMORY_LIMIT = 1.5 * 2**30  # growth of the peak resident memory over the whole module


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture(scope="module")
def start_rss():
    before = _peak_rss()
    yield before
    assert _peak_rss() - before < MEMORY_LIMIT


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("valid")
    img = (np.random.default_rng(0).random((3, 24, 20)) * 1000).astype(np.uint16)
    files = {
        ".tif": write_image(root / "a.tif", img, "ZYX", pixel_size={"Z": 1.0, "Y": 0.1, "X": 0.1}),
        ".ome.tif": write_image(root / "a.ome.tif", img, "ZYX"),
        ".png": write_image(root / "a.png", img[0].astype(np.uint8), "YX"),
        ".npz": write_image(root / "a.npz", img, "ZYX"),
        ".safetensors": make_tiny_model(root / "m.safetensors"),
    }
    return {k: Path(v).read_bytes() for k, v in files.items()}


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=2048))
def test_random_bytes_never_escape_as_tracebacks(tmp_path, start_rss, suffix, data):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    try:
        if suffix == ".safetensors":
            load_model(path, device="cpu")
        else:
            read_image(path)
    except SharpscopeError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(
    kind=st.sampled_from((".tif", ".ome.tif", ".png", ".npz", ".safetensors")),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6),
)
def test_corrupted_files_fail_cleanly(tmp_path, samples, start_rss, kind, cut, flips):
    raw = bytearray(samples[kind])
    for where, xor in flips:
        raw[min(int(where * len(raw)), len(raw) - 1)] ^= xor
    raw = raw[: max(0, int(cut * len(raw))) or len(raw)]
    path = tmp_path / f"c{kind}"
    path.write_bytes(bytes(raw))
    try:
        if kind == ".safetensors":
            model = load_model(path, device="cpu")
            model.predict(np.ones((16, 16), np.float32) * np.arange(16), axes="YX", warn_range=False)
        else:
            image = read_image(path)
            assert image.data.ndim == len(image.axes)
    except SharpscopeError as exc:
        assert "\n" not in str(exc)


DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64", "bool", "complex64", "float16")


@FUZZ
@given(
    shape=st.lists(st.integers(0, 24), min_size=0, max_size=5).filter(
        lambda s: int(np.prod(s)) <= 20_000
    ),
    dtype=st.sampled_from(DTYPES),
    axes=st.one_of(st.none(), st.text(alphabet="STCZYXQ", min_size=0, max_size=6)),
    special=st.sampled_from((None, "nan", "inf", "constant")),
)
def test_restore_takes_any_array_or_says_why_not(tmp_path, start_rss, shape, dtype, axes, special):
    model = _model(tmp_path)
    rng = np.random.default_rng(len(shape))
    arr = (rng.random(shape) * 100).astype(dtype)
    if special == "constant":
        arr = np.zeros(shape, dtype)
    elif special is not None and arr.size and np.issubdtype(arr.dtype, np.floating):
        arr.flat[0] = np.nan if special == "nan" else np.inf
    try:
        out = model.predict(arr, axes=axes, warn_range=False)
    except SharpscopeError as exc:
        assert "\n" not in str(exc)
    else:
        assert out.shape == arr.shape and np.isfinite(out).all()


_MODELS: dict[str, object] = {}


def _model(tmp_path: Path):
    if "tiny" not in _MODELS:
        _MODELS["tiny"] = load_model(make_tiny_model(tmp_path / "tiny.safetensors"), device="cpu")
    return _MODELS["tiny"]
