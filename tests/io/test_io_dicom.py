"""DICOM specifics: agreement with SimpleITK's series reader, HU rescale, slice sorting,
series selection, multi-frame files, pydicom's shipped files, and no patient identifiers."""

import json

import nibabel as nib

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from medgen.cli import main
from medgen.errors import InputError
from medgen.io import describe, is_volume_path, read
from medgen.io.geometry import from_canonical


def _testdata(name):
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return path


@pytest.mark.parametrize("rotation", [0, 30])
def test_series_matches_simpleitk_series_reader(tmp_path, builders, ct_stored, rotation):
    folder = tmp_path / "ct"
    builders.dicom_series(folder, ct_stored, direction=builders.rotation_z(rotation))
    (folder / "notes.txt").write_text("not dicom")  # ignored: recognised by content

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    vol = read(folder)

    raw_affine = vol.meta["original_affine"].numpy()
    assert vol.meta["original_shape"] == ref.GetSize()
    assert np.allclose(np.sqrt((raw_affine[:3, :3] ** 2).sum(0)), ref.GetSpacing(), atol=1e-4)
    origin_lps = raw_affine[:3, 3] * np.array([-1, -1, 1])
    np.testing.assert_allclose(origin_lps, ref.GetOrigin(), atol=1e-4)
    direction_lps = (raw_affine[:3, :3] / np.asarray(ref.GetSpacing())) * np.array([[-1], [-1], [1]])
    np.testing.assert_allclose(direction_lps.ravel(), ref.GetDirection(), atol=1e-4)
    # Same HU values voxel for voxel once back in file order.
    on_disk = from_canonical(vol.numpy(), raw_affine)
    np.testing.assert_allclose(on_disk, sitk.GetArrayFromImage(ref).transpose(2, 1, 0), atol=1e-3)


def test_series_spacing_comes_from_headers_without_pixel_data(tmp_path, builders, ct_stored, monkeypatch):
    from medgen.io import dicom, voxel_spacing

    folder = tmp_path / "ct"
    builders.dicom_series(folder, ct_stored, spacing=(0.7, 0.8, 2.5), direction=builders.rotation_z(30))
    expected = read(folder).meta["spacing"]

    def no_pixels(path):
        raise AssertionError(f"pixel data of {path} was read")

    monkeypatch.setattr(dicom, "_file_loader", no_pixels)
    assert voxel_spacing(folder) == pytest.approx(expected, abs=1e-6)
    assert sorted(expected) == pytest.approx([0.7, 0.8, 2.5])


def test_rescale_gives_hounsfield_units_and_slices_sorted_by_position(tmp_path, builders, ct_stored):
    folder = tmp_path / "ct"
    builders.dicom_series(folder, ct_stored, slope=0.5, intercept=-1024.0)
    vol = read(folder)
    # Axial LPS series: canonical RAS flips x and y, z already ascends.
    expected = (ct_stored.astype(np.float32) * 0.5 - 1024.0)[::-1, ::-1, :]
    np.testing.assert_allclose(vol.numpy(), expected)
    assert vol.meta["modality"] == "CT"
    assert vol.meta["spacing"] == pytest.approx((0.7, 0.8, 2.5))


def test_no_patient_identifiers_in_meta_or_describe(tmp_path, builders, ct_stored):
    folder = tmp_path / "ct"
    builders.dicom_series(folder, ct_stored)
    vol = read(folder)
    text = str(vol.meta) + json.dumps(describe(folder))
    for value in builders.patient.values():
        assert value not in text
        assert value.split("^")[0] not in text
    assert set(vol.meta) <= {
        "filename_or_obj", "spacing", "original_affine", "original_shape", "original_dtype", "spatial_shape",
        "original_channel_dim", "space", "modality", "source_format", "series_description", "affine",
    }


