"""Whole-volume validation/evaluation shared by the trainer and ``medgen evaluate``.

For each volume, ``model.validation_step(batch)`` returns model-space images named in
``model.metric_pairs`` (and optional scalars). For each pair ``prefix: (pred, ref)`` the
engine computes :func:`medgen.metrics.image_metrics` with ``data_range`` = the width of
``model.value_range`` (named ``<prefix>psnr`` ...) and FID (``<prefix>fid``), so e.g. the
low-dose input's numbers sit beside the estimate's. Where the data gives a ``"mask"`` (the body,
or a brain mask), PSNR, MAE and NMSE inside it are ``<prefix>psnr_mask`` ...: air around a head
inflates whole-volume PSNR, and papers report inside the body or brain (no masked SSIM: its map
would double validation's cost). ``model.metric_masks`` (``{prefix: batch key}``) names another mask
for a pair, e.g. the target side's own (CycleGAN: ``mask_B`` for A -> B, ``mask_A`` for B -> A).

FID of an unpaired model is between *sets*: ``model.fid_sets`` (``{prefix: (fake_key, real_key)}``)
adds every fake image any volume returns to the fake side and every real one to the real side, on
their own, so subjects with one side only (the normal unpaired case) count. Pair metrics need both
images of a pair on one grid: a volume whose images are not (``"registered": False`` in
validation_step's output) gets none, its images still join the FID sets. Other prefixes' FIDs pair
``metric_pairs`` volume by volume. Scalars are averaged over volumes. Under torchrun each rank
validates its shard; means are reduced over ranks, and FID inputs are gathered on rank 0 (FID is
not a mean over volumes).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable

import torch

from medgen.engine.distributed import DistEnv


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`; leave strings and the rest alone."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().float().item())
    return None


def _images(out: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Image tensors (B, C, *spatial) returned by validation_step, in their order."""
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and v.ndim >= 4}


def grid_order(images: dict, metric_pairs: dict) -> list[str]:
    """Columns of a validation grid: inputs first, then the main pair's prediction and reference
    (input | output | target, as the README says)."""
    pred, ref = metric_pairs.get("", (None, None))
    return [k for k in images if k not in (pred, ref)] + [k for k in (pred, ref) if k in images]


def fid_prefixes(model, baselines: bool = True) -> list[str]:
    """The prefixes FID is computed for: every set of ``model.fid_sets`` (outputs of their own,
    e.g. CycleGAN's two directions) and, with ``baselines``, every other pair of ``metric_pairs``
    (e.g. the low-dose input's, which ``medgen evaluate`` reports); without, the main pair ``""``
    stands for a model that has no sets (training pays for no baseline's FID)."""
    sets = list(getattr(model, "fid_sets", None) or {})
    pairs = [p for p in model.metric_pairs if p not in sets]
    return sets + (pairs if baselines else [p for p in pairs if p == "" and not sets])


def _fid_update(fid, fake, real, value_range) -> None:
    """A paired update (both given: fake sliced where the real is) or one side of a set FID."""
    if fake is not None and real is not None:
        fid.update(fake, real, value_range=value_range)
    elif fake is not None:
        fid.update_fake(fake, value_range=value_range)
    elif real is not None:
        fid.update_real(real, value_range=value_range)


def _masked_metrics(pred, ref, data_range: float, mask) -> dict[str, float]:
    """PSNR, MAE and NMSE inside ``mask`` (not SSIM: a second SSIM map per volume would double
    validation's cost, which the training budget pays)."""
    from medgen.metrics import mae, nmse, psnr

    return {"psnr": psnr(pred, ref, data_range, mask), "mae": mae(pred, ref, mask), "nmse": nmse(pred, ref, mask)}


