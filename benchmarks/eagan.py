#!/usr/bin/env python
"""Quality benchmark of eagan: T1 -> T2 and T1 -> FLAIR synthesis, dEa-GAN against gEa-GAN,
pix2pix-3D and a context-free lookup table.

What it does (held-out subjects only, mean ± SE over subjects):

1. **Phantoms** — heads from :mod:`medgen.data.phantoms` (T1, T2, FLAIR on one grid, each with
   its own bias field and noise). Training subjects go to one folder, held-out ones to another.
2. **Models** — each variant trained as a user types it, ``medgen train eagan --config
   configs/eagan-cpu.yaml data.root=DIR data.target_key=T model.variant=V
   trainer.max_minutes=M`` (through ``medgen.engine.train``, the function behind the command;
   validation, FID, checkpoints on the engine's own schedule), then ``best.pt`` scored on the
   held-out folder by ``medgen evaluate``'s function (whole volume, sliding window): PSNR, SSIM,
   NMSE and the edge-map PSNR (Sobel of the synthesis against Sobel of the target), in model
   space (each target by its own 0.5-99.5th percentile window, as in training), inside the head
   and over the whole volume.
3. **Baseline** — a voxel-wise lookup table: T1 value -> mean target value over the training
   subjects (model space, 256 bins). No context: a model that uses context must beat it.
4. **Units** — the dEa model's ``medgen infer`` output on each held-out T1, against the true
   target inside the brain: the ratio of medians (1 when the learned target window is right).
5. **MNI152** (``--mni``) — the real MNI152 2009a T1 as the source, warped per subject (affine
   + smooth deformation, as the pet-cgan benchmark), with a T2-like target simulated from its
   tissue maps (CSF 1 : GM 0.55 : WM 0.35, tissue texture, Rician-like noise), 2 mm grid.

    python benchmarks/eagan.py --quick           # ~3 min smoke run, writes nothing
    python benchmarks/eagan.py --minutes 10 --mni
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
CONFIG = REPO / "configs" / "eagan-cpu.yaml"
VARIANTS = ("pix2pix", "gea", "dea")
LUT_BINS = 256
# T2-like contrast of the MNI simulation (CSF bright, grey above white matter, as T2 shows them).
MNI_T2 = {"csf": 1.0, "gm": 0.55, "wm": 0.35}


log = logger("eagan bench")
save = save_nifti


# --- data ------------------------------------------------------------------------------------
def write_phantoms(root: Path, n: int, size: int, seed: int) -> list[str]:
    from medgen.data.phantoms import make_subject, subject_name

    names = []
    for i in range(n):
        s = make_subject(seed, i, size)
        name = subject_name(i)
        for key in ("t1", "t2", "flair"):
            save(root / name / f"{key}.nii.gz", s[key], s["affine"])
        save(root / name / "brain_mask.nii.gz", s["brain_mask"], s["affine"])
        names.append(name)
    return names


def write_mni(root: Path, n: int, seed: int, grid_mm: int = 2) -> list[str]:
    """MNI152 T1 (warped per subject) and a simulated T2-like target from its warped tissue maps."""
    sys.path.insert(0, str(Path(__file__).parent))
    from pet_cgan import mni_anatomies

    from medgen.data.anatomy import smooth_noise

    names = []
    for name, anatomy, head in mni_anatomies(n, grid_mm, seed, with_t1=True):
        rng = np.random.default_rng([seed, 2, int(name.split("-")[1])])
        t2 = sum(w * anatomy[k] for k, w in MNI_T2.items())
        t2 = t2 * (1.0 + 0.05 * anatomy["texture"]) * np.exp(0.1 * smooth_noise(rng, t2.shape, scale_vox=40.0 / grid_mm))
        noise = 0.02 * float(t2.max())
        t2 = np.sqrt((t2 + rng.normal(0, noise, t2.shape)) ** 2 + rng.normal(0, noise, t2.shape) ** 2)
        save(root / name / "t1.nii.gz", anatomy["t1"], anatomy["affine"])
        save(root / name / "t2.nii.gz", t2, anatomy["affine"])
        save(root / name / "brain_mask.nii.gz", (anatomy["gm"] + anatomy["wm"] > 0.5).astype(np.float32), anatomy["affine"])
        names.append(name)
    return names


def link_subjects(folder: Path, source: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(source / name)
    return folder


# --- the lookup-table baseline ---------------------------------------------------------------
def model_space(config, folder: Path, state: dict) -> list[dict]:
    """Whole volumes of every subject in `folder` in model space, as `medgen evaluate` sees them."""
    from medgen.inference import evaluation_data

    _, dataset = evaluation_data(config, folder, state)
    return [dataset[i] for i in range(len(dataset))]


def fit_lut(items: list[dict]) -> np.ndarray:
    """Mean target per source bin over all voxels of the training subjects; empty bins
    interpolated from their neighbours."""
    sums, counts = np.zeros(LUT_BINS), np.zeros(LUT_BINS)
    for item in items:
        x, y = item["source"].numpy().ravel(), item["target"].numpy().ravel()
        b = np.clip(((x + 1) / 2 * LUT_BINS).astype(int), 0, LUT_BINS - 1)
        sums += np.bincount(b, y, LUT_BINS)
        counts += np.bincount(b, minlength=LUT_BINS)
    filled = counts > 0
    centres = np.arange(LUT_BINS)
    return np.interp(centres, centres[filled], sums[filled] / counts[filled])


def lut_metrics(lut: np.ndarray, items: list[dict]) -> dict[str, list[float]]:
    import torch

    from medgen.engine.validation import _masked_metrics
    from medgen.metrics import image_metrics
    from medgen.networks.sobel import SobelEdges

    sobel = SobelEdges(3)
    out: dict[str, list[float]] = {}
    for item in items:
        x, y, mask = item["source"][None].float(), item["target"][None].float(), item["mask"][None].bool()
        b = np.clip(((x.numpy() + 1) / 2 * LUT_BINS).astype(int), 0, LUT_BINS - 1)
        pred = torch.from_numpy(lut[b]).float()
        for prefix, (p, r) in {"": (pred, y), "edge_": (sobel(pred), sobel(y))}.items():
            m = {**image_metrics(p, r, data_range=2.0),
                 **{f"{k}_mask": v for k, v in _masked_metrics(p, r, 2.0, mask).items()}}
            for k, v in m.items():
                out.setdefault(prefix + k, []).append(float(v))
    return out


# --- models ----------------------------------------------------------------------------------
def train_variant(name: str, root: Path, work: Path, minutes: float, extra: list[str]) -> dict:
    """``medgen train eagan --config configs/eagan-cpu.yaml data.root=ROOT trainer.max_minutes=M [extra]``."""
    info = train_run("eagan", root, work, name, minutes, extra, config=CONFIG)
    log(f"{name}: trained {info['wall_min']:.1f} min, run {info['run_id']}; {info['time']}")
    return info


def evaluate_run(run_id: str, work: Path, heldout: Path) -> tuple[dict, dict[str, list[float]]]:
    """``medgen evaluate``'s per-subject metrics of best.pt on the held-out folder."""
    from medgen.engine import load_task
    from medgen.inference import evaluate_folder

    model, _, config, ckpt = load_task(run_id, tracking_uri=f"sqlite:///{work / 'mlflow.db'}", device="cpu")
    result = evaluate_folder(model, config, heldout, progress=False, state=ckpt.get("data"))
    per: dict[str, list[float]] = {}
    for subject in sorted(result["subjects"]):
        for k, v in result["subjects"][subject].items():
            per.setdefault(k, []).append(float(v))
    return {"config": config, "state": ckpt.get("data") or {}, "fid": result["metrics"].get("fid")}, per


