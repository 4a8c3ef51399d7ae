"""Apply a trained model to files, and evaluate it on a folder.

* :func:`infer_path` — one volume (file or DICOM folder) -> the model's output in the input's
  units and geometry: ``medgen.io.read -> data.preprocess -> model.infer -> data.postprocess``;
* :func:`infer_to_folder` — the same for a file, a DICOM folder or a folder of volumes, writing
  ``OUT/<name>_<task>.nii.gz`` over the input's original on-disk geometry (``medgen infer``), and on
  request a DICOM series ``OUT/<name>_<task>_dicom/`` beside a DICOM input;
* :func:`infer_table` — a table model on a table: ``OUT/<output>.tsv`` per output (``medgen infer``);
* :func:`evaluate_folder` — the validation metrics on every subject of a folder laid out like
  the training data (``medgen evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medgen.errors import InputError


def output_name(path: str | Path, task: str | None = None, direction: str | None = None) -> str:
    """``scan.nii.gz`` / ``scan.mha`` / DICOM folder ``scan/`` -> ``scan_<task>.nii.gz`` (without
    a task: ``scan.nii.gz``); a two-way model's direction joins it (``mr_cyclegan_AtoB.nii.gz``,
    ``ct_cyclegan_BtoA.nii.gz``), so the two ways never write one file. The task in the name says
    what the file is, and keeps an output written into the input's folder from landing on the input."""
    from medgen.data.layouts import entry_name

    name = entry_name(Path(path))
    suffix = "_".join(p for p in (task, direction) if p)
    return f"{name}_{suffix}.nii.gz" if suffix else f"{name}.nii.gz"


def model_direction(model) -> str | None:
    """The direction of a two-way model (``type(model).directions``), else None."""
    return getattr(model, "direction", None) if getattr(type(model), "directions", ()) else None


def planned_outputs(inputs: list[Path], output_dir: str | Path, task: str | None, direction: str | None = None,
                    dicom: bool = False) -> list[tuple[Path, str, Path | None]]:
    """``(input, output file, DICOM output folder or None)`` per input, in ``output_dir``."""
    out_dir = Path(output_dir)
    plans = []
    for path in inputs:
        target = out_dir / output_name(path, task or None, direction)
        plans.append((path, target, dicom_folder(target) if dicom else None))
    return plans


def dicom_folder(target: Path) -> Path:
    """Where ``--dicom`` writes the series of the output file ``target``: ``<name>_<task>_dicom/``."""
    return target.with_name(f"{target.name[: -len('.nii.gz')]}_dicom")


def refuse_existing(targets, overwrite: bool) -> None:
    """An output that exists already is refused (one line naming it) unless ``overwrite``:
    ``medgen infer`` replaced earlier results without a word."""
    if overwrite:
        return
    for target in targets:
        if target is not None and (Path(target).exists() or Path(target).is_symlink()):
            raise InputError(target, "exists already (an earlier output?); give --overwrite to replace it, "
                                     "or choose another --output folder")


def list_inputs(path: str | Path, prefer: tuple[str, ...] = ()) -> list[Path]:
    """A volume file or DICOM folder as one input; any other folder: the volumes inside it.
    prefer: names of the model's input (e.g. ``low_dose``), for the scan a refusal of a training
    layout suggests instead."""
    from medgen.io import is_volume_path

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if is_volume_path(path):
        if path.is_dir() and not _has_own_dicom_files(path):
            nested = _nested_scan(path, prefer)  # DICOM somewhere below, and other scans too: a data layout
            if nested is not None:
                raise InputError(path, _layout_message(path, nested))
        return [path]
    if path.is_dir():
        inputs = sorted(p for p in path.iterdir() if not p.name.startswith(".") and is_volume_path(p))
        if inputs:
            return inputs
        raise InputError(path, _layout_message(path, _nested_scan(path, prefer)))
    raise InputError(path, "not a readable volume (NIfTI, NRRD, MHA/MHD or DICOM)")


EXPECTS = "infer takes a scan file, a DICOM series folder or a folder of scan files"


def _has_own_dicom_files(folder: Path) -> bool:
    from medgen.io.dicom import is_dicom_file

    return any(p.is_file() and is_dicom_file(p) for p in folder.iterdir() if not p.name.startswith("."))


# names of a layout's files that are no model's input (masks, labels, the paired target)
NOT_AN_INPUT = ("mask", "label", "seg", "full_dose", "target")


def model_input_names(model_class) -> tuple[str, ...]:
    """The file name a task's data module reads its input from by default (``low_dose``, ``t1``)."""
    import inspect

    params = inspect.signature(model_class.data_module.__init__).parameters
    return tuple(p.default for name, p in params.items() if name in ("source_key", "key") and isinstance(p.default, str))


