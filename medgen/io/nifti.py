"""NIfTI-1/2 and Analyze (.hdr/.img) through nibabel."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medgen.errors import InputError
from medgen.io.atomic import atomic_output
from medgen.io.errors_util import short
from medgen.io.geometry import RawVolume

SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")


def read_nifti(path: Path) -> RawVolume:
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".hdr", ".img")):
        partner = path.with_suffix(".img" if name.endswith(".hdr") else ".hdr")
        if not partner.exists():
            raise InputError(path, f"the paired file {partner.name} is missing (Analyze/NIfTI pairs need .hdr and .img)")
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for a corrupt header
        raise InputError(path, f"not a readable NIfTI/Analyze file ({short(e)})") from None
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise InputError(path, f"has shape {list(img.shape)}: a 4D/multi-channel image, expected one 3D volume")
    try:
        data = img.get_fdata(dtype=np.float32)
    except Exception as e:  # truncated gzip, short file, unsupported dtype
        raise InputError(path, f"image data is truncated or corrupt ({short(e)})") from None
    data = data.reshape(shape + (1,) * (3 - len(shape)))
    return RawVolume(
        data=data,
        affine=np.asarray(img.affine, dtype=np.float64),
        disk_dtype=np.dtype(img.get_data_dtype()),
        source_format=_format(img),
    )


def header_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray, str]:
    """(shape, voxel -> RAS mm affine, format) from the header, without reading the voxels."""
    try:
        img = nib.load(str(path))
    except Exception as e:
        raise InputError(path, f"not a readable NIfTI/Analyze file ({short(e)})") from None
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64), _format(img)


def _format(img) -> str:
    return "nifti" if isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)) else "analyze"


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` (X, Y, Z[, C]) with ``affine`` atomically: a temporary file in the same
    folder, then ``os.replace``, so a crash never leaves a half-written output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    # Scanner-anatomical coordinates in both qform and sform: what the input's world frame is.
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_output(path, suffix=f".tmp{suffix}") as tmp:
        nib.save(img, tmp)
    return path
