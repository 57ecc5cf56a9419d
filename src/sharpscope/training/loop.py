"""The training loop: one loop for every task, resumable, with best and last checkpoints.

The entry point is :func:`train`, driven by a validated
:class:`~sharpscope.training.config.TrainConfig`; the task object
(:mod:`sharpscope.training.tasks`) supplies the data, the loss and the validation
metrics, and this loop does the rest: Adam with the step's learning rate, mixed
precision, validation, the best model (``OUT/model.safetensors``, a regular model
file whose header carries the validated configuration, only ever replaced by a
better one), the resumable checkpoint (:mod:`sharpscope.training.checkpoint`),
early stopping, the time limit, the CSV log and plot, the progress bar with its ETA,
Ctrl-C handling and the run folder's lock.

Determinism
    Sample ``i`` of the training stream is a pure function of ``(seed, i)``, the
    learning rate a pure function of the step, and the validation set is drawn
    once.  On the CPU, a run resumed from a checkpoint ends with bit-identical
    weights to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sharpscope.errors import ConfigError
from sharpscope.training import distributed
from sharpscope.training.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_NAME,
    MODEL_NAME,
    PLOT_NAME,
    data_position,
    load_checkpoint,
    plot_log,
    read_log,
    restore_checkpoint,
    run_lock,
    save_checkpoint,
    write_log,
)
from sharpscope.training.config import (
    TrainConfig,
    adopt_init_architecture,
    config_diff,
    lr_at,
    resolve_device,
    with_device_defaults,
)
from sharpscope.training.tasks import Precision, make_task

__all__ = ["STATUS_SECONDS", "TrainResult", "format_duration", "train"]


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    best_path : Path or None
        ``OUT/model.safetensors``, the best model (None if no validation ran).
    best_val_psnr : float
        Validation PSNR (dB, data range 1) of the best model (nan if none, or
        for a task without that metric).
    steps_done : int
        Optimiser steps completed, over all sessions.
    log_path : Path
        The CSV log.
    last_path : Path
        The resumable checkpoint.
    best_step : int
        Step of the best model (0 if none).
    best_val_loss : float
        Validation loss of the best model.
    stopped : str
        ``'completed'``, ``'early_stopped'``, ``'interrupted'`` or ``'time_limit'``.
    n_parameters : int
        Parameters of the network.
    best_metrics : dict
        Every validation metric of the best model (``val_loss`` and the task's).
    """

    best_path: Path | None
    best_val_psnr: float
    steps_done: int
    log_path: Path
    last_path: Path
    best_step: int = 0
    best_val_loss: float = math.nan
    stopped: str = "completed"
    n_parameters: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)


