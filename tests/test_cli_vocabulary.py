"""One vocabulary across the sub-commands: the same flags mean the same thing everywhere."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import pytest

from sharpscope.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
COMPUTE = ("restore", "deconvolve", "evaluate", "psf", "demo", "train", "simulate")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


def test_every_command_has_a_description_and_quiet():
    for name, p in _commands().items():
        assert p.description and len(p.description) > 40, name
        assert {"-q", "--quiet"} <= _flags(p), name


def test_outputs_are_dash_o_everywhere_with_out_as_an_alias():
    for name, p in _commands().items():
        if name in ("models", "evaluate"):  # they write no file (evaluate: --frc-plot)
            continue
        assert {"-o", "--output"} <= _flags(p), name
    for name in ("train", "demo"):
        p = _commands()[name]
        assert p.parse_args(["--out", "x"]).output == "x" == p.parse_args(["-o", "x"]).output


def test_progress_threads_and_json_flags():
    cmds = _commands()
    for name in ("restore", "deconvolve", "simulate", "train"):
        assert {"--progress", "--no-progress"} <= _flags(cmds[name]), name
    for name in COMPUTE:
        assert "--threads" in _flags(cmds[name]), name
    for name in ("restore", "deconvolve", "models", "evaluate"):
        assert "--json" in _flags(cmds[name]), name
    simulate = cmds["simulate"]
    assert simulate.parse_args(["-o", "x"]).progress is False
    assert simulate.parse_args(["-o", "x", "--progress"]).progress is True
    assert cmds["restore"].parse_args(["a", "-o", "b", "--no-progress"]).progress is False


def test_error_messages_name_flags_as_flags(tiny_model_path, tmp_path, capsys):
    from sharpscope.io import write_image

    src = write_image(tmp_path / "a.tif", np.random.default_rng(0).random((8, 8)).astype(np.float32), "YX")
    assert main(["restore", str(src), "-o", str(tmp_path / "a.png"), "--model", str(tiny_model_path)]) == 2
    assert "--dtype input" in capsys.readouterr().err


def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start: command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [x.split("#")[0].strip() for x in block.splitlines()]
    return [shlex.split(x)[1:] for x in lines if x.startswith("sharpscope ")]


@pytest.mark.parametrize("argv", _readme_commands(), ids=lambda a: a[0])
def test_readme_quick_start_commands_parse(argv):
    args = build_parser().parse_args(argv)
    assert callable(args.func)
