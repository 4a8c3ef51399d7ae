"""NRRD headers checked before ITK reads the file. ITK takes gzip-encoded data that is raw bytes
(an all-garbage volume), a NaN spacing (read as 1 mm), and a DICOM or any file named .nrrd
(GDCM reads it by content); directions that are NaN or singular fail deep in ITK with a message
that does not say so. Each of these is one line naming the file here."""

from __future__ import annotations

import bz2
import re
import zlib
from pathlib import Path

import numpy as np

from medgen.errors import InputError
from medgen.io.errors_util import short
from medgen.io.geometry import MAX_VOXEL_MM, MIN_VOXEL_MM

_SIZES = {1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
          2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
              "unsigned short", "unsigned short int", "uint16", "uint16_t"),
          4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
          8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
              "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double")}
ITEMSIZE = {name: size for size, names in _SIZES.items() for name in names}
ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2", "ascii": "text",
             "text": "text", "txt": "text", "hex": "hex"}
GEO = "no usable geometry"


def parse_header(path: Path) -> tuple[dict[str, str], int]:
    """``(fields, offset of the data after the blank line)``; fields keyed in lower case."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head.startswith(b"NRRD000"):
        raise InputError(path, "not a readable NRRD file (it does not start with the NRRD000x magic)")
    m = re.search(rb"\r?\n\r?\n", head)
    text, offset = (head[:m.start()], m.end()) if m else (head, len(head))
    fields = {}
    for line in text.decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.lstrip("=").strip()
    return fields, offset


def _vectors(path: Path, text: str, n: int) -> list[np.ndarray | None]:
    """``(a,b,c) none ...`` -> vectors (None for 'none'), or a one-line InputError."""
    items = re.findall(r"\([^)]*\)|none", text, flags=re.IGNORECASE)
    if len(items) != n:
        raise InputError(path, f"NRRD space directions {text!r} has {len(items)} entries, expected {n} (dimension)")
    out = []
    for item in items:
        if item.lower() == "none":
            out.append(None)
            continue
        try:
            out.append(np.array([float(v) for v in item.strip("()").split(",")]))
        except ValueError:
            raise InputError(path, f"NRRD space directions entry {item} is not numbers") from None
    return out


def _check_geometry(path: Path, fields: dict[str, str], dimension: int) -> None:
    if "space directions" in fields:
        vectors = [v for v in _vectors(path, fields["space directions"], dimension) if v is not None]
        if any(not np.isfinite(v).all() for v in vectors):
            raise InputError(path, f"{GEO}: NRRD space directions hold NaN or infinite values")
        norms = [float(np.linalg.norm(v)) for v in vectors]
        if any(not MIN_VOXEL_MM <= n <= MAX_VOXEL_MM for n in norms):
            raise InputError(path, f"{GEO}: NRRD space directions {fields['space directions']} give a zero, tiny or huge voxel side")
        if len(vectors) >= 2 and len({len(v) for v in vectors}) == 1:
            m = np.stack(vectors)
            if np.linalg.matrix_rank(m / np.asarray(norms)[:, None], tol=1e-6) < len(vectors):
                raise InputError(path, f"{GEO}: NRRD space directions {fields['space directions']} are collinear")
    if "space origin" in fields:
        try:
            origin = [float(v) for v in fields["space origin"].strip("() ").split(",")]
        except ValueError:
            raise InputError(path, f"NRRD space origin {fields['space origin']!r} is not numbers") from None
        if not np.isfinite(origin).all():
            raise InputError(path, f"{GEO}: NRRD space origin holds NaN or infinite values")
    if "spacings" in fields:
        try:
            spacings = [float(v) for v in fields["spacings"].split()]
        except ValueError:
            raise InputError(path, f"NRRD spacings {fields['spacings']!r} are not numbers") from None
        if any(not (np.isfinite(v) and MIN_VOXEL_MM <= abs(v) <= MAX_VOXEL_MM) for v in spacings):
            raise InputError(path, f"{GEO}: NRRD spacings {fields['spacings']} hold a NaN, zero or absurd voxel side")


def _data_length(path: Path, data: bytes, encoding: str, expected: int) -> int:
    """Bytes the (compressed) data expands to, counted up to one past ``expected``; the stream's
    checksum is verified when it ends."""
    if encoding == "raw":
        return len(data)
    stream = zlib.decompressobj(47) if encoding == "gzip" else bz2.BZ2Decompressor()  # 47: gzip or zlib header
    total = 0
    try:
        if encoding == "gzip":
            pending = data
            while pending and total <= expected and not stream.eof:
                total += len(stream.decompress(pending, 1 << 24))
                pending = stream.unconsumed_tail
        else:
            total = len(stream.decompress(data, expected + 1))
    except (zlib.error, OSError, EOFError) as e:
        raise InputError(path, f"NRRD encoding is {encoding} but the data is not a valid {encoding} stream ({short(e)})") from None
    if total >= expected:
        return total
    if not stream.eof:
        raise InputError(path, f"NRRD {encoding} data is cut short: it expands to {total} bytes, the header needs {expected}")
    return total


def check_nrrd(path) -> None:
    """InputError for a NRRD header that lies about its geometry, type or data (see the module)."""
    path = Path(path)
    fields, offset = parse_header(path)
    try:
        dimension = int(fields.get("dimension", ""))
    except ValueError:
        raise InputError(path, f"NRRD header has no valid dimension ({fields.get('dimension', 'missing')!r})") from None
    if not 2 <= dimension <= 4:
        raise InputError(path, f"NRRD dimension is {dimension}: medgen reads 2D to 4D images")
    try:
        sizes = [int(v) for v in fields.get("sizes", "").split()]
    except ValueError:
        sizes = []
    if len(sizes) != dimension or min(sizes) < 1:
        raise InputError(path, f"NRRD sizes {fields.get('sizes', 'missing')!r} are not {dimension} positive sizes")
    kind = fields.get("type", "").lower()
    if kind not in ITEMSIZE:
        raise InputError(path, f"NRRD type {fields.get('type', 'missing')!r} is not a scalar voxel type medgen reads")
    encoding = ENCODINGS.get(fields.get("encoding", "").lower())
    if encoding is None:
        raise InputError(path, f"NRRD encoding {fields.get('encoding', 'missing')!r} is not one of {sorted(set(ENCODINGS))}")
    if ITEMSIZE[kind] > 1 and encoding in ("raw", "gzip", "bzip2") and "endian" not in fields:
        raise InputError(path, "NRRD header has no endian line: the byte order of its voxels is unknown")
    _check_geometry(path, fields, dimension)
    if encoding in ("text", "hex") or "byte skip" in fields or "line skip" in fields:
        return  # ITK parses text data and skips itself; sizes are bounded by the file
    name = fields.get("data file", fields.get("datafile"))
    if name is None:
        data_file, start = path, offset
    elif " " in name or "%" in name or name.upper().startswith("LIST"):
        return  # a list or pattern of files
    else:
        data_file, start = (Path(name) if Path(name).is_absolute() else path.parent / name), 0
        if not data_file.is_file():
            return  # reported by the data-file check
    expected = int(np.prod(sizes, dtype=np.int64)) * ITEMSIZE[kind]
    with open(data_file, "rb") as f:
        f.seek(start)
        data = f.read()
    total = _data_length(path, data, encoding, expected)
    if total < expected:
        raise InputError(path, f"image data is truncated: sizes {sizes} of {kind} need {expected} bytes, "
                               f"the {encoding} data holds {total}")
