"""Atomic file output: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends,
    removed if it raises. ``suffix`` ends the temporary name (writers that pick the format from
    the name need theirs, e.g. ``.tmp.nii.gz``). ``path``'s folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600; an output should be readable as the user's umask allows,
        # as any other tool's (lab folders are shared)
        if Path(tmp).is_file():
            as_umask_allows(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _owner() -> str:
    """``host-pid`` of this process, in every temporary's name: a later writer can tell a
    temporary of a process that died mid-write (a killed training run) from one being written."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a live process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_stale(path: Path, suffix: str) -> None:
    """Delete temporaries for ``path`` left by dead processes of this host (another host's, on a
    shared folder, may be alive: those are left alone)."""
    host = socket.gethostname().replace(".", "_")
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(host)}-(\d+)\..*{re.escape(suffix)}$")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not process_alive(int(m.group(1))):
            entry.unlink(missing_ok=True)


def as_umask_allows(path: Path) -> Path:
    """``path`` (a file or folder ``tempfile`` made 0600/0700) given the mode a plain ``open`` or
    ``mkdir`` would have given it under the process's umask."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())
    return Path(path)


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
