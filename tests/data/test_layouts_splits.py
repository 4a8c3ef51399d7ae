import nibabel as nib
import numpy as np
import pytest

from medgen.data.layouts import discover_domain, discover_expression, discover_paired, discover_unpaired, discover_volumes
from medgen.data.splits import split_subjects
from medgen.errors import InputError


def _vol(path, shape=(6, 6, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))


def test_paired_discovery_with_formats_and_dicom_folder(tmp_path):
    from medgen.data.phantoms import write_dicom_series

    _vol(tmp_path / "s1" / "t1.nii.gz")
    _vol(tmp_path / "s1" / "ct.nii")
    _vol(tmp_path / "s2" / "t1.nii.gz")
    write_dicom_series(tmp_path / "s2" / "ct", np.full((6, 6, 3), 40, np.float32), np.eye(4), 0, modality="CT")
    (tmp_path / ".hidden").mkdir()
    items = discover_paired(tmp_path, ["t1", "ct"])
    assert [i["subject"] for i in items] == ["s1", "s2"]
    assert items[0]["ct"].name == "ct.nii" and items[1]["ct"].is_dir()


def test_paired_missing_key_names_subject_and_key(tmp_path):
    _vol(tmp_path / "s1" / "low_dose.nii.gz")
    _vol(tmp_path / "s1" / "full_dose.nii.gz")
    _vol(tmp_path / "s2" / "low_dose.nii.gz")
    with pytest.raises(InputError) as e:
        discover_paired(tmp_path, ["low_dose", "full_dose"])
    assert e.value.path.endswith("s2") and "full_dose" in e.value.problem


def test_discovery_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_paired(tmp_path / "nope", ["t1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no subject folders"):
        discover_paired(tmp_path / "empty", ["t1"])
    _vol(tmp_path / "amb" / "s1" / "t1.nii.gz")
    _vol(tmp_path / "amb" / "s1" / "t1.nii")
    with pytest.raises(InputError, match="ambiguous"):
        discover_paired(tmp_path / "amb", ["t1"])
    (tmp_path / "nodcm" / "s1" / "t1").mkdir(parents=True)
    (tmp_path / "nodcm" / "s1" / "t1" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM"):
        discover_paired(tmp_path / "nodcm", ["t1"])


def test_unpaired_domain_expression(tmp_path):
    _vol(tmp_path / "u" / "A" / "a1.nii.gz")
    _vol(tmp_path / "u" / "A" / "a2.nii")
    _vol(tmp_path / "u" / "B" / "b1.nii.gz")
    a, b = discover_unpaired(tmp_path / "u")
    assert [x["subject"] for x in a] == ["a1", "a2"] and [x["subject"] for x in b] == ["b1"]
    (tmp_path / "u2" / "A").mkdir(parents=True)
    _vol(tmp_path / "u2" / "B" / "b1.nii.gz")
    with pytest.raises(InputError, match="no volumes"):
        discover_unpaired(tmp_path / "u2")

    for side in ("source", "target"):
        _vol(tmp_path / "d" / side / "x" / "image.nii.gz")
    _vol(tmp_path / "d" / "source" / "x" / "label.nii.gz")
    dom = discover_domain(tmp_path / "d")
    assert dom["target"][0]["label"] is None and dom["source"][0]["label"].name == "label.nii.gz"
    with pytest.raises(InputError, match="label"):
        discover_domain(tmp_path / "d", target_labels=True)

    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="expression.tsv"):
        discover_expression(tmp_path / "e")
    (tmp_path / "e" / "expression.tsv").write_text("sample_id\tg1\ns1\t1\n")
    found = discover_expression(tmp_path / "e", genes_by_samples=True)
    assert found["labels"] is None and found["genes_by_samples"] is True


def test_split_deterministic_disjoint_and_order_independent():
    ids = [f"sub-{i:03d}" for i in range(20)]
    train, val, test = split_subjects(ids, 0.2, 0.1, seed=3)
    assert (train, val, test) == split_subjects(list(reversed(ids)), 0.2, 0.1, seed=3)
    assert len(val) == 4 and len(test) == 2 and len(train) == 14
    assert sorted(train + val + test) == ids
    assert split_subjects(ids, 0.2, 0.1, seed=4) != (train, val, test)


def test_split_small_datasets():
    assert split_subjects(["a", "b"], 0.2) == (["a"], ["b"], []) or split_subjects(["a", "b"], 0.2) == (["b"], ["a"], [])
    assert split_subjects(["a"], 0.5) == (["a"], [], [])
    train, val, test = split_subjects(["a", "b", "c"], 0.1, 0.1)
    assert len(train) == 1 and len(val) == 1 and len(test) == 1
    assert split_subjects(["a", "b", "c"], 0.0)[1] == []


def test_volumes_discovery_subject_folders_or_a_flat_folder_of_scans(tmp_path):
    from medgen.data.phantoms import write_dicom_series

    subjects = tmp_path / "subjects"
    _vol(subjects / "a" / "t1.nii.gz")
    _vol(subjects / "a" / "brain_mask.nii.gz")
    _vol(subjects / "b" / "t1.nii.gz")
    _vol(subjects / "b" / "brain_mask.nii.gz")
    items = discover_volumes(subjects, "t1", ["brain_mask"])
    assert [(i["subject"], i["t1"].name, i["brain_mask"].name) for i in items] == [
        ("a", "t1.nii.gz", "brain_mask.nii.gz"), ("b", "t1.nii.gz", "brain_mask.nii.gz")]

    flat = tmp_path / "flat"
    _vol(flat / "case_01.nii.gz")
    _vol(flat / "case_02.nii")
    write_dicom_series(flat / "case_03", np.full((6, 6, 3), 100, np.float32), np.eye(4), 0, modality="MR")
    items = discover_volumes(flat, "t1")
    assert [i["subject"] for i in items] == ["case_01", "case_02", "case_03"]
    assert items[2]["t1"].is_dir()
    with pytest.raises(InputError, match="brain_mask"):
        discover_volumes(flat, "t1", ["brain_mask"])
    # A subject folder without the key is still an error naming the key, not a flat folder.
    _vol(subjects / "c" / "flair.nii.gz")
    with pytest.raises(InputError, match="missing 't1'"):
        discover_volumes(subjects, "t1")
