"""docs/tutorial.ipynb runs from top to bottom (on a small image) and draws its figures."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sharpscope.cli import build_parser

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
SMALL = "SIZE = 128\nTRAIN_STEPS = 4\n"  # appended to the notebook's parameters cell
FIGURES = 7  # one per step: image, restore, PSFs, Richardson-Lucy, scores, loss, own model


def _notebook() -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_notebook_is_committed_without_outputs():
    for cell in _notebook().cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_tutorial_runs_and_draws_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it (set_threads)
    nb = _notebook()
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    params[0].source += "\n" + SMALL
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= FIGURES
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")

    # the score table: the network beats the raw input, as the tutorial says
    psnr = {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(r"^(input|Richardson-Lucy|network)\s+([\d.]+)", text, re.M)
    }
    assert set(psnr) == {"input", "Richardson-Lucy", "network"}
    assert psnr["network"] > psnr["input"] + 3
    assert "(128, 128) uint16 YX" in text
    assert "4 steps" in text

    work = tmp_path / "sharpscope-tutorial"
    assert (work / "cells.tif").is_file() and (work / "ground_truth.tif").is_file()
    assert (work / "my-first-run" / "model.safetensors").is_file()


def _shell_commands() -> list[str]:
    lines = []
    for cell in _notebook().cells:
        if cell.cell_type != "markdown":
            continue
        for block in re.findall(r"```bash\n(.*?)```", cell.source, re.S):
            lines += [ln for ln in block.splitlines() if ln.startswith("sharpscope ")]
    return lines


@pytest.mark.parametrize("command", _shell_commands())
def test_tutorial_commands_parse(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


def test_tutorial_shows_commands():
    commands = _shell_commands()
    assert any(c.startswith("sharpscope export-bioimageio") for c in commands)
    assert len(commands) >= 5
