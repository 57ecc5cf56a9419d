"""Tests of sharpscope.training: config validation, loss, trainer, checkpoints, resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN_HPARAMS as TINY
from sharpscope.errors import ConfigError, ModelFormatError
from sharpscope.training import (
    CHECKPOINT_NAME,
    MODEL_NAME,
    TrainConfig,
    fft_loss,
    load_checkpoint,
    load_config,
    lr_at,
    restoration_loss,
    train,
)

# ============================================================================ loss


def test_fft_loss_2d_matches_numpy():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((2, 1, 8, 12)).astype(np.float32)
    g = rng.standard_normal((2, 1, 8, 12)).astype(np.float32)
    diff = np.fft.fft2(p.astype(np.float64)) - np.fft.fft2(g.astype(np.float64))
    ref_backward = np.abs(diff).mean()
    ref_ortho = ref_backward / np.sqrt(8 * 12)
    tp, tg = torch.from_numpy(p), torch.from_numpy(g)
    assert float(fft_loss(tp, tg, "2d", "backward")) == pytest.approx(ref_backward, rel=1e-5)
    assert float(fft_loss(tp, tg, "2d", "ortho")) == pytest.approx(ref_ortho, rel=1e-5)
    assert float(fft_loss(tp, tg)) == pytest.approx(ref_ortho, rel=1e-5)  # default: 2d, ortho


def test_fft_loss_1d_width_is_the_published_rfft2d_on_nhwc():
    rng = np.random.default_rng(1)
    p = rng.standard_normal((3, 16, 16, 1)).astype(np.float32)  # NHWC, as the published code
    g = rng.standard_normal((3, 16, 16, 1)).astype(np.float32)
    # TensorFlow's rfft2d transforms the two innermost axes, here (W, C=1)
    ref = np.abs(np.fft.rfft2(p, axes=(-2, -1)) - np.fft.rfft2(g, axes=(-2, -1))).mean()
    tp = torch.from_numpy(p).permute(0, 3, 1, 2)
    tg = torch.from_numpy(g).permute(0, 3, 1, 2)
    one_d = float(fft_loss(tp, tg, "1d-width"))
    assert one_d == pytest.approx(ref, rel=1e-5)
    # and it is not the 2-D transform (with either normalisation)
    assert abs(one_d - float(fft_loss(tp, tg, "2d", "backward"))) > 0.1 * one_d
    assert abs(one_d - float(fft_loss(tp, tg, "2d"))) > 0.1 * one_d
    # not a transpose accident either: the 1-D transform along H differs
    ref_h = np.abs(np.fft.fft(p, axis=1) - np.fft.fft(g, axis=1)).mean()
    assert abs(one_d - ref_h) > 1e-3 * one_d


@pytest.mark.parametrize("decimation", ["stride", "avgpool"])
def test_restoration_loss_hand_computed(decimation):
    rng = np.random.default_rng(2)
    gt = rng.random((2, 1, 8, 8))
    outs = [rng.random((2, 1, 8 // f, 8 // f)) for f in (1, 2, 4)]

    def coarse(x, f):
        if decimation == "stride":
            return x[..., ::f, ::f]
        n, c, h, w = x.shape
        return x.reshape(n, c, h // f, f, w // f, f).mean(axis=(3, 5))

    ref = 0.0
    for o, f in zip(outs, (1, 2, 4), strict=True):
        t = coarse(gt, f)
        mse = np.mean((o - t) ** 2)
        fft = np.abs(np.fft.fft2(o) - np.fft.fft2(t)).mean() / np.sqrt(t.shape[-1] * t.shape[-2])
        ref += mse + 0.5 * fft
    total, parts = restoration_loss(
        [torch.tensor(o, dtype=torch.float32) for o in outs],
        torch.tensor(gt, dtype=torch.float32),
        fft_weight=0.5,
        decimation=decimation,
    )
    assert float(total) == pytest.approx(ref, rel=1e-5)
    assert len(parts) == 3
    # a 1-tuple baseline is scored at full resolution only
    single, _ = restoration_loss([torch.tensor(outs[0], dtype=torch.float32)], torch.tensor(gt, dtype=torch.float32))
    assert float(single) < float(total)


def test_sample_balanced_loss_hand_computed_and_weights_relative_error():
    from sharpscope.training.losses import BALANCE_EPS

    rng = np.random.default_rng(5)
    gt = rng.random((3, 1, 8, 8))
    outs = [gt + np.array([0.01, 0.1, 0.3])[:, None, None, None] * rng.normal(size=gt.shape),
            rng.random((3, 1, 4, 4))]
    per = np.zeros(3)
    for o, f in zip(outs, (1, 2), strict=True):
        t = gt.reshape(3, 1, 8 // f, f, 8 // f, f).mean(axis=(3, 5))
        d = o - t
        per += (d**2).mean(axis=(1, 2, 3)) + 0.5 * np.abs(np.fft.fft2(d)).mean(axis=(1, 2, 3)) / (8 // f)
    w = (per + BALANCE_EPS) ** -1.0
    w /= w.mean()
    tt = [torch.tensor(o, dtype=torch.float32) for o in outs]
    g = torch.tensor(gt, dtype=torch.float32)
    total, parts = restoration_loss(tt, g, decimation="avgpool", sample_balance=1.0)
    assert float(total) == pytest.approx(float((w * per).mean()), rel=1e-5)
    # the per-scale parts are the plain means, as without balance
    plain, plain_parts = restoration_loss(tt, g, decimation="avgpool")
    assert float(plain) == pytest.approx(per.mean(), rel=1e-5)
    assert [float(a) for a in parts] == pytest.approx([float(b) for b in plain_parts], rel=1e-5)
    # the gradient reaches the nearly clean sample: with the plain mean the noisiest one dominates
    # (pure MSE: the gradients scale with the errors, 30x apart, and with balance 1 inversely)
    def grads(balance):
        x = tt[0].clone().requires_grad_(True)
        loss, _ = restoration_loss([x], g, fft_weight=0.0, sample_balance=balance)
        loss.backward()
        return x.grad.flatten(1).norm(dim=1)
    g0, g1 = grads(0.0), grads(1.0)
    assert float(g0[2] / g0[0]) > 10 and float(g1[2] / g1[0]) < 0.5  # (the clean one at the floor)
    with pytest.raises(ConfigError, match="sample_balance"):
        restoration_loss(tt, g, sample_balance=1.5)
    with pytest.raises(ValueError):
        TrainConfig(loss={"sample_balance": -0.1})


def test_lr_schedule():
    cfg = TrainConfig(steps=10, lr=1e-3)
    assert lr_at(cfg, 0) == lr_at(cfg, 9) == 1e-3
    cos = TrainConfig(steps=10, lr=1e-3, lr_schedule="cosine", min_lr=1e-4)
    assert lr_at(cos, 0) == pytest.approx(1e-3)
    assert lr_at(cos, 10) == pytest.approx(1e-4)
    assert lr_at(cos, 5) == pytest.approx(0.55e-3)
    warm = TrainConfig(steps=10, lr=1e-3, warmup_steps=4)
    assert [lr_at(warm, k) for k in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert lr_at(cos.model_copy(update={"warmup_steps": 2}), 0) == pytest.approx(0.5e-3)


# ============================================================================ config


def _err(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_config_errors_are_one_line(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 10\nfoo: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(y)
    assert "unknown key 'foo'" in _err(e)
    y.write_text("data:\n  bogus: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(y)
    assert "data.bogus" in _err(e)
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"steps": -5})
    assert "steps" in _err(e) and "-5" in _err(e)
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"device": "tpu"})
    assert "device" in _err(e)
    y.write_text("steps: [1, 2\nlr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(y)
    assert "invalid YAML" in _err(e) and "line" in _err(e)
    y.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(y)
    assert "mapping" in _err(e)
    y.write_text("data:\n  simulate: mrbcr-widefield\n  path: x.npz\n")
    with pytest.raises(ConfigError) as e:
        load_config(y)
    assert "not both" in _err(e)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in _err(e)
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"loss.fft_mode": "3d"})
    assert "loss.fft_mode" in _err(e)
    # the config validates assignments too
    cfg = TrainConfig()
    with pytest.raises(ValueError, match="batch_size"):
        cfg.batch_size = 0


def test_config_yaml_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 10\nlr: 0.01\ndata:\n  path: pairs.npz\nmodel:\n  arch: srbcr\n")
    cfg = load_config(y, {"steps": 20, "batch_size": None})
    assert cfg.steps == 20 and cfg.lr == 0.01 and cfg.batch_size is None  # set by the device
    from sharpscope.training import with_device_defaults

    assert with_device_defaults(cfg, "cuda").batch_size == 16 and with_device_defaults(cfg, "cpu").batch_size == 8
    assert cfg.data.path == "pairs.npz" and cfg.data.simulate is None and cfg.model.arch == "srbcr"
    cfg2 = load_config(y, {"data.simulate": "mrbcr-widefield"})
    assert cfg2.data.path is None and cfg2.data.simulate == "mrbcr-widefield"
    # round trip through YAML
    (tmp_path / "d.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "d.yaml") == cfg
    assert TrainConfig().data.simulate == "mrbcr-widefield"


# ============================================================================ trainer


@pytest.fixture(scope="module")
def pairs_npz(tmp_path_factory) -> Path:
    """A small DeBCR-layout npz: blurred + noisy low, sharp gt (NHWC)."""
    rng = np.random.default_rng(0)
    n, s = 24, 48
    gt = np.zeros((n, s, s), np.float32)
    for i in range(n):
        ys, xs = rng.integers(2, s - 2, size=(2, 12))
        gt[i, ys, xs] = rng.random(12) + 0.5
    k = torch.ones(1, 1, 5, 5) / 25.0
    low = torch.nn.functional.conv2d(torch.from_numpy(gt)[:, None], k, padding=2)[:, 0].numpy()
    low = low + 0.02 * rng.standard_normal(low.shape).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "pairs.npz"
    np.savez(path, low=low[..., None], gt=gt[..., None])
    return path


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = {
        "data.path": str(data),
        "data.val_fraction": 0.25,
        "model.hparams": TINY,
        "steps": 6,
        "batch_size": 4,
        "patch_size": 32,
        "val_every": 2,
        "out": str(out),
        "plot": False,
        "device": "cpu",
    }
    base.update(kw)
    return load_config(overrides=base)


def _ckpt_tensors(out: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(out / CHECKPOINT_NAME)
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _log_rows(out: Path) -> list[dict]:
    with (out / "log.csv").open() as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference_run(pairs_npz, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    res = train(_cfg(pairs_npz, out, plot=True), progress=False)
    assert res.steps_done == 6 and res.stopped == "completed"
    return out


def test_resume_after_kill_gives_identical_weights(pairs_npz, reference_run, tmp_path):
    """A process SIGKILLed mid-run, then resumed, ends bit-identical to an uninterrupted run."""
    out = tmp_path / "killed"
    cfg = _cfg(pairs_npz, out)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        import torch
        torch.set_num_threads(1)
        from sharpscope.training import TrainConfig, train
        cfg = TrainConfig.model_validate_json(Path({str(tmp_path / "cfg.json")!r}).read_text())
        def cb(step, logs):
            if step == 5:  # after the checkpoint of step 4, before the one of step 6
                os.kill(os.getpid(), signal.SIGKILL)
        train(cfg, progress=False, callback=cb)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _, meta = load_checkpoint(out / CHECKPOINT_NAME)
    assert meta["step"] == 4 and meta["data"]["sample_index"] == 16
    res = train(cfg, resume=True, progress=False)
    assert res.steps_done == 6
    _assert_same(_ckpt_tensors(out), _ckpt_tensors(reference_run))
    assert _log_rows(out) == _log_rows(reference_run)
    from sharpscope.models.format import load_network

    _, best_a = load_network(out / MODEL_NAME)
    _, best_b = load_network(reference_run / MODEL_NAME)
    for (ka, va), (kb, vb) in zip(best_a.state_dict().items(), best_b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


@pytest.fixture
def default_sigint():
    """SIGINT at Python's default handler, whatever the suite was started with.

    A shell starts background jobs (``make test &``, ``nohup``) with SIGINT ignored.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_saves_a_resumable_checkpoint(pairs_npz, reference_run, tmp_path, default_sigint):
    out = tmp_path / "ctrlc"
    cfg = _cfg(pairs_npz, out)

    def press_ctrl_c(step, logs):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    res = train(cfg, progress=False, callback=press_ctrl_c)
    assert res.stopped == "interrupted" and res.steps_done == 3
    _, meta = load_checkpoint(out / CHECKPOINT_NAME)
    assert meta["step"] == 3 and meta["stopped"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    # a KeyboardInterrupt raised between steps is handled the same way
    def raise_interrupt(step, logs):
        if step == 5:
            raise KeyboardInterrupt

    res = train(cfg, resume=True, progress=False, callback=raise_interrupt)
    assert res.stopped == "interrupted" and res.steps_done == 5
    res = train(cfg, resume=True, progress=False)
    assert res.stopped == "completed" and res.steps_done == 6
    _assert_same(_ckpt_tensors(out), _ckpt_tensors(reference_run))


def test_outputs_model_header_and_log(pairs_npz, reference_run):
    from sharpscope.models.format import load_network
    from sharpscope.restore import load_model

    header, net = load_network(reference_run / MODEL_NAME)
    cfg = _cfg(pairs_npz, reference_run, plot=True)
    assert header.training == cfg.model_dump(mode="json")
    assert header.architecture == "mrbcr" and header.hparams["channels"] == 4
    assert (header.normalization.pmin, header.normalization.pmax) == (1.0, 99.8)
    model = load_model(reference_run, device="cpu")  # a run folder is a model
    img = np.random.default_rng(0).random((40, 52)).astype(np.float32)
    assert model.predict(img).shape == (40, 52)
    rows = _log_rows(reference_run)
    assert [int(r["step"]) for r in rows] == [1, 2, 4, 6]  # a first validation after one step
    assert set(rows[0]) == {"step", "loss", "val_loss", "val_psnr", "lr"}
    assert (reference_run / "loss.png").stat().st_size > 1000
    assert load_config(reference_run / "config.yaml") == cfg


def test_existing_run_is_protected_and_resume_checks_config(pairs_npz, reference_run):
    with pytest.raises(ConfigError, match="--resume"):
        train(_cfg(pairs_npz, reference_run), progress=False)
    with pytest.raises(ConfigError, match="lr"):
        train(_cfg(pairs_npz, reference_run, lr=0.01), resume=True, progress=False)
    # resuming a finished run with the same steps does nothing
    res = train(_cfg(pairs_npz, reference_run), resume=True, progress=False)
    assert res.steps_done == 6


def test_init_starts_from_another_models_weights(pairs_npz, reference_run, tmp_path):
    """model.init fine-tunes: the run starts from the given model's weights, not a random draw."""
    from sharpscope.models.format import load_network

    _, ref_net = load_network(reference_run / MODEL_NAME)
    tiny_lr = {"lr": 1e-12, "steps": 2, "val_every": 1}
    tuned = train(_cfg(pairs_npz, tmp_path / "tuned", **{"model.init": str(reference_run), **tiny_lr}), progress=False)
    fresh = train(_cfg(pairs_npz, tmp_path / "fresh", seed=7, **tiny_lr), progress=False)
    tuned_header, tuned_net = load_network(tuned.best_path)
    assert f"fine-tuning {reference_run}" in tuned_header.provenance
    _, fresh_net = load_network(fresh.best_path)
    ref_sd, tuned_sd, fresh_sd = ref_net.state_dict(), tuned_net.state_dict(), fresh_net.state_dict()
    assert all(torch.allclose(tuned_sd[k], ref_sd[k], atol=1e-6) for k in ref_sd)
    assert not all(torch.allclose(fresh_sd[k], ref_sd[k], atol=1e-3) for k in ref_sd)
    ref_best = max(float(r["val_psnr"]) for r in _log_rows(reference_run))
    assert float(_log_rows(tmp_path / "tuned")[0]["val_psnr"]) == pytest.approx(ref_best, abs=1e-3)
    # without model.arch / model.hparams the init model's are adopted (and saved in the config)
    base = {"data.path": str(pairs_npz), "data.val_fraction": 0.25, "steps": 1, "batch_size": 4, "patch_size": 32,
            "out": str(tmp_path / "adopted"), "plot": False, "device": "cpu", "model.init": str(reference_run)}
    adopted = train(load_config(overrides=base), progress=False)
    assert load_config(tmp_path / "adopted" / "config.yaml").model.hparams == ref_net.hparams
    assert adopted.steps_done == 1
    # an explicitly configured architecture must match the init model's
    other = {**TINY, "channels": 8}
    with pytest.raises(ConfigError, match="model.init"):
        train(_cfg(pairs_npz, tmp_path / "bad", **{"model.init": str(reference_run), "model.hparams": other}), progress=False)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    with pytest.raises(ModelFormatError):
        train(_cfg(pairs_npz, tmp_path / "missing", **{"model.init": str(tmp_path / "nope")}), progress=False)
    assert not (tmp_path / "missing").exists()


def test_best_checkpoint_survives_when_validation_gets_worse(pairs_npz, tmp_path, monkeypatch):
    import sharpscope.models.registry as registry

    nets = []
    build = registry.build_network

    def capture(*a, **k):
        nets.append(build(*a, **k))
        return nets[0]

    monkeypatch.setattr(registry, "build_network", capture)
    snapshot = {}

    def wreck_after_step_4(step, logs):
        if step == 4:
            snapshot.update({k: v.clone() for k, v in nets[0].state_dict().items()})
            with torch.no_grad():
                g = torch.Generator().manual_seed(0)
                for p in nets[0].parameters():
                    p.add_(torch.randn(p.shape, generator=g))

    out = tmp_path / "worse"
    res = train(_cfg(pairs_npz, out, steps=20, patience=1), progress=False, callback=wreck_after_step_4)
    assert res.stopped == "early_stopped" and res.steps_done == 6
    assert res.best_step == 4
    rows = {int(r["step"]): r for r in _log_rows(out)}
    assert sorted(rows) == [1, 2, 4, 6]
    assert float(rows[6]["val_psnr"]) < float(rows[4]["val_psnr"])
    assert res.best_val_psnr == pytest.approx(float(rows[4]["val_psnr"]), rel=1e-5)
    from sharpscope.models.format import load_network

    _, best = load_network(out / MODEL_NAME)
    for k, v in best.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    last = _ckpt_tensors(out)
    assert any(not torch.equal(last[f"model/{k}"], v) for k, v in snapshot.items())


def test_patch_size_must_fit_the_network(pairs_npz, tmp_path):
    with pytest.raises(ConfigError, match="multiple of 4"):
        train(_cfg(pairs_npz, tmp_path / "x", patch_size=30), progress=False)


def test_time_limit_stops_cleanly(pairs_npz, tmp_path):
    res = train(_cfg(pairs_npz, tmp_path / "t", max_minutes=1e-9), progress=False)
    assert res.stopped == "time_limit" and res.steps_done == 0
    _, meta = load_checkpoint(tmp_path / "t" / CHECKPOINT_NAME)
    assert meta["step"] == 0


def test_brief_training_on_simulated_pairs_lowers_validation_loss(tmp_path):
    out = tmp_path / "sim"
    cfg = load_config(
        overrides={
            "data.simulate": "mrbcr-widefield",
            "model.hparams": TINY,
            "steps": 1,
            "val_every": 1,
            "batch_size": 4,
            "patch_size": 32,
            "val_size": 8,
            "lr": 1e-2,
            "patience": None,
            "out": str(out),
            "plot": False,
            "device": "cpu",
        }
    )
    train(cfg, progress=False)  # one step, then a validation: the baseline
    res = train(cfg.model_copy(update={"steps": 60, "val_every": 60}), resume=True, progress=False)
    rows = _log_rows(out)
    assert [int(r["step"]) for r in rows] == [1, 60]
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    assert last < 0.7 * first, (first, last)
    assert float(rows[-1]["val_psnr"]) > float(rows[0]["val_psnr"])
    assert res.steps_done == 60 and res.best_step == 60
    _, meta = load_checkpoint(out / CHECKPOINT_NAME)
    assert meta["data"]["sample_index"] == 60 * 4


def test_prepared_data_records_its_percentiles_in_the_model(tmp_path):
    from sharpscope.data import prepare
    from sharpscope.models.format import read_header

    rng = np.random.default_rng(5)
    lows = [rng.random((64, 64)).astype(np.float32) for _ in range(3)]
    data = prepare(lows, [a**2 for a in lows], tmp_path / "p.npz", patch_size=32, pmin=0.5, pmax=99.5,
                   split=(1, 1, 1)).path
    train(_cfg(data, tmp_path / "run", steps=2, **{"data.val_fraction": 0.1}), progress=False)
    header = read_header(tmp_path / "run" / MODEL_NAME)
    assert (header.normalization.pmin, header.normalization.pmax) == (0.5, 99.5)


def test_tiff_folder_holds_out_whole_files_for_validation(tmp_path):
    import tifffile

    from sharpscope.training.tasks import _build_data

    rng = np.random.default_rng(6)
    (tmp_path / "low").mkdir()
    (tmp_path / "gt").mkdir()
    imgs = {}
    for i in range(4):
        a = rng.random((64, 64)).astype(np.float32) * (i + 1)
        tifffile.imwrite(tmp_path / "low" / f"f{i}.tif", a)
        tifffile.imwrite(tmp_path / "gt" / f"f{i}.tif", a * 2)
        lo, hi = np.percentile(a, [1.0, 99.8])
        imgs[f"f{i}.tif"] = (a - lo) / (hi - lo)
    cfg = _cfg(tmp_path, tmp_path / "run", **{"data.val_fraction": 0.25})
    data = _build_data(cfg)
    train_files = set(data.train.images.names)
    assert len(train_files) == 3
    (held,) = set(imgs) - train_files
    # every validation patch is a tile of the held-out file, none of a training file
    for patch in data.val_low[:, 0].numpy():
        assert any(
            np.allclose(imgs[held][y : y + 32, x : x + 32], patch, atol=1e-5) for y in (0, 32) for x in (0, 32)
        )
    assert len(data.val_low) == 4


def test_hostile_resume_checkpoint_and_config_are_refused(pairs_npz, reference_run, tmp_path):
    """--resume with NaN weights or absurd hyper-parameters: one-line errors, nothing allocated."""
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    ckpt = run / CHECKPOINT_NAME
    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(ckpt)
    key = next(k for k in sorted(tensors) if k.startswith("model/"))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(ckpt), metadata=metadata)
    with pytest.raises(ModelFormatError, match="NaN or infinite"):
        train(_cfg(pairs_npz, run, steps=8), resume=True, progress=False)
    with pytest.raises(ConfigError, match="more than the limit"):
        train(_cfg(pairs_npz, tmp_path / "huge", **{"model.hparams": {**TINY, "channels": 200000}}),
              progress=False)
    assert not (tmp_path / "huge").exists()


