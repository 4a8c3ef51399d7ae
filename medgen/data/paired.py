"""Paired volumes for image-to-image translation (pet-cgan, eagan): a source and a target scan per
subject on one grid (:class:`PairedVolumes`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset

from medgen.data.layouts import discover_paired
from medgen.data.volume_module import VolumeDataModule, _read, same_grid
from medgen.errors import ConfigError, InputError
from medgen.transforms.intensity import (MODALITIES, apply_intensity, intensity_params, output_params,
                                         pass_through_above)
from medgen.transforms.patches import RandomPatches, flips
from medgen.transforms.spatial import unpad

# Shared scaling (PET): the mean target / source ratio inside the body beyond which a pair is
# taken to be in different units (a real dose reduction keeps the mean; 1/4-dose counts would be 4x).
SHARED_UNITS_RATIO = 2.0


class PairedVolumes(VolumeDataModule):
    """Paired volumes ``root/<subject>/{source_key,target_key}`` (e.g. low-dose -> full-dose PET).

    Train items ``{"source", "target"}`` (``(1, *patch)``); val/test items are whole volumes
    ``{"source", "target", "subject", "mask"}`` (``mask``: body foreground of the source, bool).
    ``augment`` flips training patches along random axes, source and target together.

    Intensities: ``modality`` sets the scheme (:mod:`medgen.transforms.intensity`). With
    ``share_scaling`` (default: True for PET) the target is scaled with the *source's* params,
    which are known at inference, so outputs map back exactly to the source's units. Otherwise
    the target gets its own params under ``target_modality`` (default ``modality``) -- e.g.
    MR T1 -> T2 (each volume its own percentile window) or MR -> CT (``target_modality="ct"``);
    outputs then map back with the CT window (exact HU) or, for MR and PET targets, with the
    *learned target window*: the median over the training subjects of their targets' windows
    (for MR the 0.5th and 99.5th percentiles inside the head), fitted once and saved with the run
    (``state_dict``). A synthetic T2 thus comes out in the units of a typical training T2; MR has
    no absolute units, so that is the only scale a missing contrast can have.

    A subject whose source and target differ in shape or geometry (affine beyond 1e-3 mm) is an
    ``InputError`` naming the subject.
    """

    def __init__(self, root, source_key: str = "low_dose", target_key: str = "full_dose", modality: str = "pet",
                 spacing="auto", patch_size=(32, 32, 32), patches_per_volume: int = 8, batch_size: int = 4,
                 val_fraction: float = 0.2, test_fraction: float = 0.0, split_seed: int = 0, cache: bool = True,
                 target_modality: str | None = None, share_scaling: bool | None = None, cache_workers: int = 1,
                 augment: bool = False):
        super().__init__(root, modality=modality, spacing=spacing, patch_size=patch_size,
                         patches_per_volume=patches_per_volume, batch_size=batch_size, val_fraction=val_fraction,
                         test_fraction=test_fraction, split_seed=split_seed, cache=cache, cache_workers=cache_workers)
        self.source_key, self.target_key = source_key, target_key
        self.augment = bool(augment)
        self.target_modality = target_modality or modality
        if self.target_modality not in MODALITIES:
            raise ConfigError(f"target_modality must be one of {MODALITIES}, got {self.target_modality!r}")
        if share_scaling is None:
            share_scaling = modality == "pet" and self.target_modality == "pet"
        self.share_scaling = bool(share_scaling)
        self.target_window: tuple[float, float] | None = None  # fitted (or loaded with a run)

    def _discover(self) -> list[dict]:
        return discover_paired(self.root, [self.source_key, self.target_key])

    @property
    def learns_target_window(self) -> bool:
        """Whether outputs map back with the training targets' window (an own-scaled MR or PET
        target: units that are not fixed like HU and not shared with the input)."""
        return not self.share_scaling and self.target_modality in ("mr", "pet")

    def fitted_target_window(self) -> tuple[float, float] | None:
        """The learned target window ``(low, high)``: loaded with a run, or the median over the
        training subjects' targets (loading those not loaded yet); None where not learned."""
        if not self.learns_target_window:
            return None
        if self.target_window is None:
            windows = self._training_windows()
            if not len(windows):
                return None
            low, high = np.median(windows, axis=0)
            self.target_window = (float(low), float(high))
        return self.target_window

    def state_dict(self) -> dict[str, Any]:
        window = self.fitted_target_window()
        return {"target_window": list(window)} if window is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        window = state.get("target_window")
        if window is not None:
            self.target_window = (float(window[0]), float(window[1]))

    def _grid_key(self) -> str:
        return self.source_key

    def _output_params(self, params: dict) -> dict:
        if self.share_scaling:
            return params
        window = self.fitted_target_window() if self.target_window is not None or self.splits else None
        if window is not None:
            return {"modality": self.target_modality, "low": window[0], "high": window[1], "clip": True}
        return output_params(self.target_modality, params)  # CT: exact HU; a run saved without a window: the input's

    def _load(self, item: dict) -> dict:
        subject = item["subject"]
        src = self._spatial(_read(item[self.source_key]), item[self.source_key])
        tgt = self._spatial(_read(item[self.target_key]), item[self.target_key])
        if not same_grid(src, tgt):
            if tuple(src.shape) != tuple(tgt.shape):
                raise InputError(self.root / subject, f"subject '{subject}': '{self.source_key}' shape {tuple(src.shape)} "
                                                      f"differs from '{self.target_key}' shape {tuple(tgt.shape)}")
            diff = float((src.affine - tgt.affine).abs().max())
            raise InputError(self.root / subject, f"subject '{subject}': '{self.source_key}' and '{self.target_key}' "
                                                  f"have different geometry (affines differ by {diff:.3g} mm); resample them onto one grid")
        s = self._model_space(src)  # the source sets the grid, foreground and padding
        grid = self._grid(tgt)
        if self.share_scaling:
            inside = unpad(s["fg"], s["pads"])[0].reshape(grid.shape) > 0.5  # the source's foreground
            self._check_shared_units(s["grid"], grid, inside, subject)
            tgt_params = s["params"]
        else:
            tgt_params = intensity_params(grid.as_tensor(), self.target_modality)  # its own foreground
            self._record_window(subject, tgt_params)
        return {
            "source": s["image"],
            "target": self._finish(apply_intensity(grid.as_tensor(), tgt_params), s["pads"], -1.0),
            "fg": s["fg"],
            "mask": s["fg"] > 0.5,
            "subject": subject,
        }

    def _check_shared_units(self, src: MetaTensor, tgt: MetaTensor, fg: torch.Tensor, subject: str) -> None:
        """A shared scale needs both volumes in one unit: a low dose left at its fraction of the
        counts (1/4 the activity) would put the target beyond the model's range."""
        inside = fg.bool()
        if not inside.any():
            return
        s, t = float(src.as_tensor()[inside].double().mean()), float(tgt.as_tensor()[inside].double().mean())
        if s > 0 and t > 0 and 1 / SHARED_UNITS_RATIO <= t / s <= SHARED_UNITS_RATIO:
            return
        raise InputError(self.root / subject, f"subject '{subject}': mean '{self.target_key}' inside the body is "
                                              f"{t:.4g}, {t / s if s else float('inf'):.3g}x the '{self.source_key}' mean {s:.4g}; "
                                              f"both must be in the same units (e.g. kBq/ml: scale a low dose reconstructed "
                                              f"from a fraction of the counts back by 1/fraction)")

    def postprocess(self, output: torch.Tensor, state: dict, intensity: bool = True, mode: str = "bilinear") -> MetaTensor:
        """As :meth:`VolumeDataModule.postprocess`; with shared scaling, voxels whose input lies near
        or above the window's top take the input's value (see :func:`pass_through_above`)."""
        out = super().postprocess(output, state, intensity, mode)
        if intensity and self.share_scaling:
            out = pass_through_above(out, state["reference"], state["params"]["high"])
        return out

    def train_dataset(self) -> Dataset:
        keys = ["source", "target"]
        # Flips only, applied to the pair together: no interpolation, which would smooth the very
        # noise (or texture) the model must learn to map.
        transform = flips(keys, self.spatial_dims) if self.augment else None
        return RandomPatches(self._volumes("train"), keys, self.patch_size, self.patches_per_volume, transform=transform)

    def _eval_keys(self) -> list[str]:
        return ["source", "target", "subject", "mask"]
