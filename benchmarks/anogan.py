#!/usr/bin/env python
"""f-AnoGAN quality and speed benchmark: phantoms with inserted lesions, then the MNI152 T1.

    python benchmarks/anogan.py [--quick] [--work DIR] [--threads 1] [--parts phantoms,mni]
    python benchmarks/anogan.py --parts mni --mni-seed 1 --mni-set data.position=true  # choose on seed 1

Phantoms (``--parts phantoms``):

1. Phantoms (size 64): normal training subjects (seed 0), held-out calibration normals (seed 2)
   and a test set (seed 1): normal scans of heads 1..N/2 and lesioned scans of *other* heads
   N/2+1..N (the phantom generator gives a subject the same head with and without lesions).
2. f-AnoGAN (WGAN-GP, then the izi_f encoder with G frozen) trained as a user does
   (``medgen train anogan --config configs/anogan-cpu.yaml ... trainer.max_minutes=M``).
3. Threshold = 99th percentile of the calibration normals' scores (encoder mode).
4. Scan-level AUROC (encoder mode on every test scan; AnoGAN latent search with Γ = 500 on a
   subset unless ``--no-search``), per-scan seconds; voxel-level AUPRC of the anomaly map against
   the lesion masks (voxels inside the head mask) and Dice of the thresholded (smoothed) map.
5. Seconds to score one brain-sized 1 mm volume (the MNI152 T1 if present, else a 1 mm phantom)
   on 2 threads, encoder mode.

MNI152 T1 (``--parts mni``, issue 27; ../shared/data/mni152): augmented 2 mm copies (flips, affine,
elastic, bias field, intensity scale and a contrast gamma per copy) as training subjects; held-out
copies: normal ones, ones with three bright and ones with three dark lesions (6-12 mm, in white
matter). Each lesion kind's scan AUROC and voxel AUPRC for every polarity, beside the intensity
z-score baseline. ``--mni-seed`` draws other copies: choose settings on a seed other than 0, the
reported one.

Writes the "anogan" (phantoms) and "anogan-mni" sections of benchmarks/RESULTS.md and prints them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import logger, machine, train_run, write_section

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "anogan-cpu.yaml"
MNI_DIR = ROOT.parent / "shared" / "data" / "mni152"

FULL = dict(size=64, n_train=20, n_test=20, n_calib=10, train_minutes=30.0,
            search_scans=4, search_steps=500, mni_copies=10, mni_test=8, mni_minutes=20.0)
QUICK = dict(size=32, n_train=4, n_test=4, n_calib=2, train_minutes=0.6,
             search_scans=2, search_steps=10, mni_copies=3, mni_test=2, mni_minutes=0.4)

# The network and patch sizes are the shipped CPU config's (configs/anogan-cpu.yaml: 16^3 patches,
# latent 64, G [64, 32], D [32, 64], encoder RMSProp 5e-5); the benchmark adds only what a user
# types for this data: the key, the brain masks and the minutes.
# Phantom scans are FLAIR, the sequence in which white-matter lesions, oedema and tumours are
# brightest and that unsupervised brain-lesion detection is usually run on (e.g. Baur et al.,
# MedIA 2021). In T1 the phantoms' lesions sit between CSF and grey matter, i.e. they look like
# normal tissue classes, and a 16^3-patch model cannot tell them apart from ventricles.
KEY = "flair"


log = logger("anogan bench")


# --- data ------------------------------------------------------------------------------------
def phantom_sets(work: Path, p: dict) -> dict[str, Path]:
    from medgen.data.phantoms import write_phantoms

    sets = {"train": (p["n_train"], 0), "test": (p["n_test"], 1), "calib": (p["n_calib"], 2)}
    out = {}
    for name, (n, seed) in sets.items():
        folder = work / "phantoms" / name
        if not (folder / "paired").is_dir():
            log(f"phantoms {name}: {n} subjects, size {p['size']}, seed {seed}")
            write_phantoms(folder, subjects=n, size=p["size"], seed=seed, overwrite=True)
        out[name] = folder
    return out


def train(work: Path, root: Path, name: str, minutes: float, extra: list[str]) -> Path:
    """``medgen train anogan --config configs/anogan-cpu.yaml data.root=ROOT trainer.max_minutes=M
    [extra]`` (the last 30 % of the minutes train the encoder), in the benchmark's own store."""
    log(f"train {name}: data.root={root} trainer.max_minutes={minutes} {' '.join(extra)}")
    info = train_run("anogan", root, work, name, minutes, extra, config=CONFIG, report=log)
    log(f"train {name}: run {info['run_id']} in {info['wall_min']:.1f} min")
    return info["checkpoint_dir"] / "last.pt"