def _nested_scan(folder: Path, prefer: tuple[str, ...] = (), depth: int = 4, budget: int = 5000) -> Path | None:
    """A NIfTI/NRRD/MHA file below ``folder`` (not in it), breadth first, a few levels: of the
    first subject folder that holds any, the one named as in ``prefer``, else one not named
    like a mask, label or target, else the first."""
    from medgen.data.layouts import VOLUME_SUFFIXES

    def stem(p: Path) -> str:
        return p.name.lower().split(".", 1)[0]

    wanted = {n.lower() for n in prefer}
    level = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    for _ in range(depth):
        below = []
        for sub in level:
            scans = []
            for p in sorted(sub.iterdir()):
                budget -= 1
                if budget < 0:
                    return scans[0] if scans else None
                if p.name.startswith("."):
                    continue
                if p.is_dir():
                    below.append(p)
                elif p.name.lower().endswith(VOLUME_SUFFIXES):
                    scans.append(p)
            if scans:
                named = [p for p in scans if stem(p) in wanted]
                inputs = [p for p in scans if not any(word in stem(p) for word in NOT_AN_INPUT)]
                return (named or inputs or scans)[0]
        level = below
    return None


def _layout_message(folder: Path, nested: Path | None) -> str:
    """One line: what infer expects, what the folder holds, and a scan to give instead."""
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    dirs = [p.name + "/" for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file()]
    found = []
    if dirs:
        found.append(f"{len(dirs)} folder{'s' if len(dirs) > 1 else ''} ({', '.join(dirs[:3])}{', ...' if len(dirs) > 3 else ''})")
    if files:
        found.append(f"{len(files)} other file{'s' if len(files) > 1 else ''}")
    held = " and ".join(found) if found else "nothing"
    if nested is not None:
        return (f"{EXPECTS}; this folder holds {held} with scans inside (a training layout?): "
                f"give one scan, e.g. --input {nested}")
    return f"{EXPECTS}; this folder holds {held} and no scan (NIfTI, NRRD, MHA/MHD or DICOM) in it or below"


def infer_path(model, data, path_or_volume) -> torch.Tensor:
    """The model's output for one input volume, as a MetaTensor in the input's units and geometry
    (a label map for ``model.output_kind == "label"``: nearest, int16).

    `path_or_volume`: a path for :func:`medgen.io.read`, or a volume it returned. ``model.infer``
    runs under ``torch.no_grad()`` (a model needing gradients inside enables them itself).
    """
    from medgen.io import read

    volume = read(path_or_volume) if isinstance(path_or_volume, (str, Path)) else path_or_volume
    x, state = data.preprocess(volume, **model.input_options())
    device = model.device
    model.eval()
    with torch.no_grad():
        out = model.infer(torch.as_tensor(x)[None].to(device))
    out = out[0].detach().float().cpu()
    kind = getattr(model, "output_kind", "image")
    if kind == "label":  # class indices: nearest onto the input's grid, integers, no intensity mapping
        labels = data.postprocess(out, state, intensity=False, mode="nearest")
        return labels.round().to(torch.int16)
    if kind != "image":
        raise ValueError(f"{type(model).__name__}.output_kind {kind!r} is not 'image' or 'label'")
    result = data.postprocess(out, state)
    # What the output is (an MR translated to CT: "ct"), for a DICOM copy of the input's header.
    params = state.get("output_params") if isinstance(state, dict) else None
    result.meta["medgen_modality"] = params.get("modality") if isinstance(params, dict) else None
    return result


