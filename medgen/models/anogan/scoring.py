"""Anomaly scoring of whole volumes with a trained AnoGAN / f-AnoGAN model.

A volume in model space is covered with overlapping patches (the model's patch size, stride =
``(1 - overlap) * patch``) wherever a patch touches the body/brain mask. Each patch is mapped to
the latent space, either

* ``mode="encoder"`` — f-AnoGAN's izi_f encoder: ``z = E(x)``, one forward pass; or
* ``mode="search"`` — AnoGAN's latent search: ``z`` optimised for Γ steps on
  ``L(z) = (1 − λ)·|x − G(z)|₁ + λ·|f(x) − f(G(z))|₁`` (``f`` = the discriminator's last
  convolutional features),

and reconstructed as ``G(z)``. The voxel anomaly map is the residual ``|x − G(z)|`` (AnoGAN's
anomaly image), optionally blended with the discriminator-feature residual upsampled to the
patch (``feature_weight``); overlapping patches are averaged.

**Polarity** (:data:`POLARITIES`): ``both`` is that absolute residual; ``bright`` keeps where the
scan is brighter than its reconstruction (``x − G(z) > 0``: FLAIR lesions, enhancement) and
``dark`` where it is darker (T1 "black holes", infarcts, cavities: the model reconstructs the
white matter that should be there). A signed map ignores the opposite half of the normal
reconstruction noise, so a lesion of known polarity stands out more.

**Scan score** (what the threshold applies to): the mean of the ``top_percent`` % highest map
values inside the mask (optionally after Gaussian smoothing, ``smooth_sigma`` voxels). A lesion
occupies a small fraction of the brain: a mean over the whole mask dilutes it in the
reconstruction noise of normal tissue, while the top voxels rise with it (on the phantoms, top
0.5-2 % unsmoothed gave scan AUROC 1.0 where the mean over the mask gave 0.6). The mask matters:
for head MR, skull/scalp/CSF boundaries are where a GAN reconstructs worst, so score inside a
brain mask when there is one (``mask_name`` / ``data.mask_key``); otherwise the foreground.

**Threshold**: :func:`calibrate_threshold` takes the given percentile (95 or 99) of the scores of
held-out *normal* scans; a scan whose score is above it is flagged.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medgen.transforms.spatial import pad_amounts, pad_to, position_maps, unpad

MODES = ("encoder", "search")
POLARITIES = ("both", "bright", "dark")


# --- tiling --------------------------------------------------------------------------------
def patch_grid(
    shape: Sequence[int],
    roi: Sequence[int],
    overlap: float = 0.5,
    mask: torch.Tensor | None = None,
) -> list[tuple[slice, ...]]:
    """Overlapping windows of size `roi` covering `shape` (sides >= roi; MONAI's sliding-window
    tiling, :func:`medgen.transforms.spatial.window_slices`); with `mask`, only those touching it."""
    from medgen.transforms.spatial import window_slices

    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    windows = window_slices(shape, roi, overlap)
    if mask is not None:
        windows = [sl for sl in windows if bool(mask[sl].any())]
    return windows


# --- latent mapping ------------------------------------------------------------------------
@torch.no_grad()
def encode_patches(model, patches: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
    """izi_f: z = E(x)."""
    return model.encode(patches, coords)


def latent_search(
    model,
    patches: torch.Tensor,
    steps: int | None = None,
    lam: float | None = None,
    lr: float | None = None,
    seed: int = 0,
    coords: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """AnoGAN's iterative mapping (Schlegl et al. 2017): optimise z for Γ steps with Adam.

    Starts from z ~ N(0, I) (seeded), minimises the per-patch
    ``(1 − λ)·mean|x − G(z)| + λ·mean|f(x) − f(G(z))|`` (each patch has its own z, so the sum
    over the batch gives each z its own gradient). G and D are frozen. Returns the final z and
    the batch-mean loss at every step.
    """
    steps = model.search_steps if steps is None else steps
    lam = model.lam if lam is None else lam
    lr = model.search_lr if lr is None else lr
    G, D = model.generator, model.discriminator
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(patches.shape[0], model.latent_dim, generator=gen).to(patches.device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    history: list[float] = []
    with model.frozen(G, D), torch.enable_grad():
        with torch.no_grad():
            fx = D(model.with_position(patches, coords))[0]
        for _ in range(steps):
            rec = model.generate(z, coords)
            frec = D(model.with_position(rec, coords))[0]
            res = (patches - rec).abs().flatten(1).mean(1)
            fres = (fx - frec).abs().mean(1)
            loss = ((1.0 - lam) * res + lam * fres).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(loss.item() / patches.shape[0])
    return z.detach(), history


@torch.no_grad()
def reconstruct_patches(model, patches: torch.Tensor, mode: str = "encoder", seed: int = 0,
                        coords: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Map patches (N, C, *roi) to G(z); return reconstruction, residual maps and izi_f losses.
    ``coords``: the patches' coordinate maps (N, D, *roi), for a model that reads positions."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} not one of {MODES}")
    D = model.discriminator
    if mode == "encoder":
        z = encode_patches(model, patches, coords)
    else:
        z, _ = latent_search(model, patches, seed=seed, coords=coords)
    rec = model.generate(z, coords)
    fmap_x, fmap_r = D.feature_map(model.with_position(patches, coords)), D.feature_map(model.with_position(rec, coords))
    signed = (patches - rec).mean(1, keepdim=True)
    residual = (patches - rec).abs().mean(1, keepdim=True)
    feat_res = (fmap_x - fmap_r).abs().mean(1, keepdim=True)
    interp = "trilinear" if patches.dim() == 5 else "bilinear"
    feat_map = F.interpolate(feat_res, size=patches.shape[2:], mode=interp, align_corners=False)
    # izi_f loss per patch (f-AnoGAN's anomaly score of a patch): MSE(x, G) + κ·MSE(f(x), f(G))
    izif = (patches - rec).pow(2).flatten(1).mean(1) + model.kappa * (fmap_x - fmap_r).pow(2).flatten(1).mean(1)
    return {"recon": rec, "residual": residual, "signed": signed, "feature_residual": feat_map, "izif": izif}


# --- whole volumes ---------------------------------------------------------------------------
def anomaly_map(
    model,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    mode: str = "encoder",
    tile_everywhere: bool = False,
    progress: bool = False,
    overlap: float | None = None,
    coords: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Anomaly map of one model-space volume ``x (C, *sp)``.

    Returns ``{"map": (1, *sp) |residual|, "signed": (1, *sp) x − G(z), "recon": (C, *sp),
    "izif": mean patch izi_f loss, "patches": n}``. Patches touch `mask` unless
    ``tile_everywhere`` (validation covers the whole volume so that its reconstruction PSNR is
    honest); voxels no patch covers get map 0 and reconstruction x. ``overlap``: of the patches
    (default the model's). ``coords`` ``(D, *sp)``: the volume's coordinate maps
    (:func:`position_maps`), for a model that reads positions.
    """
    roi = tuple(model.roi_size)
    device = model.device
    x = x.to(device=device, dtype=torch.float32)
    spatial = tuple(x.shape[1:])
    background = float(x.min())
    pads = pad_amounts(spatial, roi)  # a volume smaller than a patch is padded up to one
    xp = pad_to(x, pads, background)
    cp = None if coords is None else pad_to(torch.as_tensor(coords).to(device=device, dtype=torch.float32), pads, 0.0)
    m = None
    if mask is not None:
        m = pad_to(torch.as_tensor(mask).to(device).reshape(spatial)[None].float(), pads, 0.0)[0].bool()
    overlap = model.overlap if overlap is None else overlap
    windows = patch_grid(xp.shape[1:], roi, overlap, None if tile_everywhere or m is None else m)
    if not windows:  # empty mask: cover everything rather than score nothing
        windows = patch_grid(xp.shape[1:], roi, overlap, None)
    amap = torch.zeros((1,) + tuple(xp.shape[1:]), device=device)
    smap = torch.zeros_like(amap)
    recon = torch.zeros_like(xp)
    count = torch.zeros((1,) + tuple(xp.shape[1:]), device=device)
    izif_sum = 0.0
    bs = max(1, int(model.score_batch_size))
    batches = range(0, len(windows), bs)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"patches ({mode})", leave=False, unit="batch")
    was_training = model.training
    model.eval()
    try:
        for b0 in batches:
            group = windows[b0 : b0 + bs]
            patches = torch.stack([xp[(slice(None),) + sl] for sl in group])
            pcoords = None if cp is None else torch.stack([cp[(slice(None),) + sl] for sl in group])
            out = reconstruct_patches(model, patches, mode, seed=b0, coords=pcoords)
            w = model.feature_weight
            pmap = (1.0 - w) * out["residual"] + w * out["feature_residual"] if w else out["residual"]
            for i, sl in enumerate(group):
                full = (slice(None),) + sl
                amap[full] += pmap[i]
                smap[full] += out["signed"][i]
                recon[full] += out["recon"][i]
                count[full] += 1
            izif_sum += float(out["izif"].sum())
    finally:
        model.train(was_training)
    covered = count > 0
    amap = torch.where(covered, amap / count.clamp_min(1), torch.zeros_like(amap))
    smap = torch.where(covered, smap / count.clamp_min(1), torch.zeros_like(smap))
    recon = torch.where(covered.expand_as(recon), recon / count.clamp_min(1), xp)
    return {"map": unpad(amap, pads), "signed": unpad(smap, pads), "recon": unpad(recon, pads),
            "izif": izif_sum / len(windows), "patches": len(windows)}


