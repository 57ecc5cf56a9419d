"""Many files in one call: inputs, output names, the existing-output policy, a summary.

:func:`restore_files` and :func:`deconvolve_files` (the twins of
``sharpscope restore`` and ``sharpscope deconvolve``) live here, above the
in-memory :mod:`sharpscope.restore` / :mod:`sharpscope.deconv` and the chunked
:mod:`sharpscope.parallel`, and share this:

* **Inputs** are files, folders and glob patterns alike.  A folder stands for
  every supported image below it (sub-folders included, hidden names
  skipped); its files keep their path relative to the folder in the output.
* **Outputs.**  With one input file and an ``OUT`` that names a file, the
  result goes to ``OUT``.  Otherwise ``OUT`` is a folder and each result is
  ``<relative folder>/<stem><suffix>.tif`` (``.ome.tif`` for OME-TIFF
  inputs).
* **Existing outputs** in a folder are never silently replaced:
  ``overwrite=True`` (``--overwrite``) replaces them, ``skip_existing=True``
  (``--skip-existing``) leaves them and skips their input; without either,
  nothing is computed and the error names the first one.  A result that
  would replace its own input needs ``overwrite`` even when ``OUT`` names
  the file.
* **Failures.**  One file that fails does not stop the others (unless
  ``fail_fast``); the call then raises :class:`BatchError` at the end, whose
  ``result`` says what was done, skipped and failed.  A single input raises
  its own error.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sharpscope.errors import ConfigError, InputError, SharpscopeError

__all__ = [
    "BatchError",
    "BatchResult",
    "collect_inputs",
    "deconvolve_files",
    "expand_inputs",
    "plan_outputs",
    "restore_files",
    "run_batch",
]


class BatchResult(list):
    """The files written by a batch call (a list of paths) and what else happened.

    Attributes
    ----------
    done : list of (Path, Path)
        ``(input, output)`` of each file written, in input order (the list
        itself holds the outputs).
    skipped : list of (Path, Path)
        ``(input, existing output)`` left alone (``skip_existing``).
    failed : list of (Path, str)
        ``(input, one-line reason)``.
    seconds : float
        Wall time of the whole call.

    Examples
    --------
    >>> r = BatchResult()
    >>> r.summary()
    '0 done, 0 skipped, 0 failed in 0.0 s'
    """

    def __init__(self) -> None:
        super().__init__()
        self.done: list[tuple[Path, Path]] = []
        self.skipped: list[tuple[Path, Path]] = []
        self.failed: list[tuple[Path, str]] = []
        self.seconds = 0.0

    def summary(self) -> str:
        """``'3 done, 1 skipped, 0 failed in 2.4 s'``."""
        return (
            f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``done``, ``skipped``, ``failed`` (lists of dicts), ``seconds``."""
        return {
            "done": [{"input": str(s), "output": str(d)} for s, d in self.done],
            "skipped": [{"input": str(s), "output": str(d)} for s, d in self.skipped],
            "failed": [{"input": str(s), "error": e} for s, e in self.failed],
            "seconds": round(self.seconds, 3),
        }


class BatchError(SharpscopeError):
    """Some files of a batch failed; ``result`` (a :class:`BatchResult`) says which."""

    def __init__(self, message: str, result: BatchResult):
        super().__init__(message)
        self.result = result


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _strip_ome(name: str) -> tuple[str, str]:
    """``('cell', '.ome.tif')`` for OME-TIFF names, else ``(stem, '.tif')``."""
    lower = name.lower()
    for ome in (".ome.tif", ".ome.tiff"):
        if lower.endswith(ome):
            return name[: -len(ome)], ".ome.tif"
    if lower.endswith(".zarr"):  # OME-Zarr stores give OME-Zarr results
        return name[: -len(".ome.zarr" if lower.endswith(".ome.zarr") else ".zarr")], ".ome.zarr"
    return Path(name).stem, ".tif"


def output_name(rel: str | os.PathLike[str], suffix: str = "_restored") -> Path:
    """The output path, relative to the output folder, of an input at ``rel``.

    Examples
    --------
    >>> str(output_name("day1/cell.tif")), str(output_name("a.ome.tif", "_rl"))
    ('day1/cell_restored.tif', 'a_rl.ome.tif')
    """
    rel = Path(rel)
    stem, ext = _strip_ome(rel.name)
    return rel.parent / f"{stem}{suffix}{ext}"


