"""Links into the MLflow UI that open an experiment's training runs.

MLflow 3.17's UI does not read the experiment's ``mlflow.experimentKind`` tag to choose its
pages: a switch at the top left ("GenAI" | "Model training", GenAI unless the user has picked
the other, remembered in the browser) decides, so a click on any experiment lands on the GenAI
overview (traces, latency, tokens). A link that carries ``workflowType=machine_learning``
opens the runs table whatever the browser remembers; the tag is still set (older 3.x UIs and
the experiment list read it). Checked in a headless browser by tests/tracking/test_ui_browser.py.

The store is read with sqlite3, read-only (no MLflow client, nothing created or migrated):
``medgen ui`` lists the links while its server starts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote

RUNS_VIEW_QUERY = "workflowType=machine_learning"
UI_PORT = 5000  # `medgen ui`'s default port


def ui_base(port: int = UI_PORT) -> str:
    """The address `medgen ui --port PORT` serves on (127.0.0.1 only)."""
    return f"http://127.0.0.1:{port}"


def experiment_url(base: str, experiment_id: str) -> str:
    """The URL of `experiment_id`'s runs table on the UI at `base` (``http://127.0.0.1:5000``)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{RUNS_VIEW_QUERY}"


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` store (``sqlite:////abs/file`` absolute, as SQLAlchemy
    reads it), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(unquote(uri[len(prefix):].split("?", 1)[0]))


def store_experiments(uri: str) -> list[tuple[str, str, int]]:
    """``(id, name, runs)`` of the active experiments of a local sqlite store that hold runs or
    were made by medgen, oldest first; [] for another kind of store, a store not made yet or
    one that cannot be read (opened read-only: nothing is created or migrated)."""
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return []
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2) as db:
            rows = db.execute(
                "SELECT e.experiment_id, e.name,"
                " (SELECT COUNT(*) FROM runs r WHERE r.experiment_id = e.experiment_id AND r.lifecycle_stage = 'active'),"
                " (SELECT COUNT(*) FROM experiment_tags t WHERE t.experiment_id = e.experiment_id"
                "  AND t.key = 'mlflow.experimentKind')"
                " FROM experiments e WHERE e.lifecycle_stage = 'active' ORDER BY e.experiment_id").fetchall()
    except sqlite3.Error:
        return []
    return [(str(i), name, int(n)) for i, name, n, tagged in rows if n or tagged]
