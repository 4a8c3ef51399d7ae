"""Per-modality intensity normalisation to the model range [-1, 1], and back.

Every scheme is a linear map of an input window ``[low, high]`` onto ``[-1, 1]`` followed by
clipping to ``[-1, 1]`` (documented per scheme); the inverse is the linear map back, so outputs
return to the input's units (HU, kBq/ml, scanner units). The window is stored in a small params
dict (``{"modality", "low", "high", "clip"}``) kept with each volume so outputs can be mapped back.

* ``ct``: fixed window ``[-1000, 2000]`` HU (:data:`CT_WINDOW`): air to dense bone. Values below
  -1000 (scanner padding -1024/-2048) become -1000 on the way back; metal above 2000 HU is clipped.
* ``pet``: ``[0, headroom * p_99.5]`` where the 99.5th percentile is taken inside the body mask of
  the *source* (e.g. low-dose) volume, so the same factor is available at inference, and the
  ``headroom`` (2) leaves room for a full-dose image's and hot lesions' higher peaks. The target
  of a pair is scaled with the source's params, so the network sees both in the same units.
  Negative reconstructed activity is clipped to 0.
* ``mr``: ``[p_0.5, p_99.5]`` inside the foreground mask (per volume; MR units are arbitrary).
  Background darker than the 0.5th percentile maps to -1; the brightest 0.5 % are clipped.
* ``none``: identity (the volume must already be in [-1, 1]).

Params with ``"clip": "low"`` clamp only the low end: anomaly detection keeps what is brighter
than the window (a FLAIR lesion brighter than any normal tissue) instead of flattening it.

Params may also carry ``"standard"`` (:mod:`medgen.transforms.standardize`): a piecewise-linear
histogram standardisation applied after the linear map (before clipping) and undone first.
"""

from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medgen.transforms.masks import foreground_mask

CT_WINDOW = (-1000.0, 2000.0)
PET_PERCENTILE = 99.5
PET_HEADROOM = 2.0
MR_PERCENTILES = (0.5, 99.5)
MODALITIES = ("ct", "pet", "mr", "none")


def _as_numpy(volume) -> np.ndarray:
    if isinstance(volume, torch.Tensor):
        return volume.detach().cpu().numpy()
    return np.asarray(volume)


def _values_in(volume, mask) -> np.ndarray:
    arr = _as_numpy(volume).astype(np.float64)
    if mask is None:
        mask = foreground_mask(arr)
    values = arr[_as_numpy(mask).astype(bool)] if mask is not None else arr.ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:  # empty foreground: fall back to the whole volume
        values = arr[np.isfinite(arr)]
    return values


def ct_params(window=CT_WINDOW) -> dict:
    return {"modality": "ct", "low": float(window[0]), "high": float(window[1]), "clip": True}


def output_params(modality: str, input_params: dict) -> dict:
    """The window that maps a model output in ``modality`` back to units: CT's fixed HU window
    (exact HU), else the input's own (MR units are arbitrary; PET shares the input's scale)."""
    return ct_params() if modality == "ct" else input_params


def pet_params(volume, mask=None, percentile: float = PET_PERCENTILE, headroom: float = PET_HEADROOM) -> dict:
    values = _values_in(volume, mask)
    ref = float(np.percentile(values, percentile)) if values.size else 0.0
    if ref <= 0:
        ref = float(values.max()) if values.size and values.max() > 0 else 1.0
    return {"modality": "pet", "low": 0.0, "high": headroom * ref, "clip": True}


def mr_params(volume, mask=None, percentiles=MR_PERCENTILES) -> dict:
    values = _values_in(volume, mask)
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:
        high = low + 1.0
    return {"modality": "mr", "low": low, "high": high, "clip": True}


def intensity_params(volume, modality: str, mask=None) -> dict:
    """The normalisation params of ``volume`` for ``modality`` in :data:`MODALITIES`."""
    if modality == "ct":
        return ct_params()
    if modality == "pet":
        return pet_params(volume, mask)
    if modality == "mr":
        return mr_params(volume, mask)
    if modality == "none":
        return {"modality": "none", "low": -1.0, "high": 1.0, "clip": False}
    raise ValueError(f"unknown modality {modality!r} (expected one of {', '.join(MODALITIES)})")


