"""Experiment tracking. The engine logs through a :class:`Tracker`; models never import mlflow."""

from medgen.tracking.base import Tracker
from medgen.tracking.mlflow_tracker import (
    MLflowTracker,
    default_artifact_root,
    default_tracking_uri,
    git_commit,
    resolve_tracking_uri,
)

__all__ = [
    "Tracker",
    "MLflowTracker",
    "resolve_tracking_uri",
    "default_tracking_uri",
    "default_artifact_root",
    "git_commit",
]
