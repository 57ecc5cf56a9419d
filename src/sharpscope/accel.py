"""The fastest correct predictor for a network on this device.

Every whole-image path (:meth:`sharpscope.restore.Model.predict`, the chunked
path of :mod:`sharpscope.parallel`, :meth:`~sharpscope.restore.Model.predict_patches`)
calls a restoration network through :func:`predictor`, which builds - once per
network, device and precision, then from a cache - a :class:`Predictor` that runs
the network the fastest way found correct here:

channels-last
    Activations in NHWC order: oneDNN's convolutions run 1.5-2x faster on the CPU
    than in the default NCHW order (both on AVX2-only and on AVX-512 machines).
chunking
    A batch is split into calls of at most :data:`CHUNK_PIXELS` pixels (4 tiles of
    128 x 128).  glibc serves every block of 32 MiB or more straight from the kernel
    (``mmap``) and unmaps it on free, so activations above that size are zero-filled
    page by page on every layer (a million minor page faults per batch of 16
    patches); smaller calls reuse the heap and keep activations in cache.  Tiles
    larger than one chunk are run one at a time, with
    :func:`sharpscope.runtime.tune_allocator` raising glibc's threshold.
fused layers
    :func:`sharpscope.models.fused.fuse_for_inference`: the narrow layers of the BCR
    family (dense blocks, one-channel 9 x 9 outputs, the forward fusion and its heads,
    1 x 1 convolutions on one thread) rewritten as fewer, wider oneDNN convolutions
    computing the same function (m-rBCR about 1.5x faster on the CPU).
TorchScript (``backend='jit'``)
    ``torch.jit.trace`` + ``torch.jit.freeze`` per tile shape.  Measured within a
    few per cent of channels-last eager on the CPUs of this project, so opt-in.
precision
    ``'float32'`` (default) is checked to stay within :data:`ERROR_BOUND` (1e-4) of
    the float32 eager output's range.  ``'bfloat16'`` (CPUs with native bfloat16,
    :func:`sharpscope.runtime.native_bf16`, or CUDA) and ``'float16'`` (CUDA
    automatic mixed precision) are about twice as fast but cannot meet that bound;
    they are used only when asked for and checked against the looser
    :data:`LOW_PRECISION_BOUND`.
CUDA
    The network on the GPU in channels-last order with cuDNN's autotuner.

Each plan is verified on its first call for every tile shape: the first sample of
the first chunk is also run through the plain float32 network (NCHW, no autocast)
and the maximum absolute difference is recorded in :attr:`Predictor.checks`.  A
plan that misses its bound (or fails to build) falls back to the plain network,
with a ``RuntimeWarning``; the plain path is never wrong by construction.

Measured choices and numbers: docs/benchmarks.md, section "Speed".
"""

from __future__ import annotations

import copy
import inspect
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from sharpscope.errors import ConfigError

__all__ = [
    "BACKENDS",
    "CHUNK_PIXELS",
    "ERROR_BOUND",
    "LOW_PRECISION_BOUND",
    "PRECISIONS",
    "Check",
    "Plan",
    "Predictor",
    "clear_cache",
    "predictor",
]

Backend = Literal["auto", "eager", "plain", "jit"]
Precision = Literal["float32", "bfloat16", "float16"]
BACKENDS = ("auto", "eager", "plain", "jit")
PRECISIONS = ("float32", "bfloat16", "float16")

CHUNK_PIXELS = 4 * 128 * 128
"""Largest number of pixels per network call (4 tiles of 128 x 128)."""

ERROR_BOUND = 1e-4
"""Largest max-abs difference from the float32 eager output, as a fraction of its range."""

LOW_PRECISION_BOUND = 2e-2
"""The same bound for bfloat16/float16 plans (used only when asked for)."""


