"""Train dock widget: data from a preset, a file or two layers; live loss plot, cancel, resume.

The twin of ``sharpscope train``: the widget builds a :class:`sharpscope.training.TrainConfig`
through :func:`sharpscope.training.load_config` (an optional YAML file, then the widget's
values as overrides) and calls :func:`sharpscope.training.train` in a thread worker.  Cancel is
the trainer's Ctrl-C: the current step finishes, a resumable checkpoint is written and
"resume" continues the run.  A finished model is offered in the Restore widget's list.
"""

from __future__ import annotations

import math
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

SOURCES = ("simulator preset", "prepared / DeBCR npz", "two layers (low, gt)")
ARCHITECTURES = ("mrbcr", "srbcr", "bcr", "unet", "dncnn")
RANDOM_INIT = "(random initialisation)"
LAYERS_FILE = "layers.npz"


def _preset_names() -> list[str]:
    from sharpscope.simulate import PRESETS

    return list(PRESETS)


def _init_choices(_widget: Any = None) -> list[str]:
    from sharpscope.napari._restore import FILE_CHOICE, model_choices

    return [RANDOM_INIT, *[m for m in model_choices() if m != FILE_CHOICE]]


def layer_planes(layer: Any, axes_override: str = "") -> np.ndarray:
    """A layer as ``(N, H, W)`` float32 planes (every axis but Y, X becomes N)."""
    axes = c.layer_axes(layer, axes_override)
    data = c.layer_array(layer)
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    data = np.transpose(data, order)
    return np.ascontiguousarray(data.reshape(-1, *data.shape[-2:]), dtype=np.float32)


def write_layer_pairs(path: Path, low: np.ndarray, gt: np.ndarray) -> Path:
    """Two layers' planes as a DeBCR-layout npz (``low``, ``gt``) the trainer reads."""
    from sharpscope.io import atomic_write

    if low.shape != gt.shape:
        raise InputError(f"low {low.shape} and gt {gt.shape} layers differ in shape")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, low=low, gt=gt)
    return path


