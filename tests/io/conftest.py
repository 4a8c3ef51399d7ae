"""Builders of small on-disk volumes for the medgen.io tests: DICOM series and enhanced
multi-frame files written with pydicom, NRRD/MetaImage with SimpleITK, NIfTI with nibabel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-734291",
    "PatientBirthDate": "19610412",
    "StudyDate": "20240102",
    "InstitutionName": "St Elsewhere Hospital",
    "AccessionNumber": "ACC99817",
}
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def lps_geometry_to_ras(direction, spacing, origin) -> np.ndarray:
    """Expected RAS affine, computed here independently of medgen.io.geometry."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)[None, :]
    m[:3, 3] = origin
    m[0] *= -1
    m[1] *= -1
    return m


def rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def _base_dataset(sop_class: str, series_uid: str, study_uid: str, modality: str, description: str, patient: dict):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesDescription = description
    for k, v in patient.items():
        setattr(ds, k, v)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def write_dicom_series(folder, stored, spacing=(0.7, 0.8, 2.5), origin=(-40.0, -30.0, 12.0),
                       direction=np.eye(3), slope=1.0, intercept=-1024.0, description="axial",
                       modality="CT", patient=PATIENT, series_uid=None, seed=0, names="shuffled"):
    """One single-frame file per slice of ``stored`` (X, Y, Z int16), file names in a shuffled
    order without suffix so that sorting must come from the geometry, not the names."""
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.asarray(direction, float)
    row_dir, col_dir, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    nz = stored.shape[2]
    perm = np.random.default_rng(seed).permutation(nz)
    for k in range(nz):
        ds = _base_dataset(CT_STORAGE, series_uid, study_uid, modality, description, patient)
        pos = np.asarray(origin) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in list(row_dir) + list(col_dir)]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # (between rows, between columns)
        ds.SliceThickness = spacing[2]
        ds.InstanceNumber = int(perm[k]) + 1
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
        name = f"IM{perm[k]:04d}" if names == "shuffled" else f"slice{k:03d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    return lps_geometry_to_ras(direction, spacing, origin)


def write_enhanced_ct(path, stored, spacing=(0.9, 0.6, 3.0), origin=(10.0, -20.0, -50.0),
                      direction=np.eye(3), slope=2.0, intercept=-1000.0, patient=PATIENT):
    """An Enhanced CT multi-frame file with shared and per-frame functional groups; frames are
    stored in reverse slice order (the reader must sort by per-frame position)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    direction = np.asarray(direction, float)
    ds = _base_dataset(ENHANCED_CT_STORAGE, generate_uid(), generate_uid(), "CT", "enhanced", patient)
    nx, ny, nz = stored.shape
    ds.Rows, ds.Columns, ds.NumberOfFrames = ny, nx, nz
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]
    measures.SliceThickness = spacing[2]
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{v:.8f}" for v in list(direction[:, 0]) + list(direction[:, 1])]
    transform = Dataset()
    transform.RescaleSlope = slope
    transform.RescaleIntercept = intercept
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame, frames = [], []
    for k in reversed(range(nz)):
        plane = Dataset()
        plane.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin) + k * spacing[2] * direction[:, 2]]
        item = Dataset()
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
        frames.append(stored[:, :, k].T)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.ascontiguousarray(np.stack(frames)).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return lps_geometry_to_ras(direction, spacing, origin)


def write_sitk(path, array_xyz, spacing=(0.8, 1.1, 2.0), origin=(12.0, -7.0, 30.0), direction=None):
    """NRRD / MHA / MHD via SimpleITK with an oblique direction; returns the expected RAS affine."""
    import SimpleITK as sitk

    direction = rotation_z(25) if direction is None else np.asarray(direction, float)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(img, str(path))
    return lps_geometry_to_ras(direction, spacing, origin)


def write_nifti(path, array_xyz, affine):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array_xyz, affine), str(path))
    return np.asarray(affine, float)


@pytest.fixture
def ct_stored():
    """Stored CT values (int16, before the -1024 intercept): 20 x 16 x 12 with a unique value
    per voxel, so any axis swap or flip shows up."""
    return np.arange(20 * 16 * 12).reshape(20, 16, 12).astype(np.int16)


@pytest.fixture
def builders():
    """The writers above, for tests in this folder."""

    class B:
        dicom_series = staticmethod(write_dicom_series)
        enhanced_ct = staticmethod(write_enhanced_ct)
        sitk = staticmethod(write_sitk)
        nifti = staticmethod(write_nifti)
        rotation_z = staticmethod(rotation_z)
        patient = PATIENT

    return B
