"""Procedural fluorescence specimens (ground-truth objects) in 2-D and 3-D.

Every generator returns a non-negative float32 intensity map in ``[0, 1]``
(the whole map is divided by its maximum when overlapping structures exceed
1).  Geometry is in pixels: lateral sizes are in units of the lateral pixel,
and for 3-D volumes ``voxel_aspect`` (axial step / lateral pixel, default 1)
keeps objects isotropic in physical space.

Kinds
-----
``'filaments'``
    Microtubule/actin-like smooth curves: cubic B-splines through a worm-like
    chain of control points (persistence length drawn per filament), rendered
    as thin lines of Gaussian cross-section (``width`` = FWHM, default 0.7 px,
    below the diffraction limit at Nyquist sampling) with exact pixel-area
    integration, so a line's brightness does not depend on its sub-pixel
    position.
``'puncta'``
    Sub-diffraction spots (Gaussian, sigma 0.3-1 px) and a fraction of
    hollow vesicles (thin rings in 2-D, spherical shells in 3-D).
``'membranes'``
    Cell outlines: thin bright contours (2-D) or surfaces (3-D) of smooth,
    randomly deformed ellipses/ellipsoids, with a faint cytoplasmic fill.
``'nuclei'``
    Filled smooth blobs with a soft edge, a smooth random chromatin texture
    and a few bright nucleoli.
``'mixed'``
    A cell-like combination of all of the above at reduced densities.
``'texture'`` (2-D only)
    A crop of one of the natural images that ship inside scikit-image
    (:data:`TEXTURE_IMAGES`: photographs, micrographs, textures, text),
    randomly zoomed (0.5-1.5x, anti-aliased), mirrored and transposed, raised
    to a random gamma, sometimes inverted and sometimes thresholded into a
    sparse field: the multi-scale texture that procedural scenes lack.

``density`` multiplies the number of objects; at ``density=1`` the counts
are given per 128 x 128 field (2-D) or per 32 x 128 x 128 volume (3-D) and
scale with the field size.  ``brightness=(lo, hi)`` is the range of the
per-object peak intensity.  User images can serve as ground truth via
:func:`from_image`.

Examples
--------
>>> from sharpscope.physics.specimens import make_specimen
>>> x = make_specimen("mixed", (64, 64), generator=0)
>>> x.shape, x.dtype.name, bool(x.min() >= 0 and x.max() <= 1)
((64, 64), 'float32', True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from sharpscope.errors import InputError
from sharpscope.physics.blur import fast_len
from sharpscope.physics.noise import SeedLike, as_generator

__all__ = [
    "KINDS",
    "TEXTURE_IMAGES",
    "texture",
    "filaments",
    "from_image",
    "make_specimen",
    "membranes",
    "mixed",
    "nuclei",
    "puncta",
    "render_specimen",
]

KINDS = ("filaments", "puncta", "membranes", "nuclei", "mixed", "texture")
# scikit-image sample images that ship inside its wheel (no download); RGB ones are
# converted to luminance.  Evaluation images (sdeconv, stardist) are never among them.
TEXTURE_IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page",
    "retina", "rocket", "text",
)
FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SQRT2 = math.sqrt(2.0)
_DTYPE = torch.float32


# --------------------------------------------------------------------------- helpers
def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(f"specimen shape must be 2-D or 3-D with positive sizes, got {shape}")
    return shape


def _spacing(shape: tuple[int, ...], voxel_aspect: float) -> torch.Tensor:
    """Physical size of a voxel per axis (lateral pixel = 1)."""
    if voxel_aspect <= 0:
        raise InputError(f"voxel_aspect must be positive, got {voxel_aspect}")
    sp = [1.0] * len(shape)
    if len(shape) == 3:
        sp[0] = float(voxel_aspect)
    return torch.tensor(sp, dtype=_DTYPE)


def _count(base: float, density: float, shape: tuple[int, ...]) -> int:
    if density < 0:
        raise InputError(f"density must be non-negative, got {density}")
    ref = 128.0 * 128.0 * (32.0 if len(shape) == 3 else 1.0)
    n = base * density * math.prod(shape) / ref
    return 0 if density == 0 else max(1, int(round(n)))


def _uniform(n: int, lo_hi: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    lo, hi = (float(v) for v in lo_hi)
    if hi < lo:
        raise InputError(f"range must be (low, high), got {lo_hi}")
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=_DTYPE)


def _unit_vectors(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, d, generator=g, dtype=_DTYPE)
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _box_gauss(v: torch.Tensor, p: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Integral over the pixel ``[v - 1/2, v + 1/2]`` of ``exp(-(u - p)^2 / (2 sigma^2))``."""
    a = _SQRT2 * sigma
    return (
        (math.sqrt(math.pi) / 2) * a * (torch.erf((v + 0.5 - p) / a) - torch.erf((v - 0.5 - p) / a))
    )


