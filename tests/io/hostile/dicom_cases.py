"""DICOM files and series with missing or contradicting tags, pixel data that does not fit its
header, files cut short, and series that are not one volume. Every case starts from pydicom's
MR_small.dcm (64 x 64, 16 bits, explicit VR little endian) and edits it."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from . import Case

GEO = "no usable geometry"


@functools.lru_cache(maxsize=1)
def _template() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))


def template() -> pydicom.Dataset:
    """MR_small without its DataSetTrailingPadding, so that a file cut short loses pixel data."""
    ds = copy.deepcopy(_template())
    if "DataSetTrailingPadding" in ds:
        del ds.DataSetTrailingPadding
    return ds


def _save(ds, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=False)
    return path


def _file(name: str, edit):
    def build(folder: Path) -> Path:
        ds = template()
        edit(ds)
        return _save(ds, folder / f"{name}.dcm")
    return build


class _Text(str):
    """A value pydicom would not let its element's VR hold: written as LO text instead."""


def _set(**values):
    def edit(ds):
        from pydicom.datadict import tag_for_keyword

        for k, v in values.items():
            if v is None:
                if k in ds:
                    delattr(ds, k)
            elif isinstance(v, _Text):
                ds.add_new(tag_for_keyword(k), "LO", str(v))
            else:
                setattr(ds, k, v)
    return edit


def tag_cases() -> list[Case]:
    """Header fields that lie or are missing, over MR_small's pixel data (64 x 64 x 1 x 16 bits)."""
    c = []
    holds = "pixel data holds"
    table = [  # (id, edit, expectation, problem)
        ("no-rows", {"Rows": None}, "refuse", "without Rows"), ("no-columns", {"Columns": None}, "refuse", "without Columns"),
        ("rows-0", {"Rows": 0}, "refuse", "Rows is 0"), ("columns-0", {"Columns": 0}, "refuse", "Columns is 0"),
        ("rows-1", {"Rows": 1}, "refuse", holds), ("rows-65535", {"Rows": 65535, "Columns": 65535}, "refuse", holds),
        ("rows-doubled", {"Rows": 128}, "refuse", holds), ("columns-halved", {"Columns": 32}, "refuse", holds),
        ("rows-columns-swapped-128x32", {"Rows": 32, "Columns": 128}, "read", ""),
        ("frames-0", {"NumberOfFrames": 0}, "refuse", ""), ("frames-2", {"NumberOfFrames": 2}, "refuse", holds),
        ("frames-5", {"NumberOfFrames": 5}, "refuse", holds), ("frames-1e5", {"NumberOfFrames": 10**5}, "refuse", holds),
        ("frames-1e9", {"NumberOfFrames": 10**9}, "refuse", "more than any scan"),
        ("frames-1", {"NumberOfFrames": 1}, "read", ""),
        ("bits-0", {"BitsAllocated": 0}, "refuse", ""), ("bits-1", {"BitsAllocated": 1}, "refuse", "do not fit BitsAllocated 1"),
        ("bits-8", {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7}, "refuse", holds),
        ("bits-12", {"BitsAllocated": 12}, "refuse", "BitsAllocated is 12"), ("bits-24", {"BitsAllocated": 24}, "refuse", ""),
        ("bits-32", {"BitsAllocated": 32}, "refuse", holds), ("bits-64", {"BitsAllocated": 64}, "refuse", holds),
        ("bits-stored-over-allocated", {"BitsStored": 24}, "refuse", ""),
        ("samples-3", {"SamplesPerPixel": 3}, "refuse", ""), ("samples-0", {"SamplesPerPixel": 0}, "refuse", ""),
        ("photometric-rgb", {"PhotometricInterpretation": "RGB"}, "refuse", ""),
        ("pixel-representation-2", {"PixelRepresentation": 2}, "refuse", ""),
        ("no-pixel-data", {"PixelData": None}, "refuse", "no pixel data"),
        ("pixel-spacing-0", {"PixelSpacing": [0, 0]}, "refuse", GEO), ("pixel-spacing-0-1", {"PixelSpacing": [0, 1]}, "refuse", GEO),
        ("pixel-spacing-tiny", {"PixelSpacing": [1e-30, 1e-30]}, "refuse", GEO),
        ("pixel-spacing-negative", {"PixelSpacing": [-0.5, -0.5]}, "refuse", GEO),
        ("pixel-spacing-one-value", {"PixelSpacing": [0.5]}, "refuse", ""),
        ("pixel-spacing-missing", {"PixelSpacing": None}, "read", ""),
        ("iop-zero", {"ImageOrientationPatient": [0] * 6}, "refuse", GEO),
        ("iop-collinear", {"ImageOrientationPatient": [1, 0, 0, 1, 0, 0]}, "refuse", GEO),
        ("iop-five-values", {"ImageOrientationPatient": [1, 0, 0, 0, 1]}, "refuse", ""),
        ("iop-not-unit", {"ImageOrientationPatient": [2, 0, 0, 0, 2, 0]}, "refuse", ""),
        ("iop-missing", {"ImageOrientationPatient": None}, "read", ""),
        ("position-missing", {"ImagePositionPatient": None}, "read", ""),
        ("position-two-values", {"ImagePositionPatient": [0, 0]}, "refuse", ""),
        ("slope-1e300", {"RescaleSlope": "1e300", "RescaleIntercept": "0"}, "refuse", "overflow"),
        ("slope-0", {"RescaleSlope": "0", "RescaleIntercept": "0"}, "refuse", ""),
        ("slope-negative", {"RescaleSlope": "-1", "RescaleIntercept": "0"}, "read", ""),
        ("intercept-1e300", {"RescaleSlope": "1", "RescaleIntercept": "1e300"}, "refuse", "overflow"),
        ("slope-text", {"RescaleSlope": _Text("abc"), "RescaleIntercept": "0"}, "refuse", ""),
        ("slice-thickness-negative", {"SliceThickness": "-2"}, "read", ""),
        ("modality-empty", {"Modality": ""}, "read", ""),
        ("no-sop-class", {"SOPClassUID": None}, "read", ""),
    ]
    for cid, values, expect, problem in table:
        c.append(Case(f"dcm-{cid}", "dicom-tags", _file(cid, _set(**values)), expect, problem))
    return c


