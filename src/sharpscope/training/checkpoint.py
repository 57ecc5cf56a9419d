"""The run folder: resumable checkpoints, the CSV log, the loss plot and the run lock.

``OUT/last.ckpt.safetensors`` is the resumable state: weights, Adam state (tensors,
flattened with names), torch/numpy/python RNG states, GradScaler state, the step,
the data position and the early-stopping book-keeping -- tensors in safetensors,
everything else JSON in its metadata under ``sharpscope_checkpoint`` (format
``sharpscope-checkpoint`` version 1); no pickle.  The layout is the same for every
task, and the same as before the trainer became a package, so a run folder written
by an earlier sharpscope resumes unchanged.  ``OUT/log.csv`` has one row per
validation (``step, loss, val_loss, <the task's metrics>, lr, time``; for
restoration exactly :data:`LOG_COLUMNS`).  Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sharpscope.errors import ConfigError, InputError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEY",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOCK_NAME",
    "LOG_COLUMNS",
    "LOG_NAME",
    "MODEL_NAME",
    "PLOT_NAME",
    "data_position",
    "load_checkpoint",
    "plot_log",
    "read_log",
    "restore_checkpoint",
    "run_lock",
    "save_checkpoint",
    "write_log",
]

MODEL_NAME = "model.safetensors"
CHECKPOINT_NAME = "last.ckpt.safetensors"
LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
CONFIG_NAME = "config.yaml"
CHECKPOINT_KEY = "sharpscope_checkpoint"
CHECKPOINT_FORMAT = "sharpscope-checkpoint"
LOG_COLUMNS = ("step", "loss", "val_loss", "val_psnr", "lr", "time")

def _to_json(value: Any) -> Any:
    """Make optimiser/scaler bookkeeping JSON-able (tuples -> lists)."""
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s.clone()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64).copy())
    version, pstate, gauss = random.getstate()
    meta = {
        "numpy": {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(pstate), "gauss": gauss},
    }
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"].to(torch.uint8))
    cuda = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k].to(torch.uint8) for k in cuda]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    npm = meta["numpy"]
    np.random.set_state(
        (
            npm["name"],
            tensors["rng/numpy"].numpy().astype(np.uint32),
            npm["pos"],
            npm["has_gauss"],
            npm["cached_gaussian"],
        )
    )
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


def save_checkpoint(
    path: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    state: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    from sharpscope.io import atomic_write

    tensors: dict[str, torch.Tensor] = {}
    for k, v in net.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu").clone().contiguous()
    osd = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in osd["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = val.detach().to("cpu").clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = _to_json(val)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        **state,
        "optimizer": {"param_groups": _to_json(osd["param_groups"]), "scalars": scalars},
        "scaler": _to_json(scaler.state_dict()) if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
    }
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta)})


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a resumable checkpoint: its tensors and its JSON state.

    Raises
    ------
    InputError
        Missing, corrupt or foreign file.

    Examples
    --------
    >>> tensors, meta = load_checkpoint("run/last.ckpt.safetensors")  # doctest: +SKIP
    >>> meta["step"]  # doctest: +SKIP
    1000
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(CHECKPOINT_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path} is not a readable checkpoint (corrupt or truncated: {reason})") from None
    if raw is None:
        raise InputError(f"{path} is not a sharpscope training checkpoint")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: checkpoint state is not valid JSON ({exc.msg})") from None
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != 1:
        raise InputError(f"{path}: unsupported checkpoint format {meta.get('format')!r} v{meta.get('version')}")
    return tensors, meta


def restore_checkpoint(
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
) -> None:
    from sharpscope.models.format import check_finite_state

    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    check_finite_state(model_state, "checkpoint")
    try:
        net.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"checkpoint does not match the network: {str(exc).splitlines()[0]}") from None
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, key = k.split("/", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, vals in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(vals)
    groups = []
    for g in meta["optimizer"]["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scaler is not None and scaler.is_enabled() and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    _set_rng_state(tensors, meta["rng"])


def read_log(
    path: Path, upto: int, columns: Sequence[str] = LOG_COLUMNS
) -> list[dict[str, float]]:
    """The rows of ``log.csv`` up to step ``upto`` (a resumed run drops the later ones)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                r = {k: float(row[k]) if row.get(k) not in (None, "") else math.nan for k in columns}
            except ValueError:
                continue
            if r["step"] <= upto:
                rows.append(r)
    return rows


def write_log(path: Path, rows: Sequence[Mapping[str, float]], columns: Sequence[str] = LOG_COLUMNS) -> None:
    """Write ``log.csv`` atomically: one row per validation, ``columns`` in order."""
    from sharpscope.io import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [int(r["step"])] + [f"{r[k]:.6g}" if not math.isnan(r[k]) else "" for k in columns[1:]]
        )
    with atomic_write(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def plot_log(
    path: Path,
    rows: Sequence[Mapping[str, float]],
    title: str,
    metric: str = "val_psnr",
    label: str = "validation PSNR (dB)",
) -> None:
    """Draw ``loss.png``: the losses, and the validation ``metric`` beside them."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    from sharpscope.io import atomic_write

    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, [r["loss"] for r in rows], "o-", ms=3, label="training")
    ax1.plot(steps, [r["val_loss"] for r in rows], "o-", ms=3, label="validation")
    if all(r["loss"] > 0 for r in rows) and all(r["val_loss"] > 0 for r in rows):
        ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(steps, [r[metric] for r in rows], "o-", ms=3, color="C2")
    ax2.set_xlabel("step")
    ax2.set_ylabel(label)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(str(tmp), format="png")


LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of the run folder ``out`` (one writer per run).

    An advisory ``fcntl.flock`` on ``out/.lock``, released when the block ends or the
    process dies; a second holder gets a one-line :class:`ConfigError` at once.
    Platforms without ``fcntl`` run unlocked.

    Examples
    --------
    >>> import tempfile
    >>> with run_lock(tempfile.mkdtemp()) as lock:
    ...     lock.name
    '.lock'
    """
    path = Path(out) / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    try:
        fh = open(path, "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise ConfigError(f"cannot lock {out}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{out} is in use by another training run; wait for it to end or choose another --out"
            ) from None
        yield path
    finally:
        fh.close()


def data_position(dataset: Any, index: int) -> dict[str, int]:
    pos = {"sample_index": int(index)}
    if hasattr(dataset, "position"):
        epoch, p = dataset.position(index)
        pos.update(epoch=int(epoch), position=int(p))
    return pos


