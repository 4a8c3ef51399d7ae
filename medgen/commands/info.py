"""`medgen info PATH [--json]`: shape, spacing, orientation, dtype, intensity range, modality;
for a folder of volumes (e.g. a training folder) one header line per volume and the voxel sizes;
for an expression table (``*.tsv[.gz]`` or its folder) its size, values, labels and hints."""

from __future__ import annotations

import json

HELP = ("Show a volume's geometry and intensities (NIfTI, NRRD, MHA/MHD, DICOM file or folder), "
        "the geometry of every volume in a folder, or the size and values of an expression table.")


def add_arguments(parser) -> None:
    parser.add_argument("path", help="volume file, DICOM folder, a folder of volumes (searched recursively), "
                                     "or an expression table (.tsv, .tsv.gz) or its folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--series", default=None, help="DICOM folder with several series: the one to describe, by SeriesInstanceUID, "
                                                        "series number, or its description or an unambiguous part of it")
    parser.add_argument("--genes-by-samples", action="store_true",
                        help="expression table whose rows are genes and columns samples")


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
        ("dtype", _fmt(facts["dtype"]) + (" on disk, float32 after the file's rescale (the values below)"
                                          if facts.get("rescaled") else "")),
        ("min / max", f"{_fmt(facts['min'])} / {_fmt(facts['max'])}"),
        ("mean", _fmt(facts["mean"])),
    ]
    if facts.get("format") in (None, "dicom"):  # a NIfTI or NRRD has neither: '-' and '1' said nothing
        rows += [("modality", _fmt(facts["modality"])), ("series", _fmt(facts["series"]))]
    if facts.get("format"):
        rows.insert(0, ("format", facts["format"]))
    lines = [f"{k:<13} {v}" for k, v in rows]
    for s in facts.get("series_list") or []:
        number = f"  number {s['number']}" if s.get("number") else ""
        lines.append(f"  {s['uid']}{number}  '{s['description']}'  {s['modality'] or '-'}  {s['files']} files")
    if facts.get("series_list"):
        lines.append("choose one with --series: its UID, its number, or its description (a part that no other has will do)")
    return "\n".join(lines)


def format_folder(facts: dict) -> str:
    """One line per volume of ``describe_folder()``, then the voxel sizes they come in."""
    rows = [("path", "shape", "spacing (mm)", "orient.", "format")]
    for v in facts["volumes"]:
        if "error" in v:
            rows.append((v["path"], "unreadable: " + v["error"], "", "", ""))
        else:
            rows.append((v["path"], _fmt(v["shape"]), _fmt(v["spacing"]), v["orientation"], v["format"]))
    widths = [max(len(r[i]) for r in rows if not r[1].startswith("unreadable") or i == 0) for i in range(5)]
    n = len(facts["volumes"])
    lines = [f"{n} volume{'s' if n != 1 else ''} under {facts['folder']} (headers only; shape and spacing in each file's voxel order)"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    sizes = facts["voxel_sizes"]
    if sizes:
        shown = "; ".join(f"{_fmt(s['spacing'])} mm: {s['volumes']}" for s in sizes)
        lines.append(f"voxel sizes (R x A x S): {shown}")
        if len(sizes) > 1:
            lines.append(f"median {_fmt(facts['median_spacing'])} mm: what data.spacing=auto trains at "
                         "if all of these are training scans")
    return "\n".join(lines)


def format_expression(facts: dict) -> str:
    """``describe_table()``'s facts as a few lines."""
    lines = [f"{facts['path']}: expression table, {facts['samples']} samples x {facts['genes']} genes",
             f"values {_fmt(facts['min'])} .. {_fmt(facts['max'])}, mean {_fmt(facts['mean'])}, "
             f"{100 * facts['zeros']:.1f} % zeros"]
    if facts["labels"] is not None:
        shown = ", ".join(f"{k} {v}" for k, v in facts["labels"].items())
        lines.append(f"labels: {shown}; {facts['unlabelled']} samples unlabelled")
    lines += [f"hint: {h}" for h in facts["hints"]]
    return "\n".join(lines)


def _is_expression(path) -> bool:
    from medgen.data.layouts import EXPRESSION_FILES

    if path.is_file():
        return path.name.lower().endswith((".tsv", ".tsv.gz"))
    return path.is_dir() and any((path / n).is_file() for n in EXPRESSION_FILES)


def run(args) -> int:
    from pathlib import Path

    from medgen.io import describe, describe_folder, find_volumes

    path = Path(args.path)
    if _is_expression(path):
        from medgen.data.expression_io import describe_table

        facts = describe_table(path, args.genes_by_samples)
        print(json.dumps(facts) if args.json else format_expression(facts))
        return 0
    # A folder of volumes, not a DICOM folder (one with DICOM files of its own is read whole,
    # subfolders included, as one series or a choice of several).
    volumes = find_volumes(path) if path.is_dir() and args.series is None else []
    # A layout root with one DICOM series somewhere below it (PATIENT/STUDY/SERIES/*.dcm) is
    # that series, as for `medgen convert`; several series below keep the one-line-per-volume table.
    one_series_below = len(volumes) == 1 and volumes[0].is_dir()
    if volumes and path not in volumes and not one_series_below:
        facts = describe_folder(path, volumes)
        print(json.dumps(facts) if args.json else format_folder(facts))
        return 0
    facts = describe(args.path, series=args.series)
    if args.json:
        print(json.dumps(facts))
    else:
        print(format_table(facts))
    return 0
