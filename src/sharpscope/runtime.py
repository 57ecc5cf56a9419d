"""How much of the machine a computation uses: CPU threads, memory and the allocator.

:func:`set_threads` is what ``--threads`` does on every compute command:
torch gets as many intra-op threads as asked, but never more than the
machine's physical cores (hyper-threads and oversubscription make
convolutions slower, not faster).  The default is ``OMP_NUM_THREADS`` when
that is set, else the number of physical cores available to this process.

:func:`tune_allocator` keeps glibc from handing every large freed block back
to the kernel: without it, a network over 1024 x 1024 tiles spends as much
time in page faults (system time) as in arithmetic.

:func:`check_memory` compares the memory a piece of work needs with what the
system reports as available (:func:`available_memory`), so that a typo such as
``--size 100000`` ends in a one-line :class:`~sharpscope.errors.ConfigError`
instead of an allocator traceback or a machine that swaps to a halt.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from sharpscope.errors import ConfigError

__all__ = [
    "available_memory",
    "check_memory",
    "cpu_flags",
    "cpu_model",
    "format_bytes",
    "native_bf16",
    "physical_cores",
    "set_threads",
    "tune_allocator",
]


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux ``/proc/cpuinfo``).

    Machines differ (some have AVX-512 and AMX, others only AVX2): read the flags,
    never assume them.  Empty where the file is missing (not Linux).

    Examples
    --------
    >>> isinstance(cpu_flags(), frozenset)
    True
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # pragma: no cover - not Linux
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()  # pragma: no cover


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string.

    Examples
    --------
    >>> isinstance(cpu_model(), str)
    True
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    import platform

    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Only then does bfloat16 autocast pay on the CPU; elsewhere it is emulated and slower.

    Examples
    --------
    >>> native_bf16() in (True, False)
    True
    """
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


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


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` on Linux).

    Falls back to the free physical pages, then to a large number when the
    platform tells nothing (the check then never refuses).

    Examples
    --------
    >>> from sharpscope.runtime import available_memory
    >>> available_memory() > 0
    True
    """
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 1 << 50


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Examples
    --------
    >>> from sharpscope.runtime import format_bytes
    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, fraction: float = 0.8) -> None:
    """Raise a one-line :class:`ConfigError` if ``what`` needs more than ``fraction`` of
    the available memory.

    Parameters
    ----------
    nbytes : float
        Estimated peak bytes of the work.
    what : str
        Description for the message, e.g. ``"simulating 100 pairs of 100000x100000"``.
    fraction : float
        Share of the available memory the work may take.

    Examples
    --------
    >>> from sharpscope.runtime import check_memory
    >>> check_memory(1024, "a tiny array")
    >>> check_memory(2**62, "an absurd array")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sharpscope.errors.ConfigError: an absurd array needs about 4194304.0 TiB of memory ...
    """
    avail = available_memory()
    if nbytes > fraction * avail:
        raise ConfigError(
            f"{what} needs about {format_bytes(nbytes)} of memory but "
            f"{format_bytes(avail)} is available; use smaller sizes or counts"
        )
