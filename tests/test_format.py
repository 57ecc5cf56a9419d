"""The safetensors model file: round trip and validation of damaged or wrong files."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sharpscope.errors import ModelFormatError
from sharpscope.models.format import (
    METADATA_KEY,
    ModelHeader,
    load_network,
    read_header,
    save_model,
)
from sharpscope.models.mrbcr import MRBCR, SRBCR

SMALL = dict(channels=8, dense_layers=2, conv1d_filters=8, conv1d_layers=2, rdb_blocks=1)


def _header(**kw) -> dict:
    base = dict(name="small", architecture="srbcr", hparams=dict(SMALL), description="a test model")
    base.update(kw)
    return base


def _write_raw(path, tensors, metadata=None):
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    net = MRBCR(decimation="avgpool")
    header = ModelHeader(
        name="full",
        architecture="mrbcr",
        hparams=net.hparams,
        normalization={"pmin": 2.0, "pmax": 99.5},
        tile={"size": 96, "overlap": 16},
        provenance="unit test",
        license="CC0",
        training={"steps": 3},
    )
    path = save_model(tmp_path / "sub" / "full.safetensors", net, header)
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["full.safetensors"]  # no temp left
    loaded_header, loaded = load_network(path)
    assert loaded_header == header
    assert read_header(path) == header
    assert isinstance(loaded, MRBCR) and loaded.decimation == "avgpool"
    assert not loaded.training
    a, b = net.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x = torch.rand(1, 1, 32, 40)
    with torch.no_grad():
        for u, v in zip(net.eval()(x), loaded(x), strict=True):
            assert torch.equal(u, v)


def test_save_refuses_weights_that_do_not_match_the_header(tmp_path):
    net = SRBCR(**{**SMALL, "channels": 16})
    with pytest.raises(ModelFormatError, match="shape"):
        save_model(tmp_path / "x.safetensors", net, _header())
    with pytest.raises(ModelFormatError, match="architecture"):
        save_model(tmp_path / "x.safetensors", net, _header(architecture="nope"))
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("cut", [0, 5, 8, 100, -1])
def test_truncated_file(tmp_path, cut):
    path = save_model(tmp_path / "m.safetensors", SRBCR(**SMALL), _header())
    data = path.read_bytes()
    path.write_bytes(data[: cut if cut >= 0 else len(data) - 7])
    with pytest.raises(ModelFormatError):
        load_network(path)


def test_garbage_and_pickles_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelFormatError, match="not a valid model file"):
        load_network(garbage)
    # a pickled state dict (what torch.save writes) is never unpickled
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (marker.touch, ())

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(ModelFormatError):
        load_network(evil)
    assert not marker.exists()
    with pytest.raises(ModelFormatError, match="not found"):
        load_network(tmp_path / "missing.safetensors")


def test_missing_or_broken_header(tmp_path):
    tensors = SRBCR(**SMALL).state_dict()
    no_meta = _write_raw(tmp_path / "a.safetensors", tensors)
    with pytest.raises(ModelFormatError, match="no 'sharpscope' header"):
        load_network(no_meta)
    other = _write_raw(tmp_path / "b.safetensors", tensors, {"format": "pt"})
    with pytest.raises(ModelFormatError, match="no 'sharpscope' header"):
        load_network(other)
    bad_json = _write_raw(tmp_path / "c.safetensors", tensors, {METADATA_KEY: "{not json"})
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load_network(bad_json)
    not_obj = _write_raw(tmp_path / "d.safetensors", tensors, {METADATA_KEY: "[1, 2]"})
    with pytest.raises(ModelFormatError, match="JSON object"):
        load_network(not_obj)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architecture": "resnet-9000"}, "unknown architecture"),
        ({"format_version": 99}, "format version 99"),
        ({"normalization": {"pmin": 50, "pmax": 10}}, "pmin"),
        ({"tile": {"size": 64, "overlap": 64}}, "overlap"),
        ({"hparams": {**SMALL, "bogus": 1}}, "hyper-parameters"),
        ({"surprise": True}, "surprise"),
        ({"name": ""}, "name"),
        ({"valid_range": {"cutoff": [0.3, 0.1]}}, "valid_range.cutoff"),
        ({"valid_range": {"photons": [1, 2], "snr": [0, 1]}}, "snr"),
    ],
)
def test_invalid_header_fields(tmp_path, change, message):
    header = json.dumps({**_header(), **change})
    path = _write_raw(
        tmp_path / "m.safetensors", SRBCR(**SMALL).state_dict(), {METADATA_KEY: header}
    )
    with pytest.raises(ModelFormatError, match=message) as info:
        load_network(path)
    assert "\n" not in str(info.value)


def test_tensors_must_match_the_network(tmp_path):
    meta = {METADATA_KEY: json.dumps(_header())}
    good = SRBCR(**SMALL).state_dict()
    wrong_shape = SRBCR(**{**SMALL, "channels": 4}).state_dict()
    with pytest.raises(ModelFormatError, match="shape"):
        load_network(_write_raw(tmp_path / "a.safetensors", wrong_shape, meta))
    missing = {k: v for k, v in good.items() if k != "out.weight"}
    with pytest.raises(ModelFormatError, match="missing tensor 'out.weight'"):
        load_network(_write_raw(tmp_path / "b.safetensors", missing, meta))
    extra = {**good, "extra.weight": torch.zeros(3)}
    with pytest.raises(ModelFormatError, match="unexpected tensor 'extra.weight'"):
        load_network(_write_raw(tmp_path / "c.safetensors", extra, meta))
    double = {k: v.double() for k, v in good.items()}
    with pytest.raises(ModelFormatError, match="dtype"):
        load_network(_write_raw(tmp_path / "d.safetensors", double, meta))


def test_valid_range_round_trips_and_old_headers_load(tmp_path):
    from sharpscope.models.format import ValidRange

    net = SRBCR(**SMALL)
    header = ModelHeader(**_header(), valid_range={"cutoff": (0.1, 0.25), "photons": (20, 800)})
    path = save_model(tmp_path / "v.safetensors", net, header)
    loaded = read_header(path)
    assert loaded == header
    assert loaded.valid_range == ValidRange(cutoff=(0.1, 0.25), photons=(20.0, 800.0))
    # one range may be missing
    part = ModelHeader(**_header(), valid_range={"photons": (5, 50)})
    assert read_header(save_model(tmp_path / "p.safetensors", net, part)).valid_range.cutoff is None
    # a header written before the field existed loads with valid_range None ...
    meta = {METADATA_KEY: json.dumps(_header())}
    old = _write_raw(tmp_path / "old.safetensors", net.state_dict(), meta)
    assert load_network(old)[0].valid_range is None
    # ... and a header without a range is still written without the key (older readers load it)
    plain = save_model(tmp_path / "plain.safetensors", net, _header())
    from safetensors import safe_open

    with safe_open(str(plain), framework="pt") as f:
        assert "valid_range" not in json.loads(f.metadata()[METADATA_KEY])


@pytest.mark.parametrize("channels", [6000, 200000])
def test_lying_header_is_refused_before_allocating(tmp_path, channels, monkeypatch):
    """A 1 MB file whose header asks for a huge network builds nothing real."""
    import sharpscope.models.registry as registry

    net = SRBCR()
    path = tmp_path / "liar.safetensors"
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    _write_raw(path, tensors, {"sharpscope": json.dumps(_header(architecture="srbcr",
                                                                hparams={"channels": channels}))})
    built = []
    real = registry._construct
    monkeypatch.setattr(registry, "_construct", lambda a, h: built.append(torch.empty(0).device)
                        or real(a, h))
    with pytest.raises(ModelFormatError) as err:
        load_network(path)
    assert str(err.value).count("\n") == 0
    assert ("does not match its header" in str(err.value)) or ("parameters" in str(err.value))
    # only meta-device probes ran: torch.empty inside the probe context reports 'meta'
    assert built and all(d.type == "meta" for d in built)


def test_parameter_bound_and_meta_signature():
    from sharpscope.errors import ConfigError
    from sharpscope.models.registry import ARCHITECTURES, build_network, network_signature

    for arch in ARCHITECTURES:  # the probe agrees with the real network, architecture by architecture
        real = {k: (tuple(v.shape), v.dtype) for k, v in build_network(arch).state_dict().items()}
        assert network_signature(arch) == real
    with pytest.raises(ConfigError, match="more than the limit"):
        build_network("mrbcr", channels=200000)


def test_non_finite_weights_are_refused(tmp_path):
    net = SRBCR(**SMALL)
    for bad in (float("nan"), float("inf")):
        tensors = {k: v.clone().contiguous() for k, v in net.state_dict().items()}
        key = sorted(tensors)[3]
        tensors[key].view(-1)[0] = bad
        path = tmp_path / "bad.safetensors"
        _write_raw(path, tensors, {"sharpscope": json.dumps(_header(architecture="srbcr"))})
        with pytest.raises(ModelFormatError, match="NaN or infinite"):
            load_network(path)
