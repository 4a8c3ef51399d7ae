"""Bad input: exit code 2, one line on stderr naming the file and the problem, no traceback,
no output file left behind. The CLI runs in-process via medgen.cli.main."""

import gzip
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medgen.cli import main


def _missing(tmp_path):
    return tmp_path / "nothing_here.nii.gz", "no such file"


def _corrupt_nifti(tmp_path):
    p = tmp_path / "corrupt.nii.gz"
    p.write_bytes(gzip.compress(os.urandom(500)))
    return p, "not a readable NIfTI"


def _cut_in_half(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p, "truncated"


def _truncated_nifti(tmp_path):
    p = tmp_path / "truncated.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((24, 24, 24)).astype(np.float32), np.eye(4)), str(p))
    return _cut_in_half(p)


def _garbage_nrrd(tmp_path):
    p = tmp_path / "garbage.nrrd"
    p.write_bytes(os.urandom(300))
    return p, "not a readable NRRD"


def _truncated_mha(tmp_path):
    import SimpleITK as sitk

    p = tmp_path / "cut.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20, 20), np.int16)), str(p))
    return _cut_in_half(p)


def _nhdr_without_data(tmp_path):
    p = tmp_path / "head.nhdr"
    p.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\nendian: little\ndata file: head.raw\n")
    return p, "head.raw is missing"


def _mhd_without_data(tmp_path):
    p = tmp_path / "head.mhd"
    p.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = head.raw\n")
    return p, "head.raw is missing"


def _hdr_without_img(tmp_path):
    p = tmp_path / "analyze.hdr"
    nib.save(nib.AnalyzeImage(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(p))
    (tmp_path / "analyze.img").unlink()
    return p, "analyze.img is missing"


def _random_dcm(tmp_path):
    p = tmp_path / "random.dcm"
    p.write_bytes(os.urandom(2000))
    return p, "not a DICOM file"


def _rtplan(tmp_path):
    return get_testdata_file("rtplan.dcm", download=False), "no pixel data"


def _truncated_dicom_pixels(tmp_path):
    return get_testdata_file("MR_truncated.dcm", download=False), "pixel data"


def _empty_folder(tmp_path):
    p = tmp_path / "empty"
    p.mkdir()
    return p, "empty"


def _folder_without_dicom(tmp_path):
    p = tmp_path / "docs"
    p.mkdir()
    (p / "readme.txt").write_text("hello")
    return p, "no DICOM files"


def _nan_volume(tmp_path):
    p = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((5, 5, 5), np.nan, np.float32), np.eye(4)), str(p))
    return p, "no finite values"


def _unknown_suffix(tmp_path):
    p = tmp_path / "picture.png"
    p.write_bytes(b"\x89PNG....")
    return p, "unknown volume format"


def _four_d(tmp_path):
    p = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(p))
    return p, "4D"


def _duplicate_positions(tmp_path, builders, ct_stored):
    folder = tmp_path / "echoes"
    builders.dicom_series(folder, ct_stored[:, :, :3], series_uid="1.2.9")
    builders.dicom_series(folder / "echo2", ct_stored[:, :, :3], series_uid="1.2.9", seed=1)
    return folder, "share 3 slice positions"


def _missing_slice(tmp_path, builders, ct_stored):
    folder = tmp_path / "gap"
    builders.dicom_series(folder, ct_stored[:, :, :6], names="ordered")
    (folder / "slice003.dcm").unlink()
    return folder, "irregular slice spacing"


def _rt_plan_folder(tmp_path):
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "plan.dcm").write_bytes(open(get_testdata_file("rtplan.dcm", download=False), "rb").read())
    return folder, "none with image data"


def _nifti_header(tmp_path, name, edit):
    """A NIfTI whose header lies about its geometry (``edit(header)``), written field by field."""
    p = tmp_path / name
    header = nib.Nifti1Header()
    header.set_data_shape((6, 6, 6))
    header.set_data_dtype(np.float32)
    edit(header)
    data = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, None, header=header), str(p))  # no affine: the header's fields stay
    return p


def _nan_sform(tmp_path):
    def edit(h):
        h["sform_code"] = 1
        h["srow_x"], h["srow_y"], h["srow_z"] = [np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]
    return _nifti_header(tmp_path, "nan_sform.nii.gz", edit), "no usable geometry"


