"""A model output written as a DICOM series mirroring its DICOM input (`medgen infer --dicom`)."""

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from medgen.errors import InputError
from medgen.io import read
from medgen.io.dicom_write import write_dicom_like
from medgen.io.geometry import from_canonical


def _sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_activity_series_mirrors_the_input(tmp_path, builders, ct_stored):
    folder = tmp_path / "pet"
    builders.dicom_series(folder, ct_stored, direction=builders.rotation_z(30), slope=0.05, intercept=0.0,
                          modality="PT")
    pet = read(folder)
    estimate = pet * 1.7 + 0.013  # floats in the input's units
    written = write_dicom_like(tmp_path / "est", estimate, pet, folder, "medgen test")
    back = read(written)
    assert back.shape == pet.shape and torch.allclose(back.affine, pet.affine, atol=1e-4)
    slope_bound = float(estimate.abs().max()) / 32767  # each slice's slope is at most this
    assert float((back - estimate).abs().max()) <= 0.5 * slope_bound + 1e-4  # + float32 rounding of ~300
    heads = [pydicom.dcmread(f) for f in sorted(written.iterdir())]
    source = pydicom.dcmread(next(folder.iterdir()))
    assert len(heads) == ct_stored.shape[2] and len({h.SOPInstanceUID for h in heads}) == len(heads)
    assert {h.SeriesInstanceUID for h in heads} == {heads[0].SeriesInstanceUID} != {source.SeriesInstanceUID}
    for h in heads:  # the same patient and study, a new derived series
        assert str(h.PatientName) == "Doe^Jane" and h.StudyInstanceUID == source.StudyInstanceUID
        assert h.SeriesDescription == "medgen test" and list(h.ImageType) == ["DERIVED", "SECONDARY"]
        assert h.Modality == "PT" and float(h.RescaleSlope) <= slope_bound * (1 + 1e-6)
    ours, theirs = _sitk_series(written), _sitk_series(folder)  # another reader agrees on the geometry
    assert ours.GetSize() == theirs.GetSize()
    np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), atol=1e-6)


def test_hounsfield_units_are_exact_and_mr_pixels_stay_unscaled(tmp_path, builders, ct_stored):
    ct_folder = tmp_path / "ct"
    builders.dicom_series(ct_folder, ct_stored)  # slope 1, intercept -1024
    ct = read(ct_folder)
    back = read(write_dicom_like(tmp_path / "ct_out", ct - 24, ct, ct_folder, "hu"))
    assert torch.equal(back.as_tensor(), (ct - 24).as_tensor())

    mr_folder = tmp_path / "mr"
    builders.dicom_series(mr_folder, ct_stored, slope=1.0, intercept=0.0, modality="MR")
    for f in mr_folder.iterdir():  # MR images carry no rescale tags
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.save_as(f, enforce_file_format=True)
    mr = read(mr_folder)
    out = write_dicom_like(tmp_path / "mr_out", mr * 1.5 + 0.25, mr, mr_folder, "synthetic")
    assert "RescaleSlope" not in pydicom.dcmread(next(out.iterdir()))
    assert float((read(out) - (mr * 1.5 + 0.25)).abs().max()) <= 0.5


def test_a_mismatched_output_writes_nothing(tmp_path, builders, ct_stored):
    folder = tmp_path / "ct"
    builders.dicom_series(folder, ct_stored)
    ct = read(folder)
    with pytest.raises(InputError, match="does not match the series"):
        write_dicom_like(tmp_path / "out", torch.zeros(5, 5, 5), ct, folder, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]  # no output folder, no temporary one


