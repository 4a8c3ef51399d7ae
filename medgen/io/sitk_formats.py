"""NRRD (.nrrd/.nhdr) and MetaImage (.mha/.mhd) through SimpleITK (ITK's world frame is LPS)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medgen.errors import InputError
from medgen.io.errors_util import quiet_native_stderr, short
from medgen.io.geometry import RawVolume, affine_from_lps

SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")

# Detached-header formats name their data file in the header; check it ourselves so a missing
# data file gets a clear message instead of ITK's multi-line one.
_DATA_FILE = {
    ".mhd": re.compile(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE),
    ".mha": re.compile(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE),
    ".nhdr": re.compile(r"^\s*data ?file\s*:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE),
    ".nrrd": re.compile(r"^\s*data ?file\s*:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE),
}


def _check_data_file(path: Path) -> None:
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise InputError(path, f"cannot open ({e.strerror})") from None
    # The header is text up to the first blank line (NRRD) or ElementDataFile (MetaImage).
    text = head.split(b"\n\n", 1)[0].decode("latin-1")
    m = _DATA_FILE[suffix].search(text)
    if m is None:
        if suffix in (".nhdr", ".mhd"):
            raise InputError(path, "header names no data file (no 'data file:' / 'ElementDataFile' line)")
        return
    name = m.group(1).strip()
    if name.upper() in ("LOCAL",) or name.upper().startswith("LIST") or "%" in name or " " in name:
        return  # embedded data, or a list/pattern of files: let ITK resolve it
    data_path = Path(name) if Path(name).is_absolute() else path.parent / name
    if not data_path.exists():
        raise InputError(path, f"its data file {name} is missing")


def read_sitk(path: Path) -> RawVolume:
    path = Path(path)
    _check_data_file(path)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK warnings would add stderr lines
    try:
        with quiet_native_stderr():
            img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        kind = "NRRD" if path.suffix.lower() in (".nrrd", ".nhdr") else "MetaImage"
        raise InputError(path, f"not a readable {kind} file, or its data is truncated ({short(e)})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"has {img.GetNumberOfComponentsPerPixel()} components per voxel (vector or colour image), expected a scalar volume")
    dim = img.GetDimension()
    size = list(img.GetSize())
    if dim > 3 and any(s != 1 for s in size[3:]):
        raise InputError(path, f"has size {size}: a {dim}D image, expected one 3D volume")
    arr = sitk.GetArrayViewFromImage(img)  # index order reversed: (..., z, y, x)
    disk_dtype = arr.dtype
    if dim == 2:
        arr = arr[None]
    elif dim > 3:
        arr = arr.reshape(arr.shape[-3:])
    data = np.ascontiguousarray(arr.transpose(2, 1, 0), dtype=np.float32)
    return RawVolume(data=data, affine=_affine(img), disk_dtype=np.dtype(disk_dtype), source_format=_format(path))


def _format(path: Path) -> str:
    return "nrrd" if path.suffix.lower() in (".nrrd", ".nhdr") else "metaimage"


def _affine(image) -> np.ndarray:
    """RAS affine of the first three axes of an ITK image or header reader (a 2D image gets a
    unit third axis)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing, origin = list(image.GetSpacing()), list(image.GetOrigin())
    if dim == 2:
        d3 = np.eye(3)
        d3[:2, :2] = direction
        direction, spacing, origin = d3, spacing + [1.0], origin + [0.0]
    else:
        direction, spacing, origin = direction[:3, :3], spacing[:3], origin[:3]
    return affine_from_lps(direction, spacing, origin)


def header_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray, str]:
    """(size, voxel -> RAS mm affine of the first three axes, format) from the header alone."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_native_stderr():
            reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(path, f"not a readable NRRD/MetaImage header ({short(e)})") from None
    return tuple(int(v) for v in reader.GetSize()), _affine(reader), _format(path)
