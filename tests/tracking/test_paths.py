"""Paths into MLflow: a patient-named data folder outside the working folder never reaches the
store (params, run name), unless tracking.log_paths=true."""

from pathlib import Path

import numpy as np
import pytest

from medgen.tracking.paths import loggable_folder_name, loggable_path, path_token, scrub_params


def test_loggable_path_rules(tmp_path, monkeypatch):
    work = tmp_path / "project"
    (work / "data").mkdir(parents=True)
    monkeypatch.chdir(work)
    outside = tmp_path / "Smith_John_1234567"
    assert loggable_path("data") == "data" and loggable_path(work / "data") == "data"
    assert loggable_path(outside) == f"outside/{path_token(outside)}" and "Smith" not in loggable_path(outside)
    assert loggable_path(outside) == loggable_path(str(outside) + "/")  # one folder, one token
    assert loggable_path(outside, log_paths=True) == str(outside)
    assert loggable_path(f"sqlite:///{work / 'mlflow.db'}") == "sqlite:///mlflow.db"
    assert loggable_path(f"sqlite:///{outside / 'mlflow.db'}").startswith("sqlite:///outside/")
    assert loggable_path("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert loggable_folder_name(outside) == path_token(outside) and loggable_folder_name("data") == "data"
    assert loggable_folder_name(outside, log_paths=True) == "Smith_John_1234567"
    scrubbed = scrub_params({"data.root": str(outside), "model.lr": 0.1, "trainer.resume": None})
    assert scrubbed == {"data.root": f"outside/{path_token(outside)}", "model.lr": 0.1, "trainer.resume": None}


@pytest.mark.parametrize("log_paths", [False, True])
def test_a_patient_named_folder_stays_out_of_the_store(log_paths, tmp_path, monkeypatch):
    import sqlite3

    import nibabel as nib

    from medgen.cli import main

    patient = tmp_path / "scans" / "Doe_Jane_MRN00981"
    rng = np.random.default_rng(0)
    for s in ("s1", "s2", "s3"):
        (patient / s).mkdir(parents=True)
        for key in ("t1", "t2"):
            nib.save(nib.Nifti1Image(rng.random((16, 16, 16)).astype(np.float32), np.eye(4)), patient / s / f"{key}.nii.gz")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    config = Path(__file__).resolve().parents[2] / "configs" / "eagan-cpu.yaml"
    argv = ["train", "eagan", "--config", str(config), f"data.root={patient}", "trainer.max_epochs=1",
            "trainer.max_minutes=null", "model.channels=[4,8]", "model.d_channels=4", "model.d_layers=1",
            "data.patch_size=[16,16,16]", "data.patches_per_volume=1", "data.batch_size=2", "trainer.fid_slices=0",
            "trainer.val_images=false", "trainer.progress=false", "tracking.log_model=false",
            "tracking.register_model=false", f"tracking.log_paths={str(log_paths).lower()}"]
    assert main(argv) == 0
    db = sqlite3.connect(work / "mlflow.db")
    text = " ".join(str(v) for table in ("params", "runs", "tags", "metrics")
                    for row in db.execute(f"SELECT * FROM {table}") for v in row)
    assert ("Doe_Jane" in text) == log_paths
    assert ("MRN00981" in text) == log_paths
