import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from medgen.tracking import resolve_tracking_uri

SCRIPT = Path(__file__).with_name("ddp_train.py")


@pytest.mark.slow
def test_torchrun_two_cpu_processes_give_one_run_and_identical_replicas(tmp_path):
    uri = resolve_tracking_uri()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT), uri]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_ids = {line.split()[-1] for line in out.stdout.splitlines() if line.startswith("rank ")}
    assert len(run_ids) == 1  # both ranks report the same run

    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.run_id in run_ids
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert {"train/l1", "val/psnr", "val/fid"} <= set(run.data.metrics)
    # each rank saw half the data: 6 patches, batch 2 -> 2 steps per rank per epoch
    ckpt = torch.load(Path(tmp_path, "checkpoints", run.info.run_id, "last.pt"), weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4
    # averaged gradients and broadcast buffers keep the replicas identical
    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    for key in w0:
        assert torch.allclose(w0[key].float(), w1[key].float(), atol=1e-6), key
    assert [f.path for f in client.list_artifacts(run.info.run_id, "samples")] == ["samples/epoch_001.png", "samples/epoch_002.png"]
    # only rank 0 wrote checkpoints and artifacts
    assert [p.name for p in Path(tmp_path, "checkpoints").iterdir()] == [run.info.run_id]
