"""The fast predictor: same output as the plain network, cached, never modifies the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import sharpscope.runtime
from sharpscope import accel
from sharpscope.accel import CHUNK_PIXELS, ERROR_BOUND, Plan, predictor
from sharpscope.errors import ConfigError, InputError
from sharpscope.models.registry import build_network
from sharpscope.restore import Model, network_function
from sharpscope.tiling import tile_grid


def _small(**kw) -> nn.Module:
    torch.manual_seed(0)
    net = build_network("mrbcr", dense_layers=2, rdb_blocks=1, rdb_layers=1, **kw).eval()
    # non-trivial weights so that the outputs differ between inputs
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _bound(ref: torch.Tensor) -> float:
    return ERROR_BOUND * float(ref.max() - ref.min())


@pytest.mark.parametrize("batch", [1, 5, 9])
def test_chunked_channels_last_matches_plain_network(batch):
    net = _small()
    x = torch.rand(batch, 1, 64, 64, generator=torch.Generator().manual_seed(batch))
    pred = predictor(net, "cpu")
    assert pred.plan.chunk_size(64, 64) == CHUNK_PIXELS // 4096
    y = pred(x)
    with torch.no_grad():
        ref = net(x)[0]
    assert y.shape == ref.shape and y.dtype == torch.float32 and y.is_contiguous()
    assert float((y - ref).abs().max()) <= _bound(ref)
    check = pred.checks[(64, 64, False)]
    assert check.passed and check.max_abs_error <= _bound(ref)
    assert not pred.fallbacks


def test_noise_conditioned_network_gets_the_noise_through():
    net = _small(noise_input=True)
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    pred = predictor(net, "cpu")
    with torch.no_grad():
        for noise in (torch.tensor([0.01, 0.05]), torch.tensor([0.2, 0.3])):
            ref = net(x, noise)[0]
            y = pred(x, noise)
            assert float((y - ref).abs().max()) <= _bound(ref)
        # without a noise level the network estimates it from each patch, as the plain one does
        ref = net(x)[0]
        assert float((pred(x) - ref).abs().max()) <= _bound(ref)
        # the level matters: the two given levels give different outputs
        low, high = pred(x, torch.tensor([0.01, 0.05])), pred(x, torch.tensor([0.2, 0.3]))
        assert float((low - high).abs().max()) > 1e-4
    assert set(pred.checks) == {(32, 32, True), (32, 32, False)}


def test_unconditioned_network_refuses_a_noise_level():
    class NoNoise(nn.Module):
        def forward(self, x):
            return (2 * x,)

    with pytest.raises(ConfigError, match="no noise input"):
        predictor(NoNoise(), "cpu")(torch.rand(1, 1, 8, 8), torch.tensor([0.1, 0.1]))


def test_jit_backend_matches_and_traces_once_per_shape():
    net = _small()
    pred = predictor(net, "cpu", backend="jit")
    x = torch.rand(8, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)[0]
    assert float((pred(x) - ref).abs().max()) <= _bound(ref)
    pred(x)
    assert len(pred._traced) == 1  # one trace for (32, 32) and chunks of 8
    assert pred.checks[(32, 32, False)].passed


def test_cache_and_network_untouched():
    net = _small()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = predictor(net, "cpu")
    assert predictor(net, "cpu") is a
    a(torch.rand(2, 1, 16, 16))
    for k, v in net.state_dict().items():
        assert v.is_contiguous() and torch.equal(v, before[k])  # still NCHW, same values
    # an in-place change of the weights (an optimiser step) rebuilds the predictor
    with torch.no_grad():
        net.out["s0"].bias.add_(1.0)
    b = predictor(net, "cpu")
    assert b is not a
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(b(x), net(x)[0], atol=1e-5)
    assert predictor(net, "cpu", backend="plain") is not b


def test_wrong_fast_path_falls_back_with_a_warning():
    class LayoutSensitive(nn.Module):
        """Returns garbage for channels-last inputs: the check must catch it."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                y = y + 1.0
            return (y,)

    net = LayoutSensitive().eval()
    x = torch.rand(4, 2, 8, 8)  # two channels: NCHW and NHWC layouts differ
    pred = predictor(net, "cpu")
    with pytest.warns(RuntimeWarning, match="differs from the float32 network"):
        y = pred(x)
    with torch.no_grad():
        assert torch.equal(y, net(x)[0])
    assert (8, 8, False) in pred.fallbacks and not pred.checks[(8, 8, False)].passed
    with torch.no_grad():
        assert torch.equal(pred(x), net(x)[0])  # later calls use the plain network too


