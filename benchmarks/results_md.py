"""Moved to :mod:`common` (kept until every script imports from there)."""

from common import machine, mean_se, write_section  # noqa: F401
