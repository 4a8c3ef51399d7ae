"""An empty given mask (data.mask_key, e.g. brain_mask) is a one-line error naming its file
(issue 19): it is where a scan is scored, calibrated and standardised, and no fallback is what
was asked for. ``medgen.transforms.masks.require_voxels`` is the check."""

import numpy as np
import pytest
import torch

from medgen.errors import InputError
from medgen.transforms.masks import require_voxels


@pytest.mark.parametrize("empty", [np.zeros((4, 4, 4), bool), torch.zeros(1, 4, 4, 4, dtype=torch.bool)])
def test_an_empty_mask_is_one_line_naming_its_file(empty, tmp_path):
    path = tmp_path / "sub-002" / "brain_mask.nii.gz"
    with pytest.raises(InputError) as caught:
        require_voxels(empty, path, "subject 'sub-002': 'brain_mask'")
    text = str(caught.value)
    assert len(text.splitlines()) == 1 and str(path) in text and "'brain_mask' is empty" in text


def test_a_mask_with_one_voxel_passes_unchanged(tmp_path):
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask[1, 2, 3] = True
    assert require_voxels(mask, tmp_path / "m.nii.gz", "mask") is mask


def _subjects(root, empty_subject):
    import nibabel as nib

    for s in ("sub-001", "sub-002", "sub-003"):
        (root / s).mkdir(parents=True)
        image = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32) * 100
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / s / "t1.nii.gz"))
        mask = np.zeros((16, 16, 16), np.uint8)
        if s != empty_subject:
            mask[4:12, 4:12, 4:12] = 1
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(root / s / "brain_mask.nii.gz"))


def test_volumes_without_standardisation_refuse_an_empty_brain_mask(tmp_path):
    from medgen.data.volumes import Volumes

    _subjects(tmp_path / "root", empty_subject="sub-002")
    data = Volumes(tmp_path / "root", key="t1", mask_key="brain_mask", spacing=None, patch_size=(8, 8, 8), cache=False)
    item = next(i for i in data._discover() if i["subject"] == "sub-002")
    with pytest.raises(InputError, match="brain_mask.nii.gz: subject 'sub-002': 'brain_mask' is empty"):
        data._load(item)