def infer_table(model, data, input_path: str | Path, output_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """A table model (``output_kind == "table"``) on a table file or its folder: every output
    table of ``model.infer`` as ``OUT/<name>.tsv``, a row per input sample with its id. Outputs
    with the input's columns (``table_outputs[name] == "input"``) go back to the input's units
    through ``data.postprocess``; feature tables get columns ``z1, z2, ...``. Every table is
    computed before the first is written, and each is written atomically; a table that exists
    already is refused unless ``overwrite``."""
    from medgen.data.expression_io import write_table

    x, state = data.preprocess(input_path)  # bad input fails here, before anything is written
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output exists and is not a folder")
    refuse_existing([out_dir / f"{name}.tsv" for name in getattr(model, "table_outputs", {})], overwrite)
    model.eval()
    with torch.no_grad():
        outputs = model.infer(x.to(model.device))
    tables = {}
    for name, values in outputs.items():
        kind = model.table_outputs.get(name)
        if kind == "input":
            tables[name] = data.postprocess(values, state)
        elif kind == "features":
            values = values.detach().float().cpu().numpy()
            tables[name] = (state["sample_ids"], [f"z{j + 1}" for j in range(values.shape[1])], values)
        else:
            raise ValueError(f"{type(model).__name__}.table_outputs has no kind for output {name!r}")
    given = Path(input_path).resolve()
    for name in tables:
        if (out_dir / f"{name}.tsv").resolve() == given:
            raise InputError(out_dir / f"{name}.tsv", "is the input of this run; choose another --output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_table(out_dir / f"{name}.tsv", *table) for name, table in tables.items()]


def check_dicom_inputs(inputs: list[Path]) -> None:
    """A DICOM output mirrors a DICOM series folder: any other input is an error."""
    for path in inputs:
        if not path.is_dir():
            raise InputError(path, "--dicom writes a series beside a DICOM series folder; this input is a file")


def infer_to_folder(model, data, input_path: str | Path, output_dir: str | Path, progress: bool = True,
                    dicom_description: str | None = None, overwrite: bool = False) -> list[Path]:
    """Run :func:`infer_path` on every input under `input_path`; returns the written files.

    ``dicom_description``: also write each output as a DICOM series ``OUT/<name>_<task>_dicom/``
    mirroring its DICOM input (:func:`medgen.io.dicom_write.write_dicom_like`), so described; a
    label map as a label series (the class indices themselves, slope 1). A two-way model's
    outputs carry its direction in their names. Outputs that exist already are refused before
    anything is written, unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    from medgen.io import read, write

    inputs = list_inputs(input_path)
    if dicom_description is not None:
        check_dicom_inputs(inputs)
    plans = planned_outputs(inputs, output_dir, getattr(model, "task", None), model_direction(model),
                            dicom=dicom_description is not None)
    names = [target.name for _, target, _ in plans]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(input_path, f"several inputs would write {sorted(dupes)[0]}; rename them")
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output exists and is not a folder")
    own = {p.resolve() for p in inputs}
    for _, output, _ in plans:
        for target in (output, dicom_folder(output)):
            if target.resolve() in own or any(q.is_relative_to(target.resolve()) for q in own):
                raise InputError(target, "is an input of this run; choose another --output folder")
    refuse_existing([t for _, target, series in plans for t in (target, series)], overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    model.show_progress = progress  # a bar over one volume's windows: big scans take minutes on a CPU
    for path, target, series in tqdm(plans, desc="infer", disable=not progress or len(inputs) < 2):
        volume = read(path)
        result = infer_path(model, data, volume)
        written.append(write(target, result, reference=volume))
        if series is not None:
            from medgen.io.dicom_write import write_dicom_like

            written.append(write_dicom_like(series, result, volume, path, dicom_description,
                                            modality=result.meta.get("medgen_modality"),
                                            labels=getattr(model, "output_kind", "image") == "label"))
    return written


def evaluation_data(config, data_dir: str | Path, state: dict | None = None):
    """The task's data module on `data_dir` with the run's data settings and fitted ``state``
    (the checkpoint's ``data``), set up, and a dataset of whole volumes of every subject
    (``all_dataset()``)."""
    from medgen.models.registry import get_model_class

    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise InputError(data_dir, "no such folder")
    cls = get_model_class(config.task).data_module
    data = cls(**{**config.data, "root": str(data_dir)})
    if state:
        data.load_state_dict(state)
    data.setup()
    return data, data.all_dataset()


def evaluate_folder(model, config, data_dir: str | Path, fid_slices: int | None = None, progress: bool = True,
                    state: dict | None = None) -> dict[str, Any]:
    """Metrics of `model` on every subject under `data_dir`: ``{"n_volumes", "metrics"
    (means, as ``val/*`` in training, without the prefix), "subjects" ({subject: metrics})}``
    (a table model: ``{"n_samples", "metrics"}``, over all the table's samples at once).
    ``state``: the run's fitted data state (the checkpoint's ``data``)."""
    from monai.data import DataLoader

    from medgen.engine.validation import evaluate_volumes

    _, dataset = evaluation_data(config, data_dir, state)
    if len(dataset) == 0:
        raise InputError(data_dir, "no subject to evaluate")
    per_subject: dict[str, dict[str, float]] = {}
    metrics = evaluate_volumes(  # full precision: reported numbers, not a training signal
        model,
        DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0),
        device=model.device,
        fid_slices=config.trainer.fid_slices if fid_slices is None else fid_slices,
        per_volume=lambda subject, m: per_subject.__setitem__(subject, m),
        progress=progress,
        desc="evaluate",
    )
    result = {"n_volumes": len(dataset), "metrics": metrics, "subjects": per_subject}
    if getattr(model, "output_kind", "image") == "table":  # one item holds every sample
        result = {"n_samples": int(dataset[0]["x"].shape[0]), "metrics": metrics}
    return result