def units_ratio(run_id: str, work: Path, heldout: Path, names: list[str], target: str) -> list[float]:
    """Median of ``medgen infer``'s synthesis over the median of the true target, inside the brain."""
    import nibabel as nib

    from medgen.engine import load_task
    from medgen.inference import infer_path

    model, data, _, _ = load_task(run_id, tracking_uri=f"sqlite:///{work / 'mlflow.db'}", device="cpu")
    ratios = []
    for name in names:
        out = infer_path(model, data, heldout / name / "t1.nii.gz").numpy().reshape(-1)
        truth = np.asarray(nib.load(str(heldout / name / f"{target}.nii.gz")).dataobj, np.float32).reshape(-1)
        brain = np.asarray(nib.load(str(heldout / name / "brain_mask.nii.gz")).dataobj).reshape(-1) > 0.5
        ratios.append(float(np.median(out[brain]) / np.median(truth[brain])))
    return ratios


def experiment(label: str, train_dir: Path, heldout: Path, names: list[str], target: str, minutes: float,
               work: Path) -> dict:
    rows: dict[str, dict] = {}
    info: dict[str, dict] = {}
    first = None
    for variant in VARIANTS:
        name = f"{label}-{target}-{variant}"
        info[variant] = train_variant(name, train_dir, work, minutes,
                                      [f"data.target_key={target}", f"model.variant={variant}"])
        ev, per = evaluate_run(info[variant]["run_id"], work, heldout)
        info[variant]["fid"] = ev["fid"]
        rows[variant] = per
        first = first or ev
        log(f"{name}: PSNR(head) {mean_se(per['psnr_mask'])[0]:.2f} dB, edge PSNR(head) {mean_se(per['edge_psnr_mask'])[0]:.2f}")
    lut = fit_lut(model_space(first["config"], train_dir, first["state"]))
    rows["lut"] = lut_metrics(lut, model_space(first["config"], heldout, first["state"]))
    ratios = units_ratio(info["dea"]["run_id"], work, heldout, names, target)
    return {"label": label, "target": target, "rows": rows, "info": info, "units": ratios, "n_test": len(names)}


