"""Figure plumbing shared by the plots: array conversion, RAS slicing, atomic PNG writing.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot, so
they work headless, in threads, and leave no global figure state behind.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medgen.io.atomic import atomic_output

DPI = 100
CELL_INCHES = 2.5  # one panel; a grid of R rows and C columns is (C·250) × (R·250) pixels

PLANES = ("axial", "coronal", "sagittal")


def new_figure(n_rows: int, n_cols: int, cell: float = CELL_INCHES) -> Figure:
    fig = Figure(figsize=(cell * n_cols, cell * n_rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    with atomic_output(path, suffix=".png") as tmp, open(tmp, "wb") as fh, warnings.catch_warnings():
        # a scan's name in a script the font lacks (CJK) is drawn as boxes: cosmetic, not a line
        # for the user's terminal
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        fig.savefig(fh, format="png", dpi=DPI)  # no bbox_inches="tight": the size stays known
    return path


def spacing_of(x) -> tuple[float, ...] | None:
    """Voxel spacing of a MetaTensor-like input (from .meta["spacing"] or .affine), else None."""
    meta = getattr(x, "meta", None)
    if isinstance(meta, dict) and meta.get("spacing") is not None:
        return tuple(float(s) for s in meta["spacing"])
    affine = getattr(x, "affine", None)
    if affine is not None:
        a = np.asarray(affine, dtype=np.float64)
        if a.shape == (4, 4):
            return tuple(np.linalg.norm(a[:3, :3], axis=0))
    return None


def to_image(x) -> tuple[np.ndarray, tuple[float, ...]]:
    """A 2D (X, Y) or 3D (X, Y, Z) float array and its spacing from a tensor/array that may carry
    leading batch and channel axes (the first item and channel are shown)."""
    spacing = spacing_of(x)
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    a = np.asarray(x, dtype=np.float32)
    while a.ndim > 3:
        a = a[0]
    if a.ndim == 3 and 1 in a.shape:  # a 2D slice stored as (X, Y, 1)
        keep = [d for d in range(3) if a.shape[d] > 1]
        spacing = tuple(spacing[d] for d in keep) if spacing and len(spacing) == 3 else None
        a = a.reshape([a.shape[d] for d in keep])
    if a.ndim not in (2, 3):
        raise ValueError(f"cannot show an array of shape {a.shape} as an image")
    if spacing is None or len(spacing) != a.ndim:
        spacing = (1.0,) * a.ndim
    return a, spacing


def plane(volume: np.ndarray, spacing, name: str, index: int | None = None) -> tuple[np.ndarray, float]:
    """One display-ready plane of an (X, Y, Z) RAS volume (or a 2D (X, Y) image) and its aspect.

    Returned arrays are (rows, cols) for ``imshow(origin="lower")``: axial shows X across and Y up
    (anterior at the top), coronal X across and Z up, sagittal Y across (anterior to the right)
    and Z up (superior at the top). Neurological convention: the subject's right on screen right.
    """
    if volume.ndim == 2:
        return volume.T, spacing[1] / spacing[0]
    x, y, z = volume.shape
    if name == "axial":
        i = z // 2 if index is None else index
        return volume[:, :, i].T, spacing[1] / spacing[0]
    if name == "coronal":
        i = y // 2 if index is None else index
        return volume[:, i, :].T, spacing[2] / spacing[0]
    if name == "sagittal":
        i = x // 2 if index is None else index
        return volume[i, :, :].T, spacing[2] / spacing[1]
    raise ValueError(f"unknown plane {name!r}")


def value_limits(arrays, value_range=None) -> tuple[float, float]:
    """(vmin, vmax) shared by all panels: ``value_range`` or the joint finite min and max."""
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
    else:
        finite = [a[np.isfinite(a)] for a in arrays]
        finite = [f for f in finite if f.size]
        lo = min(float(f.min()) for f in finite) if finite else 0.0
        hi = max(float(f.max()) for f in finite) if finite else 1.0
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi
