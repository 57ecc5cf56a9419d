"""Paired training data: loading, patching, augmentation and splitting.

Three kinds of paired (degraded ``low``, target ``gt``) data feed the trainer:

* on-the-fly simulation (:class:`SimulatedPatches`, a wrapper around
  :class:`sharpscope.simulate.SimulatedPairs` that makes sample ``i`` a pure
  function of ``(seed, i)``);
* ``.npz`` files (:class:`PairedNpzDataset`): the DeBCR layout (keys ``'low'`` and
  ``'gt'``, shaped (N, H, W) or NHWC) or the split layout that :func:`prepare`
  writes (``'train_low'``, ``'train_gt'``, ``'val_low'``, ...);
* two folders of TIFFs matched by file name (:class:`PairedTiffFolders`).

Normalisation is the one used at prediction time: percentiles of the *whole*
image (:func:`sharpscope.normalize.percentiles`, ``pmin``/``pmax``), low and gt
each with their own, applied before any patch is cut -- never per patch.

:class:`RandomPatches` turns whole images (or pre-cut patches) into an
indexable stream of random, augmented patches: sample ``i`` depends only on
``(seed, i)``, so a training run can resume at any sample index and produce
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from sharpscope.errors import ConfigError, InputError

__all__ = [
    "PAIRS_FORMAT",
    "SPLITS",
    "Augment",
    "PairedImages",
    "PairedNpzDataset",
    "PairedTiffFolders",
    "PrepareResult",
    "RandomPatches",
    "SimulatedPatches",
    "augment_pair",
    "fixed_patches",
    "load_pairs",
    "patch_grid",
    "prepare",
    "split_counts",
    "stack_samples",
    "stream_seed",
]

PAIRS_FORMAT = "sharpscope-pairs"
PAIRS_VERSION = 1
SPLITS = ("train", "val", "test")
TIFF_SUFFIXES = (".tif", ".tiff")

Normalization = Literal["auto", "image", "dataset", "none"]


# --------------------------------------------------------------------------- helpers


def _rng(*entropy: int) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative ints (a SeedSequence)."""
    return np.random.default_rng([int(e) for e in entropy])


def _as_planes(data: np.ndarray, what: str) -> np.ndarray:
    """(H, W), (N, H, W), (N, H, W, 1) or (N, 1, H, W) -> float32 (N, H, W)."""
    a = np.asarray(data)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(
            f"{what}: expected (H, W), (N, H, W) or NHWC with one channel, got shape {np.shape(data)}"
        )
    if a.dtype.kind not in "biuf":
        raise InputError(f"{what}: unsupported dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if a.size and not np.isfinite(a).all():
        raise InputError(f"{what}: contains NaN or infinite values")
    return a


def _normalize_whole(x: np.ndarray, pmin: float, pmax: float) -> tuple[np.ndarray, float, float]:
    """Percentile-normalise ``x`` as ONE image (percentiles over all of it)."""
    from sharpscope.normalize import normalize, percentiles

    lo, hi = percentiles(x, pmin, pmax)
    return np.asarray(normalize(x, lo, hi), dtype=np.float32), float(lo), float(hi)


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Augmentation applied identically to ``low`` and ``gt``.

    Parameters
    ----------
    flips : bool
        Random horizontal and vertical flips (each with probability 1/2).
    rot90 : bool
        Random rotation by a multiple of 90 degrees (square patches only).
        Together with ``flips`` this draws uniformly from the 8 symmetries of
        the square.
    jitter : float
        Intensity jitter: both images are multiplied by the SAME factor drawn
        uniformly from ``[1 - jitter, 1 + jitter]`` (0 disables it).

    Examples
    --------
    >>> aug = Augment(flips=True, rot90=True, jitter=0.1)
    >>> low, gt = aug(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32),
    ...               np.random.default_rng(0))
    >>> bool(np.array_equal(low, gt))
    True
    """

    flips: bool = True
    rot90: bool = True
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError(f"augment.jitter must be in [0, 1), got {self.jitter}")

    def __call__(
        self, low: np.ndarray, gt: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return augment_pair(low, gt, rng, flips=self.flips, rot90=self.rot90, jitter=self.jitter)


def augment_pair(
    low: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    flips: bool = True,
    rot90: bool = True,
    jitter: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same random flips / 90-degree rotation / intensity scale to a pair.

    Parameters
    ----------
    low, gt : numpy.ndarray
        2-D arrays of the same shape (square when ``rot90``).
    rng : numpy.random.Generator
        Source of randomness; the draws do not depend on the array contents.
    flips, rot90, jitter
        See :class:`Augment`.

    Returns
    -------
    (low, gt) : tuple of numpy.ndarray
        Contiguous float32 copies.

    Examples
    --------
    >>> a = np.arange(9, dtype=np.float32).reshape(3, 3)
    >>> l, g = augment_pair(a, a + 1, np.random.default_rng(1))
    >>> bool(np.array_equal(l + 1, g))
    True
    """
    # a fixed number of draws per call keeps the stream layout independent of the flags
    k, fy, fx = (int(v) for v in rng.integers(0, 4, size=3))
    u = float(rng.random())
    if rot90 and k % 4:
        if low.shape[-1] != low.shape[-2]:
            raise ValueError("rot90 augmentation needs square patches")
        low, gt = np.rot90(low, k, axes=(-2, -1)), np.rot90(gt, k, axes=(-2, -1))
    if flips:
        if fy % 2:
            low, gt = low[..., ::-1, :], gt[..., ::-1, :]
        if fx % 2:
            low, gt = low[..., :, ::-1], gt[..., :, ::-1]
    low = np.ascontiguousarray(low, dtype=np.float32)
    gt = np.ascontiguousarray(gt, dtype=np.float32)
    if jitter > 0:
        s = np.float32(1.0 - jitter + 2.0 * jitter * u)
        low, gt = low * s, gt * s
    return low, gt