def _splat(
    points: torch.Tensor,
    weights: torch.Tensor,
    sigma: torch.Tensor,
    shape: tuple[int, ...],
    spacing: torch.Tensor,
) -> torch.Tensor:
    """Render Gaussian points with exact pixel-area integration.

    ``points`` are physical coordinates ``(n, d)``, ``sigma`` the physical
    Gaussian sigma per point ``(n,)``; a point of weight ``w`` contributes
    ``w * integral(exp(-r^2 / 2 sigma^2)) / voxel_volume`` to each voxel.
    """
    out = torch.zeros(math.prod(shape), dtype=_DTYPE)
    if points.shape[0] == 0:
        return out.reshape(shape)
    d = len(shape)
    pv = points / spacing  # voxel coordinates
    sv = sigma[:, None] / spacing  # (n, d) sigma in voxels
    factors = []
    indices = []
    for ax in range(d):
        # voxels whose extent comes within 3 sigma of the point
        reach = 3.0 * float(sv[:, ax].max()) + 0.5
        base = torch.floor(pv[:, ax] - reach + 0.5).long()
        off = torch.arange(int(math.ceil(2 * reach)) + 1)
        idx = base[:, None] + off[None, :]  # (n, w)
        f = _box_gauss(idx.to(_DTYPE), pv[:, ax : ax + 1], sv[:, ax : ax + 1])
        f = torch.where((idx >= 0) & (idx < shape[ax]), f, torch.zeros((), dtype=_DTYPE))
        factors.append(f)
        indices.append(idx.clamp(0, shape[ax] - 1))
    # outer products over the axes, (n, w0, w1[, w2])
    val = weights[:, None] * factors[0]
    flat = indices[0]
    for ax in range(1, d):
        val = val[..., None] * factors[ax].reshape(
            -1, *([1] * (val.ndim - 1)), factors[ax].shape[1]
        )
        flat = flat[..., None] * shape[ax] + indices[ax].reshape(
            -1, *([1] * (flat.ndim - 1)), indices[ax].shape[1]
        )
    val = val.reshape(-1)
    keep = val > 0
    out.index_add_(0, flat.reshape(-1)[keep], val[keep])
    return out.reshape(shape)


def _grid(shape: tuple[int, ...], spacing: torch.Tensor) -> list[torch.Tensor]:
    """Physical coordinates of the voxel centres, one broadcastable tensor per axis."""
    d = len(shape)
    out = []
    for ax, n in enumerate(shape):
        v = torch.arange(n, dtype=_DTYPE) * spacing[ax]
        out.append(v.reshape(*([1] * ax), n, *([1] * (d - ax - 1))))
    return out


