"""A generated corpus of hostile inputs (issue 19's classes): damaged gzip streams, headers that
lie about geometry or size, DICOM pixel data that does not fit its header. Each must be one line
on stderr naming the file and the problem, exit 2, for `medgen info` and `medgen convert` alike,
with nothing written. Cases are built from parameters, not by hand one by one."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medgen.cli import main


def _nifti(path, shape=(16, 16, 16), dtype=np.float32, edit=None, affine=None):
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    if edit is not None:
        edit(header)
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 100).astype(dtype)
    nib.save(nib.Nifti1Image(data, affine, header=header), str(path))
    return path


# --- damaged gzip streams --------------------------------------------------------------------
def _gz_cut(n):
    def build(tmp_path):
        p = _nifti(tmp_path / f"cut{n}.nii.gz")
        p.write_bytes(p.read_bytes()[:-n])
        return p, "damaged gzip stream"
    build.__name__ = f"gzip_missing_last_{n}_bytes"
    return build


def _gz_trailer(field):
    def build(tmp_path):
        p = _nifti(tmp_path / f"{field}.nii.gz")
        data = bytearray(p.read_bytes())
        if field == "crc":
            data[-8:-4] = b"\0\0\0\0"
        else:  # ISIZE: the uncompressed length mod 2^32
            data[-4:] = struct.pack("<I", (struct.unpack("<I", bytes(data[-4:]))[0] + 1) & 0xFFFFFFFF)
        p.write_bytes(bytes(data))
        return p, "damaged gzip stream"
    build.__name__ = f"gzip_wrong_{field}"
    return build


def _gz_flipped(tmp_path):
    p = _nifti(tmp_path / "flipped.nii.gz")
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the deflate stream, far from the header
    p.write_bytes(bytes(data))
    return p, "damaged gzip stream"


# --- headers that lie ----------------------------------------------------------------------
def _patch_header(path, offset, data):
    """Overwrite header bytes on disk (nibabel repairs some fields when it saves)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset:offset + len(data)] = data
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def _pixdim(value):
    def build(tmp_path):
        p = _nifti(tmp_path / f"pixdim{value:g}.nii.gz")
        return _patch_header(p, 80 + 4, struct.pack("<f", value)), "no usable geometry"  # pixdim[2]
    build.__name__ = f"pixdim_{value:g}"
    return build


def _tiny_sform(tmp_path):
    return _nifti(tmp_path / "tiny_sform.nii.gz", affine=np.diag([1e-30, 1e-30, 1e-30, 1.0])), "no usable geometry"


def _complex(tmp_path):
    p = tmp_path / "complex.nii.gz"
    data = (np.ones((6, 6, 6)) + 1j * np.ones((6, 6, 6))).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    return p, "complex values"


def _claims_more(suffix):
    def build(tmp_path):
        # a 16^3 file whose header says 1000^3 float32: refused before 4 GB are allocated
        p = _nifti(tmp_path / f"claims.{suffix}")
        gz = suffix.endswith("gz")
        raw = bytearray(gzip.decompress(p.read_bytes()) if gz else p.read_bytes())
        raw[42:48] = struct.pack("<3h", 1000, 1000, 1000)  # dim[1:4] of the NIfTI-1 header
        p.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
        return p, "truncated"
    build.__name__ = f"header_claims_1000_cubed_{suffix.replace('.', '_')}"
    return build


# --- DICOM pixel data against its header ------------------------------------------------------
def _dicom(edit, name):
    def build(tmp_path):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))  # 64 x 64, 16 bits
        edit(ds)
        p = tmp_path / f"{name}.dcm"
        ds.save_as(p, enforce_file_format=False)
        return p, PROBLEM[name]
    build.__name__ = f"dicom_{name}"
    return build


def _drop(*tags):
    def edit(ds):
        for t in tags:
            delattr(ds, t)
    return edit


def _set(**values):
    def edit(ds):
        for k, v in values.items():
            setattr(ds, k, v)
    return edit


PROBLEM = {
    "no_rows": "without Rows",
    "no_columns": "without Columns",
    "rows_65535": "pixel data holds",
    "rows_doubled": "pixel data holds",
    "columns_halved": "pixel data holds",
    "frames_1e5": "pixel data holds",
    "frames_1e9": "more than any scan",
    "bits_12": "BitsAllocated is 12",
    "bits_32": "pixel data holds",
    "rows_zero": "Rows is 0",
}
DICOM_EDITS = {
    "no_rows": _drop("Rows"),
    "no_columns": _drop("Columns"),
    "rows_65535": _set(Rows=65535, Columns=65535),
    "rows_doubled": _set(Rows=128),
    "columns_halved": _set(Columns=32),
    "frames_1e5": _set(NumberOfFrames=10**5),
    "frames_1e9": _set(NumberOfFrames=10**9),
    "bits_12": _set(BitsAllocated=12),
    "bits_32": _set(BitsAllocated=32),
    "rows_zero": _set(Rows=0),
}


def _bad_vr(tmp_path):
    from pathlib import Path

    return Path(get_testdata_file("badVR.dcm", download=False)), "malformed DICOM element"