# --- report ----------------------------------------------------------------------------------
def paired_diff(rows: dict, a: str, b: str, key: str) -> tuple[float, float]:
    return mean_se(np.asarray(rows[a][key]) - np.asarray(rows[b][key]))


def bars(r: dict) -> list[str]:
    rows = r["rows"]
    out = []
    d, se = paired_diff(rows, "dea", "pix2pix", "psnr_mask")
    out.append(f"dEa PSNR ≥ pix2pix − 0.2 dB: {'PASS' if d >= -0.2 else 'FAIL'} ({d:+.2f} ± {se:.2f} dB)")
    d, se = paired_diff(rows, "dea", "pix2pix", "edge_psnr_mask")
    out.append(f"dEa edge-map PSNR > pix2pix's: {'PASS' if d > 0 else 'FAIL'} ({d:+.2f} ± {se:.2f} dB)")
    for v in VARIANTS:
        d, se = paired_diff(rows, v, "lut", "psnr_mask")
        out.append(f"{v} ≥ lookup table + 2 dB: {'PASS' if d >= 2 else 'FAIL'} ({d:+.2f} ± {se:.2f} dB)")
    return out


def fmt(values, nd=2) -> str:
    m, se = mean_se(values)
    return f"{m:.{nd}f} ± {se:.{nd}f}"


