"""Model store: bundled and user folders, name resolution, the `models` command."""

from __future__ import annotations

from pathlib import Path

import pytest

import sharpscope
import sharpscope.models.store as store
from sharpscope.cli import main
from sharpscope.errors import ModelFormatError
from sharpscope.models.format import save_model
from sharpscope.models.mrbcr import SRBCR

SMALL = dict(channels=4, dense_layers=1, conv1d_filters=4, conv1d_layers=1, rdb_blocks=1)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    home = tmp_path / "home"
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setenv("SHARPSCOPE_HOME", str(home))
    monkeypatch.setattr(store, "bundled_dir", lambda: bundled)
    return home / "models", bundled


def _save(path: Path, name: str, description: str) -> Path:
    header = dict(name=name, architecture="srbcr", hparams=SMALL, description=description)
    return save_model(path, SRBCR(**SMALL), header)


def test_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARPSCOPE_HOME", str(tmp_path))
    assert store.user_dir() == tmp_path / "models"
    monkeypatch.delenv("SHARPSCOPE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store.user_dir() == tmp_path / "xdg" / "sharpscope" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert store.user_dir() == tmp_path / "h" / ".local" / "share" / "sharpscope" / "models"
    assert store.bundled_dir() == Path(sharpscope.__file__).resolve().parent / "weights"
    assert store.user_model_path("abc") == store.user_dir() / "abc.safetensors"
    for bad in ("", "../x", "a/b", "with space"):
        with pytest.raises(ModelFormatError, match="invalid model name"):
            store.user_model_path(bad)


def test_list_and_resolve(dirs, tmp_path):
    user, bundled = dirs
    b = _save(bundled / "widefield-2d.safetensors", "widefield-2d", "bundled default")
    u1 = _save(user / "mine.safetensors", "mine", "my model")
    u2 = _save(user / "folder-model" / "model.safetensors", "folder-model", "in a folder")
    shadow = _save(user / "widefield-2d.safetensors", "widefield-2d", "user override")
    (user / "broken.safetensors").write_bytes(b"\x00" * 20)
    (user / "notes.txt").write_text("not a model")

    models = store.list_models()
    rows = [(m.name, m.source, m.description) for m in models]
    assert rows[0] == ("widefield-2d", "bundled", "bundled default")
    assert ("mine", "user", "my model") in rows
    assert ("folder-model", "user", "in a folder") in rows
    assert [r[0] for r in rows if r[1] == "user"] == [
        "broken",
        "folder-model",
        "mine",
        "widefield-2d",
    ]
    broken = next(m for m in models if m.name == "broken")
    assert broken.description.startswith("unusable:")

    assert store.resolve_model("mine") == u1
    assert store.resolve_model("mine.safetensors") == u1
    assert store.resolve_model("folder-model") == u2
    assert store.resolve_model(str(user / "folder-model")) == u2
    assert store.resolve_model(u1) == u1
    assert store.resolve_model("widefield-2d") == shadow  # user shadows bundled
    shadow.unlink()
    assert store.resolve_model(None) == b  # DEFAULT_MODEL
    assert store.DEFAULT_MODEL == "widefield-2d"
    with pytest.raises(ModelFormatError, match="not found"):
        store.resolve_model("does-not-exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFormatError, match="no model.safetensors"):
        store.resolve_model(empty)


def test_cli_models(dirs, monkeypatch, capsys):
    import sharpscope.cli as cli

    assert "sharpscope.cli.models" in cli.COMMAND_MODULES
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("sharpscope.cli.models",))
    user, bundled = dirs
    assert main(["models"]) == 0
    assert "no models found" in capsys.readouterr().out

    _save(bundled / "widefield-2d.safetensors", "widefield-2d", "bundled default")
    _save(user / "mine.safetensors", "mine", "my model")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split(None, 2) == ["widefield-2d", "bundled", "bundled default"]
    assert lines[1].split(None, 2) == ["mine", "user", "my model"]


def test_the_torch_free_header_peek_knows_every_registered_architecture():
    from sharpscope.models.registry import ARCHITECTURES
    from sharpscope.models.store import _KNOWN_ARCHITECTURES

    assert set(ARCHITECTURES) == set(_KNOWN_ARCHITECTURES)
