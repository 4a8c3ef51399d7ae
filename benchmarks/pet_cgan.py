#!/usr/bin/env python
"""Quality benchmark of pet-cgan: full-dose PET estimation from 1/4-dose PET.

What it does (all numbers inside the head mask of held-out subjects):

1. **Phantoms** — heads from :mod:`medgen.data.phantoms` rendered as FDG PET by
   :func:`medgen.data.render.render_pet_doses` (Poisson counts, PSF blur; low dose = binomially
   thinned full-dose counts, so the two share their counts as a real dose reduction would;
   ``--pair-model independent``: a separate acquisition with its own noise). The
   count level is calibrated so that the 1/4-dose input scores ``--target-db`` (20.5 dB) PSNR against
   the full dose. Training subjects go to a paired folder; held-out subjects are never seen.
2. **Baseline** — the low-dose volume smoothed by a Gaussian whose sigma is grid-searched on the
   training subjects (best mean PSNR against full dose in the head mask).
3. **Models** — the c-GAN and the paper's L1-only 3D U-Net ablation (``model.adversarial=false``
   with the paper's L1), each trained as a user types it, ``medgen train pet-cgan --config
   configs/pet-cgan-cpu.yaml data.root=DIR trainer.max_minutes=M`` (through
   ``medgen.engine.train``, the function behind that command; nothing switched off: validation,
   FID, checkpoints and model logging run on the engine's own schedule); then ``best.pt`` (by
   val/psnr on the training folder's validation split) is applied to the held-out low-dose files
   with the same inference as ``medgen infer`` (whole volume, Gaussian sliding window, output in
   kBq/ml).
4. **Oracle and bounds** — the noise-free activity (PSF-blurred) against the noisy full dose:
   what a perfect denoiser that ignores the shared counts would score; and two references that
   know the activity (``render_pet_doses(bounds=True)``): the conditional mean of the full dose
   given the low-dose counts (no estimate can beat it: +6.02 dB over the input) and one exact
   draw from that conditional distribution — what a *perfect* c-GAN outputs (+3.01 dB).
5. **MNI152** — the same on a PET simulation built from the real MNI152 2009a grey/white-matter
   probability maps (``../shared/data/mni152``): activity GM 10 : WM 2.8 : CSF 0.4 kBq/ml,
   per-subject random affine + smooth deformation + tissue texture, the same PSF and the same
   calibrated noise level, on a 2 mm grid.

PSNR uses ``data_range`` = the maximum of the noise-free activity in the head mask (fixed per
subject, identical for every method); SSIM is 3D (Gaussian window 11, MONAI's formula) averaged
over the mask. Results go to the pet-cgan section of ``benchmarks/RESULTS.md`` (date, machine,
minutes) and are printed.

    python benchmarks/pet_cgan.py --quick            # ~2 min smoke run, writes nothing
    python benchmarks/pet_cgan.py --minutes 15 --mni-minutes 10
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import RESULTS, logger, machine, train_run, write_section

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "pet-cgan-cpu.yaml"
MNI_DIR = REPO.parent / "shared" / "data" / "mni152"
MNI_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
MNI_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
DOSE_FRACTION = 0.25

# What the L1-only ablation changes in the CPU config: no discriminator, and the paper's L1 with
# its λ (the config's c-GAN uses MSE; see configs/pet-cgan-cpu.yaml).
ABLATION = ["model.adversarial=false", "model.content_loss=l1", "model.lambda_l1=300"]
log = logger("pet-cgan bench")


@dataclass
class Subject:
    name: str
    low: np.ndarray
    full: np.ndarray
    noise_free: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    bounds: dict | None = None  # render_pet_doses(bounds=True) references: bound_mean, bound_sample

    @property
    def data_range(self) -> float:
        return float(self.noise_free[self.mask].max())


# --- metrics ---------------------------------------------------------------------------------
def psnr(est: np.ndarray, ref: np.ndarray, s: Subject) -> float:
    from medgen.metrics import psnr as _psnr

    return _psnr(est, ref, data_range=s.data_range, mask=s.mask)


def ssim(est: np.ndarray, ref: np.ndarray, s: Subject) -> float:
    from medgen.metrics import ssim as _ssim

    return _ssim(est, ref, data_range=s.data_range, spatial_dims=3, mask=s.mask)


# --- data ------------------------------------------------------------------------------------
def _render(anatomy: dict, rng: np.random.Generator, counts: float, independent: bool, bounds: bool = False) -> dict:
    from medgen.data.render import render_pet_doses

    return render_pet_doses(anatomy, rng, counts=counts, dose_fraction=DOSE_FRACTION, bounds=bounds,
                            independent=independent)


def calibrate_counts(anatomies: list[dict], masks: list[np.ndarray], target_db: float, seed: int,
                     independent: bool) -> float:
    """Total full-dose counts giving `target_db` PSNR(low, full): noise variance ∝ 1 / counts."""
    from medgen.data.render import PET_COUNTS

    values = []
    for i, (anatomy, mask) in enumerate(zip(anatomies, masks)):
        d = _render(anatomy, np.random.default_rng([seed, 999, i]), PET_COUNTS, independent)
        s = Subject("cal", d["low_dose"], d["full_dose"], d["noise_free"], mask, anatomy["affine"])
        values.append(psnr(s.low, s.full, s))
    return float(PET_COUNTS * 10 ** ((target_db - float(np.mean(values))) / 10))


def phantom_anatomies(n: int, size: int, seed: int) -> list[tuple[str, dict, np.ndarray]]:
    from medgen.data.phantoms import subject_anatomy

    out = []
    for i in range(n):
        anatomy = subject_anatomy(seed, i, size)
        out.append((f"ph-{i + 1:03d}", anatomy, anatomy["head"] > 0.5))
    return out


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    shape = [s // factor * factor for s in volume.shape]
    v = volume[: shape[0], : shape[1], : shape[2]]
    return v.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor).mean((1, 3, 5))


def mni_template(grid_mm: int, with_t1: bool = False) -> dict[str, np.ndarray]:
    """GM/WM/CSF fractions of MNI152 2009a on a `grid_mm` grid, cropped around the head (and
    ``t1``: the template's T1 itself, for the eagan benchmark)."""
    import nibabel as nib
    from scipy import ndimage

    gm = np.asarray(nib.load(MNI_DIR / MNI_GM).dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(MNI_DIR / MNI_WM).dataobj, dtype=np.float32)
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    # CSF: the intracranial volume (closed, filled brain) minus brain tissue.
    icv = ndimage.binary_fill_holes(ndimage.binary_closing(gm + wm > 0.3, iterations=4))
    icv = ndimage.binary_dilation(icv, iterations=2)
    icv = ndimage.gaussian_filter(icv.astype(np.float32), 1.0)
    csf = np.clip(icv - gm - wm, 0, 1)
    maps = {k: _block_mean(v, grid_mm) for k, v in {"gm": gm, "wm": wm, "csf": csf}.items()}
    if with_t1:
        maps["t1"] = _block_mean(np.asarray(nib.load(MNI_DIR / MNI_T1).dataobj, dtype=np.float32), grid_mm)
    head = (maps["gm"] + maps["wm"] + maps["csf"]) > 0.05
    idx = np.argwhere(head)
    lo, hi = idx.min(0), idx.max(0) + 1
    center = (lo + hi) // 2
    side = [int(np.ceil((h - l + 8) / 16) * 16) for l, h in zip(lo, hi)]  # multiples of 16, 4 voxels margin
    out = {}
    for k, v in maps.items():
        pad = [(s, s) for s in side]
        vp = np.pad(v, pad)
        sl = tuple(slice(c + s - s // 2, c + s - s // 2 + s) for c, s in zip(center, side))
        out[k] = vp[sl].astype(np.float32)
    return out


def mni_anatomies(n: int, grid_mm: int, seed: int, with_t1: bool = False) -> list[tuple[str, dict, np.ndarray]]:
    """`n` MNI-based subjects: random affine (±6 % scale, ±6°) + smooth deformation (~3 mm)
    (``with_t1``: the template's T1 warped with them, key ``t1``)."""
    from scipy import ndimage

    from medgen.data.anatomy import smooth_noise

    template = mni_template(grid_mm, with_t1)
    shape = template["gm"].shape
    affine = np.diag([grid_mm, grid_mm, grid_mm, 1.0]).astype(np.float64)
    affine[:3, 3] = -(np.array(shape) - 1) / 2.0 * grid_mm
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 152, i])
        angles = np.deg2rad(rng.uniform(-6, 6, 3))
        rot = np.eye(3)
        for axis, a in enumerate(angles):
            c, s_ = np.cos(a), np.sin(a)
            r = np.eye(3)
            j, k = [d for d in range(3) if d != axis]
            r[j, j], r[j, k], r[k, j], r[k, k] = c, -s_, s_, c
            rot = rot @ r
        mat = rot @ np.diag(rng.uniform(0.94, 1.06, 3))
        coords = np.einsum("ij,j...->i...", np.linalg.inv(mat), grid - centre[:, None, None, None]) + centre[:, None, None, None]
        amp = 3.0 / grid_mm
        for d in range(3):
            coords[d] += amp * smooth_noise(rng, shape, scale_vox=20.0 / grid_mm)
        maps = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant").astype(np.float32)
                for k, v in template.items()}
        t1 = maps.pop("t1", None)
        total = maps["gm"] + maps["wm"] + maps["csf"]
        scale = np.maximum(total, 1.0)
        for k in maps:
            maps[k] = maps[k] / scale
        anatomy = {
            **maps,
            "air": np.clip(1.0 - (maps["gm"] + maps["wm"] + maps["csf"]), 0, 1),
            "deep_gm": np.zeros(shape, np.float32),
            "lesion": np.zeros(shape, np.float32),
            "lesion_pet": np.ones(shape, np.float32),
            "texture": smooth_noise(rng, shape, scale_vox=4.0 / grid_mm).astype(np.float32),
            "affine": affine,
            **({"t1": t1} if t1 is not None else {}),
        }
        head = ndimage.binary_fill_holes((maps["gm"] + maps["wm"] + maps["csf"]) > 0.5)
        out.append((f"mni-{i + 1:03d}", anatomy, head))
    return out


