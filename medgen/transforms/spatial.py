"""Grids: resampling to a training spacing and back onto the input's grid, padding to a patch.

``spacing=None`` keeps the native voxel grid (no interpolation at all), and so does a volume
already at ``spacing`` (within 0.01 %). Otherwise a volume is
resampled onto a grid with the same orientation and centre, the requested voxel size and the
same field of view (rounded up to whole voxels); :func:`from_model_grid` resamples a model
output back onto the exact input grid (same shape and affine), so outputs overlay inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

# A volume whose voxel size is within this fraction of the requested spacing keeps its grid.
SPACING_RTOL = 1e-4


def _plain(volume) -> torch.Tensor:
    return volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)


def _affine(volume) -> torch.Tensor:
    aff = getattr(volume, "affine", None)
    return torch.eye(4, dtype=torch.float64) if aff is None else torch.as_tensor(aff, dtype=torch.float64)


def model_grid(affine, shape, spacing) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(affine, shape)`` of the resampled grid: same directions and centre, voxel size ``spacing``.

    ``spacing`` may have fewer entries than the volume has axes (2D data: the remaining axes keep
    their native spacing)."""
    affine = torch.as_tensor(affine, dtype=torch.float64)
    shape = np.asarray(shape)
    old = affine[:3, :3].norm(dim=0).numpy()
    new = old.copy()
    new[: len(spacing)] = np.asarray(spacing, dtype=np.float64)
    new_shape = np.maximum(1, np.ceil(shape * old / new - 1e-6)).astype(int)
    new_shape[len(spacing):] = shape[len(spacing):]
    direction = affine[:3, :3] / torch.as_tensor(old)
    centre = affine[:3, :3] @ torch.as_tensor((shape - 1) / 2.0) + affine[:3, 3]
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = direction * torch.as_tensor(new)
    out[:3, 3] = centre - out[:3, :3] @ torch.as_tensor((new_shape - 1) / 2.0)
    return out, tuple(int(s) for s in new_shape)


def resample(volume: torch.Tensor, dst_affine, dst_shape, mode: str = "bilinear") -> MetaTensor:
    """Resample a spatial volume ``(X, Y, Z)`` (MetaTensor with ``.affine``) onto a grid."""
    src = MetaTensor(_plain(volume).float()[None], affine=_affine(volume))
    out = SpatialResample(mode=mode, padding_mode="border", dtype=torch.float64)(
        src, dst_affine=torch.as_tensor(dst_affine, dtype=torch.float64), spatial_size=tuple(dst_shape))
    return MetaTensor(out.as_tensor()[0].float(), affine=torch.as_tensor(dst_affine, dtype=torch.float64))


def to_model_grid(volume, spacing=None, mode: str = "bilinear") -> MetaTensor:
    """The volume on the training grid (itself when ``spacing`` is None)."""
    native = volume if isinstance(volume, MetaTensor) else MetaTensor(_plain(volume), affine=_affine(volume))
    if spacing is None:
        return native
    old = _affine(volume)[:3, :3].norm(dim=0).numpy()[: len(spacing)]
    if np.allclose(old, spacing, rtol=SPACING_RTOL, atol=0):
        return native  # already on the training spacing: interpolating would only blur
    dst_affine, dst_shape = model_grid(_affine(volume), volume.shape, spacing)
    return resample(volume, dst_affine, dst_shape, mode)


def from_model_grid(output, model_affine, reference, mode: str = "bilinear") -> MetaTensor:
    """A model-grid output ``(X', Y', Z')`` back onto ``reference``'s grid, carrying its meta."""
    ref_affine = _affine(reference)
    shape = tuple(reference.shape)
    out = _plain(output).float()
    same = tuple(out.shape) == shape and torch.allclose(torch.as_tensor(model_affine, dtype=torch.float64), ref_affine, atol=1e-6)
    if not same:
        out = resample(MetaTensor(out, affine=torch.as_tensor(model_affine, dtype=torch.float64)), ref_affine, shape, mode)
        out = out.as_tensor()
    meta = dict(getattr(reference, "meta", {}) or {})
    meta.pop("affine", None)
    return MetaTensor(out.float(), affine=ref_affine.clone(), meta=meta)


def pad_amounts(shape, minimum) -> list[tuple[int, int]]:
    """Per-axis ``(before, after)`` padding that makes ``shape`` at least ``minimum`` (centred)."""
    pads = []
    for s, m in zip(shape, minimum):
        extra = max(0, int(m) - int(s))
        pads.append((extra // 2, extra - extra // 2))
    return pads


def pad_to(tensor: torch.Tensor, pads, value: float = -1.0) -> torch.Tensor:
    """Pad the trailing spatial axes of ``tensor`` (any leading axes) by ``pads``."""
    if not any(b or a for b, a in pads):
        return tensor
    flat = []
    for before, after in reversed(pads):
        flat += [before, after]
    return torch.nn.functional.pad(tensor, flat, value=value)


def unpad(tensor: torch.Tensor, pads) -> torch.Tensor:
    """Inverse of :func:`pad_to` on the trailing spatial axes."""
    n = len(pads)
    index = [slice(None)] * (tensor.ndim - n)
    for (before, after), size in zip(pads, tensor.shape[-n:]):
        index.append(slice(before, size - after))
    return tensor[tuple(index)]


def window_slices(shape, roi, overlap: float) -> list[tuple[slice, ...]]:
    """The windows MONAI's sliding-window inference visits over ``shape`` (sides >= ``roi``): steps
    of ``int(roi * (1 - overlap))``, the last window flush with the far edge."""
    from monai.data.utils import dense_patch_slices

    interval = [r if r == s else max(1, int(r * (1 - overlap))) for s, r in zip(shape, roi)]
    return [tuple(sl) for sl in dense_patch_slices([int(s) for s in shape], [int(r) for r in roi], interval)]


def window_count(shape, roi, overlap: float) -> int:
    """How many windows sliding-window inference visits over ``shape`` (a volume smaller than the
    ROI is padded up to it)."""
    return len(window_slices([max(int(s), int(r)) for s, r in zip(shape, roi)], roi, overlap))


def position_maps(region: torch.Tensor) -> torch.Tensor:
    """Coordinate maps ``(D, *sp)`` of a region ``(*sp)`` (bool): each axis runs from -1 to 1 across
    the region's bounding box (beyond it, on), so a position means the same place in heads of
    any size, placement and field of view (the brain mask's box, else the foreground's)."""
    region = torch.as_tensor(region).bool()
    shape = tuple(region.shape)
    nz = region.nonzero() if bool(region.any()) else torch.tensor([[0] * len(shape), [s - 1 for s in shape]])
    lo, hi = nz.min(0).values.float(), nz.max(0).values.float()
    axes = []
    for k, n in enumerate(shape):
        t = (torch.arange(n, dtype=torch.float32) - lo[k]) / max(float(hi[k] - lo[k]), 1.0) * 2.0 - 1.0
        view = [1] * len(shape)
        view[k] = n
        axes.append(t.view(view).expand(shape))
    return torch.stack(axes)
