"""`medgen ui` prints, per experiment, a link that opens its training runs (MLflow 3.17 opens an
experiment clicked in its list on the GenAI overview, whatever the experiment's kind tag)."""

import sqlite3
import subprocess
import sys
import types

from medgen.commands import ui
from medgen.tracking import MLflowTracker
from medgen.tracking.ui_links import experiment_url, sqlite_path, store_experiments


def test_experiment_url_opens_the_runs_table():
    url = experiment_url("http://127.0.0.1:5000/", "3")
    assert url == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"


def test_sqlite_path_reads_the_store_file():
    assert str(sqlite_path("sqlite:////abs/dir/mlflow.db")) == "/abs/dir/mlflow.db"
    assert str(sqlite_path("sqlite:///mlflow.db")) == "mlflow.db"
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("postgresql://u@h/db") is None


def test_lines_name_each_medgen_experiment_with_its_runs_link(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri, artifact_root=(tmp_path / "art").as_uri())
    for task in ("pet-cgan", "anogan"):
        tracker.start(task, run_name=f"{task} phantoms")
        tracker.end()
    tracker.experiment_id("eagan")  # made, no run yet: still listed (medgen's kind tag)
    ids = {e.name: e.experiment_id for e in tracker.client.search_experiments()}
    lines = ui.experiment_lines(uri, "http://127.0.0.1:5000")
    assert "Default" not in "".join(lines)  # MLflow's empty default experiment is not ours
    for name, runs in (("pet-cgan", "1 run "), ("anogan", "1 run "), ("eagan", "0 runs")):
        line = next(line for line in lines if line.split()[0] == name)
        assert runs in line
        assert line.endswith(f"http://127.0.0.1:5000/#/experiments/{ids[name]}/runs?workflowType=machine_learning")
    assert "Model training" in lines[-1]


def test_no_store_no_lines_and_nothing_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert ui.experiment_lines(uri, "http://127.0.0.1:5000") == []
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "mlflow.db").write_bytes(b"not a database")
    assert store_experiments(uri) == []
    assert ui.experiment_lines("http://127.0.0.1:5001", "http://127.0.0.1:5000") == []


def test_store_is_read_while_another_process_holds_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri, artifact_root=(tmp_path / "art").as_uri())
    tracker.start("pet-cgan", run_name="r")
    tracker.end()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # an open reader elsewhere (the server)
        db.execute("SELECT 1 FROM experiments").fetchall()
        assert [name for _, name, _ in store_experiments(uri)] == ["pet-cgan"]


def test_medgen_ui_prints_the_links_at_start(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri, artifact_root=(tmp_path / "art").as_uri())
    tracker.start("pet-cgan", run_name="r")
    tracker.end()
    eid = tracker.client.get_experiment_by_name("pet-cgan").experiment_id

    class Server:  # the MLflow server, gone at once
        pid = 999999999

        def __init__(self, cmd, **kwargs):
            assert cmd[:3] == [sys.executable, "-m", "mlflow"]

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Server)
    port = ui.free_port()
    assert ui.run(types.SimpleNamespace(port=port, uri=uri)) == 1  # the server ended by itself
    err = capsys.readouterr().err
    assert f"MLflow UI on http://127.0.0.1:{port}" in err
    assert "exited by itself" in err
    assert f"http://127.0.0.1:{port}/#/experiments/{eid}/runs?workflowType=machine_learning" in err
