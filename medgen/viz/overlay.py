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
        centre = focus(heat, threshold)
        panels = [(name, {"axial": centre[2], "coronal": centre[1], "sagittal": centre[0]}[name]) for name in PLANES]
    else:
        panels = [("image", None)]
    fig = new_figure(1, len(panels))
    fig.set_facecolor("black")  # maps read best on black; white text on it
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
        ax.set_facecolor("black")
        left, right = SIDES["axial" if name == "image" else name]
        for x, letter, align in ((0.02, left, "left"), (0.98, right, "right")):
            ax.text(x, 0.5, letter, transform=ax.transAxes, ha=align, va="center", color="white", fontsize=9,
                    fontweight="bold")
        if len(panels) > 1:
            ax.set_title(name, fontsize=9, color="white")
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=list(axes), shrink=0.8)
    bar.set_label("anomaly", color="white")
    bar.ax.tick_params(colors="white")
    if title:
        fig.suptitle(title, fontsize=11, color="white")
    return save_png(fig, path)


# What the screen's left and right edges are in each plane (medgen.viz._figure.plane: neurological
# convention, the subject's right on screen right; sagittal: anterior on the right).
SIDES = {"axial": ("L", "R"), "coronal": ("L", "R"), "sagittal": ("P", "A")}


def focus(heat: np.ndarray, threshold: float | None = None) -> tuple[int, int, int]:
    """The voxel the three planes cross at: the centre of the largest region above ``threshold``
    (a lesion, not a lone hot voxel), else the peak of the map smoothed over a voxel or so."""
    from scipy import ndimage

    if threshold is not None and (heat > threshold).any():
        labels, n = ndimage.label(heat > threshold)
        sizes = np.bincount(labels.ravel())[1:]
        region = labels == int(np.argmax(sizes)) + 1
        centre = ndimage.center_of_mass(region)
        # the region's own voxel nearest its centre of mass (a curved region's centre may lie outside it)
        idx = np.argwhere(region)
        return tuple(int(v) for v in idx[np.argmin(((idx - np.asarray(centre)) ** 2).sum(1))])
    smooth = ndimage.gaussian_filter(heat.astype(np.float32), 1.0)
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(smooth)), heat.shape))
