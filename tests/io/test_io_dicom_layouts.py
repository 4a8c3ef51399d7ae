"""A folder that holds DICOM series somewhere below it (PATIENT/STUDY/SERIES/...), as archives
and CD exports lay them out (issue 19). One series below: `medgen info` and `medgen convert`
take the root as that series. Several: convert refuses in one line listing them (--series picks
one), info lists one line per series folder."""

import json

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main


@pytest.fixture
def layout(tmp_path, builders, ct_stored):
    """root/PATIENT/STUDY/SERIES_<n> with one DICOM series each (only the first unless asked)."""
    def make(n_series=1):
        root = tmp_path / "export"
        affines = []
        for k in range(n_series):
            series = root / "PATIENT" / "STUDY" / f"SERIES_{k}"
            affines.append(builders.dicom_series(series, ct_stored[:, :, : 4 + k], description=f"axial {k}",
                                                 series_uid=f"1.2.826.0.1.{k + 1}"))
        return root, affines
    return make


def test_info_and_convert_take_a_root_with_one_series_deep_inside(layout, tmp_path, capsys):
    root, (affine,) = layout(1)
    assert main(["info", "--json", str(root)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["shape"] == [20, 16, 4] and facts["format"] == "dicom" and facts["series"] == 1
    out = tmp_path / "o.nii.gz"
    assert main(["convert", str(root), str(out)]) == 0
    img = nib.load(str(out))
    assert img.shape == (20, 16, 4)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    direct = tmp_path / "direct.nii.gz"  # the same as converting the series folder itself
    assert main(["convert", str(root / "PATIENT" / "STUDY" / "SERIES_0"), str(direct)]) == 0
    assert np.array_equal(np.asarray(nib.load(str(direct)).dataobj), np.asarray(img.dataobj))


def test_several_series_below_a_root_are_listed_and_chosen_by_series(layout, tmp_path, capsys):
    root, _ = layout(2)
    out = tmp_path / "o.nii.gz"
    assert main(["convert", str(root), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(root) in err and "holds 2 DICOM series" in err
    assert "axial 0" in err and "axial 1" in err and not out.exists()
    assert main(["convert", str(root), str(out), "--series", "axial 1"]) == 0
    assert nib.load(str(out)).shape == (20, 16, 5)
    capsys.readouterr()
    assert main(["info", "--json", str(root)]) == 0  # a table: one row per series folder
    rows = json.loads(capsys.readouterr().out)["volumes"]
    assert sorted(r["path"] for r in rows) == ["PATIENT/STUDY/SERIES_0", "PATIENT/STUDY/SERIES_1"]
    assert main(["info", "--json", str(root), "--series", "axial 0"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [20, 16, 4]
