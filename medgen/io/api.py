"""``read`` / ``write`` / ``describe`` / ``voxel_spacing`` / ``is_volume_path``: one entry point for every format."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from medgen.errors import InputError
from medgen.io import nifti, sitk_formats
from medgen.io.geometry import (MAX_VOXEL_MM, MIN_VOXEL_MM, RawVolume, axcodes, canonical_voxel_sizes, from_canonical, to_canonical,
                                voxel_sizes)

if TYPE_CHECKING:  # torch and MONAI load slowly; `medgen info` and `convert` never need them
    from monai.data import MetaTensor

WRITE_SUFFIXES = (".nii", ".nii.gz")


def _suffix_in(path: Path, suffixes) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def check_geometry(path, affine, source_format: str = "") -> None:
    """InputError unless ``affine`` maps voxels to world mm invertibly: finite, with three
    independent voxel axes (zero or NaN voxel sizes, a zero or collinear orientation, a
    projection radiograph without slice geometry all fail here, not as a traceback later)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise InputError(path, "no usable geometry: the voxel-to-world matrix holds NaN or infinite values")
    m = a[:3, :3]
    scale = float(np.abs(m).max())
    if scale == 0 or abs(float(np.linalg.det(m))) <= 1e-9 * scale**3:
        hint = (" (PixelSpacing or ImageOrientationPatient zero or missing: a projection radiograph has no "
                "slice geometry; medgen reads cross-sectional volumes)" if source_format == "dicom"
                else " (a zero voxel size or collinear axes in the header)")
        raise InputError(path, f"no usable geometry: the voxel-to-world matrix is singular{hint}")
    sizes = np.linalg.norm(m, axis=0)
    if (sizes < MIN_VOXEL_MM).any() or (sizes > MAX_VOXEL_MM).any():
        shown = " x ".join(f"{v:.3g}" for v in sizes)
        raise InputError(path, f"no usable geometry: voxel size {shown} mm (a side under {MIN_VOXEL_MM:g} mm "
                               f"is an unset header field, one over {MAX_VOXEL_MM:g} mm a corrupt one, not a voxel)")


def check_input_path(path: Path) -> None:
    """InputError unless ``path`` is a regular file or a folder. A pipe would block the reader for
    ever and /dev/zero (behind a volume's name) never ends: neither is opened."""
    if path.is_symlink() and not path.exists():
        raise InputError(path, "is a broken symbolic link (its target is missing, or it links back to itself)")
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if not (path.is_file() or path.is_dir()):
        raise InputError(path, "not a regular file (a device, pipe or socket): medgen reads volume files and folders")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")


def _load(path, series: str | None = None) -> RawVolume:
    """The volume as stored, from whichever reader the path calls for."""
    path = Path(path)
    check_input_path(path)
    from medgen.io import dicom  # pydicom import is slow-ish; only when needed

    # Values beyond float32 become inf in the readers' cast; the check below names the file and
    # says so in one line, so numpy's own "overflow encountered in cast" would only say it twice.
    with np.errstate(over="ignore"):
        if path.is_dir():
            raw = dicom.read_dicom_folder(path, series=series)
        elif _suffix_in(path, nifti.SUFFIXES):
            raw = nifti.read_nifti(path)
        elif _suffix_in(path, sitk_formats.SUFFIXES):
            raw = sitk_formats.read_sitk(path)
        elif dicom.is_dicom_file(path, by_suffix=True):
            raw = dicom.read_dicom_file(path)
        elif path.suffix.lower() in dicom.SUFFIXES:
            raise InputError(path, "not a DICOM file (no 'DICM' marker and pydicom cannot parse it)")
        else:
            raise InputError(path, "unknown volume format (expected .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd/.hdr, a DICOM "
                                   "file or a DICOM folder)")
    check_geometry(path, raw.affine, raw.source_format)
    if raw.data.size == 0:
        raise InputError(path, "volume is empty (a dimension of size 0)")
    if not np.isfinite(raw.data).any():
        if np.isinf(raw.data).any():
            raise InputError(path, "values overflow 32-bit floats (beyond ±3.4e38, e.g. data near 1e300 or a huge "
                                   "RescaleSlope): the stored values or their scaling are wrong")
        raise InputError(path, "volume holds no finite values (all NaN)")
    if raw.rescaled and np.isinf(raw.data).any():  # stored values are finite: the scaling overflowed
        raise InputError(path, "values overflow 32-bit floats after the file's rescale (RescaleSlope/Intercept, "
                               "scl_slope/scl_inter): the scaling is wrong")
    return raw