def load_config_patch() -> list[int]:
    from medgen.config import read_yaml

    return list(read_yaml(CONFIG)["data"]["patch_size"])


# --- scoring -----------------------------------------------------------------------------------
def score_scans(model, data, paths, mode: str, labels_paths=None):
    """[(score, seconds, map in input grid, head mask, lesion label or None)] per scan."""
    from medgen import io
    from medgen.models.anogan import scoring
    from medgen.transforms.masks import foreground_mask

    out = []
    for i, path in enumerate(paths):
        volume = io.read(path)
        brain = io.read(Path(path).parent / "brain_mask.nii.gz").as_tensor() > 0.5
        t0 = time.perf_counter()
        score, amap = scoring.score_volume(model, data, volume, mode, mask=brain)
        seconds = time.perf_counter() - t0
        label = None
        if labels_paths and labels_paths[i] is not None:
            label = io.read(labels_paths[i]).as_tensor() > 0.5
        head = torch.from_numpy(foreground_mask(volume.as_tensor())) | brain
        out.append({"score": score, "seconds": seconds, "map": amap.as_tensor()[0] if amap.ndim == 4 else amap.as_tensor(),
                    "head": head, "label": label, "path": str(path)})
        log(f"  {mode} {Path(path).parent.name}/{Path(path).name}: score {score:.4f} ({seconds:.2f} s)")
    return out


def voxel_metrics(results, threshold: float | None, sigma: float):
    """AUPRC of the map vs lesion masks (head voxels of the lesioned scans) and Dice at threshold."""
    from medgen.models.anogan import scoring
    from medgen.metrics import auprc, dice

    maps, labels, dices = [], [], []
    for r in results:
        if r["label"] is None:
            continue
        m = r["map"].float()
        maps.append(m[r["head"]].numpy())
        labels.append(r["label"][r["head"]].numpy())
        if threshold is not None:
            sm = scoring.smooth(m[None], sigma)[0]
            dices.append(dice(sm > threshold, r["label"]))
    if not maps:
        return float("nan"), float("nan")
    ap = auprc(np.concatenate(maps), np.concatenate(labels))
    return float(ap), float(np.mean(dices)) if dices else float("nan")


def scan_auroc(normals, lesions) -> float:
    from medgen.metrics import auroc

    s = [r["score"] for r in normals + lesions]
    y = [0] * len(normals) + [1] * len(lesions)
    return float(auroc(np.asarray(s), np.asarray(y)))


def time_brain_volume(model, data, p: dict) -> tuple[float, str]:
    """Seconds to score one brain-sized 1 mm volume on 2 threads (encoder mode)."""
    from medgen import io
    from medgen.models.anogan import scoring

    mni = sorted(MNI_DIR.glob("*_t1_*.nii*")) if MNI_DIR.is_dir() else []
    if mni:
        volume = io.read(mni[0])
        what = f"MNI152 T1 {tuple(volume.shape)} 1 mm"
    else:
        from monai.data import MetaTensor

        from medgen.data.anatomy import grid_affine, make_anatomy
        from medgen.data.render import render_mr

        size = 220 if not p.get("quick") else 96
        anatomy = make_anatomy(0, size)
        arr = render_mr(anatomy, np.random.default_rng(0), KEY)
        volume = MetaTensor(torch.from_numpy(arr), affine=torch.from_numpy(grid_affine(size)))
        volume.meta["original_affine"] = grid_affine(size)
        what = f"phantom {tuple(arr.shape)} at {220 / size:.2f} mm"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t0 = time.perf_counter()
        scoring.score_volume(model, data, volume, "encoder")
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return seconds, what


