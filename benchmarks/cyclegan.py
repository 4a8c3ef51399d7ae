#!/usr/bin/env python
"""Quality benchmark of cyclegan: unpaired MR -> CT (HU) on phantom heads, 3D patches and 2D slices,
against a histogram-matching baseline.

What it does (held-out subjects only, mean ± SE over subjects):

1. **Data** — heads from :mod:`medgen.data.phantoms` (T1 and CT in HU on one grid, tissue labels).
   Training is unpaired: ``train/A`` holds the T1s of one set of subjects, ``train/B`` the CTs of
   *other* subjects. Held-out subjects keep their registered T1/CT pair and labels for scoring.
2. **Model** — trained as a user types it, ``medgen train cyclegan --config
   configs/cyclegan-cpu.yaml data.root=DIR trainer.max_minutes=M`` (``medgen.engine.train``, the
   function behind the command). The 2D variant is the same command with
   ``data.patch_size=[S,S] model.spatial_dims=2`` on a folder of the same subjects' axial slices
   (one file per slice). Then ``medgen infer``'s function (``infer_path``: whole volume, sliding
   window, output in HU on the input's grid) on each held-out T1 (2D: slice by slice).
3. **Baseline** — histogram matching inside the head: the quantiles of the training T1s (each in
   its 0.5-99.5th percentile window, as the model sees it) mapped onto the quantiles of the
   training CTs' HU inside the head; -1000 HU outside the T1's head mask.
4. **Scores** — MAE in HU inside the head (the phantom's non-air tissue); median absolute HU
   error per tissue: bone (skull), soft tissue (scalp, CSF, grey and white matter), air (a
   3-voxel band around the head); 2.5D FID (8 slices per axis, InceptionV3) of the translations
   against the real held-out CTs, beside FID of the T1s themselves against those CTs.

    python benchmarks/cyclegan.py --quick                   # ~3 min smoke run, writes nothing
    python benchmarks/cyclegan.py --minutes 12 --dims 3,2
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from common import logger, machine, mean_se, save_nifti, train_run, write_section

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cyclegan-cpu.yaml"
TISSUE_GROUPS = {"bone": ("skull",), "soft tissue": ("scalp", "csf", "gm", "wm")}
AIR_BAND = 3  # voxels around the head scored as air
QUANTILES = 1001


log = logger("cyclegan bench")


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    save_nifti(path, array, affine)


# --- data ------------------------------------------------------------------------------------
def make_subjects(n: int, size: int, seed: int) -> list[dict]:
    from medgen.data.anatomy import TISSUES
    from medgen.data.phantoms import make_subject, subject_anatomy, subject_name

    out = []
    for i in range(n):
        anatomy = subject_anatomy(seed, i, size)
        s = make_subject(seed, i, size, anatomy=anatomy)
        labels = anatomy["labels"]
        out.append({"name": subject_name(i), "t1": s["t1"], "ct": s["ct"], "affine": s["affine"],
                    "labels": labels, "head": labels != TISSUES.index("air")})
    return out


def slice_affine(affine: np.ndarray, z: int) -> np.ndarray:
    a = affine.copy()
    a[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(z)]) + affine[:3, 3]
    return a


def head_slices(subject: dict) -> list[int]:
    return [z for z in range(subject["head"].shape[2]) if subject["head"][:, :, z].mean() > 0.05]


def write_training(root: Path, a_subjects: list[dict], b_subjects: list[dict], dims: int) -> Path:
    """``root/A`` T1s of ``a_subjects``, ``root/B`` CTs of ``b_subjects`` (2D: one file per axial
    slice through the head)."""
    for side, subjects, key in (("A", a_subjects, "t1"), ("B", b_subjects, "ct")):
        for s in subjects:
            if dims == 3:
                save(root / side / f"{s['name']}.nii.gz", s[key], s["affine"])
            else:
                for z in head_slices(s):
                    save(root / side / f"{s['name']}_z{z:03d}.nii.gz", s[key][:, :, z:z + 1], slice_affine(s["affine"], z))
    return root


# --- the histogram-matching baseline ------------------------------------------------------------
def mr_model_space(t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A T1 in [-1, 1] by its own 0.5-99.5th percentile window (the model's MR scheme), and the
    foreground mask that window was taken in."""
    from medgen.transforms.intensity import apply_intensity, mr_params
    from medgen.transforms.masks import foreground_mask

    fg = foreground_mask(t1)
    return apply_intensity(t1, mr_params(t1, fg)), fg