def test_cli_infer_writes_a_dicom_series_beside_a_dicom_input(tmp_path, builders, ct_stored, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    import toy  # noqa: F401  (registers the "toy" task)

    from medgen.cli import main
    from medgen.engine import train

    run_id = train(toy.toy_config(trainer={"max_epochs": 1, "val_images": False}, tracking={"enabled": False}))
    ckpt = f"checkpoints/{run_id}/last.pt"
    folder = tmp_path / "scan"
    builders.dicom_series(folder, ct_stored)
    assert main(["infer", "toy", "--run", ckpt, "--input", str(folder), "--output", str(tmp_path / "out"), "--dicom"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / "scan_toy.nii.gz"), str(tmp_path / "out" / "scan_toy_dicom")]
    assert len(list((tmp_path / "out" / "scan_toy_dicom").iterdir())) == ct_stored.shape[2]
    assert f"run {run_id}" in pydicom.dcmread(next((tmp_path / "out" / "scan_toy_dicom").iterdir())).SeriesDescription
    nifti = tmp_path / "scan.nii.gz"
    builders.nifti(nifti, np.zeros((8, 8, 8), np.float32), np.eye(4))
    assert main(["infer", "toy", "--run", ckpt, "--input", str(nifti), "--output", str(tmp_path / "o2"), "--dicom"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dicom" in err[0] and not (tmp_path / "o2").exists()


def test_a_series_without_geometry_keeps_its_acquisition_order(tmp_path, builders, ct_stored):
    folder = tmp_path / "sc"
    builders.dicom_series(folder, ct_stored)
    files = sorted(folder.iterdir())
    names = np.random.default_rng(5).permutation(len(files))  # file names unrelated to InstanceNumber
    for f, n in zip(files, names):  # a secondary capture: no position or orientation, only InstanceNumber
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        f.unlink()
        ds.save_as(folder / f"x{n:03d}", enforce_file_format=True)
    vol = read(folder)
    on_disk = from_canonical(vol.numpy(), vol.meta["original_affine"].numpy())
    by_instance = sorted((pydicom.dcmread(f) for f in folder.iterdir()), key=lambda d: int(d.InstanceNumber))
    for k, ds in enumerate(by_instance):  # the reader stacks slices in acquisition order
        np.testing.assert_array_equal(on_disk[:, :, k], ds.pixel_array.T.astype(np.float32) - 1024)
    back = read(write_dicom_like(tmp_path / "out", vol + 7, vol, folder, "order"))
    assert torch.equal(back.as_tensor(), (vol + 7).as_tensor())


def test_a_label_map_is_a_label_series_of_the_class_indices(tmp_path, builders, ct_stored):
    folder = tmp_path / "ct"  # CT: slope 1, intercept -1024, units HU; the label series has none of them
    builders.dicom_series(folder, ct_stored, direction=builders.rotation_z(30))
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.RescaleType, ds.WindowCenter, ds.WindowWidth = "HU", 40, 400
        ds.save_as(f, enforce_file_format=True)
    ct = read(folder)
    labels = ((ct + 1024) % 3).to(torch.int16)  # classes 0, 1, 2 next to each other: any blend would show
    written = write_dicom_like(tmp_path / "seg", labels, ct, folder, "medgen test", labels=True)
    back = read(written)
    assert torch.equal(back.as_tensor(), labels.as_tensor().float())
    assert torch.allclose(back.affine, ct.affine, atol=1e-4) and back.shape == ct.shape
    source = pydicom.dcmread(next(folder.iterdir()))
    for f in written.iterdir():
        h = pydicom.dcmread(f)
        assert float(h.RescaleSlope) == 1.0 and float(h.RescaleIntercept) == 0.0
        assert "RescaleType" not in h and "WindowCenter" not in h and h.Modality == "CT"
        assert h.SeriesDescription == "label map: medgen test" and "class indices" in h.DerivationDescription
        assert h.SeriesInstanceUID != source.SeriesInstanceUID and h.SOPInstanceUID != source.SOPInstanceUID
        assert set(h.pixel_array.flatten().tolist()) <= {0, 1, 2}
        # the patient module as the input had it: nothing added, nothing changed
        assert {e.keyword: e.value for e in h if e.tag.group == 0x0010} == \
            {e.keyword: e.value for e in source if e.tag.group == 0x0010}
    with pytest.raises(ValueError, match="class indices"):
        write_dicom_like(tmp_path / "bad", labels + 0.5, ct, folder, "x", labels=True)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_series_folder_follows_the_umask(tmp_path, builders, ct_stored, umask):
    """tempfile.mkdtemp made it 0700 under any umask: others could not open the series."""
    import os
    import stat

    folder = tmp_path / "ct"
    builders.dicom_series(folder, ct_stored, direction=np.eye(3), slope=1.0, intercept=-1024.0, modality="CT")
    ct = read(folder)
    old = os.umask(umask)
    try:
        written = write_dicom_like(tmp_path / "out", ct - 24, ct, folder, "hu")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(f.stat().st_mode) for f in written.iterdir()} == {0o666 & ~umask}
