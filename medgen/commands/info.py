"""`medgen info PATH [--json]`: shape, spacing, orientation, dtype, intensity range, modality."""

from __future__ import annotations

import json

HELP = "Show a volume's geometry and intensities (NIfTI, NRRD, MHA/MHD, DICOM file or folder)."


def add_arguments(parser) -> None:
    parser.add_argument("path", help="volume file or DICOM folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--series", default=None, help="DICOM folder with several series: SeriesInstanceUID or description to describe")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " x ".join(_fmt(v) for v in value)
    return str(value)


def format_table(facts: dict) -> str:
    """A short, readable table of ``describe()``'s facts."""
    rows = [
        ("shape", _fmt(facts["shape"]) + ("  (file's voxel order)" if facts["shape"] else "")),
        ("spacing (mm)", _fmt(facts["spacing"])),
        ("orientation", _fmt(facts["orientation"])),
        ("dtype", _fmt(facts["dtype"])),
        ("min / max", f"{_fmt(facts['min'])} / {_fmt(facts['max'])}"),
        ("mean", _fmt(facts["mean"])),
        ("modality", _fmt(facts["modality"])),
        ("series", _fmt(facts["series"])),
    ]
    if facts.get("format"):
        rows.insert(0, ("format", facts["format"]))
    lines = [f"{k:<13} {v}" for k, v in rows]
    for s in facts.get("series_list") or []:
        lines.append(f"  {s['uid']}  '{s['description']}'  {s['modality'] or '-'}  {s['files']} files")
    if facts.get("series_list"):
        lines.append("choose one with --series UID_OR_DESCRIPTION")
    return "\n".join(lines)


def run(args) -> int:
    from medgen.io import describe

    facts = describe(args.path, series=args.series)
    if args.json:
        print(json.dumps(facts))
    else:
        print(format_table(facts))
    return 0