def polarity_map(out: dict[str, Any], polarity: str = "both") -> torch.Tensor:
    """The map of `polarity` from :func:`anomaly_map`'s output: ``both`` |x − G(z)|, ``bright``
    its positive part, ``dark`` the positive part of G(z) − x."""
    if polarity not in POLARITIES:
        raise ValueError(f"polarity {polarity!r} not one of {POLARITIES}")
    if polarity == "both":
        return out["map"]
    return (out["signed"] if polarity == "bright" else -out["signed"]).clamp_min(0.0)


def threshold_key(mode: str, polarity: str = "both") -> str:
    """Where a model keeps the threshold of `mode` and `polarity` (``both``: the mode alone, as
    runs saved before polarities did)."""
    return mode if polarity == "both" else f"{mode}:{polarity}"


# --- the simple baseline: intensity z-scores -------------------------------------------------
def tissue_stats(volumes: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> tuple[float, float]:
    """Mean and standard deviation of the model-space intensities inside the masks of the
    training scans (one pool over every scan)."""
    values = torch.cat([torch.as_tensor(v).reshape(-1)[torch.as_tensor(m).reshape(-1).bool()].double()
                        for v, m in zip(volumes, masks)])
    if values.numel() < 2:
        raise ValueError("tissue statistics need at least two voxels inside the masks")
    return float(values.mean()), float(values.std())


def zscore_map(x: torch.Tensor, stats: tuple[float, float], polarity: str = "both") -> torch.Tensor:
    """The baseline a model must beat: each voxel's intensity as a z-score against the training
    scans' tissue statistics, ``(x − μ)/σ`` of ``x (C, *sp)`` (channel mean), as a
    ``(1, *sp)`` map of `polarity` (``both`` |z|, ``bright`` z > 0, ``dark`` z < 0, as positive values)."""
    mean, std = stats
    z = (torch.as_tensor(x).float().mean(0, keepdim=True) - mean) / max(std, 1e-12)
    return polarity_map({"map": z.abs(), "signed": z}, polarity)


def smooth(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of a (1, *sp) map (sigma in voxels; 0 = none)."""
    if sigma <= 0:
        return volume
    from scipy.ndimage import gaussian_filter

    arr = gaussian_filter(volume.detach().cpu().numpy()[0].astype(np.float32), sigma=sigma, mode="nearest")
    return torch.from_numpy(arr)[None].to(volume.device)


def scan_score(amap: torch.Tensor, mask: torch.Tensor | None = None, top_percent: float = 1.0, sigma: float = 0.0) -> float:
    """Mean of the `top_percent` % highest values of the smoothed map inside `mask`."""
    values = smooth(amap, sigma)[0]
    if mask is not None:
        m = torch.as_tensor(mask).to(values.device).reshape(values.shape).bool()
        if m.any():
            values = values[m]
    values = values.flatten()
    k = max(1, int(math.ceil(values.numel() * top_percent / 100.0)))
    return float(values.topk(k).values.mean())


def calibrate_threshold(normal_scores: Sequence[float], percentile: float = 99.0) -> float:
    """Threshold = the `percentile` of the scores of held-out normal scans (linear interpolation)."""
    scores = np.asarray([s for s in normal_scores if s is not None and np.isfinite(s)], dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no finite normal-scan scores to calibrate a threshold on")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    return float(np.percentile(scores, percentile))


def flag(score: float, threshold: float | None) -> bool | None:
    """True when the score is above the threshold; None without a threshold."""
    if threshold is None:
        return None
    return bool(score > threshold)


def model_space_mask(x: torch.Tensor) -> torch.Tensor:
    """Body/brain mask of a model-space volume ``(C, *sp)`` (medgen.transforms.foreground_mask)."""
    from medgen.transforms import foreground_mask

    return torch.as_tensor(np.asarray(foreground_mask(x[0].detach().cpu()))).bool()


def score_tensor(model, x: torch.Tensor, mask: torch.Tensor | None = None, mode: str = "encoder",
                 progress: bool = False, polarity: str | None = None,
                 coords: torch.Tensor | None = None) -> tuple[float, torch.Tensor, dict[str, Any]]:
    """Score one model-space volume ``(C, *sp)``: ``(score, map (1, *sp), details)``; the map
    (of `polarity`, default the model's) is zero outside `mask` (default: the volume's foreground).
    A model that reads positions gets ``coords``, by default those of `mask`'s box."""
    polarity = polarity or getattr(model, "polarity", "both")
    if mask is None:
        mask = model_space_mask(x)
    if coords is None and getattr(model, "position_channels", 0):
        coords = position_maps(mask)
    out = anomaly_map(model, x, mask, mode, progress=progress, coords=coords)
    amap = polarity_map(out, polarity)
    score = scan_score(amap, mask, model.top_percent, model.smooth_sigma)
    # The map is reported inside the mask only: background and (with a brain mask) skull
    # residuals are not anomalies and would hide the lesion in overlays.
    out["map"] = amap * torch.as_tensor(mask).to(amap.device).reshape(amap.shape[1:])
    out["mask"] = mask
    return score, out["map"], out


def score_volume(model, data, volume: torch.Tensor, mode: str = "encoder", progress: bool = False,
                 mask: torch.Tensor | None = None, warn: Callable[[str], None] | None = None,
                 polarity: str | None = None):
    """Score one raw volume (``medgen.io.read`` output).

    ``mask``: an optional raw mask volume on the scan's grid (e.g. a brain mask read with
    ``medgen.io.read``); default: the foreground of the scan. Returns ``(score, map)``: the map
    (of `polarity`, default the model's) is a MetaTensor in the input's geometry (write it with
    ``medgen.io.write(path, map, reference=volume)``), in model-space residual units. ``warn``
    hears a scan unlike the training scans (``data.intensity_warning``).
    """
    x, state = data.preprocess(volume, mask=mask)
    if warn is not None and hasattr(data, "intensity_warning"):
        note = data.intensity_warning(volume.as_tensor() if hasattr(volume, "as_tensor") else volume, state["params"])
        if note:
            warn(note)
    score, amap, _ = score_tensor(model, x, state.get("mask"), mode, progress=progress, polarity=polarity,
                                  coords=state.get("coords"))
    return score, to_input_geometry(data, amap.cpu(), state, volume)


def to_input_geometry(data, amap: torch.Tensor, state: Any, volume: torch.Tensor) -> torch.Tensor:
    """Map a model-space map (1, *sp) back onto the input's voxel grid, keeping its values
    (``postprocess(..., intensity=False)``: an anomaly map must not get the inverse intensity
    normalisation)."""
    return data.postprocess(amap, state, intensity=False)
