"""Reader contribution: images with their axes and pixel size, DeBCR ``.npz``, model files.

* ``.tif``/``.tiff``/``.ome.tif``: one layer, scaled by the file's pixel size, with the axes
  kept in the layer metadata (so the widgets know a ``TYX`` stack from a ``ZYX`` one).
* ``.npz``: the DeBCR layout (``low``, ``gt``: two layers; also ``psf`` when present, as a
  simulated dataset writes it), or a single-array npz.
* ``.ome.zarr`` / ``.zarr`` folders (OME-NGFF 0.4/0.5; needs the ``zarr`` extra): one layer,
  read lazily (a dask array of the full-resolution level, so a volume larger than memory
  opens), with its axes and pixel sizes.
* ``.safetensors``: a sharpscope model file: its header is shown and the Restore widget is
  opened with that model selected (no layer is added).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sharpscope.napari._common import META_KEY, image_layer_kwargs

MODEL_SUFFIX = ".safetensors"
IMAGE_SUFFIXES = (".tif", ".tiff", ".npz")
NPZ_LAYER_KEYS = ("low", "gt", "psf")


def get_reader(path: str | list[str]) -> Any:
    """npe2 reader hook: a reading function for our files, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        return None
    suffixes = {Path(p).suffix.lower() for p in paths}
    if suffixes == {MODEL_SUFFIX} and len(paths) == 1:
        return read_model
    if suffixes <= set(IMAGE_SUFFIXES):
        return read_images
    if all(_is_zarr(p) for p in paths):
        return read_images
    return None


def _is_zarr(path: str | Path) -> bool:
    from sharpscope.io import is_zarr_path

    p = Path(path)
    return is_zarr_path(p) and p.is_dir()


def read_images(path: str | list[str]) -> list[tuple]:
    """Layer data of image files (``.tif`` and ``.npz``)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out: list[tuple] = []
    for p in paths:
        out.extend(_read_one(Path(p)))
    return out


def _npz_keys(p: Path) -> list[str]:
    from sharpscope.io import NPZ_META_KEY

    with np.load(p, allow_pickle=False) as npz:
        names = [n for n in npz.files if n != NPZ_META_KEY]
    keys = [k for k in NPZ_LAYER_KEYS if k in names]
    if "low" in keys:
        return keys
    return names if len(names) == 1 else keys or names


def _read_one(p: Path) -> list[tuple]:
    from sharpscope.io import read_image

    if _is_zarr(p):
        img = read_image(p, lazy=True)
        name = p.name[: -len(".ome.zarr")] if p.name.lower().endswith(".ome.zarr") else p.stem
        return [(img.data, image_layer_kwargs(img, name), "image")]
    if p.suffix.lower() != ".npz":
        img = read_image(p)
        kwargs = image_layer_kwargs(img, p.name.split(".")[0])
        return [(img.data, kwargs, "image")]
    layers = []
    for key in _npz_keys(p):
        img = read_image(p, key=key)
        kwargs = image_layer_kwargs(img, f"{p.stem} {key}")
        kwargs["metadata"][META_KEY]["key"] = key
        if key == "psf":
            kwargs["colormap"] = "magma"
            kwargs["visible"] = False
        layers.append((img.data, kwargs, "image"))
    return layers


def read_model(path: str | list[str]) -> list[tuple]:
    """Show a model file's header; open the Restore widget on it; add no layer."""
    p = Path(path[0] if isinstance(path, list) else path)
    from napari.utils.notifications import show_info

    from sharpscope.napari._restore import header_summary

    summary = header_summary(p)  # ModelFormatError for a file that is not a sharpscope model
    show_info(f"{p.name}: {summary}")
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 - no viewer: the notification is enough
        viewer = None
    if viewer is not None:
        _, widget = viewer.window.add_plugin_dock_widget("sharpscope", "Restore")
        widget.select_model_file(p)
    return [(None,)]