class TrainWidget(c.SharpscopeWidget):
    """Train a restoration network; the loss is plotted live; cancel keeps a resumable checkpoint."""

    title = "Train"

    def __init__(self, napari_viewer: Any = None) -> None:
        super().__init__(napari_viewer)
        self.source = ComboBox(label="data", choices=list(SOURCES), value=SOURCES[0])
        self.preset = ComboBox(label="preset", choices=_preset_names(), value="mrbcr-widefield")
        self.data_file = FileEdit(label="data file", mode="r", filter="*.npz")
        self.low = self.register_layer_combo(ComboBox(label="low layer", choices=self.layer_choices()))
        self.gt = self.register_layer_combo(ComboBox(label="gt layer", choices=self.layer_choices()))
        self.config_file = FileEdit(label="config (optional)", mode="r", filter="*.yaml *.yml", value="")
        self.arch = ComboBox(label="architecture", choices=list(ARCHITECTURES), value="mrbcr")
        self.init = self.register_layer_combo(ComboBox(label="start from", choices=_init_choices))
        self.steps = SpinBox(label="steps", value=2000, min=1, max=10_000_000, step=100)
        self.batch_size = SpinBox(label="batch size", value=8, min=1, max=1024)
        self.patch_size = SpinBox(label="patch size", value=64, min=8, max=2048, step=8)
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-7, max=1.0, step=1e-5)
        self.val_every = SpinBox(label="validate every", value=200, min=1, max=1_000_000)
        self.val_size = SpinBox(label="validation patches", value=32, min=1, max=100_000)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.threads = SpinBox(label="CPU threads", value=0, min=0, max=256, tooltip="0: torch's default")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.name = LineEdit(label="model name", value="my-model")
        self.out = FileEdit(label="output folder", mode="d", value=str(Path.cwd() / "sharpscope-run"))
        self.resume = CheckBox(text="resume the run in the output folder", value=False)
        self.hparams: dict[str, Any] = {}  # architecture hyper-parameters (tests use tiny ones)
        self.run = self.run_button("Train", self.train)
        self.plot = c.Plot(height=2.4)
        self.source.changed.connect(self._update)
        self.extend(
            [
                self.source,
                self.preset,
                self.data_file,
                self.low,
                self.gt,
                self.config_file,
                self.arch,
                self.init,
                Container(
                    widgets=[self.steps, self.batch_size, self.patch_size, self.lr, self.val_every,
                             self.val_size, self.seed, self.threads, self.device],
                    labels=True,
                ),
                self.name,
                self.out,
                self.resume,
                self.run,
                self.plot,
            ]
        )
        self.finish_layout()
        self._update()
        self.history: dict[str, list[tuple[int, float]]] = {"loss": [], "val_loss": []}
        self.result: Any = None

    def _update(self, *_: Any) -> None:
        src = self.source.value
        self.preset.visible = src == SOURCES[0]
        self.data_file.visible = src == SOURCES[1]
        self.low.visible = self.gt.visible = src == SOURCES[2]

    def overrides(self) -> dict[str, Any]:
        """``load_config`` overrides from the widget's values."""
        out: dict[str, Any] = {
            "name": self.name.value or "my-model",
            "steps": self.steps.value,
            "batch_size": self.batch_size.value,
            "patch_size": self.patch_size.value,
            "lr": self.lr.value,
            "val_every": self.val_every.value,
            "val_size": self.val_size.value,
            "seed": self.seed.value,
            "device": self.device.value,
            "threads": self.threads.value or None,
            "out": str(self.out.value),
            "model.arch": self.arch.value,
        }
        if self.hparams:
            out["model.hparams"] = dict(self.hparams)
        if self.init.value and self.init.value != RANDOM_INIT:
            from sharpscope.napari._restore import SESSION_MODELS

            out["model.init"] = str(SESSION_MODELS.get(self.init.value, self.init.value))
            out.pop("model.arch")  # taken from the init model
        src = self.source.value
        if src == SOURCES[0]:
            out["data.simulate"] = self.preset.value
        elif src == SOURCES[1]:
            path = str(self.data_file.value or "")
            if not path or path == "." or not Path(path).exists():
                raise InputError("choose a training data file (.npz)")
            out["data.path"] = path
        else:
            out["data.path"] = str(Path(self.out.value) / LAYERS_FILE)
        return out

    def train(self) -> Any:
        return c.run_guarded(self, self._train)

    def _train(self) -> Any:
        from sharpscope.training import load_config

        cfg_path = str(self.config_file.value or "")
        cfg_path = None if cfg_path in ("", ".") else cfg_path
        overrides = self.overrides()
        pairs = None
        if self.source.value == SOURCES[2]:
            if self.low.value is None or self.gt.value is None:
                raise InputError("choose the low and the gt layer")
            pairs = (layer_planes(self.low.value), layer_planes(self.gt.value))
            if pairs[0].shape != pairs[1].shape:
                raise InputError(f"low {pairs[0].shape} and gt {pairs[1].shape} layers differ in shape")
        config = load_config(cfg_path, overrides)  # ConfigError: one line, shown at once
        resume = self.resume.value
        self.history = {"loss": [], "val_loss": []}
        self._redraw()

        def work(job: c.Job) -> Any:
            from sharpscope.training import train

            if pairs is not None:
                write_layer_pairs(Path(config.data.path), *pairs)

            def callback(step: int, logs: dict[str, float]) -> None:
                msg = f"step {step}/{config.steps}"
                if "loss" in logs:
                    msg += f", loss {logs['loss']:.4g}"
                if "val_psnr" in logs:
                    msg += f", val PSNR {logs['val_psnr']:.2f} dB"
                job.report(step, config.steps, msg, check=False, **logs)
                if job.cancelled.is_set():
                    raise KeyboardInterrupt  # the trainer's clean stop (checkpoint, then return)

            return train(config, resume=resume, progress=False, callback=callback, log=job.log)

        def done(res: Any) -> None:
            from sharpscope.napari._restore import SESSION_MODELS

            self.result = res
            if res.best_path is not None and Path(res.best_path).is_file():
                SESSION_MODELS[f"trained: {config.name} ({Path(config.out).name})"] = Path(res.best_path)
            self._refresh_layers()
            psnr = "" if math.isnan(res.best_val_psnr) else f", best val PSNR {res.best_val_psnr:.2f} dB"
            if res.stopped == "interrupted":
                self.info(
                    f"training stopped at step {res.steps_done}; checkpoint saved "
                    f"(tick 'resume' to continue){psnr}"
                )
            else:
                self.log(f"training {res.stopped} at step {res.steps_done}{psnr}; model: {res.best_path}")

        return self.start(work, done, desc="train", total=config.steps, on_progress=self._progress)

    def _progress(self, item: c.Progress) -> None:
        step = item.done
        if step is None:
            return
        changed = False
        if "loss" in item.data:
            self.history["loss"].append((step, float(item.data["loss"])))
            changed = True
        if "val_loss" in item.data:
            self.history["val_loss"].append((step, float(item.data["val_loss"])))
            changed = True
        if changed:
            self._redraw()

    def _redraw(self) -> None:
        ax = self.plot.axes
        ax.clear()
        for key, style in (("loss", "-"), ("val_loss", "o-")):
            pts = self.history[key]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, style, lw=1.2, ms=3, label=key.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if any(self.history.values()):
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        self.plot.draw()
