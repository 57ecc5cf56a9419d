"""What every sharpscope widget shares: layers <-> images, background jobs, the panel.

Background jobs
---------------
A widget's work is a plain function ``fn(job)`` that calls the library and returns a
result.  It runs in a napari generator worker (:func:`napari.qt.threading.create_worker`)
which starts the function in a helper thread and yields its progress reports, so the
viewer never waits on the library.  Cancel sets ``job.cancelled``; the function stops at
its next :meth:`Job.report` or :meth:`Job.check` (cooperative: restore checks after every
tile, train after every step), and functions marked ``interruptible`` (pure computations
such as deconvolution, which leave no files behind) are interrupted in the helper thread
at the next Python instruction.  Results are added to the viewer only when the function
returned normally: a cancelled or failed job leaves nothing half-done.  Errors become
napari notifications with the one-line message the command line prints.
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from magicgui.widgets import Container, FloatSpinBox, Label, ProgressBar, PushButton, TextEdit

from sharpscope.errors import InputError, SharpscopeError
from sharpscope.io import guess_axes, validate_axes

META_KEY = "sharpscope"
CLI_PREFIX = "sharpscope: error: "
WIDGET_WIDTH = 440  # px: dock widgets stay narrow, long texts wrap


# --------------------------------------------------------------------------- layers
def layer_axes(layer: Any, override: str | None = None) -> str:
    """Axes of an image layer: ``override``, else stored by our reader, else guessed.

    Raises
    ------
    AxesError
        ``override`` inconsistent with the layer's data.
    InputError
        An RGB layer (sharpscope works on single-channel planes).
    """
    data = layer.data
    ndim = np.ndim(data)
    if override and override.strip():
        return validate_axes(override, ndim)
    if getattr(layer, "rgb", False):
        raise InputError(f"layer {layer.name!r} is RGB; split its channels into layers first")
    stored = (layer.metadata or {}).get(META_KEY, {}).get("axes")
    if isinstance(stored, str) and len(stored) == ndim:
        return validate_axes(stored, ndim)
    return guess_axes(ndim)


def layer_pixel_size(layer: Any, axes: str) -> dict[str, float]:
    """Micrometres per pixel of a layer: stored by our reader, else from its scale."""
    stored = (layer.metadata or {}).get(META_KEY, {}).get("pixel_size")
    if isinstance(stored, dict) and stored:
        return {k: float(v) for k, v in stored.items() if k in axes}
    scale = tuple(float(s) for s in layer.scale)
    out = {}
    for a, s in zip(axes, scale, strict=False):
        if a in "ZYX" and s != 1.0:
            out[a] = s
    return out


def layer_array(layer: Any) -> np.ndarray:
    """The layer's pixels as a numpy array (dask/zarr data are computed)."""
    data = layer.data
    if hasattr(data, "compute"):
        data = data.compute()
    return np.asarray(data)


def image_layer_kwargs(img: Any, name: str) -> dict[str, Any]:
    """napari ``add_image`` keyword arguments of a :class:`sharpscope.io.Image`."""
    scale = [float(img.pixel_size.get(a, 1.0)) if a in "ZYX" else 1.0 for a in img.axes]
    meta = {
        "axes": img.axes,
        "pixel_size": dict(img.pixel_size),
        "path": str(img.metadata.get("path", "")),
    }
    return {"name": name, "scale": scale, "metadata": {META_KEY: meta}}


