"""Non-volumes behind volume suffixes, and odd folders and paths: empty or imageless folders,
names with newlines and terminal escapes, paths under a file, symlink loops, device files and
pipes (which would block or never end), folders that are a data set rather than one volume."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from . import Case
from .dicom_cases import _series, template
from .nifti_cases import header, nifti


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0" + bytes(range(64))


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("scan.nii", b"x" * 100)
    return buf.getvalue()


CONTENTS = {
    "empty": lambda: b"",
    "zeros": lambda: b"\0" * 4096,
    "text": lambda: b"patient notes\nnothing to see here\n" * 20,
    "png": _png,
    "jpeg": lambda: b"\xff\xd8\xff\xe0\0\x10JFIF\0" + bytes(200),
    "random": lambda: np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "json": lambda: b'{"sizes": [8, 8, 8], "type": "short"}',
    "zip": _zip,
    "gzip-of-text": lambda: gzip.compress(b"hello " * 100, mtime=0),
}
SUFFIXES = (".nii", ".nii.gz", ".hdr", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", "")


def _content(name: str, data):
    def build(folder: Path) -> Path:
        p = folder / name
        p.write_bytes(data() if callable(data) else data)
        return p
    return build


def _dicom_file_bytes() -> bytes:
    buf = io.BytesIO()
    template().save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def non_volume_cases() -> list[Case]:
    out = []
    for label, data in CONTENTS.items():
        for sfx in SUFFIXES:
            out.append(Case(f"nonvol-{label}{sfx or '-nosuffix'}", "non-volume", _content(f"{label}{sfx}", data), "refuse"))
    for sfx in (".nii", ".nii.gz", ".mha", ".nrrd"):  # a DICOM file behind another format's suffix
        out.append(Case(f"nonvol-dicom-as{sfx}", "non-volume", _content(f"dicom{sfx}", _dicom_file_bytes), "refuse"))
    for sfx in (".dcm", ".mha", ".nrrd"):  # a NIfTI behind another format's suffix
        out.append(Case(f"nonvol-nifti-as{sfx}", "non-volume", _content(f"nifti{sfx}", lambda: nifti(header())), "refuse"))
    return out


# --- folders and paths ------------------------------------------------------------------------
def _folder(name: str, files: dict[str, bytes] | None = None, subdirs: tuple[str, ...] = ()):
    def build(folder: Path) -> Path:
        root = folder / name
        root.mkdir()
        for d in subdirs:
            (root / d).mkdir(parents=True)
        for rel, data in (files or {}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return root
    return build


def _named(name: str, valid: bool):
    return _content(name, (lambda: gzip.compress(nifti(header()), mtime=0)) if valid else b"not a volume at all")


def _link(name: str, target):
    def build(folder: Path) -> Path:
        p = folder / name
        os.symlink(target(folder) if callable(target) else target, p)
        return p
    return build


def _loop(folder: Path) -> Path:
    a, b = folder / "loop_a.nii.gz", folder / "loop_b.nii.gz"
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def _fifo(folder: Path) -> Path:
    p = folder / "pipe.nii.gz"
    os.mkfifo(p)
    return p


def _under_a_file(folder: Path) -> Path:
    (folder / "plain").write_text("x")
    return folder / "plain" / "scan.nii.gz"


def _series_with_loop(folder: Path) -> Path:
    root = _series("looped")(folder)
    os.symlink(root, root / "again")  # a folder that contains itself
    return root


def path_cases() -> list[Case]:
    p = "paths"
    good = gzip.compress(nifti(header()), mtime=0)
    out = [
        Case("folder-empty", p, _folder("empty"), "refuse", "empty"),
        Case("folder-nested-empty", p, _folder("nested", subdirs=("a/b/c", "d")), "refuse"),
        Case("folder-of-text", p, _folder("texts", {"a.txt": b"hello", "b.csv": b"1,2"}), "refuse", "no DICOM files"),
        Case("folder-of-png", p, _folder("pngs", {"a.png": _png(), "b.png": _png()}), "refuse"),
        Case("folder-hidden-only", p, _folder("hidden", {".a.dcm": _dicom_file_bytes()}), "refuse"),
        Case("folder-named-nii-gz", p, _folder("looks_like.nii.gz"), "refuse"),
        Case("folder-one-nifti", p, _folder("one_nifti", {"t1.nii.gz": good}), "read", convert=("refuse", "")),
        Case("folder-nifti-and-garbage", p, _folder("mixed", {"t1.nii.gz": good, "bad.nii.gz": b"junk"}), "read",
             convert=("refuse", "")),
        Case("missing-file", p, lambda f: f / "nothing_here.nii.gz", "refuse", "no such file"),
        Case("under-a-file", p, _under_a_file, "refuse"),
        Case("symlink-loop", p, _loop, "refuse"),
        Case("symlink-dangling", p, _link("dangling.nii.gz", lambda f: f / "gone.nii.gz"), "refuse"),
        Case("symlink-to-valid", p, _link("link.nii.gz", lambda f: _named("target.nii.gz", True)(f)), "read"),
        Case("fifo", p, _fifo, "refuse", "not a regular file"),
        Case("series-with-symlink-loop", p, _series_with_loop, "read"),
    ]
    for sfx in (".nii", ".nii.gz", ".mha", ".nrrd", ".dcm", ""):  # endless or blocking data: refused unread
        out.append(Case(f"dev-zero{sfx or '-nosuffix'}", p, _link(f"zero{sfx}", "/dev/zero"), "refuse", "not a regular file"))
    names = {"newline": "evil\nname", "ansi": "red\x1b[31mname", "tab": "tab\tname", "cr": "cr\rname",
             "unicode": "scan_é_日本", "spaces": "my scan (1)", "long": "x" * 200, "bell": "bell\x07"}
    for label, stem in names.items():
        out.append(Case(f"name-{label}-garbage", p, _named(stem + ".nii.gz", False), "refuse"))
        out.append(Case(f"name-{label}-valid", p, _named(stem + ".nii.gz", True), "read"))
    return out


def cases() -> list[Case]:
    return non_volume_cases() + path_cases()
