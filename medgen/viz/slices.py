"""Slice grids: input | output | target side by side, three orthogonal mid-planes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from medgen.viz._figure import PLANES, new_figure, plane, save_png, to_image, value_limits


def save_slice_grid(path, volumes: Mapping[str, object], value_range=None, title: str | None = None,
                    cmap: str = "gray") -> Path:
    """PNG grid of mid-slices: one column per named volume, rows axial / coronal / sagittal.

    Volumes are (X, Y, Z) arrays or tensors in RAS+ voxel order (as ``medgen.io.read`` gives), or
    carry leading batch/channel axes (the first item and channel are shown). 2D images (X, Y), or
    (X, Y, 1), give a single row. Every panel shares one grey scale: ``value_range`` or the joint
    min/max of all volumes, so differences in intensity are visible. Voxel spacing of MetaTensors
    sets the aspect ratio. Written atomically; the image is 250 px per panel on each side.
    """
    if not volumes:
        raise ValueError("save_slice_grid needs at least one volume")
    images = {name: to_image(v) for name, v in volumes.items()}
    is_3d = any(a.ndim == 3 for a, _ in images.values())
    planes = PLANES if is_3d else ("image",)
    vmin, vmax = value_limits([a for a, _ in images.values()], value_range)

    fig = new_figure(len(planes), len(images))
    axes = fig.subplots(len(planes), len(images), squeeze=False)
    for col, (name, (array, spacing)) in enumerate(images.items()):
        for row, plane_name in enumerate(planes):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if array.ndim == 3 or row == 0:  # a 2D image among volumes fills only the first row
                data, aspect = plane(array, spacing, "axial" if plane_name == "image" else plane_name)
                ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect=aspect,
                          interpolation="nearest")
            else:
                ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0 and is_3d:
                ax.set_ylabel(plane_name, fontsize=9)
    # one scale for every panel, so one colour bar says what the greys mean
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap=cmap), ax=axes.ravel().tolist(), shrink=0.6,
                 fraction=0.03, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_png(fig, path)
