"""Sample-data contribution: a simulated specimen, its degraded image and PSF (no download)."""

from __future__ import annotations

from typing import Any

SAMPLE_PRESET = "mrbcr-widefield"
SAMPLE_SIZE = 256
SAMPLE_SEED = 3


def simulate_sample(size: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> dict[str, Any]:
    """One simulated pair: ``low``, ``gt`` (float32 ``(size, size)``), ``psf`` and ``params``."""
    from sharpscope.simulate import SimulatedPairs

    s = SimulatedPairs(SAMPLE_PRESET, patch_size=size, seed=seed).sample(0)
    return {
        "low": s["low"][0].numpy(),
        "gt": s["gt"][0].numpy(),
        "psf": s["psf"].numpy(),
        "params": s["params"],
    }


def make_sample() -> list[tuple]:
    """npe2 sample-data hook: degraded image, ground truth and PSF layers."""
    s = simulate_sample()
    px = float(s["params"].get("pixel_size", 1.0))
    meta = {"axes": "YX", "pixel_size": {"Y": px, "X": px}, "simulated": s["params"]}
    scale = (px, px)
    return [
        (s["gt"], {"name": "sample ground truth", "scale": scale, "metadata": {"sharpscope": meta}, "visible": False}, "image"),
        (s["low"], {"name": "sample degraded", "scale": scale, "metadata": {"sharpscope": meta}}, "image"),
        (
            s["psf"],
            {
                "name": "sample psf",
                "scale": scale,
                "metadata": {"sharpscope": {**meta, "kind": "psf"}},
                "colormap": "magma",
                "visible": False,
            },
            "image",
        ),
    ]
