"""Simulate dock widget: specimen preset, optics, PSF preview, degraded and ground-truth layers.

The twin of ``sharpscope simulate``: pairs are the samples ``0 .. n-1`` of the stream ``seed``
of a simulator preset (:class:`sharpscope.simulate.SimulatedPairs`), optionally with the
optics held fixed (NA, immersion, emission wavelength, sampling, modality) instead of drawn.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, SpinBox

from sharpscope.errors import ConfigError
from sharpscope.napari import _common as c

MODALITIES = ("as the preset draws", "widefield", "confocal")


def preset_names() -> list[str]:
    from sharpscope.simulate import PRESETS

    return list(PRESETS)


def fixed_optics(
    preset: Any, na: float, n: float, wavelength: float, sampling: float, modality: str
) -> Any:
    """The preset with its optics held at one value (``dataclasses.replace``)."""
    from sharpscope.simulate import MicroscopePreset, OpticsPreset, ZernikePreset

    conf = {"widefield": 0.0, "confocal": 1.0}.get(modality)
    if isinstance(preset, OpticsPreset):
        ex = tuple(min(v, wavelength) for v in preset.wavelength_ex)
        changes: dict[str, Any] = dict(
            na=(na, na), refractive_index=n, wavelength_em=(wavelength, wavelength),
            wavelength_ex=ex, sampling=(sampling, sampling),
        )
    elif isinstance(preset, MicroscopePreset):
        changes = dict(
            immersions=((n, na, na, 1.0),), wavelength_em=(wavelength, wavelength),
            sampling=(sampling, sampling),
        )
    elif isinstance(preset, ZernikePreset):
        if modality == "confocal":
            raise ConfigError(f"preset {preset.name!r} has no confocal modality")
        changes = dict(fc=(sampling / 4, sampling / 4), na=na, wavelength=wavelength, refractive_index=n)
        conf = None
    else:  # pragma: no cover - a preset type added later
        raise ConfigError(f"fixed optics are not supported for preset {preset.name!r}")
    if conf is not None:
        changes["confocal_probability"] = conf
    return dataclasses.replace(preset, name=f"{preset.name}+fixed-optics", **changes)


class SimulateWidget(c.SharpscopeWidget):
    """Simulate degraded / ground-truth pairs and their PSFs as layers."""

    title = "Simulate"

    def __init__(self, napari_viewer: Any = None) -> None:
        super().__init__(napari_viewer)
        self.preset = ComboBox(label="preset", choices=preset_names(), value="mrbcr-widefield")
        self.description = Label(value="")
        self.description.native.setWordWrap(True)
        self.n = SpinBox(label="images", value=4, min=1, max=1024)
        self.size = SpinBox(label="size (px)", value=128, min=16, max=2048, step=16)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.ndim = ComboBox(label="dimensions", choices=[2, 3], value=2)
        self.fix_optics = CheckBox(text="fixed optics (else drawn by the preset)", value=False)
        self.na = FloatSpinBox(label="NA", value=0.8, min=0.05, max=1.6, step=0.05)
        self.immersion = FloatSpinBox(label="immersion n", value=1.33, min=1.0, max=2.0, step=0.01)
        self.wavelength = FloatSpinBox(label="emission (nm)", value=520.0, min=300.0, max=1000.0, step=10.0)
        self.sampling = FloatSpinBox(
            label="sampling", value=1.0, min=0.25, max=2.0, step=0.05,
            tooltip="pixel = sampling x emission / (4 NA); 1 is Nyquist",
        )
        self.modality = ComboBox(label="modality", choices=list(MODALITIES), value=MODALITIES[0])
        self.pixel_label = Label(value="")
        self.optics = Container(
            widgets=[self.na, self.immersion, self.wavelength, self.sampling, self.modality, self.pixel_label],
            labels=True,
        )
        self.save_to = FileEdit(label="also save", mode="w", filter="*.npz", value="", tooltip="optional .npz")
        self.preview = self.run_button("Preview PSF", self.preview_psf)
        self.run = self.run_button("Simulate", self.simulate)
        for w in (self.preset, self.fix_optics, self.na, self.wavelength, self.sampling):
            w.changed.connect(self._update)
        self.extend(
            [
                self.preset,
                self.description,
                self.n,
                self.size,
                self.seed,
                self.ndim,
                self.fix_optics,
                self.optics,
                self.save_to,
                self.preview,
                self.run,
            ]
        )
        self.finish_layout()
        self._update()

    def _update(self, *_: Any) -> None:
        from sharpscope.simulate import get_preset

        self.description.value = get_preset(self.preset.value).description
        self.optics.visible = self.fix_optics.value
        px = self.sampling.value * self.wavelength.value / (4 * self.na.value)
        self.pixel_label.value = f"pixel size {px:.0f} nm"

    def current_preset(self) -> Any:
        from sharpscope.simulate import get_preset

        p = get_preset(self.preset.value)
        if self.fix_optics.value:
            p = fixed_optics(
                p, self.na.value, self.immersion.value, self.wavelength.value,
                self.sampling.value, self.modality.value,
            )
        return p

    def _scale(self, ndim: int, params: list[dict]) -> tuple[float, ...] | None:
        """Layer scale when every sample has the same pixel size (fixed optics)."""
        sizes = {round(float(p.get("pixel_size", 0.0)), 9) for p in params}
        if len(sizes) != 1 or 0.0 in sizes:
            return None
        px = sizes.pop()
        z = {round(float(p.get("z_step", 0.0)), 9) for p in params}
        spatial = (px, px) if ndim == 2 else ((z.pop() or px) if len(z) == 1 else px, px, px)
        return (1.0, *spatial)

    def preview_psf(self) -> Any:
        return c.run_guarded(self, self._preview)

    def _preview(self) -> Any:
        preset, seed, ndim = self.current_preset(), self.seed.value, self.ndim.value

        def work(job: c.Job) -> tuple[np.ndarray, dict]:
            import torch

            job.report(0, 1, "drawing a PSF")
            g = torch.Generator().manual_seed(int(seed))
            psf, params, _ = preset.draw_psf(g, ndim, preset.depth)
            return psf.numpy().astype(np.float32), params

        def done(result: tuple[np.ndarray, dict]) -> None:
            psf, params = result
            name = c.unique_name(self.viewer, "psf preview")
            self.viewer.add_image(psf, name=name, colormap="magma", metadata={c.META_KEY: {"psf_params": params}})
            self.log(f"PSF {psf.shape}: " + ", ".join(f"{k}={_short(v)}" for k, v in params.items()))

        return self.start(work, done, desc="PSF preview", total=0)

    def simulate(self) -> Any:
        return c.run_guarded(self, self._simulate)

    def _simulate(self) -> Any:
        from sharpscope.simulate import SimulatedPairs

        preset = self.current_preset()
        n, size, seed, ndim = self.n.value, self.size.value, self.seed.value, self.ndim.value
        save = str(self.save_to.value or "")
        save = "" if save in ("", ".") else save
        ds = SimulatedPairs(preset, patch_size=size, seed=seed, ndim=ndim)  # ConfigError here

        def work(job: c.Job) -> dict[str, Any]:
            low, gt, psfs, params = [], [], [], []
            for i in range(n):
                s = ds.sample(i)
                low.append(s["low"][0].numpy())
                gt.append(s["gt"][0].numpy())
                psfs.append(s["psf"].numpy())
                params.append(s["params"])
                job.report(i + 1, n, f"pair {i + 1}/{n}")
            data = {
                "low": np.stack(low).astype(np.float32),
                "gt": np.stack(gt).astype(np.float32),
                "psfs": np.stack(psfs).astype(np.float32),
                "params": params,
                "meta": {"preset": preset.to_dict(), "seed": int(seed), "n": int(n), "ndim": ndim},
            }
            if save:
                from sharpscope.simulate import write_dataset

                npz, _ = write_dataset(save, data)
                job.log(f"wrote {npz}")
            return data

        def done(d: dict[str, Any]) -> None:
            scale = self._scale(ndim, d["params"])
            axes = "SYX" if ndim == 2 else "SZYX"
            px = {} if scale is None else dict(zip(axes[1:], scale[1:], strict=True))
            meta = {c.META_KEY: {"axes": axes, "pixel_size": px, "preset": preset.name, "seed": seed}}
            kw = {} if scale is None else {"scale": scale}
            self.layers = [
                self.viewer.add_image(d["gt"], name=c.unique_name(self.viewer, "sim gt"), metadata=meta, **kw),
                self.viewer.add_image(d["low"], name=c.unique_name(self.viewer, "sim low"), metadata=meta, **kw),
                self.viewer.add_image(
                    d["psfs"], name=c.unique_name(self.viewer, "sim psf"), colormap="magma", visible=False,
                    metadata={c.META_KEY: {"axes": "S" + "ZYX"[4 - d["psfs"].ndim :], "params": d["params"]}},
                ),
            ]
            self.data = d

        return self.start(work, done, desc="simulate", total=n)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

