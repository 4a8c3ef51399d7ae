"""MLflow behind the :class:`~medgen.tracking.base.Tracker` interface.

Default store: ``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlartifacts``;
``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` override it (an ``http(s)://`` server keeps its
own artifact root). Everything goes through an explicit ``MlflowClient`` (no global active
run), except ``mlflow.pytorch.log_model``, which needs the fluent API and is scoped to the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no phone-home from a medical tool
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one-file downloads need no bar
# A new sqlite store announces its schema set-up at INFO on stderr; errors must stay one line.
for _name in ("mlflow.store.db.utils", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

from torch import nn  # noqa: E402

from medgen.errors import InputError  # noqa: E402
from medgen.tracking.base import Tracker  # noqa: E402

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
# The experiment tag the MLflow 3 UI reads to choose between its GenAI pages and the training runs
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_BATCH = 100  # MLflow accepts up to 100 params / 1000 metrics per log_batch


def default_tracking_uri() -> str:
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def default_artifact_root() -> str:
    return (Path.cwd() / "mlartifacts").resolve().as_uri()


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`uri`, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def git_commit() -> str:
    """The medgen source tree's commit (``git rev-parse HEAD``), or "unknown" outside a repo."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else "unknown"


@contextlib.contextmanager
def _global_uris(uri: str):
    """Point MLflow's global tracking/registry URIs at `uri` for one fluent call, then restore
    them exactly. mlflow.pytorch.log_model only logs through the globals, and
    mlflow.set_tracking_uri also writes $MLFLOW_TRACKING_URI, which would otherwise leak this
    store into every later run of the process."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = tracking_utils._tracking_uri, registry_utils._registry_uri, {n: os.environ.get(n) for n in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved[0], saved[1]
        for name, value in saved[2].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def param_value(value: Any) -> str:
    return str(value)[:MAX_PARAM_LENGTH]


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serialise the first touches of a local sqlite store across processes.

    Two ``medgen train`` started at once in one folder would otherwise both create the schema of
    a new ``mlflow.db`` (MLflow's migrations then fail with "table ... already exists") or the
    same experiment twice.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; sqlite's own locking has to do
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):]).with_suffix(".db.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


OWNER_TAG = "medgen.process"  # host:pid of the process that runs (or ran) the run


def _owner() -> tuple[str, int]:
    import socket

    return socket.gethostname(), os.getpid()


class MLflowTracker(Tracker):
    """Logs one run to an MLflow tracking store.

    uri: tracking URI (see :func:`resolve_tracking_uri`); artifact_root: where a NEW experiment
    keeps its artifacts (default ``./mlartifacts`` for local stores, the server's for remote ones).
    """

    def __init__(self, uri: str | None = None, artifact_root: str | None = None):
        from mlflow import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        self.artifact_root = artifact_root
        with _store_lock(self.uri):  # a new sqlite store gets its schema here
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            self.client.search_experiments(max_results=1)
        self.run_id: str | None = None
        self._logged: set[tuple[str, int]] = set()  # (key, step) already in a resumed run's history

    # --- runs -----------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (or restored) if needed, and marked as model training:
        without the kind tag the MLflow 3 UI opens a new experiment on its GenAI overview
        (traces, latency) instead of the runs."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if exp.tags.get(EXPERIMENT_KIND_TAG) is None:
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp.experiment_id
        location = self.artifact_root
        if location is None and not is_remote(self.uri):
            location = default_artifact_root()
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    def start(self, experiment: str, run_name: str | None = None, run_id: str | None = None) -> str:
        with _store_lock(self.uri):
            return self._start(experiment, run_name, run_id)

    def _start(self, experiment: str, run_name: str | None, run_id: str | None) -> str:
        experiment_id = self.experiment_of_run = self.experiment_id(experiment)
        self._end_dead_runs(experiment_id, keep=run_id)
        self._logged = set()  # a new (or newly resumed) run: replaying_from says what to skip
        if run_id is not None:
            self.client.get_run(run_id)  # raises if unknown in this store
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        owner = _owner()
        self.client.set_tag(self.run_id, OWNER_TAG, f"{owner[0]}:{owner[1]}")
        return self.run_id

    def _end_dead_runs(self, experiment_id: str, keep: str | None) -> None:
        """Mark KILLED the runs still RUNNING whose process (on this host) is gone: a run killed
        mid-training would otherwise show as running for ever. Runs of other hosts, or without
        the owner tag, are left as they are; a resume takes its own run over instead."""
        from medgen.io.atomic import process_alive

        host = _owner()[0]
        try:
            running = self.client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                              max_results=200)
        except Exception:  # a store that cannot search: nothing to tidy, training goes on
            return
        for run in running:
            tag = run.data.tags.get(OWNER_TAG, "")
            run_host, _, pid = tag.rpartition(":")
            if run.info.run_id == keep or run_host != host or not pid.isdigit() or process_alive(int(pid)):
                continue
            self.client.set_tag(run.info.run_id, "medgen.ended", "its process was gone when a later run started")
            self.client.set_terminated(run.info.run_id, status="KILLED")

    def has_run(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)

    # --- logging --------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def replaying_from(self, step: int) -> None:
        """Remember which (key, step) points at or after `step` the run already holds, so that
        :meth:`log_metrics` skips them.

        A kill between logging an epoch's metrics and writing its ``last.pt`` makes the resumed
        run train (and log) that epoch again. MLflow's client cannot delete metric points, and
        removing rows from the store's tables works for a local sqlite store only, not for an
        MLflow server; buffering every metric until the next checkpoint would make the UI lag
        by up to ``trainer.checkpoint_minutes``. Skipping what is already there works on every
        store, and keeps the values the UI already showed: the replayed epoch recomputes them
        (exactly so on CPU). A resume from an older checkpoint (e.g. best.pt) with changed
        settings keeps the first values too, at the steps both runs logged."""
        self._logged = set()
        for key in self.client.get_run(self.run_id).data.metrics:  # every key the run has logged
            self._logged.update((key, m.step) for m in self.client.get_metric_history(self.run_id, key)
                                if m.step >= step)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items()
                 if (str(k), int(step)) not in self._logged]
        for i in range(0, len(items), 10 * _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + 10 * _BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(str(k), param_value(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, network: nn.Module, name: str, registered_name: str | None = None) -> str | None:
        """Log `network` with mlflow.pytorch (pickle format: pt2 needs a signature) and
        optionally register it under `registered_name`; returns the registered version (None
        unregistered). MLflow's own lines ("Successfully registered model ...", "Created version
        ...") are kept off the user's terminal: the trainer reports the registration in one line."""
        import mlflow
        import mlflow.pytorch
        import monai
        import torch
        from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

        # MLflow modules that log_model imports lazily switch the stream back on as they load
        # (mlflow.types.responses silences its own import and then calls enable_logging()):
        # loaded first, so that the first run of a process stays as quiet as the later ones
        with contextlib.suppress(ImportError):
            import mlflow.types.responses  # noqa: F401

        # pickle is chosen on purpose (pt2 needs a signature); its warning would only alarm users
        pt_logger = logging.getLogger("mlflow.pytorch")
        level, stream_on = pt_logger.level, MLFLOW_LOGGING_STREAM.enabled
        pt_logger.setLevel(logging.ERROR)
        MLFLOW_LOGGING_STREAM.enabled = False  # eprint()s of the registry go through this stream
        try:
            with _global_uris(self.uri), mlflow.start_run(run_id=self.run_id):
                info = mlflow.pytorch.log_model(
                    network,
                    name=name,
                    serialization_format="pickle",
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}"],
                    registered_model_name=registered_name,
                )
        finally:
            pt_logger.setLevel(level)
            MLFLOW_LOGGING_STREAM.enabled = stream_on
        version = getattr(info, "registered_model_version", None)
        return None if registered_name is None or version is None else str(version)

    # --- reading back -----------------------------------------------------------------------
    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str | Path) -> Path:
        return Path(self.client.download_artifacts(run_id, artifact_path, str(dst_dir)))

    def download_checkpoint(self, run_id: str, dst_dir: str | Path) -> Path:
        """checkpoints/best.pt of `run_id`, else checkpoints/last.pt. InputError if none."""
        if not self.has_run(run_id):
            raise InputError(run_id, f"neither a checkpoint file nor a run in the MLflow store {self.uri}")
        names = {Path(f.path).name for f in self.client.list_artifacts(run_id, "checkpoints")}
        for name in ("best.pt", "last.pt"):
            if name in names:
                return self.download_artifact(run_id, f"checkpoints/{name}", dst_dir)
        raise InputError(run_id, f"MLflow run has no checkpoints/best.pt or checkpoints/last.pt in {self.uri}")
