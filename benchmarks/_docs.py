"""Shared by the benchmark scripts: write a result section into docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(title: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the markdown section starting at ``title`` (up to the next '## ') with ``text``.

    The section is appended when the document does not have it yet.
    """
    doc = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text + "\n", doc)
    else:
        doc = doc.rstrip() + "\n\n" + text
    path.write_text(doc)
