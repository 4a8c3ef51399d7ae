"""No DICOM patient identifier may reach MLflow (params, tags, metrics, artifacts, the DB)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

import toy  # noqa: E402
from medgen.engine import train  # noqa: E402
from medgen.tracking import resolve_tracking_uri  # noqa: E402

# Identifying attributes of the DICOM basic application-level confidentiality profile (PS3.15 E.1)
IDENTIFIERS = {
    "PatientName": "Lovelace^Augusta^Ada",
    "PatientID": "PID-58213377",
    "PatientBirthDate": "18151210",
    "OtherPatientIDs": "ALT-99120044",
    "PatientAddress": "12 St James Square London",
    "InstitutionName": "Analytical Engine Infirmary",
    "ReferringPhysicianName": "Babbage^Charles",
    "AccessionNumber": "ACC-31415926",
    "StudyID": "STUDY-27182818",
    "StudyDate": "19990317",
    "StationName": "STATION-DE-0042",
}


def write_identified_series(folder: Path, n_slices: int = 12, size: int = 20) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    volume = (rng.random((n_slices, size, size)) * 1000).astype(np.int16)
    study, series = generate_uid(), generate_uid()
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        for key, value in IDENTIFIERS.items():
            setattr(ds, key, value)
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MR", study, series
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(2 * k)]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = volume[k].tobytes()
        ds.save_as(folder / f"im{k:03d}.dcm", enforce_file_format=True)


def test_dicom_identifiers_never_reach_mlflow(tmp_path):
    series = tmp_path / "series01"
    write_identified_series(series)
    config = toy.toy_config(
        data={"root": str(series), "size": 12},
        trainer={"max_epochs": 2, "val_images": True},
        tracking={"log_model": True, "register_model": True},
    )
    run_id = train(config)
    client = MlflowClient(resolve_tracking_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    texts = [str(run.data.params), str(run.data.tags), str(list(run.data.metrics))]
    assert {f.path for f in client.list_artifacts(run_id, "samples")} == {"samples/epoch_001.png", "samples/epoch_002.png"}
    files = [p for p in tmp_path.rglob("*") if p.is_file() and series not in p.parents]
    assert any(p.suffix == ".png" for p in files) and any(p.name == "best.pt" for p in files)
    assert any(p.name == "MLmodel" for p in files)  # the logged model is scanned too
    assert IDENTIFIERS["PatientName"].encode() in (series / "im000.dcm").read_bytes()  # the scan can see it
    blobs = [p.read_bytes() for p in files]  # mlflow.db, artifacts, checkpoints, logged model
    for key, value in IDENTIFIERS.items():
        needles = {value, value.replace("^", " ")}
        for needle in needles:
            assert not any(needle in t for t in texts), key
            for p, blob in zip(files, blobs):
                assert needle.encode() not in blob, f"{key} found in {p}"
