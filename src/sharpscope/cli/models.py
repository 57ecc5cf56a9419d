"""``sharpscope import-debcr`` and ``sharpscope models``: managing model files."""

from __future__ import annotations

import argparse
import json

from sharpscope.cli._args import add_json, add_quiet


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-debcr`` and ``models`` sub-commands."""
    p = subparsers.add_parser(
        "import-debcr",
        help="convert a published DeBCR TensorFlow checkpoint to a sharpscope model",
        description=(
            "Convert a published DeBCR (m-rBCR) TensorFlow checkpoint "
            "(ckpt-best.index + ckpt-best.data-00000-of-00001) to a sharpscope model file, "
            "without TensorFlow. Every tensor's CRC32C is verified. By default the model "
            "goes to the user model folder as debcr-<checkpoint folder name>."
        ),
    )
    p.add_argument(
        "ckpt_prefix",
        metavar="CKPT_PREFIX",
        help="checkpoint prefix (e.g. weights/2D_denoising/ckpt-best) or the folder holding it",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="MODEL",
        default=None,
        help="output .safetensors file or existing folder (default: the user model folder)",
    )
    p.add_argument("--name", default=None, help="model name (default: debcr-<folder name>)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing model file of that name"
    )
    add_quiet(p)
    p.set_defaults(func=_import_debcr)

    q = subparsers.add_parser(
        "models",
        help="list bundled and imported models",
        description=(
            "List the bundled and user models, one line each: name, source, description "
            "(--json: a list of objects with name, source, path and description). "
            "User models live in $SHARPSCOPE_HOME/models, else ~/.local/share/sharpscope/models."
        ),
    )
    add_json(q)
    add_quiet(q)
    q.set_defaults(func=_list_models)


def _import_debcr(args: argparse.Namespace) -> int:
    from sharpscope.models.debcr_import import import_debcr

    path = import_debcr(args.ckpt_prefix, out=args.output, name=args.name, overwrite=args.overwrite)
    print(path if args.quiet else f"wrote {path}")
    return 0


def _list_models(args: argparse.Namespace) -> int:
    from sharpscope.models.store import bundled_dir, list_models, user_dir

    models = list_models()
    if args.json:
        rows = [
            {"name": m.name, "source": m.source, "path": str(m.path), "description": m.description}
            for m in models
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not models:
        print(f"no models found (bundled: {bundled_dir()}, user: {user_dir()})")
        return 0
    width = max(len(m.name) for m in models)
    for m in models:
        print(f"{m.name:<{width}}  {m.source:<7}  {m.description}")
    return 0