class _StopRequest:
    """SIGINT handler: the first Ctrl-C asks for a clean stop, the second aborts."""

    def __init__(self, log: Callable[[str], None], debounce: float = 0.0):
        self.requested = False
        self._log = log
        self._previous: Any = None
        self._installed = False
        self._debounce = debounce  # a second signal this soon is the same request (torchrun forwards it)
        self._first = 0.0
        self._announced = False

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except ValueError:  # pragma: no cover - not the main interpreter
                self._installed = False
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        # no I/O here: the signal can land inside a print of the main thread (a reentrant
        # write raises there, at an arbitrary point); the loop announces the stop itself
        if self.requested:
            if time.monotonic() - self._first < self._debounce:
                return
            raise KeyboardInterrupt
        self.requested = True
        self._first = time.monotonic()

    def announce(self) -> None:
        """Log the stop once, from the training loop (not from the signal handler)."""
        if not self._announced:
            self._announced = True
            self._log("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops them cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)



def _load_initial_weights(
    net: nn.Module, source: str, arch: str, hparams: Mapping[str, Any], log: Callable[[str], None]
) -> None:
    """Copy the weights of the model ``source`` into ``net`` (``model.init``)."""
    from sharpscope.models.format import load_network
    from sharpscope.models.store import resolve_model

    path = resolve_model(source)
    header, init_net = load_network(path, kind=None)
    init_hparams = dict(getattr(init_net, "hparams", header.hparams))
    if header.architecture != arch or init_hparams != dict(hparams):
        raise ConfigError(
            f"model.init {source!r} is {header.architecture} {init_hparams}, not the configured {arch} {dict(hparams)}"
        )
    net.load_state_dict(init_net.state_dict())
    log(f"initial weights from {path}")


STATUS_SECONDS = 30.0
"""Without a progress bar, a status line (with the ETA) at most this often, plus every validation."""


def format_duration(seconds: float) -> str:
    """``'1h02m'``, ``'4m05s'``, ``'12s'`` (``'?'`` when unknown).

    Examples
    --------
    >>> format_duration(3725), format_duration(245), format_duration(12.4)
    ('1h02m', '4m05s', '12s')
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _default_log(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda msg: None

    def log(msg: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stderr)

    return log


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a network as ``config`` says; resumable, with best and last checkpoints.

    Parameters
    ----------
    config : TrainConfig
        The validated configuration (``config.out`` is the output folder).
    resume : bool
        Continue from ``OUT/last.ckpt.safetensors`` (starting afresh, with a
        message, when there is none).  Without it, an ``OUT`` that already holds
        a run is refused.  A resumed run must keep the settings that shape the
        weights (data, model, loss, lr, batch and patch size, seed...); it may
        change ``steps``, ``patience``, ``val_every``, ``device`` and the other
        fields of :data:`RESUMABLE_CHANGES` (with ``lr_schedule='cosine'`` a new
        ``steps`` also reshapes the remaining schedule).
    progress : bool
        Show a tqdm progress bar and messages on stderr.
    callback : callable, optional
        ``callback(step, logs)`` after every step; ``logs`` has ``'loss'`` and,
        after a validation, ``'val_loss'`` and the task's metrics (``'val_psnr'``
        for restoration).  A
        ``KeyboardInterrupt`` raised in it is handled like Ctrl-C.
    log : callable, optional
        Receives one-line messages (default: stderr when ``progress``).

    Returns
    -------
    TrainResult

    Notes
    -----
    Writes into ``OUT``: ``model.safetensors`` (the best model, loadable with
    :func:`sharpscope.models.format.load_network` and
    :func:`sharpscope.load_model`), ``last.ckpt.safetensors`` (resumable state),
    ``log.csv`` (one row per validation: step, mean training loss since the
    previous validation, val_loss, the task's metrics (val_psnr), lr, elapsed
    seconds),
    ``loss.png`` and ``config.yaml``.

    Validation PSNR (restoration) is the mean over the validation patches of
    ``10 log10(1 / MSE)`` of the full-resolution output (data range 1, the
    normalised intensity scale).  ``config.task`` chooses the task
    (:func:`sharpscope.training.tasks.make_task`): the data, the loss and the
    validation metrics; everything else is this one loop.

    A first Ctrl-C (SIGINT) lets the current step finish, saves the resumable
    checkpoint and returns with ``stopped='interrupted'``; a second one aborts.

    Examples
    --------
    >>> cfg = load_config(overrides={"steps": 20, "patch_size": 32, "batch_size": 4,
    ...                              "val_every": 10, "out": "run"})  # doctest: +SKIP
    >>> res = train(cfg)  # doctest: +SKIP
    >>> res.best_path  # doctest: +SKIP
    PosixPath('run/model.safetensors')
    """
    threads = torch.get_num_threads()
    try:
        if config.threads is not None:
            from sharpscope.runtime import set_threads

            set_threads(config.threads)  # never more than the physical cores
        with contextlib.ExitStack() as held, distributed.session() as dist:  # the lock, once _train takes it
            return _train(config, resume, progress, callback, log, held, dist)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: TrainConfig,
    resume: bool,
    progress: bool,
    callback: Callable[[int, dict[str, float]], None] | None,
    log: Callable[[str], None] | None,
    held: contextlib.ExitStack,
    dist: distributed.Distributed,
) -> TrainResult:
    from sharpscope.models.registry import build_network, count_parameters

    config = with_device_defaults(adopt_init_architecture(config))
    # under torchrun: join the process group; rank 0 alone prints and writes the run folder
    device = dist.start(resolve_device(config.device))
    main = dist.is_main
    if not main:
        progress, log = False, (lambda msg: None)
    log = log or _default_log(progress)
    task = make_task(config)
    metrics = task.metrics
    columns = ("step", "loss", "val_loss", *metrics, "lr", "time")
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT_NAME
    best_path = out / MODEL_NAME
    log_path = out / LOG_NAME
    cfg_json = config.model_dump(mode="json")

    loaded: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if resume:
        if ckpt_path.is_file():
            loaded = load_checkpoint(ckpt_path)
            diffs = config_diff(loaded[1]["config"], cfg_json)
            if diffs:
                raise ConfigError(
                    f"cannot resume {ckpt_path}: the config differs from the checkpoint's in {', '.join(diffs)}"
                )
        else:
            log(f"no checkpoint in {out}; starting from scratch")
    elif ckpt_path.exists() or best_path.exists():
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")

    local_batch = dist.local_batch(config.batch_size)
    # initial weights and every stream depend on the seed only
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    net = build_network(config.model.arch, **config.model.hparams)
    multiple = int(getattr(net, "size_multiple", 1))
    if config.patch_size % multiple:
        raise ConfigError(
            f"patch_size {config.patch_size} must be a multiple of {multiple} for {config.model.arch}"
        )
    task.check_config(net)
    n_params = count_parameters(net)
    hparams = dict(getattr(net, "hparams", config.model.hparams))
    if config.model.init is not None and loaded is None:
        _load_initial_weights(net, config.model.init, config.model.arch, hparams, log)
    net.to(device)
    if device.type == "cpu":
        # NHWC activations: oneDNN's convolutions train 2x faster here (docs/benchmarks.md,
        # "Speed"); checkpoints and model files are saved contiguous (NCHW) as before
        net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr_at(config, 0))
    from sharpscope.runtime import native_bf16

    use_amp = bool(config.amp and (device.type == "cuda" or native_bf16()))
    amp_dtype = (
        torch.bfloat16
        if use_amp and (device.type == "cpu" or torch.cuda.is_bf16_supported())
        else torch.float16
    )
    precision = Precision(device, use_amp, amp_dtype)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    task.check_memory(net, device)
    data = task.build_data(device)

    step = 0
    best: dict[str, Any] = {"metric": None, "step": 0, "val_loss": math.nan, **{m: math.nan for m in metrics}}
    bad = 0
    elapsed_before = 0.0
    stopped = "completed"
    if loaded is not None:
        restore_checkpoint(loaded[0], loaded[1], net, optimizer, scaler)
        meta = loaded[1]
        step = int(meta["step"])
        best = {**best, **dict(meta["best"])}
        bad = int(meta["bad_validations"])
        elapsed_before = float(meta.get("elapsed", 0.0))
        stopped = str(meta.get("stopped", "completed"))
        log(f"resuming {out} at step {step}")
    rows = read_log(log_path, step, columns) if loaded is not None else []

    log(
        f"{config.model.arch}: {n_params:,} parameters; device {device.type}"
        + (f" ({'bf16' if amp_dtype == torch.bfloat16 else 'fp16'} mixed precision)" if use_amp else "")
        + f"; data {data.description}; {data.val_size} validation patches; out {out}"
        + (f"; {dist.world_size} processes ({dist.backend}), {local_batch} samples each per step" if dist.active else "")
    )
    from sharpscope.io import atomic_write

    if main:
        out.mkdir(parents=True, exist_ok=True)
        held.enter_context(run_lock(out))
        with atomic_write(out / CONFIG_NAME) as tmp:
            Path(tmp).write_text(config.to_yaml())

    def score(values: Mapping[str, float]) -> float:
        return -values["val_loss"] if config.monitor == "val_loss" else values[config.monitor]

    def is_better(values: Mapping[str, float]) -> bool:
        return best["metric"] is None or score(values) > best["metric"]

    def validate() -> dict[str, float]:
        def run() -> Mapping[str, float]:
            net.eval()
            try:
                return task.validate(net, data, precision)
            finally:
                net.train()

        # on rank 0, broadcast: every rank takes the same decisions
        return dist.from_main(run, ("val_loss", *metrics))

    def new_best(values: Mapping[str, float]) -> dict[str, Any]:
        return {"metric": score(values), "step": step, **values}

    def save_last(reason: str) -> None:
        if not main:
            return
        save_checkpoint(
            ckpt_path,
            net,
            optimizer,
            scaler,
            {
                "step": step,
                "config": cfg_json,
                "best": best,
                "bad_validations": bad,
                "elapsed": elapsed_before + (time.perf_counter() - t0),
                "stopped": reason,
                "data": data_position(data.train, step * config.batch_size),
            },
        )

    def save_best(values: Mapping[str, float]) -> None:
        from sharpscope import __version__
        from sharpscope.models.format import ModelHeader, save_model

        if not main:
            return
        fields = dict(task.header_fields(net, data, values))
        result = fields.pop("result")
        header = ModelHeader(
            name=config.name,
            architecture=config.model.arch,
            hparams=hparams,
            provenance=(
                f"trained with sharpscope {__version__} (sharpscope train"
                + (f", fine-tuning {config.model.init}" if config.model.init else "")
                + f") on {data.description}; "
                f"best of the validations up to step {step}: {result}"
            ),
            license=config.license,
            training=cfg_json,
            **fields,
        )
        save_model(best_path, net, header)

    def result(reason: str) -> TrainResult:
        return TrainResult(
            best_path=best_path if best_path.is_file() and best["metric"] is not None else None,
            best_val_psnr=float(best.get("val_psnr", math.nan)),
            steps_done=step,
            log_path=log_path,
            last_path=ckpt_path,
            best_step=int(best["step"]),
            best_val_loss=float(best["val_loss"]),
            stopped=reason,
            n_parameters=n_params,
            best_metrics={k: float(best[k]) for k in ("val_loss", *metrics)},
        )

    def row(train_loss: float, values: Mapping[str, float], lr: float) -> dict[str, float]:
        return {"step": step, "loss": train_loss, **values, "lr": lr, "time": elapsed_before + time.perf_counter() - t0}

    def _keep_last_weights() -> None:
        """After a stop between validations: validate, log and keep the weights if best."""
        nonlocal best
        values = validate()
        loss = dist.mean(running) / n_running if n_running else math.nan
        rows.append(row(loss, values, lr_at(config, step - 1)))
        if main:
            write_log(log_path, rows, columns)
        if is_better(values):
            best = new_best(values)
            save_best(values)
            log(f"saved the weights of step {step} (validation {task.headline(values)}) to {best_path}")

    t0 = time.perf_counter()
    if step >= config.steps or (
        stopped == "early_stopped" and config.patience is not None and bad >= config.patience
    ):
        log(f"{out}: nothing to do (step {step} of {config.steps}, {stopped})")
        return result("early_stopped" if step < config.steps else "completed")

    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(
        data.train,
        batch_size=local_batch,  # this rank's share of every global batch (all of it alone)
        sampler=dist.indices(step, config.steps, config.batch_size),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=_ignore_sigint if config.num_workers > 0 else None,
    )
    net.train()
    # the fused forms of the BCR family (the same parameters, the same function, about
    # 1.35-1.7x faster steps on the CPU: sharpscope.models.fused); net stays what is saved
    from sharpscope.models import fused

    view = fused.fuse_for_training(net).train()
    model = dist.wrap(view, device)  # DDP over the processes (the view itself in one process)
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    running = torch.zeros((), device=device)
    n_running = 0
    postfix: dict[str, str] = {}
    reason = "completed"
    in_update = False
    saved = True
    start_step = validated_at = step
    last_status = t0
    batches = iter(loader)
    headline = metrics[0]
    with _StopRequest(log, debounce=2.0 if dist.active else 0.0) as stop:
        try:
            while step < config.steps:
                late = config.max_minutes is not None and time.perf_counter() - t0 > 60.0 * config.max_minutes
                if dist.active:  # one decision, at the same step, on every rank
                    asked, late = dist.agree(stop.requested, late)
                    stop.requested = stop.requested or asked
                if stop.requested:
                    stop.announce()
                    reason = "interrupted"
                    break
                if late:
                    reason = "time_limit"
                    break
                try:
                    batch = next(batches)
                except StopIteration:  # pragma: no cover - the sampler covers every step
                    break
                except Exception:
                    if stop.requested:  # a worker died of the same Ctrl-C
                        stop.announce()
                        reason = "interrupted"
                        break
                    raise
                lr = lr_at(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = task.training_loss(model, batch, precision)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                in_update = True
                scaler.step(optimizer)
                scaler.update()
                step += 1
                in_update = False
                saved = False
                running += loss.detach()
                n_running += 1
                logs: dict[str, float] = {}
                is_val = step % config.val_every == 0 or step == config.steps or step == 1
                sec_per_step = (time.perf_counter() - t0) / max(1, step - start_step)
                eta = format_duration(sec_per_step * (config.steps - step))
                if step % 10 == 0 or is_val:
                    logs["loss"] = float(running) / n_running
                    postfix["loss"] = f"{logs['loss']:.4g}"
                    postfix["eta"] = eta
                    bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if not progress and not is_val and time.perf_counter() - last_status > STATUS_SECONDS:
                    last_status = time.perf_counter()
                    log(
                        f"step {step}/{config.steps}: loss {float(running) / n_running:.4g}, "
                        f"{sec_per_step:.3g} s/step, ETA {eta}"
                    )
                if is_val:
                    train_loss = dist.mean(running) / n_running  # over the global batch
                    if not math.isfinite(train_loss):
                        raise ConfigError(
                            f"training diverged at step {step} (loss {train_loss}); lower lr or set grad_clip"
                        )
                    running.zero_()
                    n_running = 0
                    values = validate()
                    logs.update(loss=train_loss, **values)
                    rows.append(row(train_loss, values, lr))
                    if is_better(values):
                        best = new_best(values)
                        bad = 0
                        save_best(values)
                    else:
                        bad += 1
                    postfix.update(
                        val_loss=f"{values['val_loss']:.4g}",
                        **{headline: f"{values[headline]:.2f}"},
                        best=f"{best[headline]:.2f}",
                    )
                    bar.set_postfix(postfix)
                    validated_at = step
                    if not progress:
                        last_status = time.perf_counter()
                        log(
                            f"step {step}/{config.steps}: loss {train_loss:.4g}, val_loss {values['val_loss']:.4g}, "
                            f"{task.headline(values)} (best {best[headline]:.2f}), "
                            f"{sec_per_step:.3g} s/step, ETA {eta}"
                        )
                    if main:
                        write_log(log_path, rows, columns)
                    if main and config.plot:
                        plot_log(
                            out / PLOT_NAME,
                            rows,
                            f"{config.name} ({config.model.arch})",
                            headline,
                            task.labels.get(headline, headline),
                        )
                    early = config.patience is not None and bad >= config.patience
                    save_last("early_stopped" if early else "running")
                    saved = True
                    if early:
                        log(f"early stop at step {step}: no improvement in {bad} validations")
                        reason = "early_stopped"
                        if callback is not None:
                            callback(step, logs)
                        break
                elif config.checkpoint_every is not None and step % config.checkpoint_every == 0:
                    save_last("running")
                    saved = True
                if callback is not None:
                    callback(step, logs)
        except KeyboardInterrupt:
            if in_update:
                bar.close()
                log("aborted during an optimiser update; the checkpoint was not updated")
                raise
            reason = "interrupted"
        finally:
            bar.close()
    if reason == "completed" and step < config.steps:  # pragma: no cover - defensive
        reason = "interrupted"
    if reason in ("interrupted", "time_limit") and step > validated_at:
        try:
            _keep_last_weights()
        except KeyboardInterrupt:  # a second Ctrl-C: the checkpoint below still gets saved
            log("validation skipped; the best model stays that of the last validation")
    if reason != "early_stopped" or not saved:
        save_last(reason)
    dist.barrier()  # no rank leaves before rank 0 has written the run folder
    if reason == "interrupted":
        log(f"interrupted at step {step}; resume with --resume (checkpoint {ckpt_path})")
    elif reason == "time_limit":
        log(f"time limit reached at step {step}; resume with --resume")
    return result(reason)
