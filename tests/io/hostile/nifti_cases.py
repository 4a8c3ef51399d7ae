"""NIfTI inputs that lie: damaged gzip streams, geometry fields (pixdim, sform, qform), sizes and
offsets, datatypes and values. Headers are written field by field (nibabel's save would repair
some of the lies), data after them as the header says it should be, unless the lie is the data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from . import Case

SHAPE = (8, 8, 8)
GEO = "no usable geometry"


def header(shape=SHAPE, dtype=np.float32, sform=np.diag([1.2, 1.0, 2.0, 1.0]), qform_code=0, **fields):
    """A NIfTI-1 header with ``fields`` set raw (``pixdim=(i, v)`` sets one pixdim entry)."""
    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_data_dtype(dtype)
    h["pixdim"][1:4] = [1.2, 1.0, 2.0]
    if sform is not None:
        h["sform_code"] = 1
        h["srow_x"], h["srow_y"], h["srow_z"] = np.asarray(sform)[:3]
    h["qform_code"] = qform_code
    h["vox_offset"] = 352
    for k, v in fields.items():
        if k == "pixdim":
            h["pixdim"][v[0]] = v[1]
        else:
            h[k] = v
    return h


def voxels(shape=SHAPE, dtype=np.float32, seed=0) -> bytes:
    """Seeded random values (so the gzip stream is long enough to damage in many places)."""
    n = int(np.prod(shape))
    values = np.random.default_rng(seed).random(n) * 100
    return values.astype(dtype).tobytes()


def nifti(h, data: bytes | None = None) -> bytes:
    if data is None:
        data = voxels(tuple(int(d) for d in h["dim"][1:1 + int(h["dim"][0])]), h.get_data_dtype())
    return h.binaryblock + b"\0" * 4 + data


def _writer(name: str, raw: bytes | Callable, gz: bool):
    def build(folder: Path) -> Path:
        body = raw() if callable(raw) else raw
        path = folder / (name + (".nii.gz" if gz else ".nii"))
        path.write_bytes(gzip.compress(body, mtime=0) if gz else body)
        return path
    return build



def _both(cid, klass, raw, expect, problem=""):
    """The same header as .nii and .nii.gz."""
    return [Case(f"{cid}-{sfx}", klass, _writer(cid, raw, sfx == "gz"), expect, problem) for sfx in ("nii", "gz")]


# --- damaged gzip streams ------------------------------------------------------------------------
def _gz_edit(name: str, dtype, edit):
    def build(folder: Path) -> Path:
        packed = bytearray(gzip.compress(nifti(header(dtype=dtype)), mtime=0))
        path = folder / f"{name}.nii.gz"
        path.write_bytes(bytes(edit(packed)))
        return path
    return build


def _cut(n):
    return lambda b: b[:len(b) // 2] if n == "half" else b[:-n]


def _flip(frac):
    def edit(b):
        i = 10 + int((len(b) - 18) * frac)  # inside the deflate stream, clear of header and trailer
        b[i] ^= 0x5A
        return b
    return edit


def _trailer(kind):
    def edit(b):
        crc, size = struct.unpack("<II", bytes(b[-8:]))
        crc, size = {"crc0": (0, size), "crc+1": ((crc + 1) & 0xFFFFFFFF, size), "isize+1": (crc, size + 1),
                     "isize0": (crc, 0), "isize-max": (crc, 0xFFFFFFFF)}[kind]
        b[-8:] = struct.pack("<II", crc, size)
        return b
    return edit


def gzip_cases() -> list[Case]:
    out = []
    damaged = "damaged gzip stream"
    for dt in (np.float32, np.int16):
        tag = np.dtype(dt).name
        for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 100, 500, "half"):
            out.append(Case(f"gz-{tag}-cut-{n}", "gzip", _gz_edit(f"cut{n}", dt, _cut(n)), "refuse", damaged))
        for keep in (10, 18, 40):  # only the gzip header, or a few bytes of deflate
            out.append(Case(f"gz-{tag}-keep-{keep}", "gzip", _gz_edit(f"keep{keep}", dt, lambda b, k=keep: b[:k]), "refuse"))
        for frac in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
            out.append(Case(f"gz-{tag}-flip-{frac}", "gzip", _gz_edit(f"flip{frac}", dt, _flip(frac)), "refuse", damaged))
        for kind in ("crc0", "crc+1", "isize+1", "isize0", "isize-max"):
            out.append(Case(f"gz-{tag}-{kind}", "gzip", _gz_edit(kind, dt, _trailer(kind)), "refuse", damaged))
    out += [
        Case("gz-magic-flipped", "gzip", _gz_edit("magic", np.float32, lambda b: b"\x1f\x8c" + b[2:]), "refuse"),
        Case("gz-method-not-deflate", "gzip", _gz_edit("method", np.float32, lambda b: b[:2] + b"\x07" + b[3:]), "refuse"),
        Case("gz-trailing-garbage", "gzip", _gz_edit("garbage", np.float32, lambda b: b + b"garbage!"), "refuse"),
        Case("gz-trailing-zeros", "gzip", _gz_edit("zeros", np.float32, lambda b: b + b"\0" * 64), "read"),
        Case("gz-two-members", "gzip", _gz_edit("members", np.float32,
             lambda b: gzip.compress(gzip.decompress(bytes(b))[:1000], mtime=0) + gzip.compress(gzip.decompress(bytes(b))[1000:], mtime=0)), "read"),
        Case("gz-empty-payload", "gzip", _gz_edit("empty", np.float32, lambda b: gzip.compress(b"", mtime=0)), "refuse"),
        Case("gz-plain-nifti-named-gz", "gzip", _gz_edit("plain", np.float32, lambda b: gzip.decompress(bytes(b))), "refuse"),
        Case("gz-gzip-named-nii", "gzip", lambda f: _write(f / "packed.nii", gzip.compress(nifti(header()), mtime=0)), "refuse"),
    ]
    return out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- geometry -------------------------------------------------------------------------------------
def geometry_cases() -> list[Case]:
    out = []
    for qcode in (0, 1):  # the pixdim is the geometry: method 1 (no codes) or a qform
        for axis in (1, 2, 3):
            for v in (0.0, float("nan"), float("inf"), float("-inf"), 1e-30, 1e-6):
                out.append(Case(f"pixdim{axis}-{v:g}-qform{qcode}", "nifti-geometry",
                                _writer(f"pixdim{axis}_{v:g}", nifti(header(sform=None, qform_code=qcode, pixdim=(axis, v))), True),
                                "refuse", GEO))
            out.append(Case(f"pixdim{axis}-negative-qform{qcode}", "nifti-geometry",
                            _writer(f"pixdim{axis}_neg", nifti(header(sform=None, qform_code=qcode, pixdim=(axis, -1.5))), True), "read"))
    for v in (0.0, float("nan")):  # a valid sform decides: the pixdim does not matter
        out.append(Case(f"pixdim2-{v:g}-under-sform", "nifti-geometry",
                        _writer(f"sform_pixdim_{v:g}", nifti(header(pixdim=(2, v))), True), "read"))
    for (r, c) in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 3), (2, 3)):
        for v in (float("nan"), float("inf"), float("-inf")):
            m = np.diag([1.2, 1.0, 2.0, 1.0])
            m[r, c] = v
            out.append(Case(f"sform-{r}{c}-{v:g}", "nifti-geometry", _writer(f"sform{r}{c}_{v:g}", nifti(header(sform=m)), True), "refuse", GEO))
    collinear = np.array([[1.0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    rank1 = np.array([[1.0, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]])
    for label, m, expect in (("zero", np.diag([0.0, 0, 0, 1]), "refuse"), ("rank1", rank1, "refuse"),
                             ("collinear", collinear, "refuse"), ("1e-30", np.diag([1e-30] * 3 + [1.0]), "refuse"),
                             ("1e-6", np.diag([1e-6] * 3 + [1.0]), "refuse"), ("1e30", np.diag([1e30] * 3 + [1.0]), "refuse"),
                             ("1e7-offset", np.array([[1.0, 0, 0, 1e7], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "read"),
                             ("flipped", np.diag([-1.0, 1, 1, 1]), "read"),
                             ("oblique", np.array([[0.9, -0.4, 0, 5], [0.4, 0.9, 0, -3], [0, 0, 2, 1], [0, 0, 0, 1]]), "read"),
                             ("sheared", np.array([[1.0, 0, 0.3, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "read")):
        out.append(Case(f"sform-{label}", "nifti-geometry", _writer(f"sform_{label}", nifti(header(sform=m)), True), expect,
                        GEO if expect == "refuse" else ""))
    for field in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
        for v in (float("nan"), float("inf")):
            out.append(Case(f"qform-{field}-{v:g}", "nifti-geometry",
                            _writer(f"q_{field}_{v:g}", nifti(header(sform=None, qform_code=1, **{field: v})), True), "refuse"))
    for label, fields, expect in (("quaternion-norm-3", {"quatern_b": 1.0, "quatern_c": 1.0, "quatern_d": 1.0}, "refuse"),
                                  ("qfac-0", {"pixdim": (0, 0.0)}, "read"), ("qfac-neg", {"pixdim": (0, -1.0)}, "read"),
                                  ("rotated", {"quatern_b": 0.0, "quatern_c": 0.0, "quatern_d": 0.3826834}, "read")):
        out.append(Case(f"qform-{label}", "nifti-geometry",
                        _writer(f"q_{label}", nifti(header(sform=None, qform_code=1, **fields)), True), expect))
    out.append(Case("sform-code-99", "nifti-geometry", _writer("scode99", nifti(header(sform_code=99)), True), "read"))
    return out


# --- sizes and offsets ------------------------------------------------------------------------------
def _dims(dim):
    h = header()
    h["dim"][:] = dim
    return h


def dims_cases() -> list[Case]:
    out = []
    for axis in (1, 2, 3):
        for v in (0, -1, -32768, 32767):
            dim = [3, 8, 8, 8, 1, 1, 1, 1]
            dim[axis] = v
            data = voxels()
            out += _both(f"dim{axis}-{v}", "nifti-dims", nifti(_dims(dim), data), "refuse")
    for label, dim, expect, problem in (
            ("1000-cubed", [3, 1000, 1000, 1000, 1, 1, 1, 1], "refuse", "truncated"),
            ("32767-cubed", [3, 32767, 32767, 32767, 1, 1, 1, 1], "refuse", ""),
            ("ndim-0", [0, 8, 8, 8, 1, 1, 1, 1], "refuse", ""), ("ndim-neg", [-1, 8, 8, 8, 1, 1, 1, 1], "refuse", ""),
            ("ndim-9", [9, 8, 8, 8, 1, 1, 1, 1], "refuse", ""),
            ("4d", [4, 8, 8, 2, 4, 1, 1, 1], "refuse", "4D"), ("5d-trailing-ones", [5, 8, 8, 8, 1, 1, 1, 1], "read", ""),
            ("2d", [2, 8, 64, 1, 1, 1, 1, 1], "read", "")):
        out += _both(label, "nifti-dims", nifti(_dims(dim), voxels()), expect, problem)
    for label, offset, expect in (("0", 0, "read"), ("neg", -352, "refuse"), ("1e9", 1e9, "refuse"),
                                  ("nan", float("nan"), "refuse"), ("inf", float("inf"), "refuse"),
                                  ("beyond-data", 352 + 2048, "refuse")):
        out += _both(f"vox-offset-{label}", "nifti-dims", nifti(header(vox_offset=offset)), expect)
    out += _both("vox-offset-416-padded", "nifti-dims", nifti(header(vox_offset=416), b"\0" * 64 + voxels()), "read")
    # sizeof_hdr only tells NIfTI-1 from -2 and the byte order, which the magic and dims also tell:
    # nibabel reads such a file whole and right, so it is read (found so by this corpus)
    for label, fields in (("sizeof-hdr-0", {"sizeof_hdr": 0}), ("sizeof-hdr-540", {"sizeof_hdr": 540})):
        out += _both(label, "nifti-dims", nifti(header(**fields)), "read")
    out += _both("magic-garbage", "nifti-dims", nifti(header(magic=b"xyz")), "refuse")
    big = header().as_byteswapped(">")
    out += _both("big-endian", "nifti-dims", big.binaryblock + b"\0" * 4 + np.frombuffer(voxels(), "<f4").astype(">f4").tobytes(), "read")
    n2 = nib.Nifti2Header()
    n2.set_data_shape(SHAPE)
    n2.set_data_dtype(np.float32)
    n2.set_sform(np.diag([1.0, 1, 1, 1]), code=1)
    n2["vox_offset"] = 544
    out += _both("nifti2", "nifti-dims", n2.binaryblock + b"\0" * 4 + voxels(), "read")
    return out


# --- datatypes --------------------------------------------------------------------------------
DATATYPES = {  # code: (bytes per voxel, expectation, problem)
    2: (1, "read", ""), 4: (2, "read", ""), 8: (4, "read", ""), 16: (4, "read", ""), 64: (8, "read", ""),
    256: (1, "read", ""), 512: (2, "read", ""), 768: (4, "read", ""), 1024: (8, "read", ""), 1280: (8, "read", ""),
    32: (8, "refuse", "complex"), 1792: (16, "refuse", "complex"), 2048: (32, "refuse", "complex"),
    128: (3, "refuse", ""), 2304: (4, "refuse", ""), 1: (1, "refuse", ""), 0: (4, "refuse", ""),
    9999: (4, "refuse", ""), 1536: (16, "refuse", "datatype"),  # nibabel reads no float128 here
}


def _typed(code, nbytes):
    h = header()
    h["datatype"], h["bitpix"] = code, nbytes * 8
    n = int(np.prod(SHAPE))
    data = (np.arange(n * nbytes, dtype=np.uint32) * 2654435761 % 97).astype(np.uint8).tobytes()  # small, finite values
    if code in (16, 64):  # floats from arbitrary bytes could be NaN: use real floats
        data = voxels(dtype=np.float32 if code == 16 else np.float64)
    elif code == 1536:
        data = np.linspace(0, 1, n).astype(np.longdouble).tobytes() if np.dtype(np.longdouble).itemsize == 16 else data
    return nifti(h, data)


def datatype_cases() -> list[Case]:
    out = []
    for code, (nbytes, expect, problem) in DATATYPES.items():
        out += _both(f"datatype-{code}", "nifti-datatype", _typed(code, nbytes), expect, problem)
    h = header(bitpix=8)  # bitpix disagrees with datatype float32: the datatype decides
    out += _both("bitpix-wrong", "nifti-datatype", nifti(h), "read")
    return out


# --- values and scaling -------------------------------------------------------------------------------
def _values(dtype, fill):
    h = header(dtype=dtype)
    a = np.asarray(fill(np.random.default_rng(1).random(SHAPE) * 100), dtype=dtype)
    return nifti(h, a.tobytes(order="F"))


def value_cases() -> list[Case]:
    out = []
    for label, dtype, fill, expect, problem in (
            ("all-nan", np.float32, lambda a: a * np.nan, "refuse", "no finite values"),
            ("all-inf", np.float32, lambda a: a * np.inf, "refuse", ""),
            ("float64-1e300", np.float64, lambda a: a + 1e300, "refuse", "overflow"),
            ("float64-minus-1e300", np.float64, lambda a: -a - 1e300, "refuse", "overflow"),
            ("some-nan", np.float32, lambda a: np.where(a > 50, np.nan, a), "read", ""),
            ("one-inf", np.float32, lambda a: np.where(a == a.max(), np.inf, a), "read", ""),
            ("all-zero", np.float32, lambda a: a * 0, "read", ""),
            ("int64-beyond-int32", np.int64, lambda a: (a * 1e9).astype(np.int64) + 2**40, "read", "")):
        out += _both(f"values-{label}", "nifti-values", _values(dtype, fill), expect, problem)
    for label, fields, expect, problem in (
            ("slope-nan", {"scl_slope": np.nan}, "read", ""), ("slope-0", {"scl_slope": 0.0}, "read", ""),
            # a non-finite scl_slope means "no scaling" to nibabel, as 0 does in the standard
            ("slope-inf", {"scl_slope": np.inf}, "read", ""), ("slope-1e38", {"scl_slope": 1e38}, "refuse", "overflow"),
            ("slope-neg", {"scl_slope": -1.0}, "read", ""), ("inter-nan", {"scl_slope": 2.0, "scl_inter": np.nan}, "refuse", "intercept"),
            ("inter-inf", {"scl_slope": 1.0, "scl_inter": np.inf}, "refuse", "")):
        out += _both(label, "nifti-values", nifti(header(dtype=np.int16, **fields)), expect, problem)
    return out


def cases() -> list[Case]:
    return gzip_cases() + geometry_cases() + dims_cases() + datatype_cases() + value_cases()
