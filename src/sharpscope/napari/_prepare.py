"""Prepare-data dock widget: normalise, preview the patch grid and the split, write the npz.

The twin of ``sharpscope prepare`` (:func:`sharpscope.prepare`): paired low / gt images from
two layers (every plane of a stack) or two folders of TIFFs matched by name are normalised
as whole images, cut into patches and shared among train / validation / test by image or by
region.  The preview runs the same function into a temporary file and draws every patch as a
rectangle coloured by its split, so what is drawn is what will be written.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, SpinBox

from sharpscope.errors import InputError
from sharpscope.napari import _common as c

SOURCES = ("two layers (low, gt)", "two folders of TIFFs")
SPLIT_COLORS = {"train": "#33cc33", "val": "#ff9900", "test": "#ff33cc"}
MAX_RECTANGLES = 5000


class PrepareWidget(c.SharpscopeWidget):
    """Normalise, patch and split paired images into a training ``.npz``."""

    title = "Prepare data"

    def __init__(self, napari_viewer: Any = None) -> None:
        super().__init__(napari_viewer)
        self.source = ComboBox(label="pairs from", choices=list(SOURCES), value=SOURCES[0])
        self.low = self.register_layer_combo(ComboBox(label="low layer", choices=self.layer_choices()))
        self.gt = self.register_layer_combo(ComboBox(label="gt layer", choices=self.layer_choices()))
        self.low_dir = FileEdit(label="low folder", mode="d")
        self.gt_dir = FileEdit(label="gt folder", mode="d")
        self.pmin = FloatSpinBox(label="low percentile", value=1.0, min=0.0, max=100.0, step=0.1)
        self.pmax = FloatSpinBox(label="high percentile", value=99.8, min=0.0, max=100.0, step=0.1)
        self.patch_size = SpinBox(label="patch size", value=128, min=4, max=4096, step=16)
        self.overlap = SpinBox(label="overlap", value=0, min=0, max=4095)
        self.train_f = FloatSpinBox(label="train", value=0.8, min=0.0, max=1.0, step=0.05)
        self.val_f = FloatSpinBox(label="validation", value=0.1, min=0.0, max=1.0, step=0.05)
        self.test_f = FloatSpinBox(label="test", value=0.1, min=0.0, max=1.0, step=0.05)
        self.by = ComboBox(label="split by", choices=["region", "image"], value="region")
        self.region_size = SpinBox(label="region size", value=0, min=0, max=1_000_000, tooltip="0: 2 x patch size")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.out = FileEdit(label="write to", mode="w", filter="*.npz", value=str(Path.cwd() / "pairs.npz"))
        self.normalised = self.run_button("Show normalised", self.show_normalised)
        self.preview = self.run_button("Preview patches", self.preview_grid)
        self.run = self.run_button("Write", self.write)
        self.source.changed.connect(self._update)
        self.extend(
            [
                self.source,
                self.low,
                self.gt,
                self.low_dir,
                self.gt_dir,
                Container(widgets=[self.pmin, self.pmax, self.patch_size, self.overlap], labels=True),
                Container(widgets=[self.train_f, self.val_f, self.test_f, self.by, self.region_size, self.seed],
                          labels=True),
                self.out,
                self.normalised,
                self.preview,
                self.run,
            ]
        )
        self.finish_layout()
        self._update()
        self.result: Any = None

    def _update(self, *_: Any) -> None:
        layers = self.source.value == SOURCES[0]
        self.low.visible = self.gt.visible = layers
        self.low_dir.visible = self.gt_dir.visible = not layers

    # -- inputs
    def inputs(self) -> tuple[list, list]:
        if self.source.value == SOURCES[0]:
            from sharpscope.napari._train import layer_planes

            if self.low.value is None or self.gt.value is None:
                raise InputError("choose the low and the gt layer")
            return [layer_planes(self.low.value)], [layer_planes(self.gt.value)]
        low, gt = str(self.low_dir.value or ""), str(self.gt_dir.value or "")
        for what, p in (("low", low), ("gt", gt)):
            if not p or not Path(p).is_dir():
                raise InputError(f"choose the folder of {what} TIFFs")
        return [low], [gt]

    def options(self) -> dict[str, Any]:
        return {
            "patch_size": self.patch_size.value,
            "overlap": self.overlap.value,
            "split": (self.train_f.value, self.val_f.value, self.test_f.value),
            "by": self.by.value,
            "seed": self.seed.value,
            "pmin": self.pmin.value,
            "pmax": self.pmax.value,
            "region_size": self.region_size.value or None,
        }

    # -- actions
    def show_normalised(self) -> Any:
        def add() -> list:
            from sharpscope.normalize import normalize, percentiles

            added = []
            for layer in (self.low.value, self.gt.value):
                if layer is None:
                    raise InputError("choose the low and the gt layer")
                data = c.layer_array(layer).astype(np.float32)
                lo, hi = percentiles(data, self.pmin.value, self.pmax.value)
                name = c.unique_name(self.viewer, f"{layer.name} normalised")
                kwargs = c.result_kwargs(layer, name, operation="normalize", range=[float(lo), float(hi)])
                added.append(self.viewer.add_image(normalize(data, lo, hi), **kwargs))
            return added

        return c.run_guarded(self, add)

    def preview_grid(self) -> Any:
        return c.run_guarded(self, lambda: self._prepare(write=False))

    def write(self) -> Any:
        return c.run_guarded(self, lambda: self._prepare(write=True))

    def _prepare(self, write: bool) -> Any:
        from sharpscope.data import prepare

        inputs, gts = self.inputs()
        opts = self.options()
        out = str(self.out.value or "")
        if write and (not out or out == "." or Path(out).is_dir()):
            raise InputError("choose the .npz file to write")

        def work(job: c.Job) -> tuple[Any, dict[str, np.ndarray]]:
            job.report(0, 1, "normalising and cutting patches")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(out) if write else Path(tmp) / "preview.npz"
                res = prepare(inputs, gts, path, **opts)
                with np.load(res.path) as npz:
                    origins = {s: np.asarray(npz[f"{s}_origin"]) for s in SPLIT_COLORS}
            return res, origins

        def done(result: tuple[Any, dict[str, np.ndarray]]) -> None:
            res, origins = result
            self.result = res
            counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
            self.log(("wrote " + str(res.path) + ": " if write else "preview: ") + counts + " patches")
            self.status.value = counts
            if self.source.value == SOURCES[0]:
                self._draw(origins, opts["patch_size"])

        return self.start(work, done, desc="prepare" if write else "patch preview", total=0)

    def _draw(self, origins: dict[str, np.ndarray], size: int) -> None:
        layer = self.low.value
        nd = layer.ndim
        rects, colors = [], []
        for split, rows in origins.items():
            for _img, plane, y, x in rows[:MAX_RECTANGLES]:
                corners = np.array([[y, x], [y, x + size], [y + size, x + size], [y + size, x]], float)
                if nd == 3:
                    corners = np.column_stack([np.full(4, plane, float), corners])
                rects.append(corners)
                colors.append(SPLIT_COLORS[split])
        name = f"{layer.name} patches"
        if name in self.viewer.layers:
            self.viewer.layers.remove(self.viewer.layers[name])
        scale = tuple(layer.scale) if nd == 3 else tuple(layer.scale[-2:])
        translate = tuple(layer.translate) if nd == 3 else tuple(layer.translate[-2:])
        self.grid_layer = self.viewer.add_shapes(
            rects or None,
            ndim=3 if nd == 3 else 2,
            shape_type="rectangle",
            edge_color=colors or "white",
            face_color="transparent",
            edge_width=max(1.0, size / 64),
            name=name,
            scale=scale,
            translate=translate,
            properties={"split": [k for k, rows in origins.items() for _ in rows[:MAX_RECTANGLES]]},
        )
