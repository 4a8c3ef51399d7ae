"""`medgen train anogan` on tiny phantoms, then `medgen score` end to end (NIfTI + DICOM + a bad file)."""

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main

TINY = [
    "data.patch_size=[16,16,16]",
    "data.patches_per_volume=4",
    "data.batch_size=4",
    "data.val_fraction=0.34",
    "model.latent_dim=8",
    "model.generator_channels=[16,8]",
    "model.discriminator_channels=[8,16]",
    "model.n_critic=2",
    "model.encoder_lr=0.001",
    "trainer.max_epochs=2",
    "trainer.val_images=false",
    "tracking.enabled=false",
    "trainer.progress=false",
]
CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "anogan.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Phantoms (size 32) and a 2-epoch anogan checkpoint trained with the CLI."""
    import os

    from medgen.data.phantoms import write_phantoms

    root = tmp_path_factory.mktemp("anogan")
    write_phantoms(root / "ph", subjects=3, size=32, seed=0)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = main(["train", "anogan", "--config", CONFIG, f"data.root={root / 'ph' / 'paired'}",
                   "trainer.checkpoint_dir=ckpts", *TINY])
    finally:
        os.chdir(cwd)
    assert rc == 0
    ckpts = sorted((root / "ckpts").glob("*/last.pt"))
    assert len(ckpts) == 1
    return root, ckpts[0]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_then_score_with_maps_dicom_and_a_bad_scan(trained, tmp_path):
    import torch

    from medgen.io import read

    root, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    assert state["extra"]["encoder_steps"] > 0  # the last epoch trained the encoder
    assert "encoder" in state["extra"]["thresholds"]  # calibrated on the held-out normal subject

    ph = root / "ph"
    normal = ph / "paired" / "sub-001" / "t1.nii.gz"
    lesion = ph / "lesions" / "sub-002" / "t1.nii.gz"
    dicom = next((ph / "dicom").glob("*/t1"))
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a volume")
    out, maps = tmp_path / "scores.csv", tmp_path / "maps"
    rc = main(["score", "--run", str(ckpt), str(normal), str(bad), str(lesion), str(dicom),
               "--out", str(out), "--maps", str(maps), "--no-progress"])
    assert rc == 1  # one scan failed, the others were scored

    rows = _rows(out)
    assert [r["path"] for r in rows] == [str(normal), str(bad), str(lesion), str(dicom)]
    assert list(rows[0]) == ["path", "score", "flagged", "map", "overlay", "seconds", "error", "warning"]
    # maps named after each scan's path below the folder all four share (the README's rule)
    import os

    common = Path(os.path.commonpath([str(p.parent) for p in (normal, bad, lesion, dicom)]))
    names = {src: "_".join((*src.parent.relative_to(common).parts, "t1")) for src in (normal, lesion)}
    assert rows[0]["map"] == str(maps / f"{names[normal]}_anomaly.nii.gz") and rows[1]["map"] == ""
    assert rows[2]["overlay"] == str(maps / f"{names[lesion]}_overlay.png")
    assert rows[1]["error"] and "broken.nii.gz" in rows[1]["error"] and rows[1]["score"] == ""
    for r in (rows[0], rows[2], rows[3]):
        assert r["error"] == ""
        assert np.isfinite(float(r["score"])) and float(r["seconds"]) > 0
        assert r["flagged"] in ("true", "false")

    # maps in each input's own geometry, overlays beside them
    for src in (normal, lesion):
        name = names[src]
        m = nib.load(maps / f"{name}_anomaly.nii.gz")
        ref = nib.load(src)
        assert m.shape == ref.shape
        np.testing.assert_allclose(m.affine, ref.affine, atol=1e-4)
        assert np.isfinite(m.get_fdata()).all() and m.get_fdata().max() > 0
        assert (maps / f"{name}_overlay.png").stat().st_size > 0
    dicom_maps = sorted(p for p in maps.glob("*_anomaly.nii.gz") if p.name not in
                        (f"{names[normal]}_anomaly.nii.gz", f"{names[lesion]}_anomaly.nii.gz"))
    assert len(dicom_maps) == 1
    vol = read(dicom)
    m = nib.load(dicom_maps[0])
    assert m.shape == tuple(vol.meta["original_shape"])
    np.testing.assert_allclose(m.affine, np.asarray(vol.meta["original_affine"]), atol=1e-4)
    assert not (maps / "broken_anomaly.nii.gz").exists()


@pytest.mark.slow
def test_score_search_mode_all_good_exits_zero(trained, tmp_path):
    root, ckpt = trained
    scan = root / "ph" / "lesions" / "sub-001" / "t1.nii.gz"
    out = tmp_path / "s.csv"
    rc = main(["score", "--run", str(ckpt), str(scan), "--mode", "search", "--search-steps", "3",
               "--threshold", "-1", "--mask", "brain_mask", "--out", str(out), "--no-progress"])
    assert rc == 0
    (row,) = _rows(out)
    assert row["error"] == "" and row["flagged"] == "true"  # any score is above -1
    # a scan without the requested mask beside it gets an error row
    lone = tmp_path / "lone.nii.gz"
    lone.write_bytes(scan.read_bytes())
    rc = main(["score", "--run", str(ckpt), str(lone), "--mask", "brain_mask", "--out", str(out), "--no-progress"])
    assert rc == 1 and "no mask 'brain_mask'" in _rows(out)[0]["error"]