# --- MNI152 ------------------------------------------------------------------------------------
LESION_KINDS = ("bright", "dark")


def mni_brain(gm: torch.Tensor, wm: torch.Tensor) -> np.ndarray:
    """A skull-stripping-like brain mask: grey + white matter with the ventricles and sulci they
    enclose (a user's brain mask includes CSF inside the brain, so a CSF-dark lesion is not
    simply outside it)."""
    from scipy import ndimage

    tissue = (gm + wm).numpy() > 0.5
    return ndimage.binary_fill_holes(ndimage.binary_closing(tissue, iterations=2))


def mni_sets(work: Path, p: dict, seed: int = 0) -> dict | None:
    """Augmented 2 mm copies of the MNI152 T1: training subjects, and held-out test scans, a
    third normal, a third with bright and a third with dark inserted lesions (``insert_lesions``).

    Every copy also gets its own contrast (a gamma of the intensities, 0.75-1.33): scanners and
    protocols differ in tissue ratios, not only in scale, and the scores must not follow them.
    """
    from monai.transforms import Compose, Rand3DElasticd, RandAffined, RandBiasFieldd, RandFlipd, RandScaleIntensityd

    from medgen import io
    from medgen.transforms.spatial import to_model_grid

    t1s = sorted(MNI_DIR.glob("*_t1_*.nii*")) if MNI_DIR.is_dir() else []
    if not t1s:
        return None
    folder = work / f"mni-seed{seed}"
    n_train, n_test = p["mni_copies"], p["mni_test"]
    tests = {kind: [folder / "test" / f"{kind}-{i:03d}" / "t1.nii.gz" for i in range(n_test)]
             for kind in ("normal",) + LESION_KINDS}
    if (folder / "done").is_file():
        return {"train": folder / "train", "test": tests}
    shutil.rmtree(folder, ignore_errors=True)
    t1 = to_model_grid(io.read(t1s[0]), (2.0, 2.0, 2.0))
    gm = to_model_grid(io.read(next(MNI_DIR.glob("*_gm_*.nii*"))), (2.0, 2.0, 2.0)).as_tensor()
    wm = to_model_grid(io.read(next(MNI_DIR.glob("*_wm_*.nii*"))), (2.0, 2.0, 2.0)).as_tensor()
    affine = t1.affine
    base = {"t1": t1.as_tensor()[None], "brain": torch.from_numpy(mni_brain(gm, wm)).float()[None],
            "gm": gm[None], "wm": wm[None]}
    keys = ["t1", "brain", "gm", "wm"]
    aug = Compose([
        RandFlipd(keys, prob=0.5, spatial_axis=0),  # left-right: anatomy is near-symmetric
        RandAffined(keys, prob=1.0, rotate_range=[0.08] * 3, scale_range=[0.06] * 3, translate_range=[3] * 3,
                    padding_mode="zeros", mode="bilinear"),
        Rand3DElasticd(keys, sigma_range=(6, 8), magnitude_range=(20, 40), prob=1.0, padding_mode="zeros"),
        RandBiasFieldd(["t1"], coeff_range=(0.0, 0.15), prob=1.0),
        RandScaleIntensityd(["t1"], factors=0.1, prob=1.0),
    ])
    aug.set_random_state(seed)
    rng = np.random.default_rng(seed)

    def copy() -> dict:
        item = aug(dict(base))
        t = item["t1"][0].clamp_min(0).float()
        top = float(t.max()) or 1.0
        item["t1"] = (t / top) ** float(np.exp(rng.uniform(np.log(0.75), np.log(1.33)))) * top
        return item

    def write(sub: Path, t1_vol, item, lesion=None):
        from monai.data import MetaTensor

        sub.mkdir(parents=True, exist_ok=True)
        io.write(sub / "t1.nii.gz", MetaTensor(t1_vol.float(), affine=affine))
        io.write(sub / "brain_mask.nii.gz", MetaTensor((item["brain"][0] > 0.5).float(), affine=affine))
        if lesion is not None:
            io.write(sub / "lesion.nii.gz", MetaTensor(lesion.float(), affine=affine))

    for i in range(n_train):
        item = copy()
        write(folder / "train" / f"mni-{i:03d}", item["t1"], item)
    for kind, paths in tests.items():
        for path in paths:
            item = copy()
            if kind == "normal":
                write(path.parent, item["t1"], item)
            else:
                vol, lesion = insert_lesions(item, kind, rng)
                write(path.parent, vol, item, lesion)
    (folder / "done").write_text("ok")
    return {"train": folder / "train", "test": tests}


