"""How much of the machine a computation uses: CPU threads and the memory allocator.

:func:`set_threads` is what ``--threads`` does on every compute command:
torch gets as many intra-op threads as asked, but never more than the
machine's physical cores (hyper-threads and oversubscription make
convolutions slower, not faster).  The default is ``OMP_NUM_THREADS`` when
that is set, else the number of physical cores available to this process.

:func:`tune_allocator` keeps glibc from handing every large freed block back
to the kernel: without it, a network over 1024 x 1024 tiles spends as much
time in page faults (system time) as in arithmetic.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from sharpscope.errors import ConfigError

__all__ = ["physical_cores", "set_threads", "tune_allocator"]


def physical_cores() -> int:
    """Physical CPU cores this process may run on (hyper-threads counted once).

    Reads the Linux CPU topology of the CPUs in the process's affinity mask;
    elsewhere falls back to ``os.cpu_count()``.

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> physical_cores() >= 1
    True
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            cores.add(("cpu", str(cpu)))
            continue
        cores.add((package, core))
    return max(1, len(cores) or len(cpus))


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer, else :func:`physical_cores`.

    Examples
    --------
    >>> default_threads() >= 1
    True
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), physical_cores())
    return physical_cores()


def set_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads; never more than the physical cores.

    Parameters
    ----------
    threads : int, optional
        Wanted threads (>= 1).  Default: :func:`default_threads`.  Larger
        values than :func:`physical_cores` are reduced to it.

    Returns
    -------
    int
        The number of threads now in use.

    Raises
    ------
    ConfigError
        ``threads`` below 1.

    Examples
    --------
    >>> set_threads(1)
    1
    """
    if threads is None:
        n = default_threads()
    else:
        if int(threads) < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        n = min(int(threads), physical_cores())
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


_TUNED = False


def tune_allocator() -> bool:
    """Keep large freed blocks in the process (glibc only; elsewhere a no-op).

    Raises glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` so that the
    big activation buffers of a network are reused instead of being mapped
    and unmapped (zero-filled page by page) on every layer.  Memory peaks
    are unchanged; freed memory is kept for reuse until the process ends.

    Returns
    -------
    bool
        Whether the allocator was tuned (True once done in this process).

    Examples
    --------
    >>> isinstance(tune_allocator(), bool)
    True
    """
    global _TUNED
    if _TUNED:
        return True
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - musl, no glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # older glibc caps the mmap threshold at 32 MiB: try the largest accepted value
    ok = any(mallopt(m_mmap_threshold, size) for size in (1 << 30, 1 << 25))
    ok = ok and bool(mallopt(m_trim_threshold, 1 << 30))
    _TUNED = ok
    return ok
