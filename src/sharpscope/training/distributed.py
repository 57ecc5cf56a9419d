"""Multi-process training: PyTorch DistributedDataParallel under ``torchrun``.

The training loop (:func:`sharpscope.training.train`) runs unchanged in every process;
this module supplies what differs between them:

* the process group, set up from the ``torchrun`` environment (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL when the run
  is on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU;
* seed-exact sharding of the global batch: step ``s`` of a run with batch size ``B``
  uses samples ``s*B ... s*B + B - 1`` of the training stream (each a pure function of
  the seed and its index) whatever the number of processes; rank ``r`` of ``W`` draws
  the contiguous ``B/W`` of them starting at ``s*B + r*B/W`` (:class:`ShardedIndices`),
  and DDP averages the gradients, so a step is the single-process step of the same
  global batch up to float rounding;
* agreement between the processes: a stop (Ctrl-C, the time limit) is taken at the
  same step everywhere (:meth:`Distributed.any`), validation runs on rank 0 and its
  values are broadcast, so that every rank takes the same decisions (best model,
  early stop);
* rank 0 alone writes the run folder (checkpoints, best model, log, plot, config, lock)
  and prints; the checkpoint is that of a single-process run (the data position is
  the global sample index), so a run resumes with any number of processes.

:func:`launch` is what ``sharpscope train --nproc N`` calls: ``torch.distributed.run``
(torchrun) with N local processes.

Batch normalisation (``unet``, ``dncnn``) becomes :class:`torch.nn.SyncBatchNorm` on
CUDA; on the CPU (where PyTorch has no synchronised batch norm) each process
normalises with the statistics of its own share of the batch.

Examples
--------
>>> d = Distributed()            # outside torchrun: one process, nothing to set up
>>> d.active, d.is_main, d.any(False)
(False, True, False)
>>> list(ShardedIndices(start_step=2, steps=4, batch_size=4, rank=1, world_size=2))
[10, 11, 14, 15]
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharpscope.errors import ConfigError

__all__ = ["Distributed", "ShardedIndices", "env_rank", "launch", "session"]


def env_rank() -> int:
    """This process's rank as ``torchrun`` set it (0 outside torchrun).

    Examples
    --------
    >>> env_rank() if "RANK" not in os.environ else 0
    0
    """
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


class ShardedIndices(Sequence[int]):
    """The training-stream indices one rank draws, step after step.

    Step ``s`` takes the global batch ``s*B ... s*B + B - 1``; rank ``r`` of
    ``W`` takes its ``B/W`` contiguous samples starting at ``s*B + r*B/W``.  With
    one process this is ``range(start_step * B, steps * B)``.

    Parameters
    ----------
    start_step, steps : int
        First step to draw and the step to stop before.
    batch_size : int
        The global batch size ``B`` (a multiple of ``world_size``).
    rank, world_size : int
        This process and the number of processes.

    Examples
    --------
    >>> list(ShardedIndices(0, 2, 4, rank=0, world_size=2))
    [0, 1, 4, 5]
    >>> list(ShardedIndices(1, 3, 2)) == list(range(2, 6))
    True
    """

    def __init__(self, start_step: int, steps: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside a world of {world_size} process(es)")
        if batch_size % world_size:
            raise ConfigError(
                f"batch_size {batch_size} must be a multiple of the number of processes ({world_size})"
            )
        self.start, self.steps, self.batch = int(start_step), int(steps), int(batch_size)
        self.local = self.batch // world_size
        self.offset = rank * self.local

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.local

    def __getitem__(self, i: int) -> int:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        s, j = divmod(i, self.local)
        return (self.start + s) * self.batch + self.offset + j

    def __iter__(self) -> Iterator[int]:
        for s in range(self.start, self.steps):
            base = s * self.batch + self.offset
            yield from range(base, base + self.local)


class _DDP(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that forwards unknown attributes to the wrapped network.

    The tasks read attributes of the network (``decimation``, ``hparams``...);
    they see the same values through the wrapper.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DDP's own constructor)
                raise
            return getattr(self.module, name)


@dataclass
class Distributed:
    """The processes of one training run and what they agree on.

    Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) it is a single process and
    every method is the identity; :meth:`start` sets up the process group when
    ``torchrun`` started this process.

    Attributes
    ----------
    rank, world_size, local_rank : int
        This process, the number of processes, its index on this machine.
    backend : str or None
        ``'nccl'`` or ``'gloo'`` once started.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False
    comm_device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes and prints."""
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Join the process group ``torchrun`` describes; returns this rank's device.

        Parameters
        ----------
        device : torch.device
            The configured device: CUDA runs use NCCL and ``cuda:LOCAL_RANK``,
            anything else gloo.
        """
        import torch.distributed as dist

        world = _env_world()
        if world <= 1 and not (dist.is_available() and dist.is_initialized()):
            return device
        if not dist.is_available():  # pragma: no cover - builds without distributed
            raise ConfigError("this PyTorch build has no torch.distributed")
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            if torch.cuda.device_count() <= self.local_rank:
                raise ConfigError(
                    f"process {self.local_rank} needs a GPU of its own: {torch.cuda.device_count()} visible"
                )
            torch.cuda.set_device(self.local_rank)
            device = torch.device("cuda", self.local_rank)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            kw: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(backend=backend, **kw)
            self.owns_group = True
        self.backend = str(dist.get_backend())
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.comm_device = device if self.backend == "nccl" else torch.device("cpu")
        return device

    def close(self) -> None:
        """Leave the process group if :meth:`start` created it."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False

    # ------------------------------------------------------------- the data
    def indices(self, start_step: int, steps: int, batch_size: int) -> ShardedIndices:
        """This rank's training-stream indices (see :class:`ShardedIndices`)."""
        return ShardedIndices(start_step, steps, batch_size, self.rank, self.world_size)

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of the global batch (a one-line error if it does not divide)."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"batch_size {batch_size} must be a multiple of the number of processes ({self.world_size})"
            )
        return batch_size // self.world_size

    # ------------------------------------------------------------- the network
    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        """The network to train with: ``net`` itself, or ``net`` under DDP."""
        if not self.active:
            return net
        if device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            assert converted is net or not isinstance(net, nn.modules.batchnorm._BatchNorm)
        ids = [device.index] if device.type == "cuda" else None
        return _DDP(net, device_ids=ids)

    # ------------------------------------------------------------- agreement
    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        if not self.active:
            return bool(flag)
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every rank when it is true on any (one collective)."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        import torch.distributed as dist

        t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def mean(self, value: torch.Tensor | float) -> float:
        """The mean of a scalar over the ranks."""
        t = torch.as_tensor(value, dtype=torch.float64).reshape(1)
        if not self.active:
            return float(t.item())
        import torch.distributed as dist

        t = t.to(self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def from_main(self, fn: Callable[[], Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
        """``fn()`` computed on rank 0, its ``keys`` broadcast to every rank."""
        if not self.active:
            values = fn()
            return {k: float(values[k]) for k in keys}
        import torch.distributed as dist

        t = torch.zeros(len(keys), dtype=torch.float64, device=self.comm_device)
        if self.is_main:
            values = fn()
            t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.comm_device)
        dist.broadcast(t, src=0)
        return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.active:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()


@contextlib.contextmanager
def session() -> Iterator[Distributed]:
    """A :class:`Distributed` for one call of ``train``; leaves the group it joined.

    Examples
    --------
    >>> with session() as d:
    ...     d.world_size
    1
    """
    d = Distributed()
    try:
        yield d
    finally:
        d.close()


# ----------------------------------------------------------------- the launcher


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux ``/proc``; empty elsewhere)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def launch_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The ``torch.distributed.run`` command line for ``sharpscope train ARGS`` on ``nproc`` processes.

    Examples
    --------
    >>> launch_command(2, ["--steps", "10"])[1:7]
    ['-m', 'torch.distributed.run', '--standalone', '--nnodes=1', '--nproc-per-node=2', '-m']
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc!r}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc-per-node={nproc}", "-m", "sharpscope", "train", *args,
    ]


