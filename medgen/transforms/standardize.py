"""Histogram standardisation of MR intensities across scanners (Nyúl & Udupa, MRM 1999; Nyúl,
Udupa & Zhang, IEEE TMI 2000).

MR has no absolute units: the same tissue comes out at different values, and in different
ratios to the other tissues, on different scanners and protocols. A per-scan linear window
(:mod:`medgen.transforms.intensity`) fixes the scale but not the ratios, so an anomaly model
trained on one scanner scores a normal scan of another as unusual. Nyúl–Udupa learns a standard
histogram from the training scans and maps each scan onto it:

* the *landmarks* of a scan are percentiles of its intensities inside a region (the brain mask,
  else the foreground): :data:`LANDMARK_PERCENTILES` (the 1st and 99th and the deciles);
* the *standard* is the mean of the training scans' landmarks (:func:`fit_standard`);
* a scan is mapped by the piecewise-linear function taking its landmarks onto the standard,
  extended beyond the outer landmarks with the outer segments' slopes
  (:func:`piecewise_linear`), so values above the 99th percentile (a bright lesion) keep their
  contrast instead of being flattened.

Here the map runs in model space, after the linear window, and travels in the volume's intensity
params (``params["standard"] = {"from": its landmarks, "to": the standard}``), so
:func:`medgen.transforms.intensity.invert_intensity` undoes it with the rest.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

LANDMARK_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)
_MIN_GAP = 1e-4  # landmarks closer than this (flat histograms) are spread, keeping the map invertible


def landmarks(volume, region=None, percentiles: Sequence[float] = LANDMARK_PERCENTILES) -> list[float]:
    """The percentiles of ``volume``'s values inside ``region`` (bool, same shape; default all
    finite values), strictly increasing."""
    v = torch.as_tensor(volume).reshape(-1)
    if region is not None:
        v = v[torch.as_tensor(region).reshape(-1).bool()]
    v = v[torch.isfinite(v)].double()
    if v.numel() == 0:
        raise ValueError("no voxels inside the region to take intensity landmarks from")
    if v.numel() > 2_000_000:  # a regular subsample is enough for percentiles of a 1 mm head
        v = v[:: v.numel() // 1_000_000]
    marks = np.percentile(v.numpy(), percentiles)
    return _increasing(marks)


def _increasing(marks) -> list[float]:
    out = [float(marks[0])]
    for m in marks[1:]:
        out.append(max(float(m), out[-1] + _MIN_GAP))
    return out


def fit_standard(scan_landmarks: Sequence[Sequence[float]]) -> list[float]:
    """The standard landmarks: the mean of the training scans' (each already in model space)."""
    arr = np.asarray(scan_landmarks, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError("fit_standard needs the landmarks of at least one scan")
    return _increasing(arr.mean(0))


def piecewise_linear(x, xp: Sequence[float], fp: Sequence[float]):
    """The piecewise-linear function through ``(xp, fp)`` (both increasing) at ``x`` (tensor or
    array, same type out), extended linearly beyond both ends with the end segments' slopes."""
    is_tensor = isinstance(x, torch.Tensor)
    t = x if is_tensor else torch.as_tensor(np.asarray(x))
    xp_t = torch.as_tensor(list(xp), dtype=torch.float64, device=t.device)
    fp_t = torch.as_tensor(list(fp), dtype=torch.float64, device=t.device)
    if xp_t.numel() < 2 or xp_t.numel() != fp_t.numel():
        raise ValueError("piecewise_linear needs at least two (x, f) points of equal count")
    flat = t.double()
    # segment index: 0 for x below xp[1] (the first segment extends to -inf), n-2 above xp[-2]
    seg = (torch.bucketize(flat, xp_t[1:-1], right=True)).clamp(0, xp_t.numel() - 2)
    x0, x1, f0, f1 = xp_t[seg], xp_t[seg + 1], fp_t[seg], fp_t[seg + 1]
    out = f0 + (flat - x0) * (f1 - f0) / (x1 - x0)
    out = out.to(t.dtype if t.is_floating_point() else torch.float32)
    return out if is_tensor else out.numpy()


def apply_standard(x, standard: dict):
    """``x`` (model space, after the linear window) onto the standard histogram."""
    return piecewise_linear(x, standard["from"], standard["to"])


def invert_standard(y, standard: dict):
    """The inverse of :func:`apply_standard` (the map is strictly increasing)."""
    return piecewise_linear(y, standard["to"], standard["from"])
