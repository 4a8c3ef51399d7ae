"""Voxel-to-world geometry: LPS (ITK, DICOM) to RAS (NIfTI), canonical reorientation and back.

Every reader in ``medgen.io`` produces a ``RawVolume``: the voxels in the order the file stores
them plus a 4x4 affine mapping voxel indices to RAS world millimetres. ``read()`` then flips and
permutes axes (never resamples) so the voxel order is RAS+; ``write()`` undoes exactly that
permutation, so an output overlays its input in any viewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

# Smallest voxel side a header may state (mm): below it a "spacing" is an unset field, not a voxel.
MIN_VOXEL_MM = 1e-4
# Largest: 10 m. No scanner's voxel is larger; a 1e30 mm "voxel" is a corrupt sform, not a scan.
MAX_VOXEL_MM = 1e4

# ITK and DICOM use LPS world coordinates; NIfTI and MONAI use RAS. Flipping x and y maps one
# onto the other: world_ras = LPS_TO_RAS @ world_lps (the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
CANONICAL = nib.orientations.axcodes2ornt(("R", "A", "S"))


@dataclass
class RawVolume:
    """A volume as stored on disk: ``data`` (X, Y, Z) float32 in file voxel order (intensity
    scaling such as RescaleSlope/Intercept already applied), ``affine`` voxel -> RAS mm;
    ``disk_dtype`` the stored values' type, ``rescaled`` whether a scaling (DICOM slope/intercept
    or dose scaling, NIfTI scl_slope/scl_inter) turned them into ``data``."""

    data: np.ndarray
    affine: np.ndarray
    disk_dtype: np.dtype
    source_format: str
    modality: str | None = None
    series_count: int = 1
    series_description: str | None = None
    extra: dict = field(default_factory=dict)
    rescaled: bool = False


def affine_from_lps(direction: np.ndarray, spacing, origin) -> np.ndarray:
    """RAS affine from an ITK/DICOM-style LPS geometry (direction columns = voxel axes)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ lps


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Length of each voxel axis in mm (the spacing), for any rotation or shear."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def canonical_voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes along the R, A, S axes that ``to_canonical`` would give the volume."""
    ornt = nib.orientations.io_orientation(affine)
    ras = [0.0, 0.0, 0.0]
    for i, size in enumerate(voxel_sizes(affine)):
        ras[int(ornt[i, 0])] = size  # original axis i becomes canonical axis ornt[i, 0]
    return tuple(ras)


def axcodes(affine: np.ndarray) -> str:
    """Orientation codes of the voxel axes, e.g. ``"LPS"`` for an unflipped DICOM/NRRD volume."""
    return "".join(nib.aff2axcodes(np.asarray(affine)))


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute voxel axes (no resampling) so they run R, A, S; returns (data, affine)."""
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, CANONICAL)
    if np.array_equal(transform, CANONICAL):
        return data, np.asarray(affine, dtype=np.float64)
    new_data = nib.orientations.apply_orientation(data, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape[:3])
    return new_data, new_affine


def from_canonical(data: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Inverse of ``to_canonical``: back to the voxel order whose affine is ``original_affine``.
    Leading three axes are spatial; trailing axes (channels) ride along."""
    ornt = nib.orientations.io_orientation(original_affine)
    transform = nib.orientations.ornt_transform(CANONICAL, ornt)
    if np.array_equal(transform, CANONICAL):
        return data
    return nib.orientations.apply_orientation(data, transform)
