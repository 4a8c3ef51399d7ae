"""The training engine: the one loop, checkpoints, schedules, distributed training."""

from medgen.engine.build import build_task, load_task, train
from medgen.engine.checkpoint import load_checkpoint, save_checkpoint
from medgen.engine.trainer import Trainer

__all__ = ["Trainer", "build_task", "train", "load_task", "save_checkpoint", "load_checkpoint"]
