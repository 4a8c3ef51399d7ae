"""Training against a real `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

import toy  # noqa: E402
from medgen.engine import load_task, train  # noqa: E402

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a sqlite store in a temporary folder; stopped by its PID (its process
    group: the server's uvicorn worker goes with it)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 240 s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_two_epochs_read_back_through_the_server(mlflow_server, tmp_path):
    config = toy.toy_config(
        trainer={"max_epochs": 2, "val_images": True},
        tracking={"uri": mlflow_server, "experiment": "server-test", "log_model": True, "register_model": True},
    )
    run_id = train(config)
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.max_epochs"] == "2" and run.data.params["seed"] == "0"
    assert "git_commit" in run.data.params and run.data.params["tracking.uri"] == mlflow_server
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/psnr")) == [1, 2]
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/l1")) == [1, 2]

    png = Path(client.download_artifacts(run_id, "samples/epoch_002.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    ckpt_path = client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path / "ck"))
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["run_id"] == run_id and ckpt["epoch"] == 2
    local = torch.load(Path("checkpoints", run_id, "last.pt"), weights_only=True)
    assert all(torch.equal(local["model"][k], ckpt["model"][k]) for k in local["model"])

    versions = client.search_model_versions("name='toy'")
    assert [v.run_id for v in versions] == [run_id]  # the generator is registered under the task
    model, _, config2, _ = load_task(run_id, tracking_uri=mlflow_server, device="cpu")
    assert config2.task == "toy" and torch.equal(model.G[0].weight, local["model"]["G.0.weight"])