def _bytes_edit(name: str, edit):
    def build(folder: Path) -> Path:
        src = _save(template(), folder / f"{name}.tmp")
        data = bytearray(src.read_bytes())
        src.unlink()
        path = folder / f"{name}.dcm"
        path.write_bytes(bytes(edit(data)))
        return path
    return build


def _testdata(name: str, copy_as: str | None = None):
    def build(folder: Path) -> Path:
        src = get_testdata_file(name, download=False)
        if src is None:
            import pytest

            pytest.skip(f"pydicom test file {name} is not installed")
        path = folder / (copy_as or Path(src).name)
        path.write_bytes(Path(src).read_bytes())
        return path
    return build


def file_cases() -> list[Case]:
    """Files cut short or damaged as bytes, and pydicom's own odd test files."""
    c = []
    for frac in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99):
        c.append(Case(f"dcm-cut-{frac}", "dicom-truncated", _bytes_edit(f"cut{frac}", lambda b, f=frac: b[:int(len(b) * f)]), "refuse"))
    for n in (1, 2, 100, 4096):
        c.append(Case(f"dcm-cut-last-{n}", "dicom-truncated", _bytes_edit(f"cutlast{n}", lambda b, n=n: b[:-n]), "refuse"))
    c.append(Case("dcm-preamble-only", "dicom-truncated", _bytes_edit("preamble", lambda b: b[:132]), "refuse"))
    # Without preamble and 'DICM' a file is still a DICOM stream (pydicom's no_meta files are), and
    # zero bytes after the pixel data are padding: both read right.
    c.append(Case("dcm-no-preamble", "dicom-truncated", _bytes_edit("nopreamble", lambda b: b[132:]), "read"))
    c.append(Case("dcm-zeros-appended", "dicom-truncated", _bytes_edit("appended", lambda b: b + b"\0" * 8192), "read"))
    # Bytes 140 (the meta group's length, which readers need not use) and 200 (inside a UID's text)
    # damage nothing a reader can check; 400 breaks an element's header.
    for off, expect in ((140, "read"), (200, "read"), (400, "refuse")):
        def flip(b, off=off):
            b[off:off + 4] = b"\xff\xff\xff\xff"
            return b
        c.append(Case(f"dcm-header-bytes-{off}", "dicom-truncated", _bytes_edit(f"flip{off}", flip), expect))
    for name, expect, problem in (("badVR.dcm", "refuse", "malformed DICOM element"), ("MR_truncated.dcm", "refuse", "pixel data"),
                                  ("rtplan.dcm", "refuse", "no pixel data"), ("RG1_UNCI.dcm", "refuse", "projection radiograph"),
                                  ("MR_small_padded.dcm", "read", ""), ("no_meta.dcm", "refuse", ""),  # no_meta: no image in it
                                  ("SC_rgb.dcm", "refuse", "colour"), ("MR_small_bigendian.dcm", "read", ""),
                                  ("MR_small_RLE.dcm", "read", ""), ("emri_small.dcm", "read", ""),
                                  ("liver.dcm", "read", ""), ("CT_small.dcm", "read", "")):
        c.append(Case(f"dcm-testdata-{name}", "dicom-testdata", _testdata(name), expect, problem))
    return c


