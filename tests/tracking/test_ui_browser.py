"""The MLflow UI, seen in a headless browser, opens a medgen experiment on its training runs.

MLflow 3.17's UI opens an experiment clicked in its list on the GenAI overview (traces, latency,
tokens) whatever the experiment's ``mlflow.experimentKind`` tag says: its "GenAI | Model
training" switch decides. `medgen ui` therefore prints a link per experiment that opens the runs
(medgen.tracking.ui_links). This test loads such a link, for an experiment and a run made by
medgen's tracker on a real `mlflow server`, in Qt WebEngine's Chromium and reads the page.

Needs PyQt6-WebEngine (``pip install -e ".[browser]"``, about 0.5 GB: not in the test extra);
skipped without it.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlflow_server import running_mlflow_server  # noqa: E402

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def has_browser() -> bool:
    try:
        return importlib.util.find_spec("PyQt6.QtWebEngineWidgets") is not None
    except ImportError:  # no PyQt6 at all
        return False


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` (sqlite store) on 127.0.0.1, stopped by its process group."""
    with running_mlflow_server(tmp_path) as url:
        yield url


def open_page(url: str, png: Path, want: str, timeout: float = 90) -> dict:
    """``{"href", "text"}`` of `url` once its text holds `want` (or `timeout` passed)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QTWEBENGINE_CHROMIUM_FLAGS": "--no-sandbox"}
    out = subprocess.run([sys.executable, str(HERE / "browser_page.py"), url, str(png), want, str(timeout)],
                         capture_output=True, text=True, env=env, timeout=timeout + 90)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0 and lines, f"browser failed (exit {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(lines[-1])


@pytest.mark.skipif(not has_browser(), reason="no headless browser: pip install PyQt6-WebEngine (the browser extra)")
def test_the_link_medgen_ui_prints_opens_the_training_runs(mlflow_server, tmp_path):
    from medgen.commands.ui import experiment_lines
    from medgen.tracking import MLflowTracker

    tracker = MLflowTracker(mlflow_server)
    run_name = "pet-cgan phantoms browser-check"
    tracker.start("medgen-browser-check", run_name=run_name)
    tracker.log_metrics({"val/psnr": 25.0}, step=1)
    tracker.end()
    experiment_id = tracker.client.get_experiment_by_name("medgen-browser-check").experiment_id
    # the link `medgen ui` prints for it, read from the server's own store
    lines = experiment_lines(f"sqlite:///{tmp_path / 'mlflow.db'}", mlflow_server)
    url = next(line.split()[-1] for line in lines if "medgen-browser-check" in line)

    png = tmp_path / "experiment.png"
    page = open_page(url, png, run_name)
    assert png.is_file() and png.stat().st_size > 10_000, "no screenshot"
    text = page["text"]
    assert f"/experiments/{experiment_id}/runs" in page["href"], page["href"]
    assert "workflowType=genai" not in page["href"]
    assert run_name in text, text[:1000]  # the runs table, with medgen's run in it
    assert "Run Name" in text
    for genai in ("Token Usage", "Latency", "Tool calls"):  # the GenAI overview's panels
        assert genai not in text, f"GenAI overview shown: {text[:1000]}"