def test_score_rejects_a_missing_run(tmp_path, capsys):
    rc = main(["score", "--run", str(tmp_path / "nope.pt"), str(tmp_path / "x.nii.gz")])
    assert rc == 2
    assert "nope.pt" in capsys.readouterr().err


def test_a_scan_that_fails_after_scoring_gets_an_error_row_only_and_leaves_no_map(tmp_path, monkeypatch):
    # e.g. a 1x1x64 volume: scored, then its overlay cannot be drawn. The row must carry the
    # error alone (no score beside it), as a message, and no map file may stay in --maps.
    import torch

    from medgen import viz
    from medgen.commands.score_batch import score_paths
    from medgen.io import write
    from medgen.models.anogan import scoring

    scan = tmp_path / "thin.nii.gz"
    write(scan, np.ones((1, 1, 64), np.float32))
    monkeypatch.setattr(scoring, "score_volume", lambda model, data, volume, mode, mask=None, warn=None, polarity=None: (0.5, torch.zeros(volume.shape)))

    def broken_overlay(*args, **kwargs):
        raise ValueError("cannot draw a 1 x 1 slice")

    monkeypatch.setattr(viz, "save_overlay", broken_overlay)

    class Model:
        thresholds = {"encoder": 1.0}

    maps = tmp_path / "maps"
    (row,) = score_paths(Model(), None, [scan], mode="encoder", maps_dir=maps)
    assert row["score"] == "" and row["flagged"] == "" and row["map"] == "" and row["overlay"] == ""
    assert row["error"] == f"{scan}: could not be scored (cannot draw a 1 x 1 slice)"
    assert not any(maps.iterdir())


def test_score_warns_once_for_a_scan_unlike_the_training_scans(tmp_path, monkeypatch):
    import torch

    from medgen.commands.score_batch import score_paths
    from medgen.data.volumes import Volumes
    from medgen.models.anogan import scoring
    from medgen.io import write

    ct = np.full((16, 16, 16), -1000.0, np.float32)  # a head CT in HU, scored by a model of MR scans
    ct[3:13, 3:13, 3:13] = 40.0
    ct[6:9, 6:9, 6:9] = 1200.0
    scan = tmp_path / "ct.nii.gz"
    write(scan, ct)
    data = Volumes(tmp_path, key="t1", patch_size=(16, 16, 16), spacing=None)
    data.load_state_dict({"intensity_range": {"floor": 0.0, "low": 20.0, "median_high": 900.0, "max_high": 1600.0}})
    monkeypatch.setattr(scoring, "score_tensor", lambda model, x, mask, mode, progress=False, polarity=None, coords=None: (0.5, torch.zeros_like(x), None))

    class Model:
        thresholds = {"encoder": 1.0}

    heard = []
    (row,) = score_paths(Model(), data, [scan], mode="encoder", progress=False, warn=heard.append)
    assert row["error"] == "" and row["score"] == "0.5"
    assert len(heard) == 1 and heard[0].startswith(f"{scan}: ") and "different modality" in heard[0]


def test_an_empty_mask_is_an_error_row_and_an_odd_name_draws_without_warnings(tmp_path, monkeypatch, recwarn):
    """An empty brain mask was scored as if no mask were given (the whole volume); a scan name in
    a script the font lacks printed matplotlib's 'Glyph ... missing' lines."""
    import torch

    from medgen.commands.score_batch import score_paths
    from medgen.io import write
    from medgen.models.anogan import scoring

    monkeypatch.setattr(scoring, "score_volume", lambda model, data, volume, mode, mask=None, warn=None, polarity=None: (0.5, torch.rand(volume.shape)))

    class Model:
        thresholds = {"encoder": 1.0}

    empty, odd = tmp_path / "a", tmp_path / "b"
    for folder in (empty, odd):
        folder.mkdir()
        write(folder / "t1.nii.gz", np.random.default_rng(0).random((12, 12, 12)).astype(np.float32))
        mask = np.zeros((12, 12, 12), np.uint8)
        mask[3:9, 3:9, 3:9] = folder is odd
        write(folder / "brain_mask.nii.gz", mask)
    (odd / "t1.nii.gz").rename(odd / "脳\x1b[31m.nii.gz")
    maps = tmp_path / "maps"
    bad, good = score_paths(Model(), None, [empty / "t1.nii.gz", odd / "脳\x1b[31m.nii.gz"], mode="encoder",
                            maps_dir=maps, mask_name="brain_mask")
    assert bad["score"] == "" and bad["error"] == f"{empty / 'brain_mask.nii.gz'}: mask 'brain_mask' is empty (no voxel inside it on the model grid)"
    assert good["error"] == "" and good["score"] == "0.5" and Path(good["overlay"]).is_file()
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
