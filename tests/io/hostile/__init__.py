"""A generated corpus of hostile inputs (issue 19): ~600 malformed or odd files and folders, built
combinatorially from parameters, each declaring its input class and what medgen must do with it.

``refuse``: `medgen info` and `medgen convert` exit 2 with exactly one line on stderr that names
the file (and, where the case says, the problem), no traceback, no warning before it, and convert
leaves nothing in its output folder. ``read``: exit 0, at most one ``medgen: warning:`` line, and
convert writes a NIfTI whose affine is finite.

Used by tests/io/test_io_hostile_corpus.py (in-process; a fixed stratified sample by default, the
whole corpus with ``--hostile-full``) and benchmarks/hostile_corpus.py (subprocesses with a time
and memory limit). Deterministic: random bytes come from fixed seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medgen.errors import printable


@dataclass(frozen=True)
class Case:
    id: str
    klass: str  # the input class: a row of the benchmark's table, a stratum of the sample
    build: Callable[[Path], Path]  # writes the input under a given (empty) folder, returns its path
    expect: str  # "refuse" or "read"
    problem: str = ""  # text a refusal must contain (what is wrong), "" = any
    name: str | None = None  # what the message must name, when not the path's own name
    convert: tuple[str, str] | None = None  # (expect, problem) for convert where it differs from info's

    def __post_init__(self):
        assert self.expect in ("refuse", "read"), self.expect

    def expected(self, verb: str) -> tuple[str, str]:
        """(expect, problem) for ``verb``."""
        if verb == "convert" and self.convert is not None:
            return self.convert
        return self.expect, self.problem


def corpus() -> list[Case]:
    from . import dicom_cases, nifti_cases, other_cases, sitk_cases

    cases = nifti_cases.cases() + sitk_cases.cases() + dicom_cases.cases() + other_cases.cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    return cases


# One case for each finding of the issue that a stratified pick could miss: always in the sample.
PINNED = ("fifo", "dev-zero.mha", "name-newline-garbage", "series-patient-study-series", "series-two-series",
          "gz-float32-crc0", "nrrd-gzip-over-raw", "sform-1e30", "slope-1e38-gz", "dcm-frames-1e9",
          "dcm-rows-doubled", "mha-ndims-99", "datatype-32-gz", "values-float64-1e300-nii")


def sample(cases: list[Case], size: int = 50) -> list[Case]:
    """A fixed stratified sample of about ``size``: the PINNED cases, then evenly spaced cases of
    each class in proportion to its size (at least two where it has them)."""
    pinned = [c for c in cases if c.id in PINNED]
    rest = size - len(pinned)
    by_class: dict[str, list[Case]] = {}
    for c in cases:
        if c not in pinned:
            by_class.setdefault(c.klass, []).append(c)
    out = list(pinned)
    for klass, members in sorted(by_class.items()):
        k = min(len(members), max(2, round(rest * len(members) / len(cases))))
        step = len(members) / k
        out += [members[int(i * step)] for i in range(k)]
    return out


# Outcomes, as the benchmark's table columns; "clean" covers both expectations met.
CLEAN = "clean"


def judge(case: Case, path: Path, verb: str, code: int | None, err: str, out_dir: Path | None) -> str:
    """What happened to ``case`` under ``verb``: CLEAN or the first thing wrong. ``code`` None
    means it did not finish (the benchmark's timeout); negative, killed by that signal."""
    if code is None:
        return "hang"
    if code < 0 or code > 128:
        return "crash by signal"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if "Traceback" in err:
        return "traceback"
    left = sorted(p.name for p in out_dir.iterdir()) if out_dir is not None and out_dir.exists() else []
    expect, problem = case.expected(verb)
    if expect == "refuse":
        if code == 0:
            return "silently accepted"
        if code != 2:
            return "wrong exit code"
        if len(lines) != 1:
            return "multi-line message"
        if not lines[0].isprintable():  # a newline or terminal escape from the file's name
            return "unprintable message"
        named = printable(case.name if case.name is not None else path.name)
        if not lines[0].startswith(f"medgen {verb}: error: ") or named not in lines[0] or problem not in lines[0]:
            return "message misses file or problem"
        if left:
            return "output left behind"
        return CLEAN
    if code != 0:
        return "refused a readable input" if code == 2 and len(lines) == 1 else (
            "multi-line message" if code == 2 else "wrong exit code")
    if len(lines) > 1 or any(not ln.startswith("medgen: warning: ") for ln in lines):
        return "multi-line message"
    if verb == "convert" and not _sound_output(out_dir):
        return "bad output"
    return CLEAN


def _sound_output(out_dir: Path | None) -> bool:
    import nibabel as nib
    import numpy as np

    files = sorted(out_dir.iterdir()) if out_dir is not None and out_dir.exists() else []
    if [p.name for p in files] != ["o.nii.gz"]:
        return False
    img = nib.load(str(files[0]))
    return bool(np.isfinite(img.affine).all() and abs(np.linalg.det(img.affine[:3, :3])) > 0)
