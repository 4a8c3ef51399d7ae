"""NRRD (.nrrd/.nhdr) and MetaImage (.mha/.mhd) through SimpleITK (ITK's world frame is LPS)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medgen.errors import InputError
from medgen.io.errors_util import quiet_native_stderr, short
from medgen.io.geometry import MIN_VOXEL_MM, RawVolume, affine_from_lps
from medgen.io.nrrd_header import check_nrrd

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


_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _metaimage_fields(path: Path) -> tuple[dict[str, str], int]:
    """``(fields, header length in bytes)`` of a MetaImage header (text up to ElementDataFile)."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            offset += len(raw)
            line = raw.decode("latin-1").strip()
            if "=" in line:
                key, value = (t.strip() for t in line.split("=", 1))
                fields[key] = value
                if key == "ElementDataFile":
                    break
            if offset > 1 << 16:  # no header is this long: binary data without ElementDataFile
                break
    return fields, offset


def _numbers(path: Path, fields: dict[str, str], key: str, n: int, kind=float) -> list | None:
    if key not in fields:
        return None
    try:
        values = [kind(v) for v in fields[key].split()]
    except ValueError:
        raise InputError(path, f"MetaImage {key} = {fields[key]!r} is not {n} numbers") from None
    if len(values) != n:
        raise InputError(path, f"MetaImage {key} has {len(values)} values, expected {n} (NDims)")
    return values


def _check_metaimage(path: Path) -> None:
    """What ITK would crash on (NDims 99 aborts the process) or read as garbage (compressed data
    over raw bytes, truncated data read as zeros, NaN offsets read as 0), checked from the header."""
    fields, header_len = _metaimage_fields(path)
    try:
        ndims = int(fields.get("NDims", ""))
    except ValueError:
        raise InputError(path, f"MetaImage header has no valid NDims ({fields.get('NDims', 'missing')!r})") from None
    if not 2 <= ndims <= 4:
        raise InputError(path, f"MetaImage NDims = {ndims}: medgen reads 2D to 4D images")
    sizes = _numbers(path, fields, "DimSize", ndims, int)
    if sizes is None or any(v < 1 for v in sizes):
        raise InputError(path, f"MetaImage DimSize {fields.get('DimSize', 'missing')!r} is not {ndims} positive sizes")
    for key in ("Offset", "Origin", "Position", "ElementSpacing", "ElementSize", "TransformMatrix"):
        n = ndims * ndims if key == "TransformMatrix" else ndims
        values = _numbers(path, fields, key, n)
        if values is not None and not np.all(np.isfinite(values)):
            raise InputError(path, f"no usable geometry: MetaImage {key} holds NaN or infinite values")
        if values is not None and key in ("ElementSpacing", "ElementSize") and min(abs(v) for v in values) < MIN_VOXEL_MM:
            raise InputError(path, f"no usable geometry: MetaImage {key} {fields[key]} has a zero or tiny voxel side")
        if values is not None and key == "TransformMatrix" and abs(np.linalg.det(np.reshape(values, (ndims, ndims)))) < 1e-6:
            raise InputError(path, f"no usable geometry: MetaImage TransformMatrix {fields[key]} is singular (zero or collinear axes)")
    itemsize = _MET_SIZES.get(fields.get("ElementType", ""))
    if itemsize is None:
        raise InputError(path, f"MetaImage ElementType {fields.get('ElementType', 'missing')!r} is not a known voxel type")
    channels = int(fields.get("ElementNumberOfChannels", "1") or 1)
    expected = int(np.prod(sizes, dtype=np.int64)) * itemsize * channels
    name = fields.get("ElementDataFile", "")
    if name.upper() == "LOCAL":
        data_file, start = path, header_len
    elif name and not (name.upper().startswith("LIST") or "%" in name or " " in name):
        data_file, start = (Path(name) if Path(name).is_absolute() else path.parent / name), 0
    else:
        return  # a list or pattern of slice files: ITK resolves it
    if not data_file.is_file():
        return  # reported by _check_data_file
    available = data_file.stat().st_size - start
    compressed = fields.get("CompressedData", "False").strip().lower() == "true"
    if not compressed:
        if available < expected:
            raise InputError(path, f"image data is truncated: DimSize {sizes} needs {expected} bytes, the file holds {available}")
        return
    with open(data_file, "rb") as f:
        f.seek(start)
        pending = f.read()  # the compressed bytes; what they expand to is counted in 16 MB steps
    stream, total = zlib.decompressobj(), 0
    try:
        while pending and total <= expected and not stream.eof:
            total += len(stream.decompress(pending, 1 << 24))
            pending = stream.unconsumed_tail
    except zlib.error as e:
        raise InputError(path, f"CompressedData = True but the data is not a valid zlib stream ({short(e)})") from None
    if total != expected:
        raise InputError(path, f"compressed image data decompresses to {total} bytes, DimSize {sizes} needs {expected}")


def _check_header(path: Path) -> None:
    """The checks ITK would not make, or would crash on, before it is handed the file."""
    _check_data_file(path)
    if path.suffix.lower() in (".mha", ".mhd"):
        _check_metaimage(path)
    else:
        check_nrrd(path)


def read_sitk(path: Path) -> RawVolume:
    path = Path(path)
    _check_header(path)
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
    _check_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_native_stderr():
            reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(path, f"not a readable NRRD/MetaImage header ({short(e)})") from None
    return tuple(int(v) for v in reader.GetSize()), _affine(reader), _format(path)
