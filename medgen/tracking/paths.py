"""Paths as they may appear in MLflow.

Folder names at hospitals often carry patient names or IDs (``/data/Smith_John_1234567/``), and
an MLflow store is shared and browsed. Unless ``tracking.log_paths=true``, a path is logged
relative to the working folder when it lies inside it (the project's own layout, e.g.
``data/paired``) and otherwise as ``outside/<token>``: a hash of the resolved path, so runs on
one folder still share a value and can be grouped, while the name itself stays on this machine.
The checkpoint keeps the path as typed (``medgen train --resume`` continues with it); it is the
user's file, like the data.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

PATH_PARAMS = ("data.root", "trainer.checkpoint_dir", "tracking.uri", "trainer.resume")
_SQLITE = re.compile(r"^(sqlite:/{2,4})(.+)$")


def path_token(path: str | os.PathLike) -> str:
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]


def loggable_path(value: str | os.PathLike | None, log_paths: bool = False) -> str | None:
    """``value`` as it may be logged (see the module docstring); None stays None."""
    if value is None or log_paths:
        return None if value is None else str(value)
    text = str(value)
    m = _SQLITE.match(text)
    if m:  # sqlite:///rel.db or sqlite:////abs/mlflow.db: the file is a path like any other
        file = ("/" if m.group(1) == "sqlite:////" else "") + m.group(2)
        return "sqlite:///" + (loggable_path(file) or "")
    if "://" in text:  # a server (http://host:5000): not a local folder
        return text
    resolved = Path(text).expanduser().resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return f"outside/{path_token(resolved)}"


def loggable_folder_name(path: str | os.PathLike | None, log_paths: bool = False) -> str:
    """A folder's name for a run's name: its own (inside the working folder, or ``log_paths``),
    else its token."""
    if not path:
        return ""
    shown = loggable_path(path, log_paths) or ""
    if shown.startswith("outside/"):
        return shown.split("/", 1)[1]
    return Path(str(path)).expanduser().resolve().name


def scrub_params(params: dict, log_paths: bool = False) -> dict:
    """``params`` with every path-valued entry made loggable."""
    out = dict(params)
    for key in PATH_PARAMS:
        if key in out and out[key] is not None:
            out[key] = loggable_path(out[key], log_paths)
    return out