def _inf_pixdim(tmp_path):
    def edit(h):
        h["pixdim"][1:4] = [1.0, np.inf, 1.0]
    return _nifti_header(tmp_path, "inf_pixdim.nii.gz", edit), "no usable geometry"


def _singular_sform(tmp_path):
    def edit(h):
        h["sform_code"] = 1
        h["srow_x"], h["srow_y"], h["srow_z"] = [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]  # collinear axes
    return _nifti_header(tmp_path, "collinear.nii.gz", edit), "no usable geometry"


def _projection_radiograph(tmp_path):
    path = get_testdata_file("RG1_UNCI.dcm", download=False)  # pydicom-data: a CR with PixelSpacing 0\0
    if path is None:
        pytest.skip("pydicom-data is not installed")
    return path, "projection radiograph"


CASES = [_nan_sform, _inf_pixdim, _singular_sform, _projection_radiograph, _missing, _corrupt_nifti, _truncated_nifti, _garbage_nrrd, _truncated_mha, _nhdr_without_data, _mhd_without_data,
         _hdr_without_img, _random_dcm, _rtplan, _truncated_dicom_pixels, _empty_folder, _folder_without_dicom,
         _nan_volume, _unknown_suffix, _four_d, _rt_plan_folder]
DICOM_CASES = [_duplicate_positions, _missing_slice]


def _check(capsys, argv, path, problem, out=None):
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert os.path.basename(str(path)) in err and problem in err, err
    if out is not None:
        assert not out.exists()
        assert not any(out.parent.iterdir()), list(out.parent.iterdir())  # no temp file either


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
def test_bad_input_info_and_convert(case, tmp_path, capsys):
    path, problem = case(tmp_path)
    _check(capsys, ["info", str(path)], path, problem)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _check(capsys, ["convert", str(path), str(out_dir / "o.nii.gz")], path, problem, out=out_dir / "o.nii.gz")


@pytest.mark.parametrize("case", DICOM_CASES, ids=lambda c: c.__name__.strip("_"))
def test_bad_dicom_series(case, tmp_path, capsys, builders, ct_stored):
    path, problem = case(tmp_path, builders, ct_stored)
    _check(capsys, ["info", "--json", str(path)], path, problem)


def test_convert_refuses_non_nifti_output(tmp_path, capsys):
    src = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(src))
    _check(capsys, ["convert", str(src), str(tmp_path / "o" / "a.png")], tmp_path / "a.png", "NIfTI")
    assert not (tmp_path / "o" / "a.png").exists()


def test_pydicom_files_still_parse(tmp_path):
    """Guard for the cases above: the shipped files are what the tests think they are."""
    assert "PixelData" not in pydicom.dcmread(get_testdata_file("rtplan.dcm", download=False))


def test_atomic_output_leaves_the_file_whole_or_absent(tmp_path):
    from medgen.io.atomic import atomic_output

    target = tmp_path / "sub" / "out.txt"
    with atomic_output(target) as tmp:
        tmp.write_text("done")
        assert not target.exists()  # nothing under the final name while writing
    assert target.read_text() == "done"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "done" and sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_output_follows_the_umask(tmp_path, umask):
    import os
    import stat

    from medgen.io.atomic import atomic_output

    old = os.umask(umask)
    try:
        target = tmp_path / "out.bin"
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_output_removes_temporaries_of_dead_processes_only(tmp_path):
    import socket
    import subprocess
    import sys

    from medgen.io.atomic import atomic_output

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname().replace(".", "_")
    dead = tmp_path / f".last.pt.{host}-{proc.pid}.x1y2.tmp"  # a run killed while saving
    live = tmp_path / f".last.pt.{host}-{os.getppid()}.a1b2.tmp"  # being written right now
    other_host = tmp_path / f".last.pt.elsewhere-{proc.pid}.c3d4.tmp"  # a shared folder's other machine
    for p in (dead, live, other_host):
        p.write_bytes(b"half")
    with atomic_output(tmp_path / "last.pt") as tmp:
        tmp.write_bytes(b"whole")
    assert not dead.exists() and live.exists() and other_host.exists()
    assert (tmp_path / "last.pt").read_bytes() == b"whole"
