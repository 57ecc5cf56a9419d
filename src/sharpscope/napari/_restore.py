"""Restore dock widget: a trained network over an image layer (the twin of ``sharpscope restore``).

An optics-conditioned model (:attr:`sharpscope.restore.Model.uses_optics`) can be
given the optics: with *optics known* ticked, the NA, emission wavelength, pixel size
(from the layer when it records one) and modality become the cut-off ``fc``
(:func:`sharpscope.blind.resolve_fc`) and ``modality`` of :meth:`Model.predict`, as
``sharpscope restore --na --wavelength --pixel-size --modality`` does.  For a model
without that input the fields are hidden and a hint says so.

With *PSF known* ticked, an image layer holding the 2-D PSF (a measured bead, or the
PSF the Deconvolve widget shows) corrects each restored plane towards what the data
show through it (:func:`sharpscope.consistency.data_consistency`), as
``sharpscope restore --psf PSF.tif [--consistency S]`` does.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    SpinBox,
)

from sharpscope.consistency import DEFAULT_STRENGTH, check_psf
from sharpscope.errors import ModelFormatError
from sharpscope.napari import _common as c

FILE_CHOICE = "model file..."
MODALITIES = ("widefield", "confocal")
NO_OPTICS_HINT = "this model does not use the optics (NA, emission, pixel size)"
# models trained in this session by the Train widget: name -> file
SESSION_MODELS: dict[str, Path] = {}


def model_choices(_widget: Any = None) -> list[str]:
    """Bundled and user models, then models trained in this session, then a file dialog."""
    from sharpscope.models.store import list_models

    names = [m.name for m in list_models() if not m.description.startswith("unusable")]
    names += [n for n in SESSION_MODELS if n not in names]
    return [*names, FILE_CHOICE]


def header_summary(path: str | Path) -> str:
    """One line about a model file: name, architecture, parameters of its header."""
    from sharpscope.models.format import read_header

    h = read_header(path)
    text = f"{h.name}: {h.architecture}, tiles {h.tile.size}/{h.tile.overlap}"
    text += f", normalisation {h.normalization.pmin:g}-{h.normalization.pmax:g} %"
    if h.license:
        text += f", licence {h.license.split(' (')[0]}"
    return text


def header_uses_optics(header: Any) -> bool:
    """Whether a model header describes an optics-conditioned network (``optics_input``)."""
    hparams = getattr(header, "hparams", None) or {}
    return bool(hparams.get("optics_input", False))


class WatchedNetwork(torch.nn.Module):
    """Wraps a network: one tile per call, a progress report (and cancel check) per tile."""

    def __init__(self, network: torch.nn.Module, job: c.Job, total: int) -> None:
        super().__init__()
        self.inner = network
        self.size_multiple = getattr(network, "size_multiple", 1)
        # a noise-conditioned network gets the whole image's noise level, as from the CLI;
        # an optics-conditioned one the optics appended to it (Model.uses_optics,
        # optics_condition and network_function read these flags of the network they get)
        self.noise_input = bool(getattr(network, "noise_input", False))
        self.optics_input = bool(getattr(network, "optics_input", False))
        self.job, self.total, self.done = job, total, 0

    def __deepcopy__(self, memo: dict) -> WatchedNetwork:
        # the job (a thread event, the viewer's progress) is shared, never copied
        import copy

        return WatchedNetwork(copy.deepcopy(self.inner, memo), self.job, self.total)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        outs = []
        for i in range(x.shape[0]):
            self.job.check()
            args = (x[i : i + 1],) if noise is None else (x[i : i + 1], noise)
            outs.append(self.inner(*args)[0])
            self.done += 1
            self.job.report(self.done, self.total, f"tile {self.done}/{self.total}")
        return (torch.cat(outs),)


def count_tiles(shape_yx: tuple[int, int], planes: int, tile: Any, overlap: Any, multiple: int) -> int:
    """Number of network calls ``Model.predict`` makes (per TTA pass)."""
    from sharpscope.tiling import layout_axis

    h, w = shape_yx
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    ny = len(layout_axis(ph, int(tile), int(overlap), multiple).starts)
    nx = len(layout_axis(pw, int(tile), int(overlap), multiple).starts)
    return planes * ny * nx


class RestoreWidget(c.SharpscopeWidget):
    """Restore an image layer with a bundled, imported or trained model."""

    title = "Restore"

    def __init__(self, napari_viewer: Any = None) -> None:
        super().__init__(napari_viewer)
        self.image = self.register_layer_combo(ComboBox(label="image", choices=self.layer_choices()))
        self.axes = LineEdit(label="axes", value="", tooltip="e.g. TZYX; blank: from the layer")
        self.model = self.register_layer_combo(ComboBox(label="model", choices=model_choices))
        self.model_file = FileEdit(label="file", mode="r", filter="*.safetensors", visible=False)
        self.model_info = Label(value="")
        self.model_info.native.setWordWrap(True)
        self.tile = SpinBox(label="tile", value=0, min=0, max=8192, step=32, tooltip="0: the model's default")
        self.overlap = SpinBox(label="overlap", value=-1, min=-1, max=4096, tooltip="-1: the model's default")
        self.batch_size = SpinBox(label="batch size", value=4, min=1, max=256)
        self.tta = CheckBox(text="test-time augmentation (8x slower, a bit better)", value=False)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.scope = ComboBox(label="apply to", choices=["whole stack", "current plane"], value="whole stack")
        self.optics_known = CheckBox(text="optics known (NA, emission, pixel, modality)", value=False)
        # pixel size 0 is let through: the library's check reports it when run
        self.optics_fields = c.OpticsFields(na=1.4, min_pixel_size=0.0)
        self.na, self.wavelength, self.pixel_size = self.optics_fields.widgets
        self.modality = ComboBox(label="modality", choices=list(MODALITIES), value=MODALITIES[0])
        self.optics = Container(widgets=[*self.optics_fields.widgets, self.modality], labels=True)
        self.optics_hint = Label(value=NO_OPTICS_HINT)
        self.optics_hint.native.setWordWrap(True)
        self.psf_known = CheckBox(text="PSF known (data consistency)", value=False)
        self.psf_layer = self.register_layer_combo(
            ComboBox(label="PSF layer", choices=self.layer_choices(), visible=False)
        )
        self.consistency = FloatSpinBox(
            label="consistency", value=DEFAULT_STRENGTH, min=0.0, max=10.0, step=0.01,
            visible=False, tooltip="strength of the correction towards the data (0: off)",
        )
        self.psf_known.changed.connect(self._update_psf)
        self.run = self.run_button("Restore", self.restore)
        self.uses_optics = False
        self.model.changed.connect(self._model_changed)
        self.model_file.changed.connect(self._model_changed)
        self.optics_known.changed.connect(self._update_optics)
        self.image.changed.connect(self._take_pixel_size)
        self.extend(
            [
                self.image,
                self.axes,
                self.model,
                self.model_file,
                self.model_info,
                self.optics_known,
                self.optics,
                self.optics_hint,
                self.psf_known,
                self.psf_layer,
                self.consistency,
                self.tile,
                self.overlap,
                self.batch_size,
                self.tta,
                self.device,
                self.scope,
                self.run,
            ]
        )
        self.finish_layout()
        self._cache: tuple[str, str, Any] | None = None
        self._model_changed()
        self._take_pixel_size()

    # -- model choice
    def model_spec(self) -> str:
        """What ``load_model`` gets: a name, or the chosen file."""
        choice = self.model.value
        if choice == FILE_CHOICE:
            path = str(self.model_file.value or "")
            if not path or path == "." or not Path(path).is_file():
                raise ModelFormatError("choose a model file (.safetensors) or a model name")
            return path
        if choice in SESSION_MODELS:
            return str(SESSION_MODELS[choice])
        return str(choice)

    def select_model_file(self, path: str | Path) -> None:
        """Pick a model file (used by the reader when a ``.safetensors`` file is opened)."""
        self.model.value = FILE_CHOICE
        self.model_file.value = str(path)
        self._model_changed()

    def _model_changed(self, *_: Any) -> None:
        self.model_file.visible = self.model.value == FILE_CHOICE
        known: bool | None = None  # None: no readable model chosen
        try:
            from sharpscope.models.store import resolve_model

            path = resolve_model(self.model_spec())
            self.model_info.value = header_summary(path)
            from sharpscope.models.format import read_header

            header = read_header(path)
            self.model_info.tooltip = header.description
            known = header_uses_optics(header)
        except Exception as exc:  # noqa: BLE001 - shown next to the choice
            self.model_info.value = str(exc).splitlines()[0] if str(exc) else ""
        self.uses_optics = bool(known)
        self.optics_hint.visible = known is False
        self._update_optics()

    def _update_optics(self, *_: Any) -> None:
        """Optics fields shown for an optics-conditioned model, enabled when ticked."""
        self.optics_known.visible = self.optics.visible = self.uses_optics
        on = self.uses_optics and bool(self.optics_known.value)
        for w in (*self.optics_fields.widgets, self.modality):
            w.enabled = on

    def _update_psf(self, *_: Any) -> None:
        self.psf_layer.visible = self.consistency.visible = bool(self.psf_known.value)

    def psf_options(self) -> dict[str, Any]:
        """``psf`` and ``consistency`` of :meth:`Model.predict` (empty: no PSF).

        Without *PSF known*, the optics set (*optics known*) give the theoretical PSF of
        the full optics, as ``restore --na --wavelength --pixel-size`` does by default.
        """
        if not self.psf_known.value:
            if not (self.uses_optics and self.optics_known.value):
                return {}
            from sharpscope.consistency import theoretical_psf

            return {"psf": theoretical_psf(**self.optics_fields.values(), modality=str(self.modality.value))}
        layer = self.psf_layer.value
        if layer is None:
            raise c.InputError("PSF known is ticked but no PSF layer is chosen")
        psf = check_psf(c.layer_array(layer), f"the PSF layer {layer.name!r}")
        return {"psf": psf, "consistency": float(self.consistency.value)}

    def _take_pixel_size(self, *_: Any) -> None:
        self.optics_fields.take_pixel_size(self.image.value, self.axes.value)

    def optics_options(self) -> dict[str, Any]:
        """``fc`` and ``modality`` of :meth:`Model.predict` set by the widget (empty: unknown).

        Raises
        ------
        ConfigError
            The NA, wavelength and pixel size give no valid cut-off (e.g. pixel size 0,
            or above the Nyquist limit ``fc <= 0.5``).
        """
        if not (self.uses_optics and self.optics_known.value):
            return {}
        from sharpscope.blind import resolve_fc

        fc = resolve_fc(**self.optics_fields.values())
        return {"fc": fc, "modality": str(self.modality.value)}

    def _load(self, spec: str, device: str) -> Any:
        from sharpscope.restore import load_model

        if self._cache is not None and self._cache[:2] == (spec, device):
            return self._cache[2]
        model = load_model(spec, device=device)
        self._cache = (spec, device, model)
        return model

    # -- the work
    def plane_index(self, layer: Any, axes: str) -> tuple[int, ...]:
        """Data index of the viewer's current plane along every axis but Y and X."""
        lead = len(axes) - 2
        if lead == 0:
            return ()
        point = tuple(self.viewer.dims.point)[-layer.ndim :]
        pos = np.asarray(layer.world_to_data(point), dtype=float)
        idx = []
        for d in range(len(axes)):
            if axes[d] in "YX":
                continue
            idx.append(int(np.clip(np.round(pos[d]), 0, layer.data.shape[d] - 1)))
        return tuple(idx)

    def restore(self) -> Any:
        return c.run_guarded(self, self._restore)

    def _restore(self) -> Any:
        layer = self.image.value
        if layer is None:
            raise c.InputError("no image layer: open an image or load the sample data first")
        axes = c.layer_axes(layer, self.axes.value)
        spec = self.model_spec()
        data = c.layer_array(layer)
        plane = self.scope.value == "current plane" and len(axes) > 2
        scale, translate = list(layer.scale), list(layer.translate)
        if plane:
            # keep every axis (length 1) so the result sits on its plane in the viewer
            idx = self.plane_index(layer, axes)
            lead = [d for d, a in enumerate(axes) if a not in "YX"]
            slicer = [slice(None)] * len(axes)
            for d, i in zip(lead, idx, strict=True):
                slicer[d] = slice(i, i + 1)
                translate[d] = translate[d] + i * scale[d]
            data = data[tuple(slicer)]
        tile = self.tile.value or None
        overlap = None if self.overlap.value < 0 else self.overlap.value
        batch, tta, device = self.batch_size.value, self.tta.value, self.device.value
        optics = self.optics_options()  # a bad value is reported here: nothing is started
        psf_kw = self.psf_options()

        def work(job: c.Job) -> np.ndarray:
            job.report(0, None, "loading the model")
            model = self._load(spec, device)
            t_def, o_def = model._tile_defaults()
            ys, xs = axes.index("Y"), axes.index("X")
            planes = int(np.prod([n for d, n in enumerate(data.shape) if d not in (ys, xs)]))
            total = count_tiles(
                (data.shape[ys], data.shape[xs]),
                planes,
                tile or t_def,
                o_def if overlap is None else overlap,
                model.size_multiple,
            ) * (8 if tta else 1)
            from sharpscope.restore import Model

            extra = {}
            if "warn_range" in inspect.signature(Model.predict).parameters:
                # the training-range check, shown as a napari warning instead of a Python one
                message = model.check_range(data, axes)
                if message is not None:
                    job.warn(message)
                extra["warn_range"] = False
            if "backend" in inspect.signature(Model.predict).parameters:
                extra["backend"] = "plain"  # a compiled graph would skip the per-tile reports
            if optics and not model.uses_optics:  # the header said otherwise: never silently
                job.warn("this model does not take the optics: its network ignores fc/modality")
            elif optics:
                extra.update(optics)
                job.log(f"optics: fc {optics['fc']:.3g} cycles/pixel, {optics['modality']}")
            if psf_kw:
                extra.update(psf_kw)
                if "consistency" in psf_kw:
                    job.log(f"data consistency through the PSF layer, strength {psf_kw['consistency']:g}")
                else:
                    job.log("data consistency through the theoretical PSF of the optics")
            watched = Model(model.header, WatchedNetwork(model.network, job, total), model.path)
            return watched.predict(
                data, axes=axes, tile=tile, overlap=overlap, batch_size=batch, device=device, tta=tta,
                **extra,
            )

        def done(out: np.ndarray) -> None:
            kwargs = c.result_kwargs(layer, c.unique_name(self.viewer, f"{layer.name} restored"),
                                     operation="restore", model=spec, axes=axes, **optics)
            kwargs["translate"] = tuple(translate)
            self.last_layer = self.viewer.add_image(out, **kwargs)

        return self.start(work, done, desc="restore", total=1)
