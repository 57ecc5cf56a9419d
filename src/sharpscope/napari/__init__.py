"""napari plugin of sharpscope (npe2 manifest ``napari.yaml`` beside this file).

Install with ``pip install "sharpscope[napari]"``.  The widgets are thin front ends over
the same library functions the command line calls (one module per widget); long work
runs in napari thread workers so the viewer stays responsive.  Nothing in the core
library imports this package, and importing this package imports neither Qt nor napari
(the widget modules do, when napari loads them).
"""

from __future__ import annotations

__all__: list[str] = []
