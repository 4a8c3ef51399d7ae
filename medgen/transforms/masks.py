"""Body/brain foreground masks."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from medgen.errors import InputError


def require_voxels(mask, path, what: str):
    """``mask`` unchanged when it holds at least one voxel; else a one-line InputError naming
    ``path`` (the mask's file). Why: a given mask (``data.mask_key``, e.g. brain_mask) is where a
    scan is scored, calibrated and standardised; an empty one has no voxel to take any of that
    from, and no fallback (the body foreground, the whole volume) would be what was asked for.
    ``what`` says whose mask it is, e.g. ``"subject 'sub-001': 'brain_mask'"``."""
    arr = mask.detach() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if not bool(arr.any()):
        raise InputError(path, f"{what} is empty (no voxel inside it on the model grid)")
    return mask


# Otsu's class above the threshold holding less than this share of the voxels is a hot spot, not
# the body (whole-body PET: the bladder holds ~0.1 % of the field of view, at 10-50x the tissue).
HOT_SPOT_SHARE = 0.02


def body_threshold(arr: np.ndarray) -> float:
    """Otsu's threshold, unless it only splits a few hot voxels from the rest: then Otsu's
    threshold of the values below it (up to three times), which splits the body from the air.

    Why: Otsu maximises the between-class variance, and a bladder at 30x the tissue wins that
    against the body/air split. The mask would be the bladder, and PET's window (2 x p99.5 inside
    the mask) would squeeze all tissue into the bottom few percent of the model's range.
    """
    from skimage.filters import threshold_otsu

    # Otsu reads only the histogram: a flat array gives the same threshold, and skimage does not
    # take a volume of 3 or 4 slices for an RGB image (it warned from every such CT series).
    arr = np.asarray(arr).ravel()
    t = float(threshold_otsu(arr))
    for _ in range(3):
        if (arr > t).mean() >= HOT_SPOT_SHARE:
            break
        rest = arr[arr <= t]
        if rest.size == 0 or float(rest.max()) == float(rest.min()):
            break
        t = float(threshold_otsu(rest))
    return t


def foreground_mask(volume, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the body (or, in PET, the high-uptake organ) of a volume.

    :func:`body_threshold` (or ``threshold``), then a morphological closing (2 voxels), hole filling
    (slice-wise too, so an open skull base still fills) and the largest connected component.
    Works on 3D volumes and on 2D images (singleton axes are ignored); returns the input's shape.
    An empty/constant volume gives an all-True mask (no foreground can be told apart).
    """
    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    shape = arr.shape
    arr = np.squeeze(arr).astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.ones(shape, bool)
    arr = np.where(finite, arr, np.nanmin(np.where(finite, arr, np.inf)))
    if threshold is None:
        if float(arr.max()) == float(arr.min()):
            return np.ones(shape, bool)
        threshold = body_threshold(arr)
    mask = arr > threshold
    if not mask.any():
        return np.ones(shape, bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    mask = ndimage.binary_closing(mask, structure, iterations=2, border_value=0) | mask
    mask = ndimage.binary_fill_holes(mask)
    if mask.ndim == 3:  # fill per axial slice as well (holes open at the top/bottom of the FOV)
        for k in range(mask.shape[2]):
            mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return mask.reshape(shape)


def foreground_box(volume, margin) -> tuple[slice, ...] | None:
    """The bounding box of :func:`foreground_mask` grown by ``margin`` voxels per axis (clipped
    to the volume), as slices over the last ``len(margin)`` axes; None when that is the whole
    volume. ``volume``: ``(*spatial)`` or ``(B, C, *spatial)`` (the union over items and channels).
    """
    arr = volume.detach().float().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume, np.float32)
    dims = len(margin)
    shape = arr.shape[arr.ndim - dims:]
    # The mask of every `step`-th voxel: the box only needs to be right to within a margin, and
    # a whole-body field of view's mask would take seconds at full resolution.
    step = max(1, min(int(m) for m in margin) // 8)
    items = arr.reshape((-1,) + shape)[(slice(None),) + (slice(None, None, step),) * dims]
    mask = np.zeros(items.shape[1:], bool)
    for item in items:
        mask |= foreground_mask(item)
    if not mask.any():
        return None
    box = []
    for axis, m in enumerate(margin):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(dims) if a != axis)))
        first, last = int(hit[0]) * step - (step - 1), int(hit[-1]) * step + step - 1  # unsampled neighbours
        box.append(slice(max(0, first - int(m)), min(shape[axis], last + 1 + int(m))))
    if all(b.start == 0 and b.stop == n for b, n in zip(box, shape)):
        return None
    return tuple(box)
