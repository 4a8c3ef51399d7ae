#!/usr/bin/env python
"""Does a user's training budget go to training? The product path against itself with overhead off.

For pet-cgan and anogan, two runs of the command a user types,

    medgen train TASK --config configs/TASK-cpu.yaml data.root=DIR trainer.max_minutes=M

run side by side, each on one core (``taskset``, one thread), in its own working folder with the
default MLflow store: ``shipped`` exactly so, and ``overhead-off`` with validation, FID,
checkpoints, slice grids and model logging switched off (validated and checkpointed once, at the
end). Both are then applied to held-out phantom subjects the way the README says:
``medgen infer`` (pet-cgan: PSNR against the full dose inside the head, per subject) and
``medgen score`` (anogan: scan AUROC of normal against lesioned FLAIR scans). Reported: steps
done, the engine's time shares (``time/<phase>_share``) and the quality of each, mean ± SE.

``--one-mm`` instead times the shipped configs on 1 mm volumes (the MNI152 PET simulation and
the MNI152 T1 from ../shared/data), where one validation costs far more: time shares only.

    python benchmarks/budget.py --minutes 20            # both tasks, writes the "budget" section
    python benchmarks/budget.py --one-mm --minutes 10   # appends the 1 mm shares to it
    python benchmarks/budget.py --quick --no-write      # smoke run (~4 min)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import logger, machine, mean_se, write_section

REPO = Path(__file__).resolve().parents[1]
OFF = ["trainer.fid_slices=0", "trainer.val_every=100000000", "trainer.checkpoint_every=100000000",
       "trainer.val_images=false", "tracking.log_model=false", "tracking.register_model=false"]


log = logger("budget")


def medgen(args: list[str], cwd: Path, core: int | None, log_file: Path) -> subprocess.Popen:
    """Start ``medgen ARGS`` in `cwd`, on one core with one thread (as a user's shell would run it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [sys.executable, "-m", "medgen.cli", *args]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log_file, "w"), stderr=subprocess.STDOUT)


def wait_all(procs: dict[str, subprocess.Popen], what: str) -> None:
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{what} {name} failed (exit {proc.returncode}); see its log")


def train_pair(task: str, root: Path, work: Path, minutes: float, extra: list[str]) -> dict[str, dict]:
    """Both variants side by side; {variant: {run_id, cwd, steps, epochs, shares, summary}}."""
    config = REPO / "configs" / f"{task}-cpu.yaml"
    variants = {"shipped": [], "overhead-off": OFF}
    procs, cwds = {}, {}
    for core, (name, off) in enumerate(variants.items()):
        cwds[name] = work / task / name
        args = ["train", task, "--config", str(config), f"data.root={root}", f"trainer.max_minutes={minutes:g}",
                *extra, *off, "trainer.progress=false"]
        log(f"{task} {name}: medgen {' '.join(args)}")
        procs[name] = medgen(args, cwds[name], core, cwds[name] / "train.log")
    wait_all(procs, f"train {task}")
    return {name: run_facts(cwds[name]) for name in variants}


def run_facts(cwd: Path) -> dict:
    """The run's id (the log's last line), steps and epochs (last.pt), time shares (MLflow)."""
    import torch
    from mlflow import MlflowClient

    lines = (cwd / "train.log").read_text().strip().splitlines()
    run_id = lines[-1].strip()
    summary = next((line for line in reversed(lines) if line.startswith("time: ")), "")
    ckpt = torch.load(cwd / "checkpoints" / run_id / "last.pt", weights_only=True, map_location="cpu")
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    metrics = client.get_run(run_id).data.metrics
    shares = {k[len("time/"):-len("_share")]: v for k, v in metrics.items() if k.startswith("time/") and k.endswith("_share")}
    n_val = len(client.get_metric_history(run_id, "val/psnr"))
    return {"run_id": run_id, "cwd": str(cwd), "steps": int(ckpt["global_step"]), "epochs": int(ckpt["epoch"]),
            "validations": n_val, "minutes": metrics.get("time/total_minutes"), "shares": shares, "summary": summary}


# --- pet-cgan -----------------------------------------------------------------------------------
def pet_cgan(work: Path, minutes: float, quick: bool) -> dict:
    import pet_cgan as bench

    import nibabel as nib

    n, size, held = (6, 32, 2) if quick else (20, 64, 4)
    anatomies = bench.phantom_anatomies(n, size, 0)
    train_an, test_an = anatomies[:-held], anatomies[-held:]
    counts = bench.calibrate_counts([a for _, a, _ in train_an[:4]], [m for _, _, m in train_an[:4]], 20.5, 0, False)
    train_s = bench.render_subjects(train_an, counts, 0, False)
    test_s = bench.render_subjects(test_an, counts, 1, False)
    root, heldout = work / "pet-cgan" / "data" / "train", work / "pet-cgan" / "data" / "heldout"
    bench.write_pairs(root, train_s)
    bench.write_pairs(heldout, test_s)
    runs = train_pair("pet-cgan", root, work, minutes, [])
    procs = {}
    for core, (name, run) in enumerate(runs.items()):  # medgen infer as the README says, on each held-out scan
        cwd = Path(run["cwd"])
        # a rerun's folder holds the last run's estimates, which medgen infer refuses to replace without
        # --overwrite: this run's own output folder is cleared first, so what is read back is this run's
        shutil.rmtree(cwd / "infer", ignore_errors=True)
        script = " && ".join(
            f"{sys.executable} -m medgen.cli infer pet-cgan --run {run['run_id']} --input {heldout / s.name / 'low_dose.nii.gz'} "
            f"--output {cwd / 'infer' / s.name}" for s in test_s)
        env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true")
        procs[name] = subprocess.Popen(["taskset", "-c", str(core), "bash", "-c", script], cwd=cwd, env=env,
                                       stdout=open(cwd / "infer.log", "w"), stderr=subprocess.STDOUT)
    wait_all(procs, "pet-cgan infer")
    for name, run in runs.items():
        cwd = Path(run["cwd"])
        psnrs = []
        for s in test_s:
            est = np.asarray(nib.load(cwd / "infer" / s.name / "low_dose_pet-cgan.nii.gz").dataobj, dtype=np.float32)
            psnrs.append(bench.psnr(est, s.full, s))
        run["per_subject"] = dict(zip([s.name for s in test_s], psnrs))
        run["quality"] = mean_se(psnrs)
    low = [bench.psnr(s.low, s.full, s) for s in test_s]
    diffs = [runs["shipped"]["per_subject"][s.name] - runs["overhead-off"]["per_subject"][s.name] for s in test_s]
    return {"task": "pet-cgan", "metric": "PSNR vs full dose in the head (dB)", "runs": runs,
            "baseline": ("low-dose input", mean_se(low)), "difference": mean_se(diffs), "n_test": len(test_s),
            "data": f"{len(train_s)} phantom subjects {size}³ for training (the config's validation split among them), "
                    f"{len(test_s)} held-out; 1/4 dose by thinning the full-dose counts"}


# --- anogan -------------------------------------------------------------------------------------
def anogan(work: Path, minutes: float, quick: bool) -> dict:
    import anogan as bench

    p = dict(bench.QUICK if quick else bench.FULL)
    sets = bench.phantom_sets(work / "anogan" / "data", p)
    key = bench.KEY
    extra = [f"data.key={key}", "data.mask_key=brain_mask"]
    runs = train_pair("anogan", sets["train"] / "paired", work, minutes, extra)
    n = p["n_test"]
    test = sets["test"]
    normals = [test / "paired" / f"sub-{i:03d}" / f"{key}.nii.gz" for i in range(1, n // 2 + 1)]
    lesions = [test / "lesions" / f"sub-{i:03d}" / f"{key}.nii.gz" for i in range(n // 2 + 1, n + 1)]
    procs = {}
    for core, (name, run) in enumerate(runs.items()):  # medgen score: brain_mask beside each scan is used
        cwd = Path(run["cwd"])
        args = ["score", "--run", run["run_id"], *map(str, normals + lesions), "--out", str(cwd / "scores.csv"),
                "--no-progress"]
        procs[name] = medgen(args, cwd, core, cwd / "score.log")
    wait_all(procs, "anogan score")
    from medgen.metrics import auroc

    for name, run in runs.items():
        with open(Path(run["cwd"]) / "scores.csv") as f:
            rows = {r["path"]: float(r["score"]) for r in csv.DictReader(f)}
        scores = [rows[str(pth)] for pth in normals + lesions]
        run["quality"] = (float(auroc(np.array(scores), np.array([0] * len(normals) + [1] * len(lesions)))), float("nan"))
    diff = runs["shipped"]["quality"][0] - runs["overhead-off"]["quality"][0]
    return {"task": "anogan", "metric": f"scan AUROC, {len(normals)} normal vs {len(lesions)} lesioned FLAIR scans",
            "runs": runs, "difference": (diff, float("nan")), "n_test": len(normals) + len(lesions),
            "data": f"{p['n_train']} normal phantom subjects {p['size']}³ (FLAIR, brain masks) for training; "
                    f"held-out heads for the test"}


# --- 1 mm -----------------------------------------------------------------------------------------
def one_mm(work: Path, minutes: float, quick: bool, tasks=("pet-cgan", "anogan")) -> list[dict]:
    """Shares of the shipped configs on 1 mm volumes: pet-cgan and anogan side by side (or `tasks`)."""
    import nibabel as nib
    import pet_cgan as pbench

    if not (pbench.MNI_DIR / pbench.MNI_GM).is_file():
        raise SystemExit(f"{pbench.MNI_DIR} not found: the 1 mm check needs the MNI152 volumes")
    n = 3 if quick else 6
    grid = 2 if quick else 1
    anatomies = pbench.mni_anatomies(n, grid, 0)
    pet_root = work / "1mm" / "pet"
    if "pet-cgan" in tasks:
        counts = pbench.calibrate_counts([a for _, a, _ in anatomies[:2]], [m for _, _, m in anatomies[:2]], 20.5, 0, False)
        pbench.write_pairs(pet_root, pbench.render_subjects(anatomies, counts, 0, False))
    t1_path = next(pbench.MNI_DIR.glob("*_t1_*.nii*"))
    t1 = nib.load(t1_path)
    gm = np.asarray(nib.load(pbench.MNI_DIR / pbench.MNI_GM).dataobj, np.float32)
    wm = np.asarray(nib.load(pbench.MNI_DIR / pbench.MNI_WM).dataobj, np.float32)
    data = np.asarray(t1.dataobj, np.float32)
    rng = np.random.default_rng(0)
    mr_root = work / "1mm" / "t1"
    for i in range(n):  # left-right flips and intensity scales of the one real head
        d = mr_root / f"mni-{i + 1:03d}"
        d.mkdir(parents=True, exist_ok=True)
        flip = (lambda v: v[::-1]) if i % 2 else (lambda v: v)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(flip(data)) * rng.uniform(0.8, 1.2), t1.affine), d / "t1.nii.gz")
        nib.save(nib.Nifti1Image(np.ascontiguousarray(flip((gm + wm) > 0.5)).astype(np.uint8), t1.affine),
                 d / "brain_mask.nii.gz")
    shape = "×".join(map(str, data.shape))
    procs, cwds = {}, {}
    for task, root, extra in (("pet-cgan", pet_root, []), ("anogan", mr_root, ["data.mask_key=brain_mask"])):
        if task not in tasks:
            continue
        core = len(procs)  # one core each, from core 0
        cwds[task] = work / "1mm" / task
        args = ["train", task, "--config", str(REPO / "configs" / f"{task}-cpu.yaml"), f"data.root={root}",
                f"trainer.max_minutes={minutes:g}", *extra, "trainer.progress=false"]
        log(f"1 mm {task}: medgen {' '.join(args)}")
        procs[task] = medgen(args, cwds[task], core, cwds[task] / "train.log")
    wait_all(procs, "1 mm train")
    return [{"task": task, "volumes": shape if task == "anogan" else "MNI PET simulation at 1 mm",
             **run_facts(cwds[task])} for task in procs]


# --- report ---------------------------------------------------------------------------------------
def share_text(shares: dict) -> str:
    order = ("train", "data", "validation", "fid", "images", "checkpoint", "logging", "setup", "other")
    return ", ".join(f"{k} {100 * shares.get(k, 0):.1f} %" for k in order)


def format_quality(r: dict) -> str:
    lines = [f"**{r['task']}** — {r['data']}. Metric: {r['metric']}.", "",
             "| run | steps | epochs | validations | wall min | outside training steps | quality |",
             "|---|---|---|---|---|---|---|"]
    for name, run in r["runs"].items():
        q, se = run["quality"]
        quality = f"{q:.3f}" + ("" if not np.isfinite(se) else f" ± {se:.3f}")
        lines.append(f"| {name} | {run['steps']} | {run['epochs']} | {run['validations']} | {run['minutes']:.1f} | "
                     f"{100 * (1 - run['shares'].get('train', 0)):.1f} % | {quality} |")
    lines.append("")
    for name, run in r["runs"].items():
        lines.append(f"- {name} time shares: {share_text(run['shares'])}")
    d, se = r["difference"]
    lines.append(f"- shipped − overhead-off: {d:+.3f}" + ("" if not np.isfinite(se) else f" ± {se:.3f} (SE over the "
                                                            f"{r['n_test']} held-out subjects, paired)"))
    if "baseline" in r:
        name, (b, bse) = r["baseline"]
        lines.append(f"- {name}: {b:.3f} ± {bse:.3f}")
    if "per_subject" in r["runs"]["shipped"]:
        for name, run in r["runs"].items():
            lines.append(f"- {name} per subject: " + ", ".join(f"{k} {v:.3f}" for k, v in run["per_subject"].items()))
    return "\n".join(lines)


def format_one_mm(rows: list[dict]) -> str:
    lines = ["**1 mm volumes** (shipped configs, shares only)", "",
             "| task | volumes | steps | validations | wall min | outside training steps | shares |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['volumes']} | {r['steps']} | {r['validations']} | {r['minutes']:.1f} | "
                     f"{100 * (1 - r['shares'].get('train', 0)):.1f} % | {share_text(r['shares'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="trainer.max_minutes of every run (default 20)")
    ap.add_argument("--tasks", default="pet-cgan,anogan")
    ap.add_argument("--one-mm", action="store_true", help="time shares on 1 mm volumes instead")
    ap.add_argument("--work", default="/tmp/medgen-budget-bench")
    ap.add_argument("--quick", action="store_true", help="small data, short runs: checks that it runs")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes = min(args.minutes, 0.5)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    work = Path(args.work)
    started = datetime.datetime.now()
    flags = f"--minutes {args.minutes:g}" + (" --one-mm" if args.one_mm else "") + (" --quick" if args.quick else "")
    head = f"Run {started:%Y-%m-%d %H:%M} by `python benchmarks/budget.py {flags}` on {machine(1)} per run, two runs side by side."
    if args.one_mm:
        rows = one_mm(work, args.minutes, args.quick, tuple(args.tasks.split(",")))
        (work / "one_mm.json").write_text(json.dumps(rows, indent=2))
        text = head + "\n\n" + format_one_mm(rows)
    else:
        results = [{"pet-cgan": pet_cgan, "anogan": anogan}[t](work, args.minutes, args.quick)
                   for t in args.tasks.split(",")]
        (work / "quality.json").write_text(json.dumps(results, indent=2, default=str))
        text = head + "\n\n" + "\n\n".join(format_quality(r) for r in results)
    print("\n" + text, flush=True)
    if not args.no_write and not args.quick:
        write_section("budget-1mm" if args.one_mm else "budget", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
