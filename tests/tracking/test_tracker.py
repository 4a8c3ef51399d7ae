from pathlib import Path

from mlflow import MlflowClient

from medgen.tracking import MLflowTracker, git_commit, resolve_tracking_uri
from medgen.tracking import mlflow_tracker


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri() == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"


def test_git_commit_never_fails(tmp_path, monkeypatch):
    commit = git_commit()
    assert commit == "unknown" or (len(commit) == 40 and int(commit, 16) >= 0)
    monkeypatch.setattr(mlflow_tracker, "__file__", str(tmp_path / "mlflow_tracker.py"))  # outside any repo
    assert git_commit() == "unknown"
    monkeypatch.setenv("PATH", "")  # no git at all
    assert git_commit() == "unknown"


def test_local_store_layout_and_param_limit(tmp_path):
    tracker = MLflowTracker()
    run_id = tracker.start("exp")
    tracker.log_params({"long": "x" * 10000, "n": 3, "none": None})
    tracker.log_metrics({"val/psnr": 20.5}, step=1)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    tracker.log_artifact(note, "notes")
    tracker.end("FINISHED")
    client = MlflowClient(resolve_tracking_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(run.data.params["long"]) == 6000 and run.data.params["n"] == "3" and run.data.params["none"] == "None"
    assert (tmp_path / "mlflow.db").is_file()
    assert list(Path(tmp_path, "mlartifacts").rglob("note.txt"))  # artifacts in ./mlartifacts
    assert tracker.has_run(run_id) and not tracker.has_run("0" * 32)


def test_logging_a_model_leaves_mlflow_global_uris_as_they_were(tmp_path, monkeypatch):
    import os

    import mlflow
    from torch import nn

    from medgen.tracking import MLflowTracker

    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    tracker = MLflowTracker(f"sqlite:///{tmp_path / 'other.db'}")
    tracker.start("leak-check")
    tracker.log_model(nn.Linear(2, 1), "model")
    tracker.end()
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before


def _start_run(uri: str, name: str) -> str:
    tracker = MLflowTracker(uri)
    run_id = tracker.start("race", run_name=name)
    tracker.end()
    return run_id


def test_runs_started_at_once_share_a_new_store(tmp_path):
    # Several trainings launched together in one folder all create mlflow.db's schema and the
    # experiment: without the store lock MLflow's migrations collide ("table ... already exists").
    import multiprocessing as mp

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(3) as pool:
        run_ids = pool.starmap(_start_run, [(uri, f"r{i}") for i in range(3)])
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("race")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)


def test_experiments_are_marked_as_model_training(tmp_path):
    """The MLflow 3 UI opens an experiment without this tag on its GenAI overview, not the runs."""
    tracker = MLflowTracker()
    tracker.start("new")
    client = MlflowClient(resolve_tracking_uri())
    assert client.get_experiment_by_name("new").tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("made-before")  # e.g. by an older medgen: tagged when next used
    tracker.start("made-before")
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_whose_process_died_is_marked_killed_by_the_next_start(tmp_path):
    import socket

    killed = MLflowTracker()
    dead_id = killed.start("exp")  # then SIGKILL: no end() is ever called
    client = MlflowClient(resolve_tracking_uri())
    client.set_tag(dead_id, mlflow_tracker.OWNER_TAG, f"{socket.gethostname()}:{_dead_pid()}")
    elsewhere = MLflowTracker().start("exp")  # running on another machine: not ours to judge
    client.set_tag(elsewhere, mlflow_tracker.OWNER_TAG, f"other-host:{_dead_pid()}")
    alive = MLflowTracker()
    alive_id = alive.start("exp")  # this process: alive
    new = MLflowTracker()
    new.start("exp")
    assert client.get_run(dead_id).info.status == "KILLED"
    assert client.get_run(elsewhere).info.status == "RUNNING" and client.get_run(alive_id).info.status == "RUNNING"
    # a resume takes its own run over, whatever its state
    resumed = MLflowTracker()
    assert resumed.start("exp", run_id=dead_id) == dead_id and client.get_run(dead_id).info.status == "RUNNING"


def test_registering_a_model_keeps_mlflows_lines_off_the_terminal(tmp_path, capfd):
    """MLflow prints 'Successfully registered model ...' and 'Created version ...' on stderr at
    the end of every run (issue 24); the trainer says it in one line of its own instead."""
    from torch import nn

    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from toy import toy_config

    from medgen.engine import train

    tracker = MLflowTracker(f"sqlite:///{tmp_path / 'reg.db'}")
    tracker.start("registry")
    assert tracker.log_model(nn.Linear(2, 1), "model", registered_name="toy-net") == "1"
    assert tracker.log_model(nn.Linear(2, 1), "model", registered_name="toy-net") == "2"
    assert tracker.log_model(nn.Linear(2, 1), "plain") is None
    tracker.end()
    err = capfd.readouterr().err
    assert "Successfully registered" not in err and "Created version" not in err and "already exists" not in err
    lines = []
    train(toy_config(trainer={"max_epochs": 1, "val_images": False},
                     tracking={"log_model": True, "register_model": True, "uri": f"sqlite:///{tmp_path / 'run.db'}"}),
          report=lines.append)
    assert "model registered as 'toy' version 1" in lines
    err = capfd.readouterr().err
    assert "Successfully registered" not in err and "Created version" not in err
