"""Networks, the model file format, the model store and the DeBCR importer.

* :mod:`~sharpscope.models.mrbcr`: m-rBCR (DeBCR) and s-rBCR networks;
* :mod:`~sharpscope.models.registry`: architecture name -> constructor;
* :mod:`~sharpscope.models.format`: ``.safetensors`` model files with a JSON header;
* :mod:`~sharpscope.models.store`: bundled and user model folders;
* :mod:`~sharpscope.models.debcr_import`: published DeBCR checkpoints -> model files.

The names below are re-exported lazily (torch is imported on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ARCHITECTURES": "sharpscope.models.registry",
    "build_network": "sharpscope.models.registry",
    "count_parameters": "sharpscope.models.registry",
    "MRBCR": "sharpscope.models.mrbcr",
    "SRBCR": "sharpscope.models.mrbcr",
    "ModelHeader": "sharpscope.models.format",
    "save_model": "sharpscope.models.format",
    "load_network": "sharpscope.models.format",
    "read_header": "sharpscope.models.format",
    "ModelInfo": "sharpscope.models.store",
    "DEFAULT_MODEL": "sharpscope.models.store",
    "list_models": "sharpscope.models.store",
    "resolve_model": "sharpscope.models.store",
    "import_debcr": "sharpscope.models.debcr_import",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sharpscope.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
