"""Tests of sharpscope.data: paired datasets, patches, augmentation, prepare/split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from sharpscope.data import (
    Augment,
    PairedImages,
    PairedNpzDataset,
    PairedTiffFolders,
    RandomPatches,
    augment_pair,
    fixed_patches,
    load_pairs,
    match_by_name,
    patch_grid,
    prepare,
    split_counts,
)
from sharpscope.errors import ConfigError, InputError


def _pct_norm(x: np.ndarray, pmin: float = 1.0, pmax: float = 99.8) -> np.ndarray:
    """Independent reference: percentile normalisation over the whole array."""
    lo, hi = np.percentile(x, [pmin, pmax])
    return ((x.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)


# ----------------------------------------------------------------------------- augmentation


def test_augment_applies_the_same_transform_to_low_and_gt():
    rng = np.random.default_rng(0)
    low = rng.random((8, 8)).astype(np.float32)
    gt = 3.0 * low + 1.0  # gt is a pixel-wise function of low: any shared geometry keeps it so
    seen = set()
    for s in range(64):
        lo, g = augment_pair(low, gt, np.random.default_rng(s), flips=True, rot90=True, jitter=0.2)
        scale = (g - lo * 3.0)  # = 1 * jitter scale everywhere
        assert np.allclose(scale, scale.flat[0], atol=1e-5)
        # undo the intensity scale, then identify which of the 8 symmetries was used
        s_ = scale.flat[0]
        base = lo / s_
        for k in range(4):
            for flip in (False, True):
                cand = np.rot90(low, k)
                cand = cand[:, ::-1] if flip else cand
                if np.allclose(base, cand, atol=1e-5):
                    seen.add((k, flip))
        assert 0.8 - 1e-6 <= s_ <= 1.2 + 1e-6
    assert len(seen) == 8  # the whole dihedral group is reached


def test_augment_off_is_identity_and_jitter_bounds():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    lo, g = augment_pair(a, a, np.random.default_rng(3), flips=False, rot90=False, jitter=0.0)
    assert np.array_equal(lo, a) and np.array_equal(g, a)
    with pytest.raises(ConfigError, match="jitter"):
        Augment(jitter=1.5)


# ----------------------------------------------------------------------------- patch streams


def test_random_patches_are_deterministic_crops_covering_each_epoch():
    rng = np.random.default_rng(1)
    lows = [rng.random((40, 50)).astype(np.float32) for _ in range(3)]
    gts = [a * 2 for a in lows]
    pairs = PairedImages(lows, gts, ["a", "b", "c"])
    ds = RandomPatches(pairs, 16, seed=5, augment=None)
    # same (seed, index) -> same sample, whatever the order of access
    later = ds[7]
    for i in range(7):
        ds[i]
    again = RandomPatches(pairs, 16, seed=5)[7]
    assert torch.equal(later["low"], again["low"]) and torch.equal(later["gt"], again["gt"])
    # every sample is a genuine crop of one image, with gt the same crop
    for i in range(9):
        epoch, pos = ds.position(i)
        item = int(ds.permutation(epoch)[pos])
        lo = ds[i]["low"][0].numpy()
        hits = [
            (y, x)
            for y in range(40 - 16 + 1)
            for x in range(50 - 16 + 1)
            if np.array_equal(lows[item][y : y + 16, x : x + 16], lo)
        ]
        assert len(hits) == 1
        y, x = hits[0]
        assert np.array_equal(ds[i]["gt"][0].numpy(), gts[item][y : y + 16, x : x + 16])
    # an epoch visits every pair exactly once
    for epoch in range(3):
        assert sorted(ds.permutation(epoch).tolist()) == [0, 1, 2]
    assert ds.position(7) == (2, 1)
    # another seed gives another stream
    assert not torch.equal(RandomPatches(pairs, 16, seed=6)[0]["low"], RandomPatches(pairs, 16, seed=5)[0]["low"])


def test_random_patches_reject_too_small_images():
    pairs = PairedImages([np.zeros((10, 40))], [np.zeros((10, 40))], ["small.tif"])
    with pytest.raises(InputError, match="small.tif"):
        RandomPatches(pairs, 16)


def test_fixed_patches_grid_and_subset():
    img = np.arange(64 * 96, dtype=np.float32).reshape(64, 96)
    pairs = PairedImages([img], [img + 1])
    lo, g = fixed_patches(pairs, 32)
    assert lo.shape == (6, 32, 32)
    assert np.array_equal(lo[1], img[0:32, 32:64]) and np.array_equal(g - lo, np.ones_like(lo))
    lo3, _ = fixed_patches(pairs, 32, max_count=3)
    assert lo3.shape == (3, 32, 32)


# ----------------------------------------------------------------------------- npz / tiff


def test_npz_debcr_layout_nhwc_and_dataset_normalisation(tmp_path):
    rng = np.random.default_rng(2)
    low = (rng.random((5, 16, 16, 1)) * 1000 + 100).astype(np.float32)
    gt = (rng.random((5, 16, 16, 1)) * 50).astype(np.float32)
    p = tmp_path / "debcr.npz"
    np.savez(p, low=low, gt=gt)
    ds = PairedNpzDataset(p)
    assert len(ds) == 5 and not ds.prepared
    # one pair of percentiles over the whole array (not per patch)
    ref_low, ref_gt = _pct_norm(low[..., 0]), _pct_norm(gt[..., 0])
    np.testing.assert_allclose(np.stack(ds.lows), ref_low, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack(ds.gts), ref_gt, rtol=1e-5, atol=1e-5)
    raw = PairedNpzDataset(p, normalize="none")
    assert np.array_equal(np.stack(raw.lows), low[..., 0])
    # (N, H, W) works too, and a missing key is a clear error
    np.savez(tmp_path / "nhw.npz", low=low[..., 0], gt=gt[..., 0])
    assert len(load_pairs(tmp_path / "nhw.npz")) == 5
    np.savez(tmp_path / "bad.npz", low=low)
    with pytest.raises(InputError, match="'gt'"):
        PairedNpzDataset(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="val_low"):
        PairedNpzDataset(p, split="val")


def _write_pair_folders(root: Path, n: int, shape=(48, 64), seed=0) -> tuple[Path, Path, list]:
    rng = np.random.default_rng(seed)
    (root / "low").mkdir(parents=True)
    (root / "gt").mkdir(parents=True)
    imgs = []
    for i in range(n):
        g = (rng.random(shape) * 4000).astype(np.uint16)
        lo = (g // 3 + rng.integers(0, 50, shape)).astype(np.uint16)
        tifffile.imwrite(root / "low" / f"img{i}.tif", lo)
        tifffile.imwrite(root / "gt" / f"img{i}.tif", g)
        imgs.append((lo, g))
    return root / "low", root / "gt", imgs


def test_tiff_folders_match_by_name_and_normalise_whole_images(tmp_path):
    low_dir, gt_dir, imgs = _write_pair_folders(tmp_path, 3)
    ds = PairedTiffFolders(low_dir, gt_dir)
    assert ds.names == ["img0.tif", "img1.tif", "img2.tif"]
    for (lo, g), a, b in zip(imgs, ds.lows, ds.gts, strict=True):
        np.testing.assert_allclose(a, _pct_norm(lo), atol=1e-5)
        np.testing.assert_allclose(b, _pct_norm(g), atol=1e-5)
    # a patch drawn for training is a crop of the WHOLE-image normalisation, not re-normalised
    patch = RandomPatches(ds, 16, seed=0)[0]["low"][0].numpy()
    whole = [_pct_norm(lo) for lo, _ in imgs]
    assert any(
        np.allclose(w[y : y + 16, x : x + 16], patch, atol=1e-5)
        for w in whole
        for y in range(48 - 15)
        for x in range(64 - 15)
    )
    assert len(load_pairs(tmp_path)) == 3  # folder with low/ and gt/


def test_tiff_folders_unmatched_names_are_errors(tmp_path):
    low_dir, gt_dir, _ = _write_pair_folders(tmp_path, 2)
    (gt_dir / "img1.tif").rename(gt_dir / "other.tif")
    with pytest.raises(InputError, match="img1.tif"):
        match_by_name(low_dir, gt_dir)


# ----------------------------------------------------------------------------- prepare


def test_split_counts():
    assert split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert split_counts(7, (0.8, 0.1, 0.1)) == [5, 1, 1]
    assert split_counts(4, (1, 0, 0)) == [4, 0, 0]
    assert sum(split_counts(101, (0.7, 0.2, 0.1))) == 101
    with pytest.raises(InputError):
        split_counts(2, (0.8, 0.1, 0.1))


def test_patch_grid():
    assert patch_grid(0, 64, 32) == [0, 32]
    assert patch_grid(0, 70, 32, overlap=8) == [0, 24, 38]
    assert patch_grid(5, 30, 32) == []


def test_prepare_by_image_has_no_leakage(tmp_path):
    rng = np.random.default_rng(3)
    lows = [rng.random((70, 90)).astype(np.float32) * (i + 1) for i in range(10)]
    gts = [np.sqrt(a) for a in lows]
    res = prepare(lows, gts, tmp_path / "d.npz", patch_size=32, overlap=8, split=(0.6, 0.2, 0.2), seed=1)
    with np.load(res.path, allow_pickle=False) as f:
        origins = {s: f[f"{s}_origin"] for s in ("train", "val", "test")}
        meta = json.loads(str(f["metadata"][()]))
        arrays = {k: f[k] for k in f.files if k != "metadata"}
    images = {s: set(o[:, 0].tolist()) for s, o in origins.items()}
    assert [len(images[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert images["train"].isdisjoint(images["val"])
    assert images["train"].isdisjoint(images["test"])
    assert images["val"].isdisjoint(images["test"])
    # every patch is the crop of the whole-image-normalised image at its recorded origin
    for s in ("train", "val", "test"):
        for k in range(0, len(origins[s]), 7):
            i, z, y, x = origins[s][k]
            np.testing.assert_allclose(arrays[f"{s}_low"][k], _pct_norm(lows[i])[y : y + 32, x : x + 32], atol=1e-5)
            np.testing.assert_allclose(arrays[f"{s}_gt"][k], _pct_norm(gts[i])[y : y + 32, x : x + 32], atol=1e-5)
    assert meta["by"] == "image" and meta["normalized"] is True
    assert res.counts == {s: len(origins[s]) for s in origins}
    assert json.loads(res.metadata_path.read_text())["counts"] == res.counts
    # a prepared file reads back per split, without re-normalisation
    tr = PairedNpzDataset(res.path)
    assert tr.prepared and tr.split == "train" and len(tr) == res.counts["train"]
    np.testing.assert_array_equal(np.stack(tr.lows), arrays["train_low"])


def test_prepare_by_region_keeps_a_guard_band_between_splits(tmp_path):
    rng = np.random.default_rng(4)
    img = rng.random((2, 200, 260)).astype(np.float32)  # a stack: planes stay in the same regions
    res = prepare(
        [img], [img ** 2], tmp_path / "r.npz", patch_size=32, overlap=16, by="region",
        split=(0.6, 0.2, 0.2), guard=10, region_size=64, seed=2,
    )
    with np.load(res.path, allow_pickle=False) as f:
        origins = {s: f[f"{s}_origin"] for s in ("train", "val", "test")}
    assert all(len(o) for o in origins.values())
    names = list(origins)
    for a in range(3):
        for b in range(a + 1, 3):
            oa, ob = origins[names[a]], origins[names[b]]
            # distance between patch squares: the gap along y or x must be >= guard
            for _, _, y, x in oa:
                gy = np.maximum(ob[:, 2] - (y + 32), y - (ob[:, 2] + 32))
                gx = np.maximum(ob[:, 3] - (x + 32), x - (ob[:, 3] + 32))
                assert np.all(np.maximum(gy, gx) >= 10), (names[a], names[b])
    # the two planes of the stack share their regions
    for s, o in origins.items():
        p0 = {(y, x) for _, z, y, x in o if z == 0}
        p1 = {(y, x) for _, z, y, x in o if z == 1}
        assert p0 == p1, s
    # one image cannot be split by image into three splits
    with pytest.raises(InputError, match="images"):
        prepare([img[0]], [img[0]], tmp_path / "x.npz", patch_size=32, by="image")


def test_prepare_pairs_folders_by_name(tmp_path):
    low_dir, gt_dir, imgs = _write_pair_folders(tmp_path / "src", 3, shape=(64, 64))
    res = prepare([low_dir], [gt_dir], tmp_path / "f.npz", patch_size=32, split=(1, 1, 1))
    assert res.counts == {"train": 4, "val": 4, "test": 4}
    assert [s["low"] for s in res.metadata["sources"]] == ["img0.tif", "img1.tif", "img2.tif"]
    with pytest.raises(InputError, match="overlap"):
        prepare([low_dir], [gt_dir], tmp_path / "g.npz", patch_size=32, overlap=32)
