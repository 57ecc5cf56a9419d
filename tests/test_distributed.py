"""Multi-process training (DDP, gloo on the CPU): sharding, agreement with one process, resume.

Two kinds of launch: ``sharpscope train --nproc 2`` (torchrun, end to end) once, and
processes forked from this one (the torchrun environment set by hand: the same code path
inside ``train``, without re-importing torch) for the kill-and-resume test.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN_HPARAMS
from sharpscope.errors import ConfigError
from sharpscope.training import CHECKPOINT_NAME, load_checkpoint, load_config, train
from sharpscope.training.distributed import Distributed, ShardedIndices, launch_command

# measured (largest |DDP - one process| / max |one process| over the weights, tiny m-rBCR,
# float32): 1.1e-7 after 6 steps of a 4-sample batch on 2 gloo processes, 1.7e-7 with 8
# samples on 4, 4.4e-7 after 50 steps on 2 -- float rounding of the split gradient sums
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """A small DeBCR-layout npz: blurred + noisy low, sharp gt."""
    rng = np.random.default_rng(0)
    n, s = 24, 48
    gt = np.zeros((n, s, s), np.float32)
    for i in range(n):
        ys, xs = rng.integers(2, s - 2, size=(2, 12))
        gt[i, ys, xs] = rng.random(12) + 0.5
    k = torch.ones(1, 1, 5, 5) / 25.0
    low = torch.nn.functional.conv2d(torch.from_numpy(gt)[:, None], k, padding=2)[:, 0].numpy()
    low = low + 0.02 * rng.standard_normal(low.shape).astype(np.float32)
    path = tmp_path_factory.mktemp("ddp-data") / "pairs.npz"
    np.savez(path, low=low[..., None], gt=gt[..., None])
    return path


def _config(data: Path, out: Path, **kw):
    base = {
        "data.path": str(data),
        "data.val_fraction": 0.25,
        "model.hparams": TINY_TRAIN_HPARAMS,
        "steps": 6,
        "batch_size": 4,
        "patch_size": 32,
        "val_every": 3,
        "out": str(out),
        "plot": False,
        "device": "cpu",
        "amp": False,  # bf16 autocast would round differently per batch size
        "threads": 1,
    }
    base.update(kw)
    return load_config(overrides=base)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(out / CHECKPOINT_NAME)
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        if k.startswith("model/"):
            scale = float(a[k].abs().max()) or 1.0
            worst = max(worst, float((a[k].double() - b[k].double()).abs().max()) / scale)
    return worst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, cfg_yaml: str, resume: bool) -> None:
    """A forked training process with the environment torchrun would give it."""
    code = 0
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        train(load_config(cfg_yaml), resume=resume, progress=False)
    except BaseException:  # noqa: BLE001 - reported, then the process exits non-zero
        traceback.print_exc()
        code = 1
    os._exit(code)


def _fork_ddp(cfg_yaml: Path, resume: bool = False, world: int = 2) -> list:
    ctx = mp.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, str(cfg_yaml), resume)) for r in range(world)]
    for p in procs:
        p.start()
    return procs


def _join(procs: list, timeout: float = 240) -> None:
    for p in procs:
        p.join(timeout)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0] * len(procs), codes


# ----------------------------------------------------------------- sharding


def test_shards_cover_each_global_batch_once():
    b, world = 6, 3
    shards = [list(ShardedIndices(2, 5, b, rank=r, world_size=world)) for r in range(world)]
    for k, s in enumerate(range(2, 5)):  # every step: the global batch, split in rank order
        got = [i for r in range(world) for i in shards[r][2 * k : 2 * k + 2]]
        assert got == list(range(s * b, (s + 1) * b))
    one = ShardedIndices(2, 5, b)
    assert list(one) == list(range(12, 30)) and len(one) == 18 and one[17] == 29
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        ShardedIndices(0, 1, 5, rank=0, world_size=2)
    with pytest.raises(IndexError):
        one[18]


def test_single_process_is_the_identity():
    d = Distributed()
    assert d.start(torch.device("cpu")) == torch.device("cpu") and not d.active
    assert d.agree(True, False) == (True, False)
    assert d.mean(torch.tensor(2.5)) == 2.5
    assert d.from_main(lambda: {"a": 1.0, "b": 2.0}, ("b",)) == {"b": 2.0}
    net = torch.nn.Conv2d(1, 1, 3)
    assert d.wrap(net, torch.device("cpu")) is net
    cmd = launch_command(3, ["cfg.yaml", "--resume"])
    assert cmd[-4:] == ["sharpscope", "train", "cfg.yaml", "--resume"] and "--nproc-per-node=3" in cmd
    with pytest.raises(ConfigError, match="positive integer"):
        launch_command(0, [])


# ----------------------------------------------------------------- end to end


def test_torchrun_two_processes_match_one(pairs, tmp_path):
    """``sharpscope train --nproc 2``: the single-process result, files written by rank 0 alone."""
    single = _config(pairs, tmp_path / "single")
    train(single, progress=False)
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(_config(pairs, tmp_path / "ddp").to_yaml())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "sharpscope", "train", str(cfg), "--nproc", "2", "--no-progress"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 processes (gloo), 2 samples each per step" in res.stdout
    assert res.stdout.count("completed after 6 steps") == 1  # rank 0 alone prints
    assert res.stdout.count("model.safetensors") == 1
    # rank 0 alone writes: the same files as one process, one log row per validation
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )
    log_single = (tmp_path / "single" / "log.csv").read_text().splitlines()
    log_ddp = (tmp_path / "ddp" / "log.csv").read_text().splitlines()
    assert len(log_ddp) == len(log_single) == 1 + 3  # header, steps 1, 3, 6
    diff = _relative_difference(_weights(tmp_path / "single"), _weights(tmp_path / "ddp"))
    assert diff <= TOLERANCE, diff
    # the training loss is the global batch's mean, the validation the same network's
    for a, b in zip(log_single[1:], log_ddp[1:], strict=True):
        va, vb = (np.array(x.split(",")[:4], float) for x in (a, b))
        np.testing.assert_allclose(va, vb, rtol=1e-4)


def test_resume_under_ddp_after_a_kill(pairs, tmp_path):
    """Killed (SIGKILL) mid-run, resumed on two processes: the uninterrupted run's weights."""
    kw = {"steps": 24, "val_every": 8, "checkpoint_every": 1}
    ref_yaml, run_yaml = tmp_path / "ref.yaml", tmp_path / "run.yaml"
    ref_yaml.write_text(_config(pairs, tmp_path / "ref", **kw).to_yaml())
    run_yaml.write_text(_config(pairs, tmp_path / "run", **kw).to_yaml())
    _join(_fork_ddp(ref_yaml))

    procs = _fork_ddp(run_yaml)
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    deadline = time.monotonic() + 240
    step = 0
    while time.monotonic() < deadline and step < 4:
        if ckpt.is_file():
            step = int(load_checkpoint(ckpt)[1]["step"])
        time.sleep(0.02)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(30)
    killed_at = int(load_checkpoint(ckpt)[1]["step"])
    assert 4 <= killed_at < 24, killed_at  # really interrupted mid-run
    _join(_fork_ddp(run_yaml, resume=True))
    _, meta = load_checkpoint(ckpt)
    assert meta["step"] == 24 and meta["stopped"] == "completed"
    ref, got = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert ref.keys() == got.keys()
    for k in ref:  # bit-identical: same shards, same gradient sums, same optimiser state
        assert torch.equal(ref[k], got[k]), k
    # one log row per validation, none twice after the resume
    steps = [line.split(",")[0] for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "8", "16", "24"]


