"""Deconvolve dock widget: the Richardson-Lucy family and Wiener (twin of ``sharpscope deconvolve``).

The PSF comes from an image layer, a file, optics parameters (:func:`sharpscope.make_psf`),
or ``auto``: estimated from the image itself by the PSF-identification network
(:func:`sharpscope.blind.blind_deconvolve`; optionally given the NA, wavelength and pixel
size of the optics fields, and as a grid of PSFs for space-varying Richardson-Lucy); the
estimation runs in the worker with the deconvolution.  ``auto`` iterations / balance (automatic stopping, Wiener
balance from the data) are offered when :func:`sharpscope.deconvolve` accepts ``None``
for them, and are then the default.
"""

from __future__ import annotations

import inspect
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

METHODS = ("rl", "rl-accel", "rl-tv", "wiener")
BOUNDARIES = ("default", "extended", "reflect", "circular")
PSF_SOURCES = ("layer", "file", "optics", "auto")


def accepts_none(name: str) -> bool:
    """Whether :func:`sharpscope.deconvolve` takes ``name=None`` (automatic choice)."""
    from sharpscope.deconv import deconvolve

    param = inspect.signature(deconvolve).parameters.get(name)
    if param is None:
        return False
    return param.default is None or "None" in str(param.annotation)


def describe(info: Any) -> str:
    """One log line about what :func:`sharpscope.deconvolve` chose (its ``DeconvolveInfo``)."""
    its = tuple(getattr(info, "iterations", ()) or ())
    rule = getattr(info, "rule", "")
    if its:
        span = str(its[0]) if min(its) == max(its) else f"{min(its)}-{max(its)}"
        return f"{info.method}: {span} iterations ({rule}) over {len(its)} plane(s)"
    balance = getattr(info, "balance", None)
    return f"{info.method}: balance {'spectral default' if balance is None else f'{balance:.3g}'} ({rule})"


