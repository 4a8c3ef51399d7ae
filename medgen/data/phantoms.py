"""Procedural phantoms: the embedded demo data of every medgen task, deterministic for a seed.

Each subject is its own randomly deformed head (:mod:`medgen.data.anatomy`), rendered as MR
T1/T2/FLAIR, CT (HU) and FDG PET at full and 1/4 dose (kBq/ml) (:mod:`medgen.data.render`).
:func:`write_phantoms` writes them in the folder layouts of DESIGN.md section 2::

    OUT/paired/<subject>/{t1,t2,flair,ct,full_dose,low_dose,noise_free,brain_mask}.nii.gz
    OUT/lesions/<subject>/{...same..., lesion}.nii.gz        1-3 lesions per subject
    OUT/unpaired/A/<subject>.nii.gz (T1)   OUT/unpaired/B/<subject>.nii.gz (CT, HU)
    OUT/domain/source/<subject>/{image,label}.nii.gz         T1, scanner profile "source", 1-3 lesions
    OUT/domain/target/<subject>/{image,label}.nii.gz         T1, scanner profile "target", 1-3 lesions
    OUT/expression/{expression.tsv,labels.tsv}               300 samples x 2000 genes
    OUT/dicom/<subject>/t1/                                  first subject's T1 as DICOM (MR)

``noise_free`` is the expected PET image (the PSF-blurred activity, what infinitely many counts
would give): an oracle for benchmarks. ``brain_mask``/``lesion`` are uint8 (fraction > 0.5);
``label`` holds the brain tissue classes of :data:`medgen.data.anatomy.SEG_CLASSES`
(0 background, 1 CSF, 2 grey matter, 3 white matter). The unpaired A/B entries come from the
same heads (CycleGAN ignores the pairing; an evaluation can use it). Domain source and target
subjects are different heads; their ``label`` is the lesion mask (0/1, uint8), or the tissue
classes with ``domain_label="tissue"``; the target is the same kind of T1 from a second scanner
(other contrasts, stronger bias field, more noise, lower resolution: ``MR_PROFILES``). Geometry: isotropic voxels of ``220 / size`` mm, RAS, centred.

Function API for other code (benchmarks, tests): :func:`make_anatomy`, :func:`render_mr`,
:func:`render_ct`, :func:`render_pet`, :func:`render_pet_doses`, :func:`pet_activity`,
:func:`pet_noise_free`, :func:`make_subject`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from medgen.data.anatomy import FOV_MM, SEG_CLASSES, TISSUES, add_lesions, grid_affine, make_anatomy  # noqa: F401
from medgen.data.expression_synth import make_expression, write_expression
from medgen.data.render import (  # noqa: F401
    PET_COUNTS,
    pet_activity,
    pet_noise_free,
    render_ct,
    render_mr,
    render_pet,
    render_pet_doses,
)
from medgen.errors import InputError

LOW_DOSE_FRACTION = 0.25


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _anatomy_seed(seed: int, kind: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, kind, index]).generate_state(1)[0])


def subject_name(index: int) -> str:
    return f"sub-{index + 1:03d}"


def subject_anatomy(seed: int, index: int, size: int = 64, lesions: bool = False, base: dict | None = None) -> dict:
    """The head of subject ``index`` (1-3 lesions when ``lesions``; the same head either way)."""
    if base is None:
        base = make_anatomy(_anatomy_seed(seed, 0, index), size)
    if not lesions:
        return base
    rng = _rng(seed, 3, index)
    return add_lesions(base, rng, int(rng.integers(1, 4)))


def make_subject(seed: int, index: int, size: int = 64, lesions: bool = False,
                 counts: float = PET_COUNTS, anatomy: dict | None = None) -> dict[str, np.ndarray]:
    """All images of one subject (float32 arrays) plus masks and ``affine``.

    Keys: ``t1, t2, flair, ct, full_dose, low_dose, noise_free, brain_mask`` (+ ``lesion`` when
    ``lesions``). The same ``(seed, index)`` gives the same head with and without lesions.
    ``anatomy`` (from :func:`subject_anatomy`) skips rebuilding the head.
    """
    if anatomy is None:
        anatomy = subject_anatomy(seed, index, size, lesions)
    rng = _rng(seed, 1 if lesions else 0, index)
    out = {c: render_mr(anatomy, rng, c) for c in ("t1", "t2", "flair")}
    out["ct"] = render_ct(anatomy, rng)
    out.update(render_pet_doses(anatomy, rng, counts=counts, dose_fraction=LOW_DOSE_FRACTION))
    out["brain_mask"] = (anatomy["brain"] > 0.5).astype(np.uint8)
    if lesions:
        out["lesion"] = (anatomy["lesion"] > 0.5).astype(np.uint8)
    out["affine"] = anatomy["affine"]
    return out


def tissue_label(anatomy) -> np.ndarray:
    """Brain tissue classes (uint8) from an anatomy: 0 background, 1 CSF, 2 GM, 3 WM."""
    lut = np.zeros(len(TISSUES), np.uint8)
    lut[TISSUES.index("csf")] = SEG_CLASSES["csf"]
    lut[TISSUES.index("gm")] = SEG_CLASSES["gm"]
    lut[TISSUES.index("wm")] = SEG_CLASSES["wm"]
    return lut[anatomy["labels"]]


DOMAIN_LABELS = ("lesion", "tissue")


def make_domain_subject(seed: int, index: int, size: int = 64, profile: str = "source",
                        label: str = "lesion") -> dict[str, np.ndarray]:
    """``{"image" (T1 in the scanner ``profile``), "label", "affine"}``.

    ``label="lesion"``: the head carries 1-3 lesions and the label is their mask (uint8 0/1, the
    domain-adaptation task of Kamnitsas et al. 2017); ``"tissue"``: a head without lesions and its
    tissue classes (0 background, 1 CSF, 2 GM, 3 WM).
    """
    if label not in DOMAIN_LABELS:
        raise ValueError(f"label must be one of {DOMAIN_LABELS}, got {label!r}")
    kind = 1 if profile == "source" else 2
    anatomy = make_anatomy(_anatomy_seed(seed, kind, index), size)
    rng = _rng(seed, 10 + kind, index)
    if label == "lesion":
        # its own stream, so the image noise of the tissue variant stays as it was
        lesion_rng = _rng(seed, 20 + kind, index)
        anatomy = add_lesions(anatomy, lesion_rng, int(lesion_rng.integers(1, 4)))
        target = (anatomy["lesion"] > 0.5).astype(np.uint8)
    else:
        target = tissue_label(anatomy)
    return {"image": render_mr(anatomy, rng, "t1", profile), "label": target, "affine": anatomy["affine"]}


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def write_dicom_series(folder: Path, volume: np.ndarray, affine: np.ndarray, index: int, modality: str = "MR",
                       description: str = "T1 phantom", uid_suffix: str = "0") -> None:
    """A 3D volume (RAS voxel order, ``affine`` voxel -> RAS mm, axis-aligned) as one DICOM
    series of axial slices, stored as int16 (values rounded, like a scanner's integer MR pixels).
    Anonymous phantom identity only."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.round(volume), -32768, 32767).astype(np.int16)
    image = sitk.GetImageFromArray(np.ascontiguousarray(pixels.transpose(2, 1, 0)))  # (z, y, x)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    flip = np.diag([-1.0, -1.0, 1.0])  # RAS -> LPS (DICOM patient coordinates)
    direction = flip @ (affine[:3, :3] / spacing)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in flip @ affine[:3, 3]])
    image.SetDirection([float(v) for v in direction.ravel()])

    uid_root = "1.2.826.0.1.3680043.2.1125"  # generic example root, no institution
    study_uid = f"{uid_root}.1.{uid_suffix}.{index + 1}"  # deterministic: same seed, same files
    series_uid = f"{study_uid}.1"
    now_date, now_time = "20000101", "000000"
    tags = {
        "0010|0010": f"PHANTOM^{index + 1:03d}",  # PatientName
        "0010|0020": f"PHANTOM{index + 1:03d}",  # PatientID
        "0008|0060": modality,
        "0008|0020": now_date, "0008|0030": now_time,
        "0008|0021": now_date, "0008|0031": now_time,
        "0020|000d": study_uid,
        "0020|000e": series_uid,
        "0020|0011": "1",
        "0008|103e": description,
        "0018|0050": f"{spacing[2]:.6g}",  # SliceThickness
    }
    orientation = "\\".join(f"{v:.6f}" for v in (direction[:, 0].tolist() + direction[:, 1].tolist()))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0020|0037", orientation)
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")  # SOPInstanceUID
        writer.SetFileName(str(folder / f"slice_{k + 1:04d}.dcm"))
        writer.Execute(sl)


