"""Intensity normalisation per modality, foreground masks, low-dose simulation, grids and patches."""

from medgen.transforms.intensity import (
    CT_WINDOW,
    NormalizeIntensityd,
    apply_intensity,
    intensity_params,
    invert_intensity,
    normalize,
)
from medgen.transforms.lowdose import simulate_low_dose
from medgen.transforms.masks import foreground_mask

__all__ = [
    "CT_WINDOW",
    "NormalizeIntensityd",
    "apply_intensity",
    "foreground_mask",
    "intensity_params",
    "invert_intensity",
    "normalize",
    "simulate_low_dose",
]
