"""sharpscope: restoration of fluorescence microscopy images.

Denoising and deconvolution with compact physics-informed networks (m-rBCR /
DeBCR), a physically faithful image-formation simulator, and the classical
Richardson-Lucy family.  The public API is re-exported here lazily so that
``import sharpscope`` stays fast (torch is imported on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "SharpscopeError": "sharpscope.errors",
    "read_image": "sharpscope.io",
    "write_image": "sharpscope.io",
    "Image": "sharpscope.io",
    "normalize": "sharpscope.normalize",
    "denormalize": "sharpscope.normalize",
    "load_model": "sharpscope.restore",
    "Model": "sharpscope.restore",
    "make_psf": "sharpscope.physics.psf",
    "deconvolve": "sharpscope.deconv",
    "evaluate": "sharpscope.metrics",
    "simulate_dataset": "sharpscope.simulate",
    "SimulatedPairs": "sharpscope.simulate",
    "TrainConfig": "sharpscope.train",
    "load_config": "sharpscope.train",
    "train": "sharpscope.train",
    "prepare": "sharpscope.data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sharpscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
