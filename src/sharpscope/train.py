"""Compatibility alias of :mod:`sharpscope.training` (the trainer's home since it became a package).

``from sharpscope.train import TrainConfig, load_config, train`` keeps working; new
code imports from :mod:`sharpscope.training` (or uses ``sharpscope.train(...)``,
``sharpscope.load_config`` and ``sharpscope.TrainConfig`` from the top level).
Importing this module makes the attribute ``sharpscope.train`` this module instead of
the function, as a submodule import always does; the top-level names do not need it.
"""

from sharpscope.training import *  # noqa: F403
from sharpscope.training import __all__  # noqa: F401
