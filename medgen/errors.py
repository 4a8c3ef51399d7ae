"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class MedgenError(Exception):
    """Bad input or configuration: shown to the user as one line, exit code 2."""


class InputError(MedgenError):
    """A file or folder that cannot be used, named in the message."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{printable(self.path)}: {problem}")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\n``, ``\x1b``): a file name holding a newline
    or a terminal escape must not split the one-line message or recolour the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ConfigError(MedgenError):
    """An invalid configuration key or value."""


class TrainingError(MedgenError):
    """Training cannot go on (e.g. a NaN loss); the run is marked FAILED."""