def test_precisions_are_checked_against_the_machine(monkeypatch):
    net = _small()
    with pytest.raises(ConfigError, match="float16 inference needs a CUDA GPU"):
        predictor(net, "cpu", precision="float16")
    monkeypatch.setattr(sharpscope.runtime, "native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="native bfloat16"):
        predictor(net, "cpu", precision="bfloat16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        predictor(net, "cpu", precision="int8")
    with pytest.raises(ConfigError, match="backend must be one of"):
        predictor(net, "cpu", backend="tensorrt")
    with pytest.raises(ConfigError, match="no fast path for device"):
        predictor(net, "meta")


def test_bfloat16_is_looser_but_recorded(monkeypatch):
    monkeypatch.setattr(sharpscope.runtime, "native_bf16", lambda: True)
    net = _small()
    pred = predictor(net, "cpu", precision="bfloat16")
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    y = pred(x)
    check = pred.checks[(32, 32, False)]
    assert check.passed and check.bound == accel.LOW_PRECISION_BOUND
    with torch.no_grad():
        ref = net(x)[0]
    # the check compares the first sample of the first chunk
    assert float((y[:1] - ref[:1]).abs().max()) == pytest.approx(check.max_abs_error, rel=1e-3)  # bf16 kernels differ slightly by batch size
    assert float((y - ref).abs().max()) <= accel.LOW_PRECISION_BOUND * float(ref.max() - ref.min())
    assert 0 < check.max_abs_error  # bfloat16 is not float32: the error is real


def test_plan_describe_and_chunks():
    plan = Plan("cpu", "eager", True, CHUNK_PIXELS, "float32")
    assert plan.chunk_size(128, 128) == 4
    assert plan.chunk_size(512, 512) == 1
    assert Plan("cuda:0", "eager", True, 0, "float16").chunk_size(512, 512) == 0
    assert "channels-last" in plan.describe()


def test_network_function_uses_the_predictor_and_passes_noise():
    net = _small(noise_input=True)
    x = torch.rand(2, 1, 32, 32)
    noise = (0.02, 0.04)
    fn = network_function(net, None, noise=noise)
    slow = network_function(net, None, noise=noise, fast=False)
    with torch.no_grad():
        ref = net(x, torch.tensor(noise))[0]
        assert torch.equal(slow(x), ref)
        assert float((fn(x) - ref).abs().max()) <= _bound(ref)
    assert (32, 32, True) in predictor(net, "cpu").checks


def test_model_predict_patches_and_predict_run_the_fast_path():
    net = _small()
    header = {"name": "t", "architecture": "mrbcr", "tile": {"size": 64, "overlap": 16}}
    model = Model(header, net)
    patches = np.random.default_rng(0).random((3, 32, 48), dtype=np.float32)
    out = model.predict_patches(patches, device="cpu")
    with torch.no_grad():
        ref = net(torch.from_numpy(patches)[:, None])[0][:, 0].numpy()
    assert out.shape == (3, 32, 48) and out.dtype == np.float32
    assert np.abs(out - ref).max() <= ERROR_BOUND * (ref.max() - ref.min())
    with pytest.raises(InputError, match="divisible by 4"):
        model.predict_patches(patches[:, :30], device="cpu")
    with pytest.raises(InputError, match=r"\(N, H, W\)"):
        model.predict_patches(patches[0], device="cpu")
    image = np.random.default_rng(1).random((100, 90), dtype=np.float32)
    model.predict(image, warn_range=False, device="cpu")
    ay, ax = tile_grid(image.shape, 64, 16, 4)
    checks = model.predictor("cpu").checks
    assert checks[(ay.tile, ax.tile, False)].passed  # the tiles went through it
