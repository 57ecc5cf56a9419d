"""Importing the published DeBCR TensorFlow checkpoints without TensorFlow."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpscope.cli import main
from sharpscope.errors import ModelFormatError
from sharpscope.models.debcr_import import (
    crc32c,
    debcr_layer_map,
    debcr_state_dict,
    import_debcr,
    mask_crc,
    read_bundle_index,
    read_checkpoint,
    resolve_checkpoint_prefix,
    unmask_crc,
)
from sharpscope.models.format import load_network
from sharpscope.models.mrbcr import MRBCR

REF = Path(__file__).resolve().parents[1].parent / "shared" / "debcr-reference"
needs_ref = pytest.mark.skipif(
    not (REF / "m_rBCR_layers.json").is_file(),
    reason=f"DeBCR reference material not found at {REF} (../shared/debcr-reference)",
)
VAR = "/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARPSCOPE_HOME", str(tmp_path / "home"))


def _copy_ckpt(tmp_path: Path, name: str = "2D_denoising") -> Path:
    dst = tmp_path / "ckpt" / name
    shutil.copytree(REF / "weights" / name, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


# --------------------------------------------------------------------------- CRC32C


def test_crc32c_standard_vectors():
    # check value of CRC-32C and the iSCSI test vectors of RFC 3720, B.4
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    # incremental use equals one pass, for splits inside and across 8-byte words
    data = bytes(range(256)) * 3
    for cut in (0, 1, 7, 8, 13, 500):
        assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


def test_crc_mask():
    crc = 0x12345678
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert mask_crc(crc) == (rotated + 0xA282EAD8) & 0xFFFFFFFF
    for v in (0, 1, 0xFFFFFFFF, 0xE3069283):
        assert unmask_crc(mask_crc(v)) == v


# --------------------------------------------------------------------------- index / mapping


@needs_ref
def test_index_agrees_with_layer_json():
    header, entries = read_bundle_index(REF / "weights" / "2D_denoising" / "ckpt-best.index")
    assert header == {"num_shards": 1, "endianness": 0}
    assert list(entries) == sorted(entries, key=lambda k: k.encode())  # a sorted table
    layers = json.loads((REF / "m_rBCR_layers.json").read_text())
    n_params = 0
    for layer in layers:
        prefix = layer["ckpt_prefix"]
        if layer["cls"] == "Fusion":
            prefixes = [f"{prefix}/conv/layer_with_weights-{i}" for i in (0, 1)]
        else:
            prefixes = [prefix]
        shapes = [tuple(s) for _, s in layer["weights"]]
        got = []
        for p in prefixes:
            got += [entries[f"{p}/kernel{VAR}"].shape, entries[f"{p}/bias{VAR}"].shape]
        assert got == shapes, layer["layer"]
        n_params += sum(int(np.prod(s)) for s in shapes)
    assert n_params == 236_630
    weights = [k for k in entries if k.startswith("model/") and k.endswith(VAR)]
    assert len(weights) == 2 * (len(layers) + 2)  # two fusion layers hold two convs each


def _expected_module(layer: dict) -> str | None:
    """The PyTorch module a Keras layer should map to, read from its name and inputs."""
    name = layer["layer"]
    if m := re.fullmatch(r"dense_u([024])(\d+)", name):
        return f"dense.s{m[1]}.layers.{int(m[2]) - 1}"
    if m := re.fullmatch(r"x([024])_conv1d_(\d+)", name):
        return f"branch.s{m[1]}.convs.{m[2]}"
    if m := re.fullmatch(r"ouputs?_([024])", name):
        return f"out.s{m[1]}"
    if name == "fusion":
        return "fuse_fwd"
    if name == "fusion_1":
        return "fuse_inv"
    if layer["cls"] == "Conv2D" and layer["inputs"] == ["dense_u412"]:
        return "head.s4"
    return None


@needs_ref
def test_layer_map_cross_checked_with_json():
    layers = json.loads((REF / "m_rBCR_layers.json").read_text())
    mapping = debcr_layer_map()
    params = dict(MRBCR().named_parameters())
    kinds = {"Dense": "dense", "Conv1D": "conv1d", "Conv2D": "conv2d"}
    named = 0
    for layer in layers:
        prefix = layer["ckpt_prefix"]
        if layer["cls"] == "Fusion":
            path0, _ = mapping[f"{prefix}/conv/layer_with_weights-0"]
            path1, _ = mapping[f"{prefix}/conv/layer_with_weights-1"]
            assert path0.rsplit(".", 1)[0] == _expected_module(layer)
            assert path1.rsplit(".", 1)[0] == _expected_module(layer)
            continue
        path, kind = mapping[prefix]
        assert kind == kinds[layer["cls"]]
        expected = _expected_module(layer)
        if expected is not None:
            assert path == expected, layer["layer"]
            named += 1
        # shapes after the layout conversion
        k = layer["weights"][0][1]
        if kind == "dense":
            torch_shape = (k[1], k[0], 1, 1)
        elif kind == "conv1d":
            torch_shape = (k[2], k[1], 1, k[0])
        else:
            torch_shape = (k[3], k[2], k[0], k[1])
        assert tuple(params[f"{path}.weight"].shape) == torch_shape, layer["layer"]
    assert named == 3 * 12 + 3 * 6 + 3 + 1
    assert len(mapping) == len(layers) + 2
    # fewer residual dense blocks: 3 branches x 2 blocks x 7 convolutions fewer
    assert len(debcr_layer_map({"rdb_blocks": 2})) == len(mapping) - 42


# --------------------------------------------------------------------------- parity


@needs_ref
@pytest.mark.parametrize("dataset", ["2D_denoising", "bright_SR"])
def test_imported_network_reproduces_tensorflow_outputs(dataset, tmp_path):
    path = import_debcr(REF / "weights" / dataset / "ckpt-best", out=tmp_path / "m.safetensors")
    header, net = load_network(path)
    ref = np.load(REF / f"{dataset}_reference.npz")
    x0 = torch.from_numpy(ref["x0"]).permute(0, 3, 1, 2).contiguous()
    # the published coarse inputs are strided decimations of x0
    np.testing.assert_array_equal(ref["x2"], ref["x0"][:, ::2, ::2])
    np.testing.assert_array_equal(ref["x4"], ref["x0"][:, ::4, ::4])
    with torch.no_grad():
        outputs = net(x0)
    errors = {}
    for key, z in zip(("z0", "z2", "z4"), outputs, strict=True):
        expected = torch.from_numpy(ref[key]).permute(0, 3, 1, 2)
        assert z.shape == expected.shape
        errors[key] = (z - expected).abs().max().item()
    print(f"{dataset} max abs error vs TensorFlow: {errors}")
    assert max(errors.values()) < 1e-4, errors
    # and the outputs are not trivially small (the comparison means something)
    assert min(float(np.abs(ref[k]).max()) for k in ("z0", "z2", "z4")) > 0.1


@needs_ref
def test_import_header_and_default_location(tmp_path):
    path = import_debcr(REF / "weights" / "2D_denoising")
    assert path == tmp_path / "home" / "models" / "debcr-2D_denoising.safetensors"
    header, net = load_network(path)
    assert header.name == "debcr-2D_denoising"
    assert header.architecture == "mrbcr"
    assert header.hparams["decimation"] == "stride"
    assert (header.normalization.pmin, header.normalization.pmax) == (0.0, 100.0)
    assert (header.tile.size, header.tile.overlap) == (512, 160)
    for author in ("Li", "Yushkevich", "Chu", "Kudryashev", "Yakimovich", "DeBCR"):
        assert author in header.provenance
    assert "CC-BY-4.0" in header.license
    # the weights are the checkpoint's, converted from the Keras layout
    tensors = read_checkpoint(REF / "weights" / "2D_denoising")
    kernel = tensors[f"model/layer_with_weights-1/layer_with_weights-0/kernel{VAR}"]  # Conv1D
    np.testing.assert_array_equal(
        net.state_dict()["branch.s4.convs.0.weight"].numpy()[:, :, 0, :], kernel.transpose(2, 1, 0)
    )


@needs_ref
def test_prefix_forms(tmp_path):
    folder = REF / "weights" / "bright_SR"
    expected = folder / "ckpt-best"
    assert resolve_checkpoint_prefix(folder) == expected
    assert resolve_checkpoint_prefix(expected) == expected
    assert resolve_checkpoint_prefix(folder / "ckpt-best.index") == expected
    with pytest.raises(ModelFormatError, match="not found"):
        resolve_checkpoint_prefix(folder / "ckpt-other")
    with pytest.raises(ModelFormatError, match="no checkpoint index"):
        resolve_checkpoint_prefix(tmp_path)


# --------------------------------------------------------------------------- corruption


@needs_ref
def test_flipped_data_byte_fails_the_crc(tmp_path):
    folder = _copy_ckpt(tmp_path)
    _, entries = read_bundle_index(folder / "ckpt-best.index")
    entry = entries[
        f"model/layer_with_weights-1/layer_with_weights-34/conv/layer_with_weights-1/kernel{VAR}"
    ]
    data = folder / "ckpt-best.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entry.offset + entry.size // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="checksum mismatch") as info:
        import_debcr(folder, out=tmp_path / "bad.safetensors")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad.safetensors").exists()


@needs_ref
def test_corrupt_index_and_truncated_data(tmp_path):
    folder = _copy_ckpt(tmp_path)
    index = folder / "ckpt-best.index"
    original = index.read_bytes()
    raw = bytearray(original)
    raw[200] ^= 0x40  # inside the first data block
    index.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="checksum"):
        read_checkpoint(folder)
    index.write_bytes(original[:-10])
    with pytest.raises(ModelFormatError, match="corrupt checkpoint index"):
        read_checkpoint(folder)
    index.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ModelFormatError):
        read_checkpoint(folder)
    index.write_bytes(original)
    data = folder / "ckpt-best.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_checkpoint(folder)
    data.unlink()
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_checkpoint(folder)


@needs_ref
def test_wrong_checkpoint_contents_are_rejected():
    tensors = read_checkpoint(REF / "weights" / "2D_denoising")
    key = f"model/layer_with_weights-0/layer_with_weights-5/kernel{VAR}"
    missing = {k: v for k, v in tensors.items() if k != key}
    with pytest.raises(ModelFormatError, match="lacks"):
        debcr_state_dict(missing)
    wrong = dict(tensors)
    wrong[key] = np.zeros((16, 32), np.float32)
    with pytest.raises(ModelFormatError, match="shape"):
        debcr_state_dict(wrong)
    extra = dict(tensors)
    extra[f"model/layer_with_weights-2/kernel{VAR}"] = np.zeros(3, np.float32)
    with pytest.raises(ModelFormatError, match="does not use"):
        debcr_state_dict(extra)


# --------------------------------------------------------------------------- CLI


@needs_ref
def test_cli_import_debcr(tmp_path, monkeypatch, capsys):
    import sharpscope.cli as cli

    assert "sharpscope.cli.models" in cli.COMMAND_MODULES
    # run the dispatcher with this module only, so the test does not depend on the others
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("sharpscope.cli.models",))
    assert main(["import-debcr", str(REF / "weights" / "bright_SR")]) == 0
    target = tmp_path / "home" / "models" / "debcr-bright_SR.safetensors"
    assert target.is_file()
    assert str(target) in capsys.readouterr().out
    # importing again under the same name never replaces the model silently
    stamp = target.stat().st_mtime_ns
    assert main(["import-debcr", str(REF / "weights" / "bright_SR")]) == 2
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and err.count("\n") == 1
    assert target.stat().st_mtime_ns == stamp
    assert main(["import-debcr", str(REF / "weights" / "bright_SR"), "--overwrite"]) == 0
    assert target.stat().st_mtime_ns != stamp

    out = tmp_path / "mine.safetensors"
    prefix = REF / "weights" / "2D_denoising" / "ckpt-best"
    assert main(["import-debcr", str(prefix), "-o", str(out), "--name", "tribolium"]) == 0
    header, _ = load_network(out)
    assert header.name == "tribolium"

    assert main(["import-debcr", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sharpscope: error:") and err.count("\n") == 1
    assert "Traceback" not in err