def section(results: list[dict], args, started: str) -> str:
    lines = [
        "## eagan — T1 → T2 / FLAIR synthesis (Yu et al. 2019)", "",
        f"Run {started} by `python benchmarks/eagan.py {' '.join(args.argv)}` on {machine(args.threads)}.", "",
        f"Each variant trained as `medgen train eagan --config configs/eagan-cpu.yaml data.root=DIR "
        f"data.target_key=T model.variant=V trainer.max_minutes={args.minutes:g}` (MNI: {args.mni_minutes:g}), one "
        "thread; best.pt scored by `medgen evaluate`'s function on held-out subjects, in model space (each target by "
        "its own 0.5–99.5th percentile window, as in training); mean ± SE over subjects; 'head' = inside the head "
        "mask, 'vol' = whole volume. Edge PSNR: Sobel map of the synthesis against the target's. The lookup table "
        "maps each T1 value to the mean target value of the training subjects (256 bins).", "",
    ]
    names = {"lut": "lookup table (T1 value → mean target)", "pix2pix": "pix2pix-3D", "gea": "gEa-GAN", "dea": "dEa-GAN"}
    for r in results:
        rows = r["rows"]
        lines += [f"**{r['label']} T1 → {r['target'].upper()}** — {r['n_test']} held-out subjects", "",
                  "| method | PSNR head (dB) | PSNR vol (dB) | SSIM vol | NMSE head | edge PSNR head (dB) | edge PSNR vol (dB) | FID |",
                  "|---|---|---|---|---|---|---|---|"]
        for key in ("lut", *VARIANTS):
            m = rows[key]
            fid = r["info"].get(key, {}).get("fid")
            lines.append(f"| {names[key]} | {fmt(m['psnr_mask'])} | {fmt(m['psnr'])} | {fmt(m['ssim'], 4)} | "
                         f"{fmt(m['nmse_mask'], 4)} | {fmt(m['edge_psnr_mask'])} | {fmt(m['edge_psnr'])} | "
                         f"{'—' if fid is None else f'{fid:.1f}'} |")
        lines.append("")
        for v in VARIANTS:
            i = r["info"][v]
            lines.append(f"- {v}: {i['wall_min']:.1f} min wall, MLflow run `{i['run_id']}`; {i['time']}")
        lines.append(f"- units: dEa `medgen infer` output median / true {r['target'].upper()} median inside the brain "
                     f"{fmt(r['units'], 3)} (1 = the learned target window is right)")
        lines += [f"- quality bar: {b}" for b in bars(r)]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training minutes per phantom model (default 10)")
    p.add_argument("--mni-minutes", type=float, default=10.0)
    p.add_argument("--subjects", type=int, default=20)
    p.add_argument("--heldout", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--targets", default="t2,flair")
    p.add_argument("--mni", action="store_true", help="also the MNI152 T1 -> simulated T2 experiment")
    p.add_argument("--mni-subjects", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/medgen-eagan-bench")
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets; writes no RESULTS.md")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.minutes, args.mni_minutes, args.subjects, args.heldout, args.size, args.mni_subjects = 0.3, 0.3, 6, 2, 32, 5
    import shutil

    import torch

    torch.set_num_threads(args.threads)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    names = write_phantoms(work / "phantoms", args.subjects, args.size, args.seed)
    train_names, test_names = names[: -args.heldout], names[-args.heldout:]
    train_dir = link_subjects(work / "train", work / "phantoms", train_names)
    test_dir = link_subjects(work / "heldout", work / "phantoms", test_names)
    log(f"phantoms: {len(train_names)} train / {len(test_names)} held-out, {args.size}^3")
    results = []
    for target in args.targets.split(","):
        results.append(experiment("phantoms", train_dir, test_dir, test_names, target, args.minutes, work))
    if args.mni:
        mni_names = write_mni(work / "mni", args.mni_subjects, args.seed)
        k = max(2, args.mni_subjects // 4)
        mni_train = link_subjects(work / "mni-train", work / "mni", mni_names[:-k])
        mni_test = link_subjects(work / "mni-heldout", work / "mni", mni_names[-k:])
        results.append(experiment("MNI152", mni_train, mni_test, mni_names[-k:], "t2", args.mni_minutes, work))
    text = section(results, args, started)
    print(text)
    (work / "results.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "info"} for r in results]))
    if not (args.quick or args.no_write):
        write_section("eagan", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