def write_phantoms(out_dir, subjects: int = 8, size: int = 64, seed: int = 0, overwrite: bool = False,
                   counts: float = PET_COUNTS, n_samples: int = 300, n_genes: int = 2000,
                   progress: bool = False, domain_label: str = "lesion") -> dict[str, Path]:
    """Write every demo layout under ``out_dir``; returns ``{layout name: folder}``.

    ``domain_label``: what the domain layout's labels are (:func:`make_domain_subject`).

    The data is written to a sibling temporary folder and renamed into place at the end, so an
    error leaves no half dataset. An existing non-empty ``out_dir`` is an ``InputError`` unless
    ``overwrite``.
    """
    out = Path(out_dir)
    if subjects < 1:
        raise InputError(out, f"--subjects must be >= 1, got {subjects}")
    if size < 16:
        raise InputError(out, f"--size must be >= 16 voxels, got {size}")
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "folder exists and is not empty: choose another folder, or replace it with --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_all(tmp, subjects, size, seed, counts, n_samples, n_genes, progress, domain_label)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: out / name for name in ("paired", "lesions", "unpaired", "domain", "expression", "dicom")}


def _write_all(root: Path, subjects, size, seed, counts, n_samples, n_genes, progress, domain_label="lesion") -> None:
    from tqdm import tqdm

    for sub in ("paired", "lesions", "unpaired/A", "unpaired/B", "domain/source", "domain/target", "expression"):
        (root / sub).mkdir(parents=True)
    for i in tqdm(range(subjects), desc="phantoms", disable=not progress):
        name = subject_name(i)
        base = subject_anatomy(seed, i, size)
        for layout, lesions in (("paired", False), ("lesions", True)):
            anatomy = subject_anatomy(seed, i, size, lesions, base=base)
            data = make_subject(seed, i, size, lesions=lesions, counts=counts, anatomy=anatomy)
            folder = root / layout / name
            folder.mkdir()
            affine = data.pop("affine")
            for key, array in data.items():
                _save_nifti(folder / f"{key}.nii.gz", array, affine)
            if not lesions:
                _save_nifti(root / "unpaired/A" / f"{name}.nii.gz", data["t1"], affine)
                _save_nifti(root / "unpaired/B" / f"{name}.nii.gz", data["ct"], affine)
                if i == 0:
                    write_dicom_series(root / "dicom" / name / "t1", data["t1"], affine, i, uid_suffix=f"{seed}.{size}")
        for profile in ("source", "target"):
            d = make_domain_subject(seed, i, size, profile, domain_label)
            folder = root / "domain" / profile / name
            folder.mkdir()
            _save_nifti(folder / "image.nii.gz", d["image"], d["affine"])
            _save_nifti(folder / "label.nii.gz", d["label"], d["affine"])
    write_expression(root / "expression", make_expression(seed, n_samples, n_genes))