def test_several_series_refused_unless_one_is_chosen(tmp_path, builders, ct_stored):
    folder = tmp_path / "study"
    builders.dicom_series(folder / "a", ct_stored, description="axial")
    builders.dicom_series(folder / "b", ct_stored[:, :, :5], description="thin", series_uid="1.2.3.4.5")
    with pytest.raises(InputError) as err:
        read(folder)
    msg = str(err.value)
    assert "2 DICOM series" in msg and "1.2.3.4.5" in msg and "'thin' (5 files)" in msg and "(12 files)" in msg
    assert "\n" not in msg
    assert read(folder, series="thin").shape == (20, 16, 5)
    assert read(folder, series="1.2.3.4.5").shape == (20, 16, 5)
    assert read(folder, series="axial").shape == (20, 16, 12)
    with pytest.raises(InputError, match="no series 'sagittal'"):
        read(folder, series="sagittal")
    facts = describe(folder)
    assert facts["series"] == 2 and facts["shape"] is None and len(facts["series_list"]) == 2
    assert describe(folder, series="thin")["series"] == 2


def test_series_chosen_by_number_uid_or_part_of_its_description(tmp_path, builders, ct_stored):
    """--series needed the exact SeriesDescription; the number, the UID or an unambiguous part
    of the description (in any case) do too, and an ambiguous part is refused with the choices."""
    from medgen.commands.info import format_table

    folder = tmp_path / "study"
    builders.dicom_series(folder / "a", ct_stored, description="T1 MPRAGE sag", series_uid="1.2.3.1")
    builders.dicom_series(folder / "b", ct_stored[:, :, :5], description="T1 MPRAGE post-contrast", series_uid="1.2.3.2")
    builders.dicom_series(folder / "c", ct_stored[:, :, :3], description="FLAIR axial", series_uid="1.2.3.3")
    for sub, number in (("a", 3), ("b", 12), ("c", 7)):
        for f in (folder / sub).iterdir():
            ds = pydicom.dcmread(f)
            ds.SeriesNumber = number
            ds.save_as(f)
    assert read(folder, series="12").shape == (20, 16, 5)          # series number
    assert read(folder, series="1.2.3.1").shape == (20, 16, 12)    # UID
    assert read(folder, series="flair").shape == (20, 16, 3)       # part of the description, any case
    assert read(folder, series="post").shape == (20, 16, 5)
    assert read(folder, series="t1 mprage sag").shape == (20, 16, 12)  # whole description, any case
    with pytest.raises(InputError, match="several series match 'MPRAGE'") as err:
        read(folder, series="MPRAGE")
    assert "1.2.3.1" in str(err.value) and "1.2.3.2" in str(err.value) and "1.2.3.3" not in str(err.value)
    with pytest.raises(InputError, match="no series 'dwi'; available: "):
        read(folder, series="dwi")
    listing = format_table(describe(folder))
    assert "1.2.3.2  number 12  'T1 MPRAGE post-contrast'" in listing and "choose one with --series" in listing
    assert main(["convert", str(folder), str(tmp_path / "flair.nii.gz"), "--series", "FLAIR"]) == 0
    assert nib.load(str(tmp_path / "flair.nii.gz")).shape == (20, 16, 3)


def test_sagittal_series_is_reoriented_to_ras(tmp_path, builders, ct_stored):
    # Along a row: anterior->posterior; down a column: superior->inferior; slices stacked along
    # row x column = towards the patient's right (LPS -x).
    direction = np.array([[0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]])
    folder = tmp_path / "sag"
    builders.dicom_series(folder, ct_stored, direction=direction)
    vol = read(folder)
    import nibabel as nib

    assert nib.aff2axcodes(vol.affine.numpy()) == ("R", "A", "S")
    assert describe(folder)["orientation"] == "PIR"
    # x (R) <- slices (12), y (A) <- rows axis (16), z (S) <- columns axis (20)
    assert vol.shape == (12, 20, 16)


