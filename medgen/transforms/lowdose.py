"""Simulate a low-dose PET scan from a full-dose one by Poisson thinning of counts.

A PET image in activity units (e.g. kBq/ml) is ``counts / s`` for some sensitivity ``s`` (counts
per unit activity per voxel). Keeping each detected count with probability ``dose_fraction``
(binomial thinning) turns Poisson(λ) counts into Poisson(dose_fraction · λ) counts: exactly the
statistics of a scan with a ``dose_fraction`` of the injected dose or acquisition time. The
thinned counts are divided by ``s · dose_fraction``, so the low-dose image is in the same units
with the same mean, only noisier (variance grows by ``1 / dose_fraction``).

``s`` comes from ``counts``, the expected total counts of the full-dose scan over the whole
volume: ``s = counts / sum(volume)``. When ``counts`` is not given it is estimated from the
image's own noise (Poisson: local variance = local mean / s): ``s`` is the median of
``mean / variance`` over 3³ neighbourhoods inside the body mask. Reconstructed images are
smoothed, which lowers the variance (overestimates the counts, so the simulated low dose is a
little too clean) while anatomical edges raise it; the median over the body keeps both small.
A noise-free input has no count level: pass ``counts``.

The added noise is independent per voxel (reconstruction would correlate it); smooth the result
with the scanner PSF if that matters for your study.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from medgen.transforms.masks import foreground_mask


def estimate_sensitivity(volume: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Counts per unit activity per voxel, from local mean/variance under a Poisson model."""
    arr = np.clip(np.asarray(volume, np.float64), 0, None)
    if mask is None:
        mask = foreground_mask(arr)
    mean = ndimage.uniform_filter(arr, 3, mode="nearest")
    var = ndimage.uniform_filter(arr**2, 3, mode="nearest") - mean**2
    ok = mask & (mean > 0)
    if ok.sum() < 10:
        raise ValueError("too few positive voxels to estimate the count level: pass counts=")
    flat = var[ok] <= 1e-10 * max(float(arr.max()), 1e-12) ** 2
    ratio = np.where(flat, np.inf, mean[ok] / np.where(flat, 1.0, var[ok]))
    sens = float(np.median(ratio))  # mostly flat (noise-free) regions give an infinite median
    if not np.isfinite(sens):
        raise ValueError("cannot estimate the count level of a noise-free volume: pass counts=")
    return sens


def simulate_low_dose(volume, dose_fraction: float = 0.25, counts: float | None = None, seed: int = 0):
    """A low-dose version of a full-dose PET ``volume`` in the same units (same type as input:
    numpy array, tensor, or MetaTensor with its metadata kept).

    Args:
        volume: full-dose activity image (negative values are treated as 0).
        dose_fraction: fraction of the dose kept, in (0, 1].
        counts: expected total counts of the full-dose scan; estimated from the image noise when None.
        seed: random seed (deterministic output for a seed).
    """
    if not 0 < dose_fraction <= 1:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    act = np.clip(arr.astype(np.float64), 0, None)
    total = float(act.sum())
    if total <= 0:
        raise ValueError("volume has no positive activity")
    if counts is not None:
        sens = float(counts) / total
    else:
        sens = estimate_sensitivity(act)
    rng = np.random.default_rng(seed)
    expected = act * sens
    # Integer counts with the image's mean (stochastic rounding keeps the mean exact).
    n = np.floor(expected)
    n += rng.random(n.shape) < (expected - n)
    low = rng.binomial(n.astype(np.int64), dose_fraction) / (sens * dose_fraction)
    low = low.astype(np.float32)
    if isinstance(volume, torch.Tensor):
        out = volume.detach().clone().float()
        out.copy_(torch.from_numpy(low))
        return out
    return low
