"""Nyúl–Udupa histogram standardisation: the map, its inverse, and the data module that fits it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from medgen.transforms.intensity import apply_intensity, invert_intensity, mr_params
from medgen.transforms.standardize import (LANDMARK_PERCENTILES, apply_standard, fit_standard, invert_standard,
                                           landmarks, piecewise_linear)


def test_piecewise_linear_interpolates_and_extends_with_the_end_slopes():
    xp, fp = [0.0, 1.0, 3.0], [0.0, 2.0, 3.0]
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
    # slopes: 2 on the first segment (and below it), 0.5 on the last (and above it)
    expected = torch.tensor([-2.0, 0.0, 1.0, 2.0, 2.5, 3.0, 4.0])
    torch.testing.assert_close(piecewise_linear(x, xp, fp), expected)
    np.testing.assert_allclose(piecewise_linear(x.numpy(), xp, fp), expected.numpy(), rtol=1e-6)


def test_landmarks_fit_and_round_trip():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20000, generator=g) ** 2  # two "scanners": the same tissue, other ratios
    b = torch.rand(20000, generator=g) ** 0.5
    la, lb = landmarks(a), landmarks(b)
    assert len(la) == len(LANDMARK_PERCENTILES) and all(np.diff(la) > 0)
    np.testing.assert_allclose(la[5], float(a.median()), atol=0.01)
    standard = fit_standard([la, lb])
    np.testing.assert_allclose(standard, (np.asarray(la) + np.asarray(lb)) / 2)
    for v, marks in ((a, la), (b, lb)):
        mapped = apply_standard(v, {"from": marks, "to": standard})
        np.testing.assert_allclose(landmarks(mapped), standard, atol=2e-3)  # every scan onto the standard
        torch.testing.assert_close(invert_standard(mapped, {"from": marks, "to": standard}), v, atol=1e-5, rtol=0)
    flat = landmarks(torch.zeros(100))  # a flat histogram still gives an invertible map
    assert all(np.diff(flat) > 0)
    with pytest.raises(ValueError, match="no voxels"):
        landmarks(torch.zeros(10), torch.zeros(10, dtype=torch.bool))


def test_intensity_params_carry_the_standard_both_ways():
    v = torch.linspace(0, 1000, 4096).reshape(16, 16, 16)
    params = mr_params(v, mask=np.ones(v.shape, bool))
    params["clip"] = False
    params["standard"] = {"from": [-1.0, 0.0, 1.0], "to": [-1.0, 0.5, 1.0]}
    x = apply_intensity(v, params)
    assert float(x.reshape(-1)[2048]) == pytest.approx(0.5, abs=0.01)  # the middle moved to the standard's
    torch.testing.assert_close(invert_intensity(x, params), v, atol=1e-2, rtol=1e-4)


def _scanner_folder(root, gamma: float, subjects: int, seed: int):
    """Heads whose 'tissue' values are the same fractions raised to ``gamma`` (another scanner)."""
    from medgen.io import write

    rng = np.random.default_rng(seed)
    for i in range(subjects):
        vol = np.zeros((20, 20, 20), np.float32)
        tissue = rng.uniform(0.2, 1.0, (12, 12, 12)).astype(np.float32)
        vol[4:16, 4:16, 4:16] = 1000.0 * tissue**gamma
        sub = root / f"s{seed}-{i}"
        sub.mkdir(parents=True)
        write(sub / "t1.nii.gz", vol)


def test_volumes_fit_the_standard_on_training_scans_save_it_and_undo_it(tmp_path):
    from medgen.data.volumes import Volumes
    from medgen.io import read

    _scanner_folder(tmp_path / "d", 1.0, 3, 0)
    _scanner_folder(tmp_path / "d", 2.0, 3, 1)
    data = Volumes(tmp_path / "d", key="t1", patch_size=(16, 16, 16), spacing=None, val_fraction=0.0,
                   standardize="nyul")
    data.setup()
    ds = data._volumes("train")
    items = [ds[i] for i in range(len(ds))]
    standard = data.state_dict()["standard"]
    for item in items:  # every training scan's brain now has the standard's landmarks
        np.testing.assert_allclose(landmarks(item["image"], item["mask"]), standard, atol=0.03)

    scan = read(sorted((tmp_path / "d").glob("s1-*/t1.nii.gz"))[0])
    x, state = data.preprocess(scan)
    np.testing.assert_allclose(landmarks(x, state["fg"]), standard, atol=0.03)
    back = data.postprocess(x, state)  # a reconstruction returns in the scan's own units
    inside = scan.as_tensor() > state["params"]["low"]  # the darkest 0.5 % are clipped (the MR window)
    torch.testing.assert_close(back.as_tensor()[inside], scan.as_tensor()[inside], atol=0.5, rtol=1e-3)

    fresh = Volumes(tmp_path / "d", key="t1", patch_size=(16, 16, 16), spacing=None, standardize="nyul")
    fresh.load_state_dict(data.state_dict())  # what `medgen score` does with the run's saved state
    x2, _ = fresh.preprocess(scan)
    torch.testing.assert_close(x2, x)
    with pytest.raises(Exception, match="standardize"):
        Volumes(tmp_path / "d", standardize="whitestripe")


def test_volumes_with_positions_carry_coordinate_maps_of_the_mask_box(tmp_path):
    from medgen.data.volumes import Volumes

    _scanner_folder(tmp_path / "d", 1.0, 3, 0)
    data = Volumes(tmp_path / "d", key="t1", patch_size=(8, 8, 8), spacing=None, val_fraction=0.34, position=True)
    data.setup()
    assert data.model_settings() == {"position_channels": 3}
    item = data.val_dataset()[0]
    assert item["coords"].shape == (3, 20, 20, 20)
    inside = item["mask"][0].nonzero()
    lo, hi = inside.min(0).values, inside.max(0).values
    assert float(item["coords"][0, lo[0], 0, 0]) == -1.0 and float(item["coords"][0, hi[0], 0, 0]) == 1.0
    patch = data.train_dataset()[0]
    assert patch["coords"].shape == (3, 8, 8, 8) and patch["image"].shape == (1, 8, 8, 8)


def test_an_empty_brain_mask_is_a_one_line_error_naming_it(tmp_path, capsys):
    from medgen.cli import main
    from medgen.io import write

    _scanner_folder(tmp_path / "d", 1.0, 3, 0)
    for i, sub in enumerate(sorted((tmp_path / "d").iterdir())):
        write(sub / "brain_mask.nii.gz", np.full((20, 20, 20), float(i > 0), np.float32))  # the first one empty
    rc = main(["train", "anogan", "--config", str(Path(__file__).resolve().parents[2] / "configs" / "anogan-cpu.yaml"),
               f"data.root={tmp_path / 'd'}", "data.mask_key=brain_mask", "data.patch_size=[16,16,16]",
               "trainer.max_epochs=1", "tracking.enabled=false", "trainer.progress=false",
               f"trainer.checkpoint_dir={tmp_path / 'ck'}"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert rc == 2 and len(err) == 1
    empty = sorted((tmp_path / "d").iterdir())[0] / "brain_mask.nii.gz"
    assert str(empty) in err[0] and "is empty" in err[0]
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").rglob("*.pt"))