def evaluate_volumes(
    model,
    loader,
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    fid_slices: int = 0,
    fids: dict | None = None,
    dist: DistEnv | None = None,
    grid_path: str | Path | None = None,
    grid_title: str | None = None,
    per_volume: Callable[[str, dict[str, float]], None] | None = None,
    progress: bool = False,
    desc: str = "validate",
    phase: Callable[[str], contextlib.AbstractContextManager] | None = None,
    constant_cache: dict | None = None,
    fid_real_only: bool = False,
    timings: dict | None = None,
) -> dict[str, float]:
    """Mean metrics over the volumes of `loader` (batch size 1), reduced across ranks.

    fids: {prefix: :class:`medgen.metrics.FID`} to reuse across epochs (each caches the real
    volumes' features); default new ones with `fid_slices` slices per axis (0 = no FID).
    grid_path: write a slice grid of the first volume's images there (rank 0's first volume); a
    model without images draws there itself (``model.save_validation_figure``).
    per_volume(subject, metrics): called for every volume (e.g. per-subject JSON).
    phase(name): a context in which FID (``"fid"``) and the slice grid (``"images"``) run, for
    the engine's :class:`~medgen.engine.budget.PhaseTimer`.
    constant_cache: a dict kept across calls on the same loader: the metrics of
    ``model.constant_pairs`` (inputs that no weight changes, e.g. the low-dose PET) are computed
    once per volume and then reused.
    fid_real_only: feed only the real side of each FID (no value comes out): fills the real-feature
    cache a later validation's FID uses, and what it costs is what that FID's fake side will.
    timings: a dict that gets ``"network"``, the seconds spent in ``model.validation_step``.
    """
    from tqdm.auto import tqdm

    from medgen.metrics import FID, image_metrics

    dist = dist or DistEnv()
    phase = phase or (lambda name: contextlib.nullcontext())
    constant = set(getattr(model, "constant_pairs", ())) if constant_cache is not None else set()
    lo, hi = model.value_range
    data_range = float(hi - lo)
    fid_sets = dict(getattr(model, "fid_sets", None) or {})
    mask_keys = dict(getattr(model, "metric_masks", None) or {})
    if fids is None:
        fids = {p: FID(n_slices=fid_slices, device=device) for p in fid_prefixes(model)} if fid_slices else {}
    for fid in fids.values():
        fid.reset()
    fid_inputs: list[tuple[str, Any, Any]] = []  # other ranks' share (fake, real; None: a set's other side)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index, batch in enumerate(tqdm(loader, desc=desc, leave=False, disable=not progress)):
                batch = to_device(batch, device)
                started = time.perf_counter()
                with autocast():
                    out = model.validation_step(batch)
                if timings is not None:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    timings["network"] = timings.get("network", 0.0) + time.perf_counter() - started
                images = {k: v.float() for k, v in _images(out).items()}
                registered = bool(out.get("registered", True))
                metrics: dict[str, float] = {}
                for prefix, (pred_key, ref_key) in model.metric_pairs.items():
                    if not registered or pred_key not in images or ref_key not in images:
                        continue
                    pred, ref = images[pred_key], images[ref_key]
                    cached = constant_cache.get((index, prefix)) if prefix in constant else None
                    if cached is None:
                        cached = {f"{prefix}{name}": float(value)
                                  for name, value in image_metrics(pred, ref, data_range=data_range).items()}
                        mask = batch.get(mask_keys.get(prefix, "mask")) if isinstance(batch, dict) else None
                        if torch.is_tensor(mask) and mask.shape == pred.shape and bool(mask.any()):
                            for name, value in _masked_metrics(pred, ref, data_range, mask.bool()).items():
                                cached[f"{prefix}{name}_mask"] = value
                        if prefix in constant:
                            constant_cache[(index, prefix)] = cached
                    metrics.update(cached)
                for prefix in fids:
                    if prefix in fid_sets:  # each side on its own
                        fake_key, real_key = fid_sets[prefix]
                        parts = [(images.get(fake_key), None), (None, images.get(real_key))]
                    else:
                        pred_key, ref_key = model.metric_pairs.get(prefix, (None, None))
                        both = registered and pred_key in images and ref_key in images
                        parts = [(images[pred_key], images[ref_key])] if both else []
                    if fid_real_only:
                        parts = [(None, real) for _, real in parts if real is not None]
                    for fake, real in parts:
                        if fake is None and real is None:
                            continue
                        with phase("fid"):
                            if dist.is_main:
                                _fid_update(fids[prefix], fake, real, (lo, hi))
                            else:
                                fid_inputs.append((prefix, None if fake is None else fake.cpu(),
                                                   None if real is None else real.cpu()))
                for key, value in out.items():
                    scalar = _scalar(value)
                    if scalar is not None and key not in images and key != "registered":
                        metrics[key] = scalar
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                if per_volume is not None:
                    subject = batch.get("subject", [str(index)]) if isinstance(batch, dict) else [str(index)]
                    per_volume(str(subject[0] if isinstance(subject, (list, tuple)) else subject), metrics)
                if index == 0 and grid_path is not None and dist.is_main:
                    with phase("images"):
                        if images:
                            from medgen.viz import save_slice_grid
                            from medgen.viz.slices import grid_centre

                            shown = {k: images[k][0, 0].detach().cpu() for k in grid_order(images, model.metric_pairs)}
                            save_slice_grid(
                                grid_path,
                                shown,
                                value_range=(lo, hi),
                                title=grid_title,
                                # through the largest labelled region (a lesion), where the model says
                                centre=grid_centre(shown, getattr(model, "grid_focus", ()), lo),
                            )
                        else:  # no images (a table model): the model draws its own figure
                            model.save_validation_figure(out, batch, grid_path, grid_title)
        means = dist.reduce_means(sums, counts)
        if fids:
            with phase("fid"):
                means.update(_gathered_fids(fids, fid_inputs, dist, device, (lo, hi)))
        return means
    finally:
        model.train(was_training)


def _gathered_fids(fids: dict, fid_inputs: list, dist: DistEnv, device, value_range) -> dict[str, float]:
    """``<prefix>fid`` for each accumulator, with the other ranks' volumes added on rank 0; every
    rank returns the same numbers."""
    means: dict[str, float] = {}
    gathered = dist.gather_objects(fid_inputs) if dist.enabled else [fid_inputs]
    if dist.is_main:
        for share in gathered[1:]:
            for prefix, fake, real in share:
                _fid_update(fids[prefix], None if fake is None else fake.to(device),
                            None if real is None else real.to(device), value_range)
        for prefix, fid in fids.items():
            # a set with too few images on a side (no real B in a validation of A scans) has none
            if min(fid.n_images, fid.n_real) >= 2:
                means[f"{prefix}fid"] = float(fid.compute())
    return dist.broadcast_object(means) if dist.enabled else means
