"""Estimate-PSF dock widget (twin of ``sharpscope estimate-psf``).

The PSF of an image layer, or a grid of PSFs over its field, from the
PSF-identification network (:func:`sharpscope.blind.estimate_psf`), optionally
given the optics.  The result is an image layer (the PSF, or the stack of the
grid's PSFs in row-major tile order) and a shapes layer outlining the tiles over
the image, each labelled with its FWHM (``filled`` for tiles without structure,
whose PSF comes from their neighbours).  With the identifier *beads*, the layer is an
image of isolated sub-resolution beads and the PSF is measured on it instead
(:func:`sharpscope.blind.measure_bead_psf`, ``estimate-psf --beads``): the PSF layer and a
points layer marking the beads averaged.  The work runs in a thread worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    SpinBox,
)

from sharpscope.errors import InputError
from sharpscope.napari import _common as c

OPTICS = ("unknown", "cut-off fc", "NA + wavelength + pixel")
IDENTIFIERS = ("psfid-2d (bundled network)", "blind-rl (classical)", "model file", "beads (measure on a bead image)")


def tile_rectangles(estimate: Any) -> tuple[list[np.ndarray], list[str], list[bool]]:
    """Corners (row, column) of each tile, its label (FWHM) and whether it was filled."""
    rects, labels, filled = [], [], []
    r, cols = estimate.psfs.shape[:2]
    for i in range(r):
        for j in range(cols):
            y0, y1, x0, x1 = (float(v) - 0.5 for v in estimate.bounds[i, j])
            rects.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]]))
            f = bool(estimate.filled[i, j])
            labels.append(f"FWHM {float(estimate.fwhm[i, j]):.2f} px" + (" (filled)" if f else ""))
            filled.append(f)
    return rects, labels, filled


class EstimatePSFWidget(c.SharpscopeWidget):
    """Estimate the PSF (or a PSF grid) of an image layer."""

    title = "Estimate PSF"

    def __init__(self, napari_viewer: Any = None) -> None:
        super().__init__(napari_viewer)
        self.image = self.register_layer_combo(ComboBox(label="image", choices=self.layer_choices()))
        self.axes = LineEdit(label="axes", value="", tooltip="e.g. TYX; blank: from the layer")
        self.optics_mode = ComboBox(label="optics", choices=list(OPTICS), value=OPTICS[0])
        self.fc = FloatSpinBox(label="fc (cycles/px)", value=0.2, min=0.01, max=0.5, step=0.005)
        self.optics_fields = c.OpticsFields(na=1.2)
        self.na, self.wavelength, self.pixel_size = self.optics_fields.widgets
        self.optics = Container(widgets=self.optics_fields.widgets, labels=True)
        self.known_theta = CheckBox(text="aberration bound known", value=False)
        self.theta_max = FloatSpinBox(label="theta max (waves)", value=0.2, min=0.0, max=2.0, step=0.01)
        self.use_grid = CheckBox(text="grid of PSFs over the field", value=False)
        self.rows = SpinBox(label="grid rows", value=3, min=1, max=64)
        self.cols = SpinBox(label="grid columns", value=3, min=1, max=64)
        self.identifier = ComboBox(label="identifier", choices=list(IDENTIFIERS), value=IDENTIFIERS[0])
        self.model_file = FileEdit(label="model file", mode="r", filter="*.safetensors")
        self.psf_size = SpinBox(label="PSF size (px, odd)", value=33, min=7, max=255, step=2)
        self.run = self.run_button("Estimate PSF", self.estimate)
        for w in (self.optics_mode, self.known_theta, self.use_grid, self.identifier):
            w.changed.connect(self._update_visibility)
        self.image.changed.connect(self._take_pixel_size)
        self.extend(
            [
                self.image, self.axes, self.optics_mode, self.fc, self.optics, self.known_theta,
                self.theta_max, self.use_grid, self.rows, self.cols, self.identifier,
                self.model_file, self.psf_size, self.run,
            ]
        )
        self.finish_layout()
        self.last_estimate: Any = None
        self.psf_layer: Any = None
        self.grid_layer: Any = None
        self._update_visibility()
        self._take_pixel_size()

    @property
    def beads(self) -> bool:
        """Whether the PSF is measured on beads rather than identified blindly."""
        return self.identifier.value == IDENTIFIERS[3]

    def _update_visibility(self, *_: Any) -> None:
        mode, blind = self.optics_mode.value, not self.beads
        for w in (self.optics_mode, self.known_theta, self.use_grid):
            w.visible = blind
        self.fc.visible = blind and mode == OPTICS[1]
        self.optics.visible = blind and mode == OPTICS[2]
        self.theta_max.visible = blind and bool(self.known_theta.value)
        self.rows.visible = self.cols.visible = blind and bool(self.use_grid.value)
        self.model_file.visible = self.identifier.value == IDENTIFIERS[2]
        self.psf_size.visible = not blind

    def _take_pixel_size(self, *_: Any) -> None:
        self.optics_fields.take_pixel_size(self.image.value, self.axes.value)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sharpscope.blind.estimate_psf` set by the widget
        (of :func:`sharpscope.blind.measure_bead_psf` for *beads*: the PSF size)."""
        opts: dict[str, Any] = {}
        if self.beads:
            return {"size": int(self.psf_size.value)}
        mode = self.optics_mode.value
        if mode == OPTICS[1]:
            opts["fc"] = float(self.fc.value)
        elif mode == OPTICS[2]:
            opts.update(self.optics_fields.values())
        if self.known_theta.value:
            opts["theta_max"] = float(self.theta_max.value)
        if self.use_grid.value:
            opts["grid"] = (int(self.rows.value), int(self.cols.value))
        ident = self.identifier.value
        if ident == IDENTIFIERS[1]:
            opts["identifier"] = "blind-rl"
        elif ident == IDENTIFIERS[2]:
            path = str(self.model_file.value or "")
            if not path or path == "." or not Path(path).is_file():
                raise InputError("choose a PSF-identification model file (.safetensors)")
            opts["identifier"] = path
        return opts

    def estimate(self) -> Any:
        return c.run_guarded(self, self._estimate)

    def _estimate(self) -> Any:
        layer = self.image.value
        if layer is None:
            raise InputError("no image layer: open an image or load the sample data first")
        axes = c.layer_axes(layer, self.axes.value)
        data = c.layer_array(layer)
        opts = self.options()
        if self.beads:
            return self._measure(layer, axes, data, opts)

        def work(job: c.Job) -> Any:
            from sharpscope.blind import estimate_psf

            job.report(0, 1, f"identifying the PSF of {layer.name}")

            def progress(done: int, total: int) -> None:
                job.report(done, total, f"{done}/{total} patches identified")

            est = estimate_psf(data, axes=axes, progress=progress, **opts)
            filled = int(est.filled.sum())
            job.log(
                f"FWHM {float(est.fwhm.min()):.2f}-{float(est.fwhm.max()):.2f} px, fc "
                f"{float(est.fc.min()):.3g}-{float(est.fc.max()):.3g}"
                f" ({'given' if est.fc_given else 'estimated'}), noise gain {est.noise.gain:.3g},"
                f" sigma {est.noise.sigma:.3g}" + (f"; {filled} tiles filled" if filled else "")
            )
            return est

        def done(est: Any) -> None:
            self.last_estimate = est
            grid = est.grid is not None
            psf = est.stack() if grid else est.psf
            px = tuple(float(s) for s in layer.scale[-2:])
            name = c.unique_name(self.viewer, f"{layer.name} psf{' grid' if grid else ''}")
            meta = {c.META_KEY: {"source": layer.name, "operation": "estimate-psf",
                                 "axes": "SYX" if grid else "YX", **est.to_dict()}}
            self.psf_layer = self.viewer.add_image(
                psf, name=name, colormap="magma", scale=((1.0,) if grid else ()) + px, metadata=meta,
            )
            rects, labels, filled = tile_rectangles(est)
            # 2-D outlines over the last two axes (napari shows them on every plane of a stack)
            self.grid_layer = self.viewer.add_shapes(
                rects,
                ndim=2,
                shape_type="rectangle",
                edge_color=["orange" if f else "cyan" for f in filled],
                face_color="transparent",
                edge_width=max(1.0, 0.004 * max(data.shape[-2:])),
                name=c.unique_name(self.viewer, f"{layer.name} psf tiles"),
                scale=px,
                translate=tuple(float(t) for t in layer.translate[-2:]),
                features={"label": labels, "filled": filled},
                text={"string": "{label}", "color": "yellow", "size": 10, "anchor": "center"},
            )
            summary = labels[0] if len(labels) == 1 else f"{len(labels)} tiles, {sum(filled)} filled"
            self.info(f"estimate-psf: {summary}")

        return self.start(work, done, desc="estimate-psf", total=0, interruptible=True)

    def _measure(self, layer: Any, axes: str, data: np.ndarray, opts: dict[str, Any]) -> Any:
        """The PSF measured on the beads of ``layer``: a PSF layer and the beads as points."""

        def work(job: c.Job) -> Any:
            from sharpscope.blind import measure_bead_psf

            job.report(0, 1, f"measuring the PSF on the beads of {layer.name}")
            beads = measure_bead_psf(data, axes=axes, **opts)
            rejected = ", ".join(f"{k} {v}" for k, v in beads.rejected.items() if v)
            job.log(f"{len(beads.positions)} beads averaged" + (f" (rejected: {rejected})" if rejected else ""))
            return beads

        def done(beads: Any) -> None:
            self.last_estimate = beads
            px = tuple(float(s) for s in layer.scale[-2:])
            meta = {c.META_KEY: {"source": layer.name, "operation": "estimate-psf --beads", "axes": "YX",
                                 **beads.to_dict()}}
            self.psf_layer = self.viewer.add_image(
                beads.psf, name=c.unique_name(self.viewer, f"{layer.name} bead psf"), colormap="magma",
                scale=px, metadata=meta,
            )
            self.grid_layer = self.viewer.add_points(
                beads.positions, name=c.unique_name(self.viewer, f"{layer.name} beads"), size=beads.psf.shape[-1],
                face_color="transparent", border_color="lime", scale=px,
                translate=tuple(float(t) for t in layer.translate[-2:]),
            )
            self.info(f"estimate-psf: {len(beads.positions)} beads, FWHM {beads.fwhm:.2f} px")

        return self.start(work, done, desc="estimate-psf --beads", total=0, interruptible=True)
