"""NIfTI-1/2 and Analyze (.hdr/.img) through nibabel."""

from __future__ import annotations

import contextlib
import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medgen.errors import InputError
from medgen.io.atomic import atomic_output
from medgen.io.errors_util import short
from medgen.io.geometry import MIN_VOXEL_MM, RawVolume

SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")


_CHUNK = 1 << 24


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs header repairs (``setting to minimum value of 352``) before medgen has decided
    anything; the CLI promises one line for a bad input, so they are silenced while loading."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        # an Inf pixdim or quaternion makes numpy warn inside nibabel's affine ("invalid value
        # encountered in dot"); check_geometry then refuses that affine in one line of its own
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            yield
    finally:
        logger.setLevel(level)


# nibabel's names fail it for these codes ("data code 2048 not supported"): say what they hold
_UNSUPPORTED = {2048: "complex values (complex256)", 1536: "128-bit floats (float128)", 1: "1-bit binary values"}


def _load_failure(path: Path, e: Exception) -> InputError:
    """The one-line reason nibabel could not load ``path``: a damaged gzip stream first (nibabel
    reports it as "Cannot work out file type" or a zlib error), else the datatype or its note."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"  # else it is no gzip at all: the generic message fits
    if path.name.lower().endswith(".gz") and gzipped and gzip_length(path) == 0:  # raises for a damaged stream
        return InputError(path, "damaged gzip stream: it decompresses to 0 bytes (cut short after its header, or empty)")
    import re

    m = re.search(r"data code (-?\d+) not supported", str(e))
    if m:
        code = int(m.group(1))
        what = _UNSUPPORTED.get(code, "a code the NIfTI standard does not define")
        return InputError(path, f"unsupported NIfTI datatype {code}: {what}; save it as a real integer or float image")
    return InputError(path, f"not a readable NIfTI/Analyze file ({short(e)})")


def gzip_length(path: Path) -> int:
    """Bytes the gzip file at ``path`` decompresses to, after checking every member's CRC and
    size (a file missing its last bytes, with a zeroed checksum or flipped bytes is damaged: nibabel
    reads only as far as the voxels go and would accept it)."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(path, f"damaged gzip stream, the file fails its checksum or is cut short ({short(e)})") from None
    return total


def _raw_header(path: Path, img):
    """The header as stored: nibabel's load repairs some fields (a zero pixdim becomes 1 mm),
    which would hide a volume without valid geometry."""
    holder = img.file_map.get("header") or img.file_map["image"]
    header_file = Path(holder.filename or path)
    opener = gzip.open if header_file.name.lower().endswith(".gz") else open
    try:
        with opener(header_file, "rb") as f:
            return type(img.header).from_fileobj(f, check=False)
    except Exception:  # nibabel could parse it once; keep its view
        return img.header


def _check_header(path: Path, img) -> None:
    """Refuse what the header alone shows to be unusable, before any voxel is allocated."""
    dtype = np.dtype(img.get_data_dtype())
    if dtype.kind == "c":
        raise InputError(path, f"holds complex values ({dtype}): save the magnitude (or real part) as a real image")
    header = _raw_header(path, img)
    ndim = int(header["dim"][0]) if "dim" in header else len(img.shape)
    pixdim = np.asarray(header["pixdim"][1:1 + min(ndim, 3)], dtype=np.float64) if "pixdim" in header else np.ones(3)
    uses_pixdim = not (isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)) and int(header["sform_code"]) > 0)
    if uses_pixdim and (not np.isfinite(pixdim).all() or (np.abs(pixdim) < MIN_VOXEL_MM).any()):
        shown = " x ".join(f"{v:g}" for v in pixdim)
        raise InputError(path, f"no usable geometry: the header's voxel size {shown} mm is zero, tiny or not finite")
    claimed = int(np.prod(img.shape, dtype=np.int64)) * dtype.itemsize
    offset = int(header["vox_offset"]) if "vox_offset" in header else 0
    image_file = Path(img.file_map["image"].filename or path)
    if image_file.name.lower().endswith(".gz"):
        available = gzip_length(image_file) - offset
    else:
        available = image_file.stat().st_size - offset
    if claimed > available:
        raise InputError(path, f"image data is truncated: the header claims {list(img.shape)} {dtype} voxels "
                               f"({claimed} bytes) but the file holds {max(available, 0)}")


def read_nifti(path: Path) -> RawVolume:
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".hdr", ".img")):
        partner = path.with_suffix(".img" if name.endswith(".hdr") else ".hdr")
        if not partner.exists():
            raise InputError(path, f"the paired file {partner.name} is missing (Analyze/NIfTI pairs need .hdr and .img)")
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for a corrupt header
        raise _load_failure(path, e) from None
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise InputError(path, f"has shape {list(img.shape)}: a 4D/multi-channel image, expected one 3D volume")
    _check_header(path, img)
    try:
        with _quiet_nibabel():
            data = img.get_fdata(dtype=np.float32)
    except Exception as e:  # truncated gzip, short file, unsupported dtype
        raise InputError(path, f"image data is truncated or corrupt ({short(e)})") from None
    data = data.reshape(shape + (1,) * (3 - len(shape)))
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    return RawVolume(
        data=data,
        affine=np.asarray(img.affine, dtype=np.float64),
        disk_dtype=np.dtype(img.get_data_dtype()),
        source_format=_format(img),
        rescaled=bool(np.isfinite(slope) and np.isfinite(inter) and (slope != 1 or inter != 0)),
    )


def header_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray, str]:
    """(shape, voxel -> RAS mm affine, format) from the header, without reading the voxels."""
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
            affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:
        raise _load_failure(path, e) from None
    return tuple(int(s) for s in img.shape), affine, _format(img)


def _format(img) -> str:
    return "nifti" if isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)) else "analyze"


def check_output_path(path: Path) -> None:
    """InputError unless ``path`` can become a file: not an existing folder, no file on the way."""
    if path.is_dir():
        raise InputError(path, "is a folder: give the output file's name (e.g. out/scan.nii.gz)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(path, f"cannot be created: {parent} is a file, not a folder")
            break


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` (X, Y, Z[, C]) with ``affine`` atomically: a temporary file in the same
    folder, then ``os.replace``, so a crash never leaves a half-written output."""
    path = Path(path)
    check_output_path(path)
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
