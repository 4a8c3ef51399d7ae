"""Anomaly overlays: a heat map alpha-blended over the grey image, optional threshold contour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from medgen.viz._figure import PLANES, new_figure, plane, save_png, to_image, value_limits

MAX_ALPHA = 0.7  # the strongest anomaly still lets the anatomy show through


def save_overlay(path, image, heatmap, threshold: float | None = None, title: str | None = None,
                 cmap: str = "inferno", value_range=None) -> Path:
    """PNG of ``heatmap`` (e.g. |x − G(z)|) over ``image`` (same shape, RAS (X, Y, Z) or 2D).

    3D: axial, coronal and sagittal planes through the voxel where the heat map peaks (a lesion is
    rarely on the mid-planes); 2D: one panel. The heat map's colour and opacity both grow with its
    value (0 → transparent), so low residuals leave the anatomy visible; ``threshold`` (e.g. the
    calibrated anomaly threshold) is drawn as a cyan contour; the colour scale spans 0 to the
    larger of the map's peak and twice the threshold, so the colours compare across scans.
    """
    img, spacing = to_image(image)
    heat, _ = to_image(heatmap)
    if img.shape != heat.shape:
        raise ValueError(f"image {img.shape} and heatmap {heat.shape} differ in shape")
    heat = np.nan_to_num(heat, nan=0.0)
    vmin, vmax = value_limits([img], value_range)
    hmax = float(heat.max())
    if threshold is not None and threshold > 0:
        hmax = max(hmax, 2.0 * float(threshold))
    norm = Normalize(vmin=0.0, vmax=hmax if hmax > 0 else 1.0)
    colormap = colormaps[cmap]

    if img.ndim == 3:
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        panels = [(name, {"axial": peak[2], "coronal": peak[1], "sagittal": peak[0]}[name]) for name in PLANES]
    else:
        panels = [("image", None)]
    fig = new_figure(1, len(panels))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, index) in zip(axes, panels):
        grey, aspect = plane(img, spacing, "axial" if name == "image" else name, index)
        hot, _ = plane(heat, spacing, "axial" if name == "image" else name, index)
        rgba = colormap(norm(hot))
        rgba[..., 3] = MAX_ALPHA * np.clip(norm(hot), 0.0, 1.0)
        ax.imshow(grey, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", aspect=aspect,
                  interpolation="nearest")
        ax.imshow(rgba, origin="lower", aspect=aspect, interpolation="nearest")
        if threshold is not None and hot.min() < threshold < hot.max():
            ax.contour(hot, levels=[threshold], colors="cyan", linewidths=0.8)  # pixel centres, as imshow
        ax.set_xticks([])
        ax.set_yticks([])
        if len(panels) > 1:
            ax.set_title(name, fontsize=9)
    fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=list(axes), shrink=0.8, label="anomaly")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_png(fig, path)
