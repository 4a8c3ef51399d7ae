"""Overlap and ranking metrics: Dice (binary, per class), AUROC, AUPRC.

Scan-level AUROC takes one score per scan; voxel-level AUROC/AUPRC take anomaly maps and lesion
masks of any shape (flattened; an optional ``mask`` keeps e.g. only brain voxels). Both are exact
sort-based computations with ties handled:
  * AUROC = P(s⁺ > s⁻) + ½·P(s⁺ = s⁻), via the Mann-Whitney U statistic with average ranks;
  * AUPRC = average precision, Σₙ (Rₙ − Rₙ₋₁)·Pₙ over the distinct score thresholds (tied scores
    enter together, no interpolation; the same definition as sklearn's average_precision_score).
Undefined cases (no positives, or no negatives for AUROC) give NaN rather than a made-up number.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from medgen.metrics._inputs import as_tensor, batch_mean, to_batch


def _binary_batch(x) -> torch.Tensor:
    t = as_tensor(x, dtype=None)
    return to_batch(t != 0 if t.dtype != torch.bool else t, dtype=None)


def dice_per_sample(pred_mask, target_mask) -> torch.Tensor:
    """2|A∩B| / (|A| + |B|) per sample; NaN where both masks are empty (nothing to overlap)."""
    p = _binary_batch(pred_mask)
    t = _binary_batch(target_mask).to(p.device)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    p = p.reshape(p.shape[0], -1).double()
    t = t.reshape(t.shape[0], -1).double()
    inter = (p * t).sum(1)
    total = p.sum(1) + t.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.full_like(total, float("nan")))


def dice(pred_mask, target_mask) -> float:
    """Binary Dice (non-zero = foreground), mean over the batch. Samples where both masks are
    empty are left out of the mean (MONAI's ``ignore_empty`` convention); NaN if all are."""
    return batch_mean(dice_per_sample(pred_mask, target_mask))


def dice_per_class(pred_labels, target_labels, num_classes: int | None = None,
                   include_background: bool = False) -> dict[int, float]:
    """Dice of each class of two integer label maps: {class: dice}. Class 0 is background and is
    left out unless ``include_background``. ``num_classes`` defaults to max label + 1."""
    p = as_tensor(pred_labels, dtype=None).long()
    t = as_tensor(target_labels, dtype=None).long().to(p.device)
    if num_classes is None:
        num_classes = int(max(p.max(), t.max())) + 1
    first = 0 if include_background else 1
    return {c: dice(p == c, t == c) for c in range(first, num_classes)}


def _scores_labels(scores, labels, mask=None, dtype=torch.float64) -> tuple[np.ndarray, np.ndarray]:
    """Flat (scores, bool labels) inside `mask`, shapes checked."""
    s = as_tensor(scores, dtype=dtype).reshape(-1).cpu().numpy()
    y = as_tensor(labels, dtype=None).reshape(-1).cpu().numpy() != 0
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if mask is not None:
        keep = as_tensor(mask, dtype=None).reshape(-1).cpu().numpy() != 0
        if keep.shape != s.shape:
            raise ValueError(f"mask has {keep.size} elements, scores {s.size}")
        s, y = s[keep], y[keep]
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y


def auroc(scores, labels, mask=None) -> float:
    """Area under the ROC curve (higher score = more likely positive), ties counted as ½."""
    s, y = _scores_labels(scores, labels, mask)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s, method="average")  # ties share their average rank -> ½ credit
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def precision_recall(scores, labels, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at each distinct score, highest threshold first."""
    s, y = _scores_labels(scores, labels, mask)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # last index of each run of equal scores: tied samples are accepted together
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    n_pos = y.sum()
    recall = tp / n_pos if n_pos else np.full(tp.shape, np.nan)
    return tp / (tp + fp), recall, s[last]


def auprc(scores, labels, mask=None) -> float:
    """Area under the precision-recall curve as average precision (step-wise, no interpolation)."""
    precision, recall, _ = precision_recall(scores, labels, mask)
    if recall.size == 0 or np.isnan(recall).any():
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
