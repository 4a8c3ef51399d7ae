"""`medgen info` and `medgen convert` end to end (in-process and one real subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medgen.cli import main


def _medgen_cmd():
    exe = Path(sys.executable).with_name("medgen")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "medgen.cli"]


def _oblique_nrrd(path):
    a = np.deg2rad(20)
    direction = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    values = np.random.default_rng(0).integers(-1000, 2000, size=(14, 11, 9)).astype(np.int16)
    img = sitk.GetImageFromArray(values.transpose(2, 1, 0))
    img.SetSpacing((0.6, 0.7, 2.5))
    img.SetOrigin((-30.0, 40.0, -100.0))
    img.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(img, str(path))
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array([0.6, 0.7, 2.5])
    lps[:3, 3] = (-30.0, 40.0, -100.0)
    return values, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_info_json_reports_the_file_as_stored(tmp_path, capsys):
    values, _ = _oblique_nrrd(tmp_path / "ct.nrrd")
    assert main(["info", "--json", str(tmp_path / "ct.nrrd")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["shape"] == [14, 11, 9]
    assert facts["spacing"] == pytest.approx([0.6, 0.7, 2.5])
    assert facts["orientation"] == "LPS"
    assert facts["dtype"] == "int16"
    assert facts["min"] == values.min() and facts["max"] == values.max()
    assert facts["mean"] == pytest.approx(values.mean())
    assert facts["modality"] is None and facts["series"] == 1


def test_info_table_is_readable(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 2.0, 3.0, 1.0])), str(tmp_path / "a.nii"))
    assert main(["info", str(tmp_path / "a.nii")]) == 0
    out = capsys.readouterr().out
    assert "2 x 3 x 4" in out and "2 x 2 x 3" in out and "RAS" in out and "0 / 23" in out and "float32" in out
    assert "modality" not in out and "series" not in out  # DICOM's rows: '-' and '1' for a NIfTI said nothing


def test_info_says_when_the_values_shown_are_not_the_stored_type(tmp_path, capsys):
    """An RT dose stores uint32 and scales it to Gy: 'dtype uint32' beside 'min 0.795' read as
    a contradiction; the table says both types, the JSON has ``rescaled``."""
    from pydicom.data import get_testdata_file

    assert main(["info", get_testdata_file("rtdose.dcm")]) == 0
    out = capsys.readouterr().out
    assert "uint32 on disk, float32 after the file's rescale" in out and "0.795 / 1.254" in out
    assert main(["info", "--json", get_testdata_file("rtdose.dcm")]) == 0
    assert json.loads(capsys.readouterr().out)["rescaled"] is True
    # NIfTI: scl_slope/scl_inter count, a plain file does not
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4)), str(tmp_path / "plain.nii.gz"))
    assert main(["info", "--json", str(tmp_path / "scaled.nii.gz")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["rescaled"] is True and facts["dtype"] == "int16" and facts["min"] == -10.0
    assert main(["info", str(tmp_path / "plain.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "int16" in out and "rescale" not in out


def test_info_on_a_dataset_folder_lists_every_volume_and_its_voxel_sizes(tmp_path, capsys):
    from pydicom.data import get_testdata_file

    root = tmp_path / "study"
    for i, zoom in enumerate((2.0, 2.0, 3.0)):
        (root / f"sub-{i}").mkdir(parents=True)
        affine = np.diag([zoom, zoom, zoom, 1.0])
        nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.float32), affine), str(root / f"sub-{i}" / "t1.nii.gz"))
    _oblique_nrrd(root / "sub-2" / "ct.nrrd")  # LPS on disk, 0.6 x 0.7 x 2.5 mm
    (root / "sub-2" / "broken.nii.gz").write_bytes(b"not a nifti")
    dicom_dir = root / "sub-3" / "ct"
    dicom_dir.mkdir(parents=True)
    (dicom_dir / "slice.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())

    assert main(["info", "--json", str(root)]) == 0
    facts = json.loads(capsys.readouterr().out)
    rows = {v["path"]: v for v in facts["volumes"]}
    assert sorted(rows) == ["sub-0/t1.nii.gz", "sub-1/t1.nii.gz", "sub-2/broken.nii.gz", "sub-2/ct.nrrd",
                            "sub-2/t1.nii.gz", "sub-3/ct"]
    assert rows["sub-2/ct.nrrd"]["shape"] == [14, 11, 9] and rows["sub-2/ct.nrrd"]["orientation"] == "LPS"
    assert rows["sub-2/ct.nrrd"]["spacing"] == pytest.approx([0.6, 0.7, 2.5])
    assert rows["sub-3/ct"]["format"] == "dicom" and rows["sub-3/ct"]["shape"][2] == 1
    assert "not a readable NIfTI" in rows["sub-2/broken.nii.gz"]["error"]
    counts = {tuple(v["spacing"]): v["volumes"] for v in facts["voxel_sizes"]}
    assert counts[(2.0, 2.0, 2.0)] == 2 and counts[(3.0, 3.0, 3.0)] == 1 and sum(counts.values()) == 5
    assert main(["info", str(root)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("6 volumes under") and "unreadable: not a readable NIfTI" in table
    assert "median" in table and "data.spacing=auto" in table
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty" in err


def test_info_on_an_expression_table(tmp_path, capsys):
    from medgen.data.expression_synth import make_expression, write_expression

    write_expression(tmp_path / "expr", make_expression(seed=0, n_samples=12, n_genes=30))
    assert main(["info", "--json", str(tmp_path / "expr")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["samples"] == 12 and facts["genes"] == 30 and sum(facts["labels"].values()) == 12
    assert facts["max"] > 100 and "log_transform" in facts["hints"][0]  # the demo table holds raw values
    assert main(["info", str(tmp_path / "expr" / "expression.tsv"), "--genes-by-samples"]) == 0
    table = capsys.readouterr().out
    assert "expression table, 30 samples x 12 genes" in table and "if the rows are samples, drop" in table
    (tmp_path / "bad.tsv").write_text("sample_id\tg1\ns1\tx\n")
    assert main(["info", str(tmp_path / "bad.tsv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.tsv" in err and "non-numeric value 'x'" in err


def test_convert_keeps_voxel_to_world_mapping(tmp_path, capsys):
    values, affine = _oblique_nrrd(tmp_path / "ct.nrrd")
    out = tmp_path / "out" / "ct.nii.gz"
    assert main(["convert", str(tmp_path / "ct.nrrd"), str(out)]) == 0
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    assert np.array_equal(np.asarray(img.dataobj), values)
    assert img.get_data_dtype() == np.int16  # integer input stays integer when exact
    assert capsys.readouterr().out.strip() == str(out)


def test_convert_refuses_to_write_onto_its_input(tmp_path, capsys):
    """`medgen convert scan.nii.gz scan.nii.gz` replaced the original with a re-encoded copy
    (float64 -> float32, header extras gone) and said nothing; now it is a one-line error."""
    scan = tmp_path / "scan.nii.gz"
    data = np.random.default_rng(0).random((4, 5, 6))
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(scan))
    before = scan.read_bytes()
    for output in (scan, tmp_path / "." / "scan.nii.gz"):
        assert main(["convert", str(scan), str(output)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is the input" in err and "scan.nii.gz" in err
    assert scan.read_bytes() == before
    assert main(["convert", str(scan), str(tmp_path / "copy.nii.gz")]) == 0  # elsewhere: fine


def test_help_for_both_verbs(capsys):
    for verb in ("info", "convert"):
        with pytest.raises(SystemExit) as exit_:
            main([verb, "--help"])
        assert exit_.value.code == 0
        assert "usage: medgen " + verb in capsys.readouterr().out


def test_subprocess_exit_code_and_single_stderr_line(tmp_path):
    # A truncated MetaImage: ITK's C++ reader writes to fd 2 itself, which must be silenced.
    p = tmp_path / "cut.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20, 20), np.int16)), str(p))
    p.write_bytes(p.read_bytes()[:4000])
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    out = tmp_path / "o.nii.gz"
    r = subprocess.run(_medgen_cmd() + ["convert", str(p), str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cut.mha" in lines[0] and "truncated" in lines[0], r.stderr
    assert not out.exists()
    r = subprocess.run(_medgen_cmd() + ["info", "--json", str(tmp_path / "missing.nrrd")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing.nrrd" in r.stderr


def test_shared_chest_ct_and_mni152(shared_data, capsys):
    lung = shared_data / "chest_ct" / "lung1_image.nrrd"
    assert main(["info", "--json", str(lung)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["shape"] == [512, 512, 48]  # the file's own voxel order
    assert facts["spacing"] == pytest.approx([0.5703, 0.5703, 5.0], abs=1e-3)
    assert facts["orientation"] == "LPS" and facts["min"] == -1024
    from medgen.io import read

    vol = read(lung)  # LPS -> RAS flips x and y; no permutation, so the canonical shape is the same
    assert vol.shape == (512, 512, 48)
    for f in sorted((shared_data / "mni152").glob("*.nii.gz")):
        assert main(["info", "--json", str(f)]) == 0
        facts = json.loads(capsys.readouterr().out)
        assert facts["shape"] == [197, 233, 189] and facts["spacing"] == pytest.approx([1, 1, 1])
        assert facts["orientation"] == "RAS"


def test_library_notes_reach_the_command_lines_stderr(tmp_path, capsys):
    """Library code never prints: its notes go to the "medgen" logger, which the CLI shows."""
    from medgen.data.expression_synth import make_expression, write_expression

    write_expression(tmp_path / "t", make_expression(seed=0, n_samples=12, n_genes=20))
    assert main(["train", "tybalt", f"data.root={tmp_path / 't'}", "trainer.max_epochs=1", "trainer.device=cpu",
                 "trainer.progress=false", "tracking.enabled=false", "model.latent_dim=2"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum("medgen: " in line and "fewer than data.n_genes=5000: keeping all" in line for line in err) == 1
    assert any(line.startswith("medgen: ") and "taking log2(x + 1)" in line for line in err)


def test_library_warnings_do_not_reach_the_terminal_as_source_lines(tmp_path):
    """skimage's 'threshold_otsu ... looks like that of an RGB image' leaked onto the terminal
    (with its source file and line) for every CT series of 3 or 4 slices; the CLI drops it, and
    shows any other library warning as one line."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, warnings\n"
        "import numpy as np\n"
        "import medgen.commands.info as info\n"
        "def run(args):\n"
        "    from medgen.transforms.masks import foreground_mask\n"
        "    foreground_mask(np.random.default_rng(0).random((32, 32, 3)).astype('float32'))\n"
        "    warnings.warn('a library says this\\nand more', UserWarning)\n"
        "    return 0\n"
        "info.run = run\n"
        "from medgen.cli import main\n"
        "sys.exit(main(['info', 'x']))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "threshold_otsu" not in r.stderr and ".py:" not in r.stderr
    assert r.stderr.strip().splitlines() == ["medgen: warning: a library says this"]


def test_every_verbs_help_is_a_sentence_that_says_what_it_does(capsys):
    """`medgen --help` read 'demo  Embedded default: ...' and 'phantoms  write procedural ...'."""
    from medgen.cli import _verb_modules

    for verb, module in _verb_modules():
        assert module.HELP[0].isupper() and module.HELP.endswith("."), (verb, module.HELP)
    from medgen.commands import demo

    assert "Embedded" not in demo.HELP and "every task" in demo.HELP
