"""read -> write(reference) -> read keeps geometry (affine within 1e-4) and values, per format."""

import nibabel as nib
import numpy as np
import pytest

from medgen.io import header_geometry, read, voxel_spacing, write

FORMATS = ["nifti", "nrrd", "mha", "mhd", "dicom_series", "enhanced_ct"]


def _make(fmt, tmp_path, builders, ct_stored):
    """Writes one volume in ``fmt``; returns (path, expected on-disk RAS affine, expected values
    in file voxel order)."""
    rng = np.random.default_rng(1)
    values = rng.normal(100, 30, size=(12, 10, 7)).astype(np.float32)
    if fmt == "nifti":
        # Stored as L, I, P (axes flipped and permuted) so canonicalisation has work to do.
        affine = np.array([[-0.9, 0, 0, 50.0], [0, 0, -2.0, 30.0], [0, -1.2, 0, 10.0], [0, 0, 0, 1]])
        return builders.nifti(tmp_path / "v.nii.gz", values, affine), tmp_path / "v.nii.gz", values
    if fmt in ("nrrd", "mha", "mhd"):
        path = tmp_path / f"v.{fmt}"
        return builders.sitk(path, values), path, values
    if fmt == "dicom_series":
        folder = tmp_path / "series"
        affine = builders.dicom_series(folder, ct_stored, direction=builders.rotation_z(30))
        return affine, folder, ct_stored.astype(np.float32) - 1024
    path = tmp_path / "enhanced.dcm"
    affine = builders.enhanced_ct(path, ct_stored)
    return affine, path, ct_stored.astype(np.float32) * 2 - 1000


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_keeps_geometry_and_values(fmt, tmp_path, builders, ct_stored):
    expected_affine, path, expected = _make(fmt, tmp_path, builders, ct_stored)
    vol = read(path)

    assert vol.dtype.is_floating_point and vol.ndim == 3
    assert nib.aff2axcodes(vol.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(vol.meta["original_affine"].numpy(), expected_affine, atol=1e-4)
    assert vol.meta["original_shape"] == expected.shape

    out = write(tmp_path / "out" / "copy.nii.gz", vol, reference=vol)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, expected_affine, atol=1e-4)
    np.testing.assert_allclose(img.get_fdata(), expected, atol=1e-3)

    again = read(out)
    np.testing.assert_allclose(again.affine.numpy(), vol.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(again.numpy(), vol.numpy(), atol=1e-3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_voxel_spacing_from_the_header_matches_the_read_volume(fmt, tmp_path, builders, ct_stored):
    _, path, _ = _make(fmt, tmp_path, builders, ct_stored)
    vol = read(path)
    # per RAS axis of the canonical volume, also for the permuted, flipped NIfTI
    assert voxel_spacing(path) == pytest.approx(vol.meta["spacing"], abs=1e-5)
    assert voxel_spacing(path) == pytest.approx(tuple(vol.affine[:3, :3].norm(dim=0).tolist()), abs=1e-5)
    shape, affine, fmt = header_geometry(path)  # the file as stored, named as read() names it
    assert shape == vol.meta["original_shape"] and fmt == vol.meta["source_format"]
    np.testing.assert_allclose(affine, vol.meta["original_affine"].numpy(), atol=1e-4)


def test_canonical_voxels_sit_at_the_same_world_point(tmp_path, builders):
    """A voxel's world position (affine @ index) is the same before and after reorientation."""
    values = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    affine = np.array([[0, 0, 1.5, -3.0], [-2.0, 0, 0, 8.0], [0, -1.0, 0, 4.0], [0, 0, 0, 1]])
    builders.nifti(tmp_path / "p.nii", values, affine)
    vol = read(tmp_path / "p.nii")
    assert vol.shape == (4, 6, 5)  # axes permuted into R, A, S
    for index in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        world = affine @ np.array([*index, 1.0])
        canon_index = np.linalg.solve(vol.affine.numpy(), world)[:3]
        canon_index = tuple(int(round(v)) for v in canon_index)
        assert float(vol[canon_index]) == values[index]
    assert vol.meta["spacing"] == pytest.approx((1.5, 2.0, 1.0))


def test_write_without_reference_uses_volume_affine(tmp_path, builders):
    values = np.random.default_rng(0).random((8, 6, 5)).astype(np.float32)
    affine = np.diag([-1.0, 2.0, 0.5, 1.0])
    builders.nifti(tmp_path / "a.nii.gz", values, affine)
    vol = read(tmp_path / "a.nii.gz")
    out = write(tmp_path / "b.nii", vol * 2)
    again = read(out)
    np.testing.assert_allclose(again.affine.numpy(), vol.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(again.numpy(), vol.numpy() * 2, rtol=1e-6)


def test_write_channel_first_model_output(tmp_path, builders):
    values = np.random.default_rng(0).random((8, 6, 5)).astype(np.float32)
    path = tmp_path / "a.nii.gz"
    builders.nifti(path, values, np.diag([-1.0, -1.0, 1.0, 1.0]))
    vol = read(path)
    out = write(tmp_path / "o.nii.gz", vol[None] + 1, reference=vol)  # (1, X, Y, Z)
    np.testing.assert_allclose(nib.load(str(out)).get_fdata(), values + 1, rtol=1e-6)


def test_write_is_atomic_and_refuses_bad_volumes(tmp_path, builders):
    from medgen.errors import InputError

    with pytest.raises(InputError, match="no finite values"):
        write(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="NIfTI"):
        write(tmp_path / "x.png", np.zeros((4, 4, 4), dtype=np.float32))
    values = np.zeros((4, 5, 6), dtype=np.float32)
    builders.nifti(tmp_path / "r.nii.gz", values, np.eye(4))
    ref = read(tmp_path / "r.nii.gz")
    with pytest.raises(InputError, match="does not match"):
        write(tmp_path / "bad.nii.gz", np.zeros((4, 4, 4), dtype=np.float32), reference=ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nii.gz"]  # no temp or partial files


def test_read_volumes_collate_into_a_monai_batch(tmp_path, builders):
    """Meta values must be collatable (MONAI's DataLoader rejects None in meta)."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import EnsureChannelFirst

    builders.nifti(tmp_path / "a.nii.gz", np.zeros((6, 5, 4), np.float32), np.eye(4))
    vols = [read(tmp_path / "a.nii.gz") for _ in range(2)]
    batch = next(iter(DataLoader(Dataset(vols, transform=EnsureChannelFirst()), batch_size=2)))
    assert batch.shape == (2, 1, 6, 5, 4)
    assert batch.meta["modality"] == ["", ""]
