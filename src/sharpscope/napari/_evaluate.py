"""Evaluate dock widget: metrics table and FRC plot for two layers (twin of ``sharpscope evaluate``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, LineEdit, Table

from sharpscope.errors import InputError
from sharpscope.napari import _common as c

ROWS = (
    ("PSNR (dB)", "psnr"),
    ("SSIM", "ssim"),
    ("NRMSE", "nrmse"),
    ("FRC resolution (px)", "frc_resolution_px"),
    ("FRC resolution (um)", "frc_resolution_um"),
    ("entropy, restored (bits)", "entropy_pred"),
    ("entropy, reference (bits)", "entropy_gt"),
    ("data range", "data_range"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    return str(value)


class EvaluateWidget(c.SharpscopeWidget):
    """PSNR, SSIM, NRMSE, FRC and entropy of a restored layer against a reference layer."""

    title = "Evaluate"

    def __init__(self, napari_viewer: Any = None) -> None:
        super().__init__(napari_viewer)
        self.prediction = self.register_layer_combo(ComboBox(label="restored", choices=self.layer_choices()))
        self.reference = self.register_layer_combo(ComboBox(label="reference", choices=self.layer_choices()))
        self.axes = LineEdit(label="axes", value="", tooltip="e.g. TYX; blank: from the layer")
        self.fit = CheckBox(text="affine fit to the reference first (CSBDeep-style)", value=False)
        self.run = self.run_button("Evaluate", self.evaluate)
        self.table = Table(value={"metric": [r[0] for r in ROWS], "value": ["" for _ in ROWS]})
        self.table.native.setMinimumHeight(240)
        self.plot = c.Plot(height=2.4)
        self.extend([self.prediction, self.reference, self.axes, self.fit, self.run, self.table, self.plot])
        self.finish_layout()
        self.results: dict[str, Any] = {}

    def evaluate(self) -> Any:
        return c.run_guarded(self, self._evaluate)

    def _evaluate(self) -> Any:
        pred, ref = self.prediction.value, self.reference.value
        if pred is None or ref is None:
            raise InputError("choose a restored layer and a reference layer")
        axes = c.layer_axes(ref, self.axes.value)
        a, b = c.layer_array(pred), c.layer_array(ref)
        if a.shape != b.shape:
            raise InputError(f"layers {pred.name!r} {a.shape} and {ref.name!r} {b.shape} differ in shape")
        px = c.layer_pixel_size(ref, axes).get("X")
        fit = self.fit.value

        def work(job: c.Job) -> dict[str, Any]:
            from sharpscope.metrics import evaluate

            job.report(0, 1, "computing metrics")
            return evaluate(a, b, fit=fit, pixel_size=px, axes=axes, return_frc=True)

        def done(m: dict[str, Any]) -> None:
            self.results = m
            self.table.value = {
                "metric": [r[0] for r in ROWS],
                "value": [_fmt(m.get(key)) for _, key in ROWS],
            }
            self._draw_frc(m, f"{pred.name} vs {ref.name}")

        return self.start(work, done, desc="evaluate", total=0, interruptible=True)

    def _draw_frc(self, m: dict[str, Any], label: str) -> None:
        from sharpscope.metrics import FRC_THRESHOLD

        ax = self.plot.axes
        ax.clear()
        f, curve = np.asarray(m["frc_freqs"]), np.asarray(m["frc_curve"])
        ax.plot(f, curve, lw=1.5, label=f"FRC ({_fmt(m['frc_resolution_px'])} px)")
        ax.axhline(FRC_THRESHOLD, color="k", ls="--", lw=1, label="1/7")
        ax.set_xlim(0, 0.5)
        ax.set_ylim(min(-0.1, float(np.nanmin(curve)) - 0.05), 1.05)
        ax.set_xlabel("spatial frequency (cycles/pixel)")
        ax.set_ylabel("FRC")
        ax.grid(alpha=0.3)
        ax.set_title(label, fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
        self.plot.draw()