@dataclass(frozen=True)
class Plan:
    """How a :class:`Predictor` runs its network.

    Attributes
    ----------
    device : str
        ``'cpu'`` or ``'cuda:N'``.
    backend : str
        ``'eager'`` (the module itself), ``'jit'`` (traced and frozen per tile
        shape) or ``'plain'`` (the network exactly as given: NCHW, float32,
        one call per batch - the reference every plan is checked against).
    channels_last : bool
        Activations in NHWC order.
    chunk_pixels : int
        Largest number of pixels per network call (0: the whole batch at once).
    precision : str
        ``'float32'``, ``'bfloat16'`` or ``'float16'`` (autocast).
    fused : bool
        Run :func:`~sharpscope.models.fused.fuse_for_inference`'s rewrite of the
        network (never for ``'plain'``).

    Examples
    --------
    >>> Plan("cpu", "eager", True, CHUNK_PIXELS, "float32").chunk_size(128, 128)
    4
    """

    device: str
    backend: str
    channels_last: bool
    chunk_pixels: int
    precision: str
    fused: bool = True

    def chunk_size(self, h: int, w: int) -> int:
        """Samples of ``h x w`` pixels per network call (at least 1; 0: no chunking)."""
        if self.chunk_pixels <= 0:
            return 0
        return max(1, self.chunk_pixels // max(1, h * w))

    def describe(self) -> str:
        """One line, e.g. ``'cpu eager fused channels-last chunks<=65536px float32'``.

        Examples
        --------
        >>> Plan("cpu", "plain", False, 0, "float32").describe()
        'cpu plain float32'
        """
        parts = [self.device, self.backend]
        if self.fused and self.backend != "plain":
            parts.append("fused")
        if self.channels_last:
            parts.append("channels-last")
        if self.chunk_pixels > 0:
            parts.append(f"chunks<={self.chunk_pixels}px")
        parts.append(self.precision)
        return " ".join(parts)


@dataclass(frozen=True)
class Check:
    """A plan's verification against the plain float32 network on one tile shape.

    Attributes
    ----------
    shape : tuple of int
        ``(h, w)`` of the checked tile.
    max_abs_error : float
        Largest absolute difference of the full-resolution outputs.
    output_range : float
        ``max - min`` of the reference output.
    bound : float
        The allowed fraction of ``output_range``.
    passed : bool
        ``max_abs_error <= bound * output_range`` (a constant output: ``<= bound``).
    """

    shape: tuple[int, int]
    max_abs_error: float
    output_range: float
    bound: float
    passed: bool

    @property
    def relative_error(self) -> float:
        """``max_abs_error / output_range`` (the range floored at 1e-12)."""
        return self.max_abs_error / max(self.output_range, 1e-12)


def _accepts_noise(net: nn.Module) -> bool:
    try:
        return "noise" in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtin forward
        return False


def _first(y: object) -> torch.Tensor:
    """The full-resolution output of a network (first of a tuple, or the tensor)."""
    if isinstance(y, (tuple, list)):
        y = y[0]
    if not isinstance(y, torch.Tensor):
        raise RuntimeError(f"network returned {type(y).__name__}, expected a tensor or a tuple")
    return y


def _weights_key(net: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple((id(t), t._version) for t in (*net.parameters(), *net.buffers()))


class Predictor:
    """A network's full-resolution output, computed the fastest correct way.

    Build one with :func:`predictor` (cached); call it like the network's first
    output: ``predictor(x)`` or ``predictor(x, noise)`` with ``x`` an
    ``(N, 1, H, W)`` float tensor (any device; moved to the plan's device) and
    ``noise`` the optional noise level of a noise-conditioned network.  Returns
    an ``(N, 1, H, W)`` float32 tensor on the plan's device, contiguous NCHW.
    Gradients are never tracked.

    Attributes
    ----------
    plan : Plan
        The requested plan (what runs, unless a check failed).
    checks : dict
        ``(h, w, noise given) -> Check``, one per tile shape seen.
    fallbacks : set
        The keys of :attr:`checks` whose check failed; they run the plain network.
    build_seconds : float
        Time spent preparing the plan (copying, tracing, verifying).

    Examples
    --------
    >>> from sharpscope.models.registry import build_network
    >>> net = build_network("mrbcr", dense_layers=2, rdb_blocks=1).eval()
    >>> pred = predictor(net, "cpu")
    >>> x = torch.rand(6, 1, 32, 32)
    >>> y = pred(x)
    >>> y.shape
    torch.Size([6, 1, 32, 32])
    >>> check = pred.checks[(32, 32, False)]
    >>> check.passed, check.relative_error < ERROR_BOUND
    (True, True)
    >>> bool(torch.allclose(y, net(x)[0], atol=1e-5))
    True
    """

    def __init__(self, network: nn.Module, plan: Plan, verify: bool = True):
        self.plan = plan
        self.verify = bool(verify)
        self.checks: dict[tuple[int, int, bool], Check] = {}
        self.fallbacks: set[tuple[int, int, bool]] = set()
        self.build_seconds = 0.0
        self._device = torch.device(plan.device)
        self._takes_noise = _accepts_noise(network)
        t0 = time.perf_counter()
        # the reference: the network as it is (float32, NCHW), on the plan's device
        self._plain = copy.deepcopy(network).eval().to(self._device)
        for p in self._plain.parameters():
            p.requires_grad_(False)
        if plan.backend == "plain" and not plan.channels_last:
            self._fast = self._plain
        else:
            if plan.fused and plan.backend != "plain":
                from sharpscope.models.fused import fuse_for_inference

                self._fast = fuse_for_inference(self._plain)
            else:
                self._fast = copy.deepcopy(self._plain)
            if plan.channels_last:
                self._fast = self._fast.to(memory_format=torch.channels_last)
        self._traced: dict[tuple, Callable] = {}
        self.build_seconds += time.perf_counter() - t0

    # -- the calls --------------------------------------------------------------------
    def _args(self, x: torch.Tensor, noise: torch.Tensor | None) -> tuple:
        if noise is None:
            return (x,)
        if not self._takes_noise:
            raise ConfigError("this network takes no noise input")
        return (x, noise)

    def _run_plain(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return _first(self._plain(*self._args(x, noise))).float()

    def _autocast(self):
        p = self.plan.precision
        if p == "float32":
            return torch.autocast(self._device.type, enabled=False)
        return torch.autocast(self._device.type, dtype=getattr(torch, p))

    def _callable(self, key: tuple, x: torch.Tensor, noise: torch.Tensor | None) -> Callable:
        if self.plan.backend != "jit":
            return lambda *a: self._fast(*a)
        tkey = (*key, x.shape[0])
        fn = self._traced.get(tkey)
        if fn is None:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings: the shape is fixed per trace
                with self._autocast():
                    traced = torch.jit.trace(self._fast, self._args(x, noise), check_trace=False)
                fn = torch.jit.freeze(traced.eval())
            self._traced[tkey] = fn
            self.build_seconds += time.perf_counter() - t0
        return fn

    def _run_fast(self, key: tuple, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if self.plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fn = self._callable(key, x, noise)
        with self._autocast():
            y = _first(fn(*self._args(x, noise)))
        return y.float().contiguous()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ConfigError(f"a predictor takes (N, 1, H, W), got shape {tuple(x.shape)}")
        x = x.to(self._device, torch.float32)
        if noise is not None:
            noise = torch.as_tensor(noise, dtype=torch.float32).to(self._device)
        n, _, h, w = x.shape
        key = (int(h), int(w), noise is not None)
        if key in self.fallbacks or n == 0:
            return self._run_plain(x, noise).contiguous()
        if self.plan.backend == "plain" and not self.plan.channels_last:
            return self._run_plain(x, noise).contiguous()
        size = self.plan.chunk_size(h, w) or n
        outs = []
        for start in range(0, n, size):
            xc = x[start : start + size]
            nc = noise if noise is None or noise.ndim < 2 else noise[start : start + size]
            if key not in self.checks and self.verify:
                try:
                    y = self._run_fast(key, xc, nc)
                except Exception as exc:  # a backend that cannot run this network
                    warnings.warn(
                        f"fast path {self.plan.describe()} failed ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); using the plain network",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    self.fallbacks.add(key)
                    return self._run_plain(x, noise).contiguous()
                if not self._check(key, xc, nc, y):
                    return self._run_plain(x, noise).contiguous()
                outs.append(y)
                continue
            outs.append(self._run_fast(key, xc, nc))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _check(
        self, key: tuple, x: torch.Tensor, noise: torch.Tensor | None, y: torch.Tensor
    ) -> bool:
        t0 = time.perf_counter()
        n1 = noise if noise is None or noise.ndim < 2 else noise[:1]
        ref = self._run_plain(x[:1], n1)
        err = float((y[:1] - ref).abs().max())
        rng = float(ref.max() - ref.min())
        bound = ERROR_BOUND if self.plan.precision == "float32" else LOW_PRECISION_BOUND
        ok = bool(np.isfinite(err)) and err <= bound * (rng if rng > 0 else 1.0)
        self.checks[key] = Check((key[0], key[1]), err, rng, bound, ok)
        self.build_seconds += time.perf_counter() - t0
        if not ok:
            self.fallbacks.add(key)
            warnings.warn(
                f"fast path {self.plan.describe()} differs from the float32 network by "
                f"{err:.3g} (range {rng:.3g}); using the plain network",
                RuntimeWarning,
                stacklevel=3,
            )
        return ok

    def __repr__(self) -> str:
        return f"Predictor({self.plan.describe()!r})"


def _resolve_plan(
    device: str | torch.device, precision: str, backend: str, chunk_pixels: int | None
) -> Plan:
    from sharpscope.runtime import native_bf16

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"no fast path for device {str(dev)!r} (use cpu or cuda)")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if dev.type == "cpu" and precision == "float16":
        raise ConfigError("float16 inference needs a CUDA GPU; on the CPU use bfloat16")
    if dev.type == "cpu" and precision == "bfloat16" and not native_bf16():
        raise ConfigError(
            "bfloat16 inference needs a CPU with native bfloat16 (AVX512-BF16 or AMX); "
            "this one would emulate it, slower than float32"
        )
    if backend == "plain":
        return Plan(str(dev), "plain", False, 0, precision, fused=False)
    name = "eager" if backend == "auto" else backend
    if chunk_pixels is None:
        chunk_pixels = CHUNK_PIXELS if dev.type == "cpu" else 0
    return Plan(str(dev), name, True, int(chunk_pixels), precision, fused=backend != "eager")


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, Predictor]]] = (
    weakref.WeakKeyDictionary()
)


def predictor(
    network: nn.Module,
    device: str | torch.device = "cpu",
    precision: Precision = "float32",
    backend: Backend = "auto",
    chunk_pixels: int | None = None,
    verify: bool = True,
) -> Predictor:
    """The cached :class:`Predictor` of ``network`` on ``device``.

    Parameters
    ----------
    network : torch.nn.Module
        A restoration network (tuple of outputs, full resolution first).  It is
        copied, never modified; the cache entry is rebuilt when its weights change.
    device : str or torch.device
        ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    precision : {'float32', 'bfloat16', 'float16'}
        Arithmetic.  Only float32 meets :data:`ERROR_BOUND`; bfloat16 needs a CPU
        with native support (or CUDA), float16 CUDA.
    backend : {'auto', 'eager', 'jit', 'plain'}
        ``'auto'`` is the fastest measured here (the fused network in channels-last
        eager mode, chunked on the CPU); ``'eager'`` the same without the fused
        rewrite; ``'jit'`` the fused network traced; ``'plain'`` the network exactly
        as given.
    chunk_pixels : int, optional
        Pixels per network call (default :data:`CHUNK_PIXELS` on the CPU, no
        chunking on CUDA); 0 disables chunking.
    verify : bool
        Check each tile shape's first output against the plain network.

    Returns
    -------
    Predictor

    Raises
    ------
    ConfigError
        Unknown device, precision or backend, or a precision this device lacks.

    Examples
    --------
    >>> from sharpscope.models.registry import build_network
    >>> net = build_network("dncnn", depth=3).eval()
    >>> predictor(net) is predictor(net)
    True
    >>> predictor(net).plan.describe()
    'cpu eager fused channels-last chunks<=65536px float32'
    """
    plan = _resolve_plan(device, precision, backend, chunk_pixels)
    key = (plan, bool(verify))
    entries = _CACHE.setdefault(network, {})
    wkey = _weights_key(network)
    hit = entries.get(key)
    if hit is not None and hit[0] == wkey:
        return hit[1]
    if plan.device == "cpu" and plan.chunk_pixels > 0:
        from sharpscope.runtime import tune_allocator

        tune_allocator()  # tiles larger than a chunk still allocate big activations
    if plan.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    pred = Predictor(network, plan, verify=verify)
    entries[key] = (wkey, pred)
    return pred


def clear_cache() -> None:
    """Forget every cached predictor (e.g. before a measurement).

    Examples
    --------
    >>> clear_cache()
    """
    _CACHE.clear()
