"""The bundled default model `widefield-2d` as it ships in the package."""

from __future__ import annotations

import numpy as np
import pytest

from sharpscope.metrics import psnr
from sharpscope.models.store import DEFAULT_MODEL, bundled_dir, list_models
from sharpscope.restore import load_model
from sharpscope.simulate import simulate_dataset

# a stream the training never drew from (training: seed 0 and its validation stream)
HELD_OUT_SEED = 4_242_4242


@pytest.fixture(scope="module")
def default_model():
    return load_model(None, device="cpu")


def test_default_model_ships_in_the_package(default_model):
    assert (bundled_dir() / f"{DEFAULT_MODEL}.safetensors").is_file()
    assert any(m.name == DEFAULT_MODEL and m.source == "bundled" for m in list_models())
    h = default_model.header
    assert h.name == DEFAULT_MODEL and h.architecture == "mrbcr"
    assert h.training is not None and h.training["data"]["simulate"] == "fluorescence-mix-bright"
    assert h.hparams["noise_input"] is True and default_model.network.noise_input
    assert h.hparams["optics_input"] is True and default_model.uses_optics
    assert h.license and h.provenance


def test_default_model_restores_held_out_simulated_images(default_model):
    data = simulate_dataset("mrbcr-widefield", n=4, size=128, seed=HELD_OUT_SEED)
    gains = []
    for low, gt in zip(data["low"], data["gt"], strict=True):
        out = default_model.predict(low, axes="YX")
        rng = float(gt.max() - gt.min())
        gains.append(psnr(out, gt, data_range=rng) - psnr(low, gt, data_range=rng))
    # the benchmark (docs/benchmarks.md) measures about +8 dB on 24 images of 256x256
    assert np.mean(gains) > 4.0, gains
    assert min(gains) > 1.0, gains


def test_training_configs_of_the_default_model_validate_and_match_it(default_model):
    from pathlib import Path

    from sharpscope.training import config_diff as _config_diff
    from sharpscope.training import load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    first = load_config(configs / "widefield-2d.yaml")
    third = load_config(configs / "widefield-2d-finetune.yaml")
    fifth = load_config(configs / "widefield-2d-nc.yaml")
    sixth = load_config(configs / "widefield-2d-oc.yaml")
    seventh = load_config(configs / "widefield-2d-granular.yaml")
    final = load_config(configs / "widefield-2d-bright-b.yaml")
    h = default_model.header
    for cfg in (first, third, fifth, sixth, seventh, final):
        assert cfg.name == h.name and cfg.model.arch == h.architecture
        assert cfg.model.hparams["decimation"] == h.hparams["decimation"]
        assert (cfg.tile_size, cfg.tile_overlap) == (h.tile.size, h.tile.overlap)
    # the shipped weights: the bright fine-tune (eighth stage, balanced loss) of the granular
    # seventh, itself from the optics-conditioned sixth, started from the widened
    # noise-conditioned fifth, itself from the widened third (the init files are written by
    # noisemap.widen_model, see the configs' comments)
    assert third.model.init == "runs/widefield-2d"  # where the README's first command writes
    assert fifth.model.init == "runs/widefield-2d-nc-init.safetensors"
    assert sixth.model.init == "runs/widefield-2d-oc-init.safetensors"
    assert seventh.model.init == "runs/widefield-2d-oc/model.safetensors"  # where sixth writes
    assert final.model.init == "runs/widefield-2d-granular/model.safetensors"  # where seventh writes
    assert final.loss.sample_balance == 1.0
    assert _config_diff(h.training, final.model_dump(mode="json")) == []
    assert "fine-tuning runs/widefield-2d-granular/model.safetensors" in h.provenance
    assert h.description == final.description and "5-4000 photons" in h.description
