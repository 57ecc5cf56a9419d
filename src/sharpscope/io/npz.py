"""DeBCR ``.npz`` files and bare ``.npy`` arrays."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sharpscope.errors import AxesError, InputError
from sharpscope.io._common import NPZ_META_KEY, _pixel_size_from, _stored_meta
from sharpscope.io.axes import guess_axes


def _read_npz(p: Path, key: str | None):
    with np.load(p, allow_pickle=False) as npz:
        names = [n for n in npz.files if n != NPZ_META_KEY]
        if key is None:
            if "low" in names:
                key = "low"
            elif len(names) == 1:
                key = names[0]
            else:
                raise InputError(
                    f"{p}: holds arrays {names or 'none'}; pick one with key= "
                    "(a DeBCR file has 'low' and 'gt')"
                )
        if key not in names:
            raise InputError(f"{p}: no array {key!r} (arrays: {', '.join(names) or 'none'})")
        data = np.asarray(npz[key])
        stored = {}
        if NPZ_META_KEY in npz.files:
            stored = _stored_meta(str(npz[NPZ_META_KEY])).get(key, {})
    meta = {"format": "npz", "key": key}
    axes = stored.get("axes") if isinstance(stored, dict) else None
    if isinstance(axes, str):
        return data, axes.upper(), _pixel_size_from(stored), meta, True
    return data, _guess_npz_axes(data.shape, p), {}, meta, True


def _guess_npz_axes(shape: tuple[int, ...], p: Path) -> str:
    nd = len(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        return "SYX"
    if nd == 4 and shape[-1] <= 4:
        return "SYXC"
    if nd == 4 and shape[1] <= 4:
        return "SCYX"
    raise AxesError(f"{p}: cannot guess the axes of an array of shape {shape}; pass axes=")


def _read_npy(p: Path, key: str | None):
    data = np.load(p, allow_pickle=False)
    if data.ndim < 2:
        raise InputError(f"{p}: an image needs at least 2 dimensions, got shape {data.shape}")
    return data, guess_axes(data.ndim), {}, {"format": "npy"}, True


def _write_npz(tmp, arr, axes, px, key, prepared=None):
    name = key or "image"
    if name == NPZ_META_KEY or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise InputError(f"invalid .npz array name {name!r}")
    if tmp is None:
        return None
    meta = json.dumps({name: {"axes": axes, "pixel_size_um": px}})
    with open(tmp, "wb") as fh:
        np.savez(fh, **{name: arr, NPZ_META_KEY: np.array(meta)})
    return None
