"""Training against a real `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1."""

import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy  # noqa: E402
from mlflow_server import running_mlflow_server  # noqa: E402
from medgen.engine import load_task, train  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a sqlite store in a temporary folder; stopped by its PID (its process
    group: the server's uvicorn worker goes with it)."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


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
