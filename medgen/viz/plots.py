"""Small line and scatter plots: training curves, latent spaces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medgen.viz._figure import new_figure, save_png


def save_curves(path, curves: Mapping[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]],
                xlabel: str = "epoch", ylabel: str | None = None, title: str | None = None,
                log_y: bool = False, points: Mapping[str, tuple[float, float]] | None = None,
                vlines: Mapping[str, float] | None = None) -> Path:
    """PNG with one line per named curve: values (x = 0, 1, ...) or an (x, y) pair of sequences;
    ``points`` (name -> (x, y)) are drawn as stars and ``vlines`` (name -> x) as dotted lines,
    e.g. the checkpoint kept and the epoch a training phase began."""
    fig = new_figure(1, 1, cell=4.0)
    ax = fig.subplots()
    for name, values in curves.items():
        if isinstance(values, tuple) and len(values) == 2:
            x, y = np.asarray(values[0], float), np.asarray(values[1], float)
        else:
            y = np.asarray(values, float)
            x = np.arange(len(y))
        ax.plot(x, y, label=name, marker="." if len(y) < 30 else None)
    for name, (x, y) in (points or {}).items():
        ax.plot([x], [y], marker="*", markersize=12, linestyle="none", label=name)
    for name, x in (vlines or {}).items():
        ax.axvline(x, linestyle=":", color="0.4", label=name)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save_png(fig, path)


def save_scatter(path, points, labels=None, title: str | None = None,
                 axis_names: tuple[str, str] = ("z1", "z2")) -> Path:
    """PNG scatter of 2D points (N, 2), e.g. a VAE latent projection, coloured by ``labels``."""
    pts = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got {pts.shape}")
    fig = new_figure(1, 1, cell=4.0)
    ax = fig.subplots()
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=6)
    else:
        labels = np.asarray(labels)
        for value in np.unique(labels):
            sel = labels == value
            ax.scatter(pts[sel, 0], pts[sel, 1], s=6, label=str(value))
        ax.legend(fontsize=7, markerscale=2)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if title:
        ax.set_title(title)
    return save_png(fig, path)