# --------------------------------------------------------------------------- paired images


class PairedImages:
    """A sequence of (low, gt) 2-D float32 image pairs, already normalised.

    Items may be whole images (of different shapes) or pre-cut patches.

    Parameters
    ----------
    lows, gts : sequence of numpy.ndarray
        2-D arrays; ``lows[i]`` and ``gts[i]`` must have the same shape.
    names : sequence of str, optional
        A label per pair (file name and plane) used in messages.

    Examples
    --------
    >>> pairs = PairedImages([np.zeros((8, 8))], [np.ones((8, 8))])
    >>> len(pairs), pairs[0][1].dtype
    (1, dtype('float32'))
    """

    def __init__(
        self,
        lows: Sequence[np.ndarray],
        gts: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
    ):
        if len(lows) != len(gts):
            raise InputError(f"{len(lows)} low images but {len(gts)} gt images")
        self.names = list(names) if names is not None else [f"pair {i}" for i in range(len(lows))]
        self.lows: list[np.ndarray] = []
        self.gts: list[np.ndarray] = []
        for name, lo, g in zip(self.names, lows, gts, strict=True):
            lo = np.asarray(lo, dtype=np.float32)
            g = np.asarray(g, dtype=np.float32)
            if lo.ndim != 2 or lo.shape != g.shape:
                raise InputError(
                    f"{name}: low {lo.shape} and gt {g.shape} must be 2-D images of the same shape"
                )
            self.lows.append(lo)
            self.gts.append(g)

    def __len__(self) -> int:
        return len(self.lows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.lows[i], self.gts[i]

    def min_shape(self) -> tuple[int, int]:
        """Smallest height and width over all pairs."""
        if not self.lows:
            return (0, 0)
        return (min(a.shape[0] for a in self.lows), min(a.shape[1] for a in self.lows))

    def check_patch_size(self, patch_size: int, what: str = "data") -> None:
        """Raise :class:`InputError` if some image is smaller than ``patch_size``."""
        for name, a in zip(self.names, self.lows, strict=True):
            if a.shape[0] < patch_size or a.shape[1] < patch_size:
                raise InputError(
                    f"{what}: {name} is {a.shape[0]}x{a.shape[1]}, smaller than patch_size {patch_size}"
                )


class PairedNpzDataset(PairedImages):
    """Pairs from an ``.npz`` file.

    Two layouts are understood:

    * the DeBCR layout: arrays ``'low'`` and ``'gt'`` shaped (N, H, W), (H, W),
      (N, H, W, 1) (NHWC) or (N, 1, H, W);
    * the split layout written by :func:`prepare`: ``'<split>_low'`` and
      ``'<split>_gt'`` for ``split`` in ``('train', 'val', 'test')``, plus a JSON
      ``'metadata'`` string; these patches are already normalised.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file (read with ``allow_pickle=False``).
    split : {'train', 'val', 'test'}, optional
        Which split to read from a split-layout file (default ``'train'``); must be
        None for the DeBCR layout.
    normalize : {'auto', 'dataset', 'image', 'none'}
        ``'auto'``: none for a :func:`prepare` file, ``'dataset'`` otherwise.
        ``'dataset'``: one pair of percentiles over all of ``low`` and one over all
        of ``gt`` (a DeBCR file holds patches, not whole images, so per-image
        statistics are not available; per-patch normalisation is never used).
        ``'image'``: each (H, W) plane normalised on its own.
    pmin, pmax : float
        Percentiles for the normalisation.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> np.savez(p, low=np.random.rand(3, 16, 16, 1), gt=np.random.rand(3, 16, 16, 1))
    >>> len(PairedNpzDataset(p))
    3
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = None,
        normalize: Normalization = "auto",
        pmin: float = 1.0,
        pmax: float = 99.8,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"no such npz file: {self.path}")
        _check_npz_magic(self.path)
        try:
            with np.load(self.path, allow_pickle=False) as f:
                keys = set(f.files)
                self.metadata = _read_metadata(f) if "metadata" in keys else {}
                if "train_low" in keys or self.metadata.get("format") == PAIRS_FORMAT:
                    split = split or "train"
                    if split not in SPLITS:
                        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
                    kl, kg = f"{split}_low", f"{split}_gt"
                    prepared = True
                else:
                    if split is not None:
                        raise InputError(
                            f"{self.path.name} has no '{split}_low' array (a DeBCR-layout file has only 'low' and 'gt')"
                        )
                    kl, kg = "low", "gt"
                    prepared = False
                missing = [k for k in (kl, kg) if k not in keys]
                if missing:
                    raise InputError(
                        f"{self.path.name} has no array {missing[0]!r} (found: {', '.join(sorted(keys)) or 'none'})"
                    )
                low = _as_planes(f[kl], f"{self.path.name}:{kl}")
                gt = _as_planes(f[kg], f"{self.path.name}:{kg}")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            # never pass on numpy's advice to load pickles: say what the file is not
            text = "it is not a valid npz archive" if "pickle" in str(exc) else str(exc)
            raise InputError(f"cannot read {self.path}: {text}") from None
        if low.shape != gt.shape:
            raise InputError(f"{self.path.name}: {kl} {low.shape} and {kg} {gt.shape} differ in shape")
        self.split = split
        self.prepared = prepared
        mode = normalize
        if mode == "auto":
            mode = "none" if prepared else "dataset"
        if mode == "dataset" and low.size:
            low = _normalize_whole(low, pmin, pmax)[0]
            gt = _normalize_whole(gt, pmin, pmax)[0]
        elif mode == "image":
            low = np.stack([_normalize_whole(a, pmin, pmax)[0] for a in low]) if len(low) else low
            gt = np.stack([_normalize_whole(a, pmin, pmax)[0] for a in gt]) if len(gt) else gt
        elif mode not in ("none", "dataset"):
            raise ConfigError(f"unknown normalisation {normalize!r}")
        self.normalization = mode
        names = [f"{self.path.name}[{kl}][{i}]" for i in range(len(low))]
        super().__init__(list(low), list(gt), names)


def _read_metadata(f: Any) -> dict:
    try:
        return json.loads(str(f["metadata"][()]))
    except (ValueError, TypeError):
        return {}


def _list_tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)


def match_by_name(low_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pair the TIFFs of two folders by file name (or by stem across .tif/.tiff).

    Raises :class:`InputError` when a file of either folder has no partner.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "a").mkdir(); (d / "b").mkdir()
    >>> _ = (d / "a" / "x.tif").write_bytes(b""); _ = (d / "b" / "x.tiff").write_bytes(b"")
    >>> [(p.name, q.name) for p, q in match_by_name(d / "a", d / "b")]
    [('x.tif', 'x.tiff')]
    """
    low_dir, gt_dir = Path(low_dir), Path(gt_dir)
    for d in (low_dir, gt_dir):
        if not d.is_dir():
            raise InputError(f"not a folder: {d}")
    lows, gts = _list_tiffs(low_dir), _list_tiffs(gt_dir)
    if not lows:
        raise InputError(f"no .tif/.tiff files in {low_dir}")
    by_name = {p.name: p for p in gts}
    by_stem: dict[str, list[Path]] = {}
    for p in gts:
        by_stem.setdefault(p.stem, []).append(p)
    pairs: list[tuple[Path, Path]] = []
    used: set[Path] = set()
    for p in lows:
        q = by_name.get(p.name)
        if q is None and len(by_stem.get(p.stem, [])) == 1:
            q = by_stem[p.stem][0]
        if q is None or q in used:
            raise InputError(f"{p.name} in {low_dir} has no partner with the same name in {gt_dir}")
        used.add(q)
        pairs.append((p, q))
    extra = [q for q in gts if q not in used]
    if extra:
        raise InputError(
            f"{len(extra)} file(s) in {gt_dir} have no partner in {low_dir} (first: {extra[0].name})"
        )
    return pairs


def _read_planes(path: Path) -> np.ndarray:
    """Read an image file into float32 (planes, H, W); leading axes become planes."""
    from sharpscope.io import read_image

    img = read_image(path)
    data = np.asarray(img.data)
    axes = str(img.axes)
    if "C" in axes and data.shape[axes.index("C")] > 1:
        raise InputError(f"{path.name}: multi-channel images are not supported for training; split the channels")
    if data.ndim < 2:
        raise InputError(f"{path.name}: expected an image, got shape {data.shape}")
    return _as_planes(data.reshape((-1,) + data.shape[-2:]), path.name)


class PairedTiffFolders(PairedImages):
    """Pairs from two folders of TIFFs matched by file name.

    Each file is one image (2-D) or a stack (planes along leading axes).  Every
    file is normalised as a whole -- percentiles over the whole image or stack,
    low and gt separately -- exactly as prediction does; its planes then become
    separate training images.

    Parameters
    ----------
    low_dir, gt_dir : str or Path
        Folders holding the degraded and the target images (same file names).
    pmin, pmax : float
        Percentiles for the normalisation.
    files : sequence of str, optional
        Restrict to these low file names (used to hold out whole files).

    Examples
    --------
    >>> import tempfile, tifffile
    >>> d = Path(tempfile.mkdtemp()); (d / "low").mkdir(); (d / "gt").mkdir()
    >>> tifffile.imwrite(d / "low" / "a.tif", np.random.rand(32, 32).astype("float32"))
    >>> tifffile.imwrite(d / "gt" / "a.tif", np.random.rand(32, 32).astype("float32"))
    >>> len(PairedTiffFolders(d / "low", d / "gt"))
    1
    """

    def __init__(
        self,
        low_dir: str | os.PathLike,
        gt_dir: str | os.PathLike,
        pmin: float = 1.0,
        pmax: float = 99.8,
        files: Sequence[str] | None = None,
    ):
        pairs = match_by_name(low_dir, gt_dir)
        if files is not None:
            wanted = set(files)
            pairs = [(p, q) for p, q in pairs if p.name in wanted]
        self.files = [p.name for p, _ in pairs]
        lows: list[np.ndarray] = []
        gts: list[np.ndarray] = []
        names: list[str] = []
        for p, q in pairs:
            lo, g = _read_planes(p), _read_planes(q)
            if lo.shape != g.shape:
                raise InputError(f"{p.name}: low {lo.shape} and gt {g.shape} differ in shape")
            lo = _normalize_whole(lo, pmin, pmax)[0]
            g = _normalize_whole(g, pmin, pmax)[0]
            for z in range(lo.shape[0]):
                lows.append(lo[z])
                gts.append(g[z])
                names.append(p.name if lo.shape[0] == 1 else f"{p.name}[{z}]")
        super().__init__(lows, gts, names)


def load_pairs(
    path: str | os.PathLike,
    split: str | None = None,
    gt: str | os.PathLike | None = None,
    normalize: Normalization = "auto",
    pmin: float = 1.0,
    pmax: float = 99.8,
) -> PairedImages:
    """Open paired data: an ``.npz`` file or a folder of paired TIFFs.

    Parameters
    ----------
    path : str or Path
        An ``.npz`` file (:class:`PairedNpzDataset`), a folder with sub-folders
        ``low/`` and ``gt/`` (:class:`PairedTiffFolders`), or, with ``gt``, the
        folder of low images itself.
    split : str, optional
        Split of a :func:`prepare` file.
    gt : str or Path, optional
        Folder of target images when ``path`` is the folder of low images.
    normalize, pmin, pmax
        See :class:`PairedNpzDataset` (folders are always normalised per file).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> np.savez(p, low=np.random.rand(2, 16, 16), gt=np.random.rand(2, 16, 16))
    >>> len(load_pairs(p))
    2
    """
    p = Path(path)
    if p.is_dir():
        if gt is not None:
            return PairedTiffFolders(p, gt, pmin, pmax)
        if (p / "low").is_dir() and (p / "gt").is_dir():
            return PairedTiffFolders(p / "low", p / "gt", pmin, pmax)
        raise InputError(f"{p} is a folder without low/ and gt/ sub-folders")
    if not p.exists():
        raise InputError(f"no such file or folder: {p}")
    return PairedNpzDataset(p, split=split, normalize=normalize, pmin=pmin, pmax=pmax)


# --------------------------------------------------------------------------- patch streams


class RandomPatches(Dataset):
    """Random augmented patches from paired images, indexable by sample number.

    Sample ``i`` belongs to epoch ``i // len(images)``; each epoch visits every
    pair once in a permutation drawn from ``(seed, epoch)``, and the crop
    position and augmentation of sample ``i`` are drawn from ``(seed, i)``.  The
    stream is thus a pure function of ``(seed, i)``: any worker can produce any
    sample, and training resumes exactly at a sample index.

    Parameters
    ----------
    images : PairedImages
        Normalised pairs, each at least ``patch_size`` in both dimensions.
    patch_size : int
        Side of the square patches.
    seed : int
        Non-negative seed of the stream.
    augment : Augment, optional
        Augmentation (None: none).

    Examples
    --------
    >>> pairs = PairedImages([np.random.rand(40, 40)], [np.random.rand(40, 40)])
    >>> ds = RandomPatches(pairs, 16, seed=0)
    >>> ds[5]["low"].shape
    torch.Size([1, 16, 16])
    >>> bool(torch.equal(ds[5]["gt"], RandomPatches(pairs, 16, seed=0)[5]["gt"]))
    True
    """

    def __init__(
        self,
        images: PairedImages,
        patch_size: int,
        seed: int = 0,
        augment: Augment | None = None,
    ):
        if len(images) == 0:
            raise InputError("no training pairs")
        images.check_patch_size(patch_size, "training data")
        self.images = images
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.augment = augment
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def position(self, index: int) -> tuple[int, int]:
        """``(epoch, position within the epoch)`` of sample ``index``."""
        return divmod(int(index), len(self.images))

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the pairs."""
        if epoch != self._perm_epoch:
            self._perm = _rng(self.seed, 0, epoch).permutation(len(self.images))
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch, pos = self.position(index)
        item = int(self.permutation(epoch)[pos])
        low, gt = self.images[item]
        rng = _rng(self.seed, 1, int(index))
        p = self.patch_size
        h, w = low.shape
        y = int(rng.integers(0, h - p + 1))
        x = int(rng.integers(0, w - p + 1))
        low, gt = low[y : y + p, x : x + p], gt[y : y + p, x : x + p]
        if self.augment is not None:
            low, gt = self.augment(low, gt, rng)
        return {
            "low": torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None],
            "gt": torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32))[None],
        }


def stream_seed(seed: int, stream: int) -> int:
    """Simulator seed of a stream: ``seed`` itself for training (stream 0), a
    derived 63-bit seed for validation (stream 1) and any other stream.

    Examples
    --------
    >>> stream_seed(3, 0), stream_seed(3, 1) != 3
    (3, True)
    """
    if stream == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), 0x5EED, int(stream)]).generate_state(2, np.uint32)
    return ((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class SimulatedPatches(Dataset):
    """Simulated pairs from a preset, indexable by sample number.

    Sample ``i`` is ``SimulatedPairs(preset, patch_size, seed=s).sample(i)``
    with ``s = stream_seed(seed, stream)`` -- a pure function of the index, so
    any worker can make any sample and training resumes exactly.  The training
    stream (0) uses ``seed`` itself, the validation stream (1) a derived seed.

    Parameters
    ----------
    preset : str
        A name in :data:`sharpscope.simulate.PRESETS`.
    patch_size : int
        Side of the square patches.
    seed : int
        Non-negative seed.
    stream : int
        0 for training, 1 for validation: distinct, independent streams.
    augment : Augment, optional
        Extra augmentation on top of the simulator's own randomness.
    optics_dropout : float
        Share of samples whose ``optics`` vector says "unknown" (zeros), drawn per
        sample from a stream of its own, so that an optics-conditioned network also
        learns to restore without being told the optics.

    Notes
    -----
    A sample is ``{"low", "gt", "optics"}``: ``optics`` is
    :func:`sharpscope.models.mrbcr.optics_vector` of the drawn optics (the cut-off
    fc and the modality; "unknown" for presets that record no fc).

    Examples
    --------
    >>> ds = SimulatedPatches("mrbcr-widefield", 32, seed=0)
    >>> ds[0]["low"].shape, ds[0]["optics"].shape
    (torch.Size([1, 32, 32]), torch.Size([3]))
    """

    def __init__(
        self,
        preset: str,
        patch_size: int,
        seed: int = 0,
        stream: int = 0,
        augment: Augment | None = None,
        optics_dropout: float = 0.0,
    ):
        from sharpscope import simulate

        if not 0.0 <= float(optics_dropout) <= 1.0:
            raise ConfigError(f"optics_dropout must be in [0, 1], got {optics_dropout}")
        self.optics_dropout = float(optics_dropout)
        if preset not in simulate.PRESETS:
            raise ConfigError(
                f"unknown simulation preset {preset!r} (known: {', '.join(sorted(simulate.PRESETS))})"
            )
        self.preset = preset
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.stream = int(stream)
        self.simulator_seed = stream_seed(seed, stream)
        self.augment = augment
        self.pairs = simulate.SimulatedPairs(preset, patch_size=self.patch_size, seed=self.simulator_seed)
        norm = getattr(self.pairs.preset, "normalize", None)
        self.normalization = None if norm is None else (float(norm[0]), float(norm[1]))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.pairs.sample(int(index))
        p = self.patch_size
        low = sample["low"].detach().to(torch.float32).reshape(p, p)
        gt = sample["gt"].detach().to(torch.float32).reshape(p, p)
        if self.augment is not None:
            lo, g = self.augment(low.numpy(), gt.numpy(), _rng(self.seed, 2 + self.stream, int(index)))
            low, gt = torch.from_numpy(lo), torch.from_numpy(g)
        return {
            "low": low.contiguous()[None],
            "gt": gt.contiguous()[None],
            "optics": self._optics(sample["params"], int(index)),
        }

    def _optics(self, params: dict, index: int) -> torch.Tensor:
        from sharpscope.models.mrbcr import optics_vector

        fc = params.get("fc")
        if fc is None or not 0.0 < float(fc) <= 1.0:
            return optics_vector()
        if self.optics_dropout > 0 and _rng(self.seed, 9 + self.stream, index).random() < self.optics_dropout:
            return optics_vector()
        return optics_vector(float(fc), params.get("modality"))


def stack_samples(dataset: Dataset, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples ``indices`` of a patch dataset into (N, 1, P, P) tensors."""
    items = [dataset[i] for i in indices]
    if not items:
        raise InputError("empty validation set")
    return torch.stack([it["low"] for it in items]), torch.stack([it["gt"] for it in items])


def patch_grid(start: int, stop: int, patch_size: int, overlap: int = 0) -> list[int]:
    """Patch origins covering ``[start, stop)`` with the given overlap.

    The stride is ``patch_size - overlap``; when the grid does not end at
    ``stop`` one more patch flush with ``stop`` is added.  Empty when the range
    is shorter than ``patch_size``.

    Examples
    --------
    >>> patch_grid(0, 100, 32)
    [0, 32, 64, 68]
    >>> patch_grid(10, 40, 32)
    []
    """
    if not 0 <= overlap < patch_size:
        raise InputError(f"overlap must be in [0, patch_size), got {overlap} for patch_size {patch_size}")
    if stop - start < patch_size:
        return []
    stride = patch_size - overlap
    pos = list(range(start, stop - patch_size + 1, stride))
    if pos[-1] + patch_size < stop:
        pos.append(stop - patch_size)
    return pos


def fixed_patches(
    images: PairedImages, patch_size: int, max_count: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic set of non-overlapping patches (for validation).

    Every pair is tiled with a non-overlapping grid; when that gives more than
    ``max_count`` patches an evenly spaced subset is kept.

    Returns
    -------
    low, gt : numpy.ndarray
        (N, patch_size, patch_size) float32.

    Examples
    --------
    >>> pairs = PairedImages([np.zeros((64, 64))], [np.zeros((64, 64))])
    >>> fixed_patches(pairs, 32)[0].shape
    (4, 32, 32)
    """
    images.check_patch_size(patch_size, "validation data")
    lows, gts = [], []
    for low, gt in (images[i] for i in range(len(images))):
        h, w = low.shape
        ys = list(range(0, h - patch_size + 1, patch_size))
        xs = list(range(0, w - patch_size + 1, patch_size))
        for y in ys:
            for x in xs:
                lows.append(low[y : y + patch_size, x : x + patch_size])
                gts.append(gt[y : y + patch_size, x : x + patch_size])
    if max_count is not None and len(lows) > max_count:
        keep = np.unique(np.linspace(0, len(lows) - 1, max_count).round().astype(int))
        lows = [lows[i] for i in keep]
        gts = [gts[i] for i in keep]
    return np.stack(lows).astype(np.float32), np.stack(gts).astype(np.float32)


# --------------------------------------------------------------------------- prepare


def split_counts(n: int, fractions: Sequence[float], what: str = "items") -> list[int]:
    """Share ``n`` items among splits in proportion to ``fractions``.

    Largest-remainder rounding; every split with a non-zero fraction gets at
    least one item (taken from the largest), so ``n`` must be at least the
    number of non-zero fractions.

    Examples
    --------
    >>> split_counts(10, (0.8, 0.1, 0.1))
    [8, 1, 1]
    >>> split_counts(3, (0.8, 0.1, 0.1))
    [1, 1, 1]
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or (fr < 0).any() or fr.sum() <= 0:
        raise InputError(f"split fractions must be non-negative and not all zero, got {list(fractions)}")
    fr = fr / fr.sum()
    need = int((fr > 0).sum())
    if n < need:
        raise InputError(f"only {n} {what} to share among {need} splits")
    raw = fr * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((fr > 0) & (counts == 0)):
        j = int(np.argmax(counts))
        counts[j] -= 1
        counts[i] += 1
    return [int(c) for c in counts]


@dataclass
class PrepareResult:
    """What :func:`prepare` wrote.

    Attributes
    ----------
    path : Path
        The ``.npz`` file.
    metadata_path : Path
        The JSON side-car (same content as the ``'metadata'`` array in the npz).
    counts : dict
        Number of patches per split.
    metadata : dict
        The metadata written.
    """

    path: Path
    metadata_path: Path
    counts: dict[str, int]
    metadata: dict = field(repr=False)


def _check_npz_magic(path: Path) -> None:
    """One-line error unless ``path`` starts like an ``.npz`` (zip) archive."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise InputError(f"{path} is empty (0 bytes)")
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise InputError(
            f"{path} is not an .npz archive of training pairs; --data takes such a file "
            "(from `sharpscope prepare` or `simulate`) or a folder with low/ and gt/ images"
        )


def _load_sources(
    inputs: Sequence[Any], gts: Sequence[Any]
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(low name, gt name, low planes, gt planes) per image pair."""
    inputs, gts = list(inputs), list(gts)
    if (
        len(inputs) == 1
        and len(gts) == 1
        and not isinstance(inputs[0], np.ndarray)
        and Path(inputs[0]).is_dir()
    ):
        pairs: list[tuple[Any, Any]] = list(match_by_name(inputs[0], gts[0]))
    else:
        if len(inputs) != len(gts):
            raise InputError(f"{len(inputs)} inputs but {len(gts)} ground-truth images; they pair up in order")
        pairs = list(zip(inputs, gts, strict=True))
    out = []
    for i, (a, b) in enumerate(pairs):
        if isinstance(a, np.ndarray):
            na, la = f"input {i}", _as_planes(a, f"input {i}")
        else:
            na, la = Path(a).name, _read_planes(Path(a))
        if isinstance(b, np.ndarray):
            nb, lb = f"gt {i}", _as_planes(b, f"gt {i}")
        else:
            nb, lb = Path(b).name, _read_planes(Path(b))
        if la.shape != lb.shape:
            raise InputError(f"{na} {la.shape} and {nb} {lb.shape} differ in shape")
        out.append((na, nb, la, lb))
    if not out:
        raise InputError("no input images")
    return out


def _blocks(length: int, n: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, length, n + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(n)]


def prepare(
    inputs: Sequence[str | os.PathLike | np.ndarray],
    gts: Sequence[str | os.PathLike | np.ndarray],
    out: str | os.PathLike,
    patch_size: int = 128,
    overlap: int = 0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    by: Literal["image", "region"] = "image",
    seed: int = 0,
    pmin: float = 1.0,
    pmax: float = 99.8,
    guard: int | None = None,
    region_size: int | None = None,
) -> PrepareResult:
    """Normalise, patch and split paired images into a training ``.npz``.

    Each input/gt pair is normalised as a whole (percentiles ``pmin``/``pmax``
    of the whole image or stack, low and gt separately -- the normalisation
    prediction uses), then cut into ``patch_size`` patches on a grid with
    ``overlap``, and the patches are shared among train/validation/test so that
    neighbouring patches of one image never land in different splits:

    * ``by='image'``: whole images (files; all planes of a stack together) are
      assigned to splits;
    * ``by='region'``: every image is divided into contiguous blocks of about
      ``region_size`` pixels; blocks are assigned to splits, patches are cut
      only inside a block, and every internal block border is shrunk so that
      blocks are at least ``guard`` pixels apart: no patch overlaps or touches
      a patch of another block.

    Parameters
    ----------
    inputs, gts : sequence of path or numpy.ndarray
        Degraded and target images, paired in order; or one folder each,
        paired by file name.  Stacks contribute every plane.
    out : str or Path
        The ``.npz`` to write (atomically); a ``.json`` side-car holds the
        metadata too.
    patch_size, overlap : int
        Patch side and overlap between neighbouring patches of one split.
    split : sequence of 3 floats
        Train, validation and test fractions (normalised to sum 1).
    by : {'image', 'region'}
        Unit of the split.
    seed : int
        Seed of the random assignment of images/regions to splits.
    pmin, pmax : float
        Normalisation percentiles (stored in the metadata).
    guard : int, optional
        Minimum gap between regions (default ``patch_size // 4``).
    region_size : int, optional
        Target block side for ``by='region'`` (default ``2 * patch_size``).

    Returns
    -------
    PrepareResult

    Examples
    --------
    >>> import tempfile, os
    >>> rng = np.random.default_rng(0)
    >>> lows = [rng.random((64, 64)) for _ in range(5)]
    >>> res = prepare(lows, [a ** 2 for a in lows], os.path.join(tempfile.mkdtemp(), "d.npz"),
    ...               patch_size=32, split=(0.6, 0.2, 0.2))
    >>> res.counts
    {'train': 12, 'val': 4, 'test': 4}
    """
    patch_size = int(patch_size)
    overlap = int(overlap)
    if patch_size < 4:
        raise InputError(f"patch_size must be at least 4, got {patch_size}")
    if not 0 <= overlap < patch_size:
        raise InputError(f"overlap must be in [0, patch_size), got {overlap}")
    split = tuple(float(s) for s in split)
    if len(split) != 3:
        raise InputError(f"split needs 3 fractions (train, val, test), got {len(split)}")
    if by not in ("image", "region"):
        raise InputError(f"by must be 'image' or 'region', got {by!r}")
    guard = patch_size // 4 if guard is None else int(guard)
    if guard < 0:
        raise InputError(f"guard must be >= 0, got {guard}")
    region_size = 2 * patch_size if region_size is None else int(region_size)
    if region_size < patch_size:
        raise InputError(f"region_size ({region_size}) must be at least patch_size ({patch_size})")
    out = Path(out)
    rng = np.random.default_rng(int(seed))

    sources = _load_sources(inputs, gts)
    src_meta = []
    normed = []
    for na, nb, la, lb in sources:
        la, lo_a, hi_a = _normalize_whole(la, pmin, pmax)
        lb, lo_b, hi_b = _normalize_whole(lb, pmin, pmax)
        normed.append((la, lb))
        src_meta.append(
            {"low": na, "gt": nb, "shape": list(la.shape), "low_range": [lo_a, hi_a], "gt_range": [lo_b, hi_b]}
        )

    # regions: (image, y0, y1, x0, x1) = the area patches may be cut from
    half_lo, half_hi = math.ceil(guard / 2), math.ceil(guard / 2)
    regions: list[tuple[int, int, int, int, int]] = []
    for i, (la, _) in enumerate(normed):
        h, w = la.shape[1:]
        if by == "image":
            cand = [(i, 0, h, 0, w)]
        else:
            step = patch_size + half_lo + half_hi
            ny = max(1, min(round(h / region_size), (h + half_lo + half_hi) // step))
            nx = max(1, min(round(w / region_size), (w + half_lo + half_hi) // step))
            cand = []
            for by0, by1 in _blocks(h, ny):
                for bx0, bx1 in _blocks(w, nx):
                    y0 = by0 + (half_lo if by0 > 0 else 0)
                    y1 = by1 - (half_hi if by1 < h else 0)
                    x0 = bx0 + (half_lo if bx0 > 0 else 0)
                    x1 = bx1 - (half_hi if bx1 < w else 0)
                    cand.append((i, y0, y1, x0, x1))
        for r in cand:
            _, y0, y1, x0, x1 = r
            if patch_grid(y0, y1, patch_size, overlap) and patch_grid(x0, x1, patch_size, overlap):
                regions.append(r)
    unit = "images" if by == "image" else "regions"
    if not regions:
        raise InputError(f"no image is large enough for a {patch_size}x{patch_size} patch")
    counts = split_counts(len(regions), split, f"{unit} at least {patch_size} px wide")
    order = rng.permutation(len(regions))
    assignment = np.empty(len(regions), dtype=int)
    start = 0
    for s, c in enumerate(counts):
        assignment[order[start : start + c]] = s
        start += c

    patches: dict[str, dict[str, list]] = {s: {"low": [], "gt": [], "origin": []} for s in SPLITS}
    region_meta = []
    for r, (i, y0, y1, x0, x1) in enumerate(regions):
        name = SPLITS[assignment[r]]
        region_meta.append({"image": i, "y": [y0, y1], "x": [x0, x1], "split": name})
        la, lb = normed[i]
        for z in range(la.shape[0]):
            for y in patch_grid(y0, y1, patch_size, overlap):
                for x in patch_grid(x0, x1, patch_size, overlap):
                    patches[name]["low"].append(la[z, y : y + patch_size, x : x + patch_size])
                    patches[name]["gt"].append(lb[z, y : y + patch_size, x : x + patch_size])
                    patches[name]["origin"].append((i, z, y, x))

    arrays: dict[str, np.ndarray] = {}
    n_by_split = {}
    for s in SPLITS:
        n = len(patches[s]["low"])
        n_by_split[s] = n
        shape = (n, patch_size, patch_size)
        arrays[f"{s}_low"] = np.stack(patches[s]["low"]).astype(np.float32) if n else np.zeros(shape, np.float32)
        arrays[f"{s}_gt"] = np.stack(patches[s]["gt"]).astype(np.float32) if n else np.zeros(shape, np.float32)
        arrays[f"{s}_origin"] = (
            np.asarray(patches[s]["origin"], dtype=np.int32).reshape(n, 4)
        )
    metadata = {
        "format": PAIRS_FORMAT,
        "version": PAIRS_VERSION,
        "patch_size": patch_size,
        "overlap": overlap,
        "split": list(split),
        "by": by,
        "seed": int(seed),
        "guard": guard if by == "region" else None,
        "region_size": region_size if by == "region" else None,
        "normalization": {"pmin": float(pmin), "pmax": float(pmax), "per": "image"},
        "normalized": True,
        "origin_columns": ["image", "plane", "y", "x"],
        "counts": n_by_split,
        "sources": src_meta,
        "regions": region_meta,
    }
    text = json.dumps(metadata, indent=1)
    arrays["metadata"] = np.array(text)

    from sharpscope.io import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    meta_path = out.with_suffix(".json")
    with atomic_write(meta_path) as tmp:
        Path(tmp).write_text(text + "\n")
    return PrepareResult(path=out, metadata_path=meta_path, counts=n_by_split, metadata=metadata)
