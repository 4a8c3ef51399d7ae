"""Discovery of the folder layouts of DESIGN.md section 2.

A *volume entry* named ``key`` inside a folder is a file ``key.nii.gz``, ``key.nii``, ``key.nrrd``,
``key.nhdr``, ``key.mha`` or ``key.mhd``, or a DICOM folder ``key/``. Layouts:

* paired: ``DIR/<subject>/<key>`` for every requested key (:func:`discover_paired`);
* unpaired: ``DIR/A/<entry>``, ``DIR/B/<entry>`` (:func:`discover_unpaired`);
* domain adaptation: ``DIR/source/<subject>/{image,label}``, ``DIR/target/<subject>/image``
  (+ optional ``label``) (:func:`discover_domain`);
* expression: ``DIR/expression.tsv`` (+ optional ``DIR/labels.tsv``) (:func:`discover_expression`).

Every problem raises :class:`medgen.errors.InputError` naming the folder (and subject and key).
Hidden entries (starting with ``.``) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from medgen.errors import InputError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_EXPECTED = "/".join(VOLUME_SUFFIXES)


def _visible(folder: Path):
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _require_dir(path: Path, what: str = "folder") -> Path:
    if not path.exists():
        raise InputError(path, f"{what} does not exist")
    if not path.is_dir():
        raise InputError(path, f"{what} is not a folder")
    return path


def _is_dicom_dir(path: Path) -> bool:
    from medgen.io import is_volume_path

    return path.is_dir() and is_volume_path(path)


def entry_name(path: Path) -> str:
    """The entry name of a volume path: the file name without its volume suffix (or ``.dcm``)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES + (".dcm",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_volume(folder: Path, key: str, required: bool = True) -> Path | None:
    """The volume entry ``key`` in ``folder`` (file with a volume suffix or DICOM folder)."""
    hits = [folder / f"{key}{s}" for s in VOLUME_SUFFIXES if (folder / f"{key}{s}").is_file()]
    if (folder / key).is_dir():
        if _is_dicom_dir(folder / key):
            hits.append(folder / key)
        elif required:
            raise InputError(folder / key, f"folder '{key}/' holds no DICOM files")
    if len(hits) > 1:
        raise InputError(folder, f"'{key}' is ambiguous: {', '.join(p.name for p in hits)}")
    if not hits:
        if required:
            raise InputError(folder, f"missing '{key}' (expected {key}{{{_EXPECTED}}} or a DICOM folder {key}/)")
        return None
    return hits[0]


def _subject_dirs(root: Path) -> list[Path]:
    _require_dir(root)
    subjects = [p for p in _visible(root) if p.is_dir()]
    if not subjects:
        raise InputError(root, "no subject folders found (expected DIR/<subject>/<key>)")
    return subjects


def discover_paired(root, keys, optional=()) -> list[dict]:
    """``[{"subject": name, key: Path, ...}]`` for every subject folder of ``root``, sorted by name.

    Every subject must hold every key of ``keys``; keys of ``optional`` are included when
    present (``None`` otherwise). Works for the anomaly layout too (one key).
    """
    root = Path(root)
    items = []
    for folder in _subject_dirs(root):
        item = {"subject": folder.name}
        for key in keys:
            item[key] = find_volume(folder, key)
        for key in optional:
            item[key] = find_volume(folder, key, required=False)
        items.append(item)
    return items


def _entries(folder: Path) -> list[dict]:
    _require_dir(folder)
    items = []
    for p in _visible(folder):
        if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES):
            items.append({"subject": entry_name(p), "image": p})
        elif p.is_dir() and _is_dicom_dir(p):
            items.append({"subject": p.name, "image": p})
    if not items:
        raise InputError(folder, f"no volumes found (expected files {_EXPECTED} or DICOM folders)")
    return items


def discover_volumes(root, key: str, extra=()) -> list[dict]:
    """Single-volume subjects (the anomaly layout): ``[{"subject", key: Path, ...}]``.

    ``root/<subject>/<key>`` (+ every key of ``extra``, e.g. a brain mask) as in
    :func:`discover_paired`; or, when no subject folder holds ``key``, a flat folder of scans
    (``root/*.nii.gz`` files or DICOM series folders), each one subject named after its entry --
    the way a folder of normal scans is often kept. ``extra`` keys need subject folders.
    """
    root = Path(root)
    _require_dir(root)
    has_subjects = any(find_volume(p, key, required=False) is not None
                       for p in _visible(root) if p.is_dir() and not _is_dicom_dir(p))
    flat = [] if has_subjects else _entries_or_none(root)
    if not flat:
        return discover_paired(root, [key, *extra])
    if extra:
        raise InputError(root, f"'{extra[0]}' needs the layout DIR/<subject>/{{{key},{extra[0]}}}, "
                               f"not a flat folder of scans")
    return [{"subject": e["subject"], key: e["image"]} for e in flat]


def _entries_or_none(folder: Path) -> list[dict]:
    try:
        return _entries(folder)
    except InputError:
        return []


def discover_unpaired(root) -> tuple[list[dict], list[dict]]:
    """``(A, B)``: lists of ``{"subject": entry name, "image": Path}`` from ``root/A`` and ``root/B``."""
    root = Path(root)
    _require_dir(root)
    return _entries(root / "A"), _entries(root / "B")


def discover_domain(root, target_labels: bool | None = None) -> dict[str, list[dict]]:
    """``{"source": [{"subject", "image", "label"}], "target": [{"subject", "image", "label"}]}``.

    Source subjects need image and label. Target labels are optional (``None`` when absent)
    unless ``target_labels=True``, which requires them (evaluation).
    """
    root = Path(root)
    _require_dir(root)
    source = discover_paired(root / "source", ["image", "label"])
    need = ["image", "label"] if target_labels else ["image"]
    target = discover_paired(root / "target", need, optional=() if target_labels else ("label",))
    return {"source": source, "target": target}


# The expression layout's table, in order of preference (large tables are often kept compressed).
EXPRESSION_FILES = ("expression.tsv", "expression.tsv.gz")


def discover_expression(root, genes_by_samples: bool = False) -> dict:
    """``{"expression": Path, "labels": Path | None, "genes_by_samples": bool}``.

    ``root`` is the folder holding ``expression.tsv`` -- or ``expression.tsv.gz`` when there is
    no ``expression.tsv`` (large tables are often kept compressed) -- or that file itself. By
    default rows are samples and columns genes; ``genes_by_samples=True`` declares the
    transposed table. ``labels.tsv`` beside the table is optional.
    """
    root = Path(root)
    if root.is_file():
        expression, folder = root, root.parent
    else:
        _require_dir(root)
        folder = root
        expression = next((root / n for n in EXPRESSION_FILES if (root / n).is_file()), None)
        if expression is None:
            raise InputError(root, "missing 'expression.tsv' or 'expression.tsv.gz' "
                                   "(rows = samples, first column = sample id)")
    labels = folder / "labels.tsv"
    return {"expression": expression, "labels": labels if labels.is_file() else None,
            "genes_by_samples": bool(genes_by_samples)}