def render_subjects(anatomies, counts: float, seed: int, independent: bool) -> list[Subject]:
    subjects = []
    for i, (name, anatomy, mask) in enumerate(anatomies):
        d = _render(anatomy, np.random.default_rng([seed, 7, i]), counts, independent, bounds=True)
        subjects.append(Subject(name, d["low_dose"], d["full_dose"], d["noise_free"], mask, anatomy["affine"],
                                {k: d[k] for k in ("bound_mean", "bound_sample")}))
    return subjects


def write_pairs(folder: Path, subjects: list[Subject]) -> None:
    import nibabel as nib

    for s in subjects:
        d = folder / s.name
        d.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(s.low.astype(np.float32), s.affine), d / "low_dose.nii.gz")
        nib.save(nib.Nifti1Image(s.full.astype(np.float32), s.affine), d / "full_dose.nii.gz")


# --- baseline --------------------------------------------------------------------------------
def gaussian(volume: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(volume, sigma, mode="nearest") if sigma > 0 else volume


def fit_sigma(train: list[Subject]) -> float:
    """Sigma (voxels) with the best mean PSNR(Gaussian(low), full) over the training subjects."""
    grid = np.round(np.arange(0.25, 3.01, 0.125), 3)
    scores = [np.mean([psnr(gaussian(s.low, g), s.full, s) for s in train]) for g in grid]
    return float(grid[int(np.argmax(scores))])


# --- models ----------------------------------------------------------------------------------
def train_model(name: str, root: Path, workdir: Path, minutes: float, extra: list[str]) -> tuple[str, dict]:
    """One run of ``medgen train pet-cgan --config configs/pet-cgan-cpu.yaml data.root=ROOT
    trainer.max_minutes=MINUTES [extra]``, logged to the benchmark's own MLflow store."""
    info = train_run("pet-cgan", root, workdir, name, minutes, extra, config=CONFIG)
    info.update(validation_curve(info["run_id"], workdir))
    log(f"{name}: trained {info['wall_min']:.1f} min, run {info['run_id']}; {info['time']}")
    return info["run_id"], info


def validation_curve(run_id: str, workdir: Path) -> dict:
    """Epochs run, the epoch and val/psnr of best.pt (the engine's tags: a c-GAN's best.pt skips
    its L1 warm-up, so it need not be the curve's maximum), the last val/psnr, the epoch D joined
    (first train/d_loss), and the whole curve against training minutes (``curve``: minutes,
    values) for :func:`save_validation_plot`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    hist = sorted(client.get_metric_history(run_id, "val/psnr"), key=lambda m: m.step)
    if not hist:
        return {}
    run = client.get_run(run_id)
    start, tags = run.info.start_time, run.data.tags
    d_loss = sorted(client.get_metric_history(run_id, "train/d_loss"), key=lambda m: m.step)
    best = {}  # stays empty when no epoch was allowed to be best.pt
    if "medgen.best_epoch" in tags:
        epoch = int(tags["medgen.best_epoch"])
        best = {"best_epoch": epoch, "best_val_psnr": next(m.value for m in hist if m.step == epoch)}
    return {"epochs_run": hist[-1].step, **best, "last_val_psnr": hist[-1].value,
            "d_joined": d_loss[0].step if d_loss else None,
            "d_joined_minute": (d_loss[0].timestamp - start) / 60000 if d_loss else None,
            "curve": ([(m.timestamp - start) / 60000 for m in hist], [m.value for m in hist]),
            "curve_epochs": [m.step for m in hist]}


def predict(run_id: str, workdir: Path, subjects: list[Subject], folder: Path,
            flip_ensemble: bool | None = None) -> list[np.ndarray]:
    """Full-dose estimates (kBq/ml) of held-out low-dose files, as `medgen infer` makes them
    (``flip_ensemble``, ``samples``: override the trained model's settings)."""
    from medgen.engine import load_task
    from medgen.inference import infer_path

    model, data, _, _ = load_task(run_id, tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", device="cpu")
    if flip_ensemble is not None:
        model.flip_ensemble = flip_ensemble
    out = []
    for s in subjects:
        est = infer_path(model, data, folder / s.name / "low_dose.nii.gz")
        out.append(np.asarray(est.detach().cpu().numpy(), dtype=np.float32).reshape(s.low.shape))
    return out


def plot_path(label: str) -> Path:
    """Where an experiment's validation-curve PNG goes: beside RESULTS.md."""
    slug = "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")
    return RESULTS.parent / f"pet_cgan_{slug}_val.png"


def save_validation_plot(runs: dict[str, dict], path: Path, title: str) -> Path:
    """PNG of each run's val/psnr against its training minutes (run name -> train_model's info)."""
    from medgen.viz.plots import save_curves

    curves = {name: tuple(info["curve"]) for name, info in runs.items() if "curve" in info}
    points, vlines = {}, {}
    for name, info in runs.items():
        if "curve" in info and "best_epoch" in info:
            minutes, values = info["curve"]
            if info["best_epoch"] in info["curve_epochs"]:
                at = info["curve_epochs"].index(info["best_epoch"])
                points[f"{name} best.pt"] = (minutes[at], values[at])
        if info.get("d_joined_minute") is not None:
            vlines[f"{name}: D joins"] = info["d_joined_minute"]
    return save_curves(path, curves, xlabel="training minutes", ylabel="val/psnr (dB, model intensity space)",
                       title=title, points=points, vlines=vlines)


# --- one experiment --------------------------------------------------------------------------
def override_value(overrides, key: str, default):
    """The value `key` takes under `overrides` (parsed as the config parses them; the last wins)."""
    from medgen.config import parse_override

    values = {".".join(parts): value for parts, value in map(parse_override, overrides)}
    return values.get(key, default)


def content_loss(overrides) -> str:
    """The c-GAN's estimation-error term as the table names it (default: the CPU config's)."""
    from medgen.config import read_yaml

    return str(override_value(overrides, "model.content_loss", read_yaml(CONFIG)["model"].get("content_loss", "l1"))).upper()


def run_experiment(label: str, anatomies, n_test: int, target_db: float, minutes: float, workdir: Path,
                   seed: int, patches: list[str], counts: float | None = None, l1_fraction: float = 1.0,
                   refine_fraction: float = 0.0, cgan_extra: tuple[str, ...] = (), independent: bool = False) -> dict:
    train_an, test_an = anatomies[:-n_test], anatomies[-n_test:]
    if counts is None:
        counts = calibrate_counts([a for _, a, _ in train_an[:4]], [m for _, _, m in train_an[:4]], target_db, seed,
                                  independent)
    train_s = render_subjects(train_an, counts, seed, independent)
    test_s = render_subjects(test_an, counts, seed + 1, independent)
    root = workdir / label / "train"
    held = workdir / label / "heldout"
    write_pairs(root, train_s)
    write_pairs(held, test_s)
    sigma = fit_sigma(train_s)
    log(f"{label}: counts {counts:.3g}, {len(train_s)} train / {len(test_s)} held-out, "
        f"Gaussian sigma {sigma} vox")

    runs = {}
    estimates = {}
    plan = [("cgan", list(cgan_extra), minutes), ("l1-unet", ABLATION, minutes * l1_fraction)]
    if refine_fraction > 0:
        plan.append(("cgan-refine", [*cgan_extra, "model.refine=true"], minutes * refine_fraction))
    for name, extra, budget in plan:
        run_id, info = train_model(f"{label}-{name}", root, workdir, budget, extra + patches)
        runs[name] = info
        estimates[name] = predict(run_id, workdir, test_s, held)
        if name == "cgan":
            estimates["cgan-single"] = predict(run_id, workdir, test_s, held, flip_ensemble=False)

    cgan_row = f"3D c-GAN (adv + λ·{content_loss(cgan_extra)})"
    methods = {
        "low-dose input (1/4)": [s.low for s in test_s],
        f"Gaussian (sigma {sigma} vox, fit on train)": [gaussian(s.low, sigma) for s in test_s],
        "L1-only 3D U-Net (ablation)": estimates["l1-unet"],
        "3D c-GAN, single pass (no flip ensemble)": estimates["cgan-single"],
        cgan_row: estimates["cgan"],
        **({"concatenated 3D c-GANs (+ refinement stage)": estimates["cgan-refine"]} if "cgan-refine" in estimates else {}),
        "oracle: noise-free activity": [s.noise_free for s in test_s],
        "bound: perfect conditional sample (an ideal c-GAN's output)": [s.bounds["bound_sample"] for s in test_s],
        "bound: E[full dose given the low-dose counts and the activity] (no estimate does better)": [s.bounds["bound_mean"] for s in test_s],
    }
    rows = {}
    for method, vols in methods.items():
        rows[method] = {
            "psnr_full": float(np.mean([psnr(v, s.full, s) for v, s in zip(vols, test_s)])),
            "ssim_full": float(np.mean([ssim(v, s.full, s) for v, s in zip(vols, test_s)])),
            "psnr_nf": float(np.mean([psnr(v, s.noise_free, s) for v, s in zip(vols, test_s)]))
            if not method.startswith(("oracle", "bound")) else float("inf"),
        }
    low, gauss = (rows[k] for k in list(methods)[:2])

    def bar(est: dict) -> dict:
        return {
            "PSNR ≥ Gaussian + 1 dB": est["psnr_full"] >= gauss["psnr_full"] + 1.0,
            "PSNR ≥ low dose + 4 dB": est["psnr_full"] >= low["psnr_full"] + 4.0,
            "SSIM > Gaussian and low dose": est["ssim_full"] > max(gauss["ssim_full"], low["ssim_full"]),
        }

    checks = bar(rows[cgan_row])
    # Per held-out subject, so a reader can tell a miss from noise across subjects.
    per_subject = {name: [psnr(v, s.full, s) for v, s in zip(methods[key], test_s)]
                   for name, key in (("low", list(methods)[0]), ("gauss", list(methods)[1]), ("cgan", cgan_row))}
    gains = {f"over the {what}": [c - b for c, b in zip(per_subject["cgan"], per_subject[key])]
             for what, key in (("low dose", "low"), ("Gaussian", "gauss"))}
    return {"label": label, "counts": counts, "sigma": sigma, "n_train": len(train_s), "n_test": len(test_s),
            "subjects": [s.name for s in test_s], "gains": gains,
            "ablation_checks": bar(rows["L1-only 3D U-Net (ablation)"]),
            "shape": list(test_s[0].low.shape), "spacing_mm": float(abs(test_s[0].affine[0, 0])),
            "rows": rows, "checks": checks, "runs": runs}


# --- report ----------------------------------------------------------------------------------
def format_result(r: dict) -> str:
    lines = [
        f"**{r['label']}** — volumes {'×'.join(map(str, r['shape']))} at {r['spacing_mm']:.2f} mm, "
        f"{r['n_train']} training subjects (2 of them the validation split), {r['n_test']} held-out; "
        f"full-dose counts {r['counts']:.3g}; Gaussian σ = {r['sigma']} voxels.",
        "",
        "| method | PSNR vs full dose (dB) | SSIM vs full dose | PSNR vs noise-free (dB) |",
        "|---|---|---|---|",
    ]
    for method, v in r["rows"].items():
        nf = "—" if not np.isfinite(v["psnr_nf"]) else f"{v['psnr_nf']:.2f}"
        lines.append(f"| {method} | {v['psnr_full']:.2f} | {v['ssim_full']:.4f} | {nf} |")
    lines.append("")
    for name, info in r["runs"].items():
        joined = f", D from epoch {info['d_joined']}" if info.get("d_joined") is not None else ""
        curve = (f"; best.pt: epoch {info['best_epoch']} of {info['epochs_run']}{joined}, val/psnr (model space) "
                 f"{info['best_val_psnr']:.2f}, last {info['last_val_psnr']:.2f}") if "best_epoch" in info else ""
        lines.append(f"- {name}: {info['wall_min']:.1f} min wall training{curve}, MLflow run `{info['run_id']}`; "
                     f"engine {info.get('time', '')}")
    for what, gains in r.get("gains", {}).items():
        se = float(np.std(gains, ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan")
        shown = ", ".join(f"{n} {g:+.3f}" for n, g in zip(r["subjects"], gains))
        lines.append(f"- c-GAN PSNR gain {what}, per held-out subject: {shown} (mean {np.mean(gains):+.3f} ± {se:.3f} SE)")
    for what, checks in (("quality bar", r["checks"]), ("the L1-only ablation against the same bar", r["ablation_checks"])):
        lines.append(f"- {what}: " + "; ".join(f"{k}: {'PASS' if ok else 'FAIL'}" for k, ok in checks.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes per phantom model (default 15)")
    p.add_argument("--mni-minutes", type=float, default=10.0, help="training minutes per MNI model (default 10)")
    p.add_argument("--lambda-l1", type=float, default=None,
                   help="λ of the c-GAN's content term (default: the CPU config's, 5000 on MSE)")
    p.add_argument("--l1-fraction", type=float, default=1.0,
                   help="training budget of the L1-only ablation, as a fraction of the c-GAN's (default 1)")
    p.add_argument("--refine-fraction", type=float, default=1.0,
                   help="phantoms only: budget of the concatenated c-GANs (model.refine=true), as a fraction of the "
                        "c-GAN's; 0 skips them (default 1)")
    p.add_argument("--cgan-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for the c-GANs (repeatable), e.g. model.noise_channels=1")
    p.add_argument("--pair-model", choices=("thinned", "independent", "both"), default="both",
                   help="phantoms' low dose: the full-dose counts thinned (list-mode subsampling of one "
                        "acquisition), a separate acquisition with its own noise, or both (the default; MNI: thinned)")
    p.add_argument("--subjects", type=int, default=20, help="phantom subjects (default 20)")
    p.add_argument("--heldout", type=int, default=4, help="held-out subjects per experiment (default 4)")
    p.add_argument("--size", type=int, default=64, help="phantom size (default 64)")
    p.add_argument("--target-db", type=float, default=20.5, help="PSNR of the 1/4-dose input vs full dose")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--skip-mni", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (~2 min); writes no RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.minutes, args.mni_minutes, args.subjects, args.heldout, args.size = 0.3, 0.3, 5, 2, 32
    patches = ["data.patches_per_volume=4"] if args.quick else []  # --quick: shorter epochs
    cgan_extra = (() if args.lambda_l1 is None else (f"model.lambda_l1={args.lambda_l1:g}",)) + tuple(args.cgan_set)
    pair_models = ("thinned", "independent") if args.pair_model == "both" else (args.pair_model,)
    lam_flag = "" if args.lambda_l1 is None else f" --lambda-l1 {args.lambda_l1:g}"
    lam_text = ("MSE with λ = 5000" if args.lambda_l1 is None
                else f"MSE with λ = {args.lambda_l1:g} (--lambda-l1; the config's is 5000)")
    started = datetime.datetime.now()
    results = []
    with tempfile.TemporaryDirectory(prefix="pet-cgan-bench-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        ph = phantom_anatomies(args.subjects, args.size, args.seed)
        for pair_model in pair_models:
            label = "phantoms" if pair_model == "thinned" else "phantoms, independent low dose"
            r = run_experiment(label, ph, args.heldout, args.target_db, args.minutes, workdir, args.seed, patches,
                               l1_fraction=args.l1_fraction, refine_fraction=args.refine_fraction,
                               cgan_extra=cgan_extra, independent=pair_model == "independent")
            results.append(r)
            print(format_result(r), flush=True)
        if not args.skip_mni and (MNI_DIR / MNI_GM).is_file():
            n_mni = 5 if args.quick else 14
            mni = mni_anatomies(n_mni, 4 if args.quick else 2, args.seed)
            r = run_experiment("MNI152 PET simulation", mni, min(args.heldout, 3), args.target_db,
                               args.mni_minutes, workdir, args.seed, patches, l1_fraction=args.l1_fraction,
                               cgan_extra=cgan_extra, independent=pair_models == ("independent",))
            results.append(r)
            print(format_result(r), flush=True)
        elif not args.skip_mni:
            log(f"{MNI_DIR} not found: MNI152 part skipped")
    header = [
        "## pet-cgan — full-dose PET from 1/4-dose PET (Wang et al. 2018)",
        "",
        f"Run {started:%Y-%m-%d %H:%M} by `python benchmarks/pet_cgan.py --minutes {args.minutes:g} "
        f"--mni-minutes {args.mni_minutes:g} --l1-fraction {args.l1_fraction:g} "
        f"--refine-fraction {args.refine_fraction:g}{lam_flag}"
        f"{''.join(f' --cgan-set {o}' for o in args.cgan_set)}"
        f" --pair-model {args.pair_model}`{' --quick' if args.quick else ''} "
        f"on {machine(args.threads)}.",
        "",
        "Held-out subjects only; every number inside the head mask; PSNR data range = max noise-free "
        "activity in the mask. Models: trained as `medgen train pet-cgan --config configs/pet-cgan-cpu.yaml "
        "data.root=DIR trainer.max_minutes=M` (the shipped CPU config: BCE c-GAN on " + lam_text + ", widths "
        "16-32-64-128, residual G, Adam 1e-3 β1 0.5, L1 warm-up for half the minutes; flip augmentation of the "
        "training pairs; validation, FID, checkpoints and model logging on the engine's own schedule); the "
        "ablation adds " + ", ".join(f"`{o}`" for o in ABLATION) + "; best.pt by val/psnr; whole-volume Gaussian sliding-window inference averaged over the 8 flips of the "
        "input (`model.flip_ensemble`, the config default; the single-pass row is the same c-GAN without it"
        + ")."
        + ("" if not args.cgan_set else " The c-GANs also take " + ", ".join(f"`{o}`" for o in args.cgan_set)
           + " (`--cgan-set`; the L1-only U-Net does not)."),
        "",
    ]
    text = "\n".join(header) + "\n" + "\n\n".join(format_result(r) for r in results) + "\n"
    plots = [] if args.quick or args.no_write else [
        save_validation_plot(r["runs"], plot_path(r["label"]), f"pet-cgan, {r['label']}") for r in results]
    text += "".join(f"\n![{r['label']}: val/psnr while training]({png.name})\n" for r, png in zip(results, plots))
    print("\n" + text)
    json_path = Path(args.workdir) / "pet_cgan_results.json" if args.workdir else None
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, default=str))
    if not args.quick and not args.no_write:
        write_section("pet-cgan", text)
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
