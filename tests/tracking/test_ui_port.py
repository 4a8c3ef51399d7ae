"""`medgen ui` on a port that is taken says so in one line, exit 2, and starts no server
(before: MLflow printed its banner, uvicorn "ERROR: [Errno 98] ... address already in use",
and medgen ui exited 0)."""

import socket
import subprocess

from medgen.cli import main
from medgen.commands import ui


def test_a_taken_port_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    def no_server(*args, **kwargs):
        raise AssertionError("a server was started on a taken port")

    monkeypatch.setattr(subprocess, "Popen", no_server)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert ui.port_in_use(port)
        assert main(["ui", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"medgen ui: error: port {port} on 127.0.0.1 is in use")
    assert "--port " in err[0]
    suggested = int(err[0].rsplit("--port ", 1)[1].strip())
    assert suggested != port and not ui.port_in_use(suggested)


def test_a_free_port_is_free():
    assert not ui.port_in_use(ui.free_port())
