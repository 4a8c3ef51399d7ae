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


def save_latent_map(path, latent, labels=None, class_names=None, title: str | None = None,
                    max_points: int = 1000, seed: int = 0) -> Path:
    """PNG of a latent space (N, D) in two panels, PCA and t-SNE, coloured by ``labels``
    (integers, -1 = unknown, named by ``class_names``). More than ``max_points`` samples are
    subsampled (t-SNE's cost grows with N²; a map of 1000 points shows the structure)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    z = np.asarray(latent.detach().float().cpu() if hasattr(latent, "detach") else latent, dtype=float)
    if z.ndim != 2:
        raise ValueError(f"latent must be (N, D), got {z.shape}")
    y = None if labels is None else np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(int)
    if len(z) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(z), max_points, replace=False))
        z, y = z[keep], (None if y is None else y[keep])
    names = [str(n[0] if isinstance(n, (list, tuple)) else n) for n in (class_names or [])]
    panels = {}
    if min(z.shape) >= 2:
        pca = PCA(n_components=2, random_state=seed).fit(z)
        ratio = pca.explained_variance_ratio_
        panels[f"PCA ({100 * ratio[0]:.0f} % + {100 * ratio[1]:.0f} % of variance)"] = pca.transform(z)
    if len(z) >= 10:
        perplexity = float(min(30.0, (len(z) - 1) / 3))
        panels["t-SNE"] = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    fig = new_figure(1, max(1, len(panels)), cell=4.0)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels))))
    for ax, (name, pts) in zip(axes, panels.items()):
        if y is None:
            ax.scatter(pts[:, 0], pts[:, 1], s=6)
        else:
            for value in np.unique(y):
                sel = y == value
                label = "unknown" if value < 0 else (names[value] if value < len(names) else str(value))
                ax.scatter(pts[sel, 0], pts[sel, 1], s=6, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if y is not None and panels and len(np.unique(y)) <= 20:
        axes[-1].legend(fontsize=7, markerscale=2, loc="best")
    if title:
        fig.suptitle(f"{title}: latent space ({z.shape[1]} dims, {len(z)} samples)", fontsize=10)
    return save_png(fig, path)
