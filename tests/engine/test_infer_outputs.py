"""medgen infer never writes onto its input, and names outputs after what they are."""

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main
from medgen.engine import load_task, train
from medgen.errors import InputError
from medgen.inference import infer_to_folder, output_name

from toy import toy_config


def test_output_names_say_what_they_are():
    assert output_name("d/low_dose.nii.gz", "pet-cgan") == "low_dose_pet-cgan.nii.gz"
    assert output_name("d/scan.MHA", "anogan") == "scan_anogan.nii.gz"
    assert output_name("d/series/") == "series.nii.gz"


def test_infer_into_the_inputs_folder_keeps_the_input(tmp_path, capsys):
    run_id = train(toy_config(trainer={"max_epochs": 1, "val_images": False}, tracking={"enabled": False}))
    ckpt = f"checkpoints/{run_id}/last.pt"
    scan = tmp_path / "d" / "low_dose.nii.gz"
    scan.parent.mkdir()
    data = np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), scan)
    assert main(["infer", "toy", "--run", ckpt, "--input", str(scan), "--output", str(scan.parent)]) == 0
    assert capsys.readouterr().out.split() == [str(scan.parent / "low_dose_toy.nii.gz")]
    np.testing.assert_array_equal(nib.load(scan).get_fdata(), data)  # the input is untouched
    # a model without a task name would write plain names: onto its input is refused
    model, module, _, _ = load_task(ckpt, device="cpu")
    model.task = ""
    with pytest.raises(InputError, match="is an input of this run"):
        infer_to_folder(model, module, scan, scan.parent, progress=False)
    np.testing.assert_array_equal(nib.load(scan).get_fdata(), data)


def test_map_names_tell_scans_with_the_same_file_name_apart(tmp_path):
    from medgen.commands.score_batch import output_names

    paths = [tmp_path / "d" / "sub-001" / "t1.nii.gz", tmp_path / "d" / "sub-002" / "t1.nii.gz",
             tmp_path / "other.nrrd", tmp_path / "x" / "sub-001" / "t1.nii.gz"]
    # The README's rule, the path below the scans' common folder, for every map alike. (This
    # replaced names that grew folders only where file names clashed: "d_sub-001_t1" beside
    # "sub-002_t1" for scans side by side in d/, so a map's name did not say where its scan was.)
    assert output_names(paths[:2]) == ["sub-001_t1", "sub-002_t1"]
    assert output_names(paths[:3]) == ["d_sub-001_t1", "d_sub-002_t1", "other"]
    assert output_names(paths) == ["d_sub-001_t1", "d_sub-002_t1", "other", "x_sub-001_t1"]
    assert output_names([paths[0]]) == ["t1"] and output_names([paths[2], paths[2]]) == ["other", "other_2"]
    assert output_names([tmp_path / "a.nii.gz", tmp_path / "b.nrrd"]) == ["a", "b"]
    assert output_names([tmp_path / "d" / "sub-001" / "t1"]) == ["t1"]  # a DICOM folder


def test_label_outputs_are_resampled_nearest_and_written_as_integers(tmp_path):
    import torch

    from medgen.data.volumes import Volumes
    from medgen.inference import infer_path
    from medgen.io import read, write

    class Thresholder(torch.nn.Module):  # a "segmenter": class 1 where the input is bright
        output_kind = "label"
        device = torch.device("cpu")

        def infer(self, x):
            return (x > 0).float()

        def input_options(self):  # the contract's hook (GenerativeModel): no options
            return {}

    scan = tmp_path / "s" / "t1.nii.gz"
    scan.parent.mkdir()
    data = np.zeros((20, 18, 10), np.float32)
    data[5:15, 4:12, 2:8] = 100.0
    nib.save(nib.Nifti1Image(data + np.random.default_rng(0).random(data.shape, dtype=np.float32),
                             np.diag([1.0, 1.2, 2.5, 1.0])), scan)
    module = Volumes(tmp_path, spacing=[2.0, 2.0, 2.0], patch_size=[8, 8, 8])  # resampled both ways
    volume = read(scan)
    labels = infer_path(Thresholder(), module, volume)
    assert labels.dtype == torch.int16 and tuple(labels.shape[-3:]) == volume.shape[-3:]
    assert set(torch.unique(labels).tolist()) <= {0, 1}  # no blends of classes
    written = nib.load(write(tmp_path / "labels.nii.gz", labels, reference=volume))
    assert np.issubdtype(written.get_data_dtype(), np.integer)
    inside = np.asarray(written.dataobj)[7:13, 6:10, 3:7]
    assert inside.min() == 1


