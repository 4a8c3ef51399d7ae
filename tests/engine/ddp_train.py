"""Run by tests/engine/test_distributed.py under `torchrun --nproc_per_node=2`: trains the toy
task and saves each rank's final weights so that the test can check the replicas agree."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import toy  # noqa: E402
from medgen.engine import Trainer, build_task  # noqa: E402
from medgen.engine.checkpoint import seed_everything  # noqa: E402

if __name__ == "__main__":
    uri = sys.argv[1]
    config = toy.toy_config(trainer={"max_epochs": 2, "val_images": True, "fid_slices": 1}, tracking={"uri": uri})
    seed_everything(config.trainer.seed)
    model, data = build_task(config)
    run_id = Trainer(config, model, data).fit()
    rank = int(os.environ["RANK"])
    torch.save(model.state_dict(), f"weights_rank{rank}.pt")
    print(f"rank {rank} run {run_id}")
