"""The Examples sections of the public modules run as written (doctest).

Examples that cannot run here (a file of the user's, a GPU, a long training)
are marked ``# doctest: +SKIP`` in the docstrings; everything else runs, in a
fresh temporary folder, with one torch thread.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

# modules whose examples are runnable (napari needs a viewer; the CLI has no examples)
MODULES = (
    "sharpscope",
    "sharpscope.accel",
    "sharpscope.batch",
    "sharpscope.benchmarking",
    "sharpscope.consistency",
    "sharpscope.data",
    "sharpscope.deconv",
    "sharpscope.estimate",
    "sharpscope.io",
    "sharpscope.io.axes",
    "sharpscope.io.npz",
    "sharpscope.io.png",
    "sharpscope.io.tiff",
    "sharpscope.metrics",
    "sharpscope.models.format",
    "sharpscope.models.registry",
    "sharpscope.models.store",
    "sharpscope.normalize",
    "sharpscope.physics.psf",
    "sharpscope.restore",
    "sharpscope.runtime",
    "sharpscope.simulate",
    "sharpscope.tiling",
    "sharpscope.training",
    "sharpscope.training.checkpoint",
    "sharpscope.training.config",
    "sharpscope.training.losses",
    "sharpscope.training.loop",
    "sharpscope.training.psfid",
    "sharpscope.training.tasks",
    "sharpscope.models.psfnet",
    "sharpscope.blind",
    "sharpscope.blind.beads",
    "sharpscope.blind.classical",
    "sharpscope.blind.deconvolve",
    "sharpscope.blind.field",
    "sharpscope.blind.measures",
    "sharpscope.blind.plot",
    "sharpscope.models.noisemap",
    "sharpscope.training.distributed",
    "sharpscope.parallel",
)


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name, tmp_path, monkeypatch):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError:
        pytest.skip(f"{name} does not exist in this tree")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHARPSCOPE_HOME", str(tmp_path / "home"))  # no user models
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=flags)
    tests = finder.find(module, name, globs=dict(vars(module)))
    for test in sorted(tests, key=lambda t: t.name):
        test.globs = dict(vars(module))
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see the output above)"
