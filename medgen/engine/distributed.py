"""Synchronous data parallelism under ``torchrun`` without wrapping the models.

Why not ``DistributedDataParallel``: a medgen model owns any number of networks, calls some of
them several times per step (CycleGAN runs each generator twice), freezes others with
``frozen()`` and steps several optimisers per batch. DDP's reducer hooks into each wrapped
module's forward/backward and fights all of that (unused-parameter errors, a second forward
before the reduction, frozen parameters that toggle ``requires_grad``). The engine instead does
the same mathematics by hand, with no change to any model:

* at start, every parameter and buffer is broadcast from rank 0 (identical replicas);
* inside the engine's optimiser step, after ``backward`` and before clipping/stepping, the
  gradients of that optimiser's parameters are averaged across ranks (one flattened all-reduce,
  which also carries a "non-finite loss" flag so that every rank stops together);
* buffers (BatchNorm running statistics) are re-broadcast from rank 0 after each epoch, as
  DDP does before each forward;
* each rank reads a different shard of the data (``DistributedSampler`` for training, a strided
  shard for validation); epoch losses and validation metrics are reduced as sums and counts.

Only rank 0 talks to MLflow and writes checkpoints. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


class DistEnv:
    """The process group of this run (or a single process: ``world_size == 1``)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, owns_group: bool = False):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.owns_group = owns_group

    @classmethod
    def from_env(cls, use_cuda: bool) -> "DistEnv":
        """Join the torchrun process group if launched by torchrun, else a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        if not (dist.is_available() and launched_by_torchrun()):
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- collectives (no-ops in a single process) ---------------------------------------------
    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        if not self.enabled:
            return
        with torch.no_grad():
            tensors = [] if buffers_only else list(module.parameters())
            tensors += [b for b in module.buffers()]
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def average_gradients(self, params: Iterable[torch.Tensor], bad: bool) -> bool:
        """Average the gradients of `params` across ranks in place; returns whether ANY rank
        reported `bad` (a non-finite loss), so that all ranks take the same decision."""
        if not self.enabled:
            return bad
        grads = [p.grad for p in params if p.grad is not None]
        flag = torch.tensor([1.0 if bad else 0.0], device=grads[0].device if grads else self._device())
        flat = torch.cat([g.reshape(-1).to(flag.dtype) for g in grads] + [flag]) if grads else flag
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        any_bad = bool(flat[-1].item() > 0)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g).to(g.dtype) / self.world_size)
            offset += n
        return any_bad

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return bool(t.item() > 0)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def reduce_means(self, sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
        """Means over all ranks of per-key sums/counts (keys may differ between ranks)."""
        total_s: dict[str, float] = {}
        total_c: dict[str, int] = {}
        for s, c in self.gather_objects((sums, counts)):
            for k, v in s.items():
                total_s[k] = total_s.get(k, 0.0) + float(v)
                total_c[k] = total_c.get(k, 0) + int(c[k])
        return {k: total_s[k] / total_c[k] for k in total_s if total_c[k] > 0}

    def broadcast_object(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