def test_two_way_models_name_each_direction():
    assert output_name("d/mr.nii.gz", "cyclegan", "AtoB") == "mr_cyclegan_AtoB.nii.gz"
    assert output_name("d/mr.nii.gz", "cyclegan", "BtoA") == "mr_cyclegan_BtoA.nii.gz"


def _toy_run_and_scan(tmp_path):
    run_id = train(toy_config(trainer={"max_epochs": 1, "val_images": False}, tracking={"enabled": False}))
    scan = tmp_path / "d" / "scan.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16), dtype=np.float32), np.eye(4)), scan)
    return f"checkpoints/{run_id}/last.pt", scan


def test_infer_refuses_to_overwrite_an_earlier_output_without_overwrite(tmp_path, capsys):
    ckpt, scan = _toy_run_and_scan(tmp_path)
    out = tmp_path / "out"
    args = ["infer", "toy", "--run", ckpt, "--input", str(scan), "--output", str(out)]
    assert main(args) == 0
    written = out / "scan_toy.nii.gz"
    earlier = written.read_bytes()
    written.write_bytes(earlier + b"")  # the same content, a new mtime we can watch
    stamp = written.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(written) in err[0] and "--overwrite" in err[0]
    assert written.stat().st_mtime_ns == stamp and sorted(p.name for p in out.iterdir()) == ["scan_toy.nii.gz"]
    assert main([*args, "--overwrite"]) == 0
    # the library call refuses too
    model, module, _, _ = load_task(ckpt, device="cpu")
    with pytest.raises(InputError, match="exists already"):
        infer_to_folder(model, module, scan, out, progress=False)


def test_infer_on_a_data_layout_says_what_it_takes(tmp_path, capsys):
    """A phantom data root (sub-*/ folders of scans) gave 'folder holds no readable volume'."""
    ckpt, scan = _toy_run_and_scan(tmp_path)
    root = tmp_path / "paired"
    for subject in ("sub-001", "sub-002"):
        (root / subject).mkdir(parents=True)
        (root / subject / "t1.nii.gz").write_bytes(scan.read_bytes())
    capsys.readouterr()
    assert main(["infer", "toy", "--run", ckpt, "--input", str(root), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "a scan file, a DICOM series folder or a folder of scan files" in err[0]
    assert "2 folders (sub-001/, sub-002/)" in err[0] and str(root / "sub-001" / "t1.nii.gz") in err[0]
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    (empty / "x").mkdir(parents=True)
    with pytest.raises(InputError, match="no scan .* in it or below"):
        from medgen.inference import list_inputs

        list_inputs(empty)


def test_a_layout_with_one_dicom_series_below_is_not_taken_for_that_series(tmp_path):
    """`medgen phantoms`' root holds one DICOM series deep inside (dicom/sub-001/t1/) beside the
    NIfTI layouts: infer on the root translated that series without a word."""
    from medgen.data.phantoms import write_dicom_series
    from medgen.inference import list_inputs

    root = tmp_path / "ph"
    series = root / "dicom" / "sub-001" / "t1"
    write_dicom_series(series, np.zeros((8, 8, 4), np.float32), np.eye(4), 0)
    (root / "paired" / "sub-001").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), root / "paired" / "sub-001" / "t1.nii.gz")
    with pytest.raises(InputError, match="a training layout"):
        list_inputs(root)
    assert list_inputs(series) == [series]  # the series folder itself is an input


def test_a_refused_training_layout_suggests_the_models_input_not_its_first_file(tmp_path):
    """pet-cgan's layout sub-001/{brain_mask, full_dose, low_dose}: the suggestion was the first
    file (brain_mask), which infer would translate as if it were a low-dose PET."""
    from medgen.inference import list_inputs, model_input_names
    from medgen.models.registry import get_model_class

    for name in ("brain_mask", "full_dose", "low_dose"):
        (tmp_path / "paired" / "sub-001").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "paired" / "sub-001" / f"{name}.nii.gz")
    prefer = model_input_names(get_model_class("pet-cgan"))
    assert prefer == ("low_dose",)
    with pytest.raises(InputError, match=r"e\.g\. --input \S*sub-001/low_dose\.nii\.gz$"):
        list_inputs(tmp_path / "paired", prefer=prefer)
    # a task whose input name is not there: not a mask or the target either
    (tmp_path / "paired" / "sub-001" / "low_dose.nii.gz").rename(tmp_path / "paired" / "sub-001" / "t2.nii.gz")
    with pytest.raises(InputError, match=r"e\.g\. --input \S*sub-001/t2\.nii\.gz$"):
        list_inputs(tmp_path / "paired", prefer=("flair",))
