"""PNG and JPEG through pillow (``YX`` grey or ``YXC`` colour)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.errors import InputError
from sharpscope.io._common import _META_KEY, _pixel_size_from, _stored_meta


def _read_pil(p: Path, key: str | None):
    from PIL import Image as PILImage

    with PILImage.open(p) as im:
        im.load()
        fmt = (im.format or "").lower()
        text = im.info.get(_META_KEY) if fmt == "png" else im.info.get("comment")
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not im.mode.startswith("I;16"):
            im = im.convert("RGB")
        data = np.array(im)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("="))
    meta = {"format": "jpeg" if fmt in ("jpeg", "jpg") else fmt or "pil"}
    stored = _stored_meta(text)
    yxc = "YX" if data.ndim == 2 else "YXC"
    axes = stored.get("axes")
    if isinstance(axes, str):
        # pixels are stored as Y, X[, C]; the written axes order comes back by transposition
        want = axes.strip().upper()
        if data.ndim == 2 and sorted(want) == sorted("YXC"):
            data = data[..., None]
            yxc = "YXC"
        if sorted(want) == sorted(yxc):
            data = np.transpose(data, [yxc.index(a) for a in want])
            return data, want, _pixel_size_from(stored), meta, True
    return data, yxc, _pixel_size_from(stored), meta, True


def _pil_layout(arr: np.ndarray, axes: str, fmt: str) -> np.ndarray:
    """Pixels as (Y, X) or (Y, X, C) for pillow; checks what the format can store."""
    extra = [a for a in axes if a not in "YXC"]
    if extra:
        raise InputError(
            f"{fmt} stores 2-D images (axes YX or YXC), not axes {axes!r}; write .tif instead"
        )
    order = [axes.index(a) for a in "YXC" if a in axes]
    out = np.transpose(arr, order)
    if out.ndim == 3:
        if out.shape[2] == 1:
            out = out[..., 0]
        elif out.shape[2] not in (2, 3, 4) or (fmt == "JPEG" and out.shape[2] != 3):
            raise InputError(
                f"{fmt} cannot store {out.shape[2]} channels; write .tif instead"
            )
    if arr.dtype == np.bool_:
        out = out.astype(np.uint8) * 255
    ok = out.dtype == np.uint8 or (fmt == "PNG" and out.dtype == np.uint16 and out.ndim == 2)
    if not ok:
        allowed = "uint8 or uint16 (grey)" if fmt == "PNG" else "uint8"
        raise InputError(
            f"{fmt} stores {allowed} pixels, not {arr.dtype} with axes {axes!r}; "
            "write .tif, or convert the dtype (e.g. --dtype input)"
        )
    return np.ascontiguousarray(out)


def _write_png(tmp, arr, axes, px, key, prepared=None):
    out = _pil_layout(arr, axes, "PNG")
    if tmp is None:
        return out
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(_META_KEY, json.dumps({"axes": axes, "pixel_size_um": px}))
    kwargs: dict[str, Any] = {"pnginfo": info}
    if "X" in px and "Y" in px:
        kwargs["dpi"] = (25400.0 / px["X"], 25400.0 / px["Y"])
    PILImage.fromarray(prepared).save(tmp, format="PNG", **kwargs)
    return None


def _write_jpeg(tmp, arr, axes, px, key, prepared=None):
    out = _pil_layout(arr, axes, "JPEG")
    if tmp is None:
        return out
    from PIL import Image as PILImage

    comment = json.dumps({"axes": axes, "pixel_size_um": px})
    PILImage.fromarray(prepared).save(tmp, format="JPEG", quality=95, comment=comment)
    return None
