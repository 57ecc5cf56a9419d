"""The demo and the method comparison behind it.

:func:`compare_methods` restores one simulated image three ways (nothing, Richardson-Lucy
with the true PSF at its best iteration count, the network) and scores each against the
ground truth; :func:`run_demo` does it on a seeded simulated sample and writes TIFFs and a
picture.  ``benchmarks/bench_quality.py`` runs the same comparison over a held-out set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Seeds of the demo sample and of the held-out benchmark set.  Training draws from
# seeds below 1_000_000 (see the train config); these are never used there.
DEMO_SEED = 20_261_121
RL_ITERATIONS = (1, 2, 3, 5, 8, 13, 20, 40, 80)


@dataclass
class Scored:
    """One restored image with its scores against the ground truth."""

    image: np.ndarray
    psnr: float
    ssim: float
    note: str = ""


def compare_methods(
    low: np.ndarray,
    gt: np.ndarray,
    psf: np.ndarray,
    model=None,
    rl_iterations: tuple[int, ...] = RL_ITERATIONS,
    keep_all: bool = False,
    tta: bool = False,
    optics: dict | None = None,
    blind: bool = False,
) -> dict[str, Scored]:
    """Score the degraded input, Richardson-Lucy and the network against ``gt``.

    Parameters
    ----------
    low, gt : ndarray
        Degraded image and ground truth (2-D, same intensity scale).
    psf : ndarray
        The true PSF that degraded ``low``.
    model : sharpscope.restore.Model, optional
        The network to compare; skipped when None.
    rl_iterations : tuple of int
        Iteration counts tried for Richardson-Lucy; the best PSNR is kept (an oracle choice
        per image, which favours Richardson-Lucy).
    keep_all : bool
        Also return every iteration count's result, as ``"richardson-lucy N"``.
    tta : bool
        Also score the network with test-time augmentation, as ``"sharpscope tta"``.
    optics : dict, optional
        ``fc`` and ``modality`` told to the network (:meth:`~sharpscope.restore.Model.predict`).
    blind : bool
        Also score the network without the optics, as ``"sharpscope blind"``.

    Returns
    -------
    dict
        ``{"input": Scored, "richardson-lucy": Scored, "sharpscope": Scored}`` (plus the
        per-iteration entries with ``keep_all`` and ``"sharpscope tta"`` with ``tta``).
    """
    from sharpscope.deconv import deconvolve
    from sharpscope.metrics import psnr, ssim

    rng = float(gt.max() - gt.min())

    def score(img: np.ndarray, note: str = "") -> Scored:
        return Scored(img, psnr(img, gt, data_range=rng), ssim(img, gt, data_range=rng), note)

    out = {"input": score(low)}
    runs = {
        n: score(deconvolve(low, psf, method="rl", iterations=n), f"{n} iterations")
        for n in rl_iterations
    }
    out["richardson-lucy"] = max(runs.values(), key=lambda s: s.psnr)
    if keep_all:
        out.update({f"richardson-lucy {n}": s for n, s in runs.items()})
    if model is not None:
        kw = optics or {}
        out["sharpscope"] = score(model.predict(low, axes="YX", **kw))
        if tta:
            out["sharpscope tta"] = score(model.predict(low, axes="YX", tta=True, **kw))
        if blind:
            out["sharpscope blind"] = score(model.predict(low, axes="YX"))
    return out


def save_panel(path: str | Path, images: dict[str, np.ndarray], scores: dict[str, Scored]) -> Path:
    """Write a side-by-side PNG of ``images`` with their PSNR/SSIM in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sharpscope.io import atomic_write

    path = Path(path)
    lo, hi = np.percentile(images["ground truth"], (0.5, 99.8))
    fig, axes = plt.subplots(
        1, len(images), figsize=(3.2 * len(images), 3.8), layout="constrained"
    )
    for ax, (name, img) in zip(axes, images.items(), strict=True):
        ax.imshow(img, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        title = name
        if name in scores:
            s = scores[name]
            title += f"\n{s.psnr:.2f} dB, SSIM {s.ssim:.3f}"
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def run_demo(
    out_dir: str | Path = "demo-output",
    model: str | Path | None = None,
    seed: int = DEMO_SEED,
    size: int = 256,
) -> dict[str, Scored]:
    """Simulate a sample, restore it, and write TIFFs plus ``panel.png`` into ``out_dir``.

    Examples
    --------
    >>> scores = run_demo("demo-output")                      # doctest: +SKIP
    >>> scores["sharpscope"].psnr > scores["input"].psnr       # doctest: +SKIP
    True
    """
    from sharpscope.io import write_image
    from sharpscope.restore import load_model
    from sharpscope.simulate import simulate_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = simulate_dataset("mrbcr-widefield", n=1, size=size, seed=seed)
    low, gt, psf = sample["low"][0], sample["gt"][0], sample["psfs"][0]
    scores = compare_methods(low, gt, psf, load_model(model))
    images = {
        "input": low,
        "richardson-lucy": scores["richardson-lucy"].image,
        "sharpscope": scores["sharpscope"].image,
        "ground truth": gt,
    }
    for name, img in images.items():
        write_image(out_dir / f"{name.replace(' ', '_')}.tif", img, "YX")
    save_panel(out_dir / "panel.png", images, scores)
    return scores
