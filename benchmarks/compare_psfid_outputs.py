"""Output parameterisation of the PSF identifier, measured: Zernike coefficients vs a PSF image.

    python benchmarks/compare_psfid_outputs.py

Trains the same small PSFNet (8, 16, 32 channels) twice for 150 steps of 6 patches of
64 x 64 (poster-zernike, the psfid-2d ranges, coefficient weight 5, one thread), once with
``output='zernike'`` and once with ``output='image'``, and scores both on 48 held-out
patches (seed 99) with fc and theta_max given, beside the aberration-free PSF.
Writes its runs under /tmp/psfid/cmp.
"""
import numpy as np
import torch

from sharpscope.models.psfnet import load_identifier
from sharpscope.physics.psf import pupil_psf
from sharpscope.training import load_config, train
from sharpscope.training.psfid import PSFPatches, psf_metrics, psfid_preset, stack

torch.set_num_threads(1)
res = {}
for output in ("zernike", "image"):
    cfg = load_config(overrides={"task": "psf-identification", "model.arch": "psfnet",
        "model.hparams": {"channels": [8, 16, 32], "output": output}, "data.simulate": "poster-zernike",
        "steps": 150, "batch_size": 6, "patch_size": 64, "val_every": 150, "val_size": 8, "lr": 3e-3,
        "monitor": "val_psf_snr", "out": f"/tmp/psfid/cmp/{output}", "plot": False, "device": "cpu",
        "augment.flips": False, "augment.rot90": False, "psfid.zernike_weight": 5.0})
    train(cfg, progress=False)
    ident = load_identifier(f"/tmp/psfid/cmp/{output}")
    d = stack([PSFPatches(psfid_preset(cfg), 64, seed=99, stream=0)[i] for i in range(48)])
    p = ident.predict(d["low"][:, 0].numpy(), fc=d["fc"].numpy(), theta_max=d["theta_max"].numpy())
    m = psf_metrics(torch.from_numpy(p.psf), d["psf"], d["x"])
    yy, xx = np.mgrid[:33, :33]
    off = np.hypot((p.psf * yy).sum((1, 2)) - 16, (p.psf * xx).sum((1, 2)) - 16)
    res[output] = (m["rel_l2"].mean().item(), m["psf_snr"].mean().item(), m["reblur_psnr"].mean().item(), off.mean())
    rel, snr, rb, off_px = res[output]
    print(f"{output} rel L2 {rel:.3f}  PSF SNR {snr:.2f} dB  reblur {rb:.2f} dB  centroid offset {off_px:.2f} px", flush=True)
h0 = pupil_psf(torch.zeros(48, 8), d["fc"], size=33)
m = psf_metrics(h0, d["psf"], d["x"])
print(
    f"aberration-free rel L2 {float(m['rel_l2'].mean()):.3f}  PSF SNR {float(m['psf_snr'].mean()):.2f} dB  "
    f"reblur {float(m['reblur_psnr'].mean()):.2f} dB"
)
