"""Single volumes per subject (anomaly detection: train on normal scans; :class:`Volumes`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset

from medgen.data.layouts import discover_volumes
from medgen.data.volume_module import VolumeDataModule
from medgen.errors import ConfigError
from medgen.transforms.masks import require_voxels
from medgen.transforms.patches import RandomPatches, augmentation
from medgen.transforms.spatial import position_maps

STANDARDIZE = ("none", "nyul")


class Volumes(VolumeDataModule):
    """Single volumes ``root/<subject>/<key>`` (anomaly detection: train on normal scans).

    Intensities as :class:`PairedVolumes`' ``modality`` scheme, but values above the window are
    kept (only the dark end is clipped), so hyperintense anomalies keep their contrast.

    Train items ``{"image"}`` patches (optionally augmented: flips, small affine, intensity);
    val/test items ``{"image", "subject", "mask"}`` whole volumes, where ``mask`` is
    ``root/<subject>/<mask_key>`` when ``mask_key`` is given (e.g. ``"brain_mask"``) else the body
    foreground; with ``label_key`` (e.g. ``"lesion"``) also ``"label"`` (bool) for evaluation.

    ``standardize="nyul"``: after the linear window, Nyúl–Udupa histogram standardisation inside
    the mask (:mod:`medgen.transforms.standardize`): the standard landmarks are fitted on the
    training scans (one extra read of each at set-up) and saved with the run, so a scan from
    another scanner is mapped onto the training scans' tissue contrast before it is scored.

    ``position=True``: items also carry ``"coords"``, coordinate maps across the mask's bounding
    box (:func:`medgen.transforms.spatial.position_maps`), and the model reads the patches'
    positions (``model_settings``: ``position_channels``).
    """

    def __init__(self, root, key: str = "t1", modality: str = "mr", spacing="auto", patch_size=(32, 32, 32),
                 patches_per_volume: int = 8, batch_size: int = 8, val_fraction: float = 0.2, split_seed: int = 0,
                 cache: bool = True, augment: bool = False, test_fraction: float = 0.0, mask_key: str | None = None,
                 label_key: str | None = None, cache_workers: int = 1, standardize: str = "none",
                 position: bool = False):
        super().__init__(root, modality=modality, spacing=spacing, patch_size=patch_size,
                         patches_per_volume=patches_per_volume, batch_size=batch_size, val_fraction=val_fraction,
                         test_fraction=test_fraction, split_seed=split_seed, cache=cache, cache_workers=cache_workers)
        self.key = key
        self.augment = bool(augment)
        self.mask_key, self.label_key = mask_key, label_key
        if standardize not in STANDARDIZE:
            raise ConfigError(f"standardize must be one of {STANDARDIZE}, got {standardize!r}")
        self.standardize = standardize
        self.position = bool(position)
        self.standard: list[float] | None = None  # Nyúl standard landmarks (model space), fitted once
        # the training scans' lowest value and windows (lowest low, median and highest high): fitted,
        # saved with the run, and what `medgen score` compares a new scan with (intensity_warning)
        self.intensity_range: dict[str, float] | None = None
        self._train_floors: dict[str, float] = {}  # subject -> lowest raw value (training subjects count)

    def model_settings(self) -> dict:
        return {"position_channels": self.spatial_dims if self.position else 0}

    def _intensity_params(self, volume: torch.Tensor, mask, modality: str | None = None) -> dict:
        # Clip only the dark end: an anomaly brighter than every normal tissue (a FLAIR lesion)
        # must keep its contrast, not be flattened to the window's top like the brightest 0.5 %.
        params = super()._intensity_params(volume, mask, modality)
        return {**params, "clip": "low"} if params["clip"] else params

    def _discover(self) -> list[dict]:
        extra = [k for k in (self.mask_key, self.label_key) if k]
        return discover_volumes(self.root, self.key, extra)

    def _grid_key(self) -> str:
        return self.key

    def _load_mask(self, item: dict, key: str, image: MetaTensor, pads) -> torch.Tensor:
        mask = self._load_labels(item[key], image, item["subject"], key) > 0.5
        return self._finish(mask.float(), pads, 0.0) > 0.5

    def state_dict(self) -> dict[str, Any]:
        if self.intensity_range is None:
            windows = self._training_windows()
            if len(windows):
                train = {i["subject"] for i in self._split("train")}
                floor = min(v for k, v in self._train_floors.items() if k in train)
                self.intensity_range = {"floor": floor, "low": float(windows[:, 0].min()),
                                        "median_high": float(np.median(windows[:, 1])), "max_high": float(windows[:, 1].max())}
        state: dict[str, Any] = {}
        if self.intensity_range is not None:
            state["intensity_range"] = dict(self.intensity_range)
        if self.standardize != "none":
            state["standard"] = list(self._fitted_standard())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("intensity_range") is not None:
            self.intensity_range = {k: float(v) for k, v in state["intensity_range"].items()}
        if state.get("standard") is not None:
            self.standard = [float(v) for v in state["standard"]]

    # --- histogram standardisation ---------------------------------------------------------
    def _fitted_standard(self) -> list[float]:
        """The standard landmarks, fitted on the training scans the first time they are needed."""
        if self.standard is None:
            from medgen.transforms.standardize import fit_standard, landmarks

            marks = []
            for item in self._split("train") or self._split("all"):
                v = self._load_volume(item[self.key])
                marks.append(landmarks(v["image"], self._region(item, v)))
            self.standard = fit_standard(marks)
        return self.standard

    def _region(self, item: dict, v: dict) -> torch.Tensor:
        """Where a subject is scored, calibrated and standardised: its mask_key mask, else its foreground."""
        if not self.mask_key:
            return v["fg"] > 0.5
        region = self._load_mask(item, self.mask_key, v["raw"], v["pads"])
        # nothing to score, calibrate or standardise in: refused whatever data.standardize is
        return require_voxels(region, item[self.mask_key], f"subject '{item['subject']}': '{self.mask_key}'")

    def _standardised(self, image: torch.Tensor, region: torch.Tensor, params: dict) -> tuple[torch.Tensor, dict]:
        """A model-space image and its params with the histogram standardisation added (when on)."""
        if self.standardize == "none":
            return image, params
        from medgen.transforms.standardize import apply_standard, landmarks

        standard = {"from": landmarks(image, region), "to": list(self._fitted_standard())}
        # -1 is the model's background (and the padding): nothing maps below it, as with clip "low"
        return apply_standard(image, standard).clamp_min(-1.0), {**params, "standard": standard}

    def preprocess(self, volume: torch.Tensor, modality: str | None = None,
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """As the base's; ``mask`` (a raw mask on the volume's grid, e.g. its brain mask) goes
        to the model grid as ``state["mask"]`` and is where the standardisation's landmarks are
        taken (else the foreground), as in training with ``mask_key``."""
        x, state = super().preprocess(volume, modality)
        state["mask"] = None if mask is None else self.mask_to_model_space(mask, state)
        region = state["fg"][0] if state["mask"] is None else state["mask"]
        x, params = self._standardised(x, region, state["params"])
        state["params"] = state["output_params"] = params
        if self.position:
            state["coords"] = position_maps(region)
        return x, state

    def intensity_warning(self, volume, params: dict | None = None) -> str | None:
        """A sentence when a raw scan's intensities are unlike every training scan's: a CT in HU
        (air at -1000) scored by a model of MR scans (never below 0), or a contrast on another
        scale. Scores only compare like with like. None when it fits or the run saved no range.
        ``params``: the scan's window as ``preprocess`` found it (computed here when not given)."""
        r = self.intensity_range
        if r is None or self.modality in ("ct", "none"):
            return None
        values = torch.as_tensor(volume).reshape(-1)[::7].float()  # a sample is enough for percentiles
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            return None
        floor = float(torch.quantile(values, 0.01))
        if params is None:
            params = self._intensity_params(torch.as_tensor(volume), None)
        span = max(r["median_high"] - r["low"], 1e-6)
        negative = floor < r["floor"] - 0.5 * span and floor < -100  # HU-like air below anything in training
        scale = params["high"] > 10 * r["max_high"] or params["high"] < 0.1 * r["median_high"]
        if not (negative or scale):
            return None
        return (f"intensities from {floor:.4g} (1st percentile) up to {params['high']:.4g} are unlike the training "
                f"scans' ({r['floor']:.4g} at the lowest, typically {r['low']:.4g}..{r['median_high']:.4g}): a "
                f"different modality or contrast? Its score is not comparable with theirs")

    def _load(self, item: dict) -> dict:
        v = self._load_volume(item[self.key])
        self._record_window(item["subject"], v["params"])
        self._train_floors[item["subject"]] = float(torch.nan_to_num(v["raw"].as_tensor(), nan=0.0).min())
        region = self._region(item, v)
        out = {
            "image": self._standardised(v["image"], region, v["params"])[0],
            "fg": v["fg"],
            "mask": region,
            "subject": item["subject"],
        }
        if self.position:
            out["coords"] = position_maps(region[0])
        if self.label_key:
            out["label"] = self._load_mask(item, self.label_key, v["raw"], v["pads"])
        return out

    def train_dataset(self) -> Dataset:
        keys = ["image"] + (["coords"] if self.position else [])  # positions move with the patch
        transform = augmentation(keys, self.spatial_dims) if self.augment else None
        return RandomPatches(self._volumes("train"), keys, self.patch_size, self.patches_per_volume,
                             transform=transform)

    def _eval_keys(self) -> list[str]:
        return ["image", "subject", "mask"] + (["label"] if self.label_key else []) + (["coords"] if self.position else [])