def apply_intensity(volume, params: dict):
    """Map ``volume`` (tensor or array) into [-1, 1] with ``params`` (same type out, float32).

    Values that are not finite become background (-1; +inf the window's top): some PET
    reconstructions write NaN outside their field of view, and one NaN in a patch would make
    every loss NaN.
    """
    scale = 2.0 / (params["high"] - params["low"])
    out = (volume - params["low"]) * scale - 1.0
    if params.get("standard"):
        from medgen.transforms.standardize import apply_standard

        out = apply_standard(out, params["standard"])
    if isinstance(out, torch.Tensor):
        out = torch.nan_to_num(out.float(), nan=-1.0, posinf=1.0, neginf=-1.0)
    else:
        out = np.nan_to_num(np.asarray(out, np.float32), nan=-1.0, posinf=1.0, neginf=-1.0)
    clip = params.get("clip", True)
    if clip:  # True: both ends; "low": only the low end (values above the window stay above 1)
        high = None if clip == "low" else 1.0
        out = out.clamp(-1.0, high) if isinstance(out, torch.Tensor) else np.clip(out, -1.0, high)
    return out.float() if isinstance(out, torch.Tensor) else out.astype(np.float32)


def invert_intensity(volume, params: dict):
    """Map a model-space volume back to the units ``params`` came from."""
    if params.get("standard"):
        from medgen.transforms.standardize import invert_standard

        volume = invert_standard(volume, params["standard"])
    return (volume + 1.0) * (0.5 * (params["high"] - params["low"])) + params["low"]


def normalize(volume, modality: str, params: dict | None = None, mask=None):
    """``(normalised volume, params)``; pass ``params`` to reuse another volume's window."""
    if params is None:
        params = intensity_params(volume, modality, mask)
    return apply_intensity(volume, params), params


class NormalizeIntensityd(MapTransform):
    """Dictionary transform: compute the window on ``ref_key`` (default: the first key) and apply
    it to every key; the params go to ``data[params_key]`` (default ``"<ref_key>_intensity"``).
    With ``shared=False`` each key gets its own params in ``"<key>_intensity"``."""

    def __init__(self, keys: KeysCollection, modality: str, ref_key: str | None = None, shared: bool = True,
                 params_key: str | None = None, mask_key: str | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.modality = modality
        self.ref_key = ref_key or self.keys[0]
        self.shared = shared
        self.params_key = params_key or f"{self.ref_key}_intensity"
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        mask = d.get(self.mask_key) if self.mask_key else None
        if self.shared:
            params = intensity_params(d[self.ref_key], self.modality, mask)
            d[self.params_key] = params
        for key in self.key_iterator(d):
            if not self.shared:
                params = intensity_params(d[key], self.modality, mask if key == self.ref_key else None)
                d[f"{key}_intensity"] = params
            d[key] = apply_intensity(d[key], params)
        return d


# Shared scaling: where the input passes this share of its window's top, the output blends into the
# input itself (all of it at the top and above), which the model's range cannot represent.
PASS_THROUGH_FROM = 0.9


def pass_through_above(output, reference, high: float, start: float = PASS_THROUGH_FROM) -> MetaTensor:
    """``output`` where ``reference`` (the input, same grid and units) is below ``start * high``,
    the input itself from ``high`` up, a linear blend between.

    Why: model space ends at the window's top (2 x p99.5 of the input's body for PET), so a model
    can neither see nor produce more: whole-body PET's bladder, kidneys and hottest lesions would
    come back capped there, and with them the SUVmax a reader measures. Where the input is that
    hot it also holds the most counts, so the measurement itself is the estimate with the least
    relative noise. Brain PET stays below: the benchmark's volumes peak at 0.61-0.84 of the top.
    """
    ref = (reference.as_tensor() if isinstance(reference, MetaTensor) else torch.as_tensor(reference)).float()
    weight = torch.nan_to_num(((ref - start * high) / ((1.0 - start) * high)).clamp(0.0, 1.0), nan=0.0)
    if not bool((weight > 0).any()):
        return output
    blended = output.as_tensor() * (1.0 - weight) + ref * weight
    return MetaTensor(blended, affine=output.affine, meta=dict(output.meta))