def insert_lesions(item: dict, kind: str, rng, count: int = 3, radius_mm=(6.0, 12.0), voxel_mm: float = 2.0):
    """``count`` soft spheres of radius 6-12 mm centred in white matter: ``bright`` ones above every
    tissue (1.3x the brain's 99th percentile, like enhancement), ``dark`` ones at grey-matter or CSF
    intensity (the median of the scan's grey matter, or of its CSF inside the brain mask: the
    white matter of a T1 black hole, infarct or cavity)."""
    from scipy import ndimage

    t1 = item["t1"].numpy()
    brain = item["brain"][0].numpy() > 0.5
    gm, wm = item["gm"][0].numpy(), item["wm"][0].numpy()
    centres = np.argwhere(ndimage.binary_erosion(wm > 0.9, iterations=2))
    levels = {"bright": 1.3 * float(np.percentile(t1[brain], 99)),
              "gm": float(np.median(t1[(gm > 0.7) & brain])),
              "csf": float(np.median(t1[brain & (gm + wm < 0.2)]))}
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in t1.shape], indexing="ij")).astype(np.float32)
    out, lesion = t1.copy(), np.zeros(t1.shape, bool)
    for _ in range(count):
        c = centres[rng.integers(len(centres))]
        r = rng.uniform(*radius_mm) / voxel_mm
        d = np.sqrt(((idx - c.reshape(3, 1, 1, 1)) ** 2).sum(0)) / r
        w = np.clip((1.25 - d) / 0.5, 0.0, 1.0)  # soft edge a quarter radius either side of the surface
        level = levels["bright"] if kind == "bright" else levels["gm" if rng.random() < 0.5 else "csf"]
        out = out * (1 - w) + w * level
        lesion |= d <= 1.0
    return torch.from_numpy(out.astype(np.float32)), torch.from_numpy(lesion & brain)


def mni_scores(model, data, paths, stats) -> list[dict]:
    """Per scan: the product's scores (``medgen score``'s path: preprocess with the brain mask,
    one f-AnoGAN map) for each polarity, and the z-score baseline's, with the model-space maps
    and lesion labels for the voxel metrics."""
    from medgen import io
    from medgen.models.anogan import scoring

    out = []
    for path in paths:
        volume = io.read(path)
        brain = io.read(path.parent / "brain_mask.nii.gz").as_tensor() > 0.5
        x, state = data.preprocess(volume, mask=brain)
        mask = state["mask"]
        amap = scoring.anomaly_map(model, x, mask, "encoder", coords=state.get("coords"))
        lesion_file = path.parent / "lesion.nii.gz"
        label = data.mask_to_model_space(io.read(lesion_file).as_tensor() > 0.5, state) if lesion_file.is_file() else None
        row = {"path": str(path), "label": label, "mask": mask, "maps": {}, "scores": {}}
        for pol in scoring.POLARITIES:
            for method, m in (("model", scoring.polarity_map(amap, pol)), ("zscore", scoring.zscore_map(x, stats, pol))):
                row["maps"][(method, pol)] = m[0]
                row["scores"][(method, pol)] = scoring.scan_score(m, mask, model.top_percent, model.smooth_sigma)
        out.append(row)
    return out


def training_stats(data) -> tuple[float, float]:
    """The z-score baseline's tissue statistics: the training scans' model-space intensities in their masks."""
    from medgen.models.anogan import scoring

    ds = data._volumes("train")
    items = [ds[i] for i in range(len(ds))]
    return scoring.tissue_stats([i["image"] for i in items], [i["mask"] for i in items])


