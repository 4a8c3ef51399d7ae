"""Turn library exceptions into one short line for ``InputError`` messages."""

from __future__ import annotations

import contextlib
import os
import sys

from medgen.errors import printable


def short(exc: BaseException, limit: int = 160) -> str:
    """First meaningful line of an exception's text (ITK and zlib messages span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK puts the useful sentence after "itk::ERROR: ... :" on one of the lines.
    for ln in lines:
        if "itk::ERROR" in ln or "ERROR:" in ln:
            text = ln.split("):", 1)[-1].split("ERROR:", 1)[-1].strip(" :")
            break
    else:
        text = lines[0] if lines else type(exc).__name__
    # library messages quote the file's name: its newlines or terminal escapes must not reach the terminal
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ libraries (ITK's MetaImage reader, GDCM) print straight to file
    descriptor 2: the CLI promises exactly one line on stderr for a bad input."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = 2
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
