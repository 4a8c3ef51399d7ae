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
        super().__init__(f"{self.path}: {problem}")


class ConfigError(MedgenError):
    """An invalid configuration key or value."""


class TrainingError(MedgenError):
    """Training cannot go on (e.g. a NaN loss); the run is marked FAILED."""
