"""Body/brain foreground masks."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def foreground_mask(volume, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the body (or, in PET, the high-uptake organ) of a volume.

    Otsu's threshold (or ``threshold``), then a morphological closing (2 voxels), hole filling
    (slice-wise too, so an open skull base still fills) and the largest connected component.
    Works on 3D volumes and on 2D images (singleton axes are ignored); returns the input's shape.
    An empty/constant volume gives an all-True mask (no foreground can be told apart).
    """
    from skimage.filters import threshold_otsu

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
        threshold = float(threshold_otsu(arr))
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
