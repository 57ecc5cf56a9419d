"""sharpscope: restoration of fluorescence microscopy images.

Denoising and deconvolution with compact physics-informed networks (m-rBCR /
DeBCR), a physically faithful image-formation simulator, and the classical
Richardson-Lucy family.  The public API is re-exported here lazily so that
``import sharpscope`` stays fast (torch is imported on first use).

Every command of the ``sharpscope`` command line has a Python twin here:

=================================  ==============================================
command                            Python
=================================  ==============================================
``sharpscope restore``             :func:`restore_files` (arrays: :func:`load_model`, ``Model.predict``)
``sharpscope deconvolve``          :func:`deconvolve_files` (arrays: :func:`deconvolve`)
``sharpscope evaluate``            :func:`evaluate` on :func:`read_image` data
``sharpscope psf``                 :func:`make_psf` (the cut-off ``fc``: :func:`cutoff_frequency`)
``sharpscope estimate-psf``        :func:`estimate_psf` (``deconvolve --psf auto``: :func:`blind_deconvolve`)
``sharpscope simulate``            :func:`simulate_dataset` + :func:`write_dataset`
``sharpscope prepare``             :func:`prepare`
``sharpscope train``               :func:`load_config` + :func:`train`
``sharpscope models``              :func:`list_models`
``sharpscope import-debcr``        :func:`import_debcr`
``sharpscope demo``                :func:`run_demo`
``--threads``                      :func:`set_threads`
=================================  ==============================================

Examples
--------
>>> import sharpscope
>>> [m.name for m in sharpscope.list_models() if m.source == "bundled"]
['psfid-2d', 'widefield-2d']
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
    "restore_files": "sharpscope.batch",
    "deconvolve_files": "sharpscope.batch",
    "BatchResult": "sharpscope.batch",
    "BatchError": "sharpscope.batch",
    "list_models": "sharpscope.models.store",
    "import_debcr": "sharpscope.models.debcr_import",
    "run_demo": "sharpscope.demo",
    "write_dataset": "sharpscope.simulate",
    "set_threads": "sharpscope.runtime",
    "make_psf": "sharpscope.physics.psf",
    "cutoff_frequency": "sharpscope.physics.psf",
    "theoretical_psf": "sharpscope.consistency",
    "data_consistency": "sharpscope.consistency",
    "deconvolve": "sharpscope.deconv",
    "estimate_psf": "sharpscope.blind",
    "blind_deconvolve": "sharpscope.blind",
    "evaluate": "sharpscope.metrics",
    "simulate_dataset": "sharpscope.simulate",
    "SimulatedPairs": "sharpscope.simulate",
    "TrainConfig": "sharpscope.training",
    "load_config": "sharpscope.training",
    "train": "sharpscope.training",
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