class DeconvolveWidget(c.SharpscopeWidget):
    """Deconvolve an image layer with a PSF from a layer, a file or optics parameters."""

    title = "Deconvolve"

    def __init__(self, napari_viewer: Any = None) -> None:
        super().__init__(napari_viewer)
        self.image = self.register_layer_combo(ComboBox(label="image", choices=self.layer_choices()))
        self.axes = LineEdit(label="axes", value="", tooltip="e.g. ZYX; blank: from the layer")
        self.psf_source = ComboBox(label="PSF from", choices=list(PSF_SOURCES), value="optics")
        self.psf_layer = self.register_layer_combo(ComboBox(label="PSF layer", choices=self.layer_choices()))
        self.psf_file = FileEdit(label="PSF file", mode="r", filter="*.tif *.tiff *.npz *.npy")
        self.optics_fields = c.OpticsFields(na=1.4)
        self.na, self.wavelength, self.pixel_size = self.optics_fields.widgets
        self.refractive_index = FloatSpinBox(label="immersion n", value=1.515, min=1.0, max=2.0, step=0.01)
        self.confocal = CheckBox(text="confocal", value=False)
        self.psf_size = SpinBox(label="PSF size", value=33, min=3, max=255, step=2)
        self.optics = Container(
            widgets=[self.na, self.wavelength, self.pixel_size, self.refractive_index, self.confocal, self.psf_size],
            labels=True,
        )
        self.auto_optics = CheckBox(text="optics known (NA, emission, pixel below)", value=False)
        self.auto_grid = CheckBox(text="grid of PSFs (space-varying rl / rl-tv)", value=False)
        self.auto_rows = SpinBox(label="grid rows", value=2, min=1, max=64)
        self.auto_cols = SpinBox(label="grid columns", value=2, min=1, max=64)
        self.auto = Container(
            widgets=[self.auto_optics, self.auto_grid, self.auto_rows, self.auto_cols], labels=True
        )
        self.method = ComboBox(label="method", choices=list(METHODS), value="rl-accel")
        self.auto_iterations = CheckBox(text="automatic stopping", value=accepts_none("iterations"))
        self.auto_iterations.enabled = accepts_none("iterations")
        self.iterations = SpinBox(label="iterations", value=20, min=1, max=10000)
        self.auto_balance = CheckBox(text="automatic Wiener balance", value=accepts_none("balance"))
        self.auto_balance.enabled = accepts_none("balance")
        self.balance = FloatSpinBox(label="balance", value=1e-3, min=1e-8, max=10.0, step=1e-3)
        self.tv_weight = FloatSpinBox(label="TV weight", value=0.002, min=0.0, max=1.0, step=0.001)
        self.boundary = ComboBox(label="boundary", choices=list(BOUNDARIES), value="default")
        self.device = ComboBox(label="device", choices=["cpu", "auto", "cuda"], value="cpu")
        self.run = self.run_button("Deconvolve", self.deconvolve)
        self.preview = self.run_button("Show PSF", self.show_psf)
        for w in (self.psf_source, self.method, self.auto_iterations, self.auto_balance,
                  self.auto_optics, self.auto_grid):
            w.changed.connect(self._update_visibility)
        self.image.changed.connect(self._take_pixel_size)
        self.extend(
            [
                self.image,
                self.axes,
                self.psf_source,
                self.psf_layer,
                self.psf_file,
                self.auto,
                self.optics,
                self.method,
                self.auto_iterations,
                self.iterations,
                self.auto_balance,
                self.balance,
                self.tv_weight,
                self.boundary,
                self.device,
                self.preview,
                self.run,
            ]
        )
        self.finish_layout()
        self._update_visibility()
        self._take_pixel_size()

    def _update_visibility(self, *_: Any) -> None:
        src, method = self.psf_source.value, self.method.value
        self.psf_layer.visible = src == "layer"
        self.psf_file.visible = src == "file"
        self.optics.visible = src == "optics" or (src == "auto" and bool(self.auto_optics.value))
        self.auto.visible = src == "auto"
        self.auto_rows.visible = self.auto_cols.visible = bool(self.auto_grid.value)
        rl = method != "wiener"
        self.auto_iterations.visible = rl
        self.iterations.visible = rl and not (self.auto_iterations.value and self.auto_iterations.enabled)
        self.auto_balance.visible = not rl
        self.balance.visible = not rl and not (self.auto_balance.value and self.auto_balance.enabled)
        self.tv_weight.visible = method == "rl-tv"

    def _take_pixel_size(self, *_: Any) -> None:
        self.optics_fields.take_pixel_size(self.image.value, self.axes.value)

    # -- the PSF
    def blind_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sharpscope.blind.estimate_psf` for the ``auto`` PSF."""
        opts: dict[str, Any] = {}
        if self.auto_optics.value:
            opts.update(self.optics_fields.values())
        if self.auto_grid.value:
            opts["grid"] = (int(self.auto_rows.value), int(self.auto_cols.value))
        return opts

    def psf(self) -> np.ndarray:
        """The PSF chosen in the widget (``auto``: estimated from the image, in this thread)."""
        src = self.psf_source.value
        if src == "auto":
            from sharpscope.blind import estimate_psf

            layer = self.image.value
            if layer is None:
                raise InputError("no image layer: the auto PSF is estimated from the image")
            est = estimate_psf(
                c.layer_array(layer), axes=c.layer_axes(layer, self.axes.value),
                **self.blind_options(),
            )
            return est.stack() if est.grid is not None else est.psf
        if src == "layer":
            layer = self.psf_layer.value
            if layer is None:
                raise InputError("no PSF layer: choose one, or take the PSF from a file or optics")
            return c.layer_array(layer).astype(np.float32)
        if src == "file":
            from sharpscope.io import read_image

            path = str(self.psf_file.value or "")
            if not path or path == "." or not Path(path).is_file():
                raise InputError("choose a PSF file (.tif)")
            return np.asarray(read_image(path).data, dtype=np.float32)
        from sharpscope.physics.psf import make_psf

        return make_psf(
            na=self.na.value,
            wavelength=self.wavelength.value,
            pixel_size=self.pixel_size.value,
            refractive_index=self.refractive_index.value,
            confocal=self.confocal.value,
            size=self.psf_size.value,
        )

    def show_psf(self) -> Any:
        def add(psf: np.ndarray) -> Any:
            layer = self.image.value
            scale = None
            if layer is not None:
                px = tuple(layer.scale[-2:])
                scale = ((1.0,) * (psf.ndim - 2) + px) if self.psf_source.value == "auto" else tuple(
                    layer.scale[-psf.ndim :]
                )
            return self.viewer.add_image(
                psf, name=c.unique_name(self.viewer, "psf"), colormap="magma", scale=scale
            )

        if self.psf_source.value == "auto":  # the estimate is work: a thread worker
            if self.image.value is None:
                return self.error(c.one_line(InputError("no image layer: the auto PSF is estimated from the image")))
            return self.start(lambda job: self.psf(), add, desc="estimate the PSF", total=0, interruptible=True)
        return c.run_guarded(self, lambda: add(self.psf()))

    # -- the work
    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sharpscope.deconvolve` set by the widget."""
        method = self.method.value
        opts: dict[str, Any] = {"method": method, "device": self.device.value}
        if method != "wiener":
            auto = self.auto_iterations.value and self.auto_iterations.enabled
            opts["iterations"] = None if auto else int(self.iterations.value)
        else:
            auto = self.auto_balance.value and self.auto_balance.enabled
            opts["balance"] = None if auto else float(self.balance.value)
        if method == "rl-tv":
            opts["tv_weight"] = float(self.tv_weight.value)
        if self.boundary.value != "default":
            opts["boundary"] = self.boundary.value
        return opts

    def deconvolve(self) -> Any:
        return c.run_guarded(self, self._deconvolve)

    def _deconvolve(self) -> Any:
        layer = self.image.value
        if layer is None:
            raise InputError("no image layer: open an image or load the sample data first")
        axes = c.layer_axes(layer, self.axes.value)
        data = c.layer_array(layer)
        blind = self.psf_source.value == "auto"
        psf = None if blind else self.psf()
        opts = self.options()
        blind_opts = self.blind_options() if blind else {}

        def work(job: c.Job) -> np.ndarray:
            from sharpscope.deconv import deconvolve

            job.report(0, 1, f"{opts['method']} on {data.shape}")
            if blind:
                from sharpscope.blind import blind_deconvolve

                job.report(0, 1, f"estimating the PSF, then {opts['method']}")
                kw = dict(opts)
                if "grid" in blind_opts:
                    kw.pop("device", None)
                    kw.pop("boundary", None)
                out, info = blind_deconvolve(data, axes=axes, return_info=True, **blind_opts, **kw)
                job.log(info.summary())
                return out
            if "return_info" not in inspect.signature(deconvolve).parameters:
                return deconvolve(data, psf, axes=axes, **opts)
            out, info = deconvolve(data, psf, axes=axes, return_info=True, **opts)
            job.log(describe(info))
            return out

        def done(out: np.ndarray) -> None:
            name = c.unique_name(self.viewer, f"{layer.name} {opts['method']}")
            kwargs = c.result_kwargs(layer, name, operation="deconvolve", axes=axes,
                                     **{k: v for k, v in opts.items() if k != "device"})
            self.last_layer = self.viewer.add_image(out, **kwargs)

        return self.start(work, done, desc="deconvolve", total=0, interruptible=True)
