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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_kill_of_medgen_ui_stops_the_server(tmp_path, sig):
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "medgen.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while not answers(url):
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "medgen ui did not answer within 240 s"
            time.sleep(0.5)
        proc.send_signal(sig)  # `kill <pid>` / a closed terminal, not Ctrl-C
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while answers(url) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not answers(url), "the MLflow server outlived medgen ui"
    finally:
        if proc.poll() is None:
            proc.kill()