def test_trained_model_records_the_range_it_was_trained_for(tmp_path):
    """The header's valid_range is what the estimators measure on the training inputs."""
    from sharpscope.estimate import calibrate_valid_range
    from sharpscope.models.format import read_header

    cfg = load_config(overrides={
        "data.simulate": "mrbcr-widefield", "model.hparams": TINY, "steps": 1, "batch_size": 2,
        "patch_size": 64, "val_every": 1, "val_size": 16, "out": str(tmp_path / "run"),
        "plot": False, "device": "cpu",
    })
    res = train(cfg, progress=False)
    vr = read_header(res.best_path).valid_range
    assert vr is not None and vr.photons[0] < vr.photons[1] and 0 < vr.cutoff[0] < vr.cutoff[1] <= 0.5
    # the mrbcr-widefield preset's Poisson gain is 0.01-0.05: 20-100 photons at the peak
    assert 5 < vr.photons[0] and vr.photons[1] < 500
    from sharpscope import data as D

    val = D.SimulatedPatches("mrbcr-widefield", 64, seed=cfg.seed, stream=1, augment=None)
    low, _ = D.stack_samples(val, range(16))
    assert calibrate_valid_range(list(low[:, 0].numpy())) == vr


# ============================================================================ a first model on a laptop


def test_cpu_defaults_when_no_gpu(pairs_npz, tmp_path):
    """Batch and patch size left unset are sized for the CPU (8 of 64 x 64; 16 of 128 x 128 on a GPU)."""
    out = tmp_path / "cpu"
    cfg = _cfg(pairs_npz, out, batch_size=None, patch_size=None, steps=1, **{"data.val_fraction": 0.5})
    assert cfg.batch_size is None and cfg.patch_size is None
    data = np.load(pairs_npz)
    big = tmp_path / "big.npz"  # 64 x 64 patches need images of at least that size
    np.savez(big, low=np.tile(data["low"], (1, 2, 2, 1)), gt=np.tile(data["gt"], (1, 2, 2, 1)))
    res = train(cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(big)})}), progress=False)
    assert res.steps_done == 1
    saved = load_config(out / "config.yaml")
    assert (saved.batch_size, saved.patch_size, saved.steps) == (8, 64, 1)
    assert TrainConfig().steps is None  # 2000 on the CPU, 20000 on a GPU


