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


def output_name(path: str | Path, task: str | None = None) -> str:
    """``scan.nii.gz`` / ``scan.mha`` / DICOM folder ``scan/`` -> ``scan_<task>.nii.gz`` (without
    a task: ``scan.nii.gz``). The task in the name says what the file is, and keeps an output
    written into the input's folder from landing on the input."""
    from medgen.data.layouts import entry_name

    name = entry_name(Path(path))
    return f"{name}_{task}.nii.gz" if task else f"{name}.nii.gz"


def list_inputs(path: str | Path) -> list[Path]:
    """A volume file or DICOM folder as one input; any other folder: the volumes inside it."""
    from medgen.io import is_volume_path

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if is_volume_path(path):
        return [path]
    if path.is_dir():
        inputs = sorted(p for p in path.iterdir() if not p.name.startswith(".") and is_volume_path(p))
        if inputs:
            return inputs
        raise InputError(path, "folder holds no readable volume (NIfTI, NRRD, MHA/MHD or DICOM)")
    raise InputError(path, "not a readable volume (NIfTI, NRRD, MHA/MHD or DICOM)")


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


def infer_table(model, data, input_path: str | Path, output_dir: str | Path) -> list[Path]:
    """A table model (``output_kind == "table"``) on a table file or its folder: every output
    table of ``model.infer`` as ``OUT/<name>.tsv``, a row per input sample with its id. Outputs
    with the input's columns (``table_outputs[name] == "input"``) go back to the input's units
    through ``data.postprocess``; feature tables get columns ``z1, z2, ...``. Every table is
    computed before the first is written, and each is written atomically."""
    from medgen.data.expression_io import write_table

    x, state = data.preprocess(input_path)  # bad input fails here, before anything is written
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output exists and is not a folder")
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
                    dicom_description: str | None = None) -> list[Path]:
    """Run :func:`infer_path` on every input under `input_path`; returns the written files.

    ``dicom_description``: also write each output as a DICOM series ``OUT/<name>_<task>_dicom/``
    mirroring its DICOM input (:func:`medgen.io.dicom_write.write_dicom_like`), so described; a
    label map as a label series (the class indices themselves, slope 1).
    """
    from tqdm.auto import tqdm

    from medgen.io import read, write

    inputs = list_inputs(input_path)
    if dicom_description is not None:
        check_dicom_inputs(inputs)
    names = [output_name(p, getattr(model, "task", None) or None) for p in inputs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(input_path, f"several inputs would write {sorted(dupes)[0]}; rename them")
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output exists and is not a folder")
    own = {p.resolve() for p in inputs}
    for name in names:
        for target in (out_dir / name, out_dir / f"{name[: -len('.nii.gz')]}_dicom"):
            if target.resolve() in own or any(q.is_relative_to(target.resolve()) for q in own):
                raise InputError(target, "is an input of this run; choose another --output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    model.show_progress = progress  # a bar over one volume's windows: big scans take minutes on a CPU
    for path, name in tqdm(list(zip(inputs, names)), desc="infer", disable=not progress or len(inputs) < 2):
        volume = read(path)
        result = infer_path(model, data, volume)
        written.append(write(out_dir / name, result, reference=volume))
        if dicom_description is not None:
            from medgen.io.dicom_write import write_dicom_like

            stem = name[: -len(".nii.gz")]
            written.append(write_dicom_like(out_dir / f"{stem}_dicom", result, volume, path, dicom_description,
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
