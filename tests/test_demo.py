import mlflow

from medgen import demo


def test_demo_writes_phantoms_trains_and_logs_each_task(tmp_path, monkeypatch):
    # The real settings take minutes; the wiring (phantoms -> train -> MLflow) is what is tested.
    tiny = {"pet-cgan": {"layout": "paired", "minutes": 0.02,
                         "set": ["data.patches_per_volume=1", "data.batch_size=2", "model.channels=[8,16]",
                                 "model.d_channels=8", "trainer.fid_slices=0", "trainer.val_images=false",
                                 "trainer.progress=false"]}}
    monkeypatch.setattr(demo, "DEMO_SETTINGS", tiny)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = demo.run_demo(tmp_path / "demo", subjects=3, size=32, tracking_uri=uri)
    assert set(runs) == {"pet-cgan"}
    assert (tmp_path / "demo" / "data" / "paired").is_dir()
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(runs["pet-cgan"])
    assert run.info.status == "FINISHED"
    assert "val/psnr" in run.data.metrics and run.data.params["data.root"].endswith("paired")
    assert run.data.params["model.content_loss"] == "mse"  # from configs/pet-cgan-cpu.yaml


def test_what_the_readmes_commands_write_in_a_checkout_is_ignored_by_git():
    """A fresh clone after the README's first hour showed `?? demo_data/` (its phantoms example)
    and `?? mlflow.db.lock` (the tracker's lock beside mlflow.db) in `git status`."""
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["mlflow.db", "mlflow.db.lock", "mlartifacts/x", "checkpoints/run/last.pt", "demo/x", "demo_data/paired/x"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
    assert sorted(r.stdout.split()) == sorted(paths)


def test_the_readmes_first_commands_start_with_a_virtual_environment():
    """A new user ran the set-up line into the system Python (issue 24): the README's first block
    makes a venv before it; the two lines .ci/run greps (`# set-up`, `# tests`) stay as they are."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").splitlines()
    setup = next(i for i, line in enumerate(lines) if "# set-up" in line)
    assert lines[setup].startswith('python -m pip install -c constraints.txt -e ".[test]"')
    venv = [i for i, line in enumerate(lines[:setup]) if line.startswith("python -m venv .venv && source .venv/bin/activate")]
    assert venv and "```" not in "".join(lines[venv[0]:setup])  # in the same block, before the set-up line
    assert any(line.startswith("python -m pytest") and "# tests" in line for line in lines)


def test_the_readme_says_what_infer_anogan_writes():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "medgen infer anogan --run RUN_ID --input" in text and "<name>_anogan.nii.gz" in text