def read(path, series: str | None = None) -> MetaTensor:
    """Read a volume in canonical RAS+ voxel order.

    Args:
        path: a .nii/.nii.gz/.hdr, .nrrd/.nhdr/.mha/.mhd file, a DICOM file (single-frame,
            multi-frame or enhanced) or a folder of DICOM files (recognised by content).
        series: for a DICOM folder holding several series, the SeriesInstanceUID or
            SeriesDescription of the one to read.

    Returns:
        float32 ``MetaTensor`` of shape (X, Y, Z) whose ``.affine`` maps voxel indices to RAS
        world mm. ``.meta`` holds ``filename_or_obj``, ``spacing``, ``original_affine`` (the
        on-disk affine, RAS), ``original_shape``, ``original_dtype``, ``modality`` (the DICOM
        Modality, "" when the format does not say), ``source_format`` (and
        ``series_description`` for DICOM) -- never patient identifiers.

    Raises:
        InputError: the path is missing, unreadable, corrupt or not a volume.
    """
    import torch
    from monai.data import MetaTensor

    raw = _load(path, series)
    data, affine = to_canonical(raw.data, raw.affine)
    meta = {
        "filename_or_obj": str(path),
        "spacing": voxel_sizes(affine),
        "original_affine": torch.as_tensor(raw.affine, dtype=torch.float64),
        "original_shape": tuple(int(s) for s in raw.data.shape),
        "original_dtype": str(raw.disk_dtype),
        "spatial_shape": tuple(int(s) for s in data.shape),
        "original_channel_dim": math.nan,  # MONAI's marker for "no channel axis"
        "space": "RAS",
        # "" rather than None when the format does not say: MONAI's batch collation rejects None.
        "modality": raw.modality or "",
        "source_format": raw.source_format,
    }
    if raw.series_description:
        meta["series_description"] = raw.series_description
    tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    return MetaTensor(tensor, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _is_metatensor(x) -> bool:
    # Checked by name so that numpy-only callers never import MONAI.
    return any(c.__name__ == "MetaTensor" for c in type(x).__mro__)


def _as_numpy(volume) -> np.ndarray:
    if hasattr(volume, "detach"):  # a torch tensor (MetaTensor included)
        volume = volume.detach().cpu()
        volume = volume.as_tensor() if _is_metatensor(volume) else volume
        return volume.numpy()
    return np.asarray(volume)


def write(path, volume, reference: MetaTensor | None = None, dtype=None) -> Path:
    """Write ``volume`` as NIfTI (.nii or .nii.gz), atomically.

    Args:
        path: output file, ``.nii`` or ``.nii.gz``.
        volume: (X, Y, Z) or (C, X, Y, Z) tensor/array in canonical RAS+ order (as ``read``
            returns it, or a model output of the same shape).
        reference: the ``MetaTensor`` that ``read`` returned for the input. The output then
            has the input's original on-disk voxel order and affine, so it overlays the input
            in any viewer. Without it, ``volume.affine`` (MetaTensor) or identity is used.
        dtype: on-disk dtype; default float32 (bool volumes as uint8, integer kept).

    Raises:
        InputError: unsupported suffix, volume with no finite value, or shape not matching
            the reference.
    """
    path = Path(path)
    if not _suffix_in(path, WRITE_SUFFIXES):
        raise InputError(path, "output must be a NIfTI file (.nii or .nii.gz)")
    data = _as_numpy(volume)
    if data.ndim == 4:
        data = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)  # NIfTI puts channels last
    if data.ndim != 3 and not (data.ndim == 4 and data.shape[-1] > 1):
        raise InputError(path, f"cannot write an array of shape {list(_as_numpy(volume).shape)} as a volume")
    if dtype is None:
        dtype = np.uint8 if data.dtype == bool else (data.dtype if np.issubdtype(data.dtype, np.integer) else np.float32)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).any():
        raise InputError(path, "refusing to write a volume with no finite values (all NaN or infinite)")

    if reference is not None:
        if not _is_metatensor(reference) or "original_affine" not in reference.meta:
            raise TypeError("reference must be the MetaTensor returned by medgen.io.read()")
        ref_shape = tuple(reference.shape[-3:])
        if tuple(data.shape[:3]) != ref_shape:
            raise InputError(path, f"volume shape {list(data.shape[:3])} does not match the reference {list(ref_shape)}")
        original_affine = np.asarray(reference.meta["original_affine"], dtype=np.float64)
        data = from_canonical(data, original_affine)
        affine = original_affine
    elif _is_metatensor(volume):
        affine = np.asarray(volume.affine, dtype=np.float64)
    else:
        affine = np.eye(4)
    return nifti.write_nifti(path, np.ascontiguousarray(data).astype(dtype, copy=False), affine)


