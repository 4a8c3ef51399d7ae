"""What the engine logs through. Models never import mlflow; only MLflowTracker does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


class Tracker:
    """No-op tracker (tracking disabled, or a non-zero rank under torchrun)."""

    run_id: str | None = None
    experiment_of_run: str | None = None  # the id of the experiment the run is in

    def start(self, experiment: str, run_name: str | None = None, run_id: str | None = None) -> str | None:
        """Start a run, or continue `run_id` (resume). Returns the run id."""
        return None

    def has_run(self, run_id: str) -> bool:
        """Whether this store holds run `run_id` (a resumed run continues it only then)."""
        return False

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def replaying_from(self, step: int) -> None:
        """A resumed run is about to log again the steps from `step` on (its checkpoint's
        epoch): points it logged there before it was killed must not appear twice."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_model(self, network: nn.Module, name: str, registered_name: str | None = None) -> str | None:
        """Log a network; with `registered_name`, register it. Returns the registered version."""
        return None

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def end(self, status: str = "FINISHED") -> None:
        """status: FINISHED | FAILED | KILLED."""
