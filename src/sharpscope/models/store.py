"""Where model files live: bundled with the package, or in the user's model folder.

* bundled models: ``src/sharpscope/weights/<name>.safetensors`` (installed with
  the package);
* user models (for instance imported DeBCR weights): ``$SHARPSCOPE_HOME/models``
  when ``SHARPSCOPE_HOME`` is set, else ``$XDG_DATA_HOME/sharpscope/models``,
  else ``~/.local/share/sharpscope/models``; either ``<name>.safetensors`` or a
  folder ``<name>/model.safetensors``.

A model is named by its file stem (or folder name).  A user model shadows a
bundled model of the same name.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sharpscope.errors import ModelFormatError, SharpscopeError

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_SUFFIX",
    "ModelInfo",
    "bundled_dir",
    "list_models",
    "resolve_model",
    "user_dir",
    "user_model_path",
    "validate_model_name",
]

DEFAULT_MODEL = "widefield-2d"
MODEL_SUFFIX = ".safetensors"
FOLDER_MODEL_FILE = "model.safetensors"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class ModelInfo:
    """One available model.

    Attributes
    ----------
    name : str
        Name to pass to ``--model`` / :func:`resolve_model`.
    path : Path
        The model file.
    description : str
        One-line description from the header (or why the file is unusable).
    source : {'bundled', 'user'}
        Where it was found.
    """

    name: str
    path: Path
    description: str
    source: Literal["bundled", "user"]


def bundled_dir() -> Path:
    """Folder of the models shipped with the package (``sharpscope/weights``).

    Examples
    --------
    >>> bundled_dir().name
    'weights'
    """
    return Path(__file__).resolve().parent.parent / "weights"


def user_dir() -> Path:
    """Folder of the user's models (see the module docstring for the lookup order).

    Examples
    --------
    >>> user_dir().name
    'models'
    """
    home = os.environ.get("SHARPSCOPE_HOME")
    if home:
        return Path(home).expanduser() / "models"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "sharpscope" / "models"


def validate_model_name(name: str) -> str:
    """Check that ``name`` can be a model name (letters, digits, ``._+-``).

    Raises
    ------
    ModelFormatError
        The name is empty or contains other characters (a path, spaces, ...).

    Examples
    --------
    >>> validate_model_name("debcr-2D_denoising")
    'debcr-2D_denoising'
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ModelFormatError(
            f"invalid model name {name!r}: use letters, digits and . _ + - (no path separators)"
        )
    return name


def user_model_path(name: str) -> Path:
    """Where a user model called ``name`` is written: ``user_dir()/<name>.safetensors``.

    Examples
    --------
    >>> user_model_path("mine").name
    'mine.safetensors'
    """
    return user_dir() / f"{validate_model_name(name)}{MODEL_SUFFIX}"


def _scan(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == MODEL_SUFFIX:
            found.setdefault(entry.stem, entry)
        elif entry.is_dir() and (entry / FOLDER_MODEL_FILE).is_file():
            found.setdefault(entry.name, entry / FOLDER_MODEL_FILE)
    return found


# architectures whose headers list_models may take at face value without importing
# torch (the registry's keys: tests/test_store.py checks they agree); any other name goes
# through the full validation
_KNOWN_ARCHITECTURES = frozenset({"mrbcr", "srbcr", "bcr", "unet", "dncnn", "psfnet"})


def _peek_description(path: Path) -> str | None:
    """The description in a model file's header, read without torch; None when in doubt.

    A safetensors file starts with the little-endian length of its JSON
    header; the sharpscope header is a JSON string in its ``__metadata__``.
    Anything unusual returns None, and the caller validates fully.
    """
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 2 <= n <= 100_000_000:
                return None
            meta = json.loads(f.read(n)).get("__metadata__") or {}
        header = json.loads(meta["sharpscope"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return None
    if not isinstance(header, dict) or header.get("format_version", 1) != 1:
        return None
    arch, name, desc = header.get("architecture"), header.get("name"), header.get("description", "")
    if arch not in _KNOWN_ARCHITECTURES or not isinstance(name, str) or not name:
        return None
    if not isinstance(desc, str):
        return None
    return desc or f"{arch} model"


def list_models() -> list[ModelInfo]:
    """All bundled and user models, bundled first, each group sorted by name.

    A file whose header cannot be read is listed with the reason as its
    description, so that ``sharpscope models`` shows it rather than hiding it.

    Examples
    --------
    >>> [m.name for m in list_models() if m.source == "bundled"]  # doctest: +SKIP
    ['widefield-2d']
    """
    out = []
    for source, folder in (("bundled", bundled_dir()), ("user", user_dir())):
        for name, path in _scan(folder).items():
            description = _peek_description(path)  # fast: no torch for well-formed files
            if description is None:
                from sharpscope.models.format import read_header

                try:
                    header = read_header(path)
                    description = header.description or f"{header.architecture} model"
                except SharpscopeError as exc:
                    description = f"unusable: {exc}"
            out.append(ModelInfo(name, path, description, source))
    return out


def resolve_model(name_or_path: str | os.PathLike | None = None) -> Path:
    """Find a model file from a path or a model name.

    Parameters
    ----------
    name_or_path : str or PathLike, optional
        A model file, a folder containing ``model.safetensors``, or the name of
        a user or bundled model (user models first). ``None`` means
        :data:`DEFAULT_MODEL`.

    Returns
    -------
    Path
        The model file (not yet validated; see :func:`~sharpscope.models.format.load_network`).

    Raises
    ------
    ModelFormatError
        Nothing matches.

    Examples
    --------
    >>> resolve_model("debcr-2D_denoising")  # doctest: +SKIP
    PosixPath('/home/me/.local/share/sharpscope/models/debcr-2D_denoising.safetensors')
    """
    target = DEFAULT_MODEL if name_or_path is None else name_or_path
    path = Path(target).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        inner = path / FOLDER_MODEL_FILE
        if inner.is_file():
            return inner
        raise ModelFormatError(f"folder {path} contains no {FOLDER_MODEL_FILE}")
    name = str(target)
    if name.endswith(MODEL_SUFFIX):
        name = name[: -len(MODEL_SUFFIX)]
    if _NAME_RE.match(name):
        for folder in (user_dir(), bundled_dir()):
            candidates = (folder / f"{name}{MODEL_SUFFIX}", folder / name / FOLDER_MODEL_FILE)
            for candidate in candidates:
                if candidate.is_file():
                    return candidate
    raise ModelFormatError(
        f"model {str(target)!r} not found: not a file, and no user or bundled model of that "
        "name (run 'sharpscope models' to list them)"
    )
