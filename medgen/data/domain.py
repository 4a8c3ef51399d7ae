"""Data for domain-adversarial segmentation (Kamnitsas et al. 2017): labelled scans from a source
domain, unlabelled scans from a target domain (another scanner or protocol).

Layout (DESIGN.md section 2): ``root/source/<subject>/{image,label}`` and
``root/target/<subject>/image``, a target ``label`` being optional and used only for evaluation.
Each domain is split by subject on its own (so both have validation subjects); subjects are
named ``source/<name>`` and ``target/<name>``.

Images go through the volume pipeline of :mod:`medgen.data.volume_module` (grid, per-volume intensity
normalisation, padding); label maps are resampled with nearest neighbours and must hold class
indices ``0 .. n_classes - 1`` (0 = background).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from medgen.data.layouts import discover_domain
from medgen.data.volume_module import VolumeDataModule
from medgen.errors import ConfigError, InputError
from medgen.transforms.patches import JoinedPatches, RandomPatches, flips

DOMAINS = ("source", "target")


class DomainVolumes(VolumeDataModule):
    """Labelled source and unlabelled target volumes.

    Train items ``{"image", "label", "target_image"}``: a source patch ``(1, *patch)``, its label
    patch (class indices, as float), and a patch of a random target subject (a new pairing every
    epoch). A share ``label_fraction`` of source patches is centred on a labelled voxel (label > 0),
    the rest anywhere in the body, so small lesions are seen often enough (nnU-Net oversamples a
    third); target patches are centred in the body. ``augment`` flips patches (a label with its image).
    With ``target_labels`` (training on target labels: dann-seg's ``target_supervised`` upper
    bound) every training target subject needs a label, target patches are sampled like the
    source ones and train items also hold ``"target_label"``; otherwise target labels are never
    read for training (they may exist for evaluation).

    ``modality: auto`` (the default) reads two training images of each scanner: Hounsfield units
    (air at -1000) give the fixed CT window, anything else MR's per-volume window; the choice is
    saved with the run. Scanners that disagree stop with a ConfigError: set ``modality``.

    Val/test/all items are whole volumes of both domains: ``{"image", "mask", "subject",
    "domain"}`` (``domain`` 0 = source, 1 = target) and ``"label"`` (int64 ``(1, *spatial)``)
    where the subject has one. ``model_settings()`` gives the model ``out_channels = n_classes``,
    ``target_train_labels`` (``target_labels``) and ``target_val_labels`` (whether every target
    validation subject has a label, so that target Dice can rank checkpoints).
    """

    auto_modality = True

    def __init__(self, root, modality: str = "auto", n_classes: int = 2, spacing="auto", patch_size=(32, 32, 32),
                 patches_per_volume: int = 8, batch_size: int = 4, val_fraction: float = 0.2, test_fraction: float = 0.0,
                 split_seed: int = 0, cache: bool = True, cache_workers: int = 1, augment: bool = False,
                 label_fraction: float = 0.33, target_labels: bool = False):
        super().__init__(root, modality=modality, spacing=spacing, patch_size=patch_size,
                         patches_per_volume=patches_per_volume, batch_size=batch_size, val_fraction=val_fraction,
                         test_fraction=test_fraction, split_seed=split_seed, cache=cache, cache_workers=cache_workers)
        self.n_classes = int(n_classes)
        if self.n_classes < 2:
            raise ConfigError(f"n_classes counts the background too: at least 2, got {n_classes}")
        self.augment = bool(augment)
        self.label_fraction = float(label_fraction)
        if not 0.0 < self.label_fraction < 1.0:
            raise ConfigError(f"label_fraction must lie in (0, 1), got {label_fraction}")
        self.target_labels = bool(target_labels)

    def model_settings(self) -> dict:
        val_target = [i for i in self._split("val") if i["domain"] == 1]
        return {"out_channels": self.n_classes, "target_train_labels": self.target_labels,
                "target_val_labels": bool(val_target) and all(i.get("label") is not None for i in val_target)}

    # --- discovery and split ---------------------------------------------------------------
    def _discover(self) -> list[dict]:
        found = discover_domain(self.root)
        return [{**entry, "subject": f"{domain}/{entry['subject']}", "domain": d}
                for d, domain in enumerate(DOMAINS) for entry in found[domain]]

    def _modality_paths(self, items: list[dict]) -> list:
        """Both scanners decide ``modality: auto``: a few training images of each domain."""
        n = self.auto_modality_samples
        return [i["image"] for d in range(len(DOMAINS)) for i in [i for i in items if i["domain"] == d][:n]]

    def _split_items(self, items: list[dict]) -> dict[str, list[dict]]:
        splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
        for d in range(len(DOMAINS)):
            for name, part in super()._split_items([i for i in items if i["domain"] == d]).items():
                splits[name] += part
        return splits

    def _grid_key(self) -> str:
        return "image"

    # --- one subject ---------------------------------------------------------------------------
    def _load(self, item: dict) -> dict:
        v = self._load_volume(item["image"])
        out = {"image": v["image"], "fg": v["fg"], "mask": v["fg"] > 0.5, "subject": item["subject"],
               "domain": torch.tensor(item["domain"])}
        if item.get("label") is not None:
            label = self._load_labels(item["label"], v["raw"], item["subject"], "label")
            out["label"] = self._finish(self._class_indices(label, item), v["pads"], 0.0).long()
        return out

    def _class_indices(self, label: torch.Tensor, item: dict) -> torch.Tensor:
        values = torch.unique(label)
        bad = values[(values != values.round()) | (values < 0) | (values >= self.n_classes)]
        if bad.numel():
            shown = ", ".join(f"{float(b):g}" for b in bad[:5])
            raise InputError(item["label"], f"subject '{item['subject']}': label values {shown} are not class indices "
                                            f"0..{self.n_classes - 1} (set data.n_classes to the number of classes, "
                                            f"background included)")
        return label.round()

    # --- datasets -------------------------------------------------------------------------------
    def _domain_indices(self, split: str, domain: int) -> list[int]:
        return [k for k, i in enumerate(self._split(split)) if i["domain"] == domain]

    def train_dataset(self) -> Dataset:
        volumes = self._volumes("train")
        source, target = (self._domain_indices("train", d) for d in range(len(DOMAINS)))
        for name, indices in zip(DOMAINS, (source, target)):
            if not indices:
                raise InputError(self.root / name, f"no {name} subject left for training (the folder has too few)")
        pos = self.label_fraction / (1.0 - self.label_fraction)
        source_patches = RandomPatches(Subset(volumes, source), ["image", "label"], self.patch_size,
                                       self.patches_per_volume, label_key="label", region_key="fg", pos=pos, neg=1.0,
                                       transform=flips(["image", "label"], self.spatial_dims) if self.augment else None)
        if self.target_labels:
            missing = [i for i in self._split("train") if i["domain"] == 1 and i.get("label") is None]
            if missing:
                raise InputError(self.root / missing[0]["subject"], "has no label, and data.target_labels=true trains "
                                                                    "on target labels: add label files to every target "
                                                                    "subject, or set data.target_labels=false")
            target_patches = RandomPatches(Subset(volumes, target), ["image", "label"], self.patch_size,
                                           self.patches_per_volume, label_key="label", region_key="fg", pos=pos,
                                           neg=1.0, transform=flips(["image", "label"], self.spatial_dims)
                                           if self.augment else None)
        else:
            target_patches = RandomPatches(Subset(volumes, target), ["image"], self.patch_size, self.patches_per_volume,
                                           transform=flips(["image"], self.spatial_dims) if self.augment else None)
        return JoinedPatches([(source_patches, ""), (target_patches, "target_")])

    def _eval_keys(self) -> list[str]:
        return ["image", "label", "mask", "subject", "domain"]