def collect_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str] | None = None,
    suffix: str = "_restored",
) -> list[tuple[Path, Path]]:
    """Input files and the relative name each keeps in an output folder.

    Parameters
    ----------
    inputs : iterable of path-like
        Files, folders (every supported image below them, recursively,
        hidden names skipped) and glob patterns.
    output_dir : path-like, optional
        Where results go: in a folder scan, files there that look like
        results (their stem ends with ``suffix``; with an empty suffix, every
        file of an output folder inside the scanned one) are not inputs.
    suffix : str
        The results' suffix (see above).

    Returns
    -------
    list of (Path, Path)
        ``(file, relative name)``: the path below a scanned folder, else the
        file name.  Each file once, in the order given (sorted within a folder
        or pattern).

    Raises
    ------
    InputError
        An input that matches nothing, or no inputs at all.

    Examples
    --------
    >>> collect_inputs(["data/"])  # doctest: +SKIP
    [(PosixPath('data/a.tif'), PosixPath('a.tif')), (PosixPath('data/day2/b.tif'), PosixPath('day2/b.tif'))]
    """
    from sharpscope.io import is_image_file, is_zarr_path

    out_root = Path(output_dir).resolve() if output_dir is not None else None
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir() and not is_zarr_path(p):  # a zarr store is one image
            root = p.resolve()
            inner_out = out_root is not None and out_root != root and root in out_root.parents
            files = []
            for q in sorted(p.rglob("*")):
                rel = q.relative_to(p)
                if _hidden(rel) or not q.is_file() or not is_image_file(q):
                    continue
                if out_root is not None and (out_root == q.resolve().parent or out_root in q.resolve().parents):
                    if suffix and _strip_ome(q.name)[0].endswith(suffix):
                        continue  # a result of an earlier run
                    if not suffix and inner_out:
                        continue
                files.append((q, rel))
            if not files:
                raise InputError(f"{p}: folder contains no supported images")
            found.extend(files)
        elif p.exists():
            found.append((p, Path(p.name)))
        elif _has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text) if Path(m).is_file() and is_image_file(m))
            if not matches:
                raise InputError(f"{text}: no images match")
            found.extend((m, Path(m.name)) for m in matches)
        else:
            raise InputError(f"{p}: no such file")
    unique: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for f, rel in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    if not unique:
        raise InputError("no input images given")
    return unique


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files of :func:`collect_inputs` without their relative names.

    Examples
    --------
    >>> expand_inputs(["data/*.tif"])  # doctest: +SKIP
    [PosixPath('data/a.tif'), PosixPath('data/b.tif')]
    """
    return [f for f, _ in collect_inputs(inputs)]


def _output_is_file(output: str | os.PathLike[str], n_inputs: int) -> bool:
    text = os.fspath(output)
    out = Path(text)
    from sharpscope.io import is_zarr_path

    is_folder = out.is_dir() and not is_zarr_path(out)
    return not (is_folder or text.endswith(("/", os.sep)) or not out.suffix or n_inputs > 1)


def plan_outputs(
    files: Sequence[Path],
    output: str | os.PathLike[str],
    suffix: str = "_restored",
    names: Sequence[Path] | None = None,
) -> list[Path]:
    """Destination of each input: ``OUT`` itself, or ``OUT/<relative name>``.

    One input and an ``OUT`` with a file suffix that is not an existing folder
    (nor ends with a path separator): ``OUT`` is the output file.  Otherwise
    ``OUT`` is a folder (created when missing) and input ``i`` goes to
    :func:`output_name` of ``names[i]`` (default: its file name).

    Raises
    ------
    InputError
        ``OUT`` is an existing file while several inputs are given, a file type
        that cannot be written, or two inputs that map to the same output.

    Examples
    --------
    >>> [str(p) for p in plan_outputs([Path("a.tif"), Path("b.tif")], "out/")]
    ['out/a_restored.tif', 'out/b_restored.tif']
    """
    from sharpscope.io import WRITE_SUFFIXES

    out = Path(os.fspath(output))
    if _output_is_file(output, len(files)):
        if not out.name.lower().endswith(WRITE_SUFFIXES):
            raise InputError(
                f"{out}: cannot write this file type (supported: {', '.join(WRITE_SUFFIXES)})"
            )
        dests = [out]
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder (several inputs need a folder)")
        names = [Path(f.name) for f in files] if names is None else list(names)
        dests = [out / output_name(n, suffix) for n in names]
    seen: dict[Path, Path] = {}
    for src, dst in zip(files, dests, strict=True):
        key = dst.resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {src} would both be written to {dst}")
        seen[key] = src
    return dests


def _existing_policy(
    files: Sequence[Path],
    dests: Sequence[Path],
    named_file: bool,
    overwrite: bool,
    skip_existing: bool,
) -> list[bool]:
    """Which inputs to skip; raises when an existing output would be replaced silently."""
    if overwrite and skip_existing:
        raise ConfigError("--overwrite and --skip-existing exclude each other")
    skip = []
    for src, dst in zip(files, dests, strict=True):
        exists = dst.exists()
        if dst.resolve() == src.resolve():
            if skip_existing:
                skip.append(True)
                continue
            if not overwrite:
                raise InputError(
                    f"{dst}: output would overwrite its input; pass --overwrite to replace it"
                )
        elif exists and not overwrite and not skip_existing and not named_file:
            n = sum(1 for d in dests if d.exists())
            more = f" ({n} outputs exist)" if n > 1 else ""
            raise InputError(
                f"{dst} exists{more}; pass --overwrite to replace or --skip-existing to skip"
            )
        skip.append(bool(exists and skip_existing))
    return skip


def run_batch(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    work: Callable[[Path, Path], Path],
    *,
    suffix: str = "_restored",
    overwrite: bool = False,
    skip_existing: bool = False,
    fail_fast: bool = False,
    check: Callable[[Sequence[Path]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> BatchResult:
    """Plan inputs and outputs, then call ``work(src, dst)`` for each file.

    Parameters
    ----------
    inputs, output, suffix, overwrite, skip_existing, fail_fast
        See the module notes.
    work : callable
        ``work(src, dst) -> written path``; a :class:`SharpscopeError` (or an
        ``OSError``, ``MemoryError``, ``RuntimeError``) marks the file failed.
    check : callable, optional
        Called with the outputs to write before any work (raise to refuse).
    log : callable, optional
        Receives one line per failed file (``'<input>: <reason>'``).

    Returns
    -------
    BatchResult

    Raises
    ------
    SharpscopeError
        A planning error (nothing is done), a single input's own error, the
        first failure with ``fail_fast``, or :class:`BatchError` after all
        files when some failed.

    Examples
    --------
    >>> run_batch(["raw/"], "out/", lambda s, d: d)  # doctest: +SKIP
    [PosixPath('out/a_restored.tif')]
    """
    t0 = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    named_file = _output_is_file(output, 2 if len(inputs) > 1 else 1)
    out_dir = None if named_file else Path(os.fspath(output))
    pairs = collect_inputs(inputs, output_dir=out_dir, suffix=suffix)
    files = [f for f, _ in pairs]
    dests = plan_outputs(files, output, suffix=suffix, names=[r for _, r in pairs])
    named_file = _output_is_file(output, len(files))
    skip = _existing_policy(files, dests, named_file, overwrite, skip_existing)
    if check is not None:
        check([d for d, s in zip(dests, skip, strict=True) if not s])
    result = BatchResult()
    single = len(files) == 1
    for src, dst, skipped in zip(files, dests, skip, strict=True):
        if skipped:
            result.skipped.append((src, dst))
            continue
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            written = work(src, dst)
        except SharpscopeError as exc:
            message = str(exc) if str(exc).startswith(str(src)) else f"{src}: {exc}"
            if single or fail_fast:
                raise type(exc)(message) from None
            reason = message
        except (OSError, MemoryError, RuntimeError) as exc:
            if single or fail_fast:
                raise
            reason = f"{src}: {type(exc).__name__}: {exc}".splitlines()[0]
        else:
            result.append(Path(written))
            result.done.append((src, Path(written)))
            continue
        result.failed.append((src, reason.removeprefix(f"{src}: ")))
        if log is not None:
            log(reason)
    result.seconds = time.perf_counter() - t0
    if result.failed:
        first_src, first = result.failed[0]
        raise BatchError(
            f"{len(result.failed)} of {len(files)} files failed (first: {first_src}: {first})",
            result,
        )
    return result


def deconvolve_files(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    psf: Any,
    method: str = "rl",
    iterations: int | None = None,
    axes: str | None = None,
    *,
    suffix: str = "_deconvolved",
    overwrite: bool = False,
    skip_existing: bool = False,
    fail_fast: bool = False,
    progress: bool = False,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
    report: Callable[[str], None] | None = None,
    chunks: Any = None,
    workers: int | None = None,
    cluster: str | None = None,
    **kw: Any,
) -> BatchResult:
    """Deconvolve image files with one PSF and write the results (``sharpscope deconvolve``).

    Parameters
    ----------
    inputs, output, suffix, overwrite, skip_existing, fail_fast
        As in :func:`restore_files` (see the module
        notes); results are named ``<stem>_deconvolved.tif``.
    psf : array_like or path-like
        The PSF, or an image file holding it.
    method, iterations
        As in :func:`sharpscope.deconv.deconvolve`.
    axes : str, optional
        Axes override for every input.
    progress : bool
        A progress bar over the files on stderr.
    device : {'auto', 'cpu', 'cuda'}
        Where to compute.
    log : callable, optional
        Receives one line per failed file.
    report : callable, optional
        Receives how an automatic count or balance was chosen, one line per
        file (``'richardson-lucy stopped after 9 iterations ...'``, prefixed
        with the file when there are several).
    chunks, workers, cluster : optional
        Deconvolve chunk by chunk with dask, as in
        :func:`restore_files`
        (:func:`sharpscope.parallel.deconvolve_dask`).
    **kw
        ``boundary``, ``tv_weight``, ``balance``, ... of
        :func:`~sharpscope.deconv.deconvolve`.

    Returns
    -------
    BatchResult
        The written files (a list), plus what was skipped or failed.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.io import write_image
    >>> _ = write_image("cells.tif", np.random.default_rng(0).random((32, 32)), "YX")
    >>> psf = np.outer(*2 * [np.hanning(7)])
    >>> deconvolve_files("cells.tif", "cells_rl.tif", psf, iterations=5, device="cpu")
    [PosixPath('cells_rl.tif')]
    """
    from sharpscope.deconv import deconvolve
    from sharpscope.io import read_image, write_image

    if isinstance(psf, (str, os.PathLike)):
        psf = read_image(psf).data
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    bar = None

    def work(src: Path, dst: Path) -> Path:
        if parallel.use_chunks(src, dst, axes, chunks, workers, cluster):
            path, how = parallel.deconvolve_dask(
                src, dst, psf, method, iterations, axes, chunks=chunks, workers=workers,
                cluster=cluster, device=device, **kw,
            )
            if report is not None:
                report(f"{src}: {how}" if many else how)
            return path
        image = read_image(src, axes=axes)
        out, info = deconvolve(
            image.data,
            psf,
            method=method,
            iterations=iterations,
            axes=image.axes,
            device=device,
            return_info=True,
            **kw,
        )
        if info.rule != "fixed" and report is not None:
            report(f"{src}: {info.summary()}" if many else info.summary())
        path = write_image(dst, out, image.axes, pixel_size=image.pixel_size)
        if bar is not None:
            bar.update(1)
        return path

    def check(dests: Sequence[Path]) -> None:
        nonlocal bar, many
        many = len(dests) > 1  # the stopping summaries name the file only when there are several
        if progress and len(dests) > 1:
            import sys

            from tqdm.auto import tqdm

            bar = tqdm(total=len(dests), desc="deconvolve", unit="file", file=sys.stderr)

    from sharpscope import parallel

    many = False
    try:
        with parallel.dask_client(workers, cluster):  # one cluster for the whole batch
            return run_batch(
                inputs,
                output,
                work,
                suffix=suffix,
                overwrite=overwrite,
                skip_existing=skip_existing,
                fail_fast=fail_fast,
                check=check,
                log=log,
            )
    finally:
        if bar is not None:
            bar.close()


def restore_files(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    model: Any = None,
    axes: str | None = None,
    *,
    suffix: str = "_restored",
    overwrite: bool = False,
    skip_existing: bool = False,
    fail_fast: bool = False,
    log: Callable[[str], None] | None = None,
    chunks: int | Sequence[int] | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    file_optics: bool = False,
    **kw: Any,
) -> BatchResult:
    """Restore image files and write the results (``sharpscope restore``).

    Parameters
    ----------
    inputs : path-like or iterable of them
        Image files, folders (every supported image below them, sub-folders
        included) and glob patterns.
    output : path-like
        With one input file: the output file (its suffix picks the format),
        or a folder (an existing one, a path ending in ``/``, or a name
        without suffix).  With several: a folder (created when missing).
        Files in a folder are named ``<stem><suffix>.tif`` (``.ome.tif`` for
        OME inputs); files found in an input folder keep their sub-folder.
    model : Model, str or path-like, optional
        A loaded :class:`~sharpscope.restore.Model` or what
        :func:`~sharpscope.restore.load_model` takes.
    axes : str, optional
        Axes override for every input.
    suffix : str
        Appended to the stem of each result in an output folder.
    overwrite, skip_existing : bool
        What to do with results that already exist in an output folder
        (without either, nothing is computed and the error names them).
        Replacing an input itself always needs ``overwrite``.
    fail_fast : bool
        Stop at the first file that fails (default: go on with the others and
        raise :class:`~sharpscope.batch.BatchError` at the end).
    log : callable, optional
        Receives one line per failed file.
    chunks, workers, cluster : optional
        Restore chunk by chunk with dask (:func:`sharpscope.parallel.restore_dask`,
        same result): chunks of this extent along Y and X, on a local cluster
        of ``workers`` processes or the scheduler at ``cluster``.  Chosen for
        every file without them too when a side is OME-Zarr or the image is
        too large for memory (:func:`sharpscope.parallel.use_chunks`).
    **kw
        Passed to :meth:`~sharpscope.restore.Model.predict` (``tile``, ``overlap``,
        ``batch_size``, ``device``, ``progress``, ``dtype``, ``tta``,
        ``warn_range``, ``fc``, ``modality``, ``psf``, ``consistency``; a ``psf``
        may also be a file path, and ``'auto'``, the default, corrects through the
        theoretical PSF whenever a file's optics are known, given or recorded;
        ``'none'`` turns that off); or the optics as ``na`` and
        ``wavelength`` (nm) with ``pixel_size`` (um, default: each file's own),
        from which each file's ``fc`` is computed
        (:func:`sharpscope.blind.resolve_fc`).  With none of them and
        ``file_optics``, an optics-conditioned model takes the optics a file
        records (OME-TIFF: objective NA, channel emission wavelengths and
        acquisition mode, pixel size; :func:`sharpscope.restore.optics_from_metadata`).  With ``warn_range`` (default True) and a model
        that records its valid range, each input outside it gets one
        :class:`~sharpscope.errors.RangeWarning` naming the file.

    Returns
    -------
    BatchResult
        The written files (a list of paths, in input order) with ``done``,
        ``skipped``, ``failed``, ``seconds`` and ``summary()``.  Each file is
        written atomically: a failure never leaves a partial file.

    Raises
    ------
    SharpscopeError
        The message names the offending file; see
        :func:`sharpscope.batch.run_batch`.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.io import write_image
    >>> rng = np.random.default_rng(0)
    >>> _ = write_image("raw/a.tif", rng.poisson(50, (64, 64)).astype("uint16"), "YX")
    >>> _ = write_image("raw/day2/b.tif", rng.poisson(50, (48, 80)).astype("uint16"), "YX")
    >>> result = restore_files("raw/", "restored/", device="cpu")
    >>> [str(p) for p in result]
    ['restored/a_restored.tif', 'restored/day2/b_restored.tif']
    >>> restore_files("raw/", "restored/", skip_existing=True).summary()  # doctest: +ELLIPSIS
    '0 done, 2 skipped, 0 failed in ... s'
    """
    import warnings

    from sharpscope.consistency import AUTO_PSF, NO_PSF, THEORY_PSF, check_psf, theoretical_psf
    from sharpscope.errors import RangeWarning
    from sharpscope.io import read_image, validate_axes, write_image
    from sharpscope.restore import DTYPES, Model, load_model, psf_mode

    if axes is not None:
        validate_axes(axes, len(axes.strip()))
    dtype = kw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    desc = kw.pop("desc", None)
    warn_range = kw.pop("warn_range", True)
    optics = {k: kw.pop(k, None) for k in ("na", "wavelength", "pixel_size")}
    user_fc = kw.get("fc")
    psf = kw.pop("psf", AUTO_PSF)
    mode = psf_mode(psf)
    told = user_fc is not None or optics["na"] is not None
    if mode == THEORY_PSF and not told:
        raise ConfigError(f"psf={THEORY_PSF!r} needs the optics: fc, or the NA and the wavelength")
    if mode is None:
        name = f"the PSF {psf}" if isinstance(psf, (str, os.PathLike)) else "the PSF"
        if isinstance(psf, (str, os.PathLike)):
            psf = read_image(psf).data
        # one PSF is checked here, once for the batch; per-channel lists by Model.predict
        kw["psf"] = psf if isinstance(psf, (list, tuple)) else check_psf(psf, name)
    else:
        kw["psf"] = mode
    consistency = kw.pop("consistency", None)
    if consistency is not None:
        if mode == NO_PSF or (mode == AUTO_PSF and not told and not file_optics):
            raise ConfigError("consistency needs a PSF (psf=...), or the optics for the theoretical one")
        kw["consistency"] = consistency
    if any(v is not None for v in optics.values()):
        if user_fc is not None:
            raise ConfigError("give either fc or the optics (NA, wavelength, pixel size), not both")
        if optics["na"] is None or optics["wavelength"] is None:
            raise ConfigError("the optics need the NA and the wavelength (and the pixel size unless the files record it)")
    loaded: list[Model] = [model] if isinstance(model, Model) else []

    def file_optics_kw(src: Path, img: Any) -> dict[str, Any]:
        """The options of this file: its ``fc`` from the optics given (the file's pixel
        size by default) or, with none given, from the optics the file records."""
        if optics["na"] is not None:
            from sharpscope.blind import resolve_fc

            px = img.pixel_size.get("X") if optics["pixel_size"] is None else None
            if optics["pixel_size"] is None and px is None:
                raise InputError(f"{src}: the image records no pixel size; give the pixel size (um) with the NA")
            opts = dict(kw, fc=resolve_fc(user_fc, file_pixel_size=px, **optics))
            if mode in (THEORY_PSF, AUTO_PSF):  # the PSF of the full optics, not only fc
                opts["psf"] = theoretical_psf(
                    na=optics["na"], wavelength=optics["wavelength"],
                    pixel_size=optics["pixel_size"] or px, modality=kw.get("modality"),
                )
            return opts
        if user_fc is None and file_optics and loaded[0].uses_optics:
            from sharpscope.restore import optics_from_metadata

            found = optics_from_metadata(img.metadata, img.pixel_size, img.axes, img.data.shape)
            if found is not None:
                return dict(kw, **found)
        return kw

    def check(dests: Sequence[Path]) -> None:
        if dtype == "float32":
            for dst in dests:
                if dst.name.lower().endswith((".png", ".jpg", ".jpeg")):
                    raise InputError(
                        f"{dst}: PNG/JPEG cannot store float32 results; write .tif or pass "
                        "--dtype input (dtype='input')"
                    )
        if not loaded:
            loaded.append(load_model(model, device=kw.get("device", "auto")))

    def work(src: Path, dst: Path) -> Path:
        net = loaded[0]
        if parallel.use_chunks(src, dst, axes, chunks, workers, cluster):
            if mode not in (AUTO_PSF, NO_PSF) or (mode == AUTO_PSF and consistency is not None):
                raise ConfigError(
                    f"{src}: restoring with a PSF works on whole images in memory; drop the "
                    "PSF or --chunks/--workers/--cluster"
                )
            # chunk by chunk there is no whole image to correct: psf='auto' restores without
            opts = file_optics_kw(src, read_image(src, axes=axes, lazy=True))
            opts = {k: v for k, v in opts.items() if k not in ("psf", "consistency")}
            return parallel.restore_dask(
                net, src, dst, axes=axes, chunks=chunks, workers=workers, cluster=cluster,
                desc=desc, warn_range=warn_range, **opts,
            )
        img = read_image(src, axes=axes)
        opts = file_optics_kw(src, img)
        message = net.check_range(img.data, img.axes) if warn_range else None
        if message is not None:
            warnings.warn(f"{src}: {message}", RangeWarning, stacklevel=4)
        restored = net.predict(img.data, axes=img.axes, desc=desc or src.name, warn_range=False, **opts)
        return write_image(dst, restored, img.axes, pixel_size=img.pixel_size)

    from sharpscope import parallel

    with parallel.dask_client(workers, cluster):  # one cluster for the whole batch
        return run_batch(
            inputs,
            output,
            work,
            suffix=suffix,
            overwrite=overwrite,
            skip_existing=skip_existing,
            fail_fast=fail_fast,
            check=check,
            log=log,
        )