# --- series ----------------------------------------------------------------------------------------
def _series(name: str, n: int = 5, edit=None, layout: tuple[str, ...] = ()):
    """``n`` slices of one series (2 mm apart), each edited by ``edit(ds, k)``; under ``layout``
    folders (e.g. PATIENT/STUDY/SERIES) below the returned root."""
    def build(folder: Path) -> Path:
        root = folder / name
        where = root.joinpath(*layout)
        where.mkdir(parents=True)
        uid = generate_uid(entropy_srcs=[name])
        for k in range(n):
            ds = template()
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, str(k)])
            ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.InstanceNumber = k + 1
            if edit is not None:
                edit(ds, k)
            _save(ds, where / f"IM{k:04d}")
        return root
    return build


def _on(slice_k, **values):
    def edit(ds, k):
        if k == slice_k:
            _set(**values)(ds)
    return edit


def series_cases() -> list[Case]:
    small = template().PixelData

    def other_series(ds, k):
        if k >= 3:
            ds.SeriesInstanceUID = generate_uid(entropy_srcs=["second"])
            ds.SeriesDescription = "second"

    def duplicate(ds, k):
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * (k // 2)]

    def all_same(ds, k):
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]

    table = [
        ("sound", {}, "read", ""),
        ("one-slice", {"n": 1}, "read", ""),
        ("patient-study-series", {"layout": ("PATIENT", "STUDY", "SERIES")}, "read", ""),
        ("two-series", {"edit": other_series}, "read", ""),  # info lists them; convert needs one (below)
        ("mixed-orientation", {"edit": _on(2, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])}, "refuse", "different orientations"),
        ("mixed-size", {"edit": _on(2, Rows=32, PixelData=small[: len(small) // 2])}, "refuse", "mixes image sizes"),
        ("mixed-pixel-spacing", {"edit": _on(2, PixelSpacing=[0.9, 0.9])}, "refuse", "pixel spacing"),
        ("duplicate-positions", {"edit": duplicate, "n": 6}, "refuse", "share"),
        ("all-at-one-position", {"edit": all_same}, "refuse", "share"),
        ("missing-slice", {"edit": _on(2, ImagePositionPatient=[0.0, 0.0, 2.0 * 9])}, "refuse", "irregular slice spacing"),
        ("one-without-position", {"edit": _on(2, ImagePositionPatient=None)}, "refuse", "position"),
        ("one-nan-position", {"edit": _on(2, ImagePositionPatient=["nan", 0, 0])}, "refuse", "position"),
        ("one-without-rows", {"edit": _on(2, Rows=None)}, "refuse", "without Rows"),
        ("one-truncated-pixels", {"edit": _on(2, PixelData=small[:100])}, "refuse", "pixel data holds"),
        ("iop-zero-all", {"edit": lambda ds, k: setattr(ds, "ImageOrientationPatient", [0] * 6)}, "refuse", GEO),
        ("pixel-spacing-0-all", {"edit": lambda ds, k: setattr(ds, "PixelSpacing", [0, 0])}, "refuse", GEO),
        ("per-slice-rescale", {"edit": lambda ds, k: setattr(ds, "RescaleSlope", str(1 + k))}, "read", ""),
        ("frames-1e9-in-one", {"edit": _on(2, NumberOfFrames=10**9)}, "refuse", ""),
    ]
    out = [Case(f"series-{cid}", "dicom-series", _series(cid, **kw), expect, problem,
                convert=("refuse", "holds 2 DICOM series") if cid == "two-series" else None)
           for cid, kw, expect, problem in table]

    def with_extras(kind):
        def build(folder: Path) -> Path:
            root = _series(f"extra-{kind}")(folder)
            if kind == "text":
                (root / "notes.txt").write_text("not an image")
            elif kind == "rtplan":
                (root / "plan.dcm").write_bytes(Path(get_testdata_file("rtplan.dcm", download=False)).read_bytes())
            elif kind == "hidden":
                (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 100)
            elif kind == "dicomdir":
                (root / "DICOMDIR").write_bytes(b"\0" * 200)
            return root
        return build

    out += [Case(f"series-with-{k}", "dicom-series", with_extras(k), "read") for k in ("text", "rtplan", "hidden", "dicomdir")]

    def two_deep(folder: Path) -> Path:  # two series in their own folders under one study
        root = folder / "study2"
        _series("a", layout=("PAT", "ST", "S1"))(root)
        _series("b", layout=("PAT", "ST", "S2"))(root)
        return root
    # info lists the two series' folders; convert needs one volume and names the two
    out.append(Case("series-two-below-a-root", "dicom-series", two_deep, "read",
                    convert=("refuse", "holds 2 DICOM series")))
    return out


def cases() -> list[Case]:
    return tag_cases() + file_cases() + series_cases()