def fit_histogram_match(a_subjects: list[dict], b_subjects: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of the training T1s inside their head masks, and of the training CTs inside theirs."""
    from medgen.transforms.masks import foreground_mask

    q = np.linspace(0, 100, QUANTILES)
    mr = np.concatenate([x[fg] for x, fg in (mr_model_space(s["t1"]) for s in a_subjects)])
    ct = np.concatenate([s["ct"][foreground_mask(s["ct"])] for s in b_subjects])
    return np.percentile(mr, q), np.percentile(ct, q)


def histogram_match(t1: np.ndarray, fit: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    x, fg = mr_model_space(t1)
    mr_q, ct_q = fit
    out = np.full(t1.shape, -1000.0, np.float32)
    out[fg] = np.interp(x[fg], mr_q, ct_q)
    return out


# --- scores -----------------------------------------------------------------------------------
def scores(pred_hu: np.ndarray, s: dict) -> dict[str, float]:
    from scipy import ndimage

    from medgen.data.anatomy import TISSUES

    err = np.abs(pred_hu - s["ct"])
    out = {"mae_hu": float(err[s["head"]].mean())}
    for group, tissues in TISSUE_GROUPS.items():
        mask = np.isin(s["labels"], [TISSUES.index(t) for t in tissues])
        out[f"median_{group}"] = float(np.median(err[mask]))
    band = ndimage.binary_dilation(s["head"], iterations=AIR_BAND) & ~s["head"]
    out["median_air"] = float(np.median(err[band]))
    return out


def fid_against_ct(volumes: list[np.ndarray], cts: list[np.ndarray], mr: bool) -> float:
    """2.5D FID in model space: CTs through the CT window; T1s (``mr``) through their own window."""
    import torch

    from medgen.metrics import FID
    from medgen.transforms.intensity import apply_intensity, ct_params

    fid = FID(n_slices=8, device="cpu")
    for v, ct in zip(volumes, cts):
        fake = mr_model_space(v)[0] if mr else apply_intensity(v, ct_params())
        fid.update(torch.from_numpy(np.asarray(fake, np.float32))[None, None],
                   torch.from_numpy(apply_intensity(ct, ct_params()))[None, None])
    return float(fid.compute())


# --- models ----------------------------------------------------------------------------------
def train_variant(name: str, root: Path, work: Path, minutes: float, extra: list[str]) -> dict:
    """``medgen train cyclegan --config configs/cyclegan-cpu.yaml data.root=ROOT trainer.max_minutes=M [extra]``."""
    info = {**train_run("cyclegan", root, work, name, minutes, extra), "overrides": extra}
    log(f"{name}: trained {info['wall_min']:.1f} min, run {info['run_id']}; {info['time']}")
    return info


def translate(run_id: str, work: Path, s: dict, dims: int, tmp: Path) -> np.ndarray:
    """``medgen infer cyclegan --run RUN --input T1`` on a held-out subject (2D: each axial slice),
    as an array in HU on the T1's grid."""
    from medgen.engine import load_task
    from medgen.inference import infer_path

    model, data, _, _ = load_task(run_id, tracking_uri=f"sqlite:///{work / 'mlflow.db'}", device="cpu")
    if dims == 3:
        path = tmp / f"{s['name']}_t1.nii.gz"
        save(path, s["t1"], s["affine"])
        return infer_path(model, data, path).numpy().reshape(s["t1"].shape)
    out = np.empty(s["t1"].shape, np.float32)
    for z in range(s["t1"].shape[2]):
        path = tmp / f"{s['name']}_z{z:03d}.nii.gz"
        save(path, s["t1"][:, :, z:z + 1], slice_affine(s["affine"], z))
        out[:, :, z] = infer_path(model, data, path).numpy().reshape(s["t1"].shape[:2])
    return out


def real_data(work: Path, minutes: float) -> str:
    """The MNI152 T1 as A and the two real chest CTs of ../shared/data as B, through the product
    path (``data.spacing=[2,2,2]``: a head and chests share no natural grid; no validation split,
    three volumes are all there is), then the T1 translated; the median HU of the synthetic CT per
    MNI tissue. No truth exists (no CT of the template): this shows real HU data (int16 NRRD,
    5 mm slices, scanner padding) runs end to end, and what the chests teach a head."""
    import os

    import nibabel as nib
    from scipy import ndimage

    from medgen.engine import load_task
    from medgen.inference import infer_path
    from medgen.transforms.masks import foreground_mask

    shared = REPO.parent / "shared" / "data"
    t1_path = shared / "mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    root = work / "real"
    for side in ("A", "B"):
        (root / side).mkdir(parents=True, exist_ok=True)
    os.symlink(t1_path, root / "A" / "mni152_t1.nii.gz")
    for k in (1, 2):
        os.symlink(shared / "chest_ct" / f"lung{k}_image.nrrd", root / "B" / f"lung{k}.nrrd")
    info = train_variant("CycleGAN-3D-real", root, work, minutes, ["data.spacing=[2,2,2]", "data.val_fraction=0"])
    model, data, _, _ = load_task(info["run_id"], tracking_uri=f"sqlite:///{work / 'mlflow.db'}", device="cpu")
    hu = infer_path(model, data, t1_path).numpy().reshape(nib.load(t1_path).shape)
    t1 = np.asarray(nib.load(t1_path).dataobj, np.float32)
    gm = np.asarray(nib.load(shared / "mni152" / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj) / 255.0
    wm = np.asarray(nib.load(shared / "mni152" / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj) / 255.0
    head = foreground_mask(t1)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(gm + wm > 0.5, iterations=3))
    outside = head & ~ndimage.binary_dilation(brain, iterations=3)  # scalp and skull
    regions = {"grey matter (p > 0.5)": gm > 0.5, "white matter (p > 0.5)": wm > 0.5,
               "scalp and skull (head outside the brain + 3 mm)": outside,
               "air (outside the head)": ~ndimage.binary_dilation(head, iterations=3)}
    lines = ["", "### Real data: MNI152 T1 (A) and two real chest CTs (B)", "",
             f"`medgen train cyclegan --config configs/cyclegan-cpu.yaml data.root=DIR trainer.max_minutes={minutes:g} "
             f"data.spacing=[2,2,2] data.val_fraction=0` ({info['steps']} steps, {info['wall_min']:.1f} min), then "
             f"`medgen infer` on the 1 mm T1. No CT of the template exists: the medians show real HU data (int16 "
             f"NRRD, 0.6 x 0.6 x 5 mm, -1024 padding) runs end to end, and what chests teach about a head.", "",
             "| MNI region | voxels | median synthetic HU | 5th-95th percentile |", "|---|---|---|---|"]
    for name, mask in regions.items():
        v = hu[mask]
        lines.append(f"| {name} | {int(mask.sum())} | {np.median(v):.0f} | {np.percentile(v, 5):.0f} .. "
                     f"{np.percentile(v, 95):.0f} |")
    log("real data: " + "; ".join(f"{n} {np.median(hu[m]):.0f} HU" for n, m in regions.items()))
    return "\n".join(lines)


def summarise(per: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    return {k: mean_se([p[k] for p in per]) for k in per[0]}


def fmt(ms: tuple[float, float], digits: int = 1) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def section(rows: dict, baseline: dict, fids: dict, infos: dict, args, started: str, n_train: int, n_test: int) -> str:
    lines = [
        "## cyclegan: unpaired MR -> CT in HU (phantom heads)", "",
        f"Run {started} by `python benchmarks/cyclegan.py {' '.join(args.argv)}` on {machine(args.threads)}.",
        f"Training unpaired: T1s of {n_train} subjects (`A/`) and CTs of {n_train} *other* subjects (`B/`), "
        f"{args.size}^3 phantoms ({220 / args.size:.2f} mm); every variant `medgen train cyclegan --config "
        f"configs/cyclegan-cpu.yaml data.root=DIR trainer.max_minutes={args.minutes:g}` (2D: plus the overrides "
        f"shown, on the same subjects' axial slices), then `medgen infer` on {n_test} held-out subjects (their "
        f"registered CT is the truth). Mean ± SE over held-out subjects; errors in HU (MAE inside the head; "
        f"medians of |error| per tissue, air = a {AIR_BAND}-voxel band around the head). FID: 2.5D, 8 slices "
        f"per axis, against the real held-out CTs.", "",
        "| method | MAE in head (HU) | median bone | median soft tissue | median air | FID vs CT | train steps / wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per in rows.items():
        info = infos.get(name, {})
        steps = f"{info['steps']} steps / {info['wall_min']:.1f} min" if info.get("steps") else "-"
        lines.append(f"| {name} | {fmt(per['mae_hu'])} | {fmt(per['median_bone'])} | {fmt(per['median_soft tissue'])} "
                     f"| {fmt(per['median_air'])} | {fids[name]:.1f} | {steps} |")
    lines.append(f"| histogram matching (fit on the training T1s/CTs) | {fmt(baseline['mae_hu'])} | "
                 f"{fmt(baseline['median_bone'])} | {fmt(baseline['median_soft tissue'])} | {fmt(baseline['median_air'])} "
                 f"| {fids['histogram matching']:.1f} | - |")
    lines.append(f"| the T1 itself (FID only) | - | - | - | - | {fids['T1 (no translation)']:.1f} | - |")
    lines.append("")
    best = min(rows, key=lambda k: rows[k]["mae_hu"][0])
    gain = 1 - rows[best]["mae_hu"][0] / baseline["mae_hu"][0]
    tissue_ok = all(rows[best][f"median_{t}"][0] <= 150 for t in ("bone", "soft tissue", "air"))
    lines.append(f"Quality bar (issue 21), {best}: MAE {100 * gain:.0f} % below histogram matching (bar: >= 30 %) "
                 f"{'met' if gain >= 0.3 else 'missed'}; FID {fids[best]:.1f} vs the T1's {fids['T1 (no translation)']:.1f} "
                 f"{'met' if fids[best] < fids['T1 (no translation)'] else 'missed'}; every tissue median within 150 HU "
                 f"{'met' if tissue_ok else 'missed'}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=12.0, help="training minutes per variant")
    p.add_argument("--dims", default="slices", help="variants, comma-separated: slices (the shipped CPU config), "
                                                    "3 (32^3 patches), 2 (2D slice files)")
    p.add_argument("--train-subjects", type=int, default=6, help="per side (A and B are different subjects)")
    p.add_argument("--heldout", type=int, default=5)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--real-minutes", type=float, default=0.0,
                   help="also train on the MNI T1 and the real chest CTs of ../shared/data (0: skip)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/medgen-cyclegan-bench")
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets; writes no RESULTS.md")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.minutes, args.train_subjects, args.heldout, args.size = 0.5, 3, 2, 32
    import shutil

    import torch

    torch.set_num_threads(args.threads)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    k = args.train_subjects
    subjects = make_subjects(2 * k + args.heldout, args.size, args.seed)
    a_subjects, b_subjects, test = subjects[:k], subjects[k:2 * k], subjects[2 * k:]
    log(f"phantoms: T1s of {k} subjects, CTs of {k} others, {len(test)} held-out pairs, {args.size}^3")
    if args.dims.strip() in ("", "none"):
        subjects = test = []
    fit = fit_histogram_match(a_subjects, b_subjects) if test else None
    baseline, fids, cts = {}, {}, [s["ct"] for s in test]
    if test:
        baseline_pred = [histogram_match(s["t1"], fit) for s in test]
        baseline = summarise([scores(p_, s) for p_, s in zip(baseline_pred, test)])
        fids = {"histogram matching": fid_against_ct(baseline_pred, cts, mr=False),
                "T1 (no translation)": fid_against_ct([s["t1"] for s in test], cts, mr=True)}
        log(f"histogram matching: MAE {fmt(baseline['mae_hu'])} HU; FID {fids['histogram matching']:.1f}, "
            f"T1 {fids['T1 (no translation)']:.1f}")
    rows, infos, per_subject = {}, {}, {}
    tmp = work / "infer"
    tmp.mkdir(parents=True, exist_ok=True)
    # variants: "slices" = the shipped CPU config as it is (2D networks on the slices of the 3D
    # volumes); "3" = 3D patches of 32^3; "2" = a folder of 2D single-slice files
    variants = {"slices": ("CycleGAN slices (shipped)", 3, []),
                "3": ("CycleGAN 3D", 3, ["data.patch_size=[32,32,32]", "model.spatial_dims=3"]),
                "2": ("CycleGAN 2D", 2, [f"data.patch_size=[{args.size},{args.size}]", "model.spatial_dims=2"])}
    for key in (d.strip() for d in args.dims.split(",") if d.strip() not in ("", "none")):
        name, dims, extra = variants[key]
        root = write_training(work / f"train{dims}d", a_subjects, b_subjects, dims)
        infos[name] = train_variant(name.split(" (")[0].replace(" ", "-"), root, work, args.minutes, extra)
        preds = [translate(infos[name]["run_id"], work, s, dims, tmp) for s in test]
        per = [scores(p_, s) for p_, s in zip(preds, test)]
        per_subject[name] = per
        rows[name] = summarise(per)
        fids[name] = fid_against_ct(preds, cts, mr=False)
        log(f"{name}: MAE {fmt(rows[name]['mae_hu'])} HU, bone {fmt(rows[name]['median_bone'])}, soft "
            f"{fmt(rows[name]['median_soft tissue'])}, air {fmt(rows[name]['median_air'])}; FID {fids[name]:.1f}")
    if args.real_minutes > 0:  # its own section: run it alone with --dims none
        real = f"Run {started} by `python benchmarks/cyclegan.py {' '.join(args.argv)}` on {machine(args.threads)}.\n"
        real += real_data(work, args.real_minutes)
        print(real)
        if not (args.quick or args.no_write):
            write_section("cyclegan-real", real)
    if not rows:
        return 0
    text = section(rows, baseline, fids, infos, args, started, k, len(test))
    print(text)
    (work / "results.json").write_text(json.dumps({"rows": rows, "baseline": baseline, "fids": fids,
                                                   "per_subject": per_subject, "infos": infos}, default=str))
    if not (args.quick or args.no_write):
        write_section("cyclegan", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