CORPUS = ([_gz_cut(n) for n in (1, 4, 9)] + [_gz_trailer(f) for f in ("crc", "isize")] + [_gz_flipped]
          + [_pixdim(v) for v in (0.0, 1e-30, float("nan"))] + [_tiny_sform, _complex]
          + [_claims_more(s) for s in ("nii", "nii.gz")]
          + [_dicom(e, n) for n, e in DICOM_EDITS.items()] + [_bad_vr])


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.__name__.strip("_"))
def test_hostile_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    path, problem = case(tmp_path)
    capsys.readouterr()  # what building the case printed (nibabel's notes on saving it)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for argv in (["info", str(path)], ["convert", str(path), str(out_dir / "o.nii.gz")]):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv[0], err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert path.name in err and problem in err, err
    assert not any(out_dir.iterdir())


def test_padding_short_of_a_frame_is_still_read():
    from medgen.io import read

    assert tuple(read(get_testdata_file("MR_small_padded.dcm", download=False)).shape) == (64, 64, 1)


@pytest.mark.parametrize("dtype, stored", [(np.int64, np.int16), (np.uint64, np.int16)])
def test_convert_stores_64_bit_integers_in_a_type_nifti_readers_take(dtype, stored, tmp_path, capsys):
    src = tmp_path / "labels.nii.gz"
    data = np.arange(4 * 4 * 4, dtype=dtype).reshape(4, 4, 4)
    img = nib.Nifti1Image(data, np.eye(4), dtype=dtype)
    nib.save(img, str(src))
    assert main(["convert", str(src), str(tmp_path / "o.nii.gz")]) == 0
    out = nib.load(str(tmp_path / "o.nii.gz"))
    assert out.get_data_dtype() == stored and np.array_equal(np.asarray(out.dataobj), data)
    big = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(data * 10**6, np.eye(4), dtype=dtype), str(big))
    assert main(["convert", str(big), str(tmp_path / "o2.nii.gz")]) == 0
    assert nib.load(str(tmp_path / "o2.nii.gz")).get_data_dtype() in (np.int32, np.uint32)


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_convert_to_an_impossible_output_is_one_line(where, tmp_path, capsys):
    src = _nifti(tmp_path / "a.nii.gz")
    if where == "folder":
        out = tmp_path / "taken.nii.gz"
        out.mkdir()
    else:
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "o.nii.gz"
    assert main(["convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and out.name in err and "Traceback" not in err, err


# --- MetaImage headers that lie ------------------------------------------------------------------
def _mha(tmp_path, name, header: dict, data: bytes):
    p = tmp_path / f"{name}.mha"
    fields = {"ObjectType": "Image", "NDims": "3", "DimSize": "8 8 8", "ElementType": "MET_SHORT",
              "ElementSpacing": "1 1 1", "Offset": "0 0 0", "BinaryDataByteOrderMSB": "False", **header,
              "ElementDataFile": "LOCAL"}
    p.write_bytes("".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None).encode() + data)
    return p


RAW = np.arange(512, dtype=np.int16).tobytes()
MHA_CASES = {
    "ndims_99": ({"NDims": "99"}, RAW, "NDims = 99"),
    "dimsize_short": ({"DimSize": "8 8"}, RAW, "DimSize"),
    "compressed_over_raw": ({"CompressedData": "True"}, RAW, "not a valid zlib stream"),
    "compressed_truncated": ({"CompressedData": "True"}, __import__("zlib").compress(RAW)[:-40], "decompresses to"),
    "raw_truncated": ({}, RAW[:600], "truncated"),
    "offset_nan": ({"Offset": "nan 0 0"}, RAW, "no usable geometry"),
    "spacing_zero": ({"ElementSpacing": "1 0 1"}, RAW, "no usable geometry"),
    "element_type": ({"ElementType": "MET_WHATEVER"}, RAW, "ElementType"),
}


@pytest.mark.parametrize("name", sorted(MHA_CASES))
def test_metaimage_header_lies_are_one_line(name, tmp_path, capsys):
    header, data, problem = MHA_CASES[name]
    path = _mha(tmp_path, name, header, data)
    out = tmp_path / "out" / "o.nii.gz"
    for argv in (["info", str(path)], ["convert", str(path), str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and path.name in err and problem in err, err
    assert not out.exists()


def test_a_sound_metaimage_still_reads(tmp_path):
    from medgen.io import read

    v = read(_mha(tmp_path, "fine", {}, RAW))
    assert tuple(v.shape) == (8, 8, 8) and float(v.max()) == 511
    packed = __import__("zlib").compress(RAW)
    z = read(_mha(tmp_path, "fine_z", {"CompressedData": "True", "CompressedDataSize": str(len(packed))}, packed))
    assert float(z.max()) == 511


def _overflow(tmp_path):
    p = tmp_path / "huge.nii.gz"
    nib.save(nib.Nifti1Image(np.full((6, 6, 6), 1e300), np.eye(4), dtype=np.float64), str(p))
    return p, "overflow 32-bit floats"


def _control_characters_in_the_name(tmp_path):
    p = tmp_path / "evil\nname\x1b[31m.nii.gz"
    p.write_bytes(b"not gzip at all")
    return p, "\\n"


@pytest.mark.parametrize("case", [_overflow, _control_characters_in_the_name], ids=lambda c: c.__name__.strip("_"))
def test_messages_say_what_is_wrong_in_one_printable_line(case, tmp_path, capsys):
    path, problem = case(tmp_path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and problem in err and "\x1b" not in err, err
