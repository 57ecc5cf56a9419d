"""``sharpscope export-bioimageio``: a model as a bioimage.io model package."""

from __future__ import annotations

import argparse
import json

from sharpscope.cli._args import (
    add_json,
    add_output,
    add_quiet,
    add_threads,
    integer,
    note,
    setup_compute,
)


def _weights(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected pytorch_state_dict, torchscript or both")
    return items


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export-bioimageio`` sub-command."""
    p = sub.add_parser(
        "export-bioimageio",
        help="write a model as a bioimage.io model package (.zip) for deepImageJ, ilastik, ...",
        description=(
            "Write MODEL as a bioimage.io model package (format 0.5): rdf.yaml, "
            "pytorch_state_dict and torchscript weights, test tensors computed by the model, "
            "a cover image, documentation, citations and the licence from the model header. "
            "The input is scaled with the model's percentiles (scale_range); the output stays "
            "in those normalised units. Unless --no-validate, bioimageio.core tests the "
            "package (offline; well under a minute on a CPU) before it is written: install "
            "it with pip install 'sharpscope[export]'."
        ),
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a model name (sharpscope models lists them), a model file or a training run folder",
    )
    add_output(p, help="output package (.zip)", metavar="PACKAGE.zip")
    p.add_argument(
        "--name", default=None, help="package name (default: 'sharpscope MODEL (ARCHITECTURE)')"
    )
    p.add_argument(
        "--description", default=None, help="one paragraph (default: the model's description)"
    )
    p.add_argument(
        "--author",
        action="append",
        default=None,
        metavar="NAME",
        help="an author to contact about the model; repeat for several (default for bundled "
        "models: the sharpscope developers; needed for others)",
    )
    p.add_argument(
        "--license",
        default=None,
        metavar="SPDX",
        help="SPDX licence identifier (default: from the model header)",
    )
    p.add_argument(
        "--test-image",
        default=None,
        metavar="FILE",
        help="image for the test tensors and cover (the middle plane of a stack; default: "
        "simulated from the model's training preset)",
    )
    p.add_argument(
        "--test-size",
        type=integer(1),
        default=256,
        metavar="N",
        help="side of the simulated test image (default: 256)",
    )
    p.add_argument(
        "--seed", type=integer(0), default=0, help="seed of the simulated test image (default: 0)"
    )
    p.add_argument(
        "--weights",
        type=_weights,
        default=None,
        metavar="FORMATS",
        help="comma-separated weight formats (default: pytorch_state_dict,torchscript)",
    )
    p.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="test the package with bioimageio.core before writing it (default: on)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    add_threads(p)
    add_json(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``sharpscope export-bioimageio``."""
    from sharpscope.export import WEIGHT_FORMATS, export_bioimageio

    setup_compute(args)
    test_image = None
    if args.test_image is not None:
        from sharpscope.io import read_image

        test_image = read_image(args.test_image).data
        while test_image.ndim > 2:  # the middle plane of every leading axis
            test_image = test_image[test_image.shape[0] // 2]
    if args.validate:
        note(args, "building the package, then testing it with bioimageio.core")
    result = export_bioimageio(
        args.model,
        args.output,
        name=args.name,
        description=args.description,
        authors=args.author,
        license=args.license,
        test_image=test_image,
        test_size=args.test_size,
        seed=args.seed,
        weights=args.weights or WEIGHT_FORMATS,
        validate=args.validate,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.quiet:
        print(result.path)
    else:
        test = f"bioimageio.core test {result.status}" if result.status else "not validated"
        print(
            f"wrote {result.path} (bioimage.io model, weights {', '.join(result.weights)}; "
            f"y/x of {result.min_size} + n*{result.step} pixels, halo {result.halo}; {test})"
        )
    return 0
