"""Slice grids: input | output | target side by side, three orthogonal mid-planes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from medgen.viz._figure import PLANES, new_figure, plane, save_png, to_image, value_limits


def save_slice_grid(path, volumes: Mapping[str, object], value_range=None, title: str | None = None,
                    cmap: str = "gray", centre: tuple[int, int, int] | None = None) -> Path:
    """PNG grid of slices: one column per named volume, rows axial / coronal / sagittal, through
    the mid-planes or, with ``centre`` (an (x, y, z) voxel, e.g. from :func:`grid_centre`), the
    planes crossing there (a lesion is rarely on the mid-planes).

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
                index = None
                if centre is not None and array.ndim == 3 and plane_name in PLANES:
                    index = min(int(centre[2 - PLANES.index(plane_name)]), array.shape[2 - PLANES.index(plane_name)] - 1)
                data, aspect = plane(array, spacing, "axial" if plane_name == "image" else plane_name, index)
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


def grid_centre(volumes: Mapping[str, object], keys, background: float) -> tuple[int, int, int] | None:
    """The voxel a grid's planes should cross at: the centre of the largest region above
    ``background`` in the first of ``keys`` that has one (a label map's lesion, else the
    prediction's), as overlays choose theirs (:func:`medgen.viz.overlay.focus`); None when
    none of them is a 3D volume with anything but background."""
    import numpy as np

    from medgen.viz.overlay import focus

    for key in keys:
        if key not in volumes:
            continue
        array, _ = to_image(volumes[key])
        threshold = background + 1e-3 * max(1.0, abs(background))
        if array.ndim == 3 and bool((array > threshold).any()):
            return focus(np.asarray(array), threshold)
    return None
