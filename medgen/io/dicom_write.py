"""A model output as a DICOM series beside its DICOM input, slice for slice.

A reader of low-dose PET wants the estimate where the scan is: in the department's viewer or
PACS, with SUV. Each output file is a copy of one input slice's header -- patient, study,
frame of reference, position and orientation, and the tags an SUV needs (units, patient weight,
radiopharmaceutical) -- with the output's pixels, a new SOP instance UID and one new series
(DERIVED, described as the model's output). Where the input has rescale tags (CT, PET) pixels
are int16 with a per-slice rescale slope, so float outputs such as activity keep about 4.5
significant digits, and integer outputs that fit (CT in HU) are stored exactly; elsewhere (MR,
whose rescale tags many viewers ignore) values are rounded. A label map (``labels=True``,
``medgen infer dann-seg --dicom``) is a label series: the input's image type and geometry, pixels
that are the class indices themselves (rescale slope 1, intercept 0) and no intensity units
(``RescaleType``, PET ``Units`` dropped); DICOM SEG would need highdicom. Only single-frame
series can be mirrored.

The output is the user's own data next to their input: it carries the input's patient tags, as
a derived series must to join its study. Nothing of it goes to MLflow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medgen.errors import InputError
from medgen.io.atomic import as_umask_allows
from medgen.io.dicom import _choose_series, _multi_frame, list_series, slice_order
from medgen.io.geometry import from_canonical

INT16_MAX = 32767
# Header values that describe the input's pixels, not the output's.
_STALE = ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "SmallestImagePixelValue",
          "LargestImagePixelValue", "PixelPaddingValue", "PixelPaddingRangeLimit", "RealWorldValueMappingSequence",
          "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod", "IconImageSequence",
          "PlanarConfiguration", "FloatPixelData", "DoubleFloatPixelData")
# The units of the input's values (HU, Bq/ml): a label map's pixels are class indices, unitless.
_UNITS = ("RescaleType", "Units")


def _int16(values: np.ndarray, rescale: bool) -> tuple[np.ndarray, float]:
    """``(pixels, slope)`` with ``pixels * slope ~ values``. Without ``rescale`` (MR images,
    whose rescale tags many viewers ignore) the values are rounded and clipped, slope 1."""
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    fits = finite.min() >= -INT16_MAX - 1 and finite.max() <= INT16_MAX
    if not rescale or (fits and np.array_equal(finite, np.round(finite))):
        return np.clip(np.round(finite), -INT16_MAX - 1, INT16_MAX).astype(np.int16), 1.0
    peak = float(np.abs(finite).max())
    slope = peak / INT16_MAX if peak > 0 else 1.0
    return np.round(finite / slope).astype(np.int16), slope


# medgen modality scheme -> (DICOM Modality, the image storage SOP class a viewer files it under)
_IMAGE_KINDS = {"ct": ("CT", "1.2.840.10008.5.1.4.1.1.2"), "mr": ("MR", "1.2.840.10008.5.1.4.1.1.4")}


def write_dicom_like(out_dir, volume, reference, source, description: str, series: str | None = None,
                     modality: str | None = None, labels: bool = False) -> Path:
    """Write ``volume`` -- canonical (RAS) voxel order on ``reference``'s grid, as
    :func:`medgen.io.write` takes it -- as a DICOM series mirroring the series in folder
    ``source`` that ``reference = medgen.io.read(source)`` came from. Atomic: the folder
    ``out_dir`` appears complete or not at all (an existing one is replaced).

    ``modality``: what the output is in medgen's schemes (``"ct"``, ``"mr"``, ...) when it is not
    what the input was -- an MR translated to CT is written as CT images (Modality, SOP class,
    rescale tags in HU), so a viewer windows it as CT; ``None`` or the input's own: as the input.
    ``labels``: ``volume`` is a label map of class indices, stored exactly as a label series (see
    the module); anything but integers in 0..32767 is a ValueError."""
    source, out_dir = Path(source), Path(out_dir)
    chosen = _choose_series(source, list_series(source), series)
    if _multi_frame(chosen):
        raise InputError(source, "a DICOM output mirrors single-frame slices; this series is multi-frame")
    order = slice_order(source, chosen.headers)
    data = np.asarray(volume.detach().cpu() if hasattr(volume, "detach") else volume, dtype=np.float32)
    data = from_canonical(data.reshape(data.shape[-3:]), np.asarray(reference.meta["original_affine"], np.float64))
    if labels and not (np.array_equal(data, np.round(data)) and data.min() >= 0 and data.max() <= INT16_MAX):
        raise ValueError("a label map for DICOM must hold integer class indices in 0..32767")
    first = chosen.headers[0]
    if data.shape != (int(first.Columns), int(first.Rows), len(order)):
        raise InputError(source, f"output of shape {list(data.shape)} does not match the series "
                                 f"({int(first.Columns)} x {int(first.Rows)} x {len(order)})")
    kind = None if labels else _IMAGE_KINDS.get(modality or "")  # a label map keeps the input's image type
    if kind is not None and str(first.get("Modality", "")) == kind[0]:
        kind = None  # the input's own modality: mirror it as it is
    derivation = description
    if labels:  # a viewer lists series by description: say what these pixels are
        description = description if "label map" in description else f"label map: {description}"
        derivation = f"{description}; pixel values are class indices (0 background), no intensity units"
    series_uid = generate_uid()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp makes the folder 0700: others in a shared lab folder could not open the series
    tmp = as_umask_allows(Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent)))
    try:
        for k, i in enumerate(order):
            ds = pydicom.dcmread(chosen.files[i], force=True)
            # CT, PET: the modality LUT; a label map states slope 1, intercept 0 (its integers
            # pass _int16 exactly), so no reader applies the input's rescale to class indices
            rescale = labels or "RescaleSlope" in ds or "RescaleIntercept" in ds
            if kind is not None:
                ds.Modality, ds.SOPClassUID = kind
                rescale = kind[0] == "CT"  # HU through the modality LUT, as a CT viewer expects
                if rescale:
                    ds.RescaleType = "HU"
                else:
                    for name in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
                        if name in ds:
                            delattr(ds, name)
            pixels, slope = _int16(data[:, :, k].T, rescale)
            for name in _STALE + (_UNITS if labels else ()):
                if name in ds:
                    delattr(ds, name)
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            if rescale:
                ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", "0"
            # A new element: one read from a compressed file would keep its undefined length.
            ds["PixelData"] = DataElement(0x7FE00010, "OW", pixels.tobytes())
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
            ds.SeriesDescription = description[:64]
            ds.SeriesNumber = int(ds.get("SeriesNumber", 0) or 0) + 1000
            ds.DerivationDescription = derivation[:1024]
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # uncompressed, whatever the input was
            ds.save_as(tmp / f"{k + 1:04d}.dcm", enforce_file_format=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
