"""The fused inference form computes the same function as the network it was made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sharpscope.accel import clear_cache, predictor
from sharpscope.models.debcr_import import import_debcr
from sharpscope.models.format import load_network
from sharpscope.models.fused import (
    FoldedHeads,
    FusedDenseBlock,
    OneDNNConv,
    OrderedFusion,
    SeparatedConv,
    fuse_for_inference,
    fuse_for_training,
)
from sharpscope.models.mrbcr import ResidualDenseBlock, SameConv2d
from sharpscope.models.registry import build_network

REF = Path(__file__).resolve().parents[1].parent / "shared" / "debcr-reference"


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights large enough that every layer matters (a default init nearly zeroes m-rBCR)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net.eval()


def _max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / (b.max() - b.min()))


@pytest.mark.parametrize(
    ("arch", "hparams", "cond"),
    [
        ("mrbcr", {}, None),
        ("mrbcr", {"noise_input": True, "optics_input": True}, torch.tensor([0.01, 0.02, 1.0, 0.8, 0.0])),
        ("srbcr", {}, None),
        ("bcr", {}, None),
    ],
)
def test_fused_network_equals_the_original(arch, hparams, cond):
    net = _randomise(build_network(arch, **hparams))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = fuse_for_inference(net)
    x = torch.rand(3, 1, 64, 48, generator=torch.Generator().manual_seed(1))
    args = (x,) if cond is None else (x, cond)
    with torch.no_grad():
        ref, out = net(*args), fused(*args)
        out_cl = fused.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last), *args[1:]
        )
    for r, o, c in zip(ref, out, out_cl, strict=True):
        assert float(r.max() - r.min()) > 0.1  # a comparison that means something
        assert _max_rel_error(o, r) < 1e-5
        assert _max_rel_error(c, r) < 1e-5
    # the original is untouched and the rewrite really happened
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    kinds = {type(m) for m in fused.modules()}
    assert FusedDenseBlock in kinds and OneDNNConv in kinds
    if arch != "bcr":  # (BCR's strided wavelet convolutions stay as they are)
        assert torch.nn.Conv2d not in kinds  # every convolution runs through oneDNN
    wrapped = {id(m.block) for m in fused.modules() if isinstance(m, FusedDenseBlock)}
    blocks = [m for m in fused.modules() if isinstance(m, ResidualDenseBlock)]
    assert blocks and all(id(b) in wrapped for b in blocks)  # every block runs fused
    if arch == "mrbcr":
        assert FoldedHeads in kinds and SeparatedConv in kinds and OrderedFusion in kinds
        assert net.folded_heads is None


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_dense_block_of_any_depth(layers):
    block = _randomise(ResidualDenseBlock(12, 4, layers), seed=layers)
    x = torch.randn(2, 12, 20, 18)
    with torch.no_grad():
        assert _max_rel_error(FusedDenseBlock(block)(x), block(x)) < 1e-5


def test_separated_conv_only_where_it_is_exact():
    conv = _randomise(SameConv2d(5, 1, 7))
    x = torch.randn(2, 5, 15, 21)
    with torch.no_grad():
        assert _max_rel_error(SeparatedConv(conv)(x), conv(x)) < 1e-5
    for bad in (SameConv2d(5, 2, 7), SameConv2d(5, 1, (1, 7)), SameConv2d(5, 1, 4)):
        with pytest.raises(ValueError):
            SeparatedConv(bad)


@pytest.mark.parametrize("kernel", [1, 3, (1, 5)])
def test_onednn_conv_and_its_relu_pass(kernel):
    pad = (kernel // 2) if isinstance(kernel, int) else (0, 2)
    conv = _randomise(torch.nn.Conv2d(6, 3, kernel, padding=pad))
    fast = OneDNNConv.like(conv)
    x = torch.randn(2, 6, 9, 11)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = conv(x)
        for inp in (x, x_cl):
            assert torch.allclose(fast(inp), ref, atol=1e-5)
            assert torch.allclose(fast.forward_relu(inp), torch.relu(ref), atol=1e-5)
        assert (torch.relu(ref) == 0).any() and (ref > 0).any()  # the ReLU does something
        # under autocast it is the plain convolution in bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast(x).dtype == torch.bfloat16
            assert fast.forward_relu(x).dtype == torch.bfloat16


def test_predictor_runs_the_fused_form_and_checks_it():
    clear_cache()
    net = _randomise(build_network("mrbcr", dense_layers=3, rdb_blocks=2))
    fast = predictor(net, "cpu")
    assert "fused" in fast.plan.describe()
    assert any(isinstance(m, FusedDenseBlock) for m in fast._fast.modules())
    unfused = predictor(net, "cpu", backend="eager")
    assert "fused" not in unfused.plan.describe()
    assert not any(isinstance(m, FusedDenseBlock) for m in unfused._fast.modules())
    x = torch.rand(5, 1, 32, 32)
    y = fast(x)
    check = fast.checks[(32, 32, False)]
    assert check.passed and check.relative_error < 1e-5
    with torch.no_grad():
        assert _max_rel_error(y, net(x)[0]) < 1e-5


@pytest.mark.skipif(not REF.is_dir(), reason="needs ../shared/debcr-reference")
def test_fused_published_network_reproduces_tensorflow(tmp_path):
    """The independent reference: outputs of the original TensorFlow DeBCR code."""
    path = import_debcr(REF / "weights" / "2D_denoising" / "ckpt-best", out=tmp_path / "m.safetensors")
    _, net = load_network(path)
    ref = np.load(REF / "2D_denoising_reference.npz")
    x0 = torch.from_numpy(ref["x0"]).permute(0, 3, 1, 2).contiguous()
    fused = fuse_for_inference(net.eval()).to(memory_format=torch.channels_last)
    with torch.no_grad():
        outputs = fused(x0.contiguous(memory_format=torch.channels_last))
    for key, z in zip(("z0", "z2", "z4"), outputs, strict=True):
        expected = torch.from_numpy(ref[key]).permute(0, 3, 1, 2)
        assert float((z - expected).abs().max()) < 1e-4, key


@pytest.mark.parametrize("amp", [False, True])
def test_training_view_shares_parameters_and_gives_the_same_gradients(amp):
    net = _randomise(build_network("mrbcr", noise_input=True, optics_input=True)).train()
    view = fuse_for_training(net)
    assert {id(p) for p in view.parameters()} == {id(p) for p in net.parameters()}
    assert any(isinstance(m, FusedDenseBlock) for m in view.modules())
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    cond = torch.tensor([0.01, 0.02, 1.0, 0.8, 0.0])

    def grads(module):
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = module(x, cond)
        sum(((o.float() - 0.5) ** 2).mean() for o in out).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    ref, got = grads(net), grads(view)
    assert set(got) == set(ref) == {n for n, _ in net.named_parameters()}  # every weight trained
    if amp:  # bfloat16 rounds the two computations differently: compare the whole gradient
        a = torch.cat([g.flatten() for g in ref.values()])
        b = torch.cat([got[n].flatten() for n in ref])
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.995
        assert float((a - b).norm() / a.norm()) < 0.1
    else:
        for n, g in ref.items():
            scale = float(g.abs().max())
            if scale > 0:
                assert float((got[n] - g).abs().max()) <= 1e-4 * scale, n
    # an update through the view is an update of the network itself
    with torch.no_grad():
        net.out["s0"].bias.add_(1.0)
        assert torch.allclose(view(x, cond)[0], net(x, cond)[0], atol=1e-4)


def test_trainer_trains_through_the_fused_view(tmp_path, monkeypatch):
    from sharpscope.models import fused as fused_mod
    from sharpscope.training import load_config, train

    calls = []
    real = fused_mod.fuse_for_training
    monkeypatch.setattr(fused_mod, "fuse_for_training", lambda net: calls.append(1) or real(net))
    out = tmp_path / "run"
    cfg = load_config(overrides={
        "data.simulate": "mrbcr-widefield", "model.hparams": {"dense_layers": 2, "rdb_blocks": 1},
        "steps": 3, "batch_size": 2, "patch_size": 32, "val_every": 3, "val_size": 2,
        "out": str(out), "plot": False, "device": "cpu",
    })
    result = train(cfg, progress=False)
    assert calls, "the trainer did not use the fused view"
    assert (out / "model.safetensors").is_file()
    assert result is not None


def test_layers_on_one_channel_maps_write_channels_last():
    """A 1 x 1 layer on a one-channel (or strided, decimated) map, as m-rBCR's first ones."""
    conv = _randomise(torch.nn.Conv2d(1, 8, 1))
    fast = OneDNNConv.like(conv)
    x = torch.rand(2, 1, 16, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for inp in (x, x[..., ::2, ::2]):
            y = fast.forward_relu(inp)
            assert y.is_contiguous(memory_format=torch.channels_last)
            assert torch.allclose(y, torch.relu(conv(inp)), atol=1e-6)
            assert torch.allclose(fast(inp), conv(inp), atol=1e-6)
