"""Image-similarity metrics for synthesis tasks: PSNR, SSIM, MS-SSIM, MAE, NMSE.

All take ``pred`` and ``target`` as torch tensors or numpy arrays, either one image ``(*spatial)``
or a batch ``(B, C, *spatial)`` (see :mod:`medgen.metrics._inputs`), and return the mean over the
batch as a Python float. ``data_range`` is explicit on purpose: PSNR and SSIM are meaningless
without a fixed, documented intensity range (e.g. 2.0 for volumes scaled to [-1, 1], or the HU
window width for CT).

A ``mask`` (bool, same spatial shape, broadcast over channels) restricts PSNR/MAE/NMSE to the
voxels inside it; SSIM computes the local SSIM map and averages it over the mask voxels whose
window lies inside the image. A sample whose mask is empty contributes nothing (NaN if all are).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics.regression import compute_ms_ssim, compute_ssim_and_cs

from medgen.metrics._inputs import batch_mean, paired, per_sample_mean

SSIM_WIN_SIZE = 11  # Wang et al. 2004 Gaussian window, sigma 1.5 (MONAI SSIMMetric default)
SSIM_SIGMA = 1.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return data_range


def mse_per_sample(pred, target, mask=None) -> torch.Tensor:
    p, t, m = paired(pred, target, mask)
    return per_sample_mean((p - t) ** 2, m)


def psnr_per_sample(pred, target, data_range: float, mask=None) -> torch.Tensor:
    """PSNR = 10·log10(data_range² / MSE) per sample (inf where MSE is 0)."""
    data_range = _check_range(data_range)
    mse = mse_per_sample(pred, target, mask)
    return 10.0 * torch.log10(data_range**2 / mse)


def psnr(pred, target, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio in dB, mean over the batch."""
    return batch_mean(psnr_per_sample(pred, target, data_range, mask))


def mae_per_sample(pred, target, mask=None) -> torch.Tensor:
    p, t, m = paired(pred, target, mask)
    return per_sample_mean((p - t).abs(), m)


def mae(pred, target, mask=None) -> float:
    """Mean absolute error (in the images' units, e.g. HU), mean over the batch."""
    return batch_mean(mae_per_sample(pred, target, mask))


def nmse_per_sample(pred, target, mask=None) -> torch.Tensor:
    """||pred - target||² / ||target||² per sample (inside the mask)."""
    p, t, m = paired(pred, target, mask)
    if m is not None:
        p, t = p * m, t * m
    err = ((p - t) ** 2).reshape(p.shape[0], -1).sum(1)
    ref = (t**2).reshape(t.shape[0], -1).sum(1)
    return err / ref


def nmse(pred, target, mask=None) -> float:
    """Normalised mean squared error ||pred - target||² / ||target||², mean over the batch."""
    return batch_mean(nmse_per_sample(pred, target, mask))


def _squeeze_singletons(p, t, m):
    """Drop spatial axes of size 1 (a 2D slice stored as (X, Y, 1)) so SSIM runs in 2D on it."""
    keep = [0, 1] + [d for d in range(2, p.ndim) if p.shape[d] > 1]
    if len(keep) == p.ndim:
        return p, t, m
    shape = [p.shape[d] for d in keep]
    return p.reshape(shape), t.reshape(shape), None if m is None else m.reshape(shape)


def _window(spatial_shape: Sequence[int], win_size: int) -> tuple[int, ...]:
    """Per-axis window: ``win_size`` or, on a thinner axis, the largest odd size that fits."""
    sizes = []
    for n in spatial_shape:
        w = min(win_size, n if n % 2 else n - 1)
        if w < 3:
            raise ValueError(f"image side {n} is too small for SSIM (needs >= 3 voxels)")
        sizes.append(w)
    return tuple(sizes)


def ssim_per_sample(
    pred, target, data_range: float, spatial_dims: int | None = None, mask=None,
    win_size: int = SSIM_WIN_SIZE,
) -> torch.Tensor:
    """Mean SSIM per sample; the same computation as ``monai.metrics.SSIMMetric`` (valid-mode
    Gaussian window, k1 = 0.01, k2 = 0.03), done through MONAI's ``compute_ssim_and_cs`` so that
    the local map is available for masking. Axes thinner than the window get a smaller odd window.
    """
    data_range = _check_range(data_range)
    p, t, m = paired(pred, target, mask, spatial_dims, dtype=torch.float32)
    if spatial_dims is None:
        p, t, m = _squeeze_singletons(p, t, m)
    dims = p.ndim - 2
    if dims not in (2, 3):
        raise ValueError(f"SSIM needs 2D or 3D images, got spatial shape {tuple(p.shape[2:])}")
    kernel = _window(p.shape[2:], win_size)
    smap, _ = compute_ssim_and_cs(
        p, t, spatial_dims=dims, kernel_size=kernel, kernel_sigma=(SSIM_SIGMA,) * dims,
        data_range=data_range,
    )
    if m is not None:
        # valid-mode convolution: map index i is the window centred on image index i + (k-1)/2
        crop = tuple(slice(None) for _ in range(2)) + tuple(
            slice((k - 1) // 2, (k - 1) // 2 + s) for k, s in zip(kernel, smap.shape[2:])
        )
        m = m[crop]
    return per_sample_mean(smap.double(), m)


def ssim(pred, target, data_range: float, spatial_dims: int | None = None, mask=None,
         win_size: int = SSIM_WIN_SIZE) -> float:
    """Structural similarity (Wang et al. 2004), 2D or 3D, mean over the batch."""
    return batch_mean(ssim_per_sample(pred, target, data_range, spatial_dims, mask, win_size))


def ms_ssim_fits(spatial_shape: Sequence[int], kernel_size: int = SSIM_WIN_SIZE,
                 scales: int = len(MS_SSIM_WEIGHTS)) -> bool:
    """Whether MONAI's MS-SSIM can run: every side // 2^(2·(scales-1)) must exceed kernel_size - 1
    (the check in ``monai.metrics.regression.compute_ms_ssim``; > 160 per side at kernel 11)."""
    div = max(1, scales - 1) ** 2
    return all(n // div > kernel_size - 1 for n in spatial_shape)


def ms_ssim(pred, target, data_range: float, spatial_dims: int | None = None,
            kernel_size: int = SSIM_WIN_SIZE) -> float | None:
    """Multi-scale SSIM (Wang et al. 2003, 5 scales) via MONAI, or ``None`` when the image is too
    small for it (see :func:`ms_ssim_fits`; kernel_size 5 makes it fit from ~80 voxels a side).
    Only report it where it fits: a silently shrunk pyramid would not be MS-SSIM."""
    data_range = _check_range(data_range)
    p, t, _ = paired(pred, target, None, spatial_dims, dtype=torch.float32)
    if not ms_ssim_fits(p.shape[2:], kernel_size):
        return None
    values = compute_ms_ssim(p, t, spatial_dims=p.ndim - 2, data_range=data_range,
                             kernel_size=kernel_size, kernel_sigma=SSIM_SIGMA, weights=MS_SSIM_WEIGHTS)
    return batch_mean(values.double().reshape(-1))


def image_metrics(pred, target, data_range: float, mask=None) -> dict[str, float]:
    """{"psnr", "ssim", "mae", "nmse"} of pred against target (mean over the batch)."""
    return {
        "psnr": psnr(pred, target, data_range, mask),
        "ssim": ssim(pred, target, data_range, mask=mask),
        "mae": mae(pred, target, mask),
        "nmse": nmse(pred, target, mask),
    }
