"""`medgen ui [--port 5000]`: the MLflow UI on 127.0.0.1 over this folder's store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

HELP = "MLflow UI on 127.0.0.1 over the project's store (sqlite:///mlflow.db + ./mlartifacts)."


def add_arguments(parser) -> None:
    from medgen.tracking.ui_links import UI_PORT

    parser.add_argument("--port", type=int, default=UI_PORT, help=f"port on 127.0.0.1 (default {UI_PORT})")
    parser.add_argument("--uri", default=None, help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")


def command(port: int | None = None, uri: str | None = None) -> list[str]:
    """The `mlflow ui` command line (local only: 127.0.0.1). One worker: a personal UI needs no
    more, and each of MLflow's default four costs seconds of start-up and memory on a laptop.
    The registry is the same store (said explicitly, or MLflow says so on every start)."""
    from medgen.tracking import default_artifact_root, resolve_tracking_uri
    from medgen.tracking.ui_links import UI_PORT

    port = UI_PORT if port is None else port
    store = resolve_tracking_uri(uri)
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", store, "--registry-store-uri", store,
        "--default-artifact-root", default_artifact_root(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]


def server_environment(base: dict | None = None) -> dict:
    """The server's environment: no phone-home, no background job runners (a personal UI needs
    none), and none of the server's own chatter on the user's terminal -- a log line per HTTP
    request (hundreds a page), its libraries' deprecation warnings with their source lines.
    Its errors still show."""
    env = dict(os.environ if base is None else base)
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "UVICORN_LOG_LEVEL": "warning", "PYTHONWARNINGS": "ignore"})
    return env


def experiment_lines(store: str, base: str) -> list[str]:
    """A line per experiment of the store with the link to its training runs, and why: MLflow
    3.17 opens any experiment clicked in its list on the GenAI overview (traces, latency)
    unless "Model training" is chosen at the top left (see medgen.tracking.ui_links)."""
    from medgen.tracking.ui_links import experiment_url, store_experiments

    experiments = store_experiments(store)
    if not experiments:
        return []
    width = max(len(name) for _, name, _ in experiments)
    lines = [f"  {name:<{width}}  {runs:>3} run{'s' if runs != 1 else ' '}  {experiment_url(base, eid)}"
             for eid, name, runs in experiments]
    return lines + ['  (these links open the training runs; from the list, choose "Model training" at the top left '
                    "once, or MLflow opens its GenAI overview; it remembers the choice)"]


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` already (a port in TIME_WAIT is free:
    the server binds with SO_REUSEADDR, as this check does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> int:
    import signal
    import time

    from medgen.errors import MedgenError
    from medgen.tracking.ui_links import ui_base

    if port_in_use(args.port):  # else uvicorn's own traceback-style line, after the links, and exit 0
        raise MedgenError(f"port {args.port} on 127.0.0.1 is in use (another medgen ui or MLflow server?); "
                          f"choose another with --port, e.g. --port {free_port()}")
    env = server_environment()
    cmd = command(args.port, args.uri)
    store = cmd[cmd.index("--backend-store-uri") + 1]
    base = ui_base(args.port)
    print(f"MLflow UI on {base} (store {store}); Ctrl-C stops it", file=sys.stderr)
    # The server and its workers get a process group of their own, and whatever stops us --
    # Ctrl-C, `kill` (SIGTERM), a closed terminal (SIGHUP) -- stops that whole group: a server
    # left running, orphaned, would keep answering on the port.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    for line in experiment_lines(store, base):  # while the server starts
        print(line, file=sys.stderr)
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
                if stopping:
                    print("MLflow UI stopped", file=sys.stderr)
                    return 0
                # the server ended by itself: an error of its own (its lines are above)
                print(f"MLflow UI: the server exited by itself (code {code})", file=sys.stderr)
                return code or 1
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
