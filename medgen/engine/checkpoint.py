"""Checkpoint files: atomic writes, ``weights_only`` loads, RNG states as plain data.

A checkpoint is a dict of state dicts and plain values only (no pickled classes), so that
``torch.load(path, weights_only=True)`` can read it:

``format, task, config (Config.to_dict()), epoch (epochs completed), global_step,
model (every network, one state dict), optimizers/schedulers/scalers ({name: state}),
rng, run_id, extra (model.extra_state()), data (the data module's fitted state_dict()),
best ({metric, mode, value, epoch}), metrics``.
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.errors import InputError
from medgen.io.atomic import atomic_output

FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a medgen checkpoint with ``weights_only=True``; InputError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        raise InputError(path, f"not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise InputError(path, "not a medgen checkpoint (no model/config entries)")
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors/lists/tuples."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Checkpointer:
    """Where and how a run's ``last.pt``/``best.pt`` go: ``folder/<run id>/`` and the MLflow
    run's ``checkpoints/`` (``folder=None``: MLflow's copy only, written to a scratch folder
    removed after logging; ``trainer.local_checkpoints=false``). When to write is the engine's
    schedule (:class:`medgen.engine.budget.OverheadSchedule`); time goes to the timer's
    ``checkpoint`` and ``logging`` phases."""

    def __init__(self, folder, tracker, timer) -> None:
        self.folder = None if folder is None else Path(folder)
        self.tracker, self.timer = tracker, timer
        self.run_id: str | None = None
        self._pending_best: dict[str, Any] | None = None  # best state not yet written to best.pt
        self._best_tags: dict[str, str] = {}

    def run_dir(self) -> Path | None:
        return None if self.folder is None else self.folder / str(self.run_id)

    def save(self, name: str, state: dict[str, Any]) -> Path:
        import contextlib
        import tempfile

        with contextlib.ExitStack() as scratch:
            folder = self.run_dir() or Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="medgen-ckpt-")))
            with self.timer.phase("checkpoint"):
                path = save_checkpoint(folder / name, state)
            with self.timer.phase("logging"):
                self.tracker.log_artifact(path, "checkpoints")
        return path

    def keep_best(self, state: dict[str, Any], epoch: int, metric: str, value: float) -> None:
        """Hold a state that just became the best in memory (a CPU copy) until the next write:
        best.pt then costs one write per checkpoint interval, not one per improvement."""
        with self.timer.phase("checkpoint"):
            self._pending_best = _cpu_copy(state)
        # The run page then says which epoch best.pt holds: with a gated model (may_be_best)
        # it need not be the metric curve's maximum.
        self._best_tags = {"medgen.best_epoch": str(epoch), f"medgen.best_{metric}": f"{value:.6g}"}

    def write(self, state: dict[str, Any]) -> None:
        """best.pt (when a newer best is pending) and last.pt (`state`)."""
        if self._pending_best is not None:
            self.save("best.pt", self._pending_best)
            self._pending_best = None
            with self.timer.phase("logging"):
                self.tracker.set_tags(self._best_tags)
        self.save("last.pt", state)


def _cpu_copy(value: Any) -> Any:
    """A deep copy of a (nested) state with every tensor cloned to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return copy.deepcopy(value)