def launch(nproc: int, args: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``sharpscope train ARGS`` on ``nproc`` local processes through torchrun.

    The processes run in their own session; a Ctrl-C here is passed once to each
    training process (which finish the step, save the checkpoint and stop at the
    same step), a second one is passed on too (abort).

    Parameters
    ----------
    nproc : int
        Processes (one per GPU on a multi-GPU machine).
    args : sequence of str
        ``sharpscope train`` arguments, without ``--nproc``.
    env : mapping, optional
        Environment of the processes (default: this one; ``OMP_NUM_THREADS``
        defaults to 1 per process, as torchrun's own default).

    Returns
    -------
    int
        The exit status: 0, torchrun's failure status, or 130 after a Ctrl-C.

    Examples
    --------
    >>> launch(2, ["--simulate", "mrbcr-widefield", "--steps", "100", "-o", "run"])  # doctest: +SKIP
    0
    """
    cmd = launch_command(nproc, args)
    environ = dict(os.environ if env is None else env)
    environ.setdefault("OMP_NUM_THREADS", "1")
    environ["SHARPSCOPE_LAUNCHED"] = "1"
    # a SIGINT is a stop request even where this process inherited it ignored (a background
    # job of a non-interactive shell starts so): the training processes install their own
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, env=environ, start_new_session=True)
        interrupted = False
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                interrupted = True
                workers = _children(proc.pid)
                for pid in workers or [proc.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGINT)
                time.sleep(0.1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 130 if interrupted else rc
