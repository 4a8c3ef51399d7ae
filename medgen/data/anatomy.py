"""Procedural head anatomy for the phantoms: a smoothly, randomly deformed head per subject.

The head is built in world millimetres (RAS, origin at the centre of the field of view) from
nested ellipsoids (scalp, skull, subarachnoid CSF, brain) plus lateral ventricles, deep grey
nuclei and a folded cortex. Every subject gets its own global affine (scale ±8 %, rotation ±6°)
and a smooth random displacement field (a few mm), so no two heads are alike. Boundaries are
soft (a logistic edge about one voxel wide), so the tissue maps are partial-volume fractions
that sum to one in every voxel, not blocky labels.

Grid: ``size`` voxels per side over a fixed field of view of :data:`FOV_MM` mm, i.e. isotropic
spacing ``FOV_MM / size`` (64 -> 3.44 mm, 128 -> 1.72 mm, 220 -> 1 mm), so the head is
head-sized (about 140 x 180 x 160 mm) at any size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FOV_MM = 220.0
TISSUES = ("air", "scalp", "skull", "csf", "gm", "wm")
# Segmentation labels used by the domain-adaptation data: brain tissue classes only.
SEG_CLASSES = {"background": 0, "csf": 1, "gm": 2, "wm": 3}


def grid_affine(size: int, fov_mm: float = FOV_MM) -> np.ndarray:
    """Voxel index -> RAS mm for the phantom grid (isotropic, axis-aligned, centred)."""
    spacing = fov_mm / size
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(size - 1) / 2.0 * spacing
    return affine


def smooth_noise(rng: np.random.Generator, shape, scale_vox: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ~``scale_vox`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(scale_vox, 0.5), mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def upsample_smooth(coarse: np.ndarray, shape) -> np.ndarray:
    """A smooth field of ``shape`` from a coarse lattice: cubic spline to ~1/4 resolution, then
    linear (a full-resolution cubic zoom costs 10x more for no visible difference)."""
    shape = np.asarray(shape)
    mid = np.maximum(np.minimum(shape, np.maximum(coarse.shape, shape // 4)), 2)
    field = ndimage.zoom(coarse, mid / np.asarray(coarse.shape), order=3, mode="nearest")
    field = ndimage.zoom(field, shape / np.asarray(field.shape), order=1, mode="nearest")
    return field[: shape[0], : shape[1], : shape[2]]


def _coarse_field(rng: np.random.Generator, size: int, nodes: int = 5) -> np.ndarray:
    """Smooth unit-scale field: random values on a coarse lattice, upsampled."""
    return upsample_smooth(rng.standard_normal((nodes, nodes, nodes)), (size,) * 3)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _soft_inside(signed_mm: np.ndarray, spacing: float) -> np.ndarray:
    """Partial-volume fraction of a voxel inside a surface, from a signed distance (mm, <0 inside)."""
    # A logistic edge with scale spacing/3.3 rises from 5 % to 95 % over ~1.8 voxels.
    return 1.0 / (1.0 + np.exp(np.clip(signed_mm / (spacing / 3.3), -60, 60)))


def _ellipsoid_distance(x, y, z, center, radii) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid: (normalised radius - 1) x mean radius."""
    r = np.sqrt(((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((z - center[2]) / radii[2]) ** 2)
    return (r - 1.0) * float(np.mean(radii))


def make_anatomy(seed: int, size: int = 64, lesions: int = 0, fov_mm: float = FOV_MM) -> dict[str, np.ndarray]:
    """A random head: tissue fractions, labels and (optionally) lesions, deterministic for ``seed``.

    Returns a dict of float32 arrays of shape ``(size,)*3`` (voxel order RAS):
    ``air, scalp, skull, csf, gm, wm`` (fractions summing to 1), ``deep_gm`` (part of ``gm`` in
    basal ganglia/thalamus), ``head`` (fraction inside the scalp), ``brain`` (gm+wm fraction),
    ``labels`` (argmax over :data:`TISSUES`, uint8), ``lesion`` (lesion fraction, zeros when
    ``lesions=0``), ``lesion_pet`` (per-voxel PET gain of the lesion: <1 hypo-, >1
    hyper-metabolic), ``texture`` (unit smooth random field for tissue heterogeneity) and
    ``affine`` (4x4 voxel -> RAS mm).
    """
    rng = np.random.default_rng(seed)
    spacing = fov_mm / size
    affine = grid_affine(size, fov_mm)
    idx = np.arange(size, dtype=np.float64) * spacing + affine[0, 3]
    wx, wy, wz = np.meshgrid(idx, idx, idx, indexing="ij")

    # Subject pose/shape: a global affine plus a smooth displacement field (4 mm amplitude).
    scale = rng.uniform(0.92, 1.08, 3)
    rot = _rotation(rng, 6.0)
    shift = rng.uniform(-4.0, 4.0, 3)
    disp = [4.0 * _coarse_field(rng, size) for _ in range(3)]
    pts = np.stack([wx + disp[0] - shift[0], wy + disp[1] - shift[1], wz + disp[2] - shift[2]])
    pts = np.einsum("ij,j...->i...", np.linalg.inv(rot) / scale[:, None], pts)
    x, y, z = pts

    head_r = np.array([70.0, 90.0, 80.0]) * rng.uniform(0.96, 1.04, 3)
    scalp_mm, skull_mm, csf_mm = rng.uniform(4.0, 7.0), rng.uniform(5.0, 8.0), rng.uniform(2.0, 4.0)
    head_c = np.array([0.0, 0.0, 0.0])
    # The folds: sulci deepen the brain surface, gyri push white matter into the cortex.
    folds = smooth_noise(rng, (size,) * 3, scale_vox=6.0 / spacing)
    d_head = _ellipsoid_distance(x, y, z, head_c, head_r)
    d_skull = _ellipsoid_distance(x, y, z, head_c, head_r - scalp_mm)
    d_icv = _ellipsoid_distance(x, y, z, head_c, head_r - scalp_mm - skull_mm)
    brain_r = head_r - scalp_mm - skull_mm - csf_mm
    d_brain = _ellipsoid_distance(x, y, z, head_c, brain_r) + 2.0 * np.maximum(folds, 0)
    cortex_mm = rng.uniform(6.0, 8.0)
    d_wm = _ellipsoid_distance(x, y, z, head_c, brain_r - cortex_mm) - 4.0 * folds

    p_head = _soft_inside(d_head, spacing)
    p_skull_out = _soft_inside(d_skull, spacing)
    p_icv = _soft_inside(d_icv, spacing)
    p_brain = _soft_inside(d_brain, spacing) * p_icv
    p_wm_in = _soft_inside(d_wm, spacing)

    # Lateral ventricles (size varies between subjects, like atrophy) and deep grey nuclei.
    vent_scale = rng.uniform(0.7, 1.4)
    p_vent = np.zeros_like(x)
    p_deep = np.zeros_like(x)
    for side in (-1.0, 1.0):
        vc = np.array([side * 8.0, 2.0, 14.0])
        vr = np.array([5.0, 24.0, 8.0]) * np.array([vent_scale, 1.0, np.sqrt(vent_scale)])
        p_vent = np.maximum(p_vent, _soft_inside(_ellipsoid_distance(x, y, z, vc, vr), spacing))
        tc = np.array([side * 12.0, -8.0, 2.0])  # thalamus
        p_deep = np.maximum(p_deep, _soft_inside(_ellipsoid_distance(x, y, z, tc, np.array([8.0, 11.0, 8.0])), spacing))
        cc = np.array([side * 20.0, 10.0, 4.0])  # putamen/caudate block
        p_deep = np.maximum(p_deep, _soft_inside(_ellipsoid_distance(x, y, z, cc, np.array([6.0, 13.0, 9.0])), spacing))
    p_vent *= p_brain
    p_deep = p_deep * (1 - p_vent) * p_brain

    air = 1.0 - p_head
    scalp = p_head - p_skull_out
    skull = p_skull_out - p_icv
    brain_tissue = p_brain - p_vent
    wm = brain_tissue * p_wm_in * (1 - p_deep / np.maximum(brain_tissue, 1e-6))
    wm = np.clip(wm, 0, None)
    gm = brain_tissue - wm
    csf = p_icv - p_brain + p_vent

    texture = smooth_noise(rng, (size,) * 3, scale_vox=max(1.0, 4.0 / spacing))
    maps = {"air": air, "scalp": scalp, "skull": skull, "csf": csf, "gm": gm, "wm": wm}
    out = _finish({k: np.clip(v, 0, 1) for k, v in maps.items()}, np.zeros_like(x), np.ones_like(x))
    out["deep_gm"] = np.minimum(p_deep, out["gm"]).astype(np.float32)
    out["head"] = p_head.astype(np.float32)
    out["texture"] = texture.astype(np.float32)
    out["affine"] = affine
    if lesions > 0:
        out = add_lesions(out, np.random.default_rng(np.random.SeedSequence([seed, 4242])), lesions)
    return out


def _finish(maps: dict, lesion: np.ndarray, lesion_pet: np.ndarray) -> dict:
    stack = np.stack([maps[t] for t in TISSUES] + [lesion]).astype(np.float64)
    stack /= stack.sum(0, keepdims=True)  # exact partition of unity after clipping
    out = {t: stack[i].astype(np.float32) for i, t in enumerate(TISSUES)}
    out["lesion"] = stack[-1].astype(np.float32)
    out["brain"] = (out["gm"] + out["wm"] + out["lesion"]).astype(np.float32)
    out["labels"] = np.argmax(stack[: len(TISSUES)], axis=0).astype(np.uint8)
    out["lesion_pet"] = lesion_pet.astype(np.float32)
    return out


def add_lesions(anatomy: dict, rng: np.random.Generator, n: int) -> dict:
    """The same head with ``n`` lesions (a new dict; see :func:`make_anatomy` for the keys).

    Lesions are soft irregular blobs (radius 6-14 mm) centred in brain tissue; they replace the
    grey/white matter and CSF they sit in (partial volume kept), and each is randomly hypo-
    (PET gain 0.3-0.5) or hyper-metabolic (gain 1.8-2.6).
    """
    size = anatomy["gm"].shape[0]
    affine = anatomy["affine"]
    spacing = float(abs(affine[0, 0]))
    idx = np.arange(size, dtype=np.float64) * spacing + affine[0, 3]
    world = np.meshgrid(idx, idx, idx, indexing="ij")
    brain = anatomy["gm"] + anatomy["wm"]
    lesion, gain = _make_lesions(rng, world, brain, spacing, n)
    lesion = np.maximum(lesion, anatomy["lesion"])
    keep = 1.0 - lesion
    maps = {t: anatomy[t] * (keep if t in ("gm", "wm", "csf") else 1.0) for t in TISSUES}
    out = dict(anatomy)
    out.update(_finish(maps, lesion, np.where(gain != 1.0, gain, anatomy["lesion_pet"])))
    out["deep_gm"] = np.minimum(anatomy["deep_gm"], out["gm"])
    return out


def _make_lesions(rng, world, brain, spacing, n):
    """``n`` soft blobs (radius 6-14 mm, irregular) centred in brain tissue; each is randomly
    hypo- (gain 0.3-0.5) or hyper-metabolic (gain 1.8-2.6) for PET."""
    wx, wy, wz = world
    size = brain.shape[0]
    lesion = np.zeros_like(wx)
    gain = np.ones_like(wx)
    candidates = np.argwhere(ndimage.binary_erosion(brain > 0.9, iterations=max(1, int(round(6.0 / spacing)))))
    if len(candidates) == 0:
        candidates = np.argwhere(brain > 0.5)
    for _ in range(n):
        c = candidates[rng.integers(len(candidates))] * spacing - (size - 1) / 2.0 * spacing
        radii = rng.uniform(6.0, 14.0) * rng.uniform(0.75, 1.25, 3)
        d = _ellipsoid_distance(wx, wy, wz, c, radii)
        d += 0.25 * float(np.mean(radii)) * smooth_noise(rng, wx.shape, scale_vox=3.0 / spacing + 1)
        blob = _soft_inside(d, spacing) * np.clip(brain / 0.5, 0, 1)
        g = rng.uniform(0.3, 0.5) if rng.random() < 0.5 else rng.uniform(1.8, 2.6)
        gain = np.where(blob > lesion, g, gain)
        lesion = np.maximum(lesion, blob)
    return lesion, gain