def test_log_and_model_from_the_first_step_and_ctrl_c_keeps_weights(pairs_npz, tmp_path):
    from sharpscope.restore import load_model

    out = tmp_path / "early"
    seen = {}

    def stop_at_3(step, logs):
        if step == 1:
            seen["log"] = (out / "log.csv").is_file()
            seen["model"] = (out / MODEL_NAME).is_file()
        if step == 3:
            raise KeyboardInterrupt

    res = train(_cfg(pairs_npz, out, steps=50, val_every=40), progress=False, callback=stop_at_3)
    assert seen == {"log": True, "model": True}
    assert res.stopped == "interrupted" and res.steps_done == 3
    assert [int(r["step"]) for r in _log_rows(out)] == [1, 3]  # the interrupted step is validated
    assert res.best_path == out / MODEL_NAME and res.best_step in (1, 3)
    model = load_model(out, device="cpu")
    assert model.predict(np.random.default_rng(1).random((40, 44)).astype(np.float32)).shape == (40, 44)
    # resuming continues the same run
    res = train(_cfg(pairs_npz, out, steps=4, val_every=40), resume=True, progress=False)
    assert res.steps_done == 4 and res.stopped == "completed"


def test_eta_on_status_lines_and_on_the_progress_bar(pairs_npz, tmp_path, monkeypatch, capsys):
    import sharpscope.training.loop as T

    monkeypatch.setattr(T, "STATUS_SECONDS", 0.0)
    lines: list[str] = []
    train(_cfg(pairs_npz, tmp_path / "quiet", steps=4, val_every=4), progress=False, log=lines.append)
    status = [x for x in lines if x.startswith("step ")]
    assert [x.split(":")[0] for x in status] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert all(" s/step, ETA " in x for x in status)
    assert "val_psnr" in status[0] and "val_psnr" in status[-1]
    capsys.readouterr()
    train(_cfg(pairs_npz, tmp_path / "bar", steps=2, val_every=2), progress=True)
    assert "eta=" in capsys.readouterr().err


