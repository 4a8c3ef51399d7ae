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

Reconstructed images are smoothed by the scanner PSF/post-filter, so their noise is spatially
correlated. Without ``psf_fwhm_mm`` the added noise is independent per voxel. With
``psf_fwhm_mm`` (Gaussian FWHM in mm; voxel size from the MetaTensor's affine or ``spacing``)
the counts are treated as the unsmoothed image and the added noise is smoothed by the PSF, like
a real low-dose reconstruction: ``low = full + G * (thinned - full counts) / s``; the count
estimate is then corrected for the variance the smoothing removed (``sum(g**2)``). Either
estimate is rough (within a factor of ~3 on the phantoms): pass ``counts`` when it is known.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from medgen.transforms.masks import foreground_mask


def _psf_sigma_vox(fwhm_mm: float, spacing) -> np.ndarray:
    return fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / np.asarray(spacing, np.float64)


def _psf_energy(sigma_vox: np.ndarray) -> float:
    """sum(g**2) of the normalised Gaussian kernel: the fraction of white-noise variance it keeps."""
    radius = [int(np.ceil(4 * s)) + 1 for s in sigma_vox]
    impulse = np.zeros([2 * r + 1 for r in radius])
    impulse[tuple(radius)] = 1.0
    g = ndimage.gaussian_filter(impulse, sigma_vox)
    return float((g**2).sum())


def estimate_sensitivity(volume: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Counts per unit activity per voxel, from local mean/variance under a Poisson model
    (the image's own voxels: no correction for smoothing)."""
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


def simulate_low_dose(volume, dose_fraction: float = 0.25, counts: float | None = None, seed: int = 0,
                      psf_fwhm_mm: float | None = None, spacing=None):
    """A low-dose version of a full-dose PET ``volume`` in the same units (same type as input:
    numpy array, tensor, or MetaTensor with its metadata kept).

    Args:
        volume: full-dose activity image (negative values are treated as 0).
        dose_fraction: fraction of the dose kept, in (0, 1].
        counts: expected total counts of the full-dose scan; estimated from the image noise when None.
        seed: random seed (deterministic output for a seed).
        psf_fwhm_mm: smooth the added noise with this Gaussian PSF (see the module notes).
        spacing: voxel size in mm for ``psf_fwhm_mm`` (default: from ``volume.affine``, else 1 mm).
    """
    if not 0 < dose_fraction <= 1:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    act = np.clip(arr.astype(np.float64), 0, None)
    total = float(act.sum())
    if total <= 0:
        raise ValueError("volume has no positive activity")
    sigma = None
    if psf_fwhm_mm:
        if spacing is None:
            affine = getattr(volume, "affine", None)
            spacing = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0) if affine is not None else 1.0
        spacing = np.broadcast_to(np.asarray(spacing, np.float64), (act.ndim,))
        sigma = _psf_sigma_vox(psf_fwhm_mm, spacing)
    if counts is not None:
        sens = float(counts) / total
    else:
        sens = estimate_sensitivity(act)
        if sigma is not None:
            sens *= _psf_energy(sigma)  # the smoothed image looks less noisy than its counts
    rng = np.random.default_rng(seed)
    expected = act * sens
    # Integer counts with the image's mean (stochastic rounding keeps the mean exact).
    n = np.floor(expected)
    n += rng.random(n.shape) < (expected - n)
    extra = rng.binomial(n.astype(np.int64), dose_fraction) / (sens * dose_fraction) - n / sens
    if sigma is not None:
        extra = ndimage.gaussian_filter(extra, sigma, mode="nearest")
    low = (act + extra).astype(np.float32)
    if isinstance(volume, torch.Tensor):
        out = volume.detach().clone().float()
        out.copy_(torch.from_numpy(low))
        return out
    return low