def test_enhanced_multiframe_sorted_and_rescaled(tmp_path, builders, ct_stored):
    path = tmp_path / "enh.dcm"
    builders.enhanced_ct(path, ct_stored, slope=2.0, intercept=-1000.0)
    vol = read(path)
    np.testing.assert_allclose(vol.numpy(), (ct_stored * 2.0 - 1000.0)[::-1, ::-1, :])
    assert describe(path)["shape"] == [20, 16, 12]


def test_mosaic_is_refused(tmp_path, builders, ct_stored):
    folder = tmp_path / "mosaic"
    builders.dicom_series(folder, ct_stored[:, :, :1])
    f = next(folder.iterdir())
    ds = pydicom.dcmread(f)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "MOSAIC"]
    ds.save_as(f)
    with pytest.raises(InputError, match="mosaic"):
        read(f)


def test_pydicom_ct_small_is_read_in_hounsfield_units():
    path = _testdata("CT_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read(path)
    assert vol.shape == (128, 128, 1)
    assert vol.meta["modality"] == "CT"
    assert vol.meta["spacing"] == pytest.approx((0.661468, 0.661468, 5.0))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(vol.numpy()[::-1, ::-1, 0], hu.T)
    origin_ras = np.array([-1, -1, 1]) * np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(vol.meta["original_affine"].numpy()[:3, 3], origin_ras, atol=1e-4)
    assert str(ds.PatientName) not in str(vol.meta) and ds.PatientID not in str(vol.meta)


def test_pydicom_mr_small_and_rle_agree():
    a = read(_testdata("MR_small.dcm"))
    b = read(_testdata("MR_small_RLE.dcm"))
    assert a.shape == (64, 64, 1) and a.meta["modality"] == "MR"
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_pydicom_rtdose_multiframe_volume():
    """RT dose: 15 frames placed by GridFrameOffsetVector, values scaled by DoseGridScaling."""
    path = _testdata("rtdose.dcm")
    ds = pydicom.dcmread(path)
    vol = read(path)
    assert vol.shape == (10, 10, 15)
    assert vol.meta["spacing"] == pytest.approx((10.0, 10.0, 5.0))
    gy = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)  # (frames, rows, cols)
    np.testing.assert_allclose(vol.numpy()[::-1, ::-1, :], gy.transpose(2, 1, 0), rtol=1e-6)
    assert describe(path)["modality"] == "RTDOSE"


def test_is_volume_path(tmp_path, builders, ct_stored):
    folder = tmp_path / "ct"
    builders.dicom_series(folder, ct_stored[:, :, :2])
    assert is_volume_path(folder)
    assert is_volume_path(next(p for p in folder.iterdir()))
    (tmp_path / "empty").mkdir()
    assert not is_volume_path(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hello")
    assert not is_volume_path(tmp_path / "x.txt")
    assert not is_volume_path(tmp_path / "missing.nii.gz")


def test_convert_dicom_series_float_rescale(tmp_path, builders):
    folder = tmp_path / "ct"
    stored = np.arange(6 * 5 * 4).reshape(6, 5, 4).astype(np.int16)
    expected_affine = builders.dicom_series(folder, stored, slope=0.25, intercept=-1000.0)
    out = tmp_path / "ct.nii"
    assert main(["convert", str(folder), str(out)]) == 0
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, expected_affine, atol=1e-4)
    np.testing.assert_allclose(img.get_fdata(), stored * 0.25 - 1000.0)


def test_pydicom_enhanced_segmentation_uses_functional_groups():
    """liver_1frame.dcm: an enhanced (SEG) object whose geometry lives only in the shared and
    per-frame functional groups."""
    vol = read(_testdata("liver_1frame.dcm"))
    assert vol.shape == (512, 512, 1) and vol.meta["modality"] == "SEG"
    assert vol.meta["spacing"] == pytest.approx((0.810547, 0.810547, 1.0))
    np.testing.assert_allclose(vol.meta["original_affine"].numpy()[:3, 3], [235.2, 226.8, -128.69], atol=1e-4)
