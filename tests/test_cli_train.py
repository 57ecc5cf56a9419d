"""Tests of the ``sharpscope train`` and ``sharpscope prepare`` commands."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from conftest import TINY_TRAIN_HPARAMS as TINY
from sharpscope.cli import main
from sharpscope.training import CHECKPOINT_NAME, MODEL_NAME, load_checkpoint, load_config


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    (root / "low").mkdir()
    (root / "gt").mkdir()
    for i in range(3):
        gt = np.zeros((64, 80), np.float32)
        ys, xs = rng.integers(0, 64, 30), rng.integers(0, 80, 30)
        gt[ys, xs] = 1000.0
        k = torch.ones(1, 1, 5, 5) / 25.0
        low = torch.nn.functional.conv2d(torch.from_numpy(gt)[None, None], k, padding=2)[0, 0].numpy()
        low = low + rng.normal(100, 5, low.shape)
        tifffile.imwrite(root / "low" / f"cell{i}.tif", low.astype(np.uint16))
        tifffile.imwrite(root / "gt" / f"cell{i}.tif", gt.astype(np.uint16))
    return root


@pytest.fixture(scope="module")
def prepared(folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "data.npz"
    rc = main(
        [
            "prepare", str(folders / "low"), "--gt", str(folders / "gt"), "-o", str(out),
            "--patch-size", "32", "--split", "0.34,0.33,0.33", "--by", "image",
        ]
    )
    assert rc == 0
    return out


def test_prepare_command(prepared, capsys):
    with np.load(prepared, allow_pickle=False) as f:
        assert {"train_low", "train_gt", "val_low", "val_gt", "test_low", "test_gt", "metadata"} <= set(f.files)
        assert f["train_low"].shape[1:] == (32, 32)
        # one image per split, whole images never shared
        imgs = [set(f[f"{s}_origin"][:, 0].tolist()) for s in ("train", "val", "test")]
    assert all(len(s) == 1 for s in imgs) and len(set.union(*imgs)) == 3
    assert prepared.with_suffix(".json").is_file()


def test_prepare_command_errors(folders, tmp_path, capsys):
    rc = main(["prepare", str(folders / "low"), "--gt", str(folders / "gt"), "-o", str(tmp_path / "x.npz"),
               "--patch-size", "32", "--overlap", "40"])
    err = capsys.readouterr().err
    assert rc == 2 and "overlap" in err and err.count("\n") == 1


def _config(tmp_path: Path, **extra) -> Path:
    cfg = {"model": {"arch": "mrbcr", "hparams": TINY}, "batch_size": 4, "patch_size": 32,
           "val_every": 2, "plot": False, "device": "cpu"}
    cfg.update(extra)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_command_resume_and_restore(prepared, folders, tmp_path, capsys):
    from sharpscope.models.registry import build_network, count_parameters

    out = tmp_path / "run"
    rc = main(["train", str(_config(tmp_path)), "--data", str(prepared), "--steps", "4", "--out", str(out),
               "--no-progress", "--seed", "3"])
    text = capsys.readouterr().out
    assert rc == 0
    n = count_parameters(build_network("mrbcr", **TINY))
    assert f"{n:,} parameters" in text
    assert (out / MODEL_NAME).is_file() and (out / CHECKPOINT_NAME).is_file()
    # --resume needs only OUT: the config is read back from OUT/config.yaml; flags still override
    rc = main(["train", "--out", str(out), "--resume", "--steps", "6", "--no-progress"])
    assert rc == 0
    _, meta = load_checkpoint(out / CHECKPOINT_NAME)
    assert meta["step"] == 6 and meta["config"]["seed"] == 3 and meta["config"]["data"]["path"] == str(prepared)
    # --init fine-tunes from a run folder (or any model) into a new run
    tuned = tmp_path / "tuned"
    rc = main(["train", str(_config(tmp_path)), "--data", str(prepared), "--steps", "2", "--out", str(tuned),
               "--no-progress", "--init", str(out)])
    assert rc == 0 and f"initial weights from {out / MODEL_NAME}" in capsys.readouterr().out
    assert load_config(tuned / "config.yaml").model.init == str(out)
    # the run folder is a model for `restore --model`
    restored = tmp_path / "restored.tif"
    rc = main(["restore", str(folders / "low" / "cell0.tif"), "-o", str(restored), "--model", str(out),
               "--no-progress"])
    assert rc == 0
    assert tifffile.imread(restored).shape == (64, 80)


def test_train_command_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 10\nlearning_rate: 0.1\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learning_rate'" in err and err.count("\n") == 1
    assert main(["train", "--steps", "-5", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "steps" in err and err.count("\n") == 1
    assert main(["train", "--device", "tpu", "--out", str(tmp_path / "c")]) == 2
    assert "device" in capsys.readouterr().err
    assert main(["train", "--simulate", "no-such-preset", "--out", str(tmp_path / "d")]) == 2
    assert "no-such-preset" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_train_command_ctrl_c_exits_130_with_a_checkpoint(prepared, tmp_path, capsys, monkeypatch):
    import sharpscope.training as T

    real = T.train

    def train_with_ctrl_c(config, **kw):
        def press(step, logs):
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)

        return real(config, callback=press, **kw)

    monkeypatch.setattr(T, "train", train_with_ctrl_c)
    out = tmp_path / "run"
    rc = main(["train", str(_config(tmp_path)), "--data", str(prepared), "--steps", "8", "--out", str(out),
               "--no-progress"])
    assert rc == 130
    assert "--resume" in capsys.readouterr().err
    _, meta = load_checkpoint(out / CHECKPOINT_NAME)
    assert meta["step"] == 3 and meta["stopped"] == "interrupted"


def test_one_writer_per_run_folder(prepared, tmp_path, capsys):
    """A second `train --out RUN` while another process trains RUN fails at once, writing nothing."""
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "run"
    assert main(["train", str(_config(tmp_path)), "--data", str(prepared), "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from sharpscope.training import run_lock
            with run_lock({str(out)!r}):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        rc = main(["train", "--out", str(out), "--resume", "--steps", "4", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and "in use by another training run" in err and err.count("\n") == 1
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its holder: the run continues
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--no-progress"]) == 0
    assert load_checkpoint(out / CHECKPOINT_NAME)[1]["step"] == 4


def test_bad_training_data_is_one_line_and_creates_nothing(prepared, tmp_path, capsys):
    zero = tmp_path / "zero.tif"
    zero.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("hello, not an image\n")
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros((4, 4)))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(prepared.read_bytes()[:300])
    cases = {zero: "is empty (0 bytes)", text: "is not an .npz archive", npy: "is not an .npz archive",
             truncated: "cannot read"}
    for path, message in cases.items():
        out = tmp_path / f"run-{path.stem}"
        rc = main(["train", "--data", str(path), "--out", str(out), "--steps", "2", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (path.name, err)
        assert err.startswith("sharpscope: error:") and err.count("\n") == 1
        assert "pickle" not in err.lower() and "Traceback" not in err
        assert not out.exists()
