"""Shared test fixtures: small model files built on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# a randomly initialised m-rBCR small enough for fast tests (same topology as the published one)
TINY_MRBCR_HPARAMS = dict(
    channels=8,
    dense_layers=2,
    conv1d_filters=8,
    conv1d_layers=2,
    rdb_blocks=1,
    rdb_growth=4,
    rdb_layers=1,
    out_kernel=3,
)


# an even smaller m-rBCR for training tests (seconds per run)
TINY_TRAIN_HPARAMS = dict(
    channels=4,
    dense_layers=2,
    conv1d_filters=4,
    conv1d_layers=1,
    rdb_blocks=1,
    rdb_growth=2,
    rdb_layers=1,
    out_kernel=3,
)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run the suite on one torch thread.

    Tiny networks run fastest on one thread, oversubscribed intra-op threads slow them
    down by an order of magnitude on a shared 2-core machine, and bit-exact resume on
    the CPU needs the same thread count before and after (tests/test_train.py).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny_model(path: Path, seed: int = 0, tile: int = 64, overlap: int = 32) -> Path:
    """Save a randomly initialised small 'mrbcr' model file at ``path``."""
    import torch

    from sharpscope.models.format import save_model
    from sharpscope.models.registry import build_network

    torch.manual_seed(seed)
    net = build_network("mrbcr", **TINY_MRBCR_HPARAMS)
    header = {
        "name": "tiny-test",
        "description": "randomly initialised small m-rBCR for tests",
        "architecture": "mrbcr",
        "hparams": TINY_MRBCR_HPARAMS,
        "tile": {"size": tile, "overlap": overlap},
        "provenance": "tests/conftest.py, random initialisation",
        "license": "BSD-3-Clause",
    }
    return save_model(path, net, header)


def make_tiny_optics_model(path: Path, seed: int = 5) -> Path:
    """Save a small noise- and optics-conditioned 'mrbcr' model file at ``path``.

    Its FiLM blocks are randomised far from the identity, so the optics change its output.
    """
    from sharpscope.models.format import save_model
    from sharpscope.models.mrbcr import MRBCR

    hp = dict(TINY_MRBCR_HPARAMS, noise_input=True, optics_input=True)
    torch.manual_seed(seed)
    net = MRBCR(**hp)
    with torch.no_grad():
        for films in net.film.values():
            for film in films:
                film.out.weight.normal_(0, 1.0)
    header = {
        "name": "tiny-optics",
        "description": "randomly initialised optics-conditioned m-rBCR for tests",
        "architecture": "mrbcr",
        "hparams": hp,
        "tile": {"size": 64, "overlap": 32},
        "provenance": "tests/conftest.py, random initialisation",
        "license": "BSD-3-Clause",
    }
    return save_model(path, net, header)


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    """Path of a small randomly initialised 'mrbcr' model file (tile 64, overlap 32)."""
    return make_tiny_model(tmp_path / "tiny.safetensors")


@pytest.fixture
def tiny_model(tiny_model_path: Path):
    """The tiny model loaded on the CPU as a :class:`sharpscope.restore.Model`."""
    from sharpscope.restore import load_model

    return load_model(tiny_model_path, device="cpu")
