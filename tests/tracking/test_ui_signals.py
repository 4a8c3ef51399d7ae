"""`medgen ui` stops its MLflow server however it is stopped (no orphan left on the port)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_ui(tmp_path):
    """`medgen ui` on a free port in `tmp_path`, once it answers: ``(process, url)``."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "medgen.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while not answers(url):
        if proc.poll() is not None or time.monotonic() >= deadline:
            proc.kill()
            raise AssertionError("medgen ui did not answer within 240 s: " + (tmp_path / "ui.log").read_text()[-2000:])
        time.sleep(0.5)
    return proc, url


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_kill_of_medgen_ui_stops_the_server(tmp_path, sig):
    proc, url = start_ui(tmp_path)
    try:
        proc.send_signal(sig)  # `kill <pid>` / a closed terminal, not Ctrl-C
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while answers(url) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not answers(url), "the MLflow server outlived medgen ui"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_terminal_shows_the_address_not_the_servers_chatter(tmp_path):
    """A start, three requests and a stop: medgen's own lines and MLflow's one security note,
    not a line per request, per worker, or a library's deprecation warning."""
    proc, url = start_ui(tmp_path)
    try:
        for _ in range(3):
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "ui.log").read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith(f"MLflow UI on {url}") and lines[-1] == "MLflow UI stopped", text
    assert "HTTP/1.1" not in text and "Warning" not in text and "Registry store URI" not in text, text
    assert len(lines) <= 6, text