def test_ctrl_c_through_the_launcher_stops_every_rank_with_a_checkpoint(pairs, tmp_path):
    """SIGINT to ``sharpscope train --nproc 2``: one clean stop, the checkpoint, exit 130."""
    cfg = tmp_path / "int.yaml"
    cfg.write_text(_config(pairs, tmp_path / "int", steps=2000, val_every=1000).to_yaml())
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharpscope", "train", str(cfg), "--nproc", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    log = tmp_path / "int" / "log.csv"
    deadline = time.monotonic() + 300
    while not log.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert log.is_file() and proc.poll() is None  # training, past its first validation
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    assert out.count("interrupt: finishing this step") == 1  # rank 0 alone prints
    assert "resume with: sharpscope train -o" in out and "--nproc 2" in out
    _, meta = load_checkpoint(tmp_path / "int" / CHECKPOINT_NAME)
    assert meta["stopped"] == "interrupted" and 1 <= meta["step"] < 2000
    steps = [line.split(",")[0] for line in log.read_text().splitlines()[1:]]
    # the last weights validated once, on rank 0 (unless the stop came right after step 1's)
    assert steps == (["1", str(meta["step"])] if meta["step"] > 1 else ["1"])


def test_the_ddp_wrapper_shows_the_network_attributes(monkeypatch):
    """Tasks read ``net.decimation`` and the like: the DDP wrapper passes them through."""
    import torch.distributed as dist

    from sharpscope.training.distributed import _DDP

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        net = torch.nn.Conv2d(1, 1, 3)
        net.decimation = "avg"
        wrapped = _DDP(net)
        assert wrapped.decimation == "avg" and wrapped.weight is net.weight
        with pytest.raises(AttributeError):
            _ = wrapped.no_such_attribute
    finally:
        dist.destroy_process_group()