def convert(path, output, series: str | None = None) -> Path:
    """Write a readable volume as NIfTI with its own voxel grid and affine (no reorientation,
    no resampling): the voxel -> world mapping is the input's. Integer data keeps its on-disk
    dtype when every value (after rescale) fits it exactly; otherwise float32."""
    output = Path(output)
    if not _suffix_in(output, WRITE_SUFFIXES):
        raise InputError(output, "output must be a NIfTI file (.nii or .nii.gz)")
    nifti.check_output_path(output)  # before reading: a big DICOM series takes a while
    if output.exists() and Path(path).exists() and os.path.samefile(path, output):
        raise InputError(output, "is the input: converting onto it would replace the original file; "
                                 "give another output name")
    raw = _load(path, series)
    return nifti.write_nifti(output, raw.data.astype(_storage_dtype(raw), copy=False), raw.affine)


def _storage_dtype(raw: RawVolume) -> np.dtype:
    """The on-disk integer type where every value fits it exactly, else float32. 64-bit integers
    (which NIfTI readers commonly refuse) become the narrowest of int16/int32/uint32 that holds them."""
    dtype = np.dtype(raw.disk_dtype)
    if not np.issubdtype(dtype, np.integer) or not np.isfinite(raw.data).all():
        return np.dtype(np.float32)
    lo, hi = float(raw.data.min()), float(raw.data.max())
    if not np.array_equal(np.round(raw.data), raw.data):
        return np.dtype(np.float32)
    candidates = [dtype] if dtype.itemsize < 8 else [np.dtype(t) for t in (np.int16, np.int32, np.uint32)]
    for candidate in candidates:
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return candidate
    return np.dtype(np.float32)


def describe(path, series: str | None = None) -> dict:
    """Facts about a volume as stored, for ``medgen info``: shape and spacing in the file's own
    voxel order, orientation codes of its axes (e.g. "LPS"), on-disk dtype and whether the file's
    scaling (DICOM slope/intercept or dose scaling, NIfTI scl_slope) was applied, intensity
    min/max/mean (after that rescale, e.g. HU), modality (DICOM only, else None) and number of series."""
    path = Path(path)
    from medgen.io import dicom

    if path.is_dir():
        listing = dicom.list_series(path)
        if len(listing) > 1 and series is None:
            return {
                "shape": None, "spacing": None, "orientation": None, "dtype": None,
                "min": None, "max": None, "mean": None,
                "modality": None, "series": len(listing),
                "series_list": [{"uid": s.uid, "number": s.number, "description": s.description, "modality": s.modality,
                                 "files": len(s.files)} for s in listing],
            }
    raw = _load(path, series)
    finite = raw.data[np.isfinite(raw.data)]
    return {
        "shape": [int(s) for s in raw.data.shape],
        "spacing": [round(v, 6) for v in voxel_sizes(raw.affine)],
        "orientation": axcodes(raw.affine),
        "dtype": str(raw.disk_dtype),
        "rescaled": bool(raw.rescaled),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "mean": float(finite.astype(np.float64).mean()),
        "modality": raw.modality,
        "series": raw.series_count,
        "format": raw.source_format,
    }


