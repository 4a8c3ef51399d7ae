"""How well a low-dimensional representation keeps the labels: cross-validated kNN accuracy, and
PCA with the same number of components as the baseline (DESIGN.md section 3, VAE metrics).

Both work on plain arrays ``(N, D)`` and integer labels ``(N,)`` (-1 = unknown, left out).
scikit-learn does the fitting (it comes with mlflow, and its kNN and PCA are the references a
reader would check these numbers against).
"""

from __future__ import annotations

import numpy as np


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def knn_accuracy(features, labels, k: int = 5, folds: int = 5, seed: int = 0) -> float | None:
    """Mean accuracy of a ``k``-nearest-neighbour classifier (Euclidean, majority vote) over
    ``folds`` stratified folds of the labelled samples; None when fewer than two classes have
    two samples or more.

    Folds: ``min(folds, smallest class size)``, at least 2; classes with a single sample are
    left out (they can never be predicted from the others). ``k`` is capped by the training
    fold's size.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _array(features), np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, D) and labels (N,), got {x.shape} and {y.shape}")
    keep = y >= 0
    classes, counts = np.unique(y[keep], return_counts=True)
    keep &= np.isin(y, classes[counts >= 2])
    x, y = x[keep], y[keep]
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return None
    n_folds = int(max(2, min(folds, counts.min())))
    train_size = len(y) - int(np.ceil(len(y) / n_folds))
    knn = KNeighborsClassifier(n_neighbors=int(max(1, min(k, train_size))))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return float(cross_val_score(knn, x, y, cv=cv).mean())


def pca_features(x, n_components: int) -> np.ndarray:
    """The first ``n_components`` principal-component scores of ``x`` (N, D), capped at
    ``min(N, D)``."""
    from sklearn.decomposition import PCA

    x = _array(x)
    n = int(max(1, min(n_components, x.shape[0], x.shape[1])))
    return PCA(n_components=n, svd_solver="full", random_state=0).fit_transform(x)