def mni_table(results: dict, thresholds: dict) -> tuple[list[str], dict]:
    """Rows: method x polarity; columns per lesion kind: scan AUROC, voxel AUPRC, flagged."""
    from medgen.metrics import auprc, auroc

    rows, numbers = [], {}
    normals = results["normal"]
    for method in ("model", "zscore"):
        for pol in ("both", "bright", "dark"):
            cells = []
            for kind in LESION_KINDS:
                lesioned = results[kind]
                s = [r["scores"][(method, pol)] for r in normals + lesioned]
                y = [0] * len(normals) + [1] * len(lesioned)
                a = float(auroc(np.asarray(s), np.asarray(y)))
                ap = float(auprc(np.concatenate([r["maps"][(method, pol)][r["mask"]].numpy() for r in lesioned]),
                                 np.concatenate([r["label"][r["mask"]].numpy() for r in lesioned])))
                t = thresholds.get(pol) if method == "model" else None
                flagged = "" if t is None else (f"{np.mean([r['scores'][(method, pol)] > t for r in lesioned]):.2f} / "
                                               f"{np.mean([r['scores'][(method, pol)] > t for r in normals]):.2f}")
                numbers[(method, pol, kind)] = (a, ap)
                cells += [fmt(a), fmt(ap), flagged]
            name = "f-AnoGAN" if method == "model" else "z-score baseline"
            rows.append(f"| {name} | {pol} | " + " | ".join(cells) + " |")
    return rows, numbers


def run_mni(work: Path, p: dict, seed: int, minutes: float, extra: list[str]) -> dict | None:
    from medgen.engine import load_task
    from medgen.models.anogan import scoring

    mni = mni_sets(work, p, seed)
    if mni is None:
        log("no MNI152 T1 in ../shared/data: skipped")
        return None
    t0 = time.monotonic()
    name = f"mni152-seed{seed}" + ("-" + "-".join(e.replace("=", "_") for e in extra) if extra else "")
    ckpt = train(work, mni["train"], name, minutes, ["data.mask_key=brain_mask", *extra])
    train_min = (time.monotonic() - t0) / 60
    model, data, _, state = load_task(ckpt, device="cpu")
    stats = training_stats(data)
    results = {kind: mni_scores(model, data, paths, stats) for kind, paths in mni["test"].items()}
    thresholds = {pol: model.threshold_for("encoder", pol) for pol in scoring.POLARITIES}
    rows, numbers = mni_table(results, thresholds)
    ex = state.get("extra") or {}
    return {"rows": rows, "numbers": numbers, "minutes": train_min, "budget": minutes, "extra": extra, "seed": seed,
            "n": {k: len(v) for k, v in results.items()}, "train": p["mni_copies"],
            "steps": (ex.get("critic_steps"), ex.get("encoder_steps")),
            "shape": tuple(results["normal"][0]["mask"].shape)}


def format_mni(r: dict) -> str:
    extra = "".join(f" {e}" for e in r["extra"])
    head = (f"MNI152 2009a T1 at 2 mm {r['shape']}, test seed {r['seed']}: trained on {r['train']} augmented copies "
            f"(flip, affine, elastic, bias field, intensity scale, a contrast gamma per copy) with `medgen train anogan "
            f"--config configs/anogan-cpu.yaml data.root=DIR data.mask_key=brain_mask trainer.max_minutes="
            f"{r['budget']:g}{extra}` ({r['minutes']:.1f} min wall, {r['steps'][0]} critic and {r['steps'][1]} "
            f"encoder steps); held out: {r['n']['normal']} normal copies, {r['n']['bright']} with three bright and "
            f"{r['n']['dark']} with three dark lesions (radius 6-12 mm, in white matter; dark at grey-matter or CSF "
            "intensity). Scan AUROC of each lesion kind against the same normals; voxel AUPRC inside the brain masks "
            "of the lesioned scans; flagged lesioned / normal at the run's validation-calibrated threshold.")
    table = ["| method | polarity | bright AUROC | bright AUPRC | bright flagged | dark AUROC | dark AUPRC | dark flagged |",
             "|---|---|---|---|---|---|---|---|", *r["rows"]]
    return head + "\n\n" + "\n".join(table)


