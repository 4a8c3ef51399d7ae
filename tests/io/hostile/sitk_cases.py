"""NRRD and MetaImage headers that lie: dimensions, sizes against the data, encodings, NaN or
degenerate geometry. Written as text headers over raw bytes, as a broken exporter would."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from . import Case

RAW = np.arange(512, dtype=np.int16).tobytes()  # 8 x 8 x 8 shorts
GEO = "no usable geometry"


# --- NRRD ----------------------------------------------------------------------------------------
def _nrrd(name, fields: dict, data: bytes = RAW, magic="NRRD0004", suffix=".nrrd", detached: bytes | None = None):
    base = {"type": "short", "dimension": "3", "sizes": "8 8 8", "encoding": "raw", "endian": "little",
            "space": "left-posterior-superior", "space directions": "(1,0,0) (0,1,0) (0,0,2)",
            "space origin": "(0,0,0)"}
    base.update(fields)

    def build(folder: Path) -> Path:
        text = magic + "\n" + "".join(f"{k}: {v}\n" for k, v in base.items() if v is not None)
        path = folder / f"{name}{suffix}"
        if detached is not None:
            (folder / f"{name}.raw").write_bytes(detached)
            text += f"data file: {name}.raw\n"
            path.write_bytes(text.encode())
        else:
            path.write_bytes(text.encode() + b"\n" + data)
        return path
    return build


def nrrd_cases() -> list[Case]:
    c = []
    add = lambda cid, build, expect, problem="": c.append(Case(f"nrrd-{cid}", "nrrd", build, expect, problem))  # noqa: E731
    add("sound", _nrrd("sound", {}), "read")
    add("sound-gzip", _nrrd("soundgz", {"encoding": "gzip"}, gzip.compress(RAW, mtime=0)), "read")
    add("sound-detached", _nrrd("det", {}, suffix=".nhdr", detached=RAW), "read")
    add("bad-magic", _nrrd("magic", {}, magic="NRRX0004"), "refuse")
    for d in ("0", "1", "4", "17", "99", "-1", "x"):
        add(f"dimension-{d}", _nrrd(f"dim{d}", {"dimension": d}), "refuse")
    for s in ("8 8", "8 8 8 8", "0 8 8", "-8 8 8", "8 8 1000", "1000 1000 1000", "a b c"):
        add(f"sizes-{s.replace(' ', 'x')}", _nrrd(f"sizes{s.replace(' ', '_')}", {"sizes": s}), "refuse")
    add("no-sizes", _nrrd("nosizes", {"sizes": None}), "refuse")
    add("type-unknown", _nrrd("type", {"type": "quaternion"}), "refuse")
    add("encoding-unknown", _nrrd("enc", {"encoding": "rot13"}), "refuse")
    add("gzip-over-raw", _nrrd("gzraw", {"encoding": "gzip"}), "refuse")
    add("gzip-truncated", _nrrd("gzcut", {"encoding": "gzip"}, gzip.compress(RAW, mtime=0)[:-40]), "refuse")
    add("raw-truncated", _nrrd("cut", {}, RAW[:600]), "refuse", "truncated")
    add("detached-short", _nrrd("detshort", {}, suffix=".nhdr", detached=RAW[:100]), "refuse")
    for label, fields in (("directions-nan", {"space directions": "(nan,0,0) (0,1,0) (0,0,2)"}),
                          ("directions-inf", {"space directions": "(1,0,0) (0,inf,0) (0,0,2)"}),
                          ("directions-zero", {"space directions": "(0,0,0) (0,1,0) (0,0,2)"}),
                          ("directions-collinear", {"space directions": "(1,0,0) (1,0,0) (0,0,2)"}),
                          ("directions-tiny", {"space directions": "(1e-30,0,0) (0,1,0) (0,0,2)"}),
                          ("origin-nan", {"space origin": "(nan,0,0)"}), ("origin-inf", {"space origin": "(0,-inf,0)"}),
                          ("spacings-nan", {"space": None, "space directions": None, "space origin": None, "spacings": "nan 1 1"}),
                          ("spacings-zero", {"space": None, "space directions": None, "space origin": None, "spacings": "1 0 1"})):
        add(label, _nrrd(label, fields), "refuse", GEO)
    add("no-endian", _nrrd("noendian", {"endian": None}), "refuse")
    add("no-geometry", _nrrd("nogeo", {"space": None, "space directions": None, "space origin": None}), "read")
    add("vector", _nrrd("vector", {"dimension": "4", "sizes": "3 8 8 8", "kinds": "vector domain domain domain",
                                   "space directions": "none (1,0,0) (0,1,0) (0,0,2)"}, RAW * 3), "refuse")
    return c


# --- MetaImage --------------------------------------------------------------------------------------
def _mha(name, header: dict, data: bytes = RAW, suffix=".mha", detached: bytes | None = None):
    fields = {"ObjectType": "Image", "NDims": "3", "DimSize": "8 8 8", "ElementType": "MET_SHORT",
              "ElementSpacing": "1 1 1", "Offset": "0 0 0", "BinaryDataByteOrderMSB": "False", **header}

    def build(folder: Path) -> Path:
        path = folder / f"{name}{suffix}"
        if detached is not None:
            (folder / f"{name}.raw").write_bytes(detached)
            fields["ElementDataFile"] = f"{name}.raw"
        else:
            fields["ElementDataFile"] = "LOCAL"
        path.write_bytes("".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None).encode()
                         + (b"" if detached is not None else data))
        return path
    return build


def metaimage_cases() -> list[Case]:
    c = []
    add = lambda cid, build, expect, problem="": c.append(Case(f"mha-{cid}", "metaimage", build, expect, problem))  # noqa: E731
    packed = zlib.compress(RAW)
    add("sound", _mha("sound", {}), "read")
    add("sound-compressed", _mha("soundz", {"CompressedData": "True", "CompressedDataSize": str(len(packed))}, packed), "read")
    add("sound-detached", _mha("det", {}, suffix=".mhd", detached=RAW), "read")
    add("msb", _mha("msb", {"BinaryDataByteOrderMSB": "True"}, np.frombuffer(RAW, "<i2").astype(">i2").tobytes()), "read")
    for n in ("0", "1", "5", "99", "-1", "abc", None):
        add(f"ndims-{n}", _mha(f"ndims{n}", {"NDims": n}), "refuse", f"NDims = {n}" if n in ("99",) else "")
    for s in ("8 8", "8 8 8 8", "0 8 8", "-8 8 8", "8 8 1000", "1000 1000 1000", "x y z"):
        add(f"dimsize-{s.replace(' ', 'x')}", _mha(f"dims{s.replace(' ', '_')}", {"DimSize": s}), "refuse")
    for t in ("MET_WHATEVER", "MET_FLOAT_ARRAY", ""):
        add(f"type-{t or 'empty'}", _mha(f"type{t}", {"ElementType": t}), "refuse")
    add("compressed-over-raw", _mha("zraw", {"CompressedData": "True"}), "refuse", "not a valid zlib stream")
    add("compressed-truncated", _mha("zcut", {"CompressedData": "True"}, packed[:-40]), "refuse", "decompresses to")
    add("compressed-detached-truncated", _mha("zdet", {"CompressedData": "True"}, suffix=".mhd", detached=packed[:-40]), "refuse")
    add("raw-truncated", _mha("cut", {}, RAW[:600]), "refuse", "truncated")
    add("detached-short", _mha("detshort", {}, suffix=".mhd", detached=RAW[:100]), "refuse", "truncated")
    for key in ("Offset", "ElementSpacing"):
        for i in range(3):
            for v in ("nan", "inf"):
                values = ["1", "1", "1"] if key == "ElementSpacing" else ["0", "0", "0"]
                values[i] = v
                add(f"{key.lower()}-{i}-{v}", _mha(f"{key}{i}{v}", {key: " ".join(values)}), "refuse", GEO)
    add("spacing-zero", _mha("sp0", {"ElementSpacing": "1 0 1"}), "refuse", GEO)
    add("spacing-tiny", _mha("sptiny", {"ElementSpacing": "1e-30 1 1"}), "refuse", GEO)
    add("spacing-short", _mha("spshort", {"ElementSpacing": "1 1"}), "refuse")
    add("offset-words", _mha("offw", {"Offset": "left up in"}), "refuse")
    for label, m in (("zero", "0 0 0 0 0 0 0 0 0"), ("collinear", "1 0 0 1 0 0 0 0 1"), ("nan", "nan 0 0 0 1 0 0 0 1")):
        add(f"matrix-{label}", _mha(f"tm{label}", {"TransformMatrix": m}), "refuse", GEO)
    add("matrix-rotated", _mha("tmrot", {"TransformMatrix": "0 1 0 -1 0 0 0 0 1"}), "read")
    add("channels-3", _mha("rgb", {"ElementNumberOfChannels": "3"}, RAW * 3), "refuse")
    add("mhd-no-data-file", lambda f: _write(f / "nodata.mhd", b"ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_SHORT\n"), "refuse")
    add("mhd-data-missing", lambda f: _write(f / "gone.mhd", b"NDims = 3\nDimSize = 8 8 8\nElementType = MET_SHORT\nElementDataFile = gone.raw\n"), "refuse", "gone.raw")
    return c


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def cases() -> list[Case]:
    return nrrd_cases() + metaimage_cases()