def result_kwargs(source: Any, name: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments giving a result the source layer's scale, translate and metadata."""
    meta = dict(source.metadata or {})
    ours = dict(meta.get(META_KEY, {}))
    ours.update({"source": source.name, **extra})
    meta[META_KEY] = ours
    return {
        "name": name,
        "scale": tuple(source.scale),
        "translate": tuple(source.translate),
        "metadata": meta,
        "colormap": getattr(getattr(source, "colormap", None), "name", "gray"),
        "blending": getattr(source, "blending", "translucent"),
    }


def unique_name(viewer: Any, name: str) -> str:
    """``name`` made unique among the viewer's layers (napari would append `` [1]``)."""
    names = {layer.name for layer in viewer.layers}
    if name not in names:
        return name
    i = 1
    while f"{name} [{i}]" in names:
        i += 1
    return f"{name} [{i}]"


def one_line(exc: BaseException) -> str:
    """The message the command line prints for ``exc``."""
    if isinstance(exc, SharpscopeError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return CLI_PREFIX + (text.strip().splitlines() or [""])[0]


# --------------------------------------------------------------------------- optics
class OpticsFields:
    """The NA, emission wavelength and lateral pixel size fields several widgets share.

    Parameters
    ----------
    na, wavelength, pixel_size : float
        Initial values (wavelength in nm, pixel size in um).
    min_pixel_size : float
        Smallest pixel size the field accepts (0 lets the library's own check
        report a zero pixel size when the job is started).

    Attributes
    ----------
    na, wavelength, pixel_size : magicgui.widgets.FloatSpinBox
        The fields, to be laid out by the widget (:attr:`widgets`, in that order).
    """

    def __init__(
        self,
        na: float = 1.4,
        wavelength: float = 520.0,
        pixel_size: float = 0.065,
        min_pixel_size: float = 0.0001,
    ) -> None:
        self.na = FloatSpinBox(label="NA", value=na, min=0.05, max=1.7, step=0.05)
        self.wavelength = FloatSpinBox(
            label="emission (nm)", value=wavelength, min=200.0, max=2000.0, step=10.0
        )
        self.pixel_size = FloatSpinBox(
            label="pixel (um)", value=pixel_size, min=min_pixel_size, max=100.0, step=0.0001,
            tooltip="lateral pixel size; set from the layer's scale when it has one",
        )

    @property
    def widgets(self) -> list[FloatSpinBox]:
        """The three fields: NA, emission wavelength, pixel size."""
        return [self.na, self.wavelength, self.pixel_size]

    def values(self) -> dict[str, float]:
        """``na``, ``wavelength`` and ``pixel_size`` as the library's keyword arguments."""
        return {
            "na": float(self.na.value),
            "wavelength": float(self.wavelength.value),
            "pixel_size": float(self.pixel_size.value),
        }

    def take_pixel_size(self, layer: Any, axes: str | None = None) -> None:
        """Set the pixel size from the layer's metadata or scale, when it records one."""
        if layer is None:
            return
        try:
            px = layer_pixel_size(layer, layer_axes(layer, axes))
        except Exception:  # noqa: BLE001 - an unusable layer is reported when run
            return
        x = px.get("X")
        if x is not None and self.pixel_size.min <= x <= self.pixel_size.max:
            self.pixel_size.value = float(x)


# --------------------------------------------------------------------------- jobs
class Cancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a job's function when the user pressed Cancel."""


@dataclass
class Failure:
    """A job that raised: the one-line message and the traceback for the log."""

    message: str
    details: str = ""


@dataclass
class Progress:
    """One progress report of a job."""

    done: int | None = None
    total: int | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Job:
    """Handle a job's function gets: report progress, check for cancel."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self._queue: queue.Queue = queue.Queue()

    def check(self) -> None:
        """Raise :class:`Cancelled` when Cancel was pressed."""
        if self.cancelled.is_set():
            raise Cancelled

    def report(
        self,
        done: int | None = None,
        total: int | None = None,
        message: str = "",
        check: bool = True,
        **data: Any,
    ) -> None:
        """Send a progress report to the widget (and stop here if cancelled, with ``check``)."""
        self._queue.put(Progress(done, total, message, data))
        if check:
            self.check()

    def log(self, message: str) -> None:
        """A line for the widget's log."""
        self._queue.put(Progress(message=message))

    def warn(self, message: str) -> None:
        """A warning: a napari notification (``sharpscope: warning: ...``, as the CLI prints)."""
        self._queue.put(Progress(data={"warning": message}))


def _async_raise(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction."""
    if thread.ident is None or not thread.is_alive():
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
    )


def drive(fn: Callable[[Job], Any], job: Job, interruptible: bool = False):
    """Generator run by the napari worker: ``fn(job)`` in a helper thread, yielding reports.

    Returns ``fn``'s result, a :class:`Failure`, or the :class:`Cancelled` class.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = fn(job)
        except Cancelled:
            box["cancelled"] = True
        except BaseException as exc:  # noqa: BLE001 - every error becomes a notification
            if job.cancelled.is_set() and isinstance(exc, (KeyboardInterrupt, Cancelled)):
                box["cancelled"] = True
            else:
                # errors a user can cause get the CLI's one line; others also a traceback
                details = "" if isinstance(exc, SharpscopeError) else traceback.format_exc()
                box["failure"] = Failure(one_line(exc), details)
        finally:
            done.set()

    thread = threading.Thread(target=target, name="sharpscope-job", daemon=True)
    thread.start()
    interrupted_at = None
    while True:
        try:
            item = job._queue.get(timeout=0.05)
        except queue.Empty:
            item = None
        if item is not None:
            yield item
            continue
        if done.is_set() and job._queue.empty():
            break
        if job.cancelled.is_set() and interruptible:
            now = time.monotonic()
            # repeat: an exception raised while the thread sits in C code waits for it
            if interrupted_at is None or now - interrupted_at > 0.5:
                _async_raise(thread, Cancelled)
                interrupted_at = now
        yield None  # heartbeat: lets the worker notice quit()
    thread.join()
    if box.get("cancelled") or (job.cancelled.is_set() and "result" not in box):
        return Cancelled
    if "failure" in box:
        return box["failure"]
    return box.get("result")


# --------------------------------------------------------------------------- widget base
class SharpscopeWidget(Container):
    """A dock widget: its own controls, then Cancel, a progress bar, a status line, a log."""

    title = "sharpscope"

    def __init__(self, viewer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.viewer = viewer
        self.worker: Any = None
        self.job: Job | None = None
        self._pbar: Any = None
        self._run_buttons: list[PushButton] = []
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.cancel_button.changed.connect(self.cancel)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(label="status", value="")
        self.status.native.setWordWrap(True)
        self.log_box = TextEdit(value="", label="log")
        self.log_box.read_only = True
        self.log_box.native.setMinimumHeight(80)
        self._layer_combos: list[Any] = []
        self.native.setMaximumWidth(WIDGET_WIDTH)
        if viewer is not None:
            viewer.layers.events.inserted.connect(self._refresh_layers)
            viewer.layers.events.removed.connect(self._refresh_layers)
            viewer.layers.events.moved.connect(self._refresh_layers)

    # -- layout helpers
    def finish_layout(self) -> None:
        """Append the shared part (Cancel, progress, status, log) below the controls."""
        self.extend([self.cancel_button, self.progress, self.status, self.log_box])

    def run_button(self, text: str, callback: Callable[[], Any]) -> PushButton:
        btn = PushButton(text=text)
        btn.changed.connect(lambda *_: callback())
        self._run_buttons.append(btn)
        return btn

    def layer_choices(self, kind: str = "image") -> Callable[[Any], list]:
        def choices(_widget: Any = None) -> list:
            if self.viewer is None:
                return []
            return [
                (layer.name, layer)
                for layer in self.viewer.layers
                if type(layer).__name__.lower() == kind
            ]

        return choices

    def register_layer_combo(self, combo: Any) -> Any:
        self._layer_combos.append(combo)
        return combo

    def _refresh_layers(self, *_: Any) -> None:
        for combo in self._layer_combos:
            with contextlib.suppress(RuntimeError):  # widget already deleted
                combo.reset_choices()

    # -- messages
    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        text = self.log_box.value
        self.log_box.value = (text + "\n" if text else "") + f"[{stamp}] {message}"
        bar = self.log_box.native.verticalScrollBar()
        bar.setValue(bar.maximum())

    def error(self, message: str, details: str = "") -> None:
        """A one-line error: notification, status line and log (traceback in the log)."""
        from napari.utils.notifications import show_error

        self.status.value = message
        self.log(message)
        if details:
            self.log(details.rstrip())
        show_error(message)

    def warning(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        message = message if message.startswith("sharpscope: ") else f"sharpscope: warning: {message}"
        self.log(message)
        show_warning(message)

    def info(self, message: str) -> None:
        from napari.utils.notifications import show_info

        self.status.value = message
        self.log(message)
        show_info(message)

    # -- jobs
    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(
        self,
        fn: Callable[[Job], Any],
        on_done: Callable[[Any], None],
        *,
        desc: str,
        total: int | None = None,
        interruptible: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Any:
        """Run ``fn(job)`` in a napari thread worker; ``on_done(result)`` in the GUI thread."""
        from napari.qt.threading import create_worker
        from napari.utils import progress as napari_progress

        if self.busy:
            self.error(CLI_PREFIX + "a job is already running in this widget")
            return None
        job = Job()
        self.job = job
        self._pbar = napari_progress(total=total or 0, desc=f"sharpscope {desc}")
        self.progress.max = max(1, int(total or 1))
        self.progress.value = 0
        self.status.value = f"{desc}..."
        self.log(f"{desc} started")
        t0 = time.monotonic()
        ended, final = [False], [""]

        def yielded(item: Progress | None) -> None:
            if item is None or ended[0]:
                return
            if "warning" in item.data:
                self.warning(str(item.data["warning"]))
                return
            if item.total is not None and item.total > 0:
                self.progress.max = int(item.total)
                if self._pbar is not None and self._pbar.total != item.total:
                    self._pbar.total = int(item.total)
            if item.done is not None:
                value = int(min(item.done, self.progress.max))
                self.progress.value = value
                if self._pbar is not None:
                    self._pbar.update(value - self._pbar.n)
            if item.message:
                if item.done is None and item.total is None and not item.data:
                    self.log(item.message)
                else:
                    self.status.value = item.message
            if on_progress is not None:
                on_progress(item)

        def returned(result: Any) -> None:
            ended[0] = True
            elapsed = time.monotonic() - t0
            if result is Cancelled:
                self.info(f"{desc}: cancelled after {elapsed:.1f} s; nothing was added")
                return
            if isinstance(result, Failure):
                self.error(result.message, result.details)
                return
            try:
                on_done(result)
            except Exception as exc:  # noqa: BLE001 - shown, never raised into Qt
                details = "" if isinstance(exc, SharpscopeError) else traceback.format_exc()
                self.error(one_line(exc), details)
                return
            self.progress.value = self.progress.max
            final[0] = f"{desc}: done in {elapsed:.1f} s"
            self.status.value = final[0]
            self.log(f"{desc} done in {elapsed:.1f} s")

        def finished() -> None:
            if final[0]:
                self.status.value = final[0]
            if self._pbar is not None:
                self._pbar.close()
                self._pbar = None
            self.worker = None
            self.job = None
            self._set_running(False)

        worker = create_worker(drive, fn, job, interruptible, _start_thread=False)
        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.aborted.connect(job.cancelled.set)
        worker.finished.connect(finished)
        self.worker = worker
        self._set_running(True)
        worker.start()
        return worker

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop (it stops at its next check, within a second or two)."""
        if self.job is not None:
            self.job.cancelled.set()
            self.status.value = "cancelling..."
            self.log("cancel requested")

    def _set_running(self, running: bool) -> None:
        for btn in self._run_buttons:
            btn.enabled = not running
        self.cancel_button.enabled = running


def run_guarded(widget: SharpscopeWidget, fn: Callable[[], Any]) -> Any:
    """Call ``fn()`` in the GUI thread; a failure becomes a notification, never a crash."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        details = "" if isinstance(exc, SharpscopeError) else traceback.format_exc()
        widget.error(one_line(exc), details)
        return None


# --------------------------------------------------------------------------- plots
class Plot(Container):
    """A matplotlib figure inside a widget (loss curves, FRC)."""

    def __init__(self, width: float = 4.0, height: float = 2.6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(width, height), dpi=90, layout="constrained")
        self.axes = self.figure.add_subplot(1, 1, 1)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(int(height * 60))
        self.native.layout().addWidget(self.canvas)

    def draw(self) -> None:
        self.canvas.draw_idle()
