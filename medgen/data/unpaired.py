"""Data for unpaired translation (CycleGAN, Zhu et al. 2017): two sets of scans, e.g. MR and CT of
different patients.

Layout (DESIGN.md section 2): ``root/A/<entry>`` and ``root/B/<entry>``, an entry being a volume
file or a DICOM series folder, named after the file (``sub-01.nii.gz`` -> ``sub-01``). Each side
has its own modality and so its own intensity scheme (e.g. MR percentile window for A, the fixed
HU window for B, which maps outputs back to exact HU).

Entries with the same name on both sides are one subject: they go to the same split, and when
they also share a grid (a registered MR/CT pair) validation can score a translation against the
real scan (``"paired"``); training never uses the pairing. FID needs no pairing: every validation
scan, with or without a counterpart, joins the sets FID compares (``CycleGAN.fid_sets``).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset

from medgen.data.layouts import discover_unpaired
from medgen.data.volume_module import VolumeDataModule, same_grid
from medgen.errors import ConfigError, InputError
from medgen.transforms.intensity import CT_WINDOW, MODALITIES, output_params
from medgen.transforms.patches import JoinedPatches, RandomPatches, flips

SIDES = ("A", "B")


class UnpairedVolumes(VolumeDataModule):
    """Volumes of two domains ``A`` and ``B``.

    Train items ``{"A", "B"}``: a patch ``(1, *patch)`` of an A volume and one of a random B volume
    (a new pairing every epoch), both centred in the body. ``augment`` flips each patch.

    Val/test/all items: one per subject name, ``{"A", "B", "mask_A", "mask_B", "subject",
    "paired"}`` with the sides that exist (whole volumes in model space); ``paired`` is True when
    both sides exist on one grid, so a translation can be compared with the real scan (inside
    the target side's ``mask_*``).

    ``spacing: auto`` takes the median voxel size of both sides' training volumes. An output
    translated into CT is mapped back with the fixed HU window (exact HU). MR has no absolute
    units: an output translated into an MR (or PET) side is mapped back with that side's *learned
    window*, the median over its training volumes of their windows (for MR the 0.5th and 99.5th
    percentiles inside the head), fitted once and saved with the run (``state_dict``), so a
    synthetic MR comes out in the units of a typical training MR.
    """

    def __init__(self, root, modality_a: str = "mr", modality_b: str = "ct", spacing="auto", patch_size=(32, 32, 32),
                 patches_per_volume: int = 8, batch_size: int = 1, val_fraction: float = 0.2, test_fraction: float = 0.0,
                 split_seed: int = 0, cache: bool = True, cache_workers: int = 1, augment: bool = False):
        super().__init__(root, modality=modality_a, spacing=spacing, patch_size=patch_size,
                         patches_per_volume=patches_per_volume, batch_size=batch_size, val_fraction=val_fraction,
                         test_fraction=test_fraction, split_seed=split_seed, cache=cache, cache_workers=cache_workers)
        if modality_b not in MODALITIES:
            raise ConfigError(f"modality_b must be one of {MODALITIES}, got {modality_b!r}")
        self.modalities = {"A": modality_a, "B": modality_b}
        self.augment = bool(augment)
        self.windows: dict[str, tuple[float, float]] = {}  # side -> learned window (fitted or loaded)
        self._side_windows: dict[str, dict[str, tuple[float, float]]] = {side: {} for side in SIDES}

    def model_settings(self) -> dict:
        """The B side's HU window when it is CT, so the model can report its errors in HU."""
        return {"hu_window_b": list(CT_WINDOW) if self.modalities["B"] == "ct" else None}

    # --- learned windows of the MR/PET sides ----------------------------------------------------
    def learns_window(self, side: str) -> bool:
        return self.modalities[side] in ("mr", "pet")

    def fitted_window(self, side: str) -> tuple[float, float] | None:
        """``side``'s learned window: loaded with a run, or the median over its training volumes'
        windows (loading those not loaded yet); None where the side's units are fixed (CT)."""
        if not self.learns_window(side):
            return None
        if side not in self.windows:
            train = [i for i in self._split("train") if side in i]
            if any(i["subject"] not in self._side_windows[side] for i in train):
                dataset = self._volumes("train")
                for index, item in enumerate(self._split("train")):
                    if side in item and item["subject"] not in self._side_windows[side]:
                        dataset[index]
            windows = [self._side_windows[side][i["subject"]] for i in train if i["subject"] in self._side_windows[side]]
            if not windows:
                return None
            low, high = np.median(np.asarray(windows, np.float64), axis=0)
            self.windows[side] = (float(low), float(high))
        return self.windows[side]

    def state_dict(self) -> dict:
        windows = {side: list(w) for side in SIDES if (w := self.fitted_window(side)) is not None}
        return {"windows": windows} if windows else {}

    def load_state_dict(self, state: dict) -> None:
        for side, window in (state.get("windows") or {}).items():
            self.windows[side] = (float(window[0]), float(window[1]))

    # --- discovery and split ---------------------------------------------------------------
    def _discover(self) -> list[dict]:
        by_name: dict[str, dict] = {}
        for side, entries in zip(SIDES, discover_unpaired(self.root)):
            for entry in entries:
                by_name.setdefault(entry["subject"], {"subject": entry["subject"]})[side] = entry["image"]
        return list(by_name.values())

    def _grid_paths(self, items: list[dict]) -> list:
        return [i[side] for i in items for side in SIDES if side in i]

    # --- one subject ---------------------------------------------------------------------------
    def _load(self, item: dict) -> dict:
        out = {"subject": item["subject"]}
        loaded = {}
        for side in SIDES:
            if side in item:
                loaded[side] = v = self._load_volume(item[side], self.modalities[side])
                if self.splits is not None and item in self.splits["train"]:
                    self._side_windows[side][item["subject"]] = (float(v["params"]["low"]), float(v["params"]["high"]))
                out.update({side: v["image"], f"fg_{side}": v["fg"], f"mask_{side}": v["fg"] > 0.5})
        out["paired"] = len(loaded) == 2 and same_grid(loaded["A"]["grid"], loaded["B"]["grid"])
        return out

    # --- datasets -------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        volumes = self._volumes("train")
        streams = []
        for side in SIDES:
            indices = [k for k, i in enumerate(self._split("train")) if side in i]
            if not indices:
                raise InputError(self.root / side, f"no '{side}' volume left for training (the folder has too few)")
            patches = RandomPatches(Subset(volumes, indices), [side], self.patch_size, self.patches_per_volume,
                                    label_key=f"fg_{side}",
                                    transform=flips([side], self.spatial_dims) if self.augment else None)
            streams.append((patches, ""))
        return JoinedPatches(streams)

    def _eval_keys(self) -> list[str]:
        return ["A", "B", "mask_A", "mask_B", "subject", "paired"]

    # --- inference ------------------------------------------------------------------------------
    def preprocess(self, volume, side: str = "A") -> tuple:
        """A raw ``side`` volume to model space; its ``postprocess`` gives the other side's units."""
        if side not in SIDES:
            raise ValueError(f"side must be 'A' or 'B', got {side!r}")
        tensor, state = super().preprocess(volume, modality=self.modalities[side])
        other = "B" if side == "A" else "A"
        window = self.windows.get(other) if self.learns_window(other) else None
        if window is None and self.learns_window(other) and self.splits is not None:
            window = self.fitted_window(other)
        if window is not None:
            state["output_params"] = {"modality": self.modalities[other], "low": window[0], "high": window[1],
                                      "clip": True}
        else:  # CT: exact HU (a run saved without a window: the input's)
            state["output_params"] = output_params(self.modalities[other], state["params"])
        return tensor, state
