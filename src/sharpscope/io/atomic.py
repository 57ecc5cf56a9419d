"""Atomic writes: a temporary file (or folder) in the destination's folder, renamed when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sharpscope.errors import InputError
from sharpscope.io._common import _one_line


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path, rename it on success.

    The temporary file lives in the destination's directory, is named
    ``.<name>.<pid>.<random>.tmp<suffix>`` (the same suffixes, so
    format-from-suffix writers behave) and replaces ``path`` with
    :func:`os.replace` when the block finishes; the file and its directory are
    fsynced first, so a power failure cannot leave a truncated file under the
    final name.  It is deleted when the block raises; temporaries of the same
    destination left by a process that no longer exists (killed with SIGKILL,
    a crash) are removed on the next write, so nothing accumulates.

    Parameters
    ----------
    path : path-like
        Final destination.  Its directory is created when missing.

    Yields
    ------
    pathlib.Path
        Where to write (an existing, empty file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_write(dest) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> dest.read_text()
    'hello'
    """
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {dest.parent}: {exc.strerror or exc}") from None
    suffix = "".join(dest.suffixes[-2:]) if dest.name.lower().endswith((".ome.tif", ".ome.tiff")) else dest.suffix
    _remove_stale_temporaries(dest)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{dest.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=dest.parent
        )
    except OSError as exc:
        raise InputError(f"cannot write to {dest.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        try:
            _fsync(tmp)
            os.replace(tmp, dest)
            _fsync(dest.parent, directory=True)
        except OSError as exc:
            raise InputError(f"cannot write {dest}: {exc.strerror or _one_line(exc)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise



def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a directory's entries) to stable storage."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open directories; the rename still happened
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (owned by someone else) or cannot tell: keep its file
    return True


def _remove_stale_temporaries(dest: Path) -> None:
    """Delete temporaries of ``dest`` (files and folders) whose writing process is gone."""
    prefix = f".{dest.name}."
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and ".tmp" in name[len(prefix) :]):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a folder (e.g. a zarr store) atomically: yield a temporary folder, rename it.

    The temporary folder ``.<name>.<pid>.<random>.tmp<suffix>`` lives next to
    ``path``; when the block finishes it takes the final name (an existing
    ``path`` is first moved aside under a temporary name, then deleted), so
    a store under the final name is always complete.  It is deleted when the
    block raises (also on KeyboardInterrupt); one left by a killed process is
    removed by the next write of the same destination.

    Parameters
    ----------
    path : path-like
        Final destination folder.  Its parent is created when missing.

    Yields
    ------
    pathlib.Path
        The temporary folder (exists, empty).

    Raises
    ------
    InputError
        The parent cannot be created, or ``path`` exists and is not a folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "out.zarr"
    >>> with atomic_dir(dest) as tmp:
    ...     _ = (tmp / "zarr.json").write_text("{}")
    >>> sorted(p.name for p in dest.iterdir())
    ['zarr.json']
    """
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest}: exists and is not a folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {dest.parent}: {exc.strerror or exc}") from None
    _remove_stale_temporaries(dest)
    suffix = "".join(dest.suffixes[-2:])
    try:
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=dest.parent)
        )
    except OSError as exc:
        raise InputError(f"cannot write to {dest.parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        old = None
        try:
            if dest.exists():
                old = Path(
                    tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp.old", dir=dest.parent)
                )
                os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            _fsync(dest.parent, directory=True)
        except OSError as exc:
            if old is not None and not dest.exists():  # put the previous store back
                with contextlib.suppress(OSError):
                    os.replace(old / dest.name, dest)
            raise InputError(f"cannot write {dest}: {exc.strerror or _one_line(exc)}") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