def test_format_duration():
    from sharpscope.training import format_duration

    assert [format_duration(x) for x in (0, 59.6, 61, 3600, float("nan"))] == ["0s", "1m00s", "1m01s", "1h00m", "?"]


def test_threads_are_capped_at_the_cores(pairs_npz, tmp_path):
    from sharpscope.runtime import physical_cores

    seen = []
    train(_cfg(pairs_npz, tmp_path / "t", steps=1, threads=10_000), progress=False,
          callback=lambda step, logs: seen.append(torch.get_num_threads()))
    assert seen == [physical_cores()] and torch.get_num_threads() == 1


def test_batch_and_patch_sizes_are_checked_against_memory(tmp_path):
    cfg = load_config(overrides={
        "data.simulate": "mrbcr-widefield", "model.hparams": TINY, "steps": 1, "batch_size": 100000,
        "patch_size": 512, "out": str(tmp_path / "run"), "plot": False, "device": "cpu",
    })
    with pytest.raises(ConfigError, match="training batches of 100000 x 512x512 needs about"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


# ============================================================================ run folders of earlier versions

OLD_RUN = Path(__file__).parent / "data" / "old-format-run"
"""Written by ``sharpscope.train`` at commit 536eb94, before the trainer became a package:
4 steps of a tiny m-rBCR on 'mrbcr-widefield' (16x16 patches, float32), its checkpoint,
log.csv, config.yaml and best model, exactly as that code left them."""


def _old_run_config(out: Path, steps: int) -> TrainConfig:
    return load_config(OLD_RUN / "config.yaml", {"steps": steps, "out": str(out)})


def test_a_run_folder_written_before_the_training_package_resumes(tmp_path):
    import shutil

    from safetensors import safe_open

    out = tmp_path / "old"
    shutil.copytree(OLD_RUN, out)
    tensors_old, meta_old = load_checkpoint(out / CHECKPOINT_NAME)
    assert "task" not in meta_old["config"] and "psfid" not in meta_old["config"]  # the old schema
    rows_old = _log_rows(out)
    res = train(_old_run_config(out, 8), resume=True, progress=False)
    assert res.steps_done == 8 and res.stopped == "completed"
    rows = _log_rows(out)
    assert rows[:3] == rows_old and [r["step"] for r in rows] == ["1", "2", "4", "6", "8"]
    # the checkpoint the new code writes has the layout of the old one
    tensors_new, meta_new = load_checkpoint(out / CHECKPOINT_NAME)
    assert tensors_new.keys() == tensors_old.keys()
    assert set(meta_new) == set(meta_old) and set(meta_new["best"]) == set(meta_old["best"])
    with safe_open(str(out / CHECKPOINT_NAME), framework="pt") as f:
        assert set(f.metadata()) == {"sharpscope_checkpoint"}
    # and the run continued from the old weights: it ends where a fresh run of the new code ends
    ref = tmp_path / "fresh"
    train(_old_run_config(ref, 8), progress=False)
    a, b = _ckpt_tensors(out), _ckpt_tensors(ref)
    assert a.keys() == b.keys()
    for k in a:  # float32 on any CPU: the first 4 steps were computed elsewhere
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    from sharpscope.models.format import load_network

    header, _ = load_network(out / MODEL_NAME)
    assert header.training["task"] == "restoration"


def test_resume_from_a_checkpoint_of_the_old_schema_is_bit_exact(pairs_npz, reference_run, tmp_path):
    """A checkpoint whose config lacks the fields added with the tasks resumes bit-identically."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "run"
    train(_cfg(pairs_npz, out, steps=4), progress=False)
    path = out / CHECKPOINT_NAME
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["sharpscope_checkpoint"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key in ("task", "psfid"):
        del meta["config"][key]
    save_file(tensors, str(path), metadata={"sharpscope_checkpoint": json.dumps(meta)})
    res = train(_cfg(pairs_npz, out), resume=True, progress=False)
    assert res.steps_done == 6
    _assert_same(_ckpt_tensors(out), _ckpt_tensors(reference_run))
    assert _log_rows(out) == _log_rows(reference_run)


def test_old_configs_still_load_and_name_the_restoration_task():
    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(configs.glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.task == ("psf-identification" if path.stem.startswith("psfid") else "restoration"), path.name


def test_a_task_and_its_architecture_must_agree():
    with pytest.raises(ConfigError, match="psfnet"):
        load_config(overrides={"task": "psf-identification"})
    with pytest.raises(ConfigError, match="not a restoration network"):
        load_config(overrides={"model.arch": "psfnet"})
