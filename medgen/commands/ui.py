"""`medgen ui [--port 5000]`: the MLflow UI on 127.0.0.1 over this folder's store."""

from __future__ import annotations

import subprocess
import sys

HELP = "MLflow UI on 127.0.0.1 over the project's store (sqlite:///mlflow.db + ./mlartifacts)."


def add_arguments(parser) -> None:
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--uri", default=None, help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")


def command(port: int = 5000, uri: str | None = None) -> list[str]:
    """The `mlflow ui` command line (local only: 127.0.0.1)."""
    from medgen.tracking import default_artifact_root, resolve_tracking_uri

    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", resolve_tracking_uri(uri),
        "--default-artifact-root", default_artifact_root(),
        "--host", "127.0.0.1", "--port", str(port),
    ]


def run(args) -> int:
    import os
    import signal
    import time

    # no phone-home; no background job runners (a personal UI needs none)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = command(args.port, args.uri)
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {cmd[cmd.index('--backend-store-uri') + 1]}); Ctrl-C stops it",
          file=sys.stderr)
    # The server and its workers get a process group of their own, and whatever stops us --
    # Ctrl-C, `kill` (SIGTERM), a closed terminal (SIGHUP) -- stops that whole group: a server
    # left running, orphaned, would keep answering on the port.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    stopping: list[float] = []  # when a stop was asked for

    def stop_group(sig=signal.SIGTERM) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def on_signal(signum, frame) -> None:  # no waiting here: the loop below waits
        stopping.append(time.monotonic())
        stop_group()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                return 0 if stopping else code
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() - stopping[0] > 30:
                    stop_group(signal.SIGKILL)  # a server that ignores SIGTERM
            except KeyboardInterrupt:
                on_signal(signal.SIGINT, None)
    finally:
        if proc.poll() is None:
            stop_group(signal.SIGKILL)
            proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
