"""`medgen convert IN OUT.nii.gz`: any readable volume to NIfTI with its geometry kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HELP = "Convert a volume (NIfTI, NRRD, MHA/MHD, DICOM file or folder) to NIfTI, keeping its geometry."


def add_arguments(parser) -> None:
    parser.add_argument("input", help="volume file or DICOM folder")
    parser.add_argument("output", help="output NIfTI file (.nii or .nii.gz)")
    parser.add_argument("--series", default=None, help="DICOM folder with several series: SeriesInstanceUID or description")


def _storage_dtype(volume) -> np.dtype:
    """The input's on-disk integer dtype when every value fits it exactly, else float32."""
    try:
        dtype = np.dtype(volume.meta.get("original_dtype", "float32"))
    except TypeError:
        return np.dtype(np.float32)
    if not np.issubdtype(dtype, np.integer):
        return np.dtype(np.float32)
    values = volume.as_tensor().numpy()
    info = np.iinfo(dtype)
    if not np.isfinite(values).all() or values.min() < info.min or values.max() > info.max:
        return np.dtype(np.float32)
    return dtype if np.array_equal(np.round(values), values) else np.dtype(np.float32)


def convert(input_path, output_path, series: str | None = None) -> Path:
    """Read ``input_path`` and write it as NIfTI with the input's own voxel grid and affine."""
    from medgen.io import read, write

    volume = read(input_path, series=series)
    return write(output_path, volume, reference=volume, dtype=_storage_dtype(volume))


def run(args) -> int:
    out = convert(args.input, args.output, series=args.series)
    print(out)
    return 0
