"""Machine resources: how much memory there is, checked before large allocations.

Every size a user can type (patch sizes, counts, batch sizes) is checked here
against the memory the system reports as available, so that a typo such as
``--size 100000`` ends in a one-line :class:`~sharpscope.errors.ConfigError`
instead of an allocator traceback or a machine that swaps to a halt.
"""

from __future__ import annotations

import os

from sharpscope.errors import ConfigError

__all__ = ["available_memory", "check_memory", "format_bytes"]


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` on Linux).

    Falls back to the free physical pages, then to a large number when the
    platform tells nothing (the check then never refuses).

    Examples
    --------
    >>> from sharpscope.resources import available_memory
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
    >>> from sharpscope.resources import format_bytes
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
    >>> from sharpscope.resources import check_memory
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
