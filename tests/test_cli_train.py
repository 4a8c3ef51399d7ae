"""`medgen train | evaluate | infer | ui` end to end on the toy task (tests/engine/toy.py)."""

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent / "engine"))

import toy  # noqa: E402,F401  (registers the "toy" task)
from medgen.cli import main  # noqa: E402
from medgen.tracking import resolve_tracking_uri  # noqa: E402


def write_config(path: Path, **trainer) -> Path:
    import yaml

    raw = {
        "task": "toy",
        "trainer": {"max_epochs": 1, "fid_slices": 0, "progress": False, "device": "cpu", "val_images": False, **trainer},
        "tracking": {"log_model": False},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def write_volume(path: Path) -> Path:
    rng = np.random.default_rng(1)
    data = rng.random((18, 20, 14)).astype(np.float32) * 300 + 50
    affine = np.array([[0, -1.2, 0, 30], [0.9, 0, 0, -20], [0, 0, 2.5, 7], [0, 0, 0, 1]])  # rotated, anisotropic
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_train_evaluate_infer_resume(tmp_path, capsys):
    cfg = write_config(tmp_path / "toy.yaml")
    assert main(["train", "toy", "--config", str(cfg), "trainer.seed=3", "data.size=12"]) == 0
    printed = capsys.readouterr()
    run_id = printed.out.strip().splitlines()[-1]
    run = MlflowClient(resolve_tracking_uri()).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["trainer.seed"] == "3"
    assert run.data.params["data.size"] == "12"
    # what the run is, in its name (MLflow's random names repeated: the trainer seeds Python's RNG)
    assert run.info.run_name.startswith("toy 20")
    # the user hears where it runs, how validation goes, where best.pt is and where the time went
    said = printed.err
    assert "device: cpu, " in said and f"run {run_id} in {resolve_tracking_uri()}; watch it with `medgen ui`" in said
    # the link that opens the experiment on its runs (a clicked one opens on MLflow's GenAI overview)
    assert f"at http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning" in said
    assert " 1 threads" not in said
    assert "epoch 1: val/psnr " in said and f"best.pt: epoch 1, val/psnr" in said and "time: " in said

    # --resume without --config continues the checkpoint's own config and the same run
    ckpt = Path("checkpoints", run_id, "last.pt")
    assert main(["train", "toy", "--resume", str(ckpt), "trainer.max_epochs=2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == run_id
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2

    volume = write_volume(tmp_path / "scan.nii.gz")
    assert main(["evaluate", "toy", "--run", run_id, "--data", str(volume), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "toy" and result["run_id"] == run_id and result["n_volumes"] == 8
    assert set(result["subjects"]) == {f"s{i:02d}" for i in range(8)}
    assert {"psnr", "ssim", "mae", "nmse", "input_psnr"} <= set(result["metrics"])
    mean_psnr = np.mean([m["psnr"] for m in result["subjects"].values()])
    assert result["metrics"]["psnr"] == pytest.approx(mean_psnr)

    out_dir = tmp_path / "out"
    assert main(["infer", "toy", "--run", str(ckpt), "--input", str(volume), "--output", str(out_dir)]) == 0
    written = out_dir / "scan_toy.nii.gz"
    assert capsys.readouterr().out.strip() == str(written)
    src, out = nib.load(str(volume)), nib.load(str(written))
    assert out.shape == src.shape and np.allclose(out.affine, src.affine, atol=1e-4)
    values = np.asarray(out.dataobj)
    assert np.isfinite(values).all() and values.std() > 0
    assert 0 <= values.min() and values.max() <= 400  # back in the input's units (50..350), not model space

    # inference settings can change after training (--set model.KEY=VALUE); the network cannot
    from medgen.engine import load_task

    assert load_task(ckpt, device="cpu", overrides=["model.adv_weight=0.5"])[0].adv_weight == 0.5
    for bad, says in (("model.channels=8", "no longer fit the network"), ("data.size=4", "only model.KEY=VALUE")):
        assert main(["infer", "toy", "--run", str(ckpt), "--input", str(volume), "--output", str(tmp_path / "o2"),
                     "--set", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "o2").exists()


def test_train_help_lists_the_tasks_that_exist(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    usage = capsys.readouterr().out
    from medgen.models.registry import TASK_MODULES

    assert " | ".join(TASK_MODULES) in usage  # every task's module exists now, listed in the registry's order


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["infer", "toy", "--run", "missing.pt", "--input", "nowhere.nii.gz", "--output", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere.nii.gz" in err[0]
    volume = write_volume(tmp_path / "scan.nii.gz")
    assert main(["infer", "toy", "--run", "missing.pt", "--input", str(volume), "--output", "o"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["train", "toy", "trainer.max_epoch=1"]) == 2
    assert "trainer.max_epoch" in capsys.readouterr().err
    # a value a constructor refuses: one line naming the section, not a traceback
    assert main(["train", "pet-cgan", f"data.root={tmp_path}", "data.modality=xx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data: modality must be one of" in err[0]
    # the number of dimensions from two places that disagree
    assert main(["train", "pet-cgan", f"data.root={tmp_path}", "data.patch_size=[32,32]", "model.spatial_dims=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.spatial_dims=3 but data.patch_size=[32, 32]" in err[0]
    assert not Path("o").exists()


def test_ui_serves_the_local_store_on_localhost(monkeypatch, tmp_path):
    from medgen.commands import ui

    cmd = ui.command(port=5123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5123"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (tmp_path / "mlartifacts").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert "sqlite:////elsewhere/x.db" in ui.command()

    started = {}

    class FakePopen:
        pid = -1

        def __init__(self, cmd, env, **options):
            started.update(cmd=cmd, env=env, **options)

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(ui.subprocess, "Popen", FakePopen)
    assert main(["ui", "--port", "5124"]) == 1  # the fake server ends at once, by itself: an error (issue 24)
    assert started["cmd"][2:4] == ["mlflow", "ui"] and "5124" in started["cmd"]
    assert started["env"]["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert started["start_new_session"] is True  # its own process group, stopped as a whole


def test_ui_server_keeps_its_chatter_off_the_terminal():
    """`medgen ui` printed ~50 lines for a start and a stop: four workers' start-up, a
    StarletteDeprecationWarning with its source line per worker, a log line per HTTP request
    (hundreds for one page), 'Registry store URI not provided'."""
    from medgen.commands import ui

    cmd = ui.command(port=5125)
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--registry-store-uri") + 1] == cmd[cmd.index("--backend-store-uri") + 1]
    env = ui.server_environment({"PATH": "/bin", "PYTHONWARNINGS": "default"})
    assert env["PATH"] == "/bin" and env["PYTHONWARNINGS"] == "ignore" and env["UVICORN_LOG_LEVEL"] == "warning"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


@pytest.mark.parametrize("tty", [True, False])
def test_evaluate_json_shows_progress_on_a_terminal(monkeypatch, capsys, tty):
    """`medgen evaluate ... --json` sat two minutes without a word on a terminal: the bar goes
    to stderr, so it can show there without touching the JSON on stdout (not into a log file)."""
    import medgen.engine
    import medgen.inference
    from medgen.config import build_config

    config = build_config({"task": "toy", "data": {}, "model": {}})
    seen = {}

    def fake_evaluate(model, cfg, data, fid_slices=None, progress=True, state=None):
        seen["progress"] = progress
        return {"n_volumes": 1, "metrics": {"psnr": 1.0}, "subjects": {}}

    monkeypatch.setattr(medgen.engine, "load_task", lambda run, device=None, overrides=None: (None, None, config, {}))
    monkeypatch.setattr(medgen.inference, "evaluate_folder", fake_evaluate)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert main(["evaluate", "toy", "--run", "x.pt", "--data", "d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {"psnr": 1.0}
    assert seen["progress"] is tty
