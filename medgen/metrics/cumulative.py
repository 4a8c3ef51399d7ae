"""Accumulating versions of the metrics (MONAI ``Cumulative`` style: update per batch, aggregate
once per epoch, reset). They store per-sample values, so the epoch mean weighs every volume the
same whatever the batch sizes were."""

from __future__ import annotations

import numpy as np
import torch

from medgen.metrics._inputs import batch_mean
from medgen.metrics.classification import _scores_labels, auprc, auroc, dice_per_sample
from medgen.metrics.image import mae_per_sample, nmse_per_sample, psnr_per_sample, ssim_per_sample


class ImageMetrics:
    """PSNR, SSIM, MAE and NMSE over many batches.

    >>> m = ImageMetrics(data_range=2.0)
    >>> for pred, target in batches: m.update(pred, target)
    >>> m.aggregate()  # {"psnr": ..., "ssim": ..., "mae": ..., "nmse": ..., "n": ...}
    """

    NAMES = ("psnr", "ssim", "mae", "nmse")

    def __init__(self, data_range: float):
        self.data_range = float(data_range)
        self.reset()

    def reset(self) -> None:
        self._values: dict[str, list[torch.Tensor]] = {k: [] for k in self.NAMES}

    def update(self, pred, target, mask=None) -> dict[str, float]:
        """Add a batch; returns this batch's means."""
        per_sample = {
            "psnr": psnr_per_sample(pred, target, self.data_range, mask),
            "ssim": ssim_per_sample(pred, target, self.data_range, mask=mask),
            "mae": mae_per_sample(pred, target, mask),
            "nmse": nmse_per_sample(pred, target, mask),
        }
        for k, v in per_sample.items():
            self._values[k].append(v.cpu())
        return {k: batch_mean(v) for k, v in per_sample.items()}

    def aggregate(self) -> dict[str, float]:
        """Mean of every metric over all samples since the last reset, and ``n`` samples."""
        out = {k: batch_mean(torch.cat(v)) if v else float("nan") for k, v in self._values.items()}
        out["n"] = sum(len(v) for v in self._values["psnr"])
        return out


class DiceMetric:
    """Binary Dice over many batches (samples with both masks empty are left out)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._values: list[torch.Tensor] = []

    def update(self, pred_mask, target_mask) -> float:
        v = dice_per_sample(pred_mask, target_mask).cpu()
        self._values.append(v)
        return batch_mean(v)

    def aggregate(self) -> float:
        return batch_mean(torch.cat(self._values)) if self._values else float("nan")


class RankingMetrics:
    """AUROC and AUPRC over scores gathered across batches: scan-level (one score and label per
    scan) or voxel-level (anomaly maps and lesion masks, optionally restricted to a mask).
    Voxel-level keeps every voxel's score (float32): ~4 MB per 100³ volume."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, scores, labels, mask=None) -> None:
        s, y = _scores_labels(scores, labels, mask, dtype=torch.float32)  # float32: voxel-level volumes
        self._scores.append(s)
        self._labels.append(y)

    def aggregate(self) -> dict[str, float]:
        if not self._scores:
            return {"auroc": float("nan"), "auprc": float("nan")}
        s, y = np.concatenate(self._scores), np.concatenate(self._labels)
        return {"auroc": auroc(s, y), "auprc": auprc(s, y)}
