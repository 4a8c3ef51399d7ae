"""Metrics: image similarity (PSNR, SSIM, MS-SSIM, MAE, NMSE), overlap and ranking (Dice, AUROC,
AUPRC) and 2.5D FID. Functions return the mean over a batch as a float; the classes accumulate
over an epoch. Inputs: torch tensors or numpy arrays, ``(*spatial)`` or ``(B, C, *spatial)``."""

from medgen.metrics.classification import auprc, auroc, dice, dice_per_class, precision_recall
from medgen.metrics.cumulative import DiceMetric, ImageMetrics, RankingMetrics
from medgen.metrics.fid import FID, fid, frechet_distance, frechet_distance_from_features, load_inception
from medgen.metrics.image import image_metrics, mae, ms_ssim, ms_ssim_fits, nmse, psnr, ssim

__all__ = [
    "FID", "DiceMetric", "ImageMetrics", "RankingMetrics",
    "auprc", "auroc", "dice", "dice_per_class", "fid", "frechet_distance",
    "frechet_distance_from_features", "image_metrics", "load_inception", "mae", "ms_ssim",
    "ms_ssim_fits", "nmse", "precision_recall", "psnr", "ssim",
]