def _smooth_field(
    shape: tuple[int, ...], corr: float, spacing: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """Smooth zero-mean, unit-std random field with correlation length ``corr`` px.

    White noise filtered by an isotropic Gaussian (in physical units) in the
    Fourier domain, on a grid padded by twice the correlation length so that
    the field does not wrap around.
    """
    sig = [corr / float(sp) for sp in spacing]  # Gaussian sigma in voxels per axis
    padded = [
        fast_len(n + min(int(math.ceil(2 * sv)), 2 * n)) for n, sv in zip(shape, sig, strict=True)
    ]
    noise = torch.randn(padded, generator=g, dtype=_DTYPE)
    spec = torch.fft.rfftn(noise)
    damp = torch.zeros((), dtype=_DTYPE)
    for ax, (n, sv) in enumerate(zip(padded, sig, strict=True)):
        f = torch.fft.rfftfreq(n) if ax == len(padded) - 1 else torch.fft.fftfreq(n)
        shp = [1] * len(padded)
        shp[ax] = -1
        damp = damp + (2 * math.pi**2 * sv * sv) * f.to(_DTYPE).reshape(shp) ** 2
    field = torch.fft.irfftn(spec * torch.exp(-damp), s=padded)
    field = field[tuple(slice(0, n) for n in shape)]
    field = field - field.mean()
    return field / field.std().clamp(min=1e-12)


def _normalised_distance(
    dist: torch.Tensor, spacing: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct approximate distance fields ``(n, *shape)`` by their gradient.

    Returns the corrected distances and the variance of the pixel integration
    along the normal, ``sum_i (n_i * spacing_i)^2 / 12``.
    """
    sp = [float(v) for v in spacing]
    dims = list(range(1, dist.ndim))
    grads = torch.gradient(dist, spacing=sp, dim=dims)
    norm = torch.sqrt(sum(gr * gr for gr in grads)).clamp(min=0.2)
    var = sum((gr / norm * s) ** 2 for gr, s in zip(grads, sp, strict=True)) / 12.0
    return dist / norm, var


def _random_rotation(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    if d == 2:
        a = 2 * math.pi * torch.rand(n, generator=g, dtype=_DTYPE)
        c, s = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=_DTYPE))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]


def _ellipsoid_distance(
    coords: list[torch.Tensor], centres: torch.Tensor, rots: torch.Tensor, axes: torch.Tensor
) -> torch.Tensor:
    """First-order signed distance (px) to ``n`` ellipse/ellipsoid surfaces, negative inside.

    ``centres`` and ``axes`` are ``(n, d)``, ``rots`` ``(n, d, d)``; returns ``(n, *shape)``.
    """
    d = len(coords)
    view = (-1,) + (1,) * d
    diff = [coords[i][None] - centres[:, i].reshape(view) for i in range(d)]
    u = [
        sum(rots[:, i, k].reshape(view) * diff[i] for i in range(d)) / axes[:, k].reshape(view)
        for k in range(d)
    ]
    q = torch.sqrt(sum(uk * uk for uk in u)).clamp(min=1e-6)
    grad = torch.sqrt(sum((uk / axes[:, k].reshape(view)) ** 2 for k, uk in enumerate(u)))
    return (q - 1.0) * q / grad.clamp(min=1e-9)


def _finish(x: torch.Tensor, background: float = 0.0) -> torch.Tensor:
    x = x.clamp(min=0) + float(background)
    m = float(x.max()) if x.numel() else 0.0
    return (x / m if m > 1.0 else x).to(_DTYPE)


# --------------------------------------------------------------------------- kinds
def filaments(
    shape: tuple[int, ...],
    generator: SeedLike = None,
    *,
    density: float = 1.0,
    brightness: tuple[float, float] = (0.4, 1.0),
    width: float = 0.7,
    persistence: tuple[float, float] = (20.0, 120.0),
    length: tuple[float, float] = (0.5, 1.5),
    axial_tilt: float = 0.3,
    voxel_aspect: float = 1.0,
    background: float = 0.0,
) -> torch.Tensor:
    """Thin smooth random curves (10 per 128 x 128 field at ``density=1``).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(Z, H, W)``.
    generator : int, numpy.random.Generator or torch.Generator, optional
        Source of randomness.
    density : float
        Multiplies the number of filaments.
    brightness : (float, float)
        Range of the peak intensity along a filament.
    width : float
        FWHM of the filament cross-section in pixels (before pixel integration).
    persistence : (float, float)
        Range of the persistence length in pixels (stiffness of the curves).
    length : (float, float)
        Range of the filament length as a fraction of the field diagonal.
    axial_tilt : float
        3-D only: factor applied to the axial component of the directions and
        their random changes, so filaments run mostly parallel to the
        coverslip as in adherent cells (1 = isotropic); curves are mirrored
        at the top and bottom faces of the volume so they stay inside it.
    voxel_aspect : float
        Axial voxel size / lateral pixel size (3-D only).
    background : float
        Constant added everywhere.

    Returns
    -------
    torch.Tensor
        float32 map of ``shape`` in ``[0, 1]``.

    Examples
    --------
    >>> from sharpscope.physics.specimens import filaments
    >>> tuple(filaments((32, 32), 0).shape)
    (32, 32)
    """
    shape = _check_shape(shape)
    g = as_generator(generator)
    sp = _spacing(shape, voxel_aspect)
    d = len(shape)
    extent = torch.tensor(shape, dtype=_DTYPE) * sp
    n = _count(10.0, density, shape)
    if n == 0:
        return _finish(torch.zeros(shape, dtype=_DTYPE), background)
    diag = float(extent.norm())
    step = 6.0  # control-point spacing in px
    lengths = _uniform(n, length, g) * diag
    n_ctrl = int(math.ceil(float(lengths.max()) / step)) + 3
    pers = _uniform(n, persistence, g)
    kappa = torch.sqrt(step / pers)[:, None]  # turning per step of a worm-like chain
    # the middle of every curve lies in the field, so each one crosses it
    start = torch.rand(n, d, generator=g, dtype=_DTYPE) * extent
    damp = torch.ones(d, dtype=_DTYPE)
    if d == 3:
        damp[0] = float(axial_tilt)
    if d == 2:
        # worm-like chain in the plane: the tangent angle is a Gaussian random walk
        angle0 = 2 * math.pi * torch.rand(n, 1, generator=g, dtype=_DTYPE)
        turns = kappa * torch.randn(n, n_ctrl - 1, generator=g, dtype=_DTYPE)
        angle = angle0 + torch.cumsum(turns, 1)
        steps = step * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        c = torch.cat([start[:, None], start[:, None] + torch.cumsum(steps, 1)], 1)
    else:
        direction = _unit_vectors(n, d, g) * damp
        noise = torch.randn(n_ctrl, n, d, generator=g, dtype=_DTYPE) * damp
        ctrl = [start]
        for i in range(1, n_ctrl):
            direction = direction + kappa * noise[i]
            direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            ctrl.append(ctrl[-1] + step * direction)
        c = torch.stack(ctrl, 1)  # (n, n_ctrl, d)
    # shift each curve so that its midpoint (half its length) is the drawn start point
    mid = ((lengths / (2 * step)).round().long() + 1).clamp(max=n_ctrl - 1)
    c = c - c[torch.arange(n), mid][:, None] + start[:, None]
    if d == 3:  # fold the axial coordinate back into the volume (mirror at its faces)
        depth = float(extent[0])
        zc = torch.remainder(c[..., 0], 2 * depth)
        c[..., 0] = torch.where(zc > depth, 2 * depth - zc, zc)
    # uniform cubic B-spline, m samples per segment (spacing ~ 0.4 px)
    m = int(math.ceil(step / 0.4))
    t = torch.arange(m, dtype=_DTYPE) / m
    basis = (
        torch.stack(
            [(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], -1
        )
        / 6.0
    )  # (m, 4)
    win = c.unfold(1, 4, 1)  # (n, n_seg, d, 4)
    pts = torch.einsum("fsdk,mk->fsmd", win, basis).reshape(n, -1, d)
    seg = (pts[:, 1:] - pts[:, :-1]).norm(dim=-1)
    ds = torch.cat([seg, seg[:, -1:]], 1)
    arc = torch.cumsum(ds, 1)
    keep = arc <= lengths[:, None]
    s = float(width) / FWHM
    peak = _uniform(n, brightness, g)
    w = (peak[:, None] * ds / (math.sqrt(2 * math.pi) * s)).expand_as(ds)
    inside = ((pts >= -4 * s) & (pts <= extent + 4 * s)).all(-1) & keep
    pts, w = pts[inside], w[inside]
    x = _splat(pts, w, torch.full((pts.shape[0],), s, dtype=_DTYPE), shape, sp)
    return _finish(x, background)


def puncta(
    shape: tuple[int, ...],
    generator: SeedLike = None,
    *,
    density: float = 1.0,
    brightness: tuple[float, float] = (0.3, 1.0),
    size: tuple[float, float] = (0.3, 1.0),
    vesicle_fraction: float = 0.3,
    vesicle_radius: tuple[float, float] = (1.5, 4.0),
    voxel_aspect: float = 1.0,
    background: float = 0.0,
) -> torch.Tensor:
    """Sub-diffraction spots and hollow vesicles (30 per 128 x 128 at ``density=1``).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(Z, H, W)``.
    generator : int, numpy.random.Generator or torch.Generator, optional
        Source of randomness.
    density : float
        Multiplies the number of objects.
    brightness : (float, float)
        Range of the peak intensity of a spot or a vesicle wall.
    size : (float, float)
        Range of the Gaussian sigma of a spot, in pixels.
    vesicle_fraction : float
        Fraction of the objects that are hollow vesicles.
    vesicle_radius : (float, float)
        Range of the vesicle radius in pixels (wall sigma 0.3 px).
    voxel_aspect : float
        Axial voxel size / lateral pixel size (3-D only).
    background : float
        Constant added everywhere.

    Returns
    -------
    torch.Tensor
        float32 map of ``shape`` in ``[0, 1]``.

    Examples
    --------
    >>> from sharpscope.physics.specimens import puncta
    >>> float(puncta((32, 32), 1).max()) <= 1.0
    True
    """
    shape = _check_shape(shape)
    g = as_generator(generator)
    sp = _spacing(shape, voxel_aspect)
    d = len(shape)
    extent = torch.tensor(shape, dtype=_DTYPE) * sp
    n = _count(30.0, density, shape)
    if n == 0:
        return _finish(torch.zeros(shape, dtype=_DTYPE), background)
    if not 0 <= vesicle_fraction <= 1:
        raise InputError(f"vesicle_fraction must be in [0, 1], got {vesicle_fraction}")
    centres = torch.rand(n, d, generator=g, dtype=_DTYPE) * extent
    peak = _uniform(n, brightness, g)
    is_ves = torch.rand(n, generator=g, dtype=_DTYPE) < vesicle_fraction
    sig = _uniform(n, size, g)
    radius = _uniform(n, vesicle_radius, g)
    # spots: a Gaussian of peak `peak` is a point of weight `peak`
    spot = ~is_ves
    x = _splat(centres[spot], peak[spot], sig[spot], shape, sp)
    wall = 0.3
    if bool(is_ves.any()):
        vc, vr, vp = centres[is_ves], radius[is_ves], peak[is_ves]
        if d == 2:
            k = int(math.ceil(2 * math.pi * float(vr.max()) / 0.3))
            a = 2 * math.pi * torch.arange(k, dtype=_DTYPE) / k
            dirs = torch.stack([torch.cos(a), torch.sin(a)], -1)
            elem = (2 * math.pi * vr / k)[:, None]  # arc length per point
            wt = vp[:, None] * elem / (math.sqrt(2 * math.pi) * wall)
        else:
            k = int(math.ceil(4 * math.pi * float(vr.max()) ** 2 / 0.16))
            i = torch.arange(k, dtype=_DTYPE) + 0.5
            z = 1 - 2 * i / k
            phi = math.pi * (3 - math.sqrt(5)) * i
            rho = torch.sqrt(1 - z * z)
            dirs = torch.stack([z, rho * torch.cos(phi), rho * torch.sin(phi)], -1)
            elem = (4 * math.pi * vr**2 / k)[:, None]  # area per point
            wt = vp[:, None] * elem / (2 * math.pi * wall**2)
        p = (vc[:, None, :] + vr[:, None, None] * dirs[None]).reshape(-1, d)
        w = wt.expand(-1, k).reshape(-1)
        x = x + _splat(p, w, torch.full((p.shape[0],), wall, dtype=_DTYPE), shape, sp)
    return _finish(x, background)


def membranes(
    shape: tuple[int, ...],
    generator: SeedLike = None,
    *,
    density: float = 1.0,
    brightness: tuple[float, float] = (0.4, 1.0),
    radius: tuple[float, float] = (20.0, 55.0),
    width: float = 0.8,
    deformation: float = 0.15,
    fill: float = 0.08,
    voxel_aspect: float = 1.0,
    background: float = 0.0,
) -> torch.Tensor:
    """Cell outlines: thin smooth closed contours/surfaces (3 per 128 x 128).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(Z, H, W)``.
    generator : int, numpy.random.Generator or torch.Generator, optional
        Source of randomness.
    density : float
        Multiplies the number of cells.
    brightness : (float, float)
        Range of the peak membrane intensity per cell.
    radius : (float, float)
        Range of the cell semi-axes in pixels.
    width : float
        FWHM of the membrane cross-section in pixels.
    deformation : float
        Amplitude of the smooth random shape deformation, relative to the radius.
    fill : float
        Cytoplasm intensity relative to the membrane peak.
    voxel_aspect : float
        Axial voxel size / lateral pixel size (3-D only).
    background : float
        Constant added everywhere.

    Returns
    -------
    torch.Tensor
        float32 map of ``shape`` in ``[0, 1]``.

    Examples
    --------
    >>> from sharpscope.physics.specimens import membranes
    >>> tuple(membranes((48, 48), 2).shape)
    (48, 48)
    """
    shape = _check_shape(shape)
    g = as_generator(generator)
    sp = _spacing(shape, voxel_aspect)
    n = _count(3.0, density, shape)
    x = torch.zeros(shape, dtype=_DTYPE)
    if n == 0:
        return _finish(x, background)
    x = _blobs(shape, sp, g, n, brightness, radius, deformation, "membrane", width, fill)
    return _finish(x, background)


def nuclei(
    shape: tuple[int, ...],
    generator: SeedLike = None,
    *,
    density: float = 1.0,
    brightness: tuple[float, float] = (0.3, 0.8),
    radius: tuple[float, float] = (15.0, 40.0),
    deformation: float = 0.08,
    texture: float = 0.35,
    nucleoli: int = 3,
    voxel_aspect: float = 1.0,
    background: float = 0.0,
) -> torch.Tensor:
    """Textured nuclei: filled smooth blobs with soft edges (2 per 128 x 128).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(Z, H, W)``.
    generator : int, numpy.random.Generator or torch.Generator, optional
        Source of randomness.
    density : float
        Multiplies the number of nuclei.
    brightness : (float, float)
        Range of the mean nuclear intensity.
    radius : (float, float)
        Range of the semi-axes in pixels.
    deformation : float
        Amplitude of the smooth shape deformation, relative to the radius.
    texture : float
        Relative amplitude of the chromatin texture (smooth random field).
    nucleoli : int
        Maximum number of bright nucleoli per nucleus.
    voxel_aspect : float
        Axial voxel size / lateral pixel size (3-D only).
    background : float
        Constant added everywhere.

    Returns
    -------
    torch.Tensor
        float32 map of ``shape`` in ``[0, 1]``.

    Examples
    --------
    >>> from sharpscope.physics.specimens import nuclei
    >>> tuple(nuclei((48, 48), 3).shape)
    (48, 48)
    """
    shape = _check_shape(shape)
    g = as_generator(generator)
    sp = _spacing(shape, voxel_aspect)
    n = _count(2.0, density, shape)
    x = torch.zeros(shape, dtype=_DTYPE)
    if n == 0:
        return _finish(x, background)
    x = _blobs(shape, sp, g, n, brightness, radius, deformation, "nucleus", texture, nucleoli)
    return _finish(x, background)


def _blobs(
    shape: tuple[int, ...],
    sp: torch.Tensor,
    g: torch.Generator,
    n: int,
    brightness: tuple[float, float],
    radius: tuple[float, float],
    deformation: float,
    kind: str,
    a: float,
    b: float,
) -> torch.Tensor:
    """Cells (``a`` = width, ``b`` = fill) or nuclei (``a`` = texture, ``b`` = nucleoli)."""
    d = len(shape)
    extent = torch.tensor(shape, dtype=_DTYPE) * sp
    centres = (torch.rand(n, d, generator=g, dtype=_DTYPE) * 1.2 - 0.1) * extent
    axes = _uniform(n * d, radius, g).reshape(n, d)
    rots = _random_rotation(n, d, g)
    peak = _uniform(n, brightness, g)
    coords = _grid(shape, sp)
    mean_r = float(sum(radius)) / 2
    bump = _smooth_field(shape, max(4.0, 0.6 * mean_r), sp, g)
    view = (-1,) + (1,) * d
    dist = _ellipsoid_distance(coords, centres, rots, axes)
    dist = dist - deformation * axes.mean(1).reshape(view) * bump[None]
    if kind == "membrane":
        s = float(a) / FWHM
        dist, var = _normalised_distance(dist, sp)
        # Gaussian approximation of the integration over the voxel along the normal
        s_eff = torch.sqrt(s * s + var)
        ring = torch.exp(-0.5 * (dist / s_eff) ** 2) * (s / s_eff)
        return (peak.reshape(view) * (ring + float(b) * torch.sigmoid(-dist))).sum(0)
    tex = _smooth_field(shape, 1.5, sp, g)
    inside = (peak.reshape(view) * torch.sigmoid(-dist)).sum(0)
    x = inside * (1.0 + float(a) * tex).clamp(min=0)
    # nucleoli: a few bright, slightly larger spots inside each nucleus
    k = int(b)
    if k > 0:
        cnt = torch.randint(0, k + 1, (n,), generator=g)
        off = torch.randn(n, k, d, generator=g, dtype=_DTYPE) * 0.3
        rot_off = torch.einsum("nij,nkj->nki", rots, off * axes[:, None, :])
        pts = centres[:, None, :] + rot_off
        sel = torch.arange(k)[None, :] < cnt[:, None]
        sig = _uniform(n * k, (1.0, 2.5), g).reshape(n, k)
        w = (peak[:, None] * 0.8).expand(n, k)
        x = x + _splat(pts[sel], w[sel], sig[sel], shape, sp)
    return x


def mixed(
    shape: tuple[int, ...],
    generator: SeedLike = None,
    *,
    density: float = 1.0,
    brightness: tuple[float, float] = (0.4, 1.0),
    voxel_aspect: float = 1.0,
    background: float = 0.0,
) -> torch.Tensor:
    """A cell-like scene: dim nuclei, membranes, filaments and puncta.

    Component densities are 0.5 (nuclei, membranes) and 0.6 (filaments,
    puncta) times ``density``; nuclei are rendered at 40 % of ``brightness``.

    Examples
    --------
    >>> from sharpscope.physics.specimens import mixed
    >>> tuple(mixed((8, 32, 32), 0, voxel_aspect=2.0).shape)
    (8, 32, 32)
    """
    shape = _check_shape(shape)
    g = as_generator(generator)
    lo, hi = brightness
    kw = {"voxel_aspect": voxel_aspect}
    x = nuclei(shape, g, density=0.5 * density, brightness=(0.4 * lo, 0.4 * hi), **kw)
    x = x + membranes(shape, g, density=0.5 * density, brightness=brightness, **kw)
    x = x + filaments(shape, g, density=0.6 * density, brightness=brightness, **kw)
    x = x + puncta(shape, g, density=0.6 * density, brightness=brightness, **kw)
    return _finish(x, background)


@functools.lru_cache(maxsize=1)
def _texture_bank() -> tuple[torch.Tensor, ...]:
    """The :data:`TEXTURE_IMAGES` as float32 tensors in [0, 1] (loaded once per process)."""
    try:
        import skimage.data as skdata
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise InputError("the 'texture' specimen needs scikit-image") from exc
    bank = []
    for name in TEXTURE_IMAGES:
        img = np.asarray(getattr(skdata, name)(), dtype=np.float64)
        if img.ndim == 3:  # RGB(A) -> luminance
            img = img[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
        lo, hi = float(img.min()), float(img.max())
        bank.append(torch.from_numpy(((img - lo) / max(hi - lo, 1e-12)).astype(np.float32)))
    return tuple(bank)


def texture(
    shape: tuple[int, ...],
    generator: SeedLike = None,
    *,
    density: float = 1.0,
    brightness: tuple[float, float] = (0.6, 1.0),
    voxel_aspect: float = 1.0,
    background: float = 0.0,
    zoom: tuple[float, float] = (0.5, 1.5),
    gamma: tuple[float, float] = (0.5, 3.0),
    invert_probability: float = 0.3,
    sparse_probability: float = 0.4,
) -> torch.Tensor:
    """A natural-image texture (see the module notes), 2-D only.

    ``density`` raises the sparsity threshold's complement: at higher density
    a thresholded field keeps more of the image.  ``zoom`` and ``gamma`` are
    log-uniform ranges; ``brightness`` the range of the peak.

    Examples
    --------
    >>> from sharpscope.physics.specimens import texture
    >>> x = texture((48, 40), 0)
    >>> tuple(x.shape), bool(x.min() >= 0 and x.max() <= 1)
    ((48, 40), True)
    """
    shape = _check_shape(shape)
    if len(shape) != 2:
        raise InputError("the 'texture' specimen is 2-D only")
    del voxel_aspect
    g = as_generator(generator)
    bank = _texture_bank()
    img = bank[int(torch.randint(len(bank), (), generator=g))]
    u = torch.rand(8, generator=g, dtype=torch.float64).tolist()

    def logu(r: tuple[float, float], v: float) -> float:
        return math.exp(math.log(r[0]) + v * (math.log(r[1]) - math.log(r[0])))

    z = logu(zoom, u[0])
    # crop a window that becomes `shape` after zooming by z (at least 4 source pixels)
    src = [max(4, min(n, int(math.ceil(s / z)))) for s, n in zip(shape, img.shape, strict=True)]
    o = [int(v * (n - s + 1)) for v, n, s in zip(u[1:3], img.shape, src, strict=True)]
    crop = img[o[0] : o[0] + src[0], o[1] : o[1] + src[1]]
    x = torch.nn.functional.interpolate(
        crop[None, None], size=shape, mode="bilinear", antialias=True, align_corners=False
    )[0, 0]
    if u[3] < 0.5:
        x = x.flip(0)
    if u[4] < 0.5:
        x = x.flip(1)
    x = x.clamp(0, 1)
    if u[5] < invert_probability:
        x = 1 - x
    x = x ** logu(gamma, u[6])
    if u[7] < sparse_probability:
        # keep only the brightest part: a sparse field of bright structures on black
        t = float(torch.quantile(x.flatten(), 1.0 - min(0.9, 0.3 * float(density))))
        x = (x - t).clamp(min=0)
    peak = float(_uniform(1, brightness, g))
    x = x / x.max().clamp(min=1e-12) * peak
    return _finish(x, background)


_RENDERERS: dict[str, Callable[..., torch.Tensor]] = {
    "filaments": filaments,
    "puncta": puncta,
    "membranes": membranes,
    "nuclei": nuclei,
    "mixed": mixed,
    "texture": texture,
}


def render_specimen(
    kind: str, shape: tuple[int, ...], generator: SeedLike = None, **params
) -> torch.Tensor:
    """Like :func:`make_specimen` but returns a float32 torch tensor.

    Examples
    --------
    >>> from sharpscope.physics.specimens import render_specimen
    >>> render_specimen("puncta", (16, 16), 0).dtype
    torch.float32
    """
    fn = _RENDERERS.get(kind)
    if fn is None:
        raise InputError(f"unknown specimen kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        return fn(shape, generator, **params)
    except TypeError as exc:  # an unknown keyword
        raise InputError(f"bad parameter for specimen {kind!r}: {exc}") from None


def make_specimen(
    kind: str, shape: tuple[int, ...], generator: SeedLike = None, **params
) -> np.ndarray:
    """Render a procedural fluorescence specimen.

    Parameters
    ----------
    kind : {'filaments', 'puncta', 'membranes', 'nuclei', 'mixed'}
        What to draw (see the module notes).
    shape : tuple of int
        ``(H, W)`` or ``(Z, H, W)``.
    generator : int, numpy.random.Generator or torch.Generator, optional
        Source of randomness; the same seed gives the same specimen.
    **params
        Keyword arguments of the kind's function (``density``, ``brightness``,
        ``voxel_aspect``, ``background``, and kind-specific ones).

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape`` with values in ``[0, 1]``.

    Examples
    --------
    >>> from sharpscope.physics.specimens import make_specimen
    >>> a = make_specimen("filaments", (64, 64), generator=1, density=2.0)
    >>> b = make_specimen("filaments", (64, 64), generator=1, density=2.0)
    >>> bool((a == b).all()), a.dtype.name
    (True, 'float32')
    """
    return render_specimen(kind, shape, generator, **params).numpy()


def from_image(
    image: np.ndarray | torch.Tensor, pmin: float = 0.0, pmax: float = 100.0
) -> np.ndarray:
    """Turn a user image into a ground-truth specimen in ``[0, 1]``.

    The image is shifted and scaled so that its ``pmin`` and ``pmax``
    percentiles map to 0 and 1, then clipped.  Use a high-quality image
    (e.g. a confocal or super-resolved one) so that it is sharper than the
    simulated blur.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor
        2-D or 3-D image.
    pmin, pmax : float
        Percentiles mapped to 0 and 1.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape, values in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from sharpscope.physics.specimens import from_image
    >>> from_image(np.array([[10, 20], [30, 50]])).tolist()
    [[0.0, 0.25], [0.5, 1.0]]
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(f"ground-truth image must be 2-D or 3-D, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError("ground-truth image contains NaN or infinite values")
    if not 0 <= pmin < pmax <= 100:
        raise InputError(f"need 0 <= pmin < pmax <= 100, got {pmin}, {pmax}")
    lo, hi = np.percentile(arr, [pmin, pmax])
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return np.clip((arr - lo) / (hi - lo), 0, 1).astype(np.float32)
