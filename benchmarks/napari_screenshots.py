"""Screenshots of every sharpscope napari widget, taken from a real viewer.

Each widget is docked alone in a viewer holding the sample data (Layers > sample >
sharpscope), driven as a user would (its button pressed, the job waited for) and the whole
window is saved as ``docs/images/napari-<widget>.png``.  Needs the ``napari`` extra and a
display; on a headless machine run it under a virtual X server (``show=False`` renders
black):

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/napari_screenshots.py

About a minute on one CPU thread (the Train shot runs 40 steps of the default network).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait(widget, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    t0 = time.monotonic()
    while widget.busy:
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{widget.title} did not finish in {timeout} s")
    settle()


def settle(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder of the PNGs")
    parser.add_argument("--only", nargs="*", default=None, help="widget names, e.g. restore train")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    import torch

    torch.set_num_threads(1)
    from sharpscope.napari._deconvolve import DeconvolveWidget
    from sharpscope.napari._estimate_psf import EstimatePSFWidget
    from sharpscope.napari._evaluate import EvaluateWidget
    from sharpscope.napari._prepare import PrepareWidget
    from sharpscope.napari._restore import RestoreWidget
    from sharpscope.napari._simulate import SimulateWidget
    from sharpscope.napari._train import TrainWidget

    viewer = napari.Viewer(show=True, title="sharpscope in napari")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("sharpscope", "simulated-specimen")
    low = viewer.layers["sample degraded"]
    gt = viewer.layers["sample ground truth"]
    tmp = Path(tempfile.mkdtemp(prefix="sharpscope-shots-"))

    def restore(w):
        w.image.value = low
        w.restore()

    def deconvolve(w):
        w.image.value = low
        w.psf_source.value = "layer"
        w.psf_layer.value = viewer.layers["sample psf"]
        w.method.value = "rl-accel"
        if not w.auto_iterations.enabled:  # a sharpscope without automatic stopping
            w.iterations.value = 10
        w.deconvolve()

    def estimate_psf(w):
        w.image.value = low
        w.use_grid.value = True
        w.rows.value, w.cols.value = 3, 3
        w.estimate()

    def simulate(w):
        w.n.value, w.size.value, w.seed.value = 4, 192, 7
        w.fix_optics.value = True
        w.simulate()

    def evaluate(w):
        restored = [layer for layer in viewer.layers if layer.name.startswith("sample degraded restored")]
        w.prediction.value = restored[-1] if restored else low
        w.reference.value = gt
        w.evaluate()

    def train(w):
        w.source.value = "two layers (low, gt)"
        w.low.value, w.gt.value = viewer.layers["sim low"], viewer.layers["sim gt"]
        w.steps.value, w.batch_size.value, w.patch_size.value = 40, 4, 64
        w.val_every.value, w.val_size.value, w.threads.value = 10, 4, 1
        w.device.value = "cpu"
        w.out.value = str(tmp / "run")
        w.train()

    def prepare(w):
        w.low.value, w.gt.value = low, gt
        w.patch_size.value, w.region_size.value = 48, 96
        w.out.value = str(tmp / "pairs.npz")
        w.preview_grid()

    # (name, widget, how it is driven, layers shown, side by side)
    shots = [
        ("restore", RestoreWidget, restore, ["sample degraded", "sample degraded restored"], True),
        ("deconvolve", DeconvolveWidget, deconvolve, ["sample degraded", "sample degraded rl-accel"], True),
        (
            "estimate-psf", EstimatePSFWidget, estimate_psf,
            ["sample degraded", "sample degraded psf tiles"], False,
        ),
        ("evaluate", EvaluateWidget, evaluate, ["sample degraded restored", "sample ground truth"], True),
        ("simulate", SimulateWidget, simulate, ["sim low", "sim gt"], True),
        ("train", TrainWidget, train, ["sim low"], False),
        ("prepare", PrepareWidget, prepare, ["sample degraded", "sample degraded patches"], False),
    ]
    for name, cls, drive, show, grid in shots:
        if args.only and name not in args.only:
            continue
        widget = cls(viewer)
        dock = viewer.window.add_dock_widget(widget, name=widget.title, area="right")
        settle()
        t0 = time.monotonic()
        drive(widget)
        wait(widget)
        for layer in viewer.layers:
            layer.visible = layer.name in show
        viewer.grid.enabled = grid
        viewer.reset_view()
        settle(1.0)
        path = out / f"napari-{name}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        viewer.grid.enabled = False
        print(f"{path} ({time.monotonic() - t0:.1f} s): {widget.status.value}")
        viewer.window.remove_dock_widget(dock)
    viewer.close()


if __name__ == "__main__":
    main()
