"""Writer contribution: an image layer to TIFF / OME-TIFF / npz with its axes and pixel size."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from sharpscope.napari._common import layer_axes, layer_pixel_size


def write_image_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: ``write_image`` with the layer's axes and pixel size."""
    from sharpscope.io import write_image

    if hasattr(data, "compute"):
        data = data.compute()
    arr = np.asarray(data)
    layer = SimpleNamespace(
        data=arr,
        name=meta.get("name", "image"),
        rgb=bool(meta.get("rgb", False)),
        metadata=meta.get("metadata") or {},
        scale=meta.get("scale", [1.0] * arr.ndim),
    )
    axes = layer_axes(layer)
    written = write_image(path, arr, axes, pixel_size=layer_pixel_size(layer, axes))
    return [str(written)]
