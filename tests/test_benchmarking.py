"""``sharpscope benchmark speed|quality --quick`` end to end (the CI run of both commands)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sharpscope.benchmarking import (
    QUALITY_NETWORKS,
    describe_machine,
    format_quality,
    network_gflop,
    replace_section,
)
from sharpscope.cli import main
from sharpscope.models.registry import build_network, count_parameters


def test_speed_quick_json(capsys):
    assert main(["benchmark", "speed", "--quick", "--json", "--threads", "1", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    machine = result["machine"]
    assert machine["threads"] == 1 and machine["cpu"] and isinstance(machine["flags"], list)
    cpu = result["devices"]["cpu"]
    p = cpu["patches"]
    assert p["batch"] == 4 and p["size"] == 32
    assert p["plain_patches_per_s"] > 0 and p["fast_patches_per_s"] > 0
    assert p["max_abs_error"] <= 1e-4 * p["output_range"]  # the fast path is the network
    assert "channels-last" in p["plan"] and p["reference"] == "cpu plain float32"
    assert math.isclose(
        p["fast_gflops"], result["settings"]["gflop_per_patch"] * 4 / p["fast_s"], rel_tol=1e-9
    )
    assert 0 < cpu["peak_fraction"] == pytest.approx(p["fast_gflops"] / cpu["matmul_gflops"])
    r = cpu["restore"]
    assert r["size"] == 128 and r["mpix_per_s"] == pytest.approx(128**2 / r["seconds"] / 1e6)
    assert r["peak_added_bytes"] >= 0
    t = cpu["training"]
    assert t["plain_samples_per_s"] > 0 and t["channels_last_samples_per_s"] > 0
    assert t["simulated_pairs_per_s"] > 0


def test_speed_markdown_into_a_doc(tmp_path, capsys):
    doc = tmp_path / "b.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    assert main(["benchmark", "speed", "--quick", "--threads", "1", "-q", "-o", str(doc)]) == 0
    out = capsys.readouterr().out
    text = doc.read_text()
    assert "## Other\n\nkept" in text and "## Speed (`sharpscope benchmark speed`)" in text
    assert "| cpu |" in out and "| cpu |" in text and "Machine:" in text


def test_quality_quick_table_and_figure(tmp_path, capsys):
    doc, fig = tmp_path / "b.md", tmp_path / "img" / "grid.png"
    argv = ["benchmark", "quality", "--quick", "--threads", "1", "-q"]
    argv += ["-o", str(doc), "--figure", str(fig), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["sets"]) == 2
    labels = [label for label, _, _ in QUALITY_NETWORKS]
    for set_scores in result["sets"].values():
        for name in ["identity (input)", "Wiener, true PSF", *labels]:
            v = set_scores[name]
            assert np.isfinite([v["psnr"], v["ssim"], v["nrmse"]]).all()
            assert 0 < v["nrmse"] and -1 <= v["ssim"] <= 1
    # every network row: its real parameter count and a measured runtime
    for label, arch, hp in QUALITY_NETWORKS:
        info = result["methods"][label]
        assert info["parameters"] == count_parameters(build_network(arch, **hp))
        assert info["seconds_per_patch"] > 0 and "2 steps" in info["note"]
    assert result["methods"]["m-rBCR"]["parameters"] == 236_630
    text = doc.read_text()
    assert text.count("| m-rBCR | 236,630 |") == 1 and "![examples](img/grid.png)" in text
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quality_budget_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "quality", "--budget", "0"])
    assert exc.value.code == 2 and "--budget: must be > 0" in capsys.readouterr().err


def test_format_quality_columns_per_set():
    res = {
        "sets": {
            "a": {"m": {"psnr": 30.0, "ssim": 0.9, "nrmse": 0.05}},
            "b": {"m": {"psnr": 20.0, "ssim": 0.5, "nrmse": 0.1}},
        },
        "methods": {"m": {"parameters": 1234, "seconds_per_patch": 0.002, "note": "x"}},
        "settings": {},
    }
    lines = format_quality(res).splitlines()
    assert "(1) a. (2) b." in lines
    assert "| m | 1,234 | 2.0 | 30.00 | 0.900 | 0.0500 | 20.00 | 0.500 | 0.1000 |" in lines


def test_replace_section_keeps_the_rest(tmp_path):
    p = tmp_path / "d.md"
    p.write_text("# T\n\n## A\n\none\n\n## B\n\ntwo\n")
    replace_section(p, "## A", "## A\n\nnew\n")
    assert p.read_text() == "# T\n\n## A\n\nnew\n\n## B\n\ntwo\n"
    replace_section(p, "## C", "## C\n\nthree\n")
    assert p.read_text().endswith("## B\n\ntwo\n\n## C\n\nthree\n")


def test_machine_and_flops():
    info = describe_machine()
    assert set(info["flags"]) <= {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    # one 1x1 conv 1 -> 1 channel on 8x8: 64 multiply-adds
    import torch

    assert network_gflop(torch.nn.Conv2d(1, 1, 1, bias=False), 8, 8) == pytest.approx(128e-9)
