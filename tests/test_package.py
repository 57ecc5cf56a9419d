"""The top-level package: lazy public API and the command-line entry point."""

from __future__ import annotations

import subprocess
import sys

import sharpscope


def test_every_public_name_resolves():
    for name in sharpscope.__all__:
        assert getattr(sharpscope, name) is not None


def test_import_is_lazy():
    code = "import sys, sharpscope; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_module_entry_point_reports_errors_on_one_line(tmp_path):
    missing = tmp_path / "missing.tif"
    out = subprocess.run(
        [sys.executable, "-m", "sharpscope", "restore", str(missing), "-o", str(tmp_path / "o.tif")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "missing.tif" in out.stderr
    assert not (tmp_path / "o.tif").exists()