# --- report --------------------------------------------------------------------------------------
def fmt(x, nd=3):
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def main(argv=None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and budgets (~2 min): checks that it runs")
    ap.add_argument("--work", default=None, help="work folder (default: /tmp/medgen-anogan-bench[-quick])")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training/scoring (default 1)")
    ap.add_argument("--parts", default="phantoms,mni", help="phantoms, mni or both (default)")
    ap.add_argument("--no-search", action="store_true", help="phantoms: skip the latent-search rows (~7 min a scan)")
    ap.add_argument("--mni-minutes", type=float, default=None, help="MNI training minutes (default 20)")
    ap.add_argument("--mni-seed", type=int, default=0,
                    help="seed of the MNI copies (0: the reported test set; choose settings on another)")
    ap.add_argument("--mni-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override of the MNI run (repeatable), e.g. data.standardize=nyul")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not touch RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = dict(QUICK if args.quick else FULL, quick=args.quick)
    if args.mni_minutes is not None:
        p["mni_minutes"] = args.mni_minutes
    parts = set(args.parts.split(","))
    work = Path(args.work or f"/tmp/medgen-anogan-bench{'-quick' if args.quick else ''}")
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    if "phantoms" in parts:
        text = phantom_part(work, p, args)
        print(text)
        if not args.no_write:
            write_section("anogan", text)
    if "mni" in parts:
        r = run_mni(work, p, args.mni_seed, p["mni_minutes"], args.mni_set)
        if r is not None:
            text = "\n".join([
                "## anogan on the MNI152 T1: bright and dark lesions (issue 27)", "",
                f"`benchmarks/anogan.py --parts mni --mni-seed {args.mni_seed} --mni-minutes {p['mni_minutes']:g}"
                f"{''.join(f' --mni-set {e}' for e in args.mni_set)}{' --quick' if args.quick else ''}`, "
                f"{datetime.date.today().isoformat()}, {machine(args.threads)}.", "", format_mni(r), ""])
            print(text)
            print(json.dumps({" ".join(k): v for k, v in r["numbers"].items()}))
            if not args.no_write:
                write_section("anogan-mni", text)
    log(f"total {(time.monotonic() - t_start) / 60:.1f} min")
    return 0


def phantom_part(work: Path, p: dict, args) -> str:
    from medgen.engine import load_task

    t_start = time.monotonic()
    sets = phantom_sets(work, p)
    patch = "x".join(str(v) for v in load_config_patch())
    ckpt = train(work, sets["train"] / "paired", "phantoms", p["train_minutes"],
                 [f"data.key={KEY}", "data.mask_key=brain_mask"])
    train_minutes = (time.monotonic() - t_start) / 60
    model, data, config, state = load_task(ckpt, device="cpu")
    extra = state.get("extra") or {}
    log(f"encoder steps {extra.get('encoder_steps')}, critic steps {extra.get('critic_steps')}, "
        f"epochs {state.get('epoch')}, val threshold {extra.get('thresholds')}")

    n = p["n_test"]
    test = sets["test"]
    normal_paths = [test / "paired" / f"sub-{i:03d}" / f"{KEY}.nii.gz" for i in range(1, n // 2 + 1)]
    lesion_paths = [test / "lesions" / f"sub-{i:03d}" / f"{KEY}.nii.gz" for i in range(n // 2 + 1, n + 1)]
    calib_paths = sorted((sets["calib"] / "paired").glob(f"*/{KEY}.nii.gz"))

    log("calibration normals (encoder)")
    calib = score_scans(model, data, calib_paths, "encoder")
    threshold = model.calibrate([r["score"] for r in calib], "encoder", 99.0)
    log(f"threshold (p99 of {len(calib)} held-out normals) = {threshold:.4f}")
    log("test scans (encoder)")
    enc_n = score_scans(model, data, normal_paths, "encoder")
    enc_l = score_scans(model, data, lesion_paths, "encoder", [p_.parent / "lesion.nii.gz" for p_ in lesion_paths])
    auc_enc = scan_auroc(enc_n, enc_l)
    ap_enc, dice_enc = voxel_metrics(enc_l, threshold, model.smooth_sigma)
    flagged_l = np.mean([r["score"] > threshold for r in enc_l])
    flagged_n = np.mean([r["score"] > threshold for r in enc_n])
    sec_enc = float(np.mean([r["seconds"] for r in enc_n + enc_l]))
    search_rows, speed = [], ""
    if not args.no_search:
        k = p["search_scans"] // 2
        model.search_steps = p["search_steps"]
        log(f"search mode (Gamma = {model.search_steps}) on {2 * k} scans")
        srch_n = score_scans(model, data, normal_paths[:k], "search")
        srch_l = score_scans(model, data, lesion_paths[:k], "search",
                             [p_.parent / "lesion.nii.gz" for p_ in lesion_paths[:k]])
        ap_srch, _ = voxel_metrics(srch_l, None, model.smooth_sigma)
        sec_srch = float(np.mean([r["seconds"] for r in srch_n + srch_l]))
        search_rows = [f"| encoder, search subset | {2 * k} | {fmt(scan_auroc(enc_n[:k], enc_l[:k]))} | | | | |",
                       f"| search (Gamma {model.search_steps}, lambda {model.lam}) | {2 * k} | "
                       f"{fmt(scan_auroc(srch_n, srch_l))} | {fmt(ap_srch)} | | | {fmt(sec_srch, 1)} |"]
        speed = f"Encoder mode is {sec_srch / max(sec_enc, 1e-9):.0f}x faster per scan than search mode. "

    log("brain-sized volume timing (2 threads)")
    sec_brain, brain_what = time_brain_volume(model, data, p)
    log(f"  {brain_what}: {sec_brain:.1f} s")
    date = datetime.date.today().isoformat()
    lines = [
        "## anogan",
        "",
        f"f-AnoGAN (WGAN-GP + izi_f encoder) and AnoGAN latent search, `benchmarks/anogan.py --parts phantoms"
        f"{' --no-search' if args.no_search else ''}{' --quick' if args.quick else ''}`, {date}, {machine(args.threads)}.",
        "",
        f"Phantoms {p['size']}^3 (3.44 mm at 64), {KEY.upper()}: trained on {p['n_train']} normal subjects "
        f"(`medgen train anogan --config configs/anogan-cpu.yaml data.key={KEY} data.mask_key=brain_mask "
        f"trainer.max_minutes={p['train_minutes']:g}`, {train_minutes:.1f} min wall incl. phantom writing: the GAN, "
        f"then the encoder for the last 30 %; "
        f"{extra.get('critic_steps')} critic steps, {extra.get('encoder_steps')} encoder steps), patch "
        f"{patch}, latent 64. Test: {len(enc_n)} normal + {len(enc_l)} lesioned held-out heads; "
        f"threshold = 99th percentile of {len(calib)} held-out normals = {threshold:.4f}. "
        f"Scan score = mean of the top {model.top_percent:g} % residual "
        f"voxels (map smoothed with a Gaussian of sigma {model.smooth_sigma:g} voxel, polarity {model.polarity}) in "
        "the brain mask (data.mask_key=brain_mask; masks beside the scans at scoring). "
        "Voxel AUPRC over the head voxels of the lesioned scans.",
        "",
        "| mode | scans | scan AUROC | voxel AUPRC | Dice @ thr | flagged lesioned / normal | s per scan |",
        "|---|---|---|---|---|---|---|",
        f"| encoder (izi_f) | {len(enc_n) + len(enc_l)} | {fmt(auc_enc)} | {fmt(ap_enc)} | {fmt(dice_enc)} | "
        f"{fmt(flagged_l, 2)} / {fmt(flagged_n, 2)} | {fmt(sec_enc, 2)} |",
        *search_rows,
        "",
        f"{speed}Scoring one brain-sized volume ({brain_what}) in encoder mode on 2 threads: {sec_brain:.1f} s.",
        "", f"Phantom part wall time {(time.monotonic() - t_start) / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
