"""The batch loop behind ``medgen score``: many scans to one CSV row each, with maps and
overlays. Scoring one volume is :mod:`medgen.models.anogan.scoring`."""

from __future__ import annotations

import contextlib
import csv
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from medgen.data.layouts import entry_name, find_volume
from medgen.errors import InputError, MedgenError, printable

# warning: a scan scored but unlike the training scans (a CT by a model of MR, another scale):
# its score does not compare; last, so that readers of the earlier columns by position still work
CSV_COLUMNS = ("path", "score", "flagged", "map", "overlay", "seconds", "error", "warning")


def output_names(paths: Sequence) -> list[str]:
    """File-name stems for the maps: each scan's path below the scans' common folder, its folders
    joined by ``_`` and its volume suffix dropped (``d/sub-001/t1.nii.gz`` and ``d/sub-002/t1.nii.gz``
    -> ``sub-001_t1``, ``sub-002_t1``; one scan, or scans side by side: the file name alone). Every
    map has the same depth below that folder, so a name says where its scan lies. The same scan
    given twice gets ``_2``."""
    import os

    resolved = [Path(p).resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved])) if resolved else Path("/")
    names = []
    for p in resolved:
        *folders, last = p.relative_to(root).parts
        names.append("_".join([*folders, entry_name(Path(last)) or last]))
    out, used = [], set()
    for n in names:  # the same scan given twice
        candidate, k = n, 1
        while candidate in used:
            k += 1
            candidate = f"{n}_{k}"
        used.add(candidate)
        out.append(candidate)
    return out


def find_mask(path, mask_name: str):
    """The mask volume ``mask_name`` beside scan `path` (same folder; for a DICOM folder, its parent)."""
    folder = Path(path).parent
    found = find_volume(folder, mask_name, required=False)
    if found is None:
        raise InputError(path, f"no mask '{mask_name}' beside this scan (looked in {folder})")
    return found


def _score_one(model, data, path, name: str, maps_dir, mode: str, threshold, mask_name, warn,
               polarity: str | None = None) -> dict[str, Any]:
    """One scan's CSV row; an error becomes the row's ``error`` and leaves no map behind."""
    from medgen import io
    from medgen.io.errors_util import short
    from medgen.models.anogan.scoring import flag, score_volume
    from medgen.transforms.masks import require_voxels

    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
    row["path"] = str(path)
    notes: list[str] = []  # the scan's warnings, for its row as well as the terminal

    def note(text: str) -> None:
        notes.append(text)
        if warn is not None:
            warn(f"{path}: {text}")
    outputs = () if maps_dir is None else (Path(maps_dir) / f"{name}_anomaly.nii.gz", Path(maps_dir) / f"{name}_overlay.png")
    try:
        volume = io.read(path)
        mask = None
        if mask_name:
            mask_path = find_mask(path, mask_name)
            # an empty mask leaves nothing to score in (the whole volume would be scored instead)
            mask = require_voxels(io.read(mask_path).as_tensor() > 0.5, mask_path, f"mask '{mask_name}'")
        score, amap = score_volume(model, data, volume, mode, mask=mask, polarity=polarity, warn=note)
        flagged = flag(score, threshold)
        row.update(score=f"{score:.6g}", flagged="" if flagged is None else str(flagged).lower())
        if outputs:
            from medgen.viz import save_overlay

            io.write(outputs[0], amap, reference=volume)
            save_overlay(outputs[1], volume, amap, threshold=threshold,
                         title=f"{printable(name)}: score {score:.4g}" + (" (flagged)" if flagged else ""))
            row.update(map=str(outputs[0]), overlay=str(outputs[1]))
    except Exception as e:  # noqa: BLE001 - one bad scan must not stop the others
        for leftover in outputs:  # a row has a score or an error, never both
            leftover.unlink(missing_ok=True)
        row.update(score="", flagged="", map="", overlay="")
        row["error"] = str(e) if isinstance(e, MedgenError) else f"{path}: could not be scored ({short(e)})"
        return row
    row["warning"] = "; ".join(notes)
    return row


def score_paths(
    model,
    data,
    paths: Sequence,
    out_csv=None,
    maps_dir=None,
    mode: str = "encoder",
    threshold: float | None = None,
    progress: bool = True,
    mask_name: str | None = None,
    warn: Callable[[str], None] | None = None,
    polarity: str | None = None,
) -> list[dict[str, Any]]:
    """Score each scan; one result row per path (``CSV_COLUMNS``), errors kept per scan.

    A scan that cannot be read or scored gets a row whose ``error`` says why; the others are
    still scored. With ``maps_dir``, writes ``<name>_anomaly.nii.gz`` (in the scan's own
    geometry) and ``<name>_overlay.png`` per scan. ``threshold=None`` uses the model's calibrated
    threshold for `mode` and ``polarity`` (default the model's). ``mask_name`` (e.g. ``"brain_mask"``): score inside the mask found
    beside each scan (``<scan folder>/<mask_name>.nii.gz`` etc.; a scan without one is an error
    row); default: the scan's foreground. The CSV appears only when every scan has its row
    (:func:`medgen.io.atomic.atomic_output`).
    """
    from tqdm.auto import tqdm

    from medgen.io.atomic import atomic_output
    from medgen.models.anogan.scoring import MODES, threshold_key

    if mode not in MODES:
        raise ValueError(f"mode {mode!r} not one of {MODES}")
    if threshold is None:
        threshold = model.thresholds.get(threshold_key(mode, polarity or getattr(model, "polarity", "both")))
    names = output_names(paths)
    if warn is not None and progress:  # a warning line of its own, not glued to the bar's line
        said = warn

        def warn(line: str) -> None:
            with tqdm.external_write_mode(file=sys.stderr):
                said(line)
    if maps_dir is not None:
        Path(maps_dir).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as files:
        writer = None
        if out_csv is not None:
            handle = files.enter_context(open(files.enter_context(atomic_output(out_csv)), "w", newline="",
                                              encoding="utf-8"))
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
        for path, name in tqdm(list(zip(paths, names)), desc=f"scoring ({mode})", unit="scan", disable=not progress):
            t0 = time.perf_counter()
            row = _score_one(model, data, path, name, maps_dir, mode, threshold, mask_name, warn, polarity)
            row["seconds"] = f"{time.perf_counter() - t0:.3f}"
            rows.append(row)
            if writer is not None:
                writer.writerow(row)
    return rows
