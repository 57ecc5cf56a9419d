"""Export sharpscope models to the formats other tools read.

A leaf of the library (see DESIGN.md): it imports sharpscope and nothing in
sharpscope imports it.

* :func:`export_bioimageio` writes a `bioimage.io <https://bioimage.io>`_ model
  package (format 0.5, a ``.zip`` with ``rdf.yaml``, weights, test tensors,
  cover and documentation) that deepImageJ, ilastik, QuPath and
  ``bioimageio.core`` can run.  Validating the package needs the optional
  ``export`` extra (``pip install 'sharpscope[export]'``); writing it does not.

Examples
--------
>>> from sharpscope.export import export_bioimageio
>>> result = export_bioimageio("widefield-2d", "widefield-2d.zip")  # doctest: +SKIP
>>> result.status  # doctest: +SKIP
'passed'
"""

from __future__ import annotations

from sharpscope.export.bioimageio import (
    WEIGHT_FORMATS,
    BioimageioExport,
    FullResolution,
    export_bioimageio,
    validate_bioimageio,
)

__all__ = [
    "WEIGHT_FORMATS",
    "BioimageioExport",
    "FullResolution",
    "export_bioimageio",
    "validate_bioimageio",
]