def header_geometry(path, series: str | None = None) -> tuple[tuple[int, ...], np.ndarray, str]:
    """``(shape, affine, format)`` of a volume as stored: shape in the file's voxel order, the
    voxel -> RAS mm affine, the format name. Headers only for NIfTI/Analyze, NRRD/MetaImage and
    DICOM series folders (every slice's header: the slice spacing comes from their positions);
    a single DICOM file or a multi-frame series is read whole."""
    path = Path(path)
    found = None
    if path.is_dir():
        from medgen.io import dicom

        geometry = dicom.dicom_folder_geometry(path, series)
        found = (*geometry, "dicom") if geometry is not None else None
    elif path.is_file() and _suffix_in(path, nifti.SUFFIXES):
        found = nifti.header_geometry(path)
    elif path.is_file() and _suffix_in(path, sitk_formats.SUFFIXES):
        found = sitk_formats.header_geometry(path)
    if found is not None:
        check_geometry(path, found[1], found[2])
        return found
    raw = _load(path, series)
    return tuple(int(s) for s in raw.data.shape), raw.affine, raw.source_format


def voxel_spacing(path, series: str | None = None) -> tuple[float, float, float]:
    """Voxel size in mm along the axes of ``read(path)`` (canonical RAS+ order), from the
    header where the format allows (:func:`header_geometry`)."""
    return canonical_voxel_sizes(header_geometry(path, series)[1])


def find_volumes(root) -> list[Path]:
    """Every volume under a folder, recursively and sorted: files with a volume suffix, and each
    folder that holds DICOM files directly (one entry, whatever series it holds). Hidden entries
    and the ``.img`` half of an Analyze pair are skipped."""
    from medgen.io import dicom

    root = Path(root)
    entries = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    suffixes = nifti.SUFFIXES + sitk_formats.SUFFIXES
    out = []
    if any(p.is_file() and not _suffix_in(p, suffixes) and dicom.is_dicom_file(p) for p in entries):
        out.append(root)
    for p in entries:
        if p.is_dir():
            out.extend(find_volumes(p))
        elif _suffix_in(p, suffixes) and not (_suffix_in(p, (".img",)) and p.with_suffix(".hdr").exists()):
            out.append(p)
    return out


def describe_folder(root, volumes: list[Path] | None = None) -> dict:
    """Header facts of every volume under ``root`` (``medgen info DIR``): per volume its path
    relative to ``root``, shape, spacing and orientation as stored, format (or the error that
    stops it being read); and the voxel sizes the volumes come in (RAS axes, as training sees
    them) with their median, the grid of ``data.spacing=auto`` over the whole folder.
    ``volumes``: :func:`find_volumes` of ``root`` when the caller already has it."""
    root = Path(root)
    rows, sizes = [], []
    for path in find_volumes(root) if volumes is None else volumes:
        row = {"path": str(path.relative_to(root))}
        try:
            shape, affine, fmt = header_geometry(path)
        except InputError as e:
            row["error"] = e.problem
        else:
            row.update(shape=list(shape), spacing=[round(v, 6) for v in voxel_sizes(affine)],
                       orientation=axcodes(affine), format=fmt)
            sizes.append(tuple(round(v, 4) for v in canonical_voxel_sizes(affine)))
        rows.append(row)
    if not rows:
        raise InputError(root, "folder holds no readable volume (NIfTI, NRRD, MHA/MHD or DICOM)")
    return {
        "folder": str(root),
        "volumes": rows,
        "voxel_sizes": [{"spacing": list(k), "volumes": v} for k, v in Counter(sizes).most_common()],
        "median_spacing": [float(v) for v in np.median(np.array(sizes), axis=0)] if sizes else None,
    }


def is_volume_path(path) -> bool:
    """True for a file with a volume suffix (or DICOM content), or a folder holding DICOM files."""
    path = Path(path)
    if path.is_dir():
        from medgen.io import dicom

        return dicom.folder_has_dicom(path)
    if not path.is_file():
        return False
    if _suffix_in(path, nifti.SUFFIXES + sitk_formats.SUFFIXES):
        return True
    from medgen.io import dicom

    return dicom.is_dicom_file(path, by_suffix=True)
